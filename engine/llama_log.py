"""Route llama.cpp's own logging into Python logging instead of raw stderr.

llama.cpp prints hundreds of lines while loading; Parley logs a summary instead (see
``model.log_load``) and keeps llama.cpp's errors so a failed load can say why in one line.
Set the ``llama.cpp`` logger to DEBUG (``--log-level debug``) to see everything.
"""

from __future__ import annotations

import ctypes
import logging
import re
from typing import Any

import llama_cpp as ll

log = logging.getLogger("llama.cpp")

_ERROR = 4

_state: dict[str, Any] = {"callback": None, "errors": []}


def _on_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    """Everything goes to DEBUG: errors reach the user through ``first_error``, in one line."""
    message = text.decode("utf-8", "replace").rstrip("\n")
    if level == _ERROR and message.strip():
        errors: list[str] = _state["errors"]
        errors.append(message.strip())
        del errors[:-20]
    if message and log.isEnabledFor(logging.DEBUG):
        log.debug("%s", message)


def install() -> None:
    """Install the callback once per process (the ctypes object must stay referenced)."""
    if _state["callback"] is None:
        callback = ll.llama_log_callback(_on_log)
        _state["callback"] = callback
        ll.llama_log_set(callback, ctypes.c_void_p(0))


def clear_errors() -> None:
    _state["errors"].clear()


def first_error() -> str:
    """The first error llama.cpp logged since ``clear_errors``: the cause, not the summary.

    llama.cpp prefixes lines with the function name and ``error loading model:``; a person
    needs only what follows.
    """
    errors: list[str] = _state["errors"]
    if not errors:
        return ""
    cause = errors[0].split("error loading model: ", 1)[-1]
    return re.sub(r"^\w+: ", "", cause)
