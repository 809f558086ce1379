"""Parley's settings, read from the environment and ``.env`` (every key is in .env.example).

Secrets are ``SecretStr``: they never appear in ``repr``, logs or error messages. Invalid
values fail at start with one line per problem (see ``load_settings``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.engines.spec import parse_engine_spec, split_engine_urls
from bot.errors import ConfigError
from common.defaults import (
    DEFAULT_MODEL,
    DEMO_MODEL,
    ENGINE_N_CTX,
    ENGINE_PARALLEL,
    KV_CACHE_RAM_MB,
)
from common.model_files import DEMO, GEMMA

__all__ = ["DEFAULT_MODEL", "DEMO_MODEL", "Settings", "load_settings"]

BUNDLED = (DEMO, GEMMA)  # models named, not pathed (common/model_files.py)
REPO_SPEC = re.compile(r"^[\w.-]+/[\w.-]+:.+$")

IdList = Annotated[list[int], NoDecode]
UrlList = Annotated[list[str], NoDecode]


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "parley"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    model: str = DEFAULT_MODEL
    database_path: Path = Field(default_factory=lambda: default_data_dir() / "parley.db")
    # .gguf files here are offered by `/model` (and `parley admin model list`).
    models_dir: Path = Field(default_factory=lambda: default_data_dir() / "models")
    system_prompt: str = "You are Parley, a helpful and concise assistant."

    # Sampling defaults for every reply (the seeds' flags).
    max_tokens: int = Field(default=512, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.1, gt=0.0)
    repeat_last_n: int = Field(default=64, ge=-1)
    seed: int | None = None

    # The engines: empty ENGINE_URLS spawns a local one with these options; otherwise
    # comma-separated ``URL[;api_key=..;model=..;max_concurrency=..;n_ctx=..]`` entries.
    engine_urls: UrlList = Field(default_factory=list)
    # The key Parley's engine requires on its API (Authorization: Bearer): passed to the
    # local engine, and sent to ENGINE_URLS entries that carry no ;api_key= of their own.
    # Unset, anyone who can reach the engine's port may use it (loopback by default).
    engine_api_key: SecretStr | None = None
    engine_n_ctx: int = Field(default=ENGINE_N_CTX, ge=256)
    engine_parallel: int = Field(default=ENGINE_PARALLEL, ge=1)
    engine_threads: int | None = Field(default=None, ge=1)
    engine_n_gpu_layers: int | None = None
    engine_start_timeout: float = Field(default=600.0, gt=0)
    kv_cache_ram_mb: int = Field(default=KV_CACHE_RAM_MB, ge=0)  # idle conversations' KV in RAM

    # Queue limits.
    max_pending_per_user: int = Field(default=3, ge=1)
    max_pending_total: int = Field(default=100, ge=1)
    # Per-user limits (admins exempt; 0 turns one off): messages a minute, and tokens a day
    # (prompt + answer, counted from midnight UTC).
    rate_limit_per_minute: int = Field(default=20, ge=0)
    daily_token_quota: int = Field(default=0, ge=0)
    # After a restart, answers left unfinished are written if their message is at most this
    # many seconds old; older ones are ended with a note asking to send them again.
    resume_max_age: float = Field(default=900.0, ge=0)

    # Prometheus /metrics and /healthz on METRICS_HOST:METRICS_PORT (no port: not served).
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    admin_token: SecretStr | None = None
    # Where `parley admin` reaches the running bot; default: admin.sock beside the database.
    admin_socket: Path | None = None

    discord_token: SecretStr | None = None
    discord_api_base_url: str = "https://discord.com/api/v10"
    discord_gateway_url: str = "wss://gateway.discord.gg"
    discord_allowed_users: IdList = Field(default_factory=list)
    discord_allowed_roles: IdList = Field(default_factory=list)
    discord_allowed_channels: IdList = Field(default_factory=list)
    discord_admin_ids: IdList = Field(default_factory=list)
    # Sync slash commands to these guilds (instant) instead of globally (can take an hour).
    discord_guild_ids: IdList = Field(default_factory=list)
    discord_reply_to_mentions: bool = True

    telegram_token: SecretStr | None = None
    telegram_api_base_url: str = "https://api.telegram.org"
    telegram_allowed_users: IdList = Field(default_factory=list)
    telegram_allowed_chats: IdList = Field(default_factory=list)
    telegram_admin_ids: IdList = Field(default_factory=list)
    # Messages sent while the bot was down: answer them (true) or skip them (false).
    telegram_answer_backlog: bool = True

    log_level: str = Field(default="warning", pattern="^(debug|info|warning|error)$")
    # text: one line per record, as before; json: one JSON object per line, for collectors.
    log_format: str = Field(default="text", pattern="^(text|json)$")

    @field_validator(
        "discord_allowed_users", "discord_allowed_roles", "discord_allowed_channels",
        "discord_admin_ids", "discord_guild_ids", "telegram_allowed_users",
        "telegram_allowed_chats", "telegram_admin_ids", mode="before",
    )  # fmt: skip
    @classmethod
    def _id_list(cls, value: object) -> object:
        """Comma-separated numeric platform ids, e.g. ``123,456`` (Telegram chats may be < 0)."""
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            bad = [item for item in items if not re.fullmatch(r"-?\d+", item)]
            if bad:
                raise ValueError(f"expected comma-separated numeric ids, got {bad[0]!r}")
            return [int(item) for item in items]
        return value

    @field_validator(
        "admin_token", "discord_token", "telegram_token", "engine_api_key", "seed",
        "engine_threads", "engine_n_gpu_layers", mode="before",
    )  # fmt: skip
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """``TELEGRAM_TOKEN=`` in .env means "not set", not an empty token."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _url_list(cls, value: object) -> object:
        """Comma-separated ``URL[;key=value...]`` entries (bot/engines/spec.py), each checked."""
        entries = split_engine_urls(value) if isinstance(value, str) else value
        if isinstance(entries, list):
            for entry in entries:
                parse_engine_spec(str(entry))
        return entries

    @field_validator("model")
    @classmethod
    def _model_reachable(cls, value: str) -> str:
        """A local path must be a readable file; ``demo``, ``gemma3-270m`` and ``REPO:FILE``
        are checked later (by the engine, which fetches them)."""
        value = value.strip()
        if value in BUNDLED or REPO_SPEC.match(value):
            return value
        path = Path(value).expanduser()
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ValueError(f"no readable model file at {path}")
        return value

    @property
    def platform_tokens(self) -> dict[str, SecretStr]:
        tokens = {"discord": self.discord_token, "telegram": self.telegram_token}
        return {name: token for name, token in tokens.items() if token is not None}


def load_settings(**overrides: object) -> Settings:
    """Read settings; on invalid values raise ConfigError with one line per problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{field}: {message}")
        raise ConfigError("\n".join(lines)) from None
