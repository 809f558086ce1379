"""The model's Markdown as Telegram HTML (parse_mode HTML), for every prefix of a streamed answer.

Rendering is markdown-it-py's parse (``telegram_render``), so whatever the model writes, and
wherever a streamed answer is cut, the output is what a CommonMark parser makes of it: tags are
balanced and of Telegram's set by construction, an unfinished ``**bol`` stays literal until it
closes, an open code fence is a ``<pre>`` of the code so far.

A streamed answer is rendered again on every edit, so this module owns a cache that makes one
render cost about its last block: the text is cut into independent segments (at a blank line
followed by a line that cannot continue anything before it) and each segment's HTML is cached
(a text that defines link references, which reach across segments, is rendered whole).
It also owns the guard on Telegram's limit, which applies to the visible text (after entity
parsing, in UTF-16 units): a rendering longer than that (padded table columns can be) or
empty is replaced by the escaped Markdown, which the splitter kept within the limit.
Runs on the bot's event loop.
"""

from __future__ import annotations

import html
import itertools
import re
from functools import lru_cache

from adapters.telegram_render import render
from bot.replies.split import utf16_units

MAX_UNITS = 4096  # Telegram's limit on a message's visible text, in UTF-16 code units
_LIST_MARKER = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_FENCE = re.compile(r"(`{3,}|~{3,})(.*)")
_INDENTED_FENCE = re.compile(r"[ \t]+(?:`{3}|~{3})")
_TAG = re.compile(r"<[^>]*>")


def to_html(markdown: str) -> str:
    """Telegram HTML for ``markdown``, whose visible text is non-empty and within the limit."""
    parts = [_render_cached(segment) for segment in segments(markdown)]
    if len(parts) > 1 and any(references for _, references in parts):
        parts = [render(markdown)]  # a definition changes links in other segments
    rendered = "\n\n".join(filter(None, (piece for piece, _ in parts)))
    shown = html.unescape(_TAG.sub("", rendered))
    if not shown.strip() or utf16_units(shown) > MAX_UNITS:
        return html.escape(markdown, quote=False)
    return rendered


def render_whole(markdown: str) -> str:
    """``to_html`` without segments, cache or guard (what the segments must add up to)."""
    return render(markdown)[0]


@lru_cache(maxsize=1024)
def _render_cached(segment: str) -> tuple[str, bool]:
    return render(segment)


def segments(markdown: str) -> list[str]:
    """``markdown`` cut before lines that start a new top-level block whatever came before.

    Such a line follows a blank line, starts at column 0, is no list item (it could continue
    a list) and is not inside a fenced code block. Fences are followed at column 0 only, so
    the first indented fence line (one in a list item) ends the cutting.
    """
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    cuts = [0]
    offset = 0
    fence: tuple[str, int] | None = None  # the open fence's character and run length
    blank = False
    for line in lines:
        starts = blank and line[:1] not in ("", " ", "\t") and not _LIST_MARKER.match(line)
        if fence is None and starts:
            cuts.append(offset)
        if _INDENTED_FENCE.match(line):
            break
        fence = _fence_after(fence, line)
        blank = not line.strip(" \t")
        offset += len(line) + 1
    cuts.append(len(text))
    return [text[start:end] for start, end in itertools.pairwise(cuts) if end > start]


def _fence_after(fence: tuple[str, int] | None, line: str) -> tuple[str, int] | None:
    """The fence open after a column-0 ``line`` (CommonMark's rules for backticks and tildes)."""
    match = _FENCE.match(line)
    if match is None:
        return fence
    run, info = match.groups()
    if fence is None:
        return None if run[0] == "`" and "`" in info else (run[0], len(run))
    if run[0] == fence[0] and len(run) >= fence[1] and not info.strip(" \t"):
        return None
    return fence
