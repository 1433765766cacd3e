"""Operating the daemon: the status file, ``health``, ``status``, the watchdog, and the token.

The judgement itself (health.assess) is tested on plain values; the commands run for real, as
subprocesses, against a local feed server and the fake Telegram Bot API.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aggregator.compose import Message
from aggregator.config import LoadedConfig, validate_config
from aggregator.health import (
    FAILING,
    FATAL,
    NOT_RUNNING,
    STALE,
    STALLED,
    UNRESPONSIVE,
    assess,
    check,
    pid_alive,
    watchdog_ok,
)
from aggregator.models import Hit, Item, WatchlistMatch
from aggregator.pipeline import Alert, FeedOutcome
from aggregator.status import (
    DaemonStatus,
    FeedStatus,
    StatusFileError,
    StatusTracker,
    WatchlistStatus,
    format_status,
    read_status,
    status_path,
    window_count,
    write_status,
)
from tests.conftest import TOKEN, write_config
from tests.daemon_process import AGGREGATOR, DaemonProcess, clean_env, run_cli
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "own" / "syria-sample.xml"
NOW = 1_800_000_000.0


# -- the judgement, on values ---------------------------------------------------------------


def _status(**changes: object) -> DaemonStatus:
    """A healthy daemon: up 1 h, two feeds polled a minute ago."""
    feeds = [
        FeedStatus(
            name=name,
            url=f"https://news.example/{name}.xml",
            enabled=True,
            interval_s=600.0,
            last_poll_at=NOW - 60,
            last_success_at=NOW - 60,
        )
        for name in ("a", "b")
    ]
    status = DaemonStatus(
        pid=os.getpid(),
        running=True,
        started_at=NOW - 3600,
        updated_at=NOW - 2,
        config="/etc/aggregator/config.toml",
        shortest_interval_s=600.0,
        fetch_timeout_s=60.0,
        stale_after_s=3 * 600.0 + 60.0,
        last_poll_at=NOW - 60,
        last_success_at=NOW - 60,
        feeds=feeds,
    )
    return dataclasses.replace(status, **changes)  # type: ignore[arg-type]


def _kinds(status: DaemonStatus, *, alive: bool = True) -> list[str]:
    return [p.kind for p in assess(status, NOW, process_alive=alive).problems]


def test_a_running_daemon_with_recent_polls_is_healthy() -> None:
    verdict = assess(_status(), NOW)
    assert verdict.healthy, verdict
    assert verdict.line().startswith("healthy: pid ")
    assert "last successful poll 60 s ago" in verdict.line()
    assert "2/2 feeds ok" in verdict.line()
    assert watchdog_ok(verdict)


def test_a_pause_by_an_admin_is_healthy_and_said_in_health_and_status() -> None:
    paused = _status(delivery_paused=True, paused_chats={"4242": "Forbidden: bot was blocked"})
    verdict = assess(paused, NOW)
    assert verdict.healthy, verdict
    assert "1 chats paused" in verdict.line() and "delivery paused by an admin" in verdict.line()
    shown = format_status(paused, verdict.line(), NOW)
    assert "delivery: PAUSED by an admin; alerts are queued until /resume" in shown
    assert "Forbidden: bot was blocked" in shown
    assert "PAUSED" not in format_status(_status(), verdict.line(), NOW)


def test_a_daemon_that_just_started_is_healthy_before_its_first_poll() -> None:
    verdict = assess(
        _status(started_at=NOW - 5, last_poll_at=None, last_success_at=NOW - 86400), NOW
    )
    assert verdict.healthy, verdict
    assert "starting: no poll finished yet" in verdict.summary


def test_a_dead_process_is_not_running() -> None:
    verdict = assess(_status(), NOW, process_alive=False)
    assert not verdict.healthy
    assert verdict.line() == f"unhealthy: not running (pid {os.getpid()} gone)"
    stopped = assess(_status(running=False, stopped_at=NOW - 30), NOW)
    assert stopped.problems[0].message.endswith("stopped 30 s ago)")
    assert _kinds(_status(running=False, fatal="Telegram rejected the bot token")) == [
        NOT_RUNNING,
        FATAL,
    ]


def test_a_status_file_that_stopped_changing_means_unresponsive() -> None:
    verdict = assess(_status(updated_at=NOW - 600), NOW)
    assert [p.kind for p in verdict.problems] == [UNRESPONSIVE]
    assert "last wrote its status 600 s ago" in verdict.line()


def test_an_unresponsive_daemon_on_a_full_disk_is_said_to_be_that(tmp_path: Path) -> None:
    """A full disk stops the status file too, so `aggregator health` sees only a stale one:
    it then says how little space is left (the free space is given, a full disk is not)."""
    storage = tmp_path / "aggregator.json"
    write_status(status_path(storage), _status(updated_at=NOW - 600))
    full, _ = check(storage, NOW, free_bytes=lambda folder: 0)
    assert [p.kind for p in full.problems] == [UNRESPONSIVE]
    assert "(it writes every 10 s); the disk it writes to has 0 bytes free" in full.line()
    roomy, _ = check(storage, NOW, free_bytes=lambda folder: 10**10)
    assert "bytes free" not in roomy.line() and "last wrote its status 600 s ago" in roomy.line()
    # And on the real disk of this test (not full), nothing is added.
    assert "bytes free" not in check(storage, NOW)[0].line()


def test_no_success_for_three_intervals_is_stale_and_says_how_long() -> None:
    status = _status(
        last_success_at=NOW - 2000,
        feeds=[dataclasses.replace(f, last_success_at=NOW - 2000) for f in _status().feeds],
    )
    verdict = assess(status, NOW)
    assert [p.kind for p in verdict.problems] == [STALE]
    assert verdict.line() == (
        "unhealthy: stale: last successful poll 2000 s ago, more than 3 times the shortest "
        "interval (600 s) plus the fetch timeout (60 s)"
    )
    # Not the watchdog's business: restarting does not bring feeds back.
    assert watchdog_ok(verdict)
    assert _kinds(dataclasses.replace(status, last_success_at=NOW - 1800)) == []


def test_polls_that_stopped_finishing_stall_the_daemon_and_stop_the_watchdog() -> None:
    verdict = assess(_status(last_poll_at=NOW - 5000, last_success_at=NOW - 5000), NOW)
    assert [p.kind for p in verdict.problems] == [STALLED]
    assert "no poll finished for 3600 s (limit 1860 s)" in verdict.line()
    assert not watchdog_ok(verdict)


def _scheduled(
    *, interval: float, last_poll: float, next_poll: float, failures: int = 0
) -> DaemonStatus:
    feeds = [
        dataclasses.replace(
            f,
            interval_s=interval,
            last_poll_at=NOW - last_poll,
            last_success_at=NOW - (3600 if failures else last_poll),
            next_poll_at=NOW + next_poll,
            failures=failures,
            last_error="connection refused" if failures else None,
        )
        for f in _status().feeds
    ]
    last_success = NOW - (3600 if failures else last_poll)
    return _status(
        feeds=feeds,
        shortest_interval_s=interval,
        fetch_timeout_s=1.0,
        stale_after_s=3 * interval + 1.0,
        last_poll_at=NOW - last_poll,
        last_success_at=last_success,
        started_at=NOW - 7200,
    )


def test_feeds_backing_off_or_polled_less_often_are_not_stalled() -> None:
    # Polls every 10 s on paper, but the feed is down and backs off: its next poll is 50 s
    # away, 67 s after the last. That is the policy working, and a restart (the watchdog's
    # answer to "stalled") would only lose the backoff.
    verdict = assess(_scheduled(interval=10, last_poll=67, next_poll=50, failures=3), NOW)
    assert [p.kind for p in verdict.problems] == [STALE, FAILING], verdict.line()
    assert watchdog_ok(verdict)
    # A healthy feed whose publisher asks for a poll every 2 minutes (TTL): not even stale.
    assert assess(_scheduled(interval=10, last_poll=55, next_poll=65), NOW).healthy


def test_a_feed_due_long_ago_and_not_polled_is_stalled() -> None:
    verdict = assess(_scheduled(interval=10, last_poll=300, next_poll=-200), NOW)
    assert verdict.problems[0].kind == STALLED
    assert "2 feed(s) due but not polled, the first for 200 s" in verdict.line()
    assert not watchdog_ok(verdict)


def test_every_feed_failing_is_unhealthy_but_one_good_feed_is_enough() -> None:
    a, b = _status().feeds
    failing = [
        dataclasses.replace(a, failures=3, last_error="HTTP 503"),
        dataclasses.replace(b, failures=1, last_error="connection refused"),
    ]
    verdict = assess(_status(feeds=failing), NOW)
    assert [p.kind for p in verdict.problems] == [FAILING]
    assert verdict.line() == (
        "unhealthy: every feed failing (2): a: HTTP 503, b: connection refused"
    )
    assert watchdog_ok(verdict), "a network outage must not make systemd restart in a loop"
    assert _kinds(_status(feeds=[failing[0], b])) == []
    disabled = dataclasses.replace(b, enabled=False)
    assert _kinds(_status(feeds=[failing[0], disabled])) == [FAILING]


def test_a_blocked_delivery_is_fatal() -> None:
    verdict = assess(_status(fatal="Telegram rejected the bot token"), NOW)
    assert verdict.line() == (
        "unhealthy: delivery blocked (fatal): Telegram rejected the bot token"
    )
    assert not watchdog_ok(verdict)


def test_pid_alive_tells_a_live_process_from_a_reaped_one() -> None:
    assert pid_alive(os.getpid())
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not pid_alive(proc.pid)
    assert not pid_alive(0)


# -- the status file ------------------------------------------------------------------------


def test_tracker_counts_matches_and_new_items_over_24_hours_across_restarts(
    tmp_path: Path,
) -> None:
    tracker = StatusTracker(pid=1, started_at=NOW - 90000, feed_states={})
    alert = _alert("syria")
    tracker.record(
        FeedOutcome("a", "ok", items=20, new_items=5, alerts=[alert, alert]), NOW - 86400
    )
    tracker.record(FeedOutcome("a", "ok", items=20, new_items=1, alerts=[alert]), NOW - 60)
    tracker.record(FeedOutcome("b", "error", error="HTTP 500"), NOW - 30)
    path = tmp_path / "s.json"
    write_status(path, _snapshot(tracker))
    again = read_status(path)
    by_name = {f.name: f for f in again.feeds}
    assert by_name["a"].new_24h == 1 and by_name["a"].items == 20
    assert by_name["b"].failures == 1 and by_name["b"].last_error == "HTTP 500"
    assert again.watchlists == [WatchlistStatus("syria", 1, NOW - 60)]
    assert window_count({int(NOW // 3600 * 3600): 4}, NOW + 23 * 3600) == 4
    assert window_count({int(NOW // 3600 * 3600): 4}, NOW + 24 * 3600) == 0

    restarted = StatusTracker(pid=2, started_at=NOW, feed_states={}, previous=again)
    restarted.record(FeedOutcome("a", "not_modified"), NOW)
    snapshot = _snapshot(restarted)
    assert snapshot.watchlists[0].matches_24h == 1, "counts survive a restart"
    assert snapshot.feeds[0].items == 20


def _alert(watchlist: str) -> Alert:
    item = Item(feed="a", title="سوريا")
    hit = Hit(term="سوريا", field="title", start=0, end=5, text="سوريا")
    return Alert(
        item=item,
        key="k",
        match=WatchlistMatch(watchlist=watchlist, hits=(hit,)),
        channels=("@syria_alerts",),
        message=Message(html="سوريا", plain="سوريا", disable_preview=True),
        source="a",
    )


def _snapshot(tracker: StatusTracker) -> DaemonStatus:
    config, _ = validate_config(
        {
            "feeds": [
                {"name": "a", "url": "https://news.example/a.xml"},
                {"name": "b", "url": "https://news.example/b.xml"},
            ],
            "watchlists": [{"name": "syria", "any": ["سوريا"], "channels": ["@syria_alerts"]}],
        }
    )
    return tracker.snapshot(
        LoadedConfig(config=config, path=Path("/etc/aggregator/config.toml")),
        now=NOW,
        stale_after_s=1860.0,
        next_polls={},
        queue={},
        paused_chats={},
        fatal=None,
        delivery={},
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "is not JSON"),
        (b'{"version": 99}', "has version 99, expected 1"),
        (b'{"version": 1, "pid": "x"}', "is damaged: pid"),
    ],
)
def test_a_bad_status_file_is_named_with_its_problem(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "aggregator.json.status.json"
    path.write_bytes(content)
    with pytest.raises(StatusFileError, match=re.escape(problem)):
        read_status(path)


# -- the commands against a real daemon ------------------------------------------------------


def _wait_status(
    path: Path, predicate: Callable[[DaemonStatus], bool], timeout: float = 20
) -> DaemonStatus:
    """Poll the status file until the predicate holds, with a deadline."""
    deadline = time.monotonic() + timeout
    last: DaemonStatus | str = "no status file yet"
    while time.monotonic() < deadline:
        try:
            last = read_status(path)
        except StatusFileError as exc:
            last = str(exc)
        else:
            if predicate(last):
                return last
        time.sleep(0.05)
    raise AssertionError(f"status never matched; last: {last}")


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's notify socket (abstract namespace)."""
    name = f"@aggregator-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(10)
    with sock:
        yield sock, name


