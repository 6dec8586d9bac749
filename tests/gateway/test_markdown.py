"""gateway/markdown.py: the one parse and its safety rules, and the renderers channels share."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from gateway.markdown import literal, parse, safe_url, to_html, to_markdown, to_text


@pytest.mark.parametrize(
    "url, safe",
    [
        ("https://x.test/a", True),
        ("HTTP://x.test", True),
        ("mailto:a@x.test", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("java%09script:alert(1)", False),
        ("data:text/html,x", False),
        ("vbscript:x", False),
        ("file:///etc/passwd", False),
        ("/relative", False),
        ("//x.test/protocol-relative", False),
        ("#fragment", False),
    ],
)
def test_only_http_https_and_mailto_become_links(url, safe):
    assert safe_url(url) is safe
    html = to_html(f"[label]({url})")
    assert ("<a href=" in html) is safe


def test_raw_html_is_text_in_the_tree():
    tree = parse("<script>alert(1)</script>\n\n<div onclick=x>y</div>\n\na <b>b</b>")
    kinds = {node.type for node in tree.walk()}
    assert not kinds & {"html_block", "html_inline"}
    assert to_text("a <b>b</b>") == "a <b>b</b>"


def test_a_text_nesting_past_the_parsers_cap_is_shown_whole():
    md = "> " * 30 + "quoted\n" + "- " * 30 + "listed\nafter"
    assert to_text(md) == md  # markdown-it would drop what lies past maxNesting
    assert "after" in to_html(md) and "&gt; &gt;" in to_html(md)


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab *_~`[]()<>&!|#\\")), max_size=60))
def test_literal_shows_exactly_its_text(text):
    text = text.strip()
    assert to_text(literal(text)) == text


_PIECES = ["`", "```\n", "[", "](", ")", "<", ">", "https://x.test/", "javascript:", "#", "- ", "1. ", "> ", "\n",
           "\n\n", "  ", "|", "---", "a", "word", "&", "!", "\\"]  # fmt: skip
markdownish = st.lists(st.sampled_from([*_PIECES, "**", "*", "_", "~~"]), max_size=40).map("".join)
structural = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)


def _hrefs(md: str) -> list[str]:
    return [str(n.attrs.get("href") or n.attrs.get("src")) for n in parse(md).walk() if n.type in ("link", "image")]


@hsettings(max_examples=300, deadline=None)
@given(structural)
def test_markdown_rebuilt_from_the_tree_reads_the_same(md):
    """to_markdown (Slack's markdown block) says what the parser read: parsed again, it shows the same."""
    once = to_markdown(md)
    assert _lines(to_text(once)) == _lines(to_text(md))
    assert _hrefs(once) == _hrefs(md)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]  # blank lines and indents may differ


@hsettings(max_examples=300, deadline=None)
@given(markdownish)
def test_markdown_rebuilt_from_the_tree_keeps_every_word_and_adds_no_link(md):
    # Emphasis runs can regroup (`*a**b*`), so only the words and the links are held equal here.
    once = to_markdown(md)
    assert re.sub(r"[^a-z]", "", to_text(once)) == re.sub(r"[^a-z]", "", to_text(md))
    assert _hrefs(once) == _hrefs(md)


@hsettings(max_examples=200, deadline=None)
@given(markdownish)
def test_no_markup_from_unsafe_text_reaches_html(md):
    html = to_html(md)
    assert all(safe_url(href) for href in re.findall(r'href="([^"]*)"', html))
    assert {tag for tag in re.findall(r"<(/?[a-z0-9]+)", html)} <= _TAGS


_TAGS = {
    t
    for name in "p br strong em s code pre a h1 h2 h3 h4 h5 h6 ul ol li blockquote hr table thead tbody tr th td".split()
    for t in (name, "/" + name)
}


def test_a_text_longer_than_a_message_is_parsed_whole_each_time():
    md = "\n\n".join(f"**{i}** [l{i}](https://x.test/{i}) <i>" for i in range(4000))  # about 130,000 characters
    assert len(md) > 100_000
    text = to_text(md)
    assert text.count("(https://x.test/") == 4000 and text.endswith("3999 l3999 (https://x.test/3999) <i>")
    assert to_text(md) == text and parse(md) is not parse(md)  # not kept: a new tree each time
    short = "**kept**"
    assert parse(short) is parse(short)
