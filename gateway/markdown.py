"""Markdown as agents write it: one parser, and the renderers more than one channel shows.

The text is parsed once, here, by markdown-it-py (CommonMark with GFM strikethrough and
tables), and a `Renderer` walks the syntax tree: `to_text` for SMS and mail's text part,
`to_markdown` for surfaces that take standard Markdown (Slack's `markdown` block),
`to_html` for mail's HTML part; channels/slack/mrkdwn.py is Slack's own renderer.

Model text is untrusted (a prompt can put words in the model's mouth), so the parser
holds two rules for every renderer:
- raw HTML is never markup: `<script>` is the text "<script>" (html off);
- a link or image is one only when its target is http, https or mailto; any other
  (javascript:, data:, a relative path) stays the literal text the model wrote.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode
from markdown_it.utils import EnvType, OptionsDict

Node = SyntaxTreeNode  # what a channel's Renderer walks, without importing markdown-it itself

SAFE_SCHEMES = ("http:", "https:", "mailto:")


def safe_url(url: str) -> bool:
    """Whether `url` (as markdown-it normalised it, percent-encoded) may become a link."""
    return url.lower().startswith(SAFE_SCHEMES)


# breaks: a single newline is a line break, as models mean it (CommonMark would join the lines).
_MD = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["strikethrough", "table"])
_MD.validateLink = safe_url  # type: ignore[method-assign]  # markdown-it's documented hook


def _unlink(state: StateCore) -> None:
    """Drop links and images whose target is not safe, keeping their text.

    validateLink keeps `[x](javascript:...)` from being a link, but an empty target
    (`[x]()`) skips it and becomes a link to "".
    """
    for token in state.tokens:
        if token.type != "inline" or not token.children:
            continue
        kept: list[Token] = []
        dropped = False  # links do not nest, so the next link_close closes the one dropped
        for child in token.children:
            if child.type == "link_close" and dropped:
                dropped = False
                continue
            if child.type == "link_open" and not safe_url(str(child.attrGet("href") or "")):
                dropped = True
                continue
            if child.type == "image" and not safe_url(str(child.attrGet("src") or "")):
                kept.extend(child.children or [])  # its alt text
                continue
            kept.append(child)
        token.children = kept


_MD.core.ruler.push("frontdesk_unlink", _unlink)


# A channel renders one message two or three ways (Slack: mrkdwn, the structure check, the
# markdown block; mail: text and HTML), and a parse costs about 1 ms for 700 characters
# (markdown-it-py 4.3, this machine under load), several times the old regexes: so one parse
# per text, for texts of a message's size (a longer one is parsed each time, not kept).
# Nothing downstream mutates the tokens or the tree, so sharing them is safe.
_KEEP = 64
_KEEP_UP_TO = 40_000  # characters


def parse(text: str) -> SyntaxTreeNode:
    """The syntax tree of `text` (shared: read it, do not change it)."""
    return _tree(text) if len(text) <= _KEEP_UP_TO else SyntaxTreeNode(_parse(text))


def _tokens(text: str) -> list[Token]:
    return _kept(text) if len(text) <= _KEEP_UP_TO else _parse(text)


@functools.lru_cache(maxsize=_KEEP)
def _tree(text: str) -> SyntaxTreeNode:
    return SyntaxTreeNode(_kept(text))


@functools.lru_cache(maxsize=_KEEP)
def _kept(text: str) -> list[Token]:
    return _parse(text)


def _parse(text: str) -> list[Token]:
    """markdown-it's tokens of `text`, or one paragraph of its literal text where it nests too deep.

    Past maxNesting (20 levels, ten nested lists) markdown-it drops the rest of the text;
    a text that comes near it is shown as written rather than cut.
    """
    tokens = _MD.parse(text or "")
    if max((token.level for token in tokens), default=0) < _MD.options.maxNesting - 1:
        return tokens
    lines = (text or "").splitlines()
    children: list[Token] = []
    for line in lines:
        if children:
            children.append(Token("softbreak", "br", 0))
        children.append(Token("text", "", 0, content=line))
    inline = Token("inline", "", 0, content=text, children=children, map=[0, len(lines)])
    return [Token("paragraph_open", "p", 1, map=[0, len(lines)]), inline, Token("paragraph_close", "p", -1)]


_PUNCTUATION = re.compile(r"([\\`*_~\[\]<>&!|#])")


def literal(text: str) -> str:
    """`text` as Markdown that shows exactly `text` (markup characters backslash-escaped)."""
    return _PUNCTUATION.sub(r"\\\1", text)


class Renderer:
    """A walk over the tree: blocks spaced as the source spaced them, one method per node type.

    The defaults render plain text; a subclass overrides the marks its format has.
    One instance renders one text at a time (it holds that text's lines).
    """

    bullet = "-"

    def __init__(self) -> None:
        self.lines: list[str] = []  # the source, to see where it left a blank line between blocks

    def render(self, text: str) -> str:
        self.lines = (text or "").splitlines()
        try:
            return self.blocks(parse(text).children).strip("\n")
        finally:
            self.lines = []

    # ---- blocks
    def blocks(self, nodes: Sequence[SyntaxTreeNode], render: Callable[[SyntaxTreeNode], str] | None = None) -> str:
        """`nodes` rendered and joined: a blank line where the source had one, else a line break."""
        out: list[str] = []
        previous: SyntaxTreeNode | None = None
        for node in nodes:
            text = (render or self.block)(node)
            if not text:
                continue
            if out and previous is not None:
                out.append(self.separator(previous, node))
            out.append(text)
            previous = node
        return "".join(out)

    def separator(self, previous: SyntaxTreeNode, node: SyntaxTreeNode) -> str:
        """A blank line where the source had one before `node`, else a line break."""
        if node.map is None or node.map[0] == 0:
            return "\n\n"
        before = node.map[0] - 1
        # In a quote a blank line is a bare `>`; markdown-it's maps end past trailing blanks, so look back.
        blank = before >= len(self.lines) or not self.lines[before].strip(" \t>")
        return "\n\n" if blank else "\n"

    def block(self, node: SyntaxTreeNode) -> str:
        match node.type:
            case "paragraph":
                return self.paragraph(node)
            case "heading":
                return self.heading(node, int(node.tag[1:]))
            case "bullet_list" | "ordered_list":
                return self.items(node)
            case "blockquote":
                return self.quote(self.blocks(node.children))
            case "fence" | "code_block":
                return self.code(node.content.rstrip("\n"), node.info.strip())
            case "hr":
                return self.rule()
            case "table":
                return self.table([[self.inline(cell) for cell in row.children] for row in _rows(node)])
            case _:  # html_block cannot occur (html off); anything newer shows its text
                return self.blocks(node.children) if node.children else self.text(node.content)

    def paragraph(self, node: SyntaxTreeNode) -> str:
        return self.inline(node)

    def heading(self, node: SyntaxTreeNode, level: int) -> str:
        return self.inline(node)

    def items(self, node: SyntaxTreeNode) -> str:
        start = int(str(node.attrs.get("start", 1)))
        numbers = {id(child): start + i for i, child in enumerate(node.children)}
        ordered = node.type == "ordered_list"

        def item(child: SyntaxTreeNode) -> str:
            mark = f"{numbers[id(child)]}." if ordered else self.bullet
            body = self.blocks(child.children)
            pad = " " * (len(mark) + 1)
            return f"{mark} " + body.replace("\n", "\n" + pad).replace("\n" + pad + "\n", "\n\n")

        return self.blocks(node.children, item)

    def quote(self, body: str) -> str:
        return body

    def code(self, code: str, language: str) -> str:
        return code

    def rule(self) -> str:
        return ""

    def table(self, rows: list[list[str]]) -> str:
        return "\n".join(" | ".join(cells) for cells in rows)

    # ---- inline
    def inline(self, node: SyntaxTreeNode) -> str:
        return "".join(self.span(child) for child in node.children)

    def span(self, node: SyntaxTreeNode) -> str:
        match node.type:
            case "text" | "text_special":
                return self.text(node.content)
            case "softbreak" | "hardbreak":
                return "\n"
            case "code_inline":
                return self.code_span(node.content)
            case "strong":
                return self.strong(self.inline(node))
            case "em":
                return self.em(self.inline(node))
            case "s":
                return self.strike(self.inline(node))
            case "link":
                return self.link(str(node.attrs["href"]), self.inline(node), auto=node.markup == "autolink")
            case "image":
                return self.link(str(node.attrs["src"]), self.inline(node), auto=False)
            case _:
                return self.inline(node) if node.children else self.text(node.content)

    def text(self, text: str) -> str:
        return text

    def code_span(self, code: str) -> str:
        return code

    def strong(self, inner: str) -> str:
        return inner

    def em(self, inner: str) -> str:
        return inner

    def strike(self, inner: str) -> str:
        return inner

    def link(self, url: str, label: str, *, auto: bool) -> str:
        if auto or not label.strip() or label.strip() == url:
            return label if auto and url.startswith("mailto:") else url
        return f"{label} ({url})"


def _rows(table: SyntaxTreeNode) -> list[SyntaxTreeNode]:
    return [row for part in table.children for row in part.children]


class _Markdown(Renderer):
    """Standard Markdown again, from the tree: only what the parser accepted is markup."""

    def separator(self, previous: SyntaxTreeNode, node: SyntaxTreeNode) -> str:
        # A table comes out as plain lines, which would join a paragraph or list item next to it.
        return "\n\n" if "table" in (previous.type, node.type) else super().separator(previous, node)

    def paragraph(self, node: SyntaxTreeNode) -> str:
        # A line of text that starts like a block (`---`, `- x`, `1. x`, `===`) would be one: escape it.
        return _BLOCK_START.sub(r"\1\\\2", self.inline(node))

    def heading(self, node: SyntaxTreeNode, level: int) -> str:
        return "#" * level + " " + self.inline(node)

    def quote(self, body: str) -> str:
        return "\n".join(f"> {line}".rstrip() for line in body.split("\n"))

    def code(self, code: str, language: str) -> str:
        fence = "`" * max(3, _longest_run(code, "`") + 1)
        return f"{fence}{literal(language).replace('`', '')}\n{code}\n{fence}"

    def rule(self) -> str:
        return "***"

    def table(self, rows: list[list[str]]) -> str:
        return "\n".join(" \\| ".join(cells) for cells in rows)  # one line a row: not every surface has tables

    def text(self, text: str) -> str:
        return literal(text)

    def code_span(self, code: str) -> str:
        ticks = "`" * (_longest_run(code, "`") + 1)
        # CommonMark strips one space from each end when both ends have one: pad to keep them.
        spaced = code[:1] == code[-1:] == " " and code.strip(" ")
        pad = " " if code[:1] == "`" or code[-1:] == "`" or spaced else ""
        return f"{ticks}{pad}{code}{pad}{ticks}"

    def strong(self, inner: str) -> str:
        return f"**{inner}**"

    def em(self, inner: str) -> str:
        mark = "_" if inner[:1] == "*" or inner[-1:] == "*" else "*"  # `**` would read as strong
        return f"{mark}{inner}{mark}"

    def strike(self, inner: str) -> str:
        return f"~~{inner}~~"

    def link(self, url: str, label: str, *, auto: bool) -> str:
        return f"<{url}>" if auto else f"[{label}](<{url}>)"  # normalised: `<`, `>` and spaces are %-encoded


_BLOCK_START = re.compile(r"^(\s*\d*)([-+=.)])", re.M)


def _longest_run(text: str, char: str) -> int:
    return max((len(run) for run in re.findall(f"{re.escape(char)}+", text)), default=0)


def to_text(text: str) -> str:
    """`text` as plain text: no markup characters, links as "label (url)", bullets as "-"."""
    return Renderer().render(text)


def to_markdown(text: str) -> str:
    """`text` as standard Markdown in which only what this parser accepted is markup."""
    return _Markdown().render(text)


class _Html(RendererHTML):
    """markdown-it's HTML renderer (it escapes every text), with an image shown as a link:
    a remote image in a mail is a tracking pixel the model could be talked into adding."""

    def image(self, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env) or str(token.attrGet("src"))
        return f'<a href="{escapeHtml(str(token.attrGet("src")))}">{escapeHtml(alt)}</a>'


_HTML = _Html()


def to_html(text: str) -> str:
    """`text` as an HTML fragment: every text escaped, links only http, https and mailto."""
    return _HTML.render(_tokens(text), _MD.options, {})  # env: only parsing reads link references
