"""The model's Markdown as Telegram HTML, safe for any prefix of a streamed answer.

Telegram rejects a message whose entities do not parse, and a streamed answer is cut at
arbitrary points. So only *complete* constructs become tags (a lone ``**`` or an unclosed
backtick stays literal), an unclosed code fence is closed here, and everything else is
HTML-escaped: the output is always balanced.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^ {0,3}```([\w+#.-]*)[^\n`]*$")
_INLINE = re.compile(
    r"`([^`\n]+)`"  # code
    r"|\*\*(?=\S)(.+?)(?<=\S)\*\*"  # bold
    r"|__(?=\S)(.+?)(?<=\S)__"  # bold
    r"|(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"  # italic
    r"|(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])"  # italic
    r"|~~(?=\S)(.+?)(?<=\S)~~"  # strikethrough
    r"|\[([^\]\n]+)\]\((https?://[^\s)]+)\)"  # link
)
_HEADING = re.compile(r"^#{1,6}\s+(.+)$")


def to_html(markdown: str) -> str:
    """Render Markdown (as chat models write it) to Telegram's HTML subset."""
    out: list[str] = []
    code: list[str] | None = None
    language = ""
    for line in markdown.split("\n"):
        fence = _FENCE.match(line)
        if code is None and fence:
            code, language = [], fence.group(1)
        elif code is not None and line.strip().startswith("```") and not line.strip("` "):
            out.append(_pre(code, language))
            code = None
        elif code is not None:
            code.append(line)
        else:
            out.append(_line(line))
    if code is not None:
        out.append(_pre(code, language))
    return "\n".join(out)


def _pre(lines: list[str], language: str) -> str:
    body = html.escape("\n".join(lines), quote=False)
    if language:
        return f'<pre><code class="language-{html.escape(language)}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def _line(line: str) -> str:
    heading = _HEADING.match(line)
    if heading:
        return f"<b>{_inline(heading.group(1))}</b>"
    return _inline(line)


def _inline(text: str) -> str:
    parts: list[str] = []
    position = 0
    for match in _INLINE.finditer(text):
        parts.append(html.escape(text[position : match.start()], quote=False))
        parts.append(_tag(match))
        position = match.end()
    parts.append(html.escape(text[position:], quote=False))
    return "".join(parts)


def _tag(match: re.Match[str]) -> str:
    code, bold, bold2, italic, italic2, strike, label, url = match.groups()
    if code is not None:
        return f"<code>{html.escape(code, quote=False)}</code>"
    if label is not None:
        return f'<a href="{html.escape(url)}">{_inline(label)}</a>'
    inner = bold or bold2 or italic or italic2 or strike
    tag = "b" if (bold or bold2) else "i" if (italic or italic2) else "s"
    return f"<{tag}>{_inline(inner)}</{tag}>"
