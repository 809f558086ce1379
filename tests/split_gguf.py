"""Split GGUFs for tests, written with gguf-py (llama.cpp's own Python package) as llama.cpp's
gguf-split would: ``NAME-00001-of-0000N.gguf`` and its siblings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter


def split_copy(source: Path, target: Path, max_tensors: int) -> list[Path]:
    """``source`` (a whole GGUF) rewritten as a split set named after ``target``; its parts."""
    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(target, arch, split_max_tensors=max_tensors)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # the writer writes these itself
        kind = field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    return _write(writer, target)


def tiny_split(target: Path, parts: int, *, quantization: int = 15) -> list[Path]:
    """A small GGUF of ``parts`` tensors, one per part (``general.file_type`` ``quantization``)."""
    writer = GGUFWriter(target, "llama", split_max_tensors=1)
    writer.add_file_type(quantization)
    for n in range(parts):
        writer.add_tensor(f"t{n}", np.full(256, n, dtype=np.float32))
    return _write(writer, target)


def _write(writer: GGUFWriter, target: Path) -> list[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(target.parent.glob(f"{target.stem}-*-of-*.gguf"))
