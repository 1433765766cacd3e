"""Every corpus file through parse → match → compose, in process.

The permissive files are copied from the shared corpus into tests/data/feeds (PROVENANCE.tsv says
where each came from and how feedparser saw it). The others (GPL, LGPL, AGPL, and the seed
article, which has no license of its own) are read in place from the shared corpus beside the
checkout, where CI has it (../shared/corpus, as tests/test_e2e.py reads the seed), and never
copied; those tests are skipped when it is absent. Watchlists that fire often, in Arabic and in
English, make most items produce messages, and each message must be HTML that Telegram accepts,
no longer than Telegram allows. Nothing may raise but ParseError, and only for documents in which
feedparser found no items at all; a malformed ("bozo") feed yields every item feedparser read.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.compose import MessageOptions, compose_alert
from aggregator.matching import Matcher, WatchlistRules
from aggregator.parse import ParsedFeed, ParseError, parse_feed
from tests.conftest import FEEDS
from tests.servers.fake_telegram import parse_telegram_html, utf16_length

PERMISSIVE = ("MIT", "BSD", "Apache")
TELEGRAM_LIMIT = 4096

# Watchlists chosen to fire often: common words, Arabic prefixes and wildcards, hashtags,
# a query, one looking at categories only, one per feed subset, capitals that keep their case.
WATCHLISTS = (
    WatchlistRules(name="english-common", any=("the", "news", "said", "new")),
    WatchlistRules(name="arabic-common", any=("في", "من", "على", "تونس")),
    WatchlistRules(name="arabic-terms", any=("#سوريا", "التدخل_الروسي", "وزير*", "عبد الله")),
    WatchlistRules(
        name="query", query='(رئيس OR الحكومة OR government OR "prime minister") -"كرة القدم"'
    ),
    WatchlistRules(name="capitals", any=("US", "UK", "EU", "NATO", "BBC")),
    WatchlistRules(
        name="categories", any=("news", "أخبار", "sport*", "رياضة"), fields=("categories",)
    ),
    WatchlistRules(name="test-words", any=("test", "example", "entry", "item", "title")),
    WatchlistRules(name="all-of", all=("the", "of"), none=("zzzyyx",)),
)
OPTIONS = MessageOptions(timezone=ZoneInfo("Asia/Beirut"))

# Where CI has the shared corpus: beside the checkout, as tests/test_e2e.py finds the seed.
SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
SHARED_MANIFEST = SHARED / "MANIFEST.tsv"
# Not in MANIFEST.tsv: the article the product was conceived from (see seed/README.md there).
SEED = {"path": "seed/annahar-seed.xml", "license": "none stated", "fp_entries": "1"}
needs_shared = pytest.mark.skipif(
    not SHARED_MANIFEST.is_file(),
    reason=f"the shared corpus is not beside the checkout ({SHARED_MANIFEST} is missing); "
    "its non-permissive files are read there in place, never copied",
)


def _rows(manifest: Path = FEEDS / "PROVENANCE.tsv") -> list[dict[str, str]]:
    with manifest.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _shared_rows() -> list[dict[str, str]]:
    """The shared corpus's files that could not be copied here: every non-permissive one."""
    rows = [r for r in _rows(SHARED_MANIFEST) if not r["license"].startswith(PERMISSIVE)]
    return [*rows, SEED]


@dataclass
class Tally:
    """What the whole corpus produced."""

    files: int = 0
    refused: list[str] = field(default_factory=list)
    items: int = 0
    messages: int = 0
    by_watchlist: Counter[str] = field(default_factory=Counter)
    longest: int = 0
    items_by_path: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    """The watchlists above, compiled once."""
    return Matcher(WATCHLISTS)


def _check_feed(row: dict[str, str], feed: ParsedFeed, matcher: Matcher, tally: Tally) -> None:
    path = row["path"]
    for item in feed.items:
        tally.items += 1
        for match in matcher.match(item.fields(), feed=path):
            message = compose_alert(item, match, source=feed.title or path, options=OPTIONS)
            try:
                shown = parse_telegram_html(message.html)
            except ValueError as exc:
                raise AssertionError(f"{path}: {item.title!r}: Telegram refuses: {exc}") from exc
            length = utf16_length(shown)
            assert length <= TELEGRAM_LIMIT, f"{path}: {item.title!r}: {length} UTF-16 units"
            assert utf16_length(message.plain) <= TELEGRAM_LIMIT, f"{path}: plain too long"
            tally.messages += 1
            tally.by_watchlist[match.watchlist] += 1
            tally.longest = max(tally.longest, length)


