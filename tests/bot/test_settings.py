"""Settings: env parsing, one clear line per invalid value, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.settings import DEFAULT_MODEL, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for key in ("MODEL", "TELEGRAM_TOKEN", "DISCORD_TOKEN", "ADMIN_TOKEN", "ENGINE_URLS"):
        monkeypatch.delenv(key, raising=False)


def test_defaults_are_usable() -> None:
    settings = load_settings()
    assert settings.model == DEFAULT_MODEL
    assert settings.max_pending_per_user == 3 and settings.max_pending_total == 100
    assert settings.platform_tokens == {}


def test_values_come_from_the_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("MAX_TOKENS=77\nTELEGRAM_ALLOWED_CHATS=-100123, 42\n")
    monkeypatch.setenv("ENGINE_URLS", "http://a:1/, http://b:2")
    settings = load_settings()
    assert settings.max_tokens == 77
    assert settings.telegram_allowed_chats == [-100123, 42]
    assert settings.engine_urls == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize("name", ["demo", "gemma3-270m"])
def test_the_models_parley_fetches_itself_are_named_not_pathed(name: str) -> None:
    assert load_settings(model=name).model == name  # no file of that name here: still valid


def test_each_invalid_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_TOKENS", "-5")
    monkeypatch.setenv("TELEGRAM_ADMIN_IDS", "12,alice")
    monkeypatch.setenv("MODEL", "/nowhere/model.gguf")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    lines = str(caught.value).splitlines()
    assert len(lines) == 3
    assert any(line.startswith("MAX_TOKENS:") for line in lines)
    assert any(line.startswith("TELEGRAM_ADMIN_IDS:") and "'alice'" in line for line in lines)
    assert any(line.startswith("MODEL:") and "/nowhere/model.gguf" in line for line in lines)


def test_secrets_never_show_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", "123:very-secret")
    monkeypatch.setenv("ADMIN_TOKEN", "admin-secret")
    settings = load_settings()
    assert "very-secret" not in repr(settings) and "admin-secret" not in str(settings)
    assert settings.platform_tokens["telegram"].get_secret_value() == "123:very-secret"
    monkeypatch.setenv("MAX_TOKENS", "zero")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "very-secret" not in str(caught.value)


def test_env_example_documents_every_setting_and_loads_as_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.settings import Settings
    from tests.engine_process import ROOT

    example = (ROOT / ".env.example").read_text()
    documented = {line.lstrip("# ").split("=")[0] for line in example.splitlines() if "=" in line}
    assert {name.upper() for name in Settings.model_fields} <= documented
    (tmp_path / ".env").write_text(example)
    settings = load_settings()
    assert settings.platform_tokens == {} and settings.admin_token is None
    assert settings.engine_urls == [] and settings.seed is None
