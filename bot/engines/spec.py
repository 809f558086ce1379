"""One entry of ENGINE_URLS: an engine's base URL and what the bot cannot ask it.

``ENGINE_URLS`` is comma-separated; each entry is a base URL optionally followed by
``;key=value`` options::

    http://10.0.0.5:8080, http://gpu-box:8000;api_key=sk-123;model=qwen2.5;max_concurrency=16

``api_key`` is sent as ``Authorization: Bearer``; ``model`` is the name to request (servers
that host several, like vLLM or Ollama, need it); ``max_concurrency`` is how many answers to
run there at once (Parley engines report their slots, so it only caps them); ``n_ctx`` is
the context per answer, for servers that do not report it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pydantic import SecretStr

OPTIONS = ("api_key", "model", "max_concurrency", "n_ctx")


@dataclass(frozen=True)
class EngineSpec:
    url: str
    api_key: str | None = None
    model: str | None = None
    max_concurrency: int | None = None
    n_ctx: int | None = None

    def __repr__(self) -> str:  # never show the key
        return f"EngineSpec({self.url!r})"


def parse_engine_spec(entry: str) -> EngineSpec:
    """``URL[;key=value...]`` -> EngineSpec; ValueError saying what is wrong."""
    url, *options = [part.strip() for part in entry.strip().split(";")]
    url = url.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError(f"expected an http(s) URL, got {url!r}")
    values: dict[str, str] = {}
    for option in filter(None, options):
        key, sep, value = option.partition("=")
        key = key.strip().lower()
        if not sep or key not in OPTIONS or not value.strip():
            raise ValueError(
                f"{url}: expected ;key=value with key one of {', '.join(OPTIONS)}, "
                f"got {option.split('=')[0]!r}"
            )
        values[key] = value.strip()
    numbers: dict[str, int] = {}
    for key in ("max_concurrency", "n_ctx"):
        if key in values:
            if not values[key].isdigit() or int(values[key]) < 1:
                raise ValueError(f"{url}: {key} must be a positive whole number")
            numbers[key] = int(values[key])
    return EngineSpec(
        url, values.get("api_key"), values.get("model"),
        numbers.get("max_concurrency"), numbers.get("n_ctx"),
    )  # fmt: skip


def split_engine_urls(value: str) -> list[str]:
    """The non-empty comma-separated entries of ENGINE_URLS."""
    return [entry.strip().rstrip("/") for entry in value.split(",") if entry.strip()]


def with_default_key(spec: EngineSpec, key: SecretStr | None) -> EngineSpec:
    """An ENGINE_URLS entry with ENGINE_API_KEY as its key unless it names its own."""
    if spec.api_key is not None or key is None:
        return spec
    return replace(spec, api_key=key.get_secret_value())
