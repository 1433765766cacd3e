"""/status as a phone shows it: the daemon's status document, escaped, within one message."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aggregator.health import assess
from aggregator.status import DaemonStatus, FeedStatus, WatchlistStatus
from aggregator.status_message import MESSAGE_MAX, status_message
from tests.servers.fake_telegram import parse_telegram_html, utf16_length

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC).timestamp()


def _feed(name: str, **fields: object) -> FeedStatus:
    defaults = {
        "enabled": True,
        "last_poll_at": NOW - 60,
        "last_success_at": NOW - 60,
        "next_poll_at": NOW + 540,
    }
    return FeedStatus(
        name=name,
        url=f"https://news.example/{name}.xml",
        interval_s=600.0,
        **{**defaults, **fields},  # type: ignore[arg-type]
    )


def _status(
    feeds: list[FeedStatus],
    watchlists: list[WatchlistStatus] | None = None,
    **fields: object,
) -> DaemonStatus:
    return DaemonStatus(
        pid=4242,
        running=True,
        started_at=NOW - 3600,
        updated_at=NOW,
        config="/etc/aggregator/config.toml",
        shortest_interval_s=600.0,
        fetch_timeout_s=60.0,
        stale_after_s=1860.0,
        last_poll_at=NOW - 60,
        last_success_at=NOW - 60,
        feeds=feeds,
        watchlists=watchlists or [],
        **fields,  # type: ignore[arg-type]
    )


def _shown(status: DaemonStatus) -> str:
    """The message as the phone shows it (the HTML checked as Telegram checks it)."""
    message = status_message(status, assess(status, NOW, process_alive=True).line(), NOW, UTC)
    assert utf16_length(message) <= MESSAGE_MAX
    return parse_telegram_html(message)


def test_a_failing_and_a_healthy_feed_with_their_counts() -> None:
    status = _status(
        [
            _feed("wire", items=20, new_24h=7),
            _feed("dead", failures=3, last_error="HTTP 503", last_success_at=NOW - 7200),
            _feed("fresh", last_poll_at=None, last_success_at=None, next_poll_at=NOW + 3),
            _feed("old", enabled=False, last_poll_at=None, last_success_at=None),
        ],
        [
            WatchlistStatus("quiet"),
            WatchlistStatus("harbour", matches_24h=5, last_match_at=NOW - 300),
        ],
        queue={"@harbour_alerts": 2},
        paused_chats={"@gone": "Forbidden: bot was kicked"},
    )
    assert _shown(status) == "\n".join(
        [
            "Status",
            "Health: healthy: pid 4242, up 60m, last successful poll 60 s ago, 1/3 feeds ok,"
            " 2 alerts queued, 1 chats paused",
            "Daemon: running, pid 4242, up 60m",
            "Delivery: running",
            "Feeds: 1 healthy, 1 failing, 1 not polled yet, 1 disabled",
            "Last poll: 2024-05-10 11:59:00 (60s ago)",
            "",
            "Feeds",
            "• dead: 3 failures, polled 60s ago, next in 9m00s, 0 new in 24h",
            "  HTTP 503",
            "• fresh: not polled yet, next in 3s, 0 new in 24h",
            "• wire: ok, polled 60s ago, next in 9m00s, 20 items, 7 new in 24h",
            "• old: disabled",
            "",
            "Watchlists, matches in 24h",
            "• harbour: 5, last 5m00s ago",
            "• quiet: 0",
            "",
            "Queue: 2 alerts waiting",
            "• @gone: 0 (paused: Forbidden: bot was kicked)",
            "• @harbour_alerts: 2",
        ]
    )


def test_an_unhealthy_daemon_says_why_as_health_does() -> None:
    status = _status(
        [_feed("dead", failures=1, last_error="connection refused")],
        fatal="Telegram rejected the bot token",
        store_error="No space left on device",
        store_error_since=NOW - 30,
        delivery_paused=True,
    )
    shown = _shown(status)
    verdict = assess(status, NOW, process_alive=True)
    assert not verdict.healthy
    assert f"Health: {verdict.line()}" in shown
    assert "Delivery: PAUSED (/resume)" in shown
    assert "Delivery blocked: Telegram rejected the bot token" in shown
    assert "Store not writable (delivery held): No space left on device" in shown
    assert "Queue: empty" in shown


def test_names_and_errors_are_escaped() -> None:
    status = _status(
        [_feed("a<b>&c", failures=1, last_error="<html> & </body>")],
        [WatchlistStatus("x&y</b>", matches_24h=1, last_match_at=NOW)],
        queue={"<chat>": 1},
        paused_chats={"<chat>": "can't & <won't>"},
    )
    shown = _shown(status)  # raises on markup Telegram would refuse
    assert "• a<b>&c: 1 failure, " in shown
    assert "  <html> & </body>" in shown
    assert "• x&y</b>: 1" in shown
    assert "• <chat>: 1 (paused: can't & <won't>)" in shown


def test_long_lists_are_cut_with_how_many_more_and_every_section_keeps_room() -> None:
    error = "HTTP 503 Service Unavailable — " + "😀" * 200  # two UTF-16 units each
    feeds = [_feed(f"feed-{n:04d}", failures=2, last_error=error) for n in range(1000)]
    watchlists = [WatchlistStatus(f"list-{n:03d}", matches_24h=n) for n in range(300)]
    queue = {f"chat-{n:03d}": n + 1 for n in range(400)}
    status = _status(feeds, watchlists, queue=queue, fatal="x" * 5000, store_error="y" * 5000)
    shown = _shown(status)
    assert utf16_length(shown) <= 4096
    for what, total in (("feed-", 1000), ("list-", 300), ("chat-", 400)):
        listed = len(re.findall(rf"^• {what}", shown, re.MULTILINE))
        assert 3 <= listed < total, (what, listed)
    more = [int(n) for n in re.findall(r"^… and (\d+) more$", shown, re.MULTILINE)]
    listed = [len(re.findall(rf"^• {w}", shown, re.MULTILINE)) for w in ("feed-", "list-", "chat-")]
    assert [s + m for s, m in zip(listed, more, strict=True)] == [1000, 300, 400]
    # The busiest watchlists and the longest queues are the ones shown.
    assert "• list-299: 299" in shown and "• chat-399: 400" in shown


def test_a_short_list_is_never_cut() -> None:
    status = _status([_feed(f"feed-{n}") for n in range(20)], queue={"@c": 1})
    shown = _shown(status)
    assert "more" not in shown
    assert len(re.findall(r"^• feed-", shown, re.MULTILINE)) == 20
