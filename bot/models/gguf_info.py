"""Read a GGUF file's header and metadata in pure Python, for listing models without llama.cpp.

The admin CLI shows architecture, quantization and context size for every local model; loading
each one into llama.cpp for that would take seconds and gigabytes. GGUF puts all metadata at
the front of the file, so a memory map and a walk over the key/value section is enough. Arrays
(the tokenizer vocabulary has ~260k strings) are skipped by offset arithmetic and never copied.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

# GGUF value type ids -> struct format of fixed-size scalars (8 = string, 9 = array).
_STRING = 8
_ARRAY = 9
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),  # uint8
    1: struct.Struct("<b"),  # int8
    2: struct.Struct("<H"),  # uint16
    3: struct.Struct("<h"),  # int16
    4: struct.Struct("<I"),  # uint32
    5: struct.Struct("<i"),  # int32
    6: struct.Struct("<f"),  # float32
    7: struct.Struct("<?"),  # bool
    10: struct.Struct("<Q"),  # uint64
    11: struct.Struct("<q"),  # int64
    12: struct.Struct("<d"),  # float64
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type id, smallest value: bounds a corrupt count

# llama.cpp's llama_ftype (general.file_type) -> the name used in GGUF file names.
FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}  # fmt: skip

Scalar = int | float | bool | str


@dataclass(frozen=True)
class GgufInfo:
    """What an operator needs to tell models apart; read from metadata, nothing loaded."""

    path: Path
    size_bytes: int
    version: int
    tensor_count: int
    architecture: str
    name: str | None
    file_type: int | None
    quantization: str
    context_length: int | None
    has_chat_template: bool


def quantization_name(file_type: int | None) -> str:
    """``15`` -> ``"Q4_K_M"``; an id this table does not know -> ``"type N"``."""
    if file_type is None:
        return "unknown"
    return FILE_TYPES.get(file_type, f"type {file_type}")


def read_gguf_info(path: Path | str) -> GgufInfo:
    """Parse ``path``'s header and metadata; ValueError (one line) if it is not a usable GGUF."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            if size < 4:
                raise ValueError(f"{path}: not a GGUF file (only {size} bytes)")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                version, tensor_count, metadata = _parse(view, path)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{path}: GGUF metadata has no general.architecture")
    file_type = _int_or_none(metadata.get("general.file_type"))
    name = metadata.get("general.name")
    return GgufInfo(
        path=path,
        size_bytes=size,
        version=version,
        tensor_count=tensor_count,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        file_type=file_type,
        quantization=quantization_name(file_type),
        context_length=_int_or_none(metadata.get(f"{arch}.context_length")),
        has_chat_template="tokenizer.chat_template" in metadata,
    )


def _int_or_none(value: Scalar | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse(view: mmap.mmap, path: Path) -> tuple[int, int, dict[str, Scalar]]:
    """Header and every scalar key/value; arrays are stepped over."""
    if view[:4] != MAGIC:
        raise ValueError(f"{path}: not a GGUF file (magic {bytes(view[:4])!r}, expected b'GGUF')")
    reader = _Reader(view, path)
    reader.pos = 4
    version = reader.scalar(_U32)
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: GGUF version {version} is not supported (only 2 and 3)")
    tensor_count = reader.scalar(_U64)
    kv_count = reader.scalar(_U64)
    if kv_count * _MIN_KV_BYTES > len(view) - reader.pos:
        raise ValueError(f"{path}: truncated or corrupt GGUF ({kv_count} metadata keys claimed)")
    metadata: dict[str, Scalar] = {}
    for _ in range(kv_count):
        key = reader.string()
        kind = reader.scalar(_U32)
        if kind == _ARRAY:
            reader.skip_array()
        else:
            metadata[key] = reader.value(kind)
    return int(version), int(tensor_count), metadata


class _Reader:
    """A cursor over the mapped file; any read past the end is reported as truncation."""

    def __init__(self, view: mmap.mmap, path: Path) -> None:
        self.view = view
        self.path = path
        self.pos = 0
        self.end = len(view)

    def truncated(self) -> ValueError:
        return ValueError(f"{self.path}: truncated GGUF (metadata ends past byte {self.end})")

    def scalar(self, fmt: struct.Struct) -> int:
        value = self.value_of(fmt)
        assert isinstance(value, int)
        return value

    def value_of(self, fmt: struct.Struct) -> Scalar:
        if self.pos + fmt.size > self.end:
            raise self.truncated()
        value: Scalar = fmt.unpack_from(self.view, self.pos)[0]
        self.pos += fmt.size
        return value

    def string(self) -> str:
        length = self.scalar(_U64)
        start, self.pos = self.pos, self.pos + length
        if self.pos > self.end:
            raise self.truncated()
        return self.view[start : self.pos].decode("utf-8", errors="replace")

    def value(self, kind: int) -> Scalar:
        if kind == _STRING:
            return self.string()
        fmt = _SCALARS.get(kind)
        if fmt is None:
            raise ValueError(f"{self.path}: corrupt GGUF (unknown value type {kind})")
        return self.value_of(fmt)

    def skip_array(self) -> None:
        """Step over an array without materialising it: O(1) for numbers, a length walk for text."""
        kind = self.scalar(_U32)
        count = self.scalar(_U64)
        if kind == _STRING:
            self._skip_strings(count)
        elif kind == _ARRAY:
            if count * (4 + 8) > self.end - self.pos:
                raise self.truncated()
            for _ in range(count):
                self.skip_array()
        else:
            fmt = _SCALARS.get(kind)
            if fmt is None:
                raise ValueError(f"{self.path}: corrupt GGUF (unknown array type {kind})")
            self.pos += count * fmt.size
            if self.pos > self.end:
                raise self.truncated()

    def _skip_strings(self, count: int) -> None:
        # Each string is a u64 length then its bytes; only the lengths are read. This loop is the
        # hot spot (the vocabulary): unpack_from's own bounds check stands in for ours.
        if count * _U64.size > self.end - self.pos:
            raise self.truncated()
        unpack, view, pos = _U64.unpack_from, self.view, self.pos
        try:
            for _ in range(count):
                pos += 8 + unpack(view, pos)[0]
        except struct.error:
            raise self.truncated() from None
        if pos > self.end:
            raise self.truncated()
        self.pos = pos
