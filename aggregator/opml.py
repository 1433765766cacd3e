"""OPML: import a feed reader's subscription list into the config, and export the config's feeds.

Import keeps the config file as its author wrote it: the new ``[[feeds]]`` tables go right after
the last existing one (before the comments that introduce the next section), and the result is
checked to be exactly the old config plus the new feeds, then validated, before the file is
replaced (temp file + rename). Names and tags are slugs (``BBC News - World`` → ``bbc-news-world``,
like the names in config.example.toml); each folder an outline sits in becomes a tag.

Export nests feeds in folders by their tags (``tags = ["news", "arabic"]`` → news ▸ arabic), so
importing an export gives back the same feeds with the same names and tags.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree
from xml.parsers import expat

import tomlkit
from pydantic import ValidationError

from .config import FeedSettings, validate_config
from .errors import AggregatorError, ConfigError

MAX_OPML_BYTES = 20 * 1024 * 1024
_NAME_LIMIT = 40
_FEEDS_HEADER = re.compile(r"^\s*\[\[\s*feeds\s*\]\]\s*(#.*)?$")
_ANY_HEADER = re.compile(r"^\s*\[")


class OpmlError(AggregatorError):
    """Raised when a file is not usable OPML; the message names the file and the problem."""


@dataclass(frozen=True)
class OpmlFeed:
    """One subscription of an OPML file: an outline with an ``xmlUrl``."""

    title: str
    url: str
    folders: tuple[str, ...] = ()  # enclosing outlines, outermost first
    categories: tuple[str, ...] = ()  # from its ``category`` attribute


@dataclass
class ImportPlan:
    """What an import adds (config tables) and what it leaves out, and why."""

    added: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[OpmlFeed, str]] = field(default_factory=list)


def slug(text: str) -> str:
    """A name or tag from free text: lower case, words joined by '-', Arabic letters kept."""
    text = unicodedata.normalize("NFKC", text).casefold()
    # Harakat and tatweel would otherwise split an Arabic word in two.
    text = "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Cf") and c != "\u0640")
    words = re.split(r"[\W_]+", text)
    joined = "-".join(w for w in words if w)
    if len(joined) > _NAME_LIMIT:
        cut = joined[:_NAME_LIMIT]
        joined = cut.rsplit("-", 1)[0] if "-" in cut else cut
    return joined


def parse_opml(data: bytes, *, source: str = "OPML") -> list[OpmlFeed]:
    """The feeds listed in an OPML document; raise OpmlError saying what is wrong."""
    if not data.strip():
        raise OpmlError(f"{source} is empty")
    feeds: list[OpmlFeed] = []
    path: list[str] = []  # element names from the root
    folders: list[str | None] = []  # per open outline: its folder title, None for a feed
    seen_body = False

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal seen_body
        if not path and name != "opml":
            raise OpmlError(f"{source} is not OPML: its root element is <{name}>, not <opml>")
        path.append(name)
        if path[:2] == ["opml", "body"] and len(path) == 2:
            seen_body = True
        if name != "outline" or path[:2] != ["opml", "body"]:
            return
        lowered = {k.lower(): v for k, v in attrs.items()}
        label = " ".join((lowered.get("text") or lowered.get("title") or "").split())
        url = lowered.get("xmlurl", "").strip()
        if url:
            feeds.append(
                OpmlFeed(
                    title=label,
                    url=url,
                    folders=tuple(f for f in folders if f),
                    categories=_categories(lowered.get("category", "")),
                )
            )
            folders.append(None)
        else:
            folders.append(label or None)

    def end(name: str) -> None:
        path.pop()
        if name == "outline" and path[:2] == ["opml", "body"]:
            folders.pop()

    def refuse_entities(*_: object) -> None:
        # Entity declarations are how XML bombs and external-file reads work; OPML needs none.
        raise OpmlError(f"{source} declares XML entities; refusing it (OPML never needs them)")

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = refuse_entities
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise OpmlError(
            f"{source} is not well-formed XML: line {exc.lineno}, column {exc.offset + 1}: "
            f"{expat.ErrorString(exc.code)}"
        ) from None
    if not seen_body:
        raise OpmlError(f"{source} is not OPML: it has no <body> inside <opml>")
    if not feeds:
        raise OpmlError(f"{source} lists no feeds (no <outline> in its <body> has an xmlUrl)")
    return feeds


def _categories(attribute: str) -> tuple[str, ...]:
    """OPML 2.0 ``category``: comma-separated, slash-delimited paths ("/news/world,tech")."""
    return tuple(part for entry in attribute.split(",") for part in entry.split("/") if part)


def url_key(url: str) -> str:
    """The URL as compared for duplicates: scheme, case of the host, default port, final '/'."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    host = (parts.hostname or "").lower()
    if port in (80, 443):
        port = None
    return f"{host}:{port or ''}{parts.path.rstrip('/')}?{parts.query}"


