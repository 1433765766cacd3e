"""The polling policy end to end: the real pipeline, Fetcher and Store against the local feed
server, with a fake clock for the scheduling decisions (no test waits real minutes).

Each test polls a feed through ``pipeline.poll_feed`` and reads what the policy decided
(``FeedOutcome.next_poll_at``, the stored ``FeedState``) and what the admins were queued in the
outbox. The daemon's own wiring (its scheduler obeying those decisions) is tested at the end with
a real ``Daemon`` on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from aggregator.compose import MessageOptions
from aggregator.config import LoadedConfig, validate_config
from aggregator.daemon import Daemon
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.matching import Matcher
from aggregator.parse import ParsedFeed, parse_in_thread
from aggregator.pipeline import FeedOutcome, Runtime, poll_feed
from aggregator.segments import split
from aggregator.store import OutboxEntry, Store
from tests.servers.feed_server import FeedServer

UA = "aggregator-test/0.1 (+https://example.org/aggregator)"
ADMIN = 4242
MIN, HOUR = 60.0, 3600.0
START = 1_800_000_000.0
FEEDS = Path(__file__).parent / "data" / "feeds"


def rss(n_items: int, *, first: int = 0, extra: str = "", step_min: int = 5) -> bytes:
    """RSS with items first..first+n-1, newest first, ``step_min`` minutes apart, before START."""
    items = []
    for n in reversed(range(first, first + n_items)):
        published = datetime.fromtimestamp(START, UTC) - timedelta(
            minutes=(first + n_items - 1 - n) * step_min
        )
        items.append(
            f"<item><title>story {n}</title><link>https://news.example/{n}</link>"
            f"<guid>news-{n}</guid><pubDate>{format_datetime(published)}</pubDate></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" '
        'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        f"<title>News</title><link>https://news.example/</link>{extra}{''.join(items)}"
        "</channel></rss>\n"
    ).encode()


class Clock:
    """Runtime.clock that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Env:
    """A Runtime on a store in tmp_path, counting parses, with a fake clock."""

    def __init__(self, runtime: Runtime, clock: Clock, path: Path) -> None:
        self.runtime = runtime
        self.clock = clock
        self.path = path
        self.parses = 0
        self.bodies: list[bytes] = []  # every body parsed, in order

    async def poll(self, name: str = "news") -> FeedOutcome:
        feed = self.runtime.loaded.config.feed(name)
        assert feed is not None
        return await poll_feed(self.runtime, feed)

    def delay(self, outcome: FeedOutcome) -> float | None:
        return None if outcome.next_poll_at is None else outcome.next_poll_at - self.clock.now

    def admin_notices(self) -> list[OutboxEntry]:
        return [e for e in self.runtime.store.pending() if e.chat == str(ADMIN)]


def config_for(url: str, polling: Mapping[str, Any] | None = None, **feed: Any) -> dict[str, Any]:
    return {
        "telegram": {"admins": [ADMIN]},
        "polling": {"jitter": 0, "backfill": "0", **(polling or {})},
        "feeds": [{"name": "news", "url": url, **feed}],
        "watchlists": [{"name": "w", "any": ["nothing-matches-this"], "channels": ["@chan_x"]}],
    }


@asynccontextmanager
async def environment(
    tmp_path: Path, data: dict[str, Any], limits: FetchLimits | None = None
) -> AsyncIterator[Env]:
    config, _ = validate_config(data)
    loaded = LoadedConfig(config=config, path=tmp_path / "config.toml")
    clock = Clock()
    store = Store.open(tmp_path / "store.json")
    fetcher = Fetcher(limits or FetchLimits(deadline_s=5), user_agent=UA)
    runtime = Runtime(
        loaded=loaded,
        matcher=Matcher([w.rules() for w in config.watchlists]),
        store=store,
        fetcher=fetcher,
        message_options=MessageOptions(),
        clock=clock,
    )
    env = Env(runtime, clock, tmp_path / "store.json")

    async def counting_parse(body: bytes, **kwargs: Any) -> ParsedFeed:
        env.parses += 1
        env.bodies.append(body)
        return await parse_in_thread(body, **kwargs)

    runtime.parse = counting_parse
    try:
        yield env
    finally:
        await fetcher.aclose()
        store.close()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as feed_server:
        yield feed_server


