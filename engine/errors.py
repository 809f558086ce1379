"""One exception hierarchy for the engine; every message is written for a person to act on."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: ``str(error)`` is a single line that says what went wrong and what to do."""


class ModelLoadError(EngineError):
    """The model could not be found, downloaded or loaded."""


class ModelUnavailableError(ModelLoadError):
    """The model is not cached and cannot be downloaded; ``parley engine`` exits with 3 so a
    supervisor can fall back to another model."""


class TemplateError(EngineError):
    """No usable chat template, or the template failed to render these messages."""


class RequestError(EngineError):
    """A client request the engine refuses; maps to an HTTP 4xx with an OpenAI-style body."""

    status = 400
    code = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ContextOverflowError(RequestError):
    """The prompt plus the requested completion cannot fit in the context window."""

    code = "context_length_exceeded"


class EngineBusyError(RequestError):
    """The engine is not accepting work right now (loading, or its queue is full)."""

    status = 503
    code = "engine_busy"
