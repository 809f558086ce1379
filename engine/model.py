"""Load a GGUF model with llama-cpp-python's low-level API and expose what the engine needs.

``Model`` owns the llama model and its vocabulary: metadata, the end-of-generation set,
tokenization that keeps user text out of control tokens, and the chat template. It does not
own a context; ``engine.core`` creates that.

Thread-safety: tokenization and piece lookup only read the vocabulary and may be called from
any thread while the scheduler decodes; ``close`` must not race them (the engine guards
swaps with a lock).
"""

from __future__ import annotations

import ctypes
import logging
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll

from common.model_files import DEMO, GEMMA
from engine import llama_log
from engine.download import resolve_model_path
from engine.errors import ModelLoadError
from engine.template import ChatTemplate, Segment, TemplateOverride, select_template
from engine.token_cache import TokenCache

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"

# general.file_type values (llama.cpp's llama_ftype) for the quantizations people actually use.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 24: "IQ1_S",
    25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS",
    32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


@dataclass(frozen=True)
class GgufHeader:
    version: int
    tensor_count: int
    metadata_count: int


def read_gguf_header(path: Path) -> GgufHeader:
    """Check the magic and read the counts, so a wrong file fails with a clear line, not a crash."""
    try:
        with path.open("rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from exc
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF model file (expected the GGUF magic bytes)")
    version, tensors, kvs = struct.unpack("<IQQ", head[4:24])
    return GgufHeader(version, tensors, kvs)


def _tensor_count(ptr: ll.llama_model_p, header: GgufHeader) -> int:
    """The model's tensors: a split GGUF's first file holds only its share of them."""
    total = meta_string(ptr, "split.tensors.count")
    return int(total) if total and total.isdigit() else header.tensor_count


@dataclass(frozen=True)
class ModelInfo:
    """What /v1/models and the load log report."""

    name: str
    path: str
    architecture: str
    quantization: str
    description: str
    n_ctx_train: int
    n_params: int
    size_bytes: int
    tensor_count: int
    template_source: str
    eog_ids: tuple[int, ...]
    sliding_window: int


class Model:
    """A loaded GGUF model and its vocabulary. Create with ``Model.load``; free with ``close``."""

    def __init__(
        self, ptr: ll.llama_model_p, info: ModelInfo, template: ChatTemplate, add_bos: bool
    ) -> None:
        self.ptr = ptr
        self.closed = False
        self.vocab = ll.llama_model_get_vocab(ptr)
        self.info = info
        self.template = template
        self.eog_ids = frozenset(info.eog_ids)
        self.add_bos = add_bos
        self.bos_id = ll.llama_vocab_bos(self.vocab)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self._pieces: dict[int, bytes] = {}
        self.token_cache = TokenCache()
        self.load_seconds = 0.0  # set by ``load``

    @classmethod
    def load(
        cls,
        spec: str,
        *,
        n_gpu_layers: int | None = None,
        template_override: TemplateOverride | None = None,
    ) -> Model:
        """Resolve ``spec``, validate the file, load it, and pick its chat template."""
        path = resolve_model_path(spec)
        header = read_gguf_header(path)
        llama_log.install()
        ll.llama_backend_init()
        params = ll.llama_model_default_params()
        params.n_gpu_layers = default_gpu_layers() if n_gpu_layers is None else n_gpu_layers
        started = time.perf_counter()
        llama_log.clear_errors()
        ptr = ll.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            detail = llama_log.first_error() or "unknown error"
            hint = "is the file complete? download it again"
            raise ModelLoadError(f"llama.cpp could not load {path}: {detail} ({hint})")
        load_s = time.perf_counter() - started
        try:
            model = cls._describe(ptr, spec, path, header, template_override)
        except Exception:
            ll.llama_model_free(ptr)
            raise
        model.load_seconds = load_s
        log_load(model.info, load_s, params.n_gpu_layers)
        return model

    @classmethod
    def _describe(
        cls,
        ptr: ll.llama_model_p,
        spec: str,
        path: Path,
        header: GgufHeader,
        override: TemplateOverride | None,
    ) -> Model:
        vocab = ll.llama_model_get_vocab(ptr)
        arch = meta_string(ptr, "general.architecture") or "unknown"
        file_type = meta_string(ptr, "general.file_type")
        quant = FILE_TYPES.get(int(file_type), f"type {file_type}") if file_type else "unknown"
        desc = ctypes.create_string_buffer(256)
        ll.llama_model_desc(ptr, desc, len(desc))
        n_vocab = ll.llama_vocab_n_tokens(vocab)
        eog = {t for t in range(n_vocab) if ll.llama_vocab_is_eog(vocab, t)}
        if override is not None:
            eog.update(t for t in override.eos_ids if 0 <= t < n_vocab)
        bos_text = token_text(vocab, ll.llama_vocab_bos(vocab))
        eos_text = token_text(vocab, ll.llama_vocab_eos(vocab))
        template = select_template(
            override=override,
            gguf_template=meta_string(ptr, "tokenizer.chat_template"),
            architecture=arch,
            bos_token=bos_text,
            eos_token=eos_text,
        )
        info = ModelInfo(
            name=spec if spec in (DEMO, GEMMA) else path.name,
            path=str(path),
            architecture=arch,
            quantization=quant,
            description=desc.value.decode("utf-8", "replace"),
            n_ctx_train=ll.llama_model_n_ctx_train(ptr),
            n_params=ll.llama_model_n_params(ptr),
            size_bytes=ll.llama_model_size(ptr),
            tensor_count=_tensor_count(ptr, header),
            template_source=template.source,
            eog_ids=tuple(sorted(eog)),
            sliding_window=ll.llama_model_n_swa(ptr),
        )
        return cls(ptr, info, template, add_bos=bool(ll.llama_vocab_get_add_bos(vocab)))

    def close(self) -> None:
        """Free the model. Only call once nothing else uses it."""
        if not self.closed:
            ll.llama_model_free(self.ptr)
            self.closed = True

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        """Tokenize ``text``; ``special`` lets control-token text become control tokens."""
        data = text.encode("utf-8", "surrogatepass")
        if not data:
            return []
        capacity = len(data) + 8
        buf = (ll.llama_token * capacity)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, special)
        if n < 0:
            capacity = -n
            buf = (ll.llama_token * capacity)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, capacity, False, special)
        return list(buf[:n])

    def tokenize_segments(self, segments: Sequence[Segment]) -> list[int]:
        """Scaffolding with special tokens parsed, content as plain text; BOS added if wanted."""
        tokens: list[int] = []
        for segment in segments:
            cached = self.token_cache.get(segment.text, segment.special)
            if cached is None:
                ids = self.tokenize(segment.text, special=segment.special)
                self.token_cache.put(segment.text, segment.special, ids)
                tokens.extend(ids)
            else:
                tokens.extend(cached)
        if self.add_bos and self.bos_id >= 0 and (not tokens or tokens[0] != self.bos_id):
            tokens.insert(0, self.bos_id)
        return tokens

    def tokenize_chat(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Exactly the token ids the model sees for this conversation."""
        return self.tokenize_segments(
            self.template.render_segments(messages, add_generation_prompt)
        )

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for in output text (control tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is None:
            cached = token_bytes(self.vocab, token, special=False)
            self._pieces[token] = cached
        return cached

    def display_piece(self, token: int) -> str:
        """The token as a person should see it in /tokenize output, control tokens included."""
        return token_bytes(self.vocab, token, special=True).decode("utf-8", "replace")

    def is_special(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_control(self.vocab, token)) or token in self.eog_ids


def token_bytes(vocab: ll.llama_vocab_p, token: int, *, special: bool) -> bytes:
    buf = ctypes.create_string_buffer(64)
    n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[:n]


def token_text(vocab: ll.llama_vocab_p, token: int) -> str:
    if token < 0:
        return ""
    return token_bytes(vocab, token, special=True).decode("utf-8", "replace")


def meta_string(ptr: ll.llama_model_p, key: str) -> str | None:
    """A GGUF metadata value as a string, or None when the key is absent."""
    size = 256
    while True:
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_model_meta_val_str(ptr, key.encode(), buf, size)
        if n < 0:
            return None
        if n < size:
            return buf.value.decode("utf-8", "replace")
        size = n + 1


def default_gpu_layers() -> int:
    """All layers when this llama.cpp build can offload (CUDA/Metal/Vulkan), else none."""
    return -1 if ll.llama_supports_gpu_offload() else 0


def system_info() -> str:
    """llama.cpp's CPU/GPU feature line (AVX2, F16C, NEON, CUDA...)."""
    return bytes(ll.llama_print_system_info()).decode("utf-8", "replace").strip()


def cpu_features() -> list[str]:
    """The CPU features this llama.cpp build uses ("AVX2", "FMA", ...), from its system info
    (``CPU : SSE3 = 1 | AVX = 1 | ...``): what the seed's terminal chat printed at start."""
    info = ll.llama_print_system_info().decode(errors="replace")
    pairs = (part.split("=") for part in info.replace("CPU :", "").split("|"))
    return [name.strip() for name, *value in pairs if value and value[0].strip() == "1"]


def log_load(info: ModelInfo, load_s: float, n_gpu_layers: int) -> None:
    log.info(
        "loaded %s: %s, %s, %d tensors, %.1f MiB, %.2fB params, n_ctx_train=%d, in %.2f s",
        info.name, info.architecture, info.quantization, info.tensor_count,
        info.size_bytes / 2**20, info.n_params / 1e9, info.n_ctx_train, load_s,
    )  # fmt: skip
    log.info(
        "system: %s; gpu layers: %s", system_info(), "all" if n_gpu_layers < 0 else n_gpu_layers
    )
    log.info(
        "chat template: %s; end-of-generation ids: %s", info.template_source, list(info.eog_ids)
    )
