"""Route llama.cpp's own logging into Python logging instead of raw stderr.

llama.cpp prints hundreds of lines while loading; Parley logs a summary instead (see
``model.log_load``) and keeps llama.cpp's last error so a failed load can say why in one line.
Set the ``llama.cpp`` logger to DEBUG (``--log-level debug``) to see everything.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

import llama_cpp as ll

log = logging.getLogger("llama.cpp")

_ERROR = 4

_state: dict[str, Any] = {"callback": None, "last_error": ""}


def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Everything goes to DEBUG: errors reach the user through ``last_error``, in one line."""
    message = text.decode("utf-8", "replace").rstrip("\n")
    if level == _ERROR and message.strip():
        _state["last_error"] = message.strip()
    if message and log.isEnabledFor(logging.DEBUG):
        log.debug("%s", message)


def install() -> None:
    """Install the callback once per process (the ctypes object must stay referenced)."""
    if _state["callback"] is None:
        callback = ll.llama_log_callback(_on_log)
        _state["callback"] = callback
        ll.llama_log_set(callback, ctypes.c_void_p(0))


def last_error() -> str:
    """The most recent error line llama.cpp logged, e.g. why a GGUF failed to load."""
    return str(_state["last_error"])
