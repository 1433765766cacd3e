"""A feed body cut into its items' bytes, so that items unchanged since the last poll are not
parsed again.

A feed that changed has usually added one to five items to a list of 20 to 50, and feedparser
spends about 0.35 ms on each item it reads (17.5 ms for the 50 items of bench/bench_polling.py).
So the pipeline cuts the body into its items (``split``). An item whose bytes are those of an
item of the last body it processed, in the same context (what precedes and follows the items,
less the dates that change on every update; the same URLs and the response headers that
feedparser reads), is not parsed again: the pipeline reuses what it
kept of it (``KnownItem``: its guid, link and keys) and parses a document made of the header,
the new items and the footer.

Any doubt means a full parse: a body that does not decode in its declared encoding, declares
entities, nests items, has anything but spaces and comments between them, or whose CDATA
sections and comments do not close; a body over MAX_SPLIT_BYTES; and the pipeline parses the
whole body after all when the smaller document is malformed or yields a different number of
items than it has.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from aggregator.identify import item_keys
from aggregator.models import Item
from aggregator.parse import FeedParser, ParsedFeed, ParseError

# The opening of a CDATA section or a comment, which are skipped whole (so that an item written
# inside one, an HTML description quoting a feed, is never taken for one), or an item's start or
# end tag (RSS and RDF <item>, Atom <entry>, with or without a prefix). Their ends are found
# with bytes.find: a lazy ".*?" in the pattern cost 3x more, one step per byte of CDATA.
_MARKUP: Final = re.compile(
    rb"<(?:(!\[CDATA\[)|(!--)|(/?)((?:[A-Za-z_][\w.-]*:)?(?:item|entry))(?=[\s/>])[^<>]*>)"
)  # [^<>]: a tag that never closes stops at the next "<", not at the end of the body, each time
_CLOSERS: Final = {1: b"]]>", 2: b"-->"}
_COMMENT: Final = re.compile(rb"<!--.*?-->", re.DOTALL)
# What in the header changes on every update without changing how an item reads: the feed's
# dates, and the list of item addresses that RSS 1.0 keeps in its channel.
_VOLATILE: Final = re.compile(
    rb"<((?:[A-Za-z_][\w.-]*:)?(?:lastBuildDate|pubDate|updated|date|modified))(?:\s[^>]*)?>"
    rb"[^<]*</\1\s*>"
    rb"|<((?:[A-Za-z_][\w.-]*:)?items)(?:\s[^>]*)?>.*?</\2\s*>",
    re.DOTALL,
)
_DECLARED_ENCODING: Final = re.compile(
    rb"(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?encoding\s*=\s*[\"']([A-Za-z][\w.:-]*)[\"']"
)
_DIGEST_SIZE: Final = 16
# Cutting runs on the event loop, at ~10 us per item: a bigger body (thousands of items) is
# parsed whole, in a worker, rather than hold up deliveries for tens of milliseconds.
MAX_SPLIT_BYTES: Final = 2 * 1024 * 1024
# Response headers that change how feedparser reads a body's items: the base of relative links,
# the charset, the default language.
SOURCE_HEADERS: Final = ("content-location", "content-type", "content-language")


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=_DIGEST_SIZE).digest()


@dataclass(frozen=True, slots=True)
class Split:
    """A feed body as its header, its items' bytes and its footer."""

    header: bytes
    items: tuple[bytes, ...]
    footer: bytes
    context: bytes  # digest of the header without its dates, and of the footer
    digests: tuple[bytes, ...]  # of each item's bytes

    def document(self, indexes: Iterable[int]) -> bytes:
        """The body with only these items (by index, kept in order)."""
        wanted = set(indexes)
        kept = [item for index, item in enumerate(self.items) if index in wanted]
        return b"".join((self.header, b"\n".join(kept), self.footer))


def _decodes(body: bytes) -> bool:
    """Whether every byte of the body reads in its declared encoding (UTF-8 if none), and the
    encoding keeps ASCII as it is. Otherwise feedparser falls back to guessing, and its guess
    can depend on bytes of items that a smaller document leaves out."""
    declared = _DECLARED_ENCODING.match(body)
    encoding = declared.group(1).decode("ascii") if declared else "utf-8"
    try:
        if "<item>".encode(encoding) != b"<item>":
            return False  # UTF-16 and the like: the byte patterns here do not apply
        body.decode(encoding)
    except (LookupError, UnicodeError):
        return False
    return True


