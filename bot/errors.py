"""The bot's exception hierarchy: every message is written for the person who will read it."""

from __future__ import annotations


class ParleyError(Exception):
    """Base class; ``str(error)`` is what the user or operator is shown."""


class ConfigError(ParleyError):
    """Invalid settings, a rejected token, nothing to run: only the operator can fix it.

    ``parley run`` ends with ``EX_CONFIG`` for it, so a service manager can tell "fix the
    configuration" from "crashed, try again" (the systemd unit does not restart on it).
    """


EX_CONFIG = 78  # sysexits.h: configuration error


class EngineUnavailable(ParleyError):
    """The engine could not be started or reached."""


class EngineLoading(EngineUnavailable):
    """The engine answers but cannot serve yet (loading its model): worth waiting for."""


class ModelUnavailable(EngineUnavailable):
    """The configured model cannot be downloaded (offline, missing); a fallback may apply."""


class EngineRequestError(ParleyError):
    """The engine refused or failed one request (e.g. the prompt does not fit)."""


class QueueFull(ParleyError):
    """Too many pending requests, for this user or overall."""


class TooLong(ParleyError):
    """A single message does not fit in the model's context."""


class StoreUnusable(ConfigError):
    """At start-up the database cannot be opened or written (a folder in its place, a damaged
    file, read-only or full storage): only the operator can fix it, so ``parley run`` says
    what is wrong in one line and ends with ``EX_CONFIG`` instead of being restarted into the
    same fault every few seconds."""
