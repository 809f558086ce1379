"""GGUF metadata reader: the real Gemma model, synthetic files of every value type, bad files."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bot.models.gguf_info import quantization_name, read_gguf_info
from engine.demo_model import gemma_model_path

# GGUF value type ids (spec order) -> struct format; 8 = string, 9 = array.
FORMATS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
STRING, ARRAY = 8, 9

KV = tuple[str, int, Any]  # key, type id, value; an array's value is (element type, [items])


def encode_value(kind: int, value: Any) -> bytes:
    if kind == STRING:
        data = str(value).encode()
        return struct.pack("<Q", len(data)) + data
    if kind == ARRAY:
        element, items = value
        body = b"".join(encode_value(element, item) for item in items)
        return struct.pack("<IQ", element, len(items)) + body
    packed: bytes = struct.pack("<" + FORMATS[kind], value)
    return packed


def gguf_bytes(kvs: Sequence[KV], *, version: int = 3, tensor_count: int = 0) -> bytes:
    """A GGUF header and metadata section (no tensor infos/data: the reader never looks)."""
    out = [b"GGUF", struct.pack("<IQQ", version, tensor_count, len(kvs))]
    for key, kind, value in kvs:
        out += [encode_value(STRING, key), struct.pack("<I", kind), encode_value(kind, value)]
    return b"".join(out)


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    file_type: int | None = 15,
    chat_template: str | None = "{{ messages }}",
    pad_to: int = 0,
) -> Path:
    """A small valid GGUF v3 with every value type; ``pad_to`` grows it with filler bytes."""
    kvs: list[KV] = [("general.name", STRING, f"Tiny {arch}")]
    if file_type is not None:
        kvs.append(("general.file_type", 4, file_type))
    kvs += [
        (f"{arch}.context_length", 4, 4096),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<pad>", "<s>", "héllo", ""] * 50)),
        ("general.architecture", STRING, arch),
    ]
    if chat_template is not None:
        kvs.append(("tokenizer.chat_template", STRING, chat_template))
    data = gguf_bytes(kvs, tensor_count=3)
    path.write_bytes(data + b"\0" * max(0, pad_to - len(data)))
    return path


EVERY_TYPE: list[KV] = [
    ("t.u8", 0, 255),
    ("t.i8", 1, -128),
    ("t.u16", 2, 65535),
    ("t.i16", 3, -32768),
    ("t.u32", 4, 2**32 - 1),
    ("t.i32", 5, -(2**31)),
    ("t.f32", 6, 0.5),
    ("t.bool", 7, True),
    ("t.str", STRING, "ünïcode ✓"),
    ("t.u64", 10, 2**64 - 1),
    ("t.i64", 11, -(2**63)),
    ("t.f64", 12, 2.25),
    ("t.strings", ARRAY, (STRING, ["a", "", "ccc" * 100])),
    ("t.floats", ARRAY, (6, [1.0, 2.0, 3.0])),
    ("t.u64s", ARRAY, (10, list(range(1000)))),
    ("t.nested", ARRAY, (ARRAY, [(4, [1, 2]), (STRING, ["x", "yz"])])),
    ("t.empty", ARRAY, (0, [])),
    ("general.architecture", STRING, "qwen2"),
    ("general.name", STRING, "Every Type"),
    ("general.file_type", 4, 7),
    ("qwen2.context_length", 4, 32768),
    ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}"),
]


def test_the_gemma_model_is_described_from_its_metadata() -> None:
    path = gemma_model_path()
    read_gguf_info(path)  # warm the page cache: the timing below is the parser's
    started = time.perf_counter()
    info = read_gguf_info(path)
    elapsed = time.perf_counter() - started
    assert info.architecture == "gemma3"
    assert info.quantization == "Q4_K_M" and info.file_type == 15
    assert info.tensor_count == 236
    assert info.has_chat_template is False
    assert info.context_length == 32768
    assert info.version == 3
    assert info.size_bytes == path.stat().st_size and info.path == path
    assert elapsed < 0.5, f"{elapsed:.3f}s to read metadata (262k-token vocabulary skipped)"


@pytest.mark.parametrize("version", [2, 3])
def test_every_value_type_is_parsed_or_skipped(tmp_path: Path, version: int) -> None:
    path = tmp_path / "every.gguf"
    path.write_bytes(gguf_bytes(EVERY_TYPE, version=version, tensor_count=7))
    info = read_gguf_info(path)
    assert info.version == version
    assert info.tensor_count == 7
    assert info.architecture == "qwen2"
    assert info.name == "Every Type"
    assert info.file_type == 7 and info.quantization == "Q8_0"
    assert info.context_length == 32768
    assert info.has_chat_template is True


def test_missing_keys_give_none_and_unknown(tmp_path: Path) -> None:
    path = tmp_path / "bare.gguf"
    path.write_bytes(gguf_bytes([("general.architecture", STRING, "bert")]))
    info = read_gguf_info(path)
    assert (info.name, info.file_type, info.context_length) == (None, None, None)
    assert info.quantization == "unknown"
    assert info.has_chat_template is False


def test_quantization_names_follow_llama_ftype() -> None:
    assert [quantization_name(n) for n in (0, 1, 2, 7, 15, 18, 30, 32, 38)] == [
        "F32", "F16", "Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_XS", "BF16", "MXFP4",
    ]  # fmt: skip
    assert quantization_name(99) == "type 99"


def test_a_multi_gigabyte_file_reads_in_milliseconds(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "big.gguf")
    with path.open("r+b") as file:
        file.truncate(8 * 2**30)  # sparse: 8 GiB of "tensor data" after the metadata
    started = time.perf_counter()
    info = read_gguf_info(path)
    assert time.perf_counter() - started < 0.1
    assert info.size_bytes == 8 * 2**30 and info.quantization == "Q4_K_M"


def test_a_truncated_gemma_model_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    with gemma_model_path().open("rb") as source:
        path.write_bytes(source.read(1_000_000))  # ends inside the tokenizer vocabulary
    with pytest.raises(ValueError, match="truncated") as caught:
        read_gguf_info(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_truncated_file_fails_at_every_cut(tmp_path: Path) -> None:
    data = gguf_bytes(EVERY_TYPE)
    path = tmp_path / "cut.gguf"
    for cut in range(4, len(data), 7):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError) as caught:
            read_gguf_info(path)
        message = str(caught.value)
        assert "\n" not in message
        assert "truncated" in message or "general.architecture" in message, (cut, message)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a GGUF file"),
        (b"GG", "not a GGUF file"),
        (b"PK\x03\x04 this is a zip", "not a GGUF file"),
        (b"GGUF" + struct.pack("<I", 1) + b"\0" * 16, "version 1 is not supported"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "truncated or corrupt"),
        (gguf_bytes([("x", 4, 0)])[:-8] + struct.pack("<II", 13, 0), "unknown value type 13"),
        (
            gguf_bytes([("x", ARRAY, (STRING, []))])[:-12] + struct.pack("<IQ", 8, 2**50),
            "truncated",
        ),
    ],
)
def test_bad_files_raise_one_clear_line(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as caught:
        read_gguf_info(path)
    assert "\n" not in str(caught.value)


def test_a_missing_file_or_a_directory_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        read_gguf_info(tmp_path / "absent.gguf")
    with pytest.raises(ValueError, match="cannot read"):
        read_gguf_info(tmp_path)
