"""/status in Telegram and `aggregator status` agree: one daemon, asked both ways.

The real daemon runs against a local feed server and the fake Bot API; the admin's /status
goes through getUpdates, the CLI reads the status file. Both must give the same counts and the
same health verdict, for a daemon with a failing feed and a healthy one.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path
from typing import Any

from aggregator.status import StatusFileError, read_status, status_path
from tests.conftest import TOKEN, write_config
from tests.daemon_process import DaemonProcess, run_cli
from tests.distinct_feed import distinct_feed
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

ADMIN = 9001


def test_status_in_the_bot_agrees_with_the_cli(
    tmp_path: Path, telegram: FakeTelegram, feed_server: FeedServer
) -> None:
    """/status from the running daemon gives the numbers and the verdict that `aggregator
    status` prints for the same daemon: one feed failing, one healthy, alerts delivered."""
    feed_server.add("/wire.xml", distinct_feed("wire", "harbour", 2))
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "wire", "url": feed_server.url_for("/wire.xml")},
            {"name": "dead", "url": feed_server.url_for("/missing.xml")},  # 404
        ],
        watchlists=[
            {"name": "harbour", "any": ["harbour"], "channels": ["@harbour_alerts"]},
            {"name": "quiet", "any": ["zanzibar"], "channels": ["@harbour_alerts"]},
        ],
        telegram={"api_url": telegram.api_url, "admins": [ADMIN]},
        token=TOKEN,
    )
    path = status_path(tmp_path / "state" / "aggregator.json")
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        assert telegram.wait_for_messages(2, 20, chat_id="@harbour_alerts"), daemon.output()
        # Both polls done and every alert confirmed, in the file the CLI reads.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(StatusFileError):
                written = read_status(path)
                if not written.queue and all(f.last_poll_at for f in written.feeds):
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(daemon.output())
        before = _cli_status(config)
        telegram.push_update(text="/status", chat_id=ADMIN, user_id=ADMIN)
        assert telegram.wait_for_messages(1, 20, chat_id=ADMIN), daemon.output()
        answer = telegram.sent_to(ADMIN)[-1].plain_text
        after = _cli_status(config)
        assert daemon.terminate() == 0, daemon.output()
    finally:
        daemon.close()
    # Nothing changed while the bot answered: the CLI's numbers are the ones to match.
    assert _numbers(before) == _numbers(after)
    cli = after

    assert [(f["name"], f["failures"]) for f in cli["feeds"]] == [("wire", 0), ("dead", 1)]
    health = answer.splitlines()[1]
    assert _without_times(health) == "Health: " + _without_times(cli["health"]["summary"])
    assert health.startswith("Health: healthy: pid "), answer
    ok = sum(1 for f in cli["feeds"] if f["failures"] == 0 and f["last_success_at"])
    failing = sum(1 for f in cli["feeds"] if f["failures"] > 0)
    waiting = len(cli["feeds"]) - ok - failing
    assert f"Feeds: {ok} healthy, {failing} failing, {waiting} not polled yet\n" in answer
    wire, dead = cli["feeds"]
    assert re.search(
        rf"^• wire: ok, .*, {wire['items']} items, {wire['new_24h']} new in 24h$",
        answer,
        re.MULTILINE,
    ), answer
    assert f"• dead: {dead['failures']} failure, " in answer, answer
    assert f"\n  {dead['last_error']}\n" in answer, answer
    for watchlist in cli["watchlists"]:
        assert re.search(
            rf"^• {watchlist['name']}: {watchlist['matches_24h']}\b", answer, re.MULTILINE
        ), answer
    assert cli["watchlists"][0]["matches_24h"] == 2
    assert cli["queue"] == {} and "Queue: empty" in answer


def _cli_status(config: Path) -> dict[str, Any]:
    shown = run_cli(["status", "-c", str(config), "--json"])
    assert shown.returncode == 0, shown.stderr
    data: dict[str, Any] = json.loads(shown.stdout)
    return data


def _numbers(status: dict[str, Any]) -> object:
    """What /status must agree on: counts and verdict, not how long ago things were."""
    return (
        [
            (f["name"], f["failures"], f["items"], f["new_24h"], f["last_error"])
            for f in status["feeds"]
        ],
        [(w["name"], w["matches_24h"]) for w in status["watchlists"]],
        status["queue"],
        status["paused_chats"],
        _without_times(status["health"]["summary"]),
    )


def _without_times(line: str) -> str:
    """The health line with its durations blanked (they tick between two reads)."""
    return re.sub(r"\d+ s ago", "_ s ago", re.sub(r"\bup \w+", "up _", line))
