"""The store's disk stops taking writes under the running daemon, then recovers.

The fault is a file size limit set on the running daemon from outside (``prlimit``, as
systemd's LimitFSIZE= or a quota would): every store write (journal append, snapshot rewrite)
fails with EFBIG "File too large", as on a full disk, while the small status file can still be
written so that ``aggregator health`` can say why. Unlike chmod it binds root too, and it needs
no privilege (a process may set the limits of its own user's processes).

While the fault lasts the daemon must stop sending (at most the sends already under way when it
struck, one per chat), say so in its log, report it in ``aggregator health``, and keep retrying;
a poll in the meantime must not lose the new items it saw. Once writes succeed again, every
alert goes out exactly once, also across a restart.
"""

from __future__ import annotations

import resource
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TOKEN, write_config
from tests.daemon_process import DaemonProcess, run_cli
from tests.distinct_feed import REF, distinct_feed
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="prlimit on another process is Linux-only"
)

CHATS = ("2001", "2002", "2003")  # private chats: paced, so a backlog lasts
FIRST_ITEMS = 6
FAULT_ITEMS = 2


def _feed(count: int) -> bytes:
    return distinct_feed("disk", "quay", count)


def _delivered(telegram: FakeTelegram) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for message in telegram.messages:
        found = REF.search(message.text)
        assert message.method == "sendMessage" and found is not None, message.text
        counts[message.chat_id, int(found.group(1))] += 1
    return counts


def _health(config: Path) -> tuple[int, str]:
    result = run_cli(["health", "-c", str(config)])
    return result.returncode, result.stdout + result.stderr


def test_full_disk_holds_delivery_and_loses_nothing(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/disk.xml", _feed(FIRST_ITEMS))
    config = write_config(
        tmp_path,
        feeds=[{"name": "disk", "url": feed_server.url_for("/disk.xml"), "interval": "10s"}],
        watchlists=[{"name": "quay", "any": ["quay"], "channels": list(CHATS)}],
        # Private chats paced at one per half second (Telegram: one a second), so that the
        # backlog lasts through the fault but drains quickly after it.
        telegram={"api_url": telegram.api_url, "max_backoff": "1s", "private_limit": "1/0.5s"},
        token=TOKEN,
    )
    state = tmp_path / "state"
    journal = state / "aggregator.json.journal"
    status = state / "aggregator.json.status.json"
    daemon = DaemonProcess(["run", "-c", str(config)])
    pid = daemon.proc.pid
    try:
        assert telegram.wait_for_messages(len(CHATS), timeout=20), daemon.output()
        # Below what the store writes, above the status file (which health reads).
        limit = max(4096, 2 * status.stat().st_size)
        assert journal.stat().st_size > 2 * limit, "the store must be past the limit already"
        soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, hard))
        sent_at_fault = len(telegram.messages)
        feed_server.add("/disk.xml", _feed(FIRST_ITEMS + FAULT_ITEMS))

        # It says so, keeps retrying, and a poll meanwhile changes nothing.
        assert daemon.wait_for(r"cannot record a sent alert; holding delivery", 15, count=4), (
            daemon.output()
        )
        assert daemon.wait_for(r"cannot save feed state; will retry next poll", 15), daemon.output()
        assert "File too large" in daemon.output()
        code, text = 0, ""
        for _ in range(30):  # the status is rewritten within a second of the failure
            code, text = _health(config)
            if "store not writable" in text:
                break
            assert telegram.wait_until(lambda: False, 0.5) is False  # a bounded poll interval
        assert code == 1 and "store not writable" in text and "File too large" in text, text
        held = len(telegram.messages) - sent_at_fault
        assert held <= len(CHATS), f"{held} sends after the store failed"

        resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        assert daemon.wait_for(r"store writable again; delivery resumes", 15), daemon.output()
        total = (FIRST_ITEMS + FAULT_ITEMS) * len(CHATS)
        assert telegram.wait_for_messages(total, timeout=30), daemon.output()
        for _ in range(30):
            code, text = _health(config)
            if code == 0:
                break
            assert telegram.wait_until(lambda: False, 0.5) is False
        assert code == 0 and text.startswith("healthy"), text
        assert daemon.terminate() == 0, daemon.output()
    finally:
        daemon.close()

    # After a restart: nothing is sent again, and a new item goes out once.
    feed_server.add("/disk.xml", _feed(FIRST_ITEMS + FAULT_ITEMS + 1))
    restarted = DaemonProcess(["run", "-c", str(config)])
    try:
        total = (FIRST_ITEMS + FAULT_ITEMS + 1) * len(CHATS)
        assert telegram.wait_for_messages(total, timeout=20), restarted.output()
        assert restarted.wait_for(r"feed polled", 10), restarted.output()
        assert restarted.terminate() == 0, restarted.output()
    finally:
        restarted.close()
    counts = _delivered(telegram)
    expected = {(c, n) for c in CHATS for n in range(FIRST_ITEMS + FAULT_ITEMS + 1)}
    print(
        f"sends after the store failed: {held} (of {len(CHATS)} chats); delivered "
        f"{sum(counts.values())} for {len(expected)} alerts"
    )
    assert set(counts) == expected, "nothing lost"
    assert all(n == 1 for n in counts.values()), f"duplicates: {counts.most_common(3)}"
