"""SIGKILL the real daemon during a 300-alert burst, restart it: every alert arrives, and the only
duplicates are alerts of the sends in flight at the kill (confirmed by Telegram, not yet
recorded; see ARCHITECTURE.md).

Time is scaled so that the burst takes seconds: the fake enforces 20 messages per 1 s in a
channel (Telegram: per minute) and one per 0.1 s in a private chat (per second), the daemon is
given the same limits (telegram.group_limit, private_limit) and max_delay 5 s, so the burst goes
out as digests, as a real one would under the real limits and the default max_delay.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from aggregator.config import load_config
from aggregator.store import Store
from tests.conftest import TOKEN, queued_alert, write_config
from tests.daemon_process import DaemonProcess
from tests.distinct_feed import REF, distinct_feed
from tests.servers.fake_telegram import FakeTelegram, SentMessage, TelegramLimits
from tests.servers.feed_server import FeedServer

ALERTS = 300
CHATS = ("@burst_chan", "4242")
KILL_AFTER_MESSAGES = 6


def _alerts(messages: list[SentMessage]) -> list[tuple[str, set[int]]]:
    return [(m.chat_id, {int(n) for n in REF.findall(m.plain_text)}) for m in messages]


def test_sigkill_during_a_burst_then_restart_delivers_every_alert(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    limits = TelegramLimits(
        private_messages=1,
        private_window_s=0.1,
        group_messages=20,
        group_window_s=1.0,
        slack_s=0.0,
    )
    with FakeTelegram(token=TOKEN, enforce_limits=True, limits=limits) as telegram:
        feed_server.add("/burst.xml", distinct_feed("burst", "harbour", ALERTS))
        config = write_config(
            tmp_path,
            feeds=[{"name": "burst", "url": feed_server.url_for("/burst.xml")}],
            watchlists=[{"name": "harbour", "any": ["harbour"], "channels": list(CHATS)}],
            telegram={
                "api_url": telegram.api_url,
                "group_limit": "20/1s",
                "private_limit": "1/0.1s",
                "max_delay": "5s",
            },
            token=TOKEN,
        )
        daemon = DaemonProcess(["run", "-c", str(config)])
        try:
            assert telegram.wait_for_messages(KILL_AFTER_MESSAGES, timeout=30), daemon.output()
            daemon.kill()
        finally:
            daemon.close()
        # A send written just before the kill may still be read by the fake: wait until the
        # dead daemon's connections are all closed before splitting the record into runs.
        assert telegram.wait_until(lambda: not telegram._connections, 10)
        first_run = _alerts(telegram.messages)
        with Store.open(tmp_path / "state" / "aggregator.json", readonly=True) as store:
            queued_at_kill = store.pending_count()

        def all_delivered() -> bool:
            got = {(chat, n) for chat, numbers in _alerts(telegram.messages) for n in numbers}
            return len(got) == ALERTS * len(CHATS)

        final = DaemonProcess(["run", "-c", str(config)])
        try:
            assert telegram.wait_until(all_delivered, timeout=30), final.output()
            assert final.terminate() == 0, final.output()
        finally:
            final.close()
        everything = _alerts(telegram.messages)
        stats = telegram.stats

    copies: Counter[tuple[str, int]] = Counter(
        (chat, n) for chat, numbers in everything for n in numbers
    )
    assert set(copies) == {(chat, n) for chat in CHATS for n in range(ALERTS)}
    duplicates = {alert: count - 1 for alert, count in copies.items() if count > 1}
    # The send each chat had under way at the kill: its last one in the first run.
    last_sends: dict[str, set[int]] = defaultdict(set)
    for chat, numbers in first_run:
        last_sends[chat] = numbers
    in_flight = {(chat, n) for chat, numbers in last_sends.items() for n in numbers}
    print(
        f"burst kill: {len(first_run)} messages before the kill, {queued_at_kill} alerts still "
        f"queued; after restart all {ALERTS * len(CHATS)} alerts delivered in "
        f"{len(everything)} messages; {sum(duplicates.values())} duplicate alert(s), "
        f"{len(last_sends)} send(s) in flight at the kill carrying {len(in_flight)} alert(s); "
        f"429s: {stats.retry_after_sent}"
    )
    assert set(duplicates) <= in_flight, "only alerts of the sends in flight were repeated"
    assert all(count == 1 for count in duplicates.values())
    assert stats.retry_after_sent == 0


def test_sigkill_between_the_parts_of_a_split_alert_then_restart_sends_each_part_once(
    tmp_path: Path,
) -> None:
    # An alert too long for one message goes out in 3 parts, each at its own turn under the
    # channel's limit (here 1 message per 2 s), so the daemon spends seconds between them. A
    # kill there must neither lose the parts not yet sent nor repeat the one already out: how
    # far the alert got is in the store after every part.
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]
    limits = TelegramLimits(group_messages=1, group_window_s=2.0, slack_s=0.0)
    with FakeTelegram(token=TOKEN, enforce_limits=True, limits=limits) as telegram:
        config = write_config(
            tmp_path,
            feeds=[{"name": "f", "url": "http://127.0.0.1:9/feed.xml"}],
            watchlists=[{"name": "w", "any": ["x"], "channels": ["@long_chat"]}],
            telegram={"api_url": telegram.api_url, "group_limit": "1/2s"},
            token=TOKEN,
        )
        storage = load_config(config).storage_path
        with Store.open(storage) as store:
            store.commit(alerts=[queued_alert(1, "@long_chat", "\n".join(lines))])

        def part_1_recorded() -> bool:
            # Not killed before that: part 1 would be the one in flight, which may be repeated.
            with Store.open(storage, readonly=True) as store:  # no lock: the daemon has it
                return any(getattr(e, "split", None) for e in store.pending())

        daemon = DaemonProcess(["run", "-c", str(config)])
        try:
            assert telegram.wait_for_messages(1, timeout=30), daemon.output()
            # Polled (the fake hears of no store write), and given up on well before part 2's
            # turn: the kill must land between the parts either way.
            deadline = time.monotonic() + 1.5
            while not part_1_recorded() and time.monotonic() < deadline:
                time.sleep(0.01)
            daemon.kill()  # waiting for part 2's turn
        finally:
            daemon.close()
        assert telegram.wait_until(lambda: not telegram._connections, 10)
        assert len(telegram.messages) == 1, "killed before part 2's turn"

        def shown() -> str:
            return "\n".join(m.plain_text for m in telegram.messages)

        final = DaemonProcess(["run", "-c", str(config)])
        try:
            assert telegram.wait_until(lambda: "line 29 " in shown(), 30), final.output()
            assert final.terminate() == 0, final.output()
        finally:
            final.close()
        with Store.open(storage, readonly=True) as store:
            assert store.pending() == []
        assert all(shown().count(f"line {n} ") == 1 for n in range(30)), "every line, once"
        assert len(telegram.messages) == 3
        # No part against the channel's limit. (A restart takes longer than this window, so that
        # it counts the part already out is tested on the store: recent_sends.)
        assert telegram.stats.retry_after_sent == 0