async def test_304_and_identical_bodies_are_never_parsed(
    tmp_path: Path, server: FeedServer
) -> None:
    server.add("/a.xml", rss(5))
    server.add("/b.xml", rss(5))
    server.add_fault("/b.xml", "ignore_validators")
    data = config_for(server.url_for("/a.xml"))
    data["feeds"].append({"name": "same-bytes", "url": server.url_for("/b.xml")})
    async with environment(tmp_path, data) as env:
        assert (await env.poll()).status == "ok"
        assert (await env.poll("same-bytes")).status == "ok"
        assert env.parses == 2
        for _ in range(3):
            env.clock.now += 10 * MIN
            assert (await env.poll()).status == "not_modified"
            assert (await env.poll("same-bytes")).status == "not_modified"
        assert env.parses == 2  # neither 304s nor identical bytes were parsed
        assert server.request_count("/a.xml") == server.request_count("/b.xml") == 4
        assert "if-none-match" in server.requests[-2].headers
        server.add("/a.xml", rss(6))
        env.clock.now += 10 * MIN
        assert (await env.poll()).new_items == 1
        assert env.parses == 3


def parsed_titles(body: bytes) -> list[str]:
    return re.findall(r"<title>(story \d+)</title>", body.decode())


def growing_rss(count: int, *, extra: str = "") -> bytes:
    """Items 0..count-1, newest first; unlike rss(), an item's bytes never change as more come."""
    body = rss(count, extra=extra).decode()
    for n in range(count):
        stamp = format_datetime(datetime.fromtimestamp(START - (100 - n) * MIN, UTC))
        head = f"<guid>news-{n}</guid><pubDate>"
        body = re.sub(rf"{head}[^<]*", head + stamp, body)
    return body.encode()


async def test_a_changed_feed_parses_only_its_new_items(tmp_path: Path, server: FeedServer) -> None:
    def dated(day: int) -> str:
        return f"<lastBuildDate>Mon, {day:02} May 2027 10:00:00 GMT</lastBuildDate>"

    server.add("/a.xml", growing_rss(5, extra=dated(1)))
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        assert (await env.poll()).items == 5
        assert len(parsed_titles(env.bodies[-1])) == 5
        # Two new items, and the feed's date changed: only the two are parsed.
        server.add("/a.xml", growing_rss(7, extra=dated(2)))
        env.clock.now += 10 * MIN
        outcome = await env.poll()
        assert (outcome.new_items, outcome.items) == (2, 7)
        assert parsed_titles(env.bodies[-1]) == ["story 6", "story 5"]
        # The items keep being listed (kept from retention) though they were not parsed.
        env.runtime.store.prune(now=env.clock.now + 999 * HOUR, seen_ttl_s=HOUR)
        assert env.runtime.store.is_seen("guid:news.example:news-0")
        # An item that changed is parsed again (and is not new: its guid was seen).
        server.add("/a.xml", growing_rss(7, extra=dated(2)).replace(b"story 3", b"story 3 updated"))
        env.clock.now += 10 * MIN
        outcome = await env.poll()
        assert (outcome.new_items, outcome.items) == (0, 7)
        assert re.findall(r"<title>([^<]*)</title>", env.bodies[-1].decode()) == [
            "News",
            "story 3 updated",
        ]
        # A new channel link changes how relative item links read: the whole body is parsed.
        moved = growing_rss(7).replace(b"news.example/</link>", b"news.example/v2/</link>")
        server.add("/a.xml", moved)
        env.clock.now += 10 * MIN
        assert (await env.poll()).new_items == 0
        assert len(parsed_titles(env.bodies[-1])) == 7


async def test_unchanged_items_no_longer_seen_are_parsed_again(
    tmp_path: Path, server: FeedServer
) -> None:
    server.add("/a.xml", growing_rss(5))
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        await env.poll()
        # The feed left the config for a while (its keys expired), and came back.
        env.runtime.store.prune(now=env.clock.now + HOUR, seen_ttl_s=MIN, active_feeds=[])
        server.add("/a.xml", growing_rss(6))
        env.clock.now += 10 * MIN
        outcome = await env.poll()
        assert (outcome.new_items, outcome.items) == (6, 6)
        assert len(parsed_titles(env.bodies[-1])) == 6