def _run(folder: Path, rows: list[dict[str, str]], matcher: Matcher) -> Tally:
    """Every file of ``rows`` through parse → match → compose; fails on the first escape."""
    result = Tally()
    for row in rows:
        body = (folder / row["path"]).read_bytes()
        result.files += 1
        try:
            feed = parse_feed(body, feed_name=row["path"], base_url="https://corpus.example/feed")
        except ParseError:
            result.refused.append(row["path"])
            continue
        _check_feed(row, feed, matcher, result)
        result.items_by_path[row["path"]] = len(feed.items)
    return result


@pytest.fixture(scope="module")
def tally(matcher: Matcher) -> Tally:
    """Every copied corpus file through parse → match → compose."""
    return _run(FEEDS, _rows(), matcher)


@pytest.fixture(scope="module")
def shared_tally(matcher: Matcher) -> Tally:
    """Every non-permissive shared corpus file, read in place, through parse → match → compose."""
    return _run(SHARED, _shared_rows(), matcher)


def test_every_copied_file_is_permissive_and_present() -> None:
    rows = _rows()
    assert len(rows) > 400
    for row in rows:
        assert row["license"].startswith(PERMISSIVE), row
        assert (FEEDS / row["path"]).is_file(), row["path"]


def test_whole_corpus_goes_through_without_an_escape(tally: Tally) -> None:
    assert tally.files == len(_rows())
    # Enough happened for the test to mean something.
    assert tally.items > 2000, tally.items
    assert tally.messages > 1500, tally.messages
    for rules in WATCHLISTS:
        assert tally.by_watchlist[rules.name] > 0, f"{rules.name} never fired"
    assert tally.by_watchlist["arabic-common"] > 300
    assert tally.by_watchlist["arabic-terms"] > 10


def test_only_documents_without_items_are_refused(tally: Tally) -> None:
    # Blank: the news-ar provenance and relations JSON files, which are not feeds.
    no_entries = {row["path"] for row in _rows() if row["fp_entries"] in ("0", "")}
    assert set(tally.refused) <= no_entries
    assert "json/feedparser-example.json" in tally.refused


def test_bozo_feeds_yield_the_items_they_can() -> None:
    bozo_rows = [row for row in _rows() if row["fp_bozo"] == "1" and row["fp_entries"] != "0"]
    assert len(bozo_rows) >= 20
    for row in bozo_rows:
        feed = parse_feed((FEEDS / row["path"]).read_bytes(), feed_name=row["path"])
        assert len(feed.items) == int(row["fp_entries"]), row["path"]
        assert any(item.title or item.summary or item.link for item in feed.items), row["path"]


@needs_shared
def test_non_permissive_files_are_not_copied_here() -> None:
    shared = _shared_rows()
    assert len(shared) >= 25
    copied = {row["path"] for row in _rows()}
    for row in shared:
        assert row["path"] not in copied, row["path"]
        assert not (FEEDS / row["path"]).exists(), f"{row['path']} ({row['license']}) copied"
        assert (SHARED / row["path"]).is_file(), row["path"]


@needs_shared
def test_non_permissive_files_go_through_in_place_without_an_escape(
    shared_tally: Tally,
) -> None:
    rows = _shared_rows()
    assert shared_tally.files == len(rows)
    # Only documents in which feedparser found no items may be refused; the others yield
    # every item feedparser read (none of them is malformed).
    no_entries = {row["path"] for row in rows if row["fp_entries"] == "0"}
    assert set(shared_tally.refused) <= no_entries
    for row in rows:
        if row["path"] not in shared_tally.refused:
            items = shared_tally.items_by_path[row["path"]]
            assert items == int(row["fp_entries"]), row["path"]
    print(
        f"shared corpus in place: {shared_tally.files} files, {len(shared_tally.refused)} "
        f"refused (no items), {shared_tally.items} items, {shared_tally.messages} messages, "
        f"longest {shared_tally.longest} UTF-16 units"
    )
    assert shared_tally.items > 500, shared_tally.items
    assert shared_tally.messages > 300, shared_tally.messages
    assert shared_tally.by_watchlist["english-common"] > 100
    assert shared_tally.by_watchlist["arabic-terms"] >= 1, "the seed article must fire"
