"""Turn an item's HTML (or plain text) into the clean plain text every later stage sees.

The output is text only, never markup: tags are dropped, entities decoded, and the content of
``script``/``style``/``iframe`` and similar elements discarded, so it is safe on unsanitized HTML.
Block elements and ``<br>`` end a paragraph; paragraphs are joined with "\\n". Site furniture
("إعلان", "اقرأ أيضاً »", "Read more", "A+ A-") is dropped, and a paragraph the site printed twice,
even with a small change, is kept once.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from html.parser import HTMLParser

# Each of these ends the paragraph before it and starts a new one.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "center", "dd", "details",
        "dialog", "div", "dl", "dt", "fieldset", "figure", "footer", "form", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre",
        "section", "summary", "table", "tbody", "tfoot", "thead", "tr", "ul", "body", "html",
    }
)  # fmt: skip
# Elements whose text is never article text: code, embeds, player fallbacks, form controls,
# and image captions (mostly photo credits, which would otherwise match and pad summaries).
_SKIP_TAGS = frozenset(
    {
        "script", "style", "iframe", "noscript", "template", "object", "embed", "svg", "canvas",
        "figcaption", "head", "audio", "video", "button", "select", "textarea", "frameset",
        "noembed", "noframes",
    }
)  # fmt: skip
_CELL_TAGS = frozenset({"td", "th"})

# Paragraphs that are nothing but site furniture, compared as fold_tokens joined by spaces.
_BOILERPLATE = frozenset(
    {
        # Arabic
        "اعلان", "اعلانات", "مساحه اعلانيه", "المزيد", "للمزيد", "اقرا المزيد", "اقرا ايضا",
        "اقرا كذلك", "التفاصيل", "لمزيد من التفاصيل", "تابع القراءه", "اكمل القراءه",
        "شاهد ايضا", "اضغط هنا", "مواضيع ذات صله", "اخبار ذات صله", "شارك", "شارك الخبر",
        "شارك المقال", "a a", "a a a",
        # English and a few other languages the corpus carries
        "advertisement", "advertising", "ad", "sponsored", "read more", "read more here",
        "more", "continue reading", "read the full article", "read the full story",
        "full story", "click here", "related", "related articles", "related stories",
        "see also", "share", "share this", "share this article", "lire la suite", "lire aussi",
        "weiterlesen", "mehr lesen", "mehr", "leer más", "читать далее", "подробнее",
    }
)  # fmt: skip
# A paragraph that is one of these followed only by link text is a pointer to another page.
_LINK_PREFIXES = frozenset(
    {
        "اقرا ايضا", "اقرا كذلك", "اقرا المزيد", "شاهد ايضا", "المزيد", "للمزيد", "اقرا",
        "read more", "read also", "see also", "related", "more", "also read", "lire aussi",
        "mehr zum thema",
    }
)  # fmt: skip
_UNFINISHED_TAG = re.compile(r"</?[A-Za-z!?]")
_POST_APPEARED = re.compile(r"^The post .+ appeared first on .+$", re.DOTALL)

# Common HTML tags. Found in decoded text, the feed escaped its HTML twice; found in a field
# declared plain text, the feed mislabelled HTML (Atom's default type is text).
_HTML_MARKUP = re.compile(
    r"</?(?:p|div|br|span|a|img|strong|em|b|i|ul|ol|li|h[1-6]|blockquote|figure|table)\b[^<>]*>",
    re.IGNORECASE,
)

# Near-copy detection: token sequences at least this similar are the same paragraph...
_NEAR_RATIO = 0.85
# ...when both have at least this many tokens (short lines such as "Reuters:" legitimately recur).
_NEAR_MIN_TOKENS = 8
# A paragraph that is a word-for-word start of another is a truncated copy from this length on.
_PREFIX_MIN_TOKENS = 6
# Only this many earlier paragraphs are compared for near-copies: repeats sit close together, and
# it bounds the work on hostile input with thousands of paragraphs.
_NEAR_WINDOW = 30
# At most this many full comparisons per text, for the same reason; an article needs a few dozen.
_NEAR_BUDGET = 2000

# Spelling variants folded for comparison only (a subset of spec/matching.md §1).
# Arabic spelling variants folded for comparison. Chained str.replace, not str.translate: on
# Arabic text translate looks every character up in a dict, 20x slower for these 9 letters, and
# this runs on every paragraph of every parsed item.
_FOLDS = (*zip("أإآٱىةؤئ", "اااايهءء", strict=True), ("ـ", ""))


def _fold_letters(text: str) -> str:
    for variant, letter in _FOLDS:
        text = text.replace(variant, letter)
    return text


_MARKS = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed]")
_TOKEN = re.compile(r"[^\W_]+")
# C0/C1 controls (tab and newline are whitespace anyway) and lone surrogates from bad decoding.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@dataclass
class _Paragraph:
    text: str
    plain: str  # the part of text outside links


def html_to_text(html: str) -> str:
    """Clean plain text from HTML: paragraphs joined with "\\n", boilerplate and repeats dropped."""
    paragraphs = _collect(html)
    if _HTML_MARKUP.search("\n".join(p.text for p in paragraphs)):
        # Double-escaped feeds: the first pass only decoded the entities. One more pass at most.
        paragraphs = _collect("<br>".join(p.text for p in paragraphs))
    return _finish(paragraphs)


def plain_to_text(text: str) -> str:
    """Clean plain text from text declared plain: each line a paragraph, same clean-up."""
    if _HTML_MARKUP.search(text):
        return html_to_text(text)
    paragraphs = []
    for line in text.splitlines():
        clean = _squash(line)
        if clean:
            paragraphs.append(_Paragraph(clean, clean))
    return _finish(paragraphs)


def fold_tokens(text: str) -> list[str]:
    """Words of text for comparison: case, Arabic spelling variants and punctuation ignored."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = _fold_letters(_MARKS.sub("", folded))
    return _TOKEN.findall(folded)