async def test_an_unchanged_item_listed_twice_still_counts_twice(
    tmp_path: Path, server: FeedServer
) -> None:
    server.add("/a.xml", growing_rss(5))
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        await env.poll()
        cut = split(growing_rss(5))
        assert cut is not None
        server.add("/a.xml", cut.document(range(5)).replace(cut.items[2], cut.items[2] * 2))
        env.clock.now += 10 * MIN
        outcome = await env.poll()
        assert (outcome.items, env.parses) == (6, 2)
        assert parsed_titles(env.bodies[-1]) == []  # nothing new to parse...
        state = env.runtime.store.feed_state("news")
        # ...and an item listed twice (same guid, same link) is one item, as a whole parse
        # sees it: no reused guid, so the feed keeps its guids.
        assert (state.identify_by, state.guid_problem) == ("guid", None)


async def test_reading_only_new_items_changes_no_outcome(
    tmp_path: Path, server: FeedServer
) -> None:
    """Two daemons poll the same real feeds, one reading only new items and one every item:
    the same new items, alerts and seen keys."""
    names = ["news-a-politics.xml", "news-b-arab-world-atom.xml", "news-d-sport-noguid.xml"]
    bodies = {name: (FEEDS / "news-ar" / name).read_bytes() for name in names}
    data = config_for(server.url_for("/0.xml"))
    data["feeds"] = [
        {"name": f"f{n}", "url": server.url_for(f"/{n}.xml")} for n in range(len(names))
    ]
    data["watchlists"] = [
        {"name": "w", "any": ["سوريا", "لبنان", "غزة", "الرئيس", "مصر"], "channels": ["@chan_x"]}
    ]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    async with (
        environment(tmp_path / "a", data) as incremental,
        environment(tmp_path / "b", data) as whole,
    ):
        results: dict[str, list[tuple[int, int, list[tuple[str, str]]]]] = {"a": [], "b": []}
        for step in range(3):
            for n, name in enumerate(names):
                cut = split(bodies[name])
                assert cut is not None
                # Older items first, then three new ones, then one of them edited.
                body = cut.document(range(3 if step == 0 else 0, len(cut.items)))
                if step == 2:
                    edited = cut.items[1].replace(b"<title>", b"<title>x ")
                    body = body.replace(cut.items[1], edited)
                server.add(f"/{n}.xml", body)
            for label, env in (("a", incremental), ("b", whole)):
                if env is whole:
                    env.runtime.known_items.clear()
                env.clock.now += HOUR
                for n in range(len(names)):
                    outcome = await env.poll(f"f{n}")
                    alerts = sorted((a.match.watchlist, a.key) for a in outcome.alerts)
                    results[label].append((outcome.new_items, outcome.items, alerts))
        assert results["a"] == results["b"]
        assert any(new for new, _, _ in results["a"][3:])  # new items were found and alerted
        assert any(alerts for _, _, alerts in results["a"])
        stores = [e.runtime.store for e in (incremental, whole)]
        keys = [sorted(s._seen) for s in stores]
        assert keys[0] == keys[1]
        assert [sorted(e.text for e in s.pending()) for s in stores] == [
            sorted(e.text for e in stores[1].pending())
        ] * 2
        # And the incremental one parsed fewer items.
        assert sum(map(len, map(_items_in, incremental.bodies))) < sum(
            map(len, map(_items_in, whole.bodies))
        )


