"""Markdown to Telegram HTML: what CommonMark makes of the text, in Telegram's subset, for every
prefix of a streamed answer; the segment cache adds up to the whole rendering."""

from __future__ import annotations

import html
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.telegram_format import MAX_UNITS, render_whole, segments, to_html
from bot.replies.split import utf16_units
from tests.adapters.telegram_html import check

# -- what used to break ---------------------------------------------------------------------


def test_cases_the_hand_written_converter_got_wrong() -> None:
    assert to_html("***x***") == "<i><b>x</b></i>"  # was <b>*x</b>*
    assert to_html("> quote") == "<blockquote>quote</blockquote>"  # was &gt; quote
    assert to_html("````md\n```py\nx = 1\n```\n````") == (
        '<pre><code class="language-md">```py\nx = 1\n```</code></pre>'
    )  # four backticks: the inner fence is code
    assert to_html("[w](http://a/x_(y))") == '<a href="http://a/x_(y)">w</a>'  # was cut at )
    assert to_html("![a cat](https://e.com/c.png)") == '<a href="https://e.com/c.png">a cat</a>'
    assert to_html("![i](u)") == "i"  # a relative address Telegram cannot link: the alt text
    assert to_html("| a | bb |\n|--:|:-:|\n| 10 | 日本 |\n| 🎉 | x |") == (
        "<pre> a |  bb\n---+-----\n10 | 日本\n🎉 |  x</pre>"
    )  # columns aligned as the delimiter row says; CJK and emoji are two columns wide


def test_blocks_telegram_has_no_tag_for() -> None:
    assert to_html("# Title\nSub\n---") == "<b>Title</b>\n\n<b>Sub</b>"
    assert to_html("- a\n- b\n  1. x\n  2. y\n\n3) c") == "• a\n• b\n  1. x\n  2. y\n\n3. c"
    assert to_html("a\n\n***\n\nb") == "a\n\n────────\n\nb"
    assert to_html("> a\n> > b") == "<blockquote>a\n\nb</blockquote>"  # quotes do not nest


def test_inline_markup() -> None:
    assert to_html("**bold** and *it* and `x<y` and ~~gone~~") == (
        "<b>bold</b> and <i>it</i> and <code>x&lt;y</code> and <s>gone</s>"
    )
    assert to_html("[docs](https://example.com/a?b=1&c=2)") == (
        '<a href="https://example.com/a?b=1&amp;c=2">docs</a>'
    )
    assert to_html("[`f()` **now**](https://x.org)") == '<a href="https://x.org">f() <b>now</b></a>'
    assert to_html("<https://x.org>") == '<a href="https://x.org">https://x.org</a>'
    assert to_html("[x](javascript:alert(1))") == "[x](javascript:alert(1))"
    assert to_html("snake_case_name") == "snake_case_name"


def test_html_in_the_answer_is_shown_not_interpreted() -> None:
    assert to_html("<b>hi</b> & <script>") == "&lt;b&gt;hi&lt;/b&gt; &amp; &lt;script&gt;"
    assert to_html("<div>\nx\n</div>") == "&lt;div&gt;\nx\n&lt;/div&gt;"


def test_half_written_answers_render_sensibly() -> None:
    assert to_html("this is **not closed") == "this is **not closed"
    assert to_html("`open code") == "`open code"
    assert to_html("[docs](https://exa") == "[docs](https://exa"
    assert to_html("text\n```python\nif a < b:\n    pa") == (
        'text\n\n<pre><code class="language-python">if a &lt; b:\n    pa</code></pre>'
    )


def test_a_rendering_past_telegrams_limit_or_empty_is_sent_as_the_markdown() -> None:
    table = "| " + "a" * 200 + " | b |\n|-|-|\n" + "|x|y|\n" * 300  # padding makes it long
    assert utf16_units(table) < MAX_UNITS
    assert to_html(table) == html.escape(table, quote=False)
    assert to_html("&nbsp;") == "&amp;nbsp;"  # renders to a space only
    check(to_html(table))


def test_a_streamed_answer_renders_segment_by_segment_as_it_would_whole() -> None:
    text = "a\n\nb\n- x\n\n- y\n\nc\n```\nq\n\nd\n```\n\n  ```\n\ne\n\nf"
    # cut before "b" and "c"; not before a list item, inside a fence or after an indented one
    assert segments(text) == ["a\n\n", "b\n- x\n\n- y\n\n", text.split("- y\n\n")[1]]
    assert to_html(text) == render_whole(text)
    # a reference defined later changes a link earlier: such a text is rendered whole
    linked = "[docs][r]\n\ntext\n\n[r]: https://e.com/r"
    assert to_html(linked) == '<a href="https://e.com/r">docs</a>\n\ntext'


