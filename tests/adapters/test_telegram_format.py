"""Markdown to Telegram HTML: complete constructs become tags, anything else stays literal."""

from __future__ import annotations

from html.parser import HTMLParser

from hypothesis import given
from hypothesis import strategies as st

from adapters.telegram_format import to_html

ALLOWED = {"b", "i", "s", "code", "pre", "a"}


class Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.ok = True
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ok &= tag in ALLOWED
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.ok &= bool(self.stack) and self.stack.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check(html: str) -> Balance:
    parser = Balance()
    parser.feed(html)
    parser.close()
    assert parser.ok and not parser.stack, html
    return parser


def test_common_markdown_becomes_tags() -> None:
    assert to_html("**bold** and *it* and `x<y`") == (
        "<b>bold</b> and <i>it</i> and <code>x&lt;y</code>"
    )
    assert to_html("# Title") == "<b>Title</b>"
    assert to_html("[docs](https://example.com/a?b=1&c=2)") == (
        '<a href="https://example.com/a?b=1&amp;c=2">docs</a>'
    )
    assert to_html("~~gone~~") == "<s>gone</s>"


def test_code_fences_become_pre_blocks_and_an_unclosed_one_is_closed() -> None:
    assert to_html("```python\nif a < b:\n    pass\n```") == (
        '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>'
    )
    assert to_html("text\n```\nhalf written").endswith("<pre>half written</pre>")


def test_half_written_markers_stay_literal() -> None:
    assert to_html("this is **not closed") == "this is **not closed"
    assert to_html("snake_case_name and 2*3*4") == "snake_case_name and 2*3*4"
    assert to_html("`open code") == "`open code"


def test_html_in_the_answer_is_shown_not_interpreted() -> None:
    assert to_html("<b>hi</b> & <script>") == "&lt;b&gt;hi&lt;/b&gt; &amp; &lt;script&gt;"


@given(st.text(alphabet="ab *_`~[]()<>&#\nhttps:/.", max_size=80))
def test_any_text_and_any_prefix_renders_balanced(text: str) -> None:
    for end in range(0, len(text) + 1, 7):
        check(to_html(text[:end]))
    check(to_html(text))