async def test_an_item_without_a_link_is_not_alerted_again_when_guids_are_dropped(
    tmp_path: Path, server: FeedServer
) -> None:
    """A feed switched to keys by link keys an item with no link by its text from then on;
    seen under its guid, it is the same story, whether its bytes were parsed again or not."""

    def body(*items: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>News'
            "</title><link>https://news.example/</link>" + "".join(items) + "</channel></rss>\n"
        ).encode()

    linkless = "<item><title>story A</title><guid isPermaLink='false'>a</guid></item>"
    linked = "<item><title>story B</title><link>https://news.example/b</link><guid>b</guid></item>"
    no_guid = "<item><title>story C</title><link>https://news.example/c</link></item>"
    data = config_for(server.url_for("/a.xml"))
    data["watchlists"] = [{"name": "w", "any": ["story"], "channels": ["@chan_x"]}]
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    async with (
        environment(tmp_path / "a", data) as incremental,
        environment(tmp_path / "b", data) as whole,
    ):
        for items in ((linkless, linked), (no_guid, linkless, linked)):
            server.add("/a.xml", body(*items))
            for env in (incremental, whole):
                if env is whole:
                    env.runtime.known_items.clear()
                env.clock.now += HOUR
                outcome = await env.poll()
        # The item with no guid makes the guids unreliable: the feed is keyed by link now.
        for env in (incremental, whole):
            assert env.runtime.store.feed_state("news").identify_by == "link"
        assert [e.text.count("story A") for e in incremental.runtime.store.pending()] == [0]
        assert [e.text.count("story A") for e in whole.runtime.store.pending()] == [0]
        # And not on the next change either.
        server.add("/a.xml", body("<item><title>story D</title></item>", no_guid, linkless, linked))
        for env in (incremental, whole):
            env.clock.now += HOUR
            outcome = await env.poll()
            assert [a.item.title for a in outcome.alerts] == ["story D"]


async def test_a_new_article_under_a_reused_guid_is_alerted_when_guids_are_dropped(
    tmp_path: Path, server: FeedServer
) -> None:
    """A CMS that starts giving every new item the same guid: the feed is switched to keys by
    link, and the new article (a new link) is alerted, not taken for the one seen under it."""

    def item(name: str, guid: str) -> str:
        return (
            f"<item><title>story {name}</title><link>https://news.example/{name}</link>"
            f"<guid isPermaLink='false'>{guid}</guid></item>"
        )

    def body(*items: str) -> bytes:
        return (
            '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>News'
            "</title><link>https://news.example/</link>" + "".join(items) + "</channel></rss>\n"
        ).encode()

    data = config_for(server.url_for("/a.xml"))
    data["watchlists"] = [{"name": "w", "any": ["story"], "channels": ["@chan_x"]}]
    async with environment(tmp_path, data) as env:
        steps = [
            (item("A", "ga"),),
            (item("B", "X"), item("A", "ga")),
            (item("C", "X"), item("B", "X"), item("A", "ga")),
        ]
        alerted = []
        for items in steps:
            server.add("/a.xml", body(*items))
            env.clock.now += HOUR
            alerted.append([a.item.title for a in (await env.poll()).alerts])
        assert alerted == [[], ["story B"], ["story C"]]
        assert env.runtime.store.feed_state("news").identify_by == "link"


async def test_items_are_read_again_when_the_response_headers_change_their_meaning(
    tmp_path: Path, server: FeedServer
) -> None:
    """feedparser resolves relative links against Content-Location: a new one is a new source."""

    def atom(*numbers: int) -> bytes:
        entries = "".join(
            f"<entry><title>story {n}</title><id>e{n}</id><link href='story/{n}'/></entry>"
            for n in numbers
        )
        return (
            '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
            f"<id>f</id>{entries}</feed>"
        ).encode()

    server.add("/a.xml", atom(1), headers={"Content-Location": "https://a.example/news/"})
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        await env.poll()
        server.add("/a.xml", atom(2, 1), headers={"Content-Location": "https://a.example/news/"})
        env.clock.now += HOUR
        await env.poll()
        assert parsed_titles(env.bodies[-1]) == ["story 2"]
        server.add("/a.xml", atom(3, 2, 1), headers={"Content-Location": "https://a.example/v2/"})
        env.clock.now += HOUR
        await env.poll()
        assert parsed_titles(env.bodies[-1]) == ["story 3", "story 2", "story 1"]
        assert env.runtime.store.is_seen("link://a.example/v2/story/1")


def _items_in(body: bytes) -> list[bytes]:
    cut = split(body)
    return list(cut.items) if cut is not None else []


async def test_retry_after_is_obeyed_to_the_second(tmp_path: Path, server: FeedServer) -> None:
    server.add_fault("/a.xml", "status", code=429, headers={"Retry-After": "137"})
    async with environment(tmp_path, config_for(server.url_for("/a.xml"), {"jitter": 0.5})) as env:
        outcome = await env.poll()
        assert outcome.status == "error" and env.delay(outcome) == 137.0
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
        server.add_fault(
            "/a.xml", "status", code=503, headers={"Retry-After": format_datetime(when, True)}
        )
        outcome = await env.poll()
        # An HTTP date is relative to the real clock; to the second, whatever the jitter.
        expected = when.timestamp() - time.time()
        assert env.delay(outcome) == pytest.approx(expected, abs=1.5)
        assert env.runtime.store.feed_state("news").poll_reason == "retry-after"


