"""What Telegram accepts as parse_mode HTML, checked two ways: the Bot API emulator's parser
(tags it knows, balanced, ``<`` escaped, non-empty, at most 4096 UTF-16 units of visible text)
and Telegram's nesting rules for entities, which the emulator does not model: nothing inside
code, pre holding at most one code (with a ``language-x`` class), no link or code inside a
link, blockquotes neither nested nor inside inline tags; only the named entities Telegram
knows (&lt; &gt; &amp; &quot;) or numeric ones."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.emulators.telegram_models import parse_text

INLINE = {"b", "i", "u", "s", "tg-spoiler", "a", "code"}
ALLOWED = INLINE | {"pre", "blockquote"}
_ENTITY = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);)")


class _Nesting(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        parent = self.stack[-1] if self.stack else None
        names = dict(attrs)
        if tag == "a":
            expected = {"href"}
        elif tag == "code" and parent == "pre" and names:
            expected = {"class"}
            if not re.fullmatch(r"language-[\w+#.-]+", names.get("class") or ""):
                self.problems.append(f"<pre><code> with {names}")
        else:
            expected = set()
        if tag not in ALLOWED or set(names) != expected:
            self.problems.append(f"<{tag}> with {names}")
        if parent in ("code", "pre") and not (parent == "pre" and tag == "code"):
            self.problems.append(f"<{tag}> inside <{parent}>")
        if tag in ("a", "code", "pre", "blockquote") and "a" in self.stack:
            self.problems.append(f"<{tag}> inside a link")
        if tag == "blockquote" and "blockquote" in self.stack:
            self.problems.append("nested blockquote")
        if tag in ("pre", "blockquote") and any(t in INLINE for t in self.stack):
            self.problems.append(f"<{tag}> inside an inline tag")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")


def check(html: str) -> str:
    """The visible text of ``html``; fails the test if Telegram would refuse or fix it."""
    visible, _ = parse_text(html, "HTML")  # raises the emulator's ApiError, as Telegram would
    nesting = _Nesting()
    nesting.feed(html)
    nesting.close()
    problems = nesting.problems + [f"unclosed {tag}" for tag in nesting.stack]
    if _ENTITY.search(html):
        problems.append("an & that is no entity Telegram knows")
    assert not problems, (problems, html)
    return visible
