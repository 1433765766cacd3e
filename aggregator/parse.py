"""Feed bytes and HTTP headers in, typed items with clean plain text out.

feedparser does the format work (RSS 0.9x/1.0/2.0, Atom, RDF, encodings, dates) on the bytes the
fetcher already holds; this module never hands it anything it could fetch. Everything after that
is ours: text through htmltext, links made absolute, dates made aware UTC, and a document that is
not a feed at all refused with a ParseError that says what it looks like instead.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import html
import io
import re
import time
import xml.sax
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import feedparser

from aggregator.errors import AggregatorError
from aggregator.htmltext import fold_tokens, html_to_text, plain_to_text
from aggregator.models import Item

# Declared XML entities may expand to at most this many characters in total. feedparser drops
# nested and external entities itself, but keeps flat ones and expands them in its fallback
# parser, so a 1 MB body of "&a;" references to a long entity would grow quadratically.
MAX_ENTITY_EXPANSION = 1_000_000
# feedparser does work that grows with the square of two counts: the tags of one item (it
# dedupes each new category against a list of the earlier ones) and the attributes of one
# element (xml.sax looks each one up by a linear scan). 20,000 categories in one item take it
# 5 s, 40,000 attributes on one element 13 s, and a 10 MB body could hold hours of either.
# Summed over items (or elements), those squares may be at most this much, about half a second.
MAX_QUADRATIC_WORK = 50_000_000

_SY_PERIOD_S = {
    "hourly": 3600,
    "daily": 86_400,
    "weekly": 7 * 86_400,
    "monthly": 30 * 86_400,
    "yearly": 365 * 86_400,
}
_LINK_SCHEMES = frozenset({"http", "https"})
_ENTITY_DECL = re.compile(rb"<!ENTITY\s+(%\s*)?([^\s%;&<>\"']+)\s+(\"([^\"]*)\"|'([^']*)')")
_FIRST_ELEMENT = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_PROLOG_JUNK = re.compile(rb"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(\[.*?\])?\s*>", re.DOTALL)
# Where an item (or entry) starts; what feedparser turns into a tag; where a tag list is split
# at commas (itunes:keywords, media:keywords, tags); a start tag long enough to carry hundreds
# of attributes.
_ITEM_START = re.compile(rb"<(?:[\w.-]+:)?(?:item|entry)[\s/>]", re.IGNORECASE)
_TAG_START = re.compile(rb"<(?:[\w.-]+:)?(?:category|subject|keywords|tags)[\s/>]", re.IGNORECASE)
_SPLIT_TAGS = re.compile(rb"<(?:[\w.-]+:)?(?:keywords|tags)[\s/>]", re.IGNORECASE)
_COMMA = re.compile(rb",|&#0*44;|&#x0*2c;", re.IGNORECASE)
_LONG_START_TAG = re.compile(rb"<[A-Za-z_][^<>]{1000,}")
_START_TAG = re.compile(rb"<[A-Za-z_][^<>]*")
_REFERENCE = re.compile(rb"&([^\s%;&<>\"']+);")
_ATTRIBUTE = re.compile(rb"""([^\s=<>/"']+)\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]*)""")
_HTML_SIGNS = re.compile(rb"<!DOCTYPE\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)
# The date and time fields of an ISO 8601 / W3DTF date, and a numeric zone offset at the end.
# feedparser rolls out-of-range fields over ("2024-13-45" becomes 2025-01-01), so a date whose
# fields are out of range is refused here instead of becoming another, plausible date.
_ISO_FIELDS = re.compile(
    r"\s*(\d{4})-(\d{1,2})(?:-(\d{1,2}))?(?:[T\s]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)
_ZONE_OFFSET = re.compile(r"[+-](\d{2}):?(\d{2})\s*$")
_XML_ENCODING = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']"
)
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\s;\"']*)", re.IGNORECASE)
_UTF8_NAMES = frozenset({"utf-8", "utf8", "utf_8"})
# A body that is not valid UTF-8 is taken for damaged UTF-8 (rather than another encoding) when
# it holds at least this many well-formed non-ASCII characters per invalid byte sequence.
_UTF8_MIN_GOOD_PER_BAD = 10
# A body that is mostly not UTF-8 is read as windows-1256 when its text then has at least this
# many Arabic letters, and they are at least this share of its letters (see _as_windows_1256).
_CP1256_MIN_ARABIC = 20
_CP1256_MIN_SHARE = 0.5
_MARKUP = re.compile(r"<[^>]*>")
_ARABIC_LETTER = re.compile(r"[\u0621-\u064a\u0671-\u06d3]")
_ASCII_LETTER = re.compile(r"[A-Za-z]")


class ParseError(AggregatorError):
    """Raised when a body is not a feed at all: empty, an HTML page, other XML, or hostile XML."""


@dataclass(frozen=True)
class ParsedFeed:
    """What one feed document holds: its title and link, its items, and polling hints."""

    title: str
    link: str | None
    items: tuple[Item, ...]
    bozo: str | None  # why feedparser found the document malformed, when it did
    ttl_s: int | None  # RSS <ttl>, converted from minutes
    update_period_s: int | None  # sy:updatePeriod divided by sy:updateFrequency


class FeedParser(Protocol):
    """How the pipeline has a body parsed: ``parse_feed``'s signature, awaited."""

    async def __call__(
        self,
        body: bytes,
        *,
        feed_name: str,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> ParsedFeed: ...


async def parse_in_thread(
    body: bytes,
    *,
    feed_name: str,
    headers: Mapping[str, str] | None = None,
    base_url: str | None = None,
) -> ParsedFeed:
    """``parse_feed`` in a worker thread, so the event loop keeps fetching and delivering.

    With ``[polling] parse_workers = 0`` (and on a 1-core machine); otherwise the daemon parses
    in worker processes (parse_pool.py), which bench/bench_polling.py measured faster and far
    kinder to the event loop: feedparser holds the GIL, so a thread still stalls it.
    """
    return await asyncio.to_thread(
        parse_feed, body, feed_name=feed_name, headers=headers, base_url=base_url
    )


def parse_feed(
    body: bytes,
    *,
    feed_name: str,
    headers: Mapping[str, str] | None = None,
    base_url: str | None = None,
) -> ParsedFeed:
    """Parse one fetched feed body into items; raise ParseError when it is not a feed."""
    if not body.strip():
        raise ParseError("empty body")
    _check_entity_expansion(body)
    _check_quadratic_work(body)
    response_headers = {name.lower(): value for name, value in (headers or {}).items()}
    body, repaired = _repair_utf8(body, response_headers)
    body, refs = _repair_char_refs(body)
    repaired = "; ".join(filter(None, (repaired, refs))) or None
    try:
        # A stream, never bytes or a str: given those, feedparser first tries them as a path
        # to open, so a body that happens to name a local file would be read from disk.
        parsed = feedparser.parse(
            io.BytesIO(body),
            response_headers=response_headers,
            sanitize_html=False,  # we keep text only (htmltext), never feed HTML
            resolve_relative_uris=False,  # links inside HTML are dropped anyway
        )
    except Exception as exc:  # feedparser's internals raise anything; map at the edge
        raise ParseError(f"feedparser failed: {type(exc).__name__}: {exc}") from exc
    if not parsed.get("version") and not parsed.get("entries"):
        raise ParseError(_not_a_feed(body, parsed))

    try:
        feed = _feed(parsed, feed_name, base_url)
    except Exception as exc:  # a shape of feedparser output we did not foresee: still a bad feed
        raise ParseError(f"unreadable feed structure: {type(exc).__name__}: {exc}") from exc
    if repaired:
        feed = dataclasses.replace(feed, bozo="; ".join(filter(None, (repaired, feed.bozo))))
    return feed


def _feed(parsed: Mapping[str, Any], feed_name: str, base_url: str | None) -> ParsedFeed:
    channel = parsed.get("feed", {})
    feed_link = _absolute_link(channel.get("link"), base_url)
    # Atom resolves relative references against the document's own URL (RFC 4287 via xml:base,
    # which feedparser has applied already). RSS has no such rule and sites mean their own
    # pages, so a relative RSS item link is read against the channel's link, as readers do.
    is_atom = str(parsed.get("version", "")).startswith("atom")
    items_base = base_url if is_atom else (feed_link or base_url)
    # feedparser's fallback parser, used once the document is not well-formed (one bad item
    # is enough), leaves character references in ids: "?a=1&amp;b=2" where the strict one
    # gives "?a=1&b=2". Every old item's guid key would change, as if the feed reused them.
    loose = isinstance(parsed.get("bozo_exception"), xml.sax.SAXException)
    items = tuple(
        _item(entry, feed_name, items_base, loose=loose) for entry in parsed.get("entries", [])
    )
    return ParsedFeed(
        title=" ".join(_text(channel.get("title_detail"), channel.get("title")).split("\n")),
        link=feed_link,
        items=items,
        bozo=_bozo_text(parsed),
        ttl_s=_ttl_s(channel.get("ttl")),
        update_period_s=_update_period_s(
            channel.get("sy_updateperiod"), channel.get("sy_updatefrequency")
        ),
    )


def _item(entry: dict[str, Any], feed_name: str, base: str | None, *, loose: bool) -> Item:
    summary = _text(entry.get("summary_detail"), entry.get("summary"))
    contents = entry.get("content") or []
    content = _text(contents[0], contents[0].get("value")) if contents else ""
    if _adds_nothing(content, summary):
        content = ""
    guid = entry.get("id")
    if loose and isinstance(guid, str) and "&" in guid:
        guid = html.unescape(guid)
    return Item(
        feed=feed_name,
        title=" ".join(_text(entry.get("title_detail"), entry.get("title")).split("\n")),
        link=_absolute_link(entry.get("link"), base),
        guid=(guid.strip() or None) if isinstance(guid, str) else None,
        summary=summary,
        content=content,
        categories=_categories(entry.get("tags") or []),
        published=_published(entry),
    )


def _text(detail: Mapping[str, Any] | None, value: Any) -> str:
    """Clean text of one feed field, as HTML or as plain text depending on its declared type."""
    if not isinstance(value, str):
        return ""
    kind = detail.get("type", "") if detail else "text/html"
    if kind == "text/plain":
        return plain_to_text(value)
    return html_to_text(value)


def _adds_nothing(content: str, summary: str) -> bool:
    """True when content repeats the summary or is only a shorter start of it."""
    if not content:
        return True
    content_words, summary_words = fold_tokens(content), fold_tokens(summary)
    if not summary_words:
        return False
    return summary_words[: len(content_words)] == content_words


def _absolute_link(link: Any, base: str | None) -> str | None:
    """The link made absolute against base; None unless it ends up an http(s) URL."""
    if not isinstance(link, str) or not link.strip():
        return None
    try:
        absolute = urljoin(base, link.strip()) if base else link.strip()
        parts = urlsplit(absolute)
    except ValueError:  # e.g. an invalid IPv6 literal in the host
        return None
    if parts.scheme.lower() not in _LINK_SCHEMES or not parts.netloc:
        return None
    return absolute


def _categories(tags: list[Mapping[str, Any]]) -> str:
    """One category per line: each tag's term, and its label when the label says more."""
    lines: dict[str, None] = {}  # a dict, not a list: thousands of tags must not cost their square
    for tag in tags:
        for value in (tag.get("term"), tag.get("label")):
            if isinstance(value, str):
                line = " ".join(value.split())
                if line:
                    lines[line] = None
    return "\n".join(lines)


def _published(entry: dict[str, Any]) -> datetime | None:
    """Aware UTC publication time (or update time when there is none); None if unusable."""
    for key in ("published", "updated"):
        # dict.get: FeedParserDict.get warns when it maps updated_parsed to published_parsed.
        value = dict.get(entry, key + "_parsed")
        if isinstance(value, time.struct_time) and _fields_in_range(dict.get(entry, key)):
            try:
                # feedparser already converted to UTC; a leap second is clamped to :59.
                return datetime(*value[:5], min(value[5], 59), tzinfo=UTC)
            except (ValueError, OverflowError):
                continue
    return None


def _fields_in_range(raw: Any) -> bool:
    """False when a date's written fields are out of range (month 13, Feb 30, zone +25:00)."""
    if not isinstance(raw, str):
        return True
    iso = _ISO_FIELDS.match(raw)
    if iso:
        year, month, day, hour, minute, second = (int(g) if g else 0 for g in iso.groups())
        try:
            datetime(year, month, day or 1, tzinfo=UTC)
        except ValueError:
            return False
        # 24:00 is midnight at the end of the day; a leap second is :60.
        if hour > 24 or minute > 59 or second > 60 or (hour == 24 and minute + second > 0):
            return False
    zone = _ZONE_OFFSET.search(raw)
    return not zone or (int(zone.group(1)) <= 23 and int(zone.group(2)) <= 59)


# Numeric character references that may be no character: UTF-16 surrogates (D800-DFFF, which
# some CMSs write for an emoji, as a pair) and numbers beyond U+10FFFF. feedparser 6 raises on
# them and loses the whole feed (kurtmckee/feedparser#591), so they are mended first. The
# pattern matches only long references: Arabic written as references (&#1587;) never pays.
_SUSPECT = rb"&#(?:[xX]0*(?:[dD][89a-fA-F][0-9a-fA-F]{2}|[0-9a-fA-F]{6,})|0*[0-9]{5,});"
# One suspect reference, with the next when it follows at once (the low half of a pair).
_SUSPECT_REFS = re.compile(rb"(" + _SUSPECT + rb")(" + _SUSPECT + rb")?")


def _ref_value(ref: bytes) -> int:
    digits = ref[2:-1]
    return int(digits[1:], 16) if digits[:1] in b"xX" else int(digits)


def _is_character(value: int) -> bool:
    return value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF


def _repair_char_refs(body: bytes) -> tuple[bytes, str | None]:
    """Mend character references that are no character: a surrogate pair becomes the one
    character it stands for, anything else U+FFFD; say how many, when there were any."""
    if b"&#" not in body:
        return body, None
    mended = 0

    def mend(match: re.Match[bytes]) -> bytes:
        nonlocal mended
        first, second = match[1], match[2]
        high = _ref_value(first)
        if second is not None and 0xD800 <= high <= 0xDBFF:
            low = _ref_value(second)
            if 0xDC00 <= low <= 0xDFFF:
                mended += 1
                return b"&#x%X;" % (0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        out = b""
        for ref in filter(None, (first, second)):
            if _is_character(_ref_value(ref)):
                out += ref
            else:
                mended += 1
                out += b"&#xFFFD;"
        return out

    fixed = _SUSPECT_REFS.sub(mend, body)
    if not mended:
        return body, None
    return fixed, f"{mended} character reference(s) that are no character mended"


def _repair_utf8(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, str | None]:
    """Replace the few invalid byte sequences of a UTF-8 body; say how many, when there were any.

    feedparser decodes a UTF-8 document that has even one invalid byte as windows-1252 or
    iso-8859-2, which turns all of its Arabic into mojibake that no watchlist matches. A body
    that is mostly well-formed UTF-8 loses only its bad bytes (to U+FFFD) instead; one declared
    as another encoding, or that is mostly not UTF-8, is left to feedparser's own fallback.
    """
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        return body, None  # UTF-16 or UTF-32
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return body, None
    charset = _CHARSET.search(headers.get("content-type", ""))
    declared_match = _XML_ENCODING.match(body)
    if charset and charset.group(1):
        declared = charset.group(1)
    elif declared_match:
        declared = declared_match.group(1).decode("ascii", "replace")
    else:
        declared = "utf-8"
    if declared.strip().lower() not in _UTF8_NAMES:
        return body, None
    text = body.decode("utf-8", "replace")
    replaced = text.count("\ufffd")
    bad = replaced - body.count("\ufffd".encode())
    good = len(text) - len(text.encode("ascii", "ignore")) - replaced
    if good < _UTF8_MIN_GOOD_PER_BAD * bad:
        return _as_windows_1256(body)
    return text.encode("utf-8"), f"invalid UTF-8: {bad} byte sequence(s) replaced"


def _as_windows_1256(body: bytes) -> tuple[bytes, str | None]:
    """A body said (or taken) to be UTF-8 that mostly is not: as UTF-8 in windows-1256, the
    encoding many Arabic sites still write in, when most letters of its text then read as
    Arabic; else the body as it is. feedparser would read it as windows-1252: Arabic turned to
    Latin mojibake that no watchlist can match, noted only as a bozo line.

    Markup aside, a Latin-script feed in windows-1252 has few non-ASCII letters, and reads as
    Arabic for none of its ASCII ones: it never passes the bar."""
    text = body.decode("cp1256", "replace")
    content = _MARKUP.sub(" ", text)
    arabic = len(_ARABIC_LETTER.findall(content))
    letters = arabic + len(_ASCII_LETTER.findall(content))
    if arabic < _CP1256_MIN_ARABIC or arabic < letters * _CP1256_MIN_SHARE:
        return body, None
    return text.encode("utf-8"), "not UTF-8 as declared: read as windows-1256 (Arabic)"


def _ttl_s(value: Any) -> int | None:
    minutes = _positive_int(value)
    return minutes * 60 if minutes else None


def _update_period_s(period: Any, frequency: Any) -> int | None:
    if not isinstance(period, str) or period.strip().lower() not in _SY_PERIOD_S:
        return None
    per_period = _positive_int(frequency) if frequency is not None else 1
    if not per_period:
        return None
    return max(1, _SY_PERIOD_S[period.strip().lower()] // per_period)


def _positive_int(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _bozo_text(parsed: Mapping[str, Any]) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    return f"{type(exc).__name__}: {exc}" if exc is not None else "malformed feed"


def _check_entity_expansion(body: bytes) -> None:
    """Refuse documents whose declared entities would expand past MAX_ENTITY_EXPANSION."""
    text = body.replace(b"\x00", b"")  # lets the byte scan see UTF-16/32 documents too
    if b"<!ENTITY" not in text:
        return
    total = 0
    for match in _ENTITY_DECL.finditer(text):
        if match.group(1):  # parameter entities are only used inside the DTD
            continue
        value = match.group(4) if match.group(4) is not None else match.group(5)
        total += len(value) * text.count(b"&" + match.group(2) + b";")
    if total > MAX_ENTITY_EXPANSION:
        raise ParseError(
            f"entity expansion too large: declared entities would expand to {total} bytes "
            f"(limit {MAX_ENTITY_EXPANSION})"
        )


def _check_quadratic_work(body: bytes) -> None:
    """Refuse documents on which feedparser would spend minutes (see MAX_QUADRATIC_WORK).

    The counts are upper bounds taken from the bytes: every comma of an item that has a
    keyword list counts as a tag, and an entity whose value holds markup counts as that markup
    at each of its references. Linear in the body: each item and each reference is seen once.
    """
    starts = [m.start() for m in _ITEM_START.finditer(body)]
    tags = []
    for begin, end in zip([0, *starts], [*starts, len(body)], strict=True):
        chunk = body[begin:end]
        count = len(_TAG_START.findall(chunk))
        if _SPLIT_TAGS.search(chunk):
            count += len(_COMMA.findall(chunk))
        tags.append(count)
    attributes = [_attribute_count(m.group()) for m in _LONG_START_TAG.finditer(body)]
    attribute_work = sum(count * count for count in attributes)
    entities = {
        m.group(2): value
        for m in _ENTITY_DECL.finditer(body)
        if not m.group(1) and b"<" in (value := m.group(4) or m.group(5) or b"")
    }
    if entities:
        # What one reference to each entity adds: its tags, and its elements' attribute work.
        added = {
            name: (
                len(_TAG_START.findall(value)),
                sum(_attribute_count(tag.group()) ** 2 for tag in _START_TAG.finditer(value)),
            )
            for name, value in entities.items()
        }
        for reference in _REFERENCE.finditer(body):
            if (more := added.get(reference.group(1))) is not None:
                tags[bisect.bisect_right(starts, reference.start())] += more[0]
                attribute_work += more[1]
    if sum(count * count for count in tags) > MAX_QUADRATIC_WORK:
        raise ParseError(f"too many categories: up to {max(tags)} in one item")
    if attribute_work > MAX_QUADRATIC_WORK:
        most = max(attributes, default=0)
        raise ParseError(
            f"too many attributes: up to {most} on one element"
            if most
            else "too many attributes: entities repeat elements with many attributes"
        )


def _attribute_count(start_tag: bytes) -> int:
    """How many attributes one start tag has, namespace declarations aside."""
    # expat keeps namespace declarations apart; they never reach xml.sax's slow lookup.
    names = _ATTRIBUTE.findall(start_tag)
    return sum(1 for name in names if not name.lower().startswith(b"xmlns"))


def _not_a_feed(body: bytes, parsed: Mapping[str, Any]) -> str:
    """Say what a document that is not a feed looks like instead."""
    text = body.replace(b"\x00", b"").lstrip(b"\xef\xbb\xbf\xff\xfe")
    head = text[:4096]
    if _HTML_SIGNS.search(head):
        return "not a feed: looks like an HTML page"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "not a feed: looks like JSON (JSON Feed is not supported)"
    position = 0
    while match := _PROLOG_JUNK.match(text, position):
        if match.end() == position:
            break
        position = match.end()
    root = _FIRST_ELEMENT.match(text, position)
    if root:
        name = root.group(1).decode("ascii", "replace")
        return f"not a feed: XML root <{name}> (expected rss, feed or rdf:RDF)"
    detail = _bozo_text(parsed)
    return "not a feed: no XML root element" + (f" ({detail})" if detail else "")