@pytest.mark.parametrize(
    ("extra", "headers", "max_interval", "expected"),
    [
        ("<ttl>90</ttl>", {}, "3h", 90 * MIN),
        ("<sy:updatePeriod>hourly</sy:updatePeriod><sy:updateFrequency>2</sy:updateFrequency>",
         {}, "3h", 30 * MIN),
        ("", {"Cache-Control": "public, max-age=2700"}, "3h", 45 * MIN),
        ("<ttl>600</ttl>", {}, "2h", 2 * HOUR),  # a floor is capped by max_interval
    ],
)  # fmt: skip
async def test_publisher_floors_hold(
    tmp_path: Path,
    server: FeedServer,
    extra: str,
    headers: dict[str, str],
    max_interval: str,
    expected: float,
) -> None:
    # Items every minute: without the floor this feed would be polled every min_interval.
    server.add("/a.xml", rss(30, extra=extra, step_min=1), headers=headers)
    polling = {"min_interval": "1m", "max_interval": max_interval}
    async with environment(tmp_path, config_for(server.url_for("/a.xml"), polling)) as env:
        first = await env.poll()
        assert env.delay(first) == pytest.approx(expected)
        env.clock.now += expected
        second = await env.poll()  # 304: the floors from the last parse and this response hold
        assert second.status == "not_modified"
        assert env.delay(second) == pytest.approx(expected)


async def test_backoff_grows_and_caps_and_suspension_and_recovery_tell_admins_once(
    tmp_path: Path, server: FeedServer
) -> None:
    server.add("/a.xml", rss(3))
    server.add_fault("/a.xml", "status", code=500)
    polling = {"interval": "5m", "max_backoff": "1h", "suspend_after": 4}
    async with environment(tmp_path, config_for(server.url_for("/a.xml"), polling)) as env:
        delays = []
        for _ in range(7):
            outcome = await env.poll()
            delay = env.delay(outcome)
            assert delay is not None
            delays.append(delay)
            env.clock.now += delay
        assert delays == [10 * MIN, 20 * MIN, 40 * MIN, HOUR, HOUR, HOUR, HOUR]
        notices = env.admin_notices()
        assert len(notices) == 1, notices
        assert "Feed news suspended after 4 failures" in notices[0].plain
        assert "HTTP 500" in notices[0].plain
        assert env.runtime.store.feed_state("news").suspended

        server.clear_fault("/a.xml")
        assert (await env.poll()).status == "ok"
        env.clock.now += 10 * MIN
        assert (await env.poll()).status == "not_modified"
        notices = env.admin_notices()
        assert [n.plain.splitlines()[0] for n in notices] == [
            "Feed news suspended after 4 failures",
            "Feed news recovered",
        ]
        state = env.runtime.store.feed_state("news")
        assert not state.suspended and state.consecutive_failures == 0


async def test_backoff_and_pace_survive_a_restart(tmp_path: Path, server: FeedServer) -> None:
    server.add_fault("/a.xml", "status", code=503, headers={"Retry-After": "3600"})
    data = config_for(server.url_for("/a.xml"))
    async with environment(tmp_path, data) as env:
        await env.poll()
    async with environment(tmp_path, data) as env:
        state = env.runtime.store.feed_state("news")
        assert state.next_poll_at == START + 3600
        assert state.consecutive_failures == 1


async def test_410_stops_polling_and_tells_admins(tmp_path: Path, server: FeedServer) -> None:
    server.add_fault("/a.xml", "status", code=410)
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        outcome = await env.poll()
        assert outcome.status == "error" and outcome.next_poll_at is None
        for _ in range(3):
            again = await env.poll()
            assert again.error is not None and again.error.startswith("gone")
        assert server.request_count("/a.xml") == 1
        assert [n.plain.splitlines()[0] for n in env.admin_notices()] == [
            "Feed news is gone (HTTP 410)"
        ]
    # A new URL in the config polls again.
    server.add("/b.xml", rss(2))
    async with environment(tmp_path, config_for(server.url_for("/b.xml"))) as env:
        assert (await env.poll()).status == "ok"