def test_health_and_status_of_a_running_then_stopped_daemon(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "sample", "url": feed_server.url_for("/sample.xml")},
            {"name": "paused-feed", "url": feed_server.url_for("/x.xml"), "enabled": False},
        ],
        watchlists=[
            {"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]},
            {"name": "gold", "any": ["الذهب"], "channels": ["@gold_alerts"]},
            {"name": "quiet", "any": ["Zanzibar"], "channels": ["@quiet_alerts"]},
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    path = status_path(tmp_path / "state" / "aggregator.json")
    missing = run_cli(["health", "-c", str(config)])
    assert missing.returncode == 1
    assert missing.stdout.startswith(f"unhealthy: not running: no status file at {path}")
    assert run_cli(["status", "-c", str(config)]).returncode == 1

    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        assert telegram.wait_for_messages(2, timeout=30), daemon.output()
        _wait_status(path, lambda s: s.last_success_at is not None and not s.queue)
        health = run_cli(["health", "-c", str(config)])
        assert health.returncode == 0, health.stdout + health.stderr
        assert health.stdout.startswith(f"healthy: pid {daemon.proc.pid}, up ")
        assert "1/1 feeds ok, 0 alerts queued" in health.stdout

        table = run_cli(["status", "-c", str(config)])
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        assert lines[0].startswith(f"aggregator: running, pid {daemon.proc.pid}")
        assert lines[2].startswith("health: healthy: ")
        row = next(line for line in lines if line.startswith("sample "))
        assert re.search(r"sample\s+\d+s ago\s+in \d+m\d\ds\s+0\s+2\s+2\s*$", row), row
        assert re.search(r"^paused-feed\s+never\s+disabled\s", table.stdout, re.MULTILINE)
        assert re.search(r"^syria\s+1\s+\d+s ago$", table.stdout, re.MULTILINE)
        assert re.search(r"^quiet\s+0\s+never$", table.stdout, re.MULTILINE)
        assert "queue: empty" in table.stdout

        as_json = json.loads(run_cli(["status", "-c", str(config), "--json"]).stdout)
        assert as_json["running"] is True and as_json["pid"] == daemon.proc.pid
        assert [(f["name"], f["failures"], f["items"]) for f in as_json["feeds"]] == [
            ("sample", 0, 2),
            ("paused-feed", 0, None),
        ]
        matches = {w["name"]: w["matches_24h"] for w in as_json["watchlists"]}
        assert matches == {"syria": 1, "gold": 1, "quiet": 0}
        assert as_json["queue"] == {}
        assert as_json["health"]["healthy"] is True
        assert "counts" not in as_json

        assert daemon.terminate() == 0
    finally:
        daemon.close()
    stopped = run_cli(["health", "-c", str(config)])
    assert stopped.returncode == 1
    assert re.match(
        rf"unhealthy: not running \(pid {daemon.proc.pid} stopped \d+ s ago\)$",
        stopped.stdout.strip(),
    ), stopped.stdout
    after = run_cli(["status", "-c", str(config)])
    assert after.returncode == 0
    assert after.stdout.startswith("aggregator: stopped ")


def test_every_feed_failing_makes_health_fail_while_the_watchdog_keeps_pinging(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}/feed.xml"
    config = write_config(
        tmp_path,
        feeds=[{"name": "dead", "url": dead_url}],
        watchlists=[{"name": "syria", "any": ["سوريا"], "channels": ["@syria_alerts"]}],
    )
    sock, name = notify_socket
    env = clean_env(NOTIFY_SOCKET=name, WATCHDOG_USEC="1000000")
    daemon = DaemonProcess(["run", "-c", str(config)], env=env)
    try:
        assert sock.recv(4096).decode().startswith("READY=1")
        _wait_status(
            status_path(tmp_path / "state" / "aggregator.json"),
            lambda s: s.feeds[0].failures > 0,
        )
        health = run_cli(["health", "-c", str(config)])
        assert health.returncode == 1
        assert (
            health.stdout.strip() == "unhealthy: every feed failing (1): dead: connection refused"
        )
        # Pings go on (a restart would not bring the feed back), and systemctl status says why.
        received = [sock.recv(4096).decode() for _ in range(6)]
        assert received.count("WATCHDOG=1") >= 3, received
        assert "STATUS=unhealthy: every feed failing (1): dead: connection refused" in received, (
            received
        )
        assert daemon.terminate() == 0
    finally:
        daemon.close()


def test_systemd_hears_ready_reloading_and_stopping(
    tmp_path: Path, feed_server: FeedServer, notify_socket: tuple[socket.socket, str]
) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    config = write_config(
        tmp_path,
        feeds=[{"name": "sample", "url": feed_server.url_for("/sample.xml")}],
        watchlists=[{"name": "syria", "any": ["سوريا"], "channels": ["@syria_alerts"]}],
    )
    sock, name = notify_socket
    daemon = DaemonProcess(["run", "-c", str(config)], env=clean_env(NOTIFY_SOCKET=name))

    def until(prefix: str) -> list[str]:
        received = []
        while not received or not received[-1].startswith(prefix):
            received.append(sock.recv(4096).decode())  # the socket's 10 s timeout bounds it
        return received

    try:
        assert until("READY=1")[-1].startswith("READY=1")
        before_us = time.monotonic_ns() // 1000
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = until("RELOADING=1")[-1].split("\n")
        # systemd (Type=notify-reload and newer) needs the time the reload began.
        stamp = next(f for f in reloading if f.startswith("MONOTONIC_USEC="))
        assert before_us <= int(stamp.split("=", 1)[1]) <= time.monotonic_ns() // 1000
        assert any(m.startswith("READY=1") for m in until("READY=1"))  # reload done
        daemon.proc.send_signal(signal.SIGTERM)
        assert until("STOPPING=1")[-1].startswith("STOPPING=1")
        assert daemon.proc.wait(10) == 0
    finally:
        daemon.close()


# -- the token is never written anywhere ------------------------------------------------------

SECRET = TOKEN.split(":", 1)[1]
WRONG_TOKEN = "654321:WRONG-token-zyxwvutsrqponmlkjihgfedcba"


def test_the_bot_token_never_appears_in_any_output(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    fakes: list[FakeTelegram] = []

    def scenario(name: str, fault: Callable[[FakeTelegram], None] | None) -> tuple[Path, str]:
        fake = FakeTelegram(token=TOKEN).start()
        fakes.append(fake)
        if fault is not None:
            fault(fake)
        folder = tmp_path / name
        folder.mkdir()
        token = WRONG_TOKEN if name == "unauthorized" else TOKEN
        config = write_config(
            folder,
            feeds=[{"name": "sample", "url": feed_server.url_for("/sample.xml")}],
            watchlists=[{"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]}],
            telegram={
                "api_url": nowhere if name == "network-error" else fake.api_url,
                "send_timeout": "1s",
            },
            token=token,
        )
        return config, token

    scenarios = {
        "down-502": lambda f: f.set_down(True),
        "down-timeout": lambda f: f.set_down(True, mode="timeout"),
        "down-reset": lambda f: f.set_down(True, mode="reset"),
        "unauthorized": None,
        "forbidden": lambda f: f.forbid("@syria_alerts"),
        "network-error": None,
        "flood": lambda f: f.retry_after_next(None, 1, n=1),
    }
    try:
        procs = {}
        for name, fault in scenarios.items():
            config, token = scenario(name, fault)
            args = ["once", "-c", str(config), "--timeout", "2", "--log-level", "DEBUG"]
            procs[name] = (
                subprocess.Popen(
                    [AGGREGATOR, *args],
                    env=clean_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
                token,
            )
        daemon_config, _ = scenario("daemon-json", lambda f: f.set_down(True))
        daemon = DaemonProcess(
            ["run", "-c", str(daemon_config), "--log-level", "DEBUG", "--log-format", "json"]
        )
        try:
            assert daemon.wait_for("send failed, will retry", timeout=20), daemon.output()
            daemon.terminate()
        finally:
            daemon.close()
        outputs = {"daemon-json": (daemon.output(), TOKEN)}
        for name, (proc, token) in procs.items():
            out, err = proc.communicate(timeout=30)
            outputs[name] = (out + err, token)
    finally:
        for fake in fakes:
            fake.stop()
    expected_failure = {
        "down-502": "send failed, will retry",
        "down-timeout": "send failed, will retry",
        "down-reset": "send failed, will retry",
        "unauthorized": "Telegram rejected the bot token",
        "forbidden": "cannot post to chat",
        "network-error": "send failed, will retry",
        "flood": "Telegram asked to wait",
        "daemon-json": "send failed, will retry",
    }
    # The token-bearing URL did reach the logs (PTB logs it at DEBUG), redacted: so a broken
    # redaction would show up here.
    assert any("bot<redacted>" in output for output, _ in outputs.values())
    for name, (output, token) in outputs.items():
        assert expected_failure[name] in output, f"{name}: the failure did not happen:\n{output}"
        assert "DEBUG" in output or '"level": "DEBUG"' in output, f"{name}: no debug logging"
        secret = token.split(":", 1)[1]
        assert secret not in output, f"{name}: the token leaked:\n{output}"
        assert secret[:12] not in output, f"{name}: part of the token leaked"


def test_run_exits_3_when_telegram_rejects_the_token(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # The README: 3 "could not start ... or Telegram rejected the token"; 2 is a bad config,
    # which this is not (monitoring tells them apart).
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    config = write_config(
        tmp_path,
        feeds=[{"name": "sample", "url": feed_server.url_for("/sample.xml")}],
        watchlists=[{"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]}],
        telegram={"api_url": telegram.api_url},
        token=WRONG_TOKEN,
    )
    result = run_cli(["run", "-c", str(config)], timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Telegram rejected the bot token" in result.stdout + result.stderr