def plan_import(opml: Sequence[OpmlFeed], existing: Sequence[FeedSettings]) -> ImportPlan:
    """Decide which OPML feeds to add, with which unique names and tags, and which to skip."""
    plan = ImportPlan()
    by_url = {url_key(f.url): f.name for f in existing}
    by_name = {f.name: f.url for f in existing}
    taken = set(by_name)
    added_by_url: dict[str, dict[str, Any]] = {}
    for feed in opml:
        key = url_key(feed.url)
        tags = list(dict.fromkeys(t for t in map(slug, feed.folders + feed.categories) if t))
        host = slug((urlsplit(feed.url).hostname or "").removeprefix("www."))
        base = slug(feed.title) or host or "feed"
        try:
            FeedSettings(name=base, url=feed.url)
        except ValidationError as exc:
            plan.skipped.append((feed, str(exc.errors()[0]["msg"]).removeprefix("Value error, ")))
            continue
        if key in by_url:
            plan.skipped.append((feed, f"already in the config as {by_url[key]!r}"))
            continue
        if base in by_name:
            plan.skipped.append(
                (feed, f"a feed named {base!r} is already in the config ({by_name[base]})")
            )
            continue
        if key in added_by_url:
            # One subscription filed in several folders: one feed with every folder's tag.
            earlier = added_by_url[key]
            earlier_tags = list(earlier.get("tags", []))
            merged = list(dict.fromkeys(earlier_tags + tags))
            if merged:
                earlier["tags"] = merged
            reason = f"listed twice; same feed as {earlier['name']!r}"
            if len(merged) > len(earlier_tags):
                reason = f"listed twice; its tags were added to {earlier['name']!r}"
            plan.skipped.append((feed, reason))
            continue
        name = _unique(base, host, taken)
        taken.add(name)
        table: dict[str, Any] = {"name": name, "url": feed.url.strip()}
        if tags:
            table["tags"] = tags
        plan.added.append(table)
        added_by_url[key] = table
    return plan


def _unique(base: str, host: str, taken: set[str]) -> str:
    """``base``, else ``base-<host>``, else ``base-2``, ``base-3``, ... whichever is free."""
    if base not in taken:
        return base
    if host and host != base and f"{base}-{host}" not in taken:
        return f"{base}-{host}"
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def add_feeds(text: str, tables: Sequence[Mapping[str, Any]]) -> str:
    """The config text with these [[feeds]] tables added, every other byte left as it was."""
    if not tables:
        return text
    before = tomllib.loads(text)
    expected = dict(before)
    expected["feeds"] = [*before.get("feeds", []), *(dict(t) for t in tables)]
    rendered = tomlkit.dumps({"feeds": [dict(t) for t in tables]})
    candidates = []
    inserted = _insert_after_last_feed(text, rendered, has_feeds="feeds" in before)
    if inserted is not None:
        candidates.append(inserted)
    candidates.append(_with_tomlkit(text, tables))
    for candidate in candidates:
        try:
            if tomllib.loads(candidate) == expected:
                return candidate
        except tomllib.TOMLDecodeError:
            continue
    # Not reachable with a config tomllib accepts; refuse rather than write something else.
    raise ConfigError([("feeds", "could not add the feeds without changing other settings")])


