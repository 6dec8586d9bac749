"""HTML mail to plain text, with the stdlib parser (no dependency for what mail needs).

Blocks become lines, lists get bullets, links keep their target, and a
`<blockquote>` becomes `> ` lines so quote stripping treats HTML replies like
plain ones. Gmail's, Thunderbird's, Yahoo's and Proton's quote containers are
quoted the same way; scripts, styles and the head vanish.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "header",
    "footer",
    "table",
    "tr",
    "ul",
    "ol",
    "dl",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "pre",
    "hr",
    "address",
    "center",
    "form",
    "fieldset",
}
_HIDDEN = {"script", "style", "head", "title", "template", "noscript"}
_VOID = {"br", "hr", "img", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
# Containers of quoted history. Outlook's `divRplyFwdMsg` holds only its header block,
# with the history after it, unmarked: quote stripping cuts at that block instead.
_QUOTE_MARKS = ("gmail_quote", "moz-cite-prefix", "yahoo_quoted", "protonmail_quote")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.hidden = 0
        self.pre = 0
        self.depth = 0  # quote depth
        self.stack: list[tuple[str, bool]] = []  # open elements: (tag, opened a quote)
        self.href: list[str | None] = []

    # ---- structure
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag in _HIDDEN:
            self.hidden += 1
        if tag == "br":
            self._break()
            return
        if tag in _VOID:
            if tag == "hr":
                self._break(blank=True)
            elif tag == "img" and a.get("alt"):
                self._add(f"[{a['alt']}]")
            return
        quote = tag == "blockquote" or any(
            m in (a.get("class", "") + " " + a.get("id", "")).lower() for m in _QUOTE_MARKS
        )
        self.stack.append((tag, quote))
        if tag in _BLOCK or tag in ("li", "blockquote", "dt", "dd") or quote:
            self._break(blank=tag in ("p", "blockquote", "table", "ul", "ol") or quote)
        if quote:
            self.depth += 1
        if tag == "li":
            self._add("- ")
        elif tag == "pre":
            self.pre += 1
        elif tag == "a":
            self.href.append(a.get("href"))
        elif tag in ("td", "th"):
            self._add(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        if tag in _VOID:
            return
        # Close up to the matching open element; HTML in mail is rarely well nested.
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, quote in self.stack[i:]:
                    if quote:
                        self._break(blank=True)
                        self.depth -= 1
                del self.stack[i:]
                break
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        elif tag == "a" and self.href:
            href = self.href.pop()
            text = "".join(self.line).strip()
            if href and href.startswith(("http://", "https://")) and href not in text:
                self._add(f" ({href})")
        if tag in _BLOCK or tag in ("li", "dt", "dd"):
            self._break(blank=tag in ("p", "table", "ul", "ol"))

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            parts = data.split("\n")
            for i, part in enumerate(parts):
                if i:
                    self._break()
                self._add(part, raw=True)
            return
        self._add(re.sub(r"\s+", " ", data))

    # ---- output
    def _add(self, text: str, raw: bool = False) -> None:
        if not text:
            return
        if not self.line:
            text = text if raw else text.lstrip()
            if not text:
                return
        elif not raw and self.line[-1].endswith(" ") and text.startswith(" "):
            text = text.lstrip()
        self.line.append(text.replace("\xa0", " "))

    def _break(self, blank: bool = False) -> None:
        text = "".join(self.line).rstrip()
        self.line = []
        prefix = "> " * self.depth
        if text:
            self.lines.append(prefix + text)
        if blank and self.lines and self.lines[-1].strip("> "):
            self.lines.append(prefix.rstrip())

    def text(self) -> str:
        self._break()
        out = "\n".join(self.lines)
        return re.sub(r"\n{3,}", "\n\n", out).strip()


def html_to_text(markup: str) -> str:
    """Readable plain text from an HTML body."""
    parser = _Text()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:
        return html.unescape(re.sub(r"<[^>]*>", " ", markup)).strip()
    return parser.text()
