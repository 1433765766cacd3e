"""Stable keys for items, so that one article is seen once however many feeds carry it.

An item's primary key is its guid scoped to its site, else its normalized link, else a hash of
its text. The normalized link is also a secondary key, so the same article listed in two feeds
(two section feeds of one site, or an aggregator and the source) is recognized as one item.

Some feeds' guids identify nothing: left empty on some items, one guid repeated for every item,
or a new guid on each fetch for the same article. ``guid_problem`` spots those, and the pipeline
then keys that feed's items by link (``use_guid=False``) for good.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence, Set
from typing import Protocol
from urllib.parse import urlsplit

from aggregator.models import Item

# Query parameters that only say how a reader arrived: campaign tags, click ids, share ids.
_TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "mc_cid", "mc_eid",
        "yclid", "_ga", "_gl", "igshid", "ref_src", "ref_url", "twclid", "ttclid", "li_fat_id",
        "_hsenc", "_hsmi", "__hstc", "__hssc", "__hsfp", "hsctatracking", "mkt_tok", "oly_anon_id",
        "oly_enc_id", "vero_id", "wickedid", "rb_clickid", "s_cid", "cmpid", "icid", "ocid",
        "xtor", "at_medium", "at_campaign", "at_custom1", "at_custom2", "at_custom3",
        "at_custom4", "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname", "ns_fee",
        "sr_share", "spm", "__twitter_impression",
    }
)  # fmt: skip
_TRACKING_PREFIXES = ("utm_", "pk_", "mtm_")  # Google Analytics, Piwik and Matomo campaigns
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters left as they are in a path or query: reserved delimiters and unreserved.
_KEEP = _UNRESERVED | frozenset(":/?#[]@!$&'()*+,;=")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_HASH_LENGTH = 32


def normalize_link(url: str) -> str:
    """The comparable form of a link: "//host/path?query" without scheme, tracking or fragment."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # bad port or IPv6 literal: still a stable key, just not normalized
        return url
    scheme = parts.scheme.lower()
    host = _normalize_host(parts.hostname or "")
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    path = _remove_dot_segments(_normalize_escapes(parts.path)) or "/"
    params = [
        _normalize_escapes(param)
        for param in parts.query.split("&")
        if param and not _is_tracking(param)
    ]
    normalized = f"//{netloc}{path}"
    if params:
        normalized += "?" + "&".join(params)
    if parts.fragment.startswith("!"):
        # "#!/story/123" routes single-page sites to distinct articles: not a mere anchor.
        normalized += "#" + _normalize_escapes(parts.fragment)
    return normalized


