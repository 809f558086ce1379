"""Records, text rules and JSON shapes for the Telegram Bot API emulator (see telegram_api.py).

The parsers follow what the real server accepts closely enough that an adapter's fallback from
MarkdownV2/HTML to plain text can be tested: reserved characters, unclosed entities and unknown
or unbalanced tags are refused with Telegram's own "can't parse entities" wording.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]
# (entity type, start, end, url or language) in Python string indices of the parsed text.
Span = tuple[str, int, int, str | None]

MAX_TEXT = 4096
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
CHAT_ACTIONS = frozenset(
    {"typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice"}
    | {"upload_document", "choose_sticker", "find_location", "record_video_note"}
    | {"upload_video_note"}
)
# Form fields that are strings on the wire; every other form value is JSON (PTB's encoding).
STRING_FIELDS = frozenset(
    {"text", "parse_mode", "callback_query_id", "action", "language_code", "url", "caption"}
)


class ApiError(Exception):
    """A Bot API error answer: ``{"ok": false, "error_code", "description", "parameters"}``."""

    def __init__(self, code: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def bad_request(detail: str) -> ApiError:
    return ApiError(400, f"Bad Request: {detail}")


@dataclass
class ApiCall:
    """One request the emulator received (recorded before token checks and faults); ``at`` is
    its arrival on ``time.perf_counter``'s clock (benchmarks time the bot with it)."""

    method: str
    params: JSON
    fault: str | None = None
    at: float = 0.0


@dataclass
class BotMessage:
    """A message the bot sent, with every text it has had (``texts[0]`` is the send)."""

    chat_id: int
    message_id: int
    texts: list[str] = field(default_factory=list)
    parse_modes: list[str | None] = field(default_factory=list)
    reply_markup: JSON | None = None
    reply_to_message_id: int | None = None
    deleted: bool = False

    @property
    def text(self) -> str:
        return self.texts[-1]


@dataclass
class CallbackAnswer:
    callback_query_id: str
    text: str | None
    show_alert: bool


def decode_params(form: dict[str, str]) -> JSON:
    """Form values are JSON strings for non-string fields (``chat_id=5``, ``reply_markup={..}``)."""
    out: JSON = {}
    for key, value in form.items():
        if key in STRING_FIELDS:
            out[key] = value
            continue
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def to_entities(text: str, spans: list[Span]) -> list[JSON]:
    """Spans in Python indices -> Bot API entities (offsets and lengths in UTF-16 units)."""
    entities: list[JSON] = []
    for kind, start, end, extra in sorted(spans, key=lambda s: (s[1], -s[2])):
        if end <= start:
            continue
        entity: JSON = {
            "type": kind,
            "offset": utf16_len(text[:start]),
            "length": utf16_len(text[start:end]),
        }
        if kind == "text_link":
            entity["url"] = extra
        elif kind == "pre" and extra:
            entity["language"] = extra
        entities.append(entity)
    return entities


_AUTO = re.compile(
    r"(?P<bot_command>(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?)"
    r"|(?P<mention>(?<![A-Za-z0-9_@/])@[A-Za-z0-9_]{5,32})"
)


def auto_entities(text: str) -> list[JSON]:
    """The entities Telegram clients attach to user text: ``/commands`` and ``@mentions``."""
    spans: list[Span] = []
    for match in _AUTO.finditer(text):
        kind = match.lastgroup or "mention"
        spans.append((kind, match.start(), match.end(), None))
    return to_entities(text, spans)


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


def _cant_parse(detail: str) -> ApiError:
    return bad_request(f"can't parse entities: {detail}")


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")
_MDV2_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "text_link": "TextUrl",
}


