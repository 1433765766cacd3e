"""Compose stage: an item and the watchlist match on it become the alert people read.

`compose_alert` builds the Telegram message (parse_mode=HTML) and its plain-text twin;
`render_console` builds what the daemon prints when no bot token is configured. Both show the
title, source and time, a summary of the item's lead sentences with the matched words marked,
the matched terms with where they matched, and the watchlist as a hashtag.

Telegram counts a message's length after entity parsing, in UTF-16 code units, and refuses one
over 4096. Every part but the summary is capped on its own; the summary gets what is left and
is cut at a sentence or word boundary, before any markup is added, so that a cut can never
break a tag or an entity. Right-to-left layout is the job of `rtl`, applied per paragraph.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from urllib.parse import urlsplit

from aggregator import rtl
from aggregator.matching.explain import highlight_spans
from aggregator.models import FIELDS, Hit, Item, WatchlistMatch

TELEGRAM_LIMIT = 4096  # UTF-16 code units of the text after entity parsing
TITLE_MAX = 300  # UTF-16 units, before direction controls
NAME_MAX = 64  # source name, in UTF-16 units
TERM_MAX = 48  # one matched term as written, in UTF-16 units
TERMS_MAX = 8  # matched terms listed; the rest are counted
HASHTAG_MAX = 64  # characters after "#"
# UTF-16 units; a longer link is dropped: on its own line in `plain`, it would eat the room
# that the summary needs.
LINK_MAX = 2048
NOTICE_LINES_MAX = 10  # points listed in an admin notice; the rest are counted
NOTICE_LINE_MAX = 300  # UTF-16 units per point
ELLIPSIS = "…"

# Where a hit was found, as the reader sees it.
_FIELD_LABELS = {"title": "title", "summary": "body", "content": "body", "categories": "category"}

# Characters dropped from item text before display: C0/C1 controls (a feed can carry terminal
# escapes), lone surrogates (not encodable for the Bot API), and bidi marks, embeddings and
# isolates, which would unbalance or fight the ones `rtl` adds. Tab, LS and PS are replaced
# rather than dropped, so they go through _REPLACED.
_DROPPED = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_REPLACED = str.maketrans({"\t": " ", "\u2028": "\n", "\u2029": "\n"})
# The direction controls `rtl` puts at the start of a line.
_CONTROL_CHARS = rtl.RLM + rtl.LRM + rtl.LRI + rtl.FSI + rtl.PDI

# A sentence ends at a line break, or at . ! ? ؟ … or the Urdu full stop (then any closing
# quotes or brackets) followed by whitespace or the end (spec/matching.md §2, so "3.5" and
# "example.com" end nothing).
_SENTENCE_END = re.compile("[.!?؟\u06d4…]+[\"'\u201d\u2019»)\\]]*(?=\\s|$)|\n")
# Punctuation that looks wrong right before an ellipsis (comma, semicolon, dashes).
_SOFT_TRAILING = " ,;:،؛-\u2013\u2014"


@dataclass(frozen=True)
class MessageOptions:
    """How alerts are laid out: the reader's timezone, the summary's size, link previews."""

    timezone: tzinfo = UTC
    max_summary_sentences: int = 3
    max_summary_chars: int = 600
    link_preview: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.timezone, tzinfo):
            raise ValueError(f"timezone must be a tzinfo, not {type(self.timezone).__name__}")
        if self.max_summary_sentences < 1:
            raise ValueError(
                f"max_summary_sentences must be at least 1, got {self.max_summary_sentences}"
            )
        if self.max_summary_chars < 1:
            raise ValueError(f"max_summary_chars must be at least 1, got {self.max_summary_chars}")


@dataclass(frozen=True)
class Message:
    """One Telegram message: HTML for parse_mode=HTML, and the same content as plain text."""

    html: str
    plain: str
    disable_preview: bool


@dataclass(frozen=True, slots=True)
class _Span:
    """A piece of one line of the message, with how it is marked up."""

    text: str
    bold: bool = False
    href: str | None = None


@dataclass(frozen=True, slots=True)
class _Line:
    """One paragraph of the message, and its direction where the text alone would mislead."""

    spans: list[_Span]
    direction: str | None = None  # "L" or "R"; None: rtl.paragraph_direction decides


def compose_alert(
    item: Item,
    match: WatchlistMatch,
    *,
    source: str,
    options: MessageOptions = MessageOptions(),
) -> Message:
    """The Telegram message for one item that a watchlist matched."""
    _check_hits(item, match)
    href = _safe_href(item.link)
    head = [_Line([_Span(_title(item), bold=True, href=href)])]
    meta = _meta(source, item.published, options.timezone)
    if meta:
        head.append(_Line([_Span(meta)]))
    tail: list[_Line] = []
    terms = _matched_terms(match.hits, _FIELD_LABELS)
    if terms:
        # An English label before a list that may be all Arabic: the label sets the layout,
        # "matched:" on the left and the terms after it, whatever script the terms are in.
        tail.append(_Line([_Span("matched: " + terms)], direction="L"))
    tail.append(_Line([_Span(_hashtag(match.watchlist))]))

    text, hits = _summary_source(item, match.hits)

    def render(max_chars: int) -> tuple[str, str]:
        excerpt = _excerpt(text, options.max_summary_sentences, max_chars)
        return _assemble(head, _summary(text, hits, *excerpt), tail, href)

    # `plain` holds everything the HTML shows plus the link, so fitting it fits both. No
    # summary longer than the limit can fit, whatever else the message holds.
    longest = min(options.max_summary_chars, TELEGRAM_LIMIT)
    html_text, plain = render(longest)
    if utf16_len(plain) > TELEGRAM_LIMIT:
        # Direction controls and astral characters make units per character vary, so search
        # for the longest summary that fits; `fits` always fits, `too_long` never does.
        fits, too_long = 0, longest
        html_text, plain = render(0)
        if utf16_len(plain) > TELEGRAM_LIMIT:  # the caps on the other parts rule this out
            raise RuntimeError(f"alert is over Telegram's limit without summary: {plain[:200]!r}")
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            candidate = render(middle)
            if utf16_len(candidate[1]) <= TELEGRAM_LIMIT:
                fits, (html_text, plain) = middle, candidate
            else:
                too_long = middle
    return Message(html=html_text, plain=plain, disable_preview=not options.link_preview)


def add_sources(
    html_text: str, plain: str, sources: Sequence[tuple[str, str | None]]
) -> tuple[str, str]:
    """An alert with a last line "also: <source>, ..." naming other outlets of its story.

    ``sources`` are (name, link) pairs; ``html_text`` and ``plain`` are a Message's, as composed
    (never a message that already has this line: build from the original each time). Each name
    is cleaned, capped and wrapped in an isolate so that an Arabic name in the Latin line, or a
    Latin one beside it, keeps its place; a link that is not a safe http(s) URL is left out.
    Sources are dropped from the end until the message fits Telegram's limit; with none left,
    the message comes back unchanged.
    """
    listed: list[tuple[str, str | None]] = []
    for name, link in sources:
        shown = _cut(_one_line(name), NAME_MAX)
        if shown:
            listed.append((shown, _safe_href(link)))
    for count in range(len(listed), 0, -1):
        html_line, plain_line = _also_line(listed[:count])
        new_plain = f"{plain}\n{plain_line}"
        # `plain` shows everything the HTML shows (and the links too), so fitting it fits both.
        if utf16_len(new_plain) <= TELEGRAM_LIMIT:
            return f"{html_text}\n{html_line}", new_plain
    return html_text, plain


def brief(text: str) -> str:
    """A short form of a composed alert (its HTML or its plain text), for digests.

    Keeps the head (linked title, source and time) and the tail's hashtag and "also:" lines;
    drops the summary and the "matched:" line. Every line of a composed message is complete
    markup on its own and sections are separated by a blank line, so the result is as valid as
    the input. Text of another shape (an admin notice) comes back unchanged.
    """
    sections = text.split("\n\n")
    if len(sections) < 2:
        return text
    tail = [
        line
        for line in sections[-1].split("\n")
        if not line.lstrip(_CONTROL_CHARS).startswith("matched: ")
    ]
    return "\n".join([sections[0], *tail])


def _also_line(sources: Sequence[tuple[str, str | None]]) -> tuple[str, str]:
    """(html, plain) of the "also:" line; names isolated with FSI ... PDI."""
    html_parts: list[str] = []
    plain_parts: list[str] = []
    for name, href in sources:
        escaped = html.escape(name, quote=False)
        if href:
            escaped = f'<a href="{html.escape(href, quote=True)}">{escaped}</a>'
        html_parts.append(f"{rtl.FSI}{escaped}{rtl.PDI}")
        plain_parts.append(f"{rtl.FSI}{name}{rtl.PDI}" + (f" {href}" if href else ""))
    return "also: " + ", ".join(html_parts), "also: " + ", ".join(plain_parts)


def render_console(
    item: Item,
    match: WatchlistMatch,
    *,
    source: str,
    options: MessageOptions = MessageOptions(),
    color: bool = False,
) -> str:
    """The alert as the daemon prints it to a terminal; ANSI bold only when `color` is set."""
    _check_hits(item, match)
    bold_on, bold_off = ("\x1b[1m", "\x1b[22m") if color else ("«", "»")
    header = " · ".join(
        part
        for part in (
            _one_line(match.watchlist),
            _one_line(source),
            _local_time(item.published, options.timezone),
        )
        if part
    )
    title = _title(item)
    lines = [f"── {header} ──", f"\x1b[1m{title}\x1b[22m" if color else title]
    href = _safe_href(item.link)
    if href:
        lines.append(href)
    terms = _matched_terms(match.hits, {field: field for field in FIELDS})
    if terms:
        lines.append("matched: " + terms)
    text, hits = _summary_source(item, match.hits)
    excerpt = _excerpt(text, options.max_summary_sentences, options.max_summary_chars)
    for line in _summary(text, hits, *excerpt):
        lines.append(
            "".join(
                f"{bold_on}{span.text}{bold_off}" if span.bold else span.text for span in line.spans
            )
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- input checks and cleaning


def compose_notice(title: str, lines: Sequence[str]) -> Message:
    """A message for the bot's admins: a bold title, then one cleaned line per point.

    At most NOTICE_LINES_MAX points of NOTICE_LINE_MAX units each are shown, so any notice fits
    in one Telegram message.
    """
    shown = [_cut(_one_line(line), NOTICE_LINE_MAX) for line in lines[:NOTICE_LINES_MAX]]
    if len(lines) > NOTICE_LINES_MAX:
        shown.append(f"{ELLIPSIS} and {len(lines) - NOTICE_LINES_MAX} more")
    title = _cut(_one_line(title), NOTICE_LINE_MAX)
    return Message(
        html="\n".join(
            [f"<b>{html.escape(title, quote=False)}</b>"]
            + [html.escape(line, quote=False) for line in shown]
        ),
        plain="\n".join([title, *shown]),
        disable_preview=True,
    )


def _check_hits(item: Item, match: WatchlistMatch) -> None:
    """Refuse hits that do not point at their text: highlighting them would mark wrong words."""
    fields = item.fields()
    for hit in match.hits:
        where = f"watchlist {match.watchlist!r}, term {hit.term!r}"
        if hit.field not in fields:
            raise ValueError(f"{where}: unknown field {hit.field!r} (expected one of {FIELDS})")
        text = fields[hit.field]
        if not 0 <= hit.start < hit.end <= len(text):
            raise ValueError(
                f"{where}: offsets {hit.start}..{hit.end} do not fit field {hit.field!r} "
                f"of length {len(text)}"
            )
        if text[hit.start : hit.end] != hit.text:
            raise ValueError(
                f"{where}: field {hit.field!r} holds {text[hit.start : hit.end]!r} at "
                f"{hit.start}..{hit.end}, not the hit's text {hit.text!r}"
            )


def _clean(text: str) -> tuple[str, list[int] | None]:
    """Text safe to display, and where each old offset went (None: offsets did not move)."""
    text = text.translate(_REPLACED)
    if not _DROPPED.search(text):
        return text, None
    kept: list[str] = []
    new_offsets: list[int] = []
    for ch in text:
        new_offsets.append(len(kept))
        if not _DROPPED.match(ch):
            kept.append(ch)
    new_offsets.append(len(kept))
    return "".join(kept), new_offsets


def _one_line(text: str) -> str:
    """Clean text on one line, whitespace runs collapsed."""
    return " ".join(_clean(text)[0].split())


def _safe_href(link: str | None) -> str | None:
    """The link if it is an absolute http(s) URL fit for an href, else None."""
    if not link:
        return None
    link = link.strip()
    if utf16_len(link) > LINK_MAX or _DROPPED.search(link) or any(ch.isspace() for ch in link):
        return None
    try:
        parts = urlsplit(link)
        hostname = parts.hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket or a bad port
        return None
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        return None
    return link


# ---------------------------------------------------------------------- parts of the message


def _title(item: Item) -> str:
    return _cut(_one_line(item.title), TITLE_MAX) or "(untitled)"


def _local_time(published: datetime | None, timezone: tzinfo) -> str:
    if published is None:
        return ""
    if published.tzinfo is None or published.utcoffset() is None:
        raise ValueError(f"item published time must be timezone-aware, got {published!r}")
    return published.astimezone(timezone).strftime("%Y-%m-%d %H:%M")


def _meta(source: str, published: datetime | None, timezone: tzinfo) -> str:
    parts = (_cut(_one_line(source), NAME_MAX), _local_time(published, timezone))
    return " · ".join(part for part in parts if part)


def _matched_terms(hits: Sequence[Hit], labels: dict[str, str]) -> str:
    """The matched words as written, each once per place: `#سوريا (body), Syria (title)`."""
    seen: dict[tuple[str, str], None] = {}
    for hit in hits:
        words = _cut(_one_line(hit.text), TERM_MAX)
        if words:
            seen[(words, labels[hit.field])] = None
    listed = [f"{words} ({label})" for words, label in list(seen)[:TERMS_MAX]]
    if len(seen) > TERMS_MAX:
        listed.append(f"+{len(seen) - TERMS_MAX} more")
    return ", ".join(listed)


def _hashtag(name: str) -> str:
    """The watchlist's name as a Telegram hashtag: letters, digits and `_` only."""
    # A Telegram hashtag is letters, decimal digits and "_"; it ends at anything else,
    # combining marks included, so marks (Arabic harakat) are dropped and the rest become "_".
    base = "".join(ch for ch in _one_line(name) if not unicodedata.category(ch).startswith("M"))
    kept = (ch if unicodedata.category(ch)[0] == "L" or ch.isdecimal() else "_" for ch in base)
    tag = re.sub(r"_+", "_", "".join(kept)).strip("_")
    tag = tag[:HASHTAG_MAX].rstrip("_")
    if not any(ch.isalpha() for ch in tag):
        # Telegram does not link a hashtag without a letter in it.
        tag = f"watchlist_{tag}".rstrip("_")
    return "#" + tag