async def test_301_is_followed_remembered_and_reported_once(
    tmp_path: Path, server: FeedServer
) -> None:
    server.add("/new.xml", rss(3))
    server.add_fault("/old.xml", "redirect", to=server.url_for("/new.xml"), code=301)
    data = config_for(server.url_for("/old.xml"))
    async with environment(tmp_path, data) as env:
        assert (await env.poll()).status == "ok"
        env.clock.now += 10 * MIN
        assert (await env.poll()).status == "not_modified"
        notices = env.admin_notices()
        assert len(notices) == 1
        assert "Feed news moved permanently" in notices[0].plain
        assert server.url_for("/new.xml") in notices[0].plain
    async with environment(tmp_path, data) as env:  # after a restart, still the new URL
        env.clock.now += 20 * MIN
        assert (await env.poll()).status == "not_modified"
        assert server.request_count("/old.xml") == 1
        assert server.request_count("/new.xml") == 3
    # The admin puts a third URL in the config: the remembered move no longer applies.
    server.add("/third.xml", rss(3))
    async with environment(tmp_path, config_for(server.url_for("/third.xml"))) as env:
        await env.poll()
        assert server.request_count("/third.xml") == 1
        assert server.request_count("/new.xml") == 3


async def test_all_new_items_is_a_gap_warned_and_polled_sooner(
    tmp_path: Path, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/a.xml", rss(12, step_min=30))
    polling = {"interval": "20m", "min_interval": "1m", "max_interval": "1h"}
    async with environment(tmp_path, config_for(server.url_for("/a.xml"), polling)) as env:
        await env.poll()
        before = env.runtime.store.feed_state("news").interval_s
        assert before is not None
        server.add("/a.xml", rss(12, first=100, step_min=1))
        env.clock.now += 20 * MIN
        with caplog.at_level(logging.WARNING, logger="aggregator.polling"):
            outcome = await env.poll()
        assert outcome.new_items == 12
        gaps = [r for r in caplog.records if "probably missed" in r.getMessage()]
        assert len(gaps) == 1 and "news" in str(gaps[0].__dict__.get("fields"))
        state = env.runtime.store.feed_state("news")
        assert state.interval_s is not None and state.interval_s <= before / 2


async def test_no_more_than_two_requests_per_host_in_flight(
    tmp_path: Path, server: FeedServer
) -> None:
    data = config_for(server.url_for("/f0.xml"))
    data["feeds"] = [{"name": f"f{i}", "url": server.url_for(f"/f{i}.xml")} for i in range(8)]
    for i in range(8):
        server.add(f"/f{i}.xml", rss(2))
        server.add_fault(f"/f{i}.xml", "delay", seconds=0.15)
    async with environment(tmp_path, data, FetchLimits(max_per_host=2, max_in_flight=20)) as env:
        outcomes = await asyncio.gather(*(env.poll(f"f{i}") for i in range(8)))
    assert [o.status for o in outcomes] == ["ok"] * 8
    assert server.max_in_flight() == 2


@pytest.mark.parametrize(
    ("fault", "params", "reason"),
    [
        ("huge", {"size": 1 << 30}, "body over 1 MiB cap (after decompression)"),
        ("gzip_bomb", {"size": 1 << 30}, "body over 1 MiB cap (after decompression)"),
        ("drip", {"interval": 1.0}, "no response within 1 s deadline"),
    ],
)
async def test_hostile_bodies_are_cut_off_with_one_clear_line(
    tmp_path: Path,
    server: FeedServer,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    params: dict[str, object],
    reason: str,
) -> None:
    server.add_fault("/a.xml", fault, **params)
    limits = FetchLimits(deadline_s=1, max_body_bytes=1 << 20)
    async with environment(tmp_path, config_for(server.url_for("/a.xml")), limits) as env:
        started = time.monotonic()
        with caplog.at_level(logging.INFO):
            outcome = await env.poll()
        elapsed = time.monotonic() - started
    assert outcome.error == reason
    assert elapsed < 1.8  # cut off at the cap or the deadline, not after reading the rest
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    fields = lines[0].__dict__.get("fields", {})
    assert lines[0].getMessage() == "feed failed"
    assert fields.get("feed") == "news" and fields.get("error") == reason


async def test_daemon_obeys_retry_after_and_stops_a_gone_feed(
    tmp_path: Path, server: FeedServer
) -> None:
    """The real Daemon's scheduler runs each feed when its last poll said, in real time."""
    server.add_fault("/slow.xml", "status", code=429, headers={"Retry-After": "2"})
    server.add_fault("/gone.xml", "status", code=410)
    data = config_for(server.url_for("/slow.xml"))
    data["feeds"].append({"name": "gone", "url": server.url_for("/gone.xml")})
    data["storage"] = {"path": str(tmp_path / "daemon.json")}
    config, _ = validate_config(data)
    daemon = Daemon(LoadedConfig(config=config, path=tmp_path / "config.toml"), None)
    run = asyncio.create_task(daemon.run())
    try:
        arrived = await asyncio.to_thread(server.wait_for_requests, "/slow.xml", 2, 15.0)
        assert arrived, server.requests
    finally:
        daemon.stop()
        assert await asyncio.wait_for(run, 10) == 0
    first, second = [r.monotonic for r in server.requests if r.path == "/slow.xml"][:2]
    assert 2.0 <= second - first < 2.5  # Retry-After: 2, to the second
    assert server.request_count("/gone.xml") == 1


async def test_reload_after_the_admin_removes_a_gone_feed(
    tmp_path: Path, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The notice says to remove a 410 feed from the config; doing so and reloading must work
    (after a restart the gone feed has no job to remove) and schedule the feeds added in the
    same edit."""
    server.add("/news.xml", rss(3))
    server.add("/added.xml", rss(3))
    server.add_fault("/gone.xml", "status", code=410)
    data = config_for(server.url_for("/news.xml"))
    data["feeds"].append({"name": "gone", "url": server.url_for("/gone.xml")})
    data["storage"] = {"path": str(tmp_path / "daemon.json")}
    config_file = tmp_path / "config.toml"
    config, _ = validate_config(data)
    loaded = LoadedConfig(config=config, path=config_file)
    caplog.set_level(logging.INFO, logger="aggregator.daemon")
    for run_number in (1, 2):  # the second run starts knowing the feed is gone
        daemon = Daemon(loaded, None)
        run = asyncio.create_task(daemon.run())
        try:
            assert await asyncio.to_thread(server.wait_for_requests, "/news.xml", run_number, 10)
            if run_number == 2:
                assert server.request_count("/gone.xml") == 1, "not polled again"
                data["feeds"] = [
                    data["feeds"][0],
                    {"name": "added", "url": server.url_for("/added.xml")},
                ]
                config_file.write_text(tomlkit.dumps(data), encoding="utf-8")
                # Once: its handler is in place (the daemon polls), and a second reload would
                # hide a first that failed half way.
                os.kill(os.getpid(), signal.SIGHUP)
                assert await asyncio.to_thread(server.wait_for_requests, "/added.xml", 1, 10)
                assert any(r.getMessage() == "config reloaded" for r in caplog.records)
            else:
                assert await asyncio.to_thread(server.wait_for_requests, "/gone.xml", 1, 10)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(run, 10) == 0


async def test_a_new_url_is_fetched_without_the_old_urls_validators(
    tmp_path: Path, server: FeedServer
) -> None:
    # The admin moves the feed to another URL: its old ETag and Last-Modified say nothing
    # about the new one, and a server that compares dates would answer 304 to an older copy,
    # poll after poll, while its items were never read.
    server.add("/a.xml", rss(3))
    server.add("/b.xml", rss(4))
    async with environment(tmp_path, config_for(server.url_for("/a.xml"))) as env:
        assert (await env.poll()).status == "ok"
        config, _ = validate_config(config_for(server.url_for("/b.xml")))
        env.runtime.loaded = LoadedConfig(config=config, path=tmp_path / "config.toml")
        env.clock.now += 10 * MIN
        assert (await env.poll()).status == "ok"
        sent = server.requests[-1]
        assert sent.path == "/b.xml"
        assert "if-none-match" not in sent.headers and "if-modified-since" not in sent.headers
        env.clock.now += 10 * MIN
        assert (await env.poll()).status == "not_modified", "its own validators are used"