def item_keys(
    item: Item, *, feed_url: str, use_guid: bool = True, shared: Set[str] = frozenset()
) -> tuple[str, ...]:
    """Keys of an item, primary first: guid (scoped to its site), link, or a hash of its text.

    ``use_guid=False`` leaves the guid out, for a feed whose guids proved unreliable.
    ``shared``: pages that several items of the fetch link to (``shared_pages``); an item keyed
    by its guid gets no link key for one of them.
    """
    keys: list[str] = []
    if item.guid and use_guid:
        keys.append(_guid_key(item, item.guid, feed_url))
    if item.link and not (keys and _page(item.link) in shared):
        keys.append(_bounded(f"link:{normalize_link(item.link)}"))
    if not keys:
        text = _fold(item.title) + "\n" + _fold(item.content or item.summary)
        keys.append("hash:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LENGTH])
    return tuple(keys)


class Identified(Protocol):
    """What guid_problem reads of an item: an Item, or what the pipeline kept of one
    (segments.KnownItem)."""

    @property
    def guid(self) -> str | None: ...

    @property
    def link(self) -> str | None: ...


def guid_problem(
    items: Sequence[Identified],
    *,
    feed_url: str,
    seen_here: Callable[[str], bool],
    shared: Set[str] | None = None,
) -> str | None:
    """Why this fetch shows that the feed's guids cannot identify its items; None if it does not.

    ``seen_here(key)`` tells whether the key was seen on an item of this same feed. Unreliable:
    some items have a guid and others none (empty); one guid on several items; or, on at least
    two items (or the only one), a new guid beside a link this feed already listed. The reverse,
    a known guid with a new link, is what guids are for (an article's address changed), so it
    counts for nothing.
    """
    guids = [item.guid for item in items if item.guid]
    if not guids:
        return None  # no guids at all: the items are keyed by link already
    if len(guids) < len(items):
        return f"{len(items) - len(guids)} of {len(items)} items have no guid or an empty one"
    uses = Counter(guids)
    if max(uses.values()) > 1:
        # An item listed twice (the same guid and link) is one item, not a reused guid.
        uses = Counter(guid for guid, _ in {(i.guid, i.link) for i in items if i.guid})
    guid, count = uses.most_common(1)[0]
    if count > 1:
        return f"{count} of {len(items)} items have the same guid {guid[:80]!r}"
    if shared is None:
        shared = shared_pages(items)
    changed = 0
    for item in items:
        if not (item.guid and item.link) or _page(item.link) in shared:
            continue  # a new guid beside a shared page is a new post, not a changed guid
        if seen_here(_bounded(f"link:{normalize_link(item.link)}")):
            changed += not seen_here(_guid_key(item, item.guid, feed_url))
    if changed >= min(2, len(items)):
        return f"{changed} items that the feed listed before came back with a new guid"
    return None


def _page(link: str) -> str:
    """A link without its fragment: what a live blog's posts (#post-1, #post-2) share."""
    return link.strip().partition("#")[0]


def shared_pages(items: Sequence[Identified]) -> frozenset[str]:
    """Pages (``_page``) that several items link to, each with a guid of its own: a live
    blog's posts or a generic press page. Such a link identifies none of them."""
    guids: dict[str, set[str]] = {}
    for item in items:
        if item.guid and item.link:
            guids.setdefault(_page(item.link), set()).add(item.guid)
    return frozenset(page for page, found in guids.items() if len(found) > 1)


def _guid_key(item: Identified, guid: str, feed_url: str) -> str:
    site = _site(item.link) or _site(feed_url)
    if guid.lower().startswith(("http://", "https://")):
        guid = normalize_link(guid)  # permalink guids carry tracking params too
    return _bounded(f"guid:{site}:{guid}")


# Keys are kept in the store for weeks; a hostile feed's 1 MB guid or link is kept as its hash.
_MAX_KEY_LENGTH = 512


def _bounded(key: str) -> str:
    if len(key) <= _MAX_KEY_LENGTH:
        return key
    kind = key.split(":", 1)[0]
    return f"{kind}:sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def _site(url: str | None) -> str:
    """Host of url, lower-case, without "www." and port; "" when there is none."""
    if not url:
        return ""
    try:
        host = _normalize_host(urlsplit(url.strip()).hostname or "")
    except ValueError:
        return ""
    return host.removeprefix("www.")


def _normalize_host(host: str) -> str:
    host = host.lower().rstrip(".")
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _is_tracking(param: str) -> bool:
    name = param.split("=", 1)[0].lower()
    return name in _TRACKING_PARAMS or name.startswith(_TRACKING_PREFIXES)


def _normalize_escapes(text: str) -> str:
    """Unreserved characters decoded, other escapes in upper-case hex, raw non-ASCII escaped."""
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        escape = _PERCENT.match(text, index) if char == "%" else None
        if escape:
            decoded = chr(int(escape.group(1), 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + escape.group(1).upper())
            index += 3
            continue
        if char in _KEEP:
            out.append(char)
        else:
            # Raw Arabic (or any non-ASCII) and stray "%" get the escapes a browser would send.
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8", "replace")))
        index += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: "/a/./b/../c" is "/a/c"."""
    if "." not in path:
        return path
    output: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if len(output) > 1:
                output.pop()
        elif segment != ".":
            output.append(segment)
    if path.endswith(("/.", "/..")):
        output.append("")
    return "/".join(output)


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())
