"""Chat templates: choose the right one, render it safely, and keep user text out of control tokens.

Order of precedence: an explicit override (a .jinja file, or a Hugging Face repo's
tokenizer_config.json) > the GGUF's ``tokenizer.chat_template`` > a built-in template chosen by
architecture > a clear error. We never fall back to an unrelated format: llama-cpp-python's
``Llama`` silently uses the llama-2 format for Gemma, which makes the model babble.

Rendering returns *segments*: template scaffolding (where control tokens such as
``<start_of_turn>`` must be parsed) and message content (which must be tokenized as plain text,
so a user typing ``<end_of_turn>`` cannot end their own turn). Content is located by rendering
the template with sentinels in place of each message's text.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Template
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import ModelLoadError, TemplateError

ROLES = ("system", "user", "assistant")

_GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n"
    "{% if loop.first and system %}{{ system }}\n\n{% endif %}"
    "{{ message['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

_CHATML = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_PHI3 = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {
    "gemma": _GEMMA,
    "chatml": _CHATML,
    "llama3": _LLAMA3,
    "phi3": _PHI3,
}

ARCHITECTURE_TEMPLATES: dict[str, str] = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "qwen": "chatml",
    "qwen2": "chatml",
    "qwen2moe": "chatml",
    "qwen3": "chatml",
    "qwen3moe": "chatml",
    "llama": "llama3",
    "phi3": "phi3",
}


@dataclass(frozen=True)
class Segment:
    """A run of prompt text; ``special`` says whether control tokens in it may be parsed."""

    text: str
    special: bool


@dataclass(frozen=True)
class ChatTemplate:
    """A template, the tokens it refers to, and where it came from (for logs and /v1/models)."""

    source: str
    text: str
    bos_token: str
    eos_token: str

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The full prompt text, exactly as the model sees it (content and scaffolding joined)."""
        return "".join(s.text for s in self.render_segments(messages, add_generation_prompt))

    def render_segments(
        self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[Segment]:
        """Render with each message's content marked as plain text.

        Each content is replaced by a sentinel padded with U+3000 (whitespace no template
        emits), so after rendering we can tell whether the template trimmed the content and
        substitute the real text, trimmed the same way. User text is never part of the template
        source, so it is never evaluated as Jinja.
        """
        nonce = secrets.token_hex(4)
        sentinels = [f"\ue000{nonce}:{i}\ue001" for i in range(len(messages))]
        stand_ins = [
            {"role": m["role"], "content": f"\u3000{s}\u3000"}
            for m, s in zip(messages, sentinels, strict=True)
        ]
        rendered = self._render_raw(stand_ins, add_generation_prompt)
        return _split_on_sentinels(rendered, sentinels, [m["content"] for m in messages])

    def _render_raw(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        try:
            return _compiled(self.text).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except JinjaTemplateError as exc:
            raise TemplateError(f"chat template ({self.source}) failed to render: {exc}") from exc


_SENTINEL = re.compile("\ue000[^\ue000\ue001]*\ue001")


def _split_on_sentinels(rendered: str, sentinels: list[str], contents: list[str]) -> list[Segment]:
    """One left-to-right pass over the sentinels (searching for each one from every hit made a
    thousand-message conversation take seconds, and a 1 MiB request hold the tokenizer for
    hours)."""
    index_of = {s: i for i, s in enumerate(sentinels)}
    segments: list[Segment] = []
    cursor = 0
    for match in _SENTINEL.finditer(rendered):
        index = index_of.get(match.group())
        if index is None:
            continue
        pos, end = match.span()
        content = contents[index]
        start = pos
        if rendered[pos - 1 : pos] == "\u3000" and pos - 1 >= cursor:
            start = pos - 1
        else:
            content = content.lstrip()
        if rendered[end : end + 1] == "\u3000":
            end += 1
        else:
            content = content.rstrip()
        _append(segments, rendered[cursor:start], special=True)
        _append(segments, content, special=False)
        cursor = end
    _append(segments, rendered[cursor:], special=True)
    if any("\ue000" in s.text and s.special for s in segments):
        raise TemplateError("chat template transforms message content in a way Parley cannot track")
    return segments


def _append(segments: list[Segment], text: str, *, special: bool) -> None:
    if not text:
        return
    if segments and segments[-1].special == special:
        segments[-1] = Segment(segments[-1].text + text, special)
    else:
        segments.append(Segment(text, special))


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template refused the conversation: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


_ENV: ImmutableSandboxedEnvironment | None = None


def _environment() -> ImmutableSandboxedEnvironment:
    """The same sandbox Hugging Face uses (trim_blocks, lstrip_blocks), so GGUF templates match."""
    global _ENV
    if _ENV is None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        _ENV = env
    return _ENV


@functools.lru_cache(maxsize=8)
def _compiled(text: str) -> Template:
    """Compiling a template costs more than rendering it (2.5 of 2.9 ms for Gemma 3's):
    do it once per template text, not once per request."""
    return _environment().from_string(text)


@dataclass(frozen=True)
class TemplateOverride:
    """A template chosen by the operator, with any extra end-of-generation ids it brings."""

    source: str
    text: str
    eos_ids: tuple[int, ...] = ()


def override_from_file(path: Path) -> TemplateOverride:
    """Read ``--chat-template FILE.jinja``."""
    try:
        return TemplateOverride(source=f"file:{path}", text=path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TemplateError(f"cannot read chat template {path}: {exc.strerror}") from exc


def override_from_hub(repo_id: str) -> TemplateOverride:
    """``--chat-template-from REPO_ID``: the repo's chat_template and generation EOS ids."""
    config = _hub_json(repo_id, "tokenizer_config.json", required=True)
    template = config.get("chat_template")
    if isinstance(template, list):  # a list of named templates; "default" is the chat one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if not isinstance(template, str):
        raise TemplateError(f"{repo_id}/tokenizer_config.json has no chat_template")
    generation = _hub_json(repo_id, "generation_config.json", required=False)
    eos = generation.get("eos_token_id", [])
    eos_ids = tuple(eos) if isinstance(eos, list) else (eos,) if isinstance(eos, int) else ()
    return TemplateOverride(source=f"hub:{repo_id}", text=template, eos_ids=eos_ids)


def _hub_json(repo_id: str, filename: str, *, required: bool) -> dict[str, Any]:
    from engine.download import hub_download

    try:
        path = hub_download(repo_id, filename)
    except ModelLoadError:
        if required:
            raise
        return {}
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def select_template(
    *,
    override: TemplateOverride | None,
    gguf_template: str | None,
    architecture: str,
    bos_token: str,
    eos_token: str,
) -> ChatTemplate:
    """Pick the template by precedence; raise TemplateError rather than guess a wrong format."""
    if override is not None:
        return ChatTemplate(override.source, override.text, bos_token, eos_token)
    if gguf_template:
        return ChatTemplate("gguf", gguf_template, bos_token, eos_token)
    builtin = ARCHITECTURE_TEMPLATES.get(architecture)
    if builtin is not None:
        return ChatTemplate(f"builtin:{builtin}", BUILTIN_TEMPLATES[builtin], bos_token, eos_token)
    raise TemplateError(
        f"the model (architecture {architecture!r}) has no chat template and Parley has no "
        "built-in one for it; pass --chat-template FILE.jinja or --chat-template-from REPO_ID"
    )
