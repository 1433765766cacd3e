"""Every permissive corpus file through parse → match → compose, in process.

The files are the ones copied from the shared corpus into tests/data/feeds (PROVENANCE.tsv says
where each came from and how feedparser saw it). Watchlists that fire often, in Arabic and in
English, make most items produce messages, and each message must be HTML that Telegram accepts,
no longer than Telegram allows. Nothing may raise but ParseError, and only for documents in which
feedparser found no items at all; a malformed ("bozo") feed yields every item feedparser read.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
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


def _rows() -> list[dict[str, str]]:
    with (FEEDS / "PROVENANCE.tsv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


@dataclass
class Tally:
    """What the whole corpus produced."""

    files: int = 0
    refused: list[str] = field(default_factory=list)
    items: int = 0
    messages: int = 0
    by_watchlist: Counter[str] = field(default_factory=Counter)
    longest: int = 0


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


@pytest.fixture(scope="module")
def tally(matcher: Matcher) -> Tally:
    """Every corpus file through parse → match → compose; fails on the first escape."""
    result = Tally()
    for row in _rows():
        body = (FEEDS / row["path"]).read_bytes()
        result.files += 1
        try:
            feed = parse_feed(body, feed_name=row["path"], base_url="https://corpus.example/feed")
        except ParseError:
            result.refused.append(row["path"])
            continue
        _check_feed(row, feed, matcher, result)
    return result


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
