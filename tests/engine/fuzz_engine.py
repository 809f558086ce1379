"""The engine's real HTTP app and runtime on a loopback port, over a scripted model, for the
property-based tests in ``test_fuzz_api``; and the checks every refusal must pass.

Only the model and backend are stand-ins: ``ByteModel`` renders the real Gemma template and
has one token per UTF-8 byte, and ``CheckingBackend`` is ``FakeBackend`` with a sampler that
refuses what llama.cpp's C API would silently truncate or choke on. Requests go out through
``http.client`` so a body can be any bytes and a header any value.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from engine.download import resolve_model_path
from engine.model import ModelInfo, read_gguf_header
from engine.requests import SamplingParams
from engine.runtime import EngineConfig, EngineRuntime
from engine.server import create_app
from engine.template import select_template
from tests.engine.fakes import FakeBackend, FakeSampler

ADMIN = "fuzz-admin-token"
N_VOCAB = 266  # ten control ids, then one id per byte
N_CTX = 512


class ByteModel:
    """Stands in for ``engine.model.Model``: the real Gemma template, a byte-level vocabulary."""

    def __init__(self, name: str) -> None:
        self.template = select_template(
            override=None, gguf_template=None, architecture="gemma3",
            bos_token="<bos>", eos_token="<eos>",
        )  # fmt: skip
        self.info = ModelInfo(
            name=name, path=f"/fake/{name}.gguf", architecture="gemma3", quantization="Q4_K_M",
            description="byte model", n_ctx_train=N_CTX, n_params=0, size_bytes=0,
            tensor_count=0, template_source=self.template.source, eog_ids=(1, 2),
            sliding_window=0,
        )  # fmt: skip
        self.n_vocab = N_VOCAB
        self.load_seconds = 0.0  # as Model.load records it

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return [10 + b for b in text.encode("utf-8", "surrogatepass")]  # as Model.tokenize

    def tokenize_chat(self, messages: list[dict[str, str]], add_prompt: bool) -> list[int]:
        segments = self.template.render_segments(messages, add_prompt)
        return [t for s in segments for t in self.tokenize(s.text, special=s.special)]

    def display_piece(self, token: int) -> str:
        return bytes([token - 10]).decode("utf-8", "replace") if token >= 10 else ""

    def is_special(self, token: int) -> bool:
        return token < 10

    def close(self) -> None:
        pass


class CheckingBackend(FakeBackend):
    """The fake backend, plus the limits llama.cpp puts on a sampler: ctypes silently wraps
    ints outside int32 and floats outside float32, and the penalty window is a ring buffer
    allocated up front, so a window of billions of tokens would exhaust memory."""

    def make_sampler(self, params: SamplingParams) -> FakeSampler:
        for name in ("top_k", "repeat_last_n"):
            assert -(2**31) <= getattr(params, name) < 2**31, f"{name} overflows int32"
        assert params.repeat_last_n <= 1 << 24, "penalty window would allocate > 64 MiB"
        for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
            assert abs(getattr(params, name)) <= 3.4e38, f"{name} overflows float32"
        for token, bias in params.logit_bias:
            assert 0 <= token < N_VOCAB and -100 <= bias <= 100, "logit_bias out of range"
        return super().make_sampler(params)


class FuzzRuntime(EngineRuntime):
    """The real runtime over the byte model; a swap spec goes through the real resolver."""

    def _build(self, spec: str) -> tuple[Any, Any]:
        if spec.strip() not in ("demo", "fake"):
            read_gguf_header(resolve_model_path(spec))  # raises for anything but a GGUF file
        return ByteModel(spec.strip()), CheckingBackend(n_seq=4, n_ctx_seq=N_CTX, n_batch=64)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Errors(logging.Handler):
    """What the server logs at ERROR: a crash the middleware turned into a response, or one
    aiohttp caught, is still a crash. Malformed HTTP framing is aiohttp's to answer (a plain
    400 before the app runs) and it logs that itself, so those records are left out."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if record.name == "aiohttp.server" and isinstance(
            error, HttpProcessingError | web.RequestPayloadError
        ):
            return
        self.records.append(self.format(record))

    def take(self) -> list[str]:
        records, self.records = self.records, []
        return records


@dataclass
class Engine:
    port: int
    closed_port: int  # the same runtime, served with admin disabled
    errors: Errors = field(default_factory=Errors)

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str | bytes] | None = None, port: int | None = None,
    ) -> Reply:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return Reply(response.status, response.headers, response.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any, headers: dict[str, str | bytes] | None = None) -> Reply:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request(
            "POST", path, raw, {"Content-Type": "application/json"} | (headers or {})
        )


@contextmanager
def serve_engine() -> Iterator[Engine]:
    """The app twice (admin on and off) over one runtime, on a loop in its own thread."""
    import huggingface_hub.constants as hub

    offline, hub.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE, True  # a swap spec must never go online
    errors = Errors()
    for name in ("engine", "aiohttp"):
        logging.getLogger(name).addHandler(errors)
    runtime = FuzzRuntime(EngineConfig(model="fake", max_queue=64))
    runtime.load()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzz-server", daemon=True)
    thread.start()

    async def serve(token: str) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(create_app(runtime, admin_token=token))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner, int(runner.addresses[0][1])

    runners = [asyncio.run_coroutine_threadsafe(serve(t), loop).result(10) for t in (ADMIN, "")]
    try:
        yield Engine(runners[0][1], runners[1][1], errors)
    finally:
        for runner, _ in runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        runtime.stop()
        for name in ("engine", "aiohttp"):
            logging.getLogger(name).removeHandler(errors)
        hub.HF_HUB_OFFLINE = offline


def refused(reply: Reply, *statuses: int) -> dict[str, Any]:
    """A 4xx whose body is an OpenAI error object with a message a person can act on."""
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    if statuses:
        assert reply.status in statuses, (reply.status, reply.body[:300])
    assert reply.headers.get_content_type() == "application/json", reply.headers
    error: dict[str, Any] = reply.json()["error"]
    message = error["message"]
    assert isinstance(message, str) and 10 <= len(message) <= 1000, message
    assert isinstance(error["type"], str) and error["type"]
    assert "internal" not in message, message
    return error


def still_serving(engine: Engine) -> None:
    """Nothing was logged as an error, and a small valid request still gets its completion."""
    assert not (logged := engine.errors.take()), logged
    reply = engine.post("/v1/chat/completions", {"messages": [user("hi")], "max_tokens": 2})
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["usage"]["completion_tokens"] == 2


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}