def _insert_after_last_feed(text: str, rendered: str, *, has_feeds: bool) -> str | None:
    """Insert after the last key of the last [[feeds]] table (at the end if there are no
    feeds); None when the feeds are written another way (``feeds = [...]``)."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if _FEEDS_HEADER.match(line)]
    if not headers:
        if has_feeds:
            return None
        body = text if text.endswith("\n") or not text else text + "\n"
        return body + ("\n" if body.strip() else "") + rendered
    end = next(
        (i for i in range(headers[-1] + 1, len(lines)) if _ANY_HEADER.match(lines[i])),
        len(lines),
    )
    last = headers[-1]
    for i in range(headers[-1] + 1, end):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            last = i
    head = "".join(lines[: last + 1])
    if not head.endswith("\n"):
        head += "\n"
    tail = "".join(lines[last + 1 :])
    return head + "\n" + rendered + ("" if tail.startswith("\n") or not tail else "\n") + tail


def _with_tomlkit(text: str, tables: Sequence[Mapping[str, Any]]) -> str:
    doc = tomlkit.parse(text)
    existing = doc.get("feeds")
    if existing is None:
        aot = tomlkit.aot()
        for table in tables:
            aot.append(tomlkit.item(dict(table)))
        doc.append("feeds", aot)
    elif isinstance(existing, tomlkit.items.AoT):
        for table in tables:
            existing.append(tomlkit.item(dict(table)))
    else:
        for table in tables:
            inline = tomlkit.inline_table()
            inline.update(dict(table))
            existing.append(inline)
    return tomlkit.dumps(doc)


def read_opml_file(path: Path) -> list[OpmlFeed]:
    """Read and parse an OPML file; OpmlError when it cannot be read or is not OPML."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_OPML_BYTES + 1)
    except OSError as exc:
        raise OpmlError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_OPML_BYTES:
        raise OpmlError(f"{path} is over {MAX_OPML_BYTES // 2**20} MB: not a subscription list")
    return parse_opml(data, source=str(path))


def import_opml(config_path: Path, feeds: Sequence[OpmlFeed], *, dry_run: bool) -> ImportPlan:
    """Add the feeds to the config file (unless dry_run); ConfigError leaves it untouched."""
    try:
        text = config_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [("", f"cannot read config file {config_path}: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"{config_path}: not UTF-8 text (byte {exc.start})")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{config_path}: TOML syntax error: {exc}")]) from None
    config, _ = validate_config(data)
    plan = plan_import(feeds, config.feeds)
    if not plan.added:
        return plan
    new_text = add_feeds(text, plan.added)
    validate_config(tomllib.loads(new_text))
    if not dry_run:
        _replace_file(config_path, new_text)
    return plan


def _replace_file(path: Path, text: str) -> None:
    """Write beside the file, keep its permissions, then rename over it (the target of a link)."""
    target = path.resolve()
    mode = target.stat().st_mode & 0o7777
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            [("", f"cannot write beside {target} (is its folder read-only?): {exc.strerror}")]
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ConfigError([("", f"cannot write {target}: {exc.strerror}")]) from None


def render_opml(feeds: Sequence[FeedSettings], *, title: str, now: datetime) -> str:
    """OPML 2.0 for these feeds, each nested in folders named by its tags."""
    root = ElementTree.Element("opml", version="2.0")
    head = ElementTree.SubElement(root, "head")
    ElementTree.SubElement(head, "title").text = title
    ElementTree.SubElement(head, "dateCreated").text = format_datetime(now)
    ElementTree.SubElement(head, "docs").text = "https://opml.org/spec2.opml"
    body = ElementTree.SubElement(root, "body")
    folders: dict[tuple[str, ...], ElementTree.Element] = {(): body}
    for feed in feeds:
        trail: tuple[str, ...] = ()
        for tag in feed.tags:
            parent = folders[trail]
            trail = (*trail, tag)
            if trail not in folders:
                folders[trail] = ElementTree.SubElement(parent, "outline", text=tag, title=tag)
        ElementTree.SubElement(
            folders[trail],
            "outline",
            {"type": "rss", "text": feed.name, "title": feed.name, "xmlUrl": feed.url},
        )
    ElementTree.indent(root, space="  ")
    xml = ElementTree.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{xml}\n'