# -- every prefix of generated Markdown ------------------------------------------------------

WORDS = st.sampled_from(
    ["word", "Hello", "x", "snake_case", "2*3*4", "日本語", "质量", "🎉", "👍🏽", "👨‍👩‍👧", "a&b",
     "<b>", "</i>", "&amp;", "&nbsp;", "&#128512;", "\\*", "http://a/x_(y)", "|", ">", "]", ":"]
)  # fmt: skip
WRAPS = st.sampled_from(
    ["**{}**", "*{}*", "***{}***", "_{}_", "__{}__", "~~{}~~", "`{}`", "``{}``",
     "[{}](http://a/x_(y))", "![{}](u.png)", "![{}](https://e.com/i.png)", "<https://e.com/{}>",
     "[{}](javascript:x)", "[{}][ref]", "**{}", "{}**"]
)  # fmt: skip
INLINE = st.recursive(
    st.lists(WORDS, min_size=1, max_size=4).map(" ".join),
    lambda inner: st.one_of(
        st.tuples(WRAPS, inner).map(lambda p: p[0].format(p[1])),
        st.lists(inner, min_size=2, max_size=3).map(" ".join),
    ),
    max_leaves=6,
)


@st.composite
def blocks(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from([0, 1, 1, 1, 2, 3, 3, 4, 5, 6, 7, 8, 8, 8]))
    line = draw(INLINE)
    if kind == 0:
        return "#" * draw(st.integers(1, 6)) + " " + line
    if kind == 1:
        items = draw(st.lists(st.tuples(st.sampled_from(["", "  ", "    "]), INLINE), max_size=4))
        marker = draw(st.sampled_from(["- ", "* ", "1. ", "2) "]))
        gap = draw(st.sampled_from(["\n", "\n\n"]))  # a blank line makes the list loose
        return gap.join(f"{indent}{marker}{text}" for indent, text in [("", line), *items])
    if kind == 2:
        return "\n".join(draw(st.sampled_from(["> ", "> > ", ">"])) + line for _ in range(2))
    if kind == 3:
        fence = draw(st.sampled_from(["```", "````", "~~~"]))
        info = draw(st.sampled_from(["", "python", "c++ x", "`x`"]))
        close = draw(st.sampled_from(["", "\n" + fence, "\n```", "\n  " + fence]))
        return f"{fence}{info}\n{line}\n<code> & {line}{close}"
    if kind == 4:
        cells = draw(st.lists(INLINE, min_size=2, max_size=6))
        align = draw(st.sampled_from(["|---|:--|", "|--:|:-:|", "| - | - |"]))
        rows = [" | ".join(cells[i : i + 2]) for i in range(0, len(cells), 2)]
        return "\n".join([rows[0], align, *("| " + row + " |" for row in rows[1:])])
    if kind == 5:
        return draw(st.sampled_from(["---", "***", "___", "- - -"]))
    if kind == 6:
        return "    " + line + "\n\t" + line
    if kind == 7:
        return "[ref]: https://e.com/r"
    return line


MARKDOWN = st.lists(st.tuples(blocks(), st.sampled_from(["\n", "\n\n", "\n\n\n"])), max_size=6).map(
    lambda parts: "".join(block + gap for block, gap in parts)
)


def prefixes(text: str) -> list[str]:
    step = max(1, len(text) // 25)
    return [text[:end] for end in (*range(1, len(text), step), len(text))]


def accepted(markdown: str) -> None:
    """``markdown`` renders to HTML Telegram accepts; the segments add up to the whole."""
    if not markdown.strip():
        return  # never sent: the splitter shows blank text as "…"
    rendered = to_html(markdown)
    shown = check(rendered)
    assert shown.strip() and utf16_units(shown) <= MAX_UNITS
    whole = render_whole(markdown)
    if rendered != whole:  # only where the guard had to step in
        assert rendered == html.escape(markdown, quote=False), (markdown, segments(markdown))
        visible = html.unescape(re.sub(r"<[^>]*>", "", whole))
        assert not visible.strip() or utf16_units(visible) > MAX_UNITS, (markdown, whole)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(MARKDOWN)
def test_every_prefix_of_generated_markdown_renders_to_html_telegram_accepts(text: str) -> None:
    for prefix in prefixes(text):
        accepted(prefix)


@FAST
@given(st.text(alphabet="ab *_`~[]()<>&#|-:!\\\n 1.🎉日", max_size=120))
def test_every_prefix_of_any_text_renders_to_html_telegram_accepts(text: str) -> None:
    for prefix in prefixes(text):
        accepted(prefix)