# ------------------------------------------------------------------------------- the summary


def _summary_source(item: Item, hits: Sequence[Hit]) -> tuple[str, list[tuple[int, int]]]:
    """The clean text the summary comes from (summary, else content) and its spans to bold."""
    field = "summary" if item.summary.strip() else "content"
    text, new_offsets = _clean(item.fields()[field])
    spans = []
    for start, end in highlight_spans(hits, field):
        if new_offsets is not None:
            # Dropping characters keeps the order: the merged spans stay sorted, never overlapping.
            start, end = new_offsets[start], new_offsets[end]
        if start < end:
            spans.append((start, end))
    return text, spans


def _sentences(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each sentence, without the whitespace around it."""
    start = 0
    for found in _SENTENCE_END.finditer(text):
        if found.group() == "." and _is_abbreviation_dot(text, found.start()):
            continue
        end = found.start() if found.group() == "\n" else found.end()
        yield from _strip(text, start, end)
        start = found.end()
    yield from _strip(text, start, len(text))


def _is_abbreviation_dot(text: str, dot: int) -> bool:
    """A dot after a single letter (U.S., J. Smith) ends no sentence (spec/matching.md §2)."""
    return (
        dot >= 1
        and text[dot - 1].isalpha()
        and (dot == 1 or text[dot - 2].isspace() or text[dot - 2] == ".")
    )


def _strip(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end:
        yield start, end


def _summary(
    text: str, hits: list[tuple[int, int]], start: int, end: int, cut: bool
) -> list[_Line]:
    """text[start:end] as one line of spans per paragraph, the hits in it in bold.

    A hit that the excerpt cuts is bold as far as it shows: the reader still sees where it
    matched, and the "matched:" line names it whole.
    """
    inside = [(max(s, start), min(e, end)) for s, e in hits if s < end and start < e]
    lines: list[_Line] = []
    for line_start, line_end in _paragraphs(text, start, end):
        spans: list[_Span] = []
        pos = line_start
        for hit_start, hit_end in inside:
            hit_start, hit_end = max(hit_start, line_start), min(hit_end, line_end)
            if hit_start >= hit_end:
                continue
            if pos < hit_start:
                spans.append(_Span(text[pos:hit_start]))
            spans.append(_Span(text[hit_start:hit_end], bold=True))
            pos = hit_end
        if pos < line_end:
            spans.append(_Span(text[pos:line_end]))
        lines.append(_Line(spans))
    if cut and lines:
        lines[-1].spans.append(_Span(ELLIPSIS))
    return lines


def _excerpt(text: str, max_sentences: int, max_chars: int) -> tuple[int, int, bool]:
    """(start, end, cut mid-sentence) of the longest lead that fits both limits."""
    if max_chars < 1:
        return 0, 0, False
    start = end = -1
    count = 0
    for sentence_start, sentence_end in _sentences(text):
        if start < 0:
            start = sentence_start
        if count == max_sentences or sentence_end - start > max_chars:
            break
        end = sentence_end
        count += 1
    if start < 0:
        return 0, 0, False
    if count:
        return start, end, False
    # Even the first sentence is too long: cut it at a word, leaving room for the ellipsis.
    end = _word_boundary(text, start, start + max_chars - 1)
    return start, end, end > start


def _word_boundary(text: str, start: int, limit: int) -> int:
    """The end of the longest piece of text[start:limit] that does not stop inside a word."""
    end = limit
    if start < end < len(text) and not text[end].isspace() and not text[end - 1].isspace():
        space = end - 1
        while space > start and not text[space].isspace():
            space -= 1
        end = space if space > start else _grapheme_boundary(text, start, end)
    while end > start and (text[end - 1] in _SOFT_TRAILING or text[end - 1].isspace()):
        end -= 1
    return end


def _grapheme_boundary(text: str, start: int, end: int) -> int:
    """Move `end` back so that it does not split a letter from its marks or an emoji sequence."""
    while end > start and (
        unicodedata.category(text[end]).startswith("M")
        or text[end] == "\u200d"
        or text[end - 1] == "\u200d"
        or "\U0001f3fb" <= text[end] <= "\U0001f3ff"  # skin tone modifiers
    ):
        end -= 1
    return end


def _paragraphs(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < end:
        newline = text.find("\n", pos, end)
        line_end = end if newline < 0 else newline
        yield from _strip(text, pos, line_end)
        pos = line_end + 1


def _cut(text: str, max_units: int) -> str:
    """`text` if it fits in max_units UTF-16 units, else cut at a word with an ellipsis."""
    if utf16_len(text) <= max_units:
        return text
    # Room for the ellipsis; an astral character takes two units.
    limit = 0
    units = 0
    while units + utf16_len(text[limit]) <= max_units - 1:
        units += utf16_len(text[limit])
        limit += 1
    end = _word_boundary(text, 0, limit)
    return text[:end] + ELLIPSIS if end else ""


# ---------------------------------------------------------------------------------- rendering


def _assemble(
    head: list[_Line], summary: list[_Line], tail: list[_Line], href: str | None
) -> tuple[str, str]:
    """(html, plain) of the whole message; plain also carries the link under the title."""
    html_sections: list[list[str]] = []
    plain_sections: list[list[str]] = []
    for section in (head, summary, tail):
        if not section:
            continue
        rendered = [_render_line(line) for line in section]
        html_sections.append([line_html for line_html, _ in rendered])
        plain_sections.append([line_plain for _, line_plain in rendered])
    if href:
        plain_sections[0].insert(1, href)
    return (
        "\n\n".join("\n".join(lines) for lines in html_sections),
        "\n\n".join("\n".join(lines) for lines in plain_sections),
    )


def _render_line(line: _Line) -> tuple[str, str]:
    """(html, plain) of one paragraph, with its direction controls."""
    spans = line.spans
    text = "".join(span.text for span in spans)
    controls = rtl.bidi_controls(text, line.direction)
    parts: list[str] = []
    pending = 0
    pos = 0
    for span in spans:
        end = pos + len(span.text)
        # Controls at a span's edge go outside its tags.
        while pending < len(controls) and controls[pending][0] <= pos:
            parts.append(controls[pending][1])
            pending += 1
        inner: list[str] = []
        done = pos
        while pending < len(controls) and controls[pending][0] < end:
            offset, control = controls[pending]
            inner += [html.escape(text[done:offset], quote=False), control]
            done = offset
            pending += 1
        inner.append(html.escape(text[done:end], quote=False))
        parts.append(_wrap("".join(inner), span))
        pos = end
    parts.extend(control for _, control in controls[pending:])
    return "".join(parts), rtl.apply_controls(text, controls)


def _wrap(inner: str, span: _Span) -> str:
    if span.href:
        inner = f'<a href="{html.escape(span.href, quote=True)}">{inner}</a>'
    if span.bold:
        inner = f"<b>{inner}</b>"
    return inner


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2