def parse_markdown_v2(text: str) -> tuple[str, list[Span]]:
    """Telegram's MarkdownV2: every reserved character outside an entity needs a backslash."""
    plain: list[str] = []
    spans: list[Span] = []
    stack: list[tuple[str, int, int]] = []  # (type, plain start, byte offset of the marker)
    quote_start: int | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and 0 < ord(text[i + 1]) <= 126:
            plain.append(text[i + 1])
            i += 2
            continue
        if c not in _MDV2_RESERVED:
            if c == "\n" and quote_start is not None and not text.startswith(">", i + 1):
                spans.append(("blockquote", quote_start, len(plain), None))
                quote_start = None
            plain.append(c)
            i += 1
            continue
        if c == "`":
            fence = "```" if text.startswith("```", i) else "`"
            end = _find_unescaped(text, fence, i + len(fence))
            if end < 0:
                name = "Pre" if fence == "```" else "Code"
                raise _cant_parse(
                    f"Can't find end of {name} entity at byte offset {_byte_offset(text, i)}"
                )
            body = re.sub(r"\\([`\\])", r"\1", text[i + len(fence) : end])
            language = None
            if fence == "```" and "\n" in body:
                first, rest = body.split("\n", 1)
                if first and " " not in first:
                    language, body = first, rest
            code = "pre" if fence == "```" else "code"
            spans.append((code, len(plain), len(plain) + len(body), language))
            plain.extend(body)
            i = end + len(fence)
            continue
        if c == ">" and (i == 0 or text[i - 1] == "\n"):
            if quote_start is None:
                quote_start = len(plain)
            i += 1
            continue
        if c == "]" and stack and stack[-1][0] == "text_link":
            _, start, _ = stack.pop()
            url = ""
            if i + 1 < n and text[i + 1] == "(":
                end = _find_unescaped(text, ")", i + 2)
                if end < 0:
                    offset = _byte_offset(text, i + 2)
                    raise _cant_parse(f"Can't find end of a URL at byte offset {offset}")
                url = text[i + 2 : end]
                i = end + 1
            else:
                i += 1
            spans.append(("text_link", start, len(plain), url))
            continue
        kind, width = _mdv2_marker(text, i)
        if kind is None:
            raise _cant_parse(
                f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            )
        if kind != "text_link" and stack and stack[-1][0] == kind:
            _, start, _ = stack.pop()
            spans.append((kind, start, len(plain), None))
        else:
            stack.append((kind, len(plain), _byte_offset(text, i)))
        i += width
    if stack:
        kind, _, offset = stack[-1]
        raise _cant_parse(f"Can't find end of {_MDV2_NAMES[kind]} entity at byte offset {offset}")
    if quote_start is not None:
        spans.append(("blockquote", quote_start, len(plain), None))
    return "".join(plain), spans


def _mdv2_marker(text: str, i: int) -> tuple[str | None, int]:
    c = text[i]
    pair = text[i : i + 2]
    if pair == "__":
        return "underline", 2
    if pair == "||":
        return "spoiler", 2
    return {"*": "bold", "_": "italic", "~": "strikethrough", "[": "text_link"}.get(c), 1


def _find_unescaped(text: str, needle: str, start: int) -> int:
    i = start
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(needle, i):
            return i
        i += 1
    return -1


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^<>]*)?)>")
_HREF = re.compile(r"""href\s*=\s*["']([^"']*)["']""")