class _Collector(HTMLParser):
    """Splits HTML into paragraphs of text, tracking which text sits inside links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[_Paragraph] = []
        self._chunks: list[str] = []
        self._plain: list[str] = []
        self._skipping: list[str] = []
        self._link_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skipping:
            if tag in _SKIP_TAGS:
                self._skipping.append(tag)
            return
        if tag in _SKIP_TAGS:
            self._skipping.append(tag)
            self._break()
        elif tag in _BLOCK_TAGS:
            self._break()
        elif tag in _CELL_TAGS:
            self._add(" ")
        elif tag == "a":
            self._link_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # "<script/>" opens nothing; "<br/>" and "<p/>" still break.
        if not self._skipping and tag in _BLOCK_TAGS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag in self._skipping:
                while self._skipping.pop() != tag:
                    pass
            return
        if tag in _BLOCK_TAGS:
            self._break()
        elif tag in _CELL_TAGS:
            self._add(" ")
        elif tag == "a":
            self._link_depth = max(0, self._link_depth - 1)

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self._add(data)

    def unknown_decl(self, data: str) -> None:
        # A CDATA section inside HTML content still holds text.
        if data.startswith("CDATA[") and not self._skipping:
            self._add(data[len("CDATA[") :])

    def close(self) -> None:
        # A tag cut off by the end of the input ("text <a href=") is markup, not text; HTMLParser
        # would hand it over as data, browsers drop it.
        if _UNFINISHED_TAG.match(self.rawdata):
            self.rawdata = ""
        super().close()
        self._break()

    def _add(self, text: str) -> None:
        self._chunks.append(text)
        if self._link_depth == 0:
            self._plain.append(text)

    def _break(self) -> None:
        text = _squash("".join(self._chunks))
        if text:
            self.paragraphs.append(_Paragraph(text, _squash("".join(self._plain))))
        self._chunks.clear()
        self._plain.clear()


def _collect(html: str) -> list[_Paragraph]:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.paragraphs


def _squash(text: str) -> str:
    """Whitespace runs to one space, control characters and lone surrogates removed."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _finish(paragraphs: list[_Paragraph]) -> str:
    kept = _KeptParagraphs()
    for paragraph in paragraphs:
        if not _is_boilerplate(paragraph):
            kept.add(paragraph.text)
    return "\n".join(kept.texts)


class _KeptParagraphs:
    """Paragraphs kept so far, refusing exact repeats, near-copies and truncated copies."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._tokens: list[list[str]] = []  # parallel to texts
        self._word_sets: list[set[str]] = []  # parallel to texts
        self._seen: set[tuple[str, ...]] = set()
        self._comparisons_left = _NEAR_BUDGET

    def add(self, text: str) -> None:
        tokens = fold_tokens(text)
        key = tuple(tokens) if tokens else (text,)
        if key in self._seen:
            return
        self._seen.add(key)
        copy_of = self._copy_of(tokens)
        if copy_of is None:
            self.texts.append(text)
            self._tokens.append(tokens)
            self._word_sets.append(set(tokens))
            return
        earlier = self._tokens[copy_of]
        if len(tokens) > len(earlier) and _is_truncated_start(earlier, tokens):
            # The earlier one was a truncated start of this one: keep the whole paragraph, in
            # the earlier place.
            self.texts[copy_of] = text
            self._tokens[copy_of] = tokens
            self._word_sets[copy_of] = set(tokens)

    def _copy_of(self, tokens: list[str]) -> int | None:
        """Index of a kept paragraph that tokens repeats, if any."""
        n = len(tokens)
        if n < min(_PREFIX_MIN_TOKENS, _NEAR_MIN_TOKENS):
            return None  # too short to be a near-copy or a truncated copy of anything
        words = set(tokens)
        for index in range(max(0, len(self.texts) - _NEAR_WINDOW), len(self.texts)):
            other = self._tokens[index]
            m = len(other)
            shorter, longer = (tokens, other) if n <= m else (other, tokens)
            if len(shorter) >= _PREFIX_MIN_TOKENS and _is_truncated_start(shorter, longer):
                return index
            if min(n, m) < _NEAR_MIN_TOKENS or 2 * min(n, m) / (n + m) < _NEAR_RATIO:
                continue
            # Cheap filter first: near-copies share most of their distinct words.
            other_words = self._word_sets[index]
            shared = len(words & other_words)
            if shared < _NEAR_RATIO * min(len(words), len(other_words)) - 1:
                continue
            if self._comparisons_left <= 0:
                return None
            self._comparisons_left -= 1
            if SequenceMatcher(None, other, tokens, autojunk=False).ratio() >= _NEAR_RATIO:
                return index
        return None


def _is_boilerplate(paragraph: _Paragraph) -> bool:
    whole = " ".join(fold_tokens(paragraph.text))
    if whole in _BOILERPLATE or _POST_APPEARED.match(paragraph.text):
        return True
    # "اقرأ أيضاً: <a>another story</a>" or a bare "<a>Read more »</a>".
    has_link_text = len(paragraph.plain) < len(paragraph.text)
    return has_link_text and " ".join(fold_tokens(paragraph.plain)) in _LINK_PREFIXES


def _is_truncated_start(shorter: list[str], longer: list[str]) -> bool:
    # The last word of a truncated copy may itself be cut ("…الاسلا").
    head = len(shorter) - 1
    return shorter[:head] == longer[:head] and longer[head].startswith(shorter[head])
