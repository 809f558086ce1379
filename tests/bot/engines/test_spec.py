"""ENGINE_URLS entries: a URL and its options, or one clear line saying what is wrong."""

from __future__ import annotations

import re

import pytest

from bot.engines.spec import EngineSpec, parse_engine_spec
from bot.errors import ConfigError
from bot.settings import load_settings


def test_a_bare_url_has_no_options() -> None:
    assert parse_engine_spec(" http://10.0.0.5:8080/ ") == EngineSpec("http://10.0.0.5:8080")


def test_options_follow_the_url() -> None:
    spec = parse_engine_spec(
        "http://gpu:8000/v1x;api_key=sk-1; model = qwen2.5;max_concurrency=16;n_ctx=8192"
    )
    assert spec == EngineSpec("http://gpu:8000/v1x", "sk-1", "qwen2.5", 16, 8192)
    assert "sk-1" not in repr(spec)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("gpu:8000", "expected an http(s) URL"),
        ("http://a:1;apikey=x", "key one of api_key, model"),
        ("http://a:1;model", "expected ;key=value"),
        ("http://a:1;max_concurrency=0", "max_concurrency must be a positive whole number"),
        ("http://a:1;n_ctx=lots", "n_ctx must be a positive whole number"),
    ],
)
def test_bad_entries_say_what_is_wrong(entry: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_engine_spec(entry)


def test_settings_refuse_a_bad_entry_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_URLS", "http://a:1, http://b:2;max_concurrency=many")
    with pytest.raises(ConfigError, match=r"^ENGINE_URLS: http://b:2: max_concurrency must be"):
        load_settings()


def test_settings_keep_each_entry_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_URLS", "http://a:1/,http://b:2;model=m")
    assert load_settings().engine_urls == ["http://a:1", "http://b:2;model=m"]
