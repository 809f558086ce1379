"""One Markdown text, parsed by markdown-it-py (CommonMark plus GFM tables and strikethrough), as
Telegram's HTML subset. Pure functions; called from ``telegram_format`` on the bot's event loop.

Telegram's HTML knows b, i, u, s, code, pre (with ``<code class="language-x">``), a, blockquote
and tg-spoiler, and nothing block-like, so: headings become a bold line, list items "• " and
"1. " lines (nested ones indented), tables a ``<pre>`` block with aligned columns, a rule a line
of box-drawing characters, an image a link named by its alt text. Raw HTML in the model's text
is not parsed (the parser's ``html`` option is off): it is escaped and shown as written. Output
follows Telegram's nesting rules: nothing inside code or pre (but pre's one code), no link inside
a link, no code inside a link, no blockquote inside a blockquote; empty tags are left out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from html import escape
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

PARSER = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
RULE = "─" * 8  # a horizontal rule (Telegram has none)
LINK_SCHEMES = ("http://", "https://", "tg://", "mailto:")  # what Telegram makes a link of
_STYLES = {"strong": "b", "em": "i", "s": "s"}


def render(markdown: str) -> tuple[str, bool]:
    """Telegram HTML for ``markdown`` (top-level blocks separated by a blank line), and whether
    it defines link references (``[label]: url``, which change links anywhere in a text)."""
    env: dict[str, Any] = {}
    root = SyntaxTreeNode(PARSER.parse(markdown, env))
    return blocks(root.children, 0, False, "\n\n"), bool(env.get("references"))


def blocks(nodes: Sequence[SyntaxTreeNode], depth: int, quoted: bool, sep: str) -> str:
    """Block nodes, each rendered, the non-empty ones joined by ``sep``. ``depth``: list
    nesting (for indentation); ``quoted``: inside a blockquote (which cannot nest)."""
    return sep.join(filter(None, (_block(node, depth, quoted) for node in nodes)))


def _block(node: SyntaxTreeNode, depth: int, quoted: bool) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline_of(node)
    if kind == "heading":
        return _wrap("b", _inline_of(node))
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, depth, quoted)
    if kind == "blockquote":
        inner = blocks(node.children, depth, True, "\n\n")
        return inner if quoted else _wrap("blockquote", inner)
    if kind in ("fence", "code_block"):
        return _pre(node.content.removesuffix("\n"), node.info if kind == "fence" else "")
    if kind == "hr":
        return RULE
    if kind == "table":
        return _pre(table_text(node), "")
    return escape(node.content, quote=False)  # anything else (html_block when enabled): text


def _list(node: SyntaxTreeNode, depth: int, quoted: bool) -> str:
    start = node.attrs.get("start", 1) if node.type == "ordered_list" else None
    lines = []
    for index, item in enumerate(node.children):
        marker = "• " if start is None else f"{int(start) + index}. "
        lines.append("  " * depth + marker + blocks(item.children, depth + 1, quoted, "\n"))
    return "\n".join(lines)


def _pre(code: str, info: str) -> str:
    if not code:
        return ""
    language = info.split(maxsplit=1)[0] if info.strip() else ""
    body = escape(code, quote=False)
    if language and all(c.isalnum() or c in "+#._-" for c in language):
        return f'<pre><code class="language-{language}">{body}</code></pre>'
    return f"<pre>{body}</pre>"


def _wrap(tag: str, inner: str) -> str:
    return f"<{tag}>{inner}</{tag}>" if inner else ""


def _inline_of(node: SyntaxTreeNode) -> str:
    return inline(node.children[0].children, False) if node.children else ""


def inline(nodes: Sequence[SyntaxTreeNode], in_link: bool) -> str:
    """Inline nodes as HTML; inside a link (``in_link``) no code or link tags."""
    out: list[str] = []
    for node in nodes:
        kind = node.type
        if kind == "text":
            out.append(escape(node.content, quote=False))
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "code_inline":
            code = escape(node.content, quote=False)
            out.append(code if in_link else _wrap("code", code))
        elif kind in _STYLES:
            out.append(_wrap(_STYLES[kind], inline(node.children, in_link)))
        elif kind == "link":
            out.append(_link(str(node.attrs.get("href", "")), inline(node.children, True), in_link))
        elif kind == "image":
            label = escape(plain(node.children), quote=False) or "image"
            out.append(_link(str(node.attrs.get("src", "")), label, in_link))
        else:
            out.append(escape(node.content, quote=False))
    return "".join(out)


def _link(href: str, label: str, in_link: bool) -> str:
    label = label or escape(href, quote=False)
    if in_link or not href.lower().startswith(LINK_SCHEMES):
        return label
    return f'<a href="{escape(href)}">{label}</a>'


def plain(nodes: Sequence[SyntaxTreeNode]) -> str:
    """The text of inline nodes without formatting (for alt texts and table cells)."""
    out: list[str] = []
    for node in nodes:
        if node.type in ("text", "code_inline"):
            out.append(node.content)
        elif node.type in ("softbreak", "hardbreak"):
            out.append(" ")
        elif node.children:
            out.append(plain(node.children))
        else:
            out.append(node.content)
    return "".join(out)


def table_text(table: SyntaxTreeNode) -> str:
    """A table as monospace text: columns padded to their widest cell, aligned as the
    delimiter row says, a rule under the header."""
    rows = [
        [(_cell_text(cell), str(cell.attrs.get("style", ""))) for cell in row.children]
        for section in table.children
        for row in section.children
    ]
    if not rows:
        return ""
    widths = [0] * max(len(row) for row in rows)
    for row in rows:
        for column, (text, _) in enumerate(row):
            widths[column] = max(widths[column], width(text))
    lines = [" | ".join(_pad(cell, widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "-+-".join("-" * size for size in widths))
    return "\n".join(line.rstrip() for line in lines)


def _cell_text(cell: SyntaxTreeNode) -> str:
    return plain(cell.children[0].children) if cell.children else ""


def _pad(cell: tuple[str, str], size: int) -> str:
    text, style = cell
    room = max(size - width(text), 0)
    if style.endswith("right"):
        return " " * room + text
    if style.endswith("center"):
        return " " * (room // 2) + text + " " * (room - room // 2)
    return text + " " * room


def width(text: str) -> int:
    """Columns ``text`` takes in a monospace font: wide (CJK, most emoji) 2, combining marks
    and joiners 0, anything else 1."""
    total = 0
    for char in text:
        if unicodedata.combining(char) or char in "\u200d\ufe0f\ufe0e":
            continue
        total += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return total
