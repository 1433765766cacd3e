"""Feed bytes and HTTP headers in, typed items with clean plain text out.

feedparser does the format work (RSS 0.9x/1.0/2.0, Atom, RDF, encodings, dates) on the bytes the
fetcher already holds; this module never hands it anything it could fetch. Everything after that
is ours: text through htmltext, links made absolute, dates made aware UTC, and a document that is
not a feed at all refused with a ParseError that says what it looks like instead.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from aggregator.errors import AggregatorError
from aggregator.htmltext import fold_tokens, html_to_text, plain_to_text
from aggregator.models import Item

# Declared XML entities may expand to at most this many characters in total. feedparser drops
# nested and external entities itself, but keeps flat ones and expands them in its fallback
# parser, so a 1 MB body of "&a;" references to a long entity would grow quadratically.
MAX_ENTITY_EXPANSION = 1_000_000

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
_HTML_SIGNS = re.compile(rb"<!DOCTYPE\s+html|<html[\s>]|<head[\s>]|<body[\s>]", re.IGNORECASE)


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
    response_headers = {name.lower(): value for name, value in (headers or {}).items()}
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
        return _feed(parsed, feed_name, base_url)
    except Exception as exc:  # a shape of feedparser output we did not foresee: still a bad feed
        raise ParseError(f"unreadable feed structure: {type(exc).__name__}: {exc}") from exc


def _feed(parsed: Mapping[str, Any], feed_name: str, base_url: str | None) -> ParsedFeed:
    channel = parsed.get("feed", {})
    feed_link = _absolute_link(channel.get("link"), base_url)
    # Atom resolves relative references against the document's own URL (RFC 4287 via xml:base,
    # which feedparser has applied already). RSS has no such rule and sites mean their own
    # pages, so a relative RSS item link is read against the channel's link, as readers do.
    is_atom = str(parsed.get("version", "")).startswith("atom")
    items_base = base_url if is_atom else (feed_link or base_url)
    items = tuple(_item(entry, feed_name, items_base) for entry in parsed.get("entries", []))
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


def _item(entry: dict[str, Any], feed_name: str, base: str | None) -> Item:
    summary = _text(entry.get("summary_detail"), entry.get("summary"))
    contents = entry.get("content") or []
    content = _text(contents[0], contents[0].get("value")) if contents else ""
    if _adds_nothing(content, summary):
        content = ""
    guid = entry.get("id")
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
    lines: list[str] = []
    for tag in tags:
        for value in (tag.get("term"), tag.get("label")):
            if isinstance(value, str):
                line = " ".join(value.split())
                if line and line not in lines:
                    lines.append(line)
    return "\n".join(lines)


def _published(entry: dict[str, Any]) -> datetime | None:
    """Aware UTC publication time (or update time when there is none); None if unusable."""
    for key in ("published_parsed", "updated_parsed"):
        # dict.get: FeedParserDict.get warns when it maps updated_parsed to published_parsed.
        value = dict.get(entry, key)
        if isinstance(value, time.struct_time):
            try:
                # feedparser already converted to UTC; a leap second is clamped to :59.
                return datetime(*value[:5], min(value[5], 59), tzinfo=UTC)
            except (ValueError, OverflowError):
                continue
    return None


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
