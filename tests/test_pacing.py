"""Pacing and digests against a fake Bot API that enforces Telegram's flood limits.

Time is scaled by 1/20 so that the test takes seconds, not minutes: the fake refuses with 429
more than 20 messages per 3 s in a channel (Telegram: 20/min), more than one per 0.05 s in a
private chat (1/s) and more than 30 per 0.05 s overall (30/s), and max_delay is 6 s (the
default 2 min / 20). The deliverer gets the same scaled limits through the same settings an
operator would use (telegram.group_limit and friends); the logic is the one used at full scale.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator import pacing
from aggregator.compose import compose_alert
from aggregator.deliver import Deliverer
from aggregator.models import Item, WatchlistMatch
from aggregator.pacing import Gate, Limits, Rate, parse_rate
from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.conftest import TOKEN
from tests.servers.fake_telegram import FakeTelegram, TelegramLimits

SCALE = 20
LIMITS = Limits(
    overall=Rate(30, 1.0 / SCALE), group=Rate(20, 60.0 / SCALE), private=Rate(1, 1.0 / SCALE)
)
MAX_DELAY_S = 120.0 / SCALE
CHANNELS = ("@pace_one", "@pace_two", "-1001000000003")
SUBSCRIBERS = tuple(str(5000 + n) for n in range(20))


@pytest.fixture
def limited() -> Iterator[FakeTelegram]:
    fake_limits = TelegramLimits(
        private_messages=1,
        private_window_s=1.0 / SCALE,
        group_messages=20,
        group_window_s=60.0 / SCALE,
        overall_messages=30,
        overall_window_s=1.0 / SCALE,
        slack_s=0.0,  # no leniency: the deliverer must keep the limits exactly
    )
    with FakeTelegram(token=TOKEN, enforce_limits=True, limits=fake_limits) as fake:
        yield fake


@pytest.fixture
async def sender(limited: FakeTelegram) -> AsyncIterator[TelegramSender]:
    real = TelegramSender(api_url=limited.api_url, token=TOKEN, timeout_s=5)
    yield real
    await real.aclose()


def _alert(n: int, chat: str, now: float) -> OutboxEntry:
    """A realistic alert (title, time, a three-sentence summary, matched words, hashtag)."""
    item = Item(
        feed="wire",
        title=f"Harbour story number {n} with a title of ordinary length",
        link=f"https://news.example/story/{n}",
        summary=(
            f"The harbour authority said on Tuesday that shipment {n} was delayed. "
            "Officials expect the backlog at the port to clear by the end of the week. "
            "Traders said prices had already moved on the news."
        ),
        published=datetime(2024, 5, 10, 9, 15, tzinfo=UTC),
    )
    message = compose_alert(item, WatchlistMatch("harbour"), source="Wire")
    return OutboxEntry(
        id=f"{chat}-{n}",
        chat=chat,
        text=message.html,
        plain=message.plain,
        watchlist="harbour",
        item_key=f"story-{n}",
        feed="wire",
        created_at=now,
    )


def _numbers(fake: FakeTelegram, chat: str) -> list[int]:
    """The story numbers each message to ``chat`` carried, in order."""
    found = []
    for message in fake.sent_to(chat):
        found += [int(part.split()[0]) for part in message.plain_text.split("story number ")[1:]]
    return found


def test_rates_parse() -> None:
    assert parse_rate("20/1m") == Rate(20, 60.0)
    assert parse_rate(" 1 / 1s ") == Rate(1, 1.0)
    with pytest.raises(ValueError):
        parse_rate("20 per minute")
    with pytest.raises(ValueError):
        parse_rate("0/1s")


def test_a_new_gate_counts_the_sends_a_previous_process_made(tmp_path: Path) -> None:
    # A restarted daemon must not spend a window that Telegram still counts: the store's sent
    # records (a digest's alerts share one sent_at) seed the gate, plus one possible unrecorded
    # send per chat with alerts waiting.
    now = time.time()
    with Store.open(tmp_path / "s.json") as store:
        for n in range(4):
            store.commit(alerts=[_entry(f"a{n}", "@chan", now)])
        store.mark_sent("a0", message_id=1, sent_at=now - 30)
        store.mark_sent_many(["a1", "a2"], message_id=None, sent_at=now - 10)  # one digest
        store.mark_sent("a3", message_id=2, sent_at=now - 120)  # outside the window
        store.commit(alerts=[_entry("b0", "777", now)])
        assert store.recent_sends(now - 60) == {"@chan": [now - 30, now - 10]}
        gate = Gate(Limits(group=Rate(20, 60.0)))
        gate.seed(store.recent_sends(now - 60), store.chats_with_pending())
    assert gate.room("@chan") == 18
    assert gate.room("777") == 0  # its possible in-flight send, for one second
    assert gate.room("@other") == 20


async def test_300_alerts_to_3_channels_and_20_subscribers_without_a_429(
    store: Store, sender: TelegramSender, limited: FakeTelegram
) -> None:
    now = time.time()
    per_channel, per_subscriber = 60, 6
    alerts = [_alert(n, chat, now) for chat in CHANNELS for n in range(per_channel)]
    alerts += [_alert(n, chat, now) for chat in SUBSCRIBERS for n in range(per_subscriber)]
    assert len(alerts) == 300
    store.commit(alerts=alerts)
    deliverer = Deliverer(store, sender, limits=LIMITS, max_delay_s=MAX_DELAY_S)
    started = time.monotonic()
    assert await deliverer.drain(30) == 0
    elapsed = time.monotonic() - started
    stats = limited.stats
    messages = limited.messages
    print(
        f"300 alerts in {len(messages)} messages ({deliverer.stats['digests']} digests) in "
        f"{elapsed:.1f}s; 429s: {stats.retry_after_sent}"
    )
    assert stats.retry_after_sent == 0, "the deliverer kept every limit"
    assert stats.flood_limited == 0
    for chat in CHANNELS:
        assert _numbers(limited, chat) == list(range(per_channel)), chat
    for chat in SUBSCRIBERS:
        assert _numbers(limited, chat) == list(range(per_subscriber)), chat
    assert deliverer.stats["sent"] == 300
    assert limited.server_errors == []


async def test_burst_of_200_to_one_channel_goes_out_within_max_delay_as_digests(
    store: Store, sender: TelegramSender, limited: FakeTelegram
) -> None:
    chat = "@pace_burst"
    queued_at = time.time()
    store.commit(alerts=[_alert(n, chat, queued_at) for n in range(200)])
    deliverer = Deliverer(store, sender, limits=LIMITS, max_delay_s=MAX_DELAY_S)
    assert await deliverer.drain(30) == 0
    messages = limited.sent_to(chat)
    last_s = max(m.received_at.timestamp() for m in messages) - queued_at
    print(
        f"burst: 200 alerts in {len(messages)} messages, the last {last_s:.2f}s after queueing "
        f"(max_delay {MAX_DELAY_S:g}s); 429s: {limited.stats.retry_after_sent}"
    )
    assert _numbers(limited, chat) == list(range(200)), "every alert once, in order"
    assert last_s <= MAX_DELAY_S
    # Without digests, 200 messages at 20 per 3 s would take 27 s.
    assert len(messages) < 200 * 3 / (60 / SCALE)
    assert all(m.text.startswith("<b>") and m.parse_mode == "HTML" for m in messages)
    assert all(len(m.plain_text) <= 4096 for m in messages)
    assert limited.stats.retry_after_sent == 0


def _entry(entry_id: str, chat: str, now: float) -> OutboxEntry:
    return OutboxEntry(
        id=entry_id,
        chat=chat,
        text=entry_id,
        plain=entry_id,
        watchlist="w",
        item_key=f"k-{entry_id}",
        feed="f",
        created_at=now,
    )


async def test_the_gate_forgets_idle_chats_but_not_one_with_a_recent_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bot that answers thousands of users once must not keep a window for each for ever.
    monkeypatch.setattr(pacing, "_SWEEP_AT", 3)
    gate = Gate(Limits(private=Rate(1, 60.0)))
    async with gate.slot("1001"):
        pass  # a send: its window stays full for a minute
    for chat in ("1002", "1003", "1004", "1005"):
        assert gate.room(chat) == 1
    assert gate.room("1001") == 0, "the recent send still counts"
    assert len(gate._chats) <= 3


async def test_new_limits_reach_sends_already_waiting_and_stop_still_ends_them() -> None:
    # A reload changes the limits while sends wait for room: they must see the new limits at
    # once, and a stop must still end their wait (it used to reach only a new gate's waiters,
    # so that a stop after such a reload waited out a channel's minute).
    gate = Gate(Limits(group=Rate(1, 60.0)))
    async with gate.slot("@chan"):
        pass
    entered: list[str] = []

    async def send(label: str) -> None:
        async with gate.slot("@chan"):
            entered.append(label)

    first = asyncio.create_task(send("first"))
    second = asyncio.create_task(send("second"))
    await asyncio.sleep(0)  # both are waiting for room now
    assert entered == []
    gate.set_limits(Limits(group=Rate(2, 60.0)))  # room for exactly one more
    await asyncio.wait_for(asyncio.wait([first, second], return_when="FIRST_COMPLETED"), 5)
    assert len(entered) == 1, "the earlier send still counts under the new limits"
    gate.close()
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    assert len(entered) == 2


async def test_every_part_of_split_alerts_waits_its_turn_at_the_gate(
    store: Store, sender: TelegramSender, limited: FakeTelegram
) -> None:
    # A split alert's later parts are messages like any other: sent past the gate, a burst of
    # long alerts breaks the private chat's 1/s and the channel's 20/min.
    private, channel = "5100", "@pace_long"
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # three parts each
    now = time.time()
    alerts = [
        dataclasses.replace(_entry(f"{chat}-{n}", chat, now), text="\n".join(lines))
        for chat, count in ((private, 3), (channel, 7))  # 21 parts: one over 20 per window
        for n in range(count)
    ]
    store.commit(alerts=alerts)
    deliverer = Deliverer(store, sender, limits=LIMITS, max_delay_s=MAX_DELAY_S)
    assert await deliverer.drain(30) == 0
    assert limited.stats.retry_after_sent == 0, "no part went past the gate"
    assert len(limited.sent_to(private)) == 3 * 3
    assert len(limited.sent_to(channel)) == 7 * 3
    assert deliverer.stats["pieces_lost"] == 0
