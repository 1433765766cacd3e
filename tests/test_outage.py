"""Telegram outage: the real daemon against a Bot API that answers 502s, then hangs, for a while.

Timings are short but the outage is long in backoff steps: with ``[telegram] max_backoff`` at
1 s, every chat keeps failing for OUTAGE_FAILURES attempts (about ten caps, as ten minutes are
with the default 60 s cap), half of them 502 pages and half requests that never get an answer.
New items arrive during the outage. Once the API is back, the first send must come within
two caps, every chat must be going again within a pacing step of it (a chat that gets through
wakes the ones still sleeping off their backoff), and the backlog must drain at the pace
Telegram allows a private chat (one message a second, scaled here to one per half second with
``private_limit``), each alert exactly once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from pathlib import Path

from aggregator.deliver import Deliverer
from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import Outgoing, TelegramSender
from tests.conftest import TOKEN, write_config
from tests.daemon_process import DaemonProcess
from tests.distinct_feed import REF, distinct_feed
from tests.servers.fake_telegram import FakeTelegram, SentMessage
from tests.servers.feed_server import FeedServer

# Private chats: the daemon paces each at one message a second, so "full rate" is well defined.
CHATS = ("1001", "1002", "1003", "1004")
MAX_BACKOFF_S = 1.0
SEND_TIMEOUT_S = 0.5
# Telegram's one message a second per private chat, scaled by half like the other timings.
PRIVATE_INTERVAL_S = 0.5
FIRST_ITEMS = 5
OUTAGE_ITEMS = 3
# Failed attempts per chat: the first half answered 502, the second half left hanging.
OUTAGE_FAILURES = 8


def _feed(count: int) -> bytes:
    return distinct_feed("outage", "harbour", count)


def _sends(telegram: FakeTelegram) -> list[tuple[str, int, float]]:
    """(chat, item number, time Telegram accepted it) of every successful send."""
    sends = []
    for message in telegram.messages:
        found = REF.search(message.text)
        assert message.method == "sendMessage" and found is not None, message.text
        sends.append((message.chat_id, int(found.group(1)), _at(message)))
    return sends


def _at(message: SentMessage) -> float:
    return message.received_at.timestamp()


def test_outage_loses_nothing_and_delivery_resumes_at_full_rate(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/outage.xml", _feed(FIRST_ITEMS))
    config = write_config(
        tmp_path,
        feeds=[{"name": "outage", "url": feed_server.url_for("/outage.xml"), "interval": "10s"}],
        watchlists=[{"name": "harbour", "any": ["harbour"], "channels": list(CHATS)}],
        telegram={
            "api_url": telegram.api_url,
            "send_timeout": f"{SEND_TIMEOUT_S:g}s",
            "max_backoff": f"{MAX_BACKOFF_S:g}s",
            "private_limit": f"1/{PRIVATE_INTERVAL_S:g}s",
        },
        token=TOKEN,
    )
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        # Down in the middle of the first backlog: every chat has alerts left to send.
        assert telegram.wait_for_messages(2 * len(CHATS), timeout=20), daemon.output()
        telegram.set_down(True, mode="502")
        down_at = time.time()
        feed_server.add("/outage.xml", _feed(FIRST_ITEMS + OUTAGE_ITEMS))

        def failures(n: int, timeout: float) -> bool:
            return all(
                daemon.wait_for(rf'send failed, will retry" chat={chat}\b', timeout, count=n)
                for chat in CHATS
            )

        assert failures(OUTAGE_FAILURES // 2, timeout=30), daemon.output()
        telegram.set_down(True, mode="timeout")
        assert failures(OUTAGE_FAILURES, timeout=40), daemon.output()
        # The new items were polled and queued while Telegram was down.
        assert daemon.wait_for(rf'feed polled" feed=outage .*new={OUTAGE_ITEMS}\b', 15), (
            daemon.output()
        )
        sent_before = len(telegram.messages)
        telegram.set_down(False)
        up_at = time.time()
        total = (FIRST_ITEMS + OUTAGE_ITEMS) * len(CHATS)
        assert telegram.wait_for_messages(total, timeout=30), daemon.output()
        assert daemon.terminate() == 0, daemon.output()
    finally:
        daemon.close()

    sends = _sends(telegram)
    counts = Counter((chat, n) for chat, n, _ in sends)
    expected = {(chat, n) for chat in CHATS for n in range(FIRST_ITEMS + OUTAGE_ITEMS)}
    assert set(counts) == expected, "nothing lost"
    assert all(c == 1 for c in counts.values()), f"duplicates: {counts.most_common(3)}"
    assert not any(at >= down_at and at < up_at for *_, at in sends[sent_before:])
    stats = telegram.stats
    assert stats.responses_by_status.get(502, 0) >= len(CHATS) * OUTAGE_FAILURES // 2
    assert stats.dropped >= len(CHATS), "some requests were left hanging"
    assert telegram.server_errors == []

    after = [(chat, n, at) for chat, n, at in sends if at >= up_at]
    first_send_s = min(at for *_, at in after) - up_at
    first_by_chat = {chat: min(at for c, _, at in after if c == chat) - up_at for chat in CHATS}
    drain_s = max(at for *_, at in after) - up_at
    backlog = Counter(chat for chat, _, _ in after)
    gaps = [
        b - a
        for chat in CHATS
        for a, b in itertools.pairwise(sorted(at for c, _, at in after if c == chat))
    ]
    print(
        f"outage {up_at - down_at:.1f} s ({OUTAGE_FAILURES} failures per chat, cap "
        f"{MAX_BACKOFF_S:g} s); {len(after)} alerts after recovery; first send "
        f"{first_send_s:.2f} s after; chats going again after "
        f"{', '.join(f'{s:.2f}' for s in sorted(first_by_chat.values()))} s; drained in "
        f"{drain_s:.1f} s ({len(after) / drain_s:.1f} alerts/s); largest gap in a chat "
        f"{max(gaps):.2f} s"
    )
    # Prompt: one probe at most a cap away, not leftover backoff of many caps.
    assert first_send_s < 2 * MAX_BACKOFF_S, first_send_s
    # Every chat goes again within a pacing step of the first one that got through, since
    # that one wakes the others (without that, each would sleep out its own backoff).
    assert max(first_by_chat.values()) < first_send_s + PRIVATE_INTERVAL_S + 0.75, first_by_chat
    # Full rate: each chat sends its backlog at its pace, with no backoff pause between.
    assert max(gaps) < PRIVATE_INTERVAL_S + 0.6, gaps
    assert drain_s < first_send_s + (max(backlog.values()) - 1) * PRIVATE_INTERVAL_S + 2.0


def _alert(chat: str) -> OutboxEntry:
    return OutboxEntry(
        id=f"alert-{chat}",
        chat=chat,
        text=f"<b>alert for {chat}</b>",
        plain=f"alert for {chat}",
        watchlist="w",
        item_key=f"key-{chat}",
        feed="f",
        created_at=time.time(),
    )


def _answers(telegram: FakeTelegram, chat: str, status: int) -> list[float]:
    return [
        a.received_at.timestamp()
        for a in telegram.attempts
        if a.method == "sendMessage" and a.chat_id == chat and a.status == status
    ]


async def test_a_chat_that_gets_through_wakes_the_others_but_not_one_told_to_wait(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Two chats deep in backoff (about 8 s) resume as soon as a third one gets through after
    the API returns; a chat that got a 429 meanwhile still waits out its retry_after."""
    slow = ("@slow_one", "@slow_two")
    sender = TelegramSender(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
    with Store.open(tmp_path / "state.json") as store:
        deliverer = Deliverer(store, sender, max_backoff_s=30)
        try:
            await sender.send(Outgoing("@warm_up", "connected"))
            down = (*slow, "@fast_one")
            for chat in down:  # per chat, so that the fake's records name the chat
                telegram.set_down(True, chat_id=chat)
            store.commit(alerts=[_alert(chat) for chat in slow])
            deliverer.wake()
            # Four failures each (after 1, 2 and 4 s): each now sleeps 6.4-8 s.
            assert await asyncio.to_thread(
                telegram.wait_until,
                lambda: all(len(_answers(telegram, c, 502)) >= 4 for c in slow),
                20,
            )
            store.commit(alerts=[_alert("@fast_one")])
            deliverer.wake()
            assert await asyncio.to_thread(
                telegram.wait_until, lambda: len(_answers(telegram, "@fast_one", 502)) >= 1, 5
            )
            telegram.retry_after_next("@told_to_wait", 3)
            for chat in down:
                telegram.set_down(False, chat_id=chat)
            up_at = time.time()
            store.commit(alerts=[_alert("@told_to_wait")])
            deliverer.wake()
            assert await asyncio.to_thread(telegram.wait_for_messages, 5, 15)
        finally:
            await deliverer.aclose()
            await sender.aclose()
    sent = {m.chat_id: _at(m) - up_at for m in telegram.messages}
    told_at = _answers(telegram, "@told_to_wait", 429)[0]
    print(f"after recovery: {', '.join(f'{c} {s:.2f} s' for c, s in sent.items())}")
    assert sent["@fast_one"] < 1.5, sent  # its own 1 s backoff
    for chat in slow:  # woken by it, not ~8 s of leftover backoff
        assert sent[chat] < sent["@fast_one"] + 0.5, sent
    assert sent["@told_to_wait"] + up_at >= told_at + 3 - 0.05, "retry_after is obeyed"
