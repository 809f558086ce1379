"""The running engine: the current model, its scheduler thread, and hot model swaps.

``EngineRuntime`` is what the HTTP server talks to. Tokenization happens on the caller's
thread under ``_model_lock`` (it only reads the vocabulary); generation happens on the
scheduler thread. A swap loads the new model on a loader thread while the old one serves,
then the scheduler drains running requests and switches; queued requests are re-tokenized for
the new model and served by it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.core import EngineCore, Swap
from engine.errors import ContextOverflowError, EngineBusyError, RequestError
from engine.kv_placement import CACHE_REUSE
from engine.kv_spill import SpillCache
from engine.llama_backend import ContextConfig, LlamaBackend
from engine.model import Model
from engine.requests import GenerationRequest, SamplingParams, Sink
from engine.template import TemplateOverride

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    model: str = "demo"
    context: ContextConfig = field(default_factory=ContextConfig)
    n_gpu_layers: int | None = None
    template_override: TemplateOverride | None = None
    max_queue: int = 256
    kv_cache_ram_mb: int = 1024  # RAM for idle conversations' KV (engine.kv_spill); 0 = off
    cache_reuse: int = CACHE_REUSE  # shortest stretch past a trimmed gap to move back; 0 = off


class EngineRuntime:
    """Model + scheduler thread. ``start``/``stop`` from the owner; the rest from any thread."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.status = "loading"
        self.model: Model | None = None
        self.core: EngineCore | None = None
        self.started_at = time.time()
        self._model_lock = threading.Lock()
        self._swap_lock = asyncio.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    # ---- lifecycle --------------------------------------------------------------------

    def load(self) -> None:
        """Load the configured model and start the scheduler (blocking; run in a thread)."""
        try:
            model, backend = self._build(self.config.model)
        except Exception:
            self.status = "error"
            raise
        self.model = model
        self.core = EngineCore(
            backend,
            spill=SpillCache(self.config.kv_cache_ram_mb << 20),
            cache_reuse=self.config.cache_reuse,
        )
        self._thread = threading.Thread(
            target=self.core.run, args=(self._stop,), name="parley-scheduler", daemon=True
        )
        self._thread.start()
        self.status = "ok"

    def stop(self) -> None:
        self._stop.set()
        if self.core is not None:
            self.core.wait_for_work(0)
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.core is not None:
            self.core.backend.close()
        if self.model is not None:
            self.model.close()

    def _build(self, spec: str) -> tuple[Model, LlamaBackend]:
        model = Model.load(
            spec,
            n_gpu_layers=self.config.n_gpu_layers,
            template_override=self.config.template_override,
        )
        try:
            return model, LlamaBackend(model, self.config.context)
        except Exception:
            model.close()
            raise

    # ---- requests ---------------------------------------------------------------------

    def tokenize_chat(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        with self._model_lock:
            return self._ready_model().tokenize_chat(messages, add_generation_prompt)

    def tokenize_text(self, text: str) -> list[int]:
        with self._model_lock:
            return self._ready_model().tokenize(text, special=False)

    def describe_tokens(self, tokens: Sequence[int]) -> list[dict[str, object]]:
        with self._model_lock:
            model = self._ready_model()
            return [
                {"id": t, "piece": model.display_piece(t), "special": model.is_special(t)}
                for t in tokens
            ]

    def n_ctx(self) -> int:
        core = self._ready_core()
        return core.backend.n_ctx_seq

    def prepare(
        self, messages: list[dict[str, str]], params: SamplingParams, sink: Sink,
        cache_key: str | None,
    ) -> GenerationRequest:  # fmt: skip
        """Tokenize and check the context budget; raises RequestError for the client."""
        request = GenerationRequest(
            prompt=[], params=params, sink=sink, messages=messages, cache_key=cache_key
        )
        request.prompt = self._retokenize(request)
        n_vocab = self._ready_model().n_vocab
        if any(token >= n_vocab for token, _ in params.logit_bias):
            raise RequestError(f"logit_bias names a token id >= {n_vocab}", param="logit_bias")
        return request

    def _retokenize(self, request: GenerationRequest) -> list[int]:
        assert request.messages is not None
        prompt = self.tokenize_chat(request.messages)
        n_ctx = self.n_ctx()
        wanted = request.params.max_tokens or 0
        if len(prompt) + wanted > n_ctx or len(prompt) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(prompt)} tokens and max_tokens is {wanted}, but the "
                f"context window is {n_ctx} tokens; shorten the conversation or max_tokens",
                param="messages",
            )
        return prompt

    def submit(self, request: GenerationRequest) -> None:
        core = self._ready_core()
        _, _, queued = core.load
        if queued >= self.config.max_queue:
            raise EngineBusyError(f"the engine queue is full ({queued} waiting); retry shortly")
        core.submit(request)

    def cancel(self, request_id: int) -> None:
        if self.core is not None:
            self.core.cancel(request_id)

    # ---- model swap -------------------------------------------------------------------

    async def swap_model(self, spec: str, *, cancel_running: bool = False) -> float:
        """Load ``spec`` and switch to it once running requests finish. Returns seconds taken.

        A model that fails to load raises (ModelLoadError/TemplateError) and the old model
        keeps serving.
        """
        async with self._swap_lock:
            started = time.perf_counter()
            core = self._ready_core()
            model, backend = await asyncio.to_thread(self._build, spec)
            done = asyncio.Event()
            loop = asyncio.get_running_loop()
            old_model = self.model

            def switched() -> None:
                with self._model_lock:
                    self.model = model
                loop.call_soon_threadsafe(done.set)

            core.request_swap(Swap(backend, self._retokenize, switched))
            if cancel_running:
                for job in list(core.running):
                    core.cancel(job.request.id)
            await done.wait()
            if old_model is not None:
                old_model.close()
            self.swaps += 1
            log.info(
                "switched model to %s in %.2f s", model.info.name, time.perf_counter() - started
            )
            return time.perf_counter() - started

    def _ready_model(self) -> Model:
        if self.model is None:
            raise EngineBusyError("the engine is still loading its model; retry shortly")
        return self.model

    def _ready_core(self) -> EngineCore:
        if self.core is None:
            raise EngineBusyError("the engine is still loading its model; retry shortly")
        return self.core