def split(body: bytes) -> Split | None:
    """The body cut at its items, or None when it cannot be cut safely (see the module doc)."""
    if len(body) > MAX_SPLIT_BYTES or b"<!ENTITY" in body:
        # Too big to cut on the event loop; or an entity's value could hold an item, or
        # change one's text.
        return None
    if not _decodes(body):
        return None
    spans: list[tuple[int, int]] = []
    open_at, open_name = -1, b""
    search, find = _MARKUP.search, body.find
    position = 0
    while (match := search(body, position)) is not None:
        skipped = match.lastindex
        if skipped in _CLOSERS:  # a CDATA section or a comment: on past its end
            end = find(_CLOSERS[skipped], match.end())
            if end < 0:
                return None  # unclosed: what follows is its text, and items may hide in it
            position = end + 3
            continue
        position = match.end()
        name = match.group(4)
        if match.group(3):
            if open_at < 0 or name != open_name:
                return None
            spans.append((open_at, position))
            open_at = -1
        elif open_at >= 0 or match.group().endswith(b"/>"):
            return None  # nested, or an empty item
        else:
            open_at, open_name = match.start(), name
    if open_at >= 0 or not spans:
        return None
    for (_, end), (start, _) in pairwise(spans):
        if _COMMENT.sub(b"", body[end:start]).strip():
            return None  # feed elements between items: they would be lost from the document
    header, footer = body[: spans[0][0]], body[spans[-1][1] :]
    if not footer.strip():
        return None  # the item is the document (an Atom entry document), or is not closed
    items = tuple(body[start:end] for start, end in spans)
    context = _digest(_VOLATILE.sub(b"", header) + b"\x00" + footer)
    return Split(header, items, footer, context, tuple(map(_digest, items)))


@dataclass(frozen=True, slots=True)
class KnownItem:
    """What the pipeline needs of an item it has processed: enough to identify it again."""

    guid: str | None
    link: str | None
    keys: tuple[str, ...]  # item_keys(use_guid=True)
    link_keys: tuple[str, ...]  # item_keys(use_guid=False)

    def keys_for(self, use_guid: bool) -> tuple[str, ...]:
        return self.keys if use_guid else self.link_keys


@dataclass(frozen=True, slots=True)
class FeedItems:
    """The items of the last body of a feed that the pipeline processed and committed."""

    source: tuple[str, ...]  # see read_body
    context: bytes
    items: Mapping[bytes, KnownItem]  # by the digest of their bytes

    def unchanged(self, body: Split, source: tuple[str, ...]) -> list[int] | None:
        """Indexes of the body's items known here; None if the body was read elsewhere."""
        if source != self.source or body.context != self.context:
            return None
        known = self.items
        return [index for index, digest in enumerate(body.digests) if digest in known]


@dataclass(frozen=True, slots=True)
class Read:
    """A body as the pipeline read it: the items parsed, and those known from the last body."""

    parsed: ParsedFeed  # only the new items when ``unchanged`` has any
    source: tuple[str, ...]
    split: Split | None = None
    # Each item the body shares with the last one, by digest (an item listed twice is twice).
    unchanged: tuple[tuple[bytes, KnownItem], ...] = ()
    parsed_digests: tuple[bytes, ...] | None = None  # of parsed.items, when they are known

    @property
    def item_count(self) -> int:
        """Items in the body, parsed or not."""
        return len(self.parsed.items) + len(self.unchanged)

    def remembered(
        self, keyed: Sequence[tuple[Item, tuple[str, ...]]], use_guid: bool, feed_url: str
    ) -> FeedItems | None:
        """What to keep of this body once its items are committed: ``keyed`` is the parsed items
        with the keys the pipeline gave them. None when its items cannot be told apart."""
        if self.split is None or self.parsed_digests is None:
            return None
        items = dict(self.unchanged)
        for digest, (item, keys) in zip(self.parsed_digests, keyed, strict=True):
            # A feed keyed by link stays so: its guid keys are never asked for again.
            link_keys = item_keys(item, feed_url=feed_url, use_guid=False) if use_guid else keys
            items[digest] = KnownItem(item.guid, item.link, keys, link_keys)
        return FeedItems(self.source, self.split.context, items)


async def read_body(
    parse: FeedParser,
    body: bytes,
    *,
    feed_name: str,
    base_url: str,
    source: tuple[str, ...],
    headers: Mapping[str, str],
    known: FeedItems | None,
    use_guid: bool,
    is_seen: Callable[[str], bool],
) -> Read:
    """Parse the body's new items only, when the last body processed is known, else all of it.

    ``source`` is what, besides the body, decides how its items read and are keyed: the
    feed's configured URL, the URL the body came from, and the response headers that feedparser
    reads (``SOURCE_HEADERS``). Items are reused only from a body of the same source. An
    unchanged item is skipped only if one of its keys is still seen (``is_seen``): one that is
    not would be new to a full parse, so the body is parsed whole.
    """
    cut = split(body)
    if cut is not None and known is not None:
        kept = known.unchanged(cut, source)
        if kept is not None:
            unchanged = tuple((cut.digests[i], known.items[cut.digests[i]]) for i in kept)
            if all(any(map(is_seen, k.keys_for(use_guid))) for _, k in unchanged):
                skipped = set(kept)
                new = [i for i in range(len(cut.items)) if i not in skipped]
                try:
                    parsed = await parse(
                        cut.document(new), feed_name=feed_name, headers=headers, base_url=base_url
                    )
                except ParseError:
                    parsed = None
                # Anything unexpected in the smaller document: the whole one decides.
                if parsed is not None and not parsed.bozo and len(parsed.items) == len(new):
                    digests = tuple(cut.digests[i] for i in new)
                    return Read(parsed, source, cut, unchanged, digests)
    parsed = await parse(body, feed_name=feed_name, headers=headers, base_url=base_url)
    if cut is not None and len(parsed.items) == len(cut.items):
        return Read(parsed, source, cut, (), cut.digests)
    return Read(parsed, source)