def parse_html(text: str) -> tuple[str, list[Span]]:
    """Telegram's HTML subset: known tags only, properly nested; ``<`` must be ``&lt;``."""
    plain: list[str] = []
    spans: list[Span] = []
    stack: list[tuple[str, int, str | None]] = []  # (tag, plain start, href)
    length = 0
    pos = 0
    for match in re.finditer(r"<", text):
        i = match.start()
        if i < pos:
            continue
        chunk = html.unescape(text[pos:i])
        plain.append(chunk)
        length += len(chunk)
        tag = _TAG.match(text, i)
        offset = _byte_offset(text, i)
        if tag is None:
            raise _cant_parse(f"Unsupported start tag at byte offset {offset}")
        closing, name, attrs = tag.group(1) == "/", tag.group(2).lower(), tag.group(3)
        if name not in _HTML_TAGS:
            raise _cant_parse(f'Unsupported start tag "{name}" at byte offset {offset}')
        if not closing:
            href = _HREF.search(attrs)
            stack.append((name, length, href.group(1) if href else None))
        elif not stack:
            raise _cant_parse(f"Unexpected end tag at byte offset {offset}")
        elif stack[-1][0] != name:
            expected = stack[-1][0]
            raise _cant_parse(
                f'Unmatched end tag at byte offset {offset}, expected "</{expected}>", '
                f'found "</{name}>"'
            )
        else:
            _, start, href_value = stack.pop()
            spans.append((_HTML_TAGS[name], start, length, href_value))
        pos = tag.end()
    tail = html.unescape(text[pos:])
    plain.append(tail)
    if stack:
        raise _cant_parse(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(plain), spans


_LEGACY = {"*": "bold", "_": "italic", "`": "code"}


def parse_markdown(text: str) -> tuple[str, list[Span]]:
    """Legacy Markdown: ``*bold*``, ``_italic_``, `` `code` ``, ``[text](url)``, all closed."""
    plain: list[str] = []
    spans: list[Span] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            plain.append(text[i + 1])
            i += 2
        elif c in _LEGACY or c == "[":
            close = "]" if c == "[" else c
            end = text.find(close, i + 1)
            if end < 0:
                offset = _byte_offset(text, i)
                raise _cant_parse(f"Can't find end of the entity starting at byte offset {offset}")
            start = len(plain)
            plain.extend(text[i + 1 : end])
            url = None
            i = end + 1
            if c == "[" and text.startswith("(", i) and text.find(")", i) > 0:
                url_end = text.find(")", i)
                url, i = text[i + 1 : url_end], url_end + 1
            spans.append((_LEGACY.get(c, "text_link"), start, len(plain), url))
        else:
            plain.append(c)
            i += 1
    return "".join(plain), spans


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[Span]]:
    """Apply ``parse_mode`` and check the result the way sendMessage/editMessageText do."""
    mode = (parse_mode or "").lower()
    if mode == "markdownv2":
        plain, spans = parse_markdown_v2(text)
    elif mode == "html":
        plain, spans = parse_html(text)
    elif mode == "markdown":
        plain, spans = parse_markdown(text)
    elif mode:
        raise bad_request(f"unsupported parse_mode {parse_mode}")
    else:
        plain, spans = text, []
    if not plain.strip():
        raise bad_request("message text is empty")
    if utf16_len(plain) > MAX_TEXT:  # the visible text, counted as Telegram counts it
        raise bad_request("message is too long")
    return plain, spans


def scope_key(p: JSON) -> str:
    """Key of a command set: ``default``, ``chat:-100``, ``chat_member:-100:7``, plus ``/lang``."""
    scope = p.get("scope") or {"type": "default"}
    parts = [str(scope["type"])] + [str(scope[k]) for k in ("chat_id", "user_id") if k in scope]
    language = p.get("language_code")
    return ":".join(parts) + (f"/{language}" if language else "")


def inline_markup(markup: Any) -> JSON | None:
    """Only inline keyboards stay on a message; an empty one is no keyboard."""
    if isinstance(markup, dict) and markup.get("inline_keyboard"):
        return markup
    return None


def content(message: JSON) -> tuple[str, list[JSON], JSON | None]:
    return message.get("text", ""), message.get("entities", []), message.get("reply_markup")


def set_content(message: JSON, text: str, entities: list[JSON], markup: JSON | None) -> None:
    message["text"] = text
    for key, value in (("entities", entities), ("reply_markup", markup)):
        if value:
            message[key] = value
        else:
            message.pop(key, None)


def user_json(user_id: int, first_name: str) -> JSON:
    name = first_name.lower()
    return {"id": user_id, "is_bot": False, "first_name": first_name, "username": name}


def chat_json(chat_id: int, chat_type: str, title: str | None, user: JSON) -> JSON:
    if chat_type == "private":
        return {
            "id": chat_id,
            "type": "private",
            "first_name": user["first_name"],
            "username": user["username"],
        }
    return {"id": chat_id, "type": chat_type, "title": title or "Group"}


def photo_sizes(uid: str) -> list[JSON]:
    return [
        {"file_id": f"{uid}-s", "file_unique_id": f"{uid}s", "width": 90, "height": 90},
        {"file_id": f"{uid}-m", "file_unique_id": f"{uid}m", "width": 800, "height": 800},
    ]


def sticker(uid: str, emoji: str) -> JSON:
    size = {"width": 512, "height": 512, "is_animated": False, "is_video": False}
    return {"file_id": uid, "file_unique_id": uid, "type": "regular", **size, "emoji": emoji}
