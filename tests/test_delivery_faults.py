"""Delivery under faults around it: a store that stops writing, a reload of the limits.

The store stops writing for real: the test process gets a file size limit below the size its
store's files already have (as systemd's LimitFSIZE= or a full disk would), so that every
journal append and snapshot rewrite fails with EFBIG through the real Store and the real
deliverer; lifting the limit ends the fault. tests/test_disk.py does the same to a whole daemon.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aggregator.config import load_config
from aggregator.deliver import Deliverer
from aggregator.metrics import Metrics
from aggregator.pacing import Limits, Rate
from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.conftest import TOKEN, queued_alert, until, write_config
from tests.servers.fake_telegram import FakeTelegram

needs_fsize = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE with EFBIG is Linux behaviour"
)


BALLAST = 2_000_000  # bytes of store, and the file size limit below it
LIMIT = BALLAST // 2


@contextmanager
def _store_unwritable(store: Store) -> Iterator[None]:
    store.set_meta("ballast", "x" * BALLAST)  # the journal, and any snapshot, past LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Beyond the limit, a write fails with EFBIG instead of killing the process.
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _sends(telegram: FakeTelegram) -> Counter[tuple[str, str]]:
    return Counter((str(m.chat_id), m.text) for m in telegram.messages)


@needs_fsize
async def test_sends_waiting_for_room_do_not_go_out_once_the_store_fails(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    chats = [f"@chan_{n}" for n in range(8)]
    store.commit(alerts=[queued_alert(n, chat) for chat in chats for n in range(2)])
    # Two sends a second in all: most chats wait for room at any moment.
    deliverer = Deliverer(store, sender, limits=Limits(overall=Rate(2, 1.0)), max_backoff_s=0.2)
    draining = asyncio.create_task(deliverer.drain(60))
    try:
        assert await until(lambda: len(telegram.messages) >= 2, 10)
        with _store_unwritable(store):
            assert await until(lambda: deliverer.store_error is not None, 10)
            at_fault = len(telegram.messages)
            # Those waiting for room when the store failed must not send: two seconds would
            # let four of them through.
            more = await until(lambda: len(telegram.messages) > at_fault + 2, 2.5)
            assert not more, f"{len(telegram.messages) - at_fault} sends after the store failed"
        assert await draining == 0
    finally:
        await deliverer.aclose()
    expected = {(chat, f"<b>alert {n}</b>") for chat in chats for n in range(2)}
    sends = _sends(telegram)
    assert set(sends) == expected, "nothing lost"
    assert set(sends.values()) == {1}, "nothing sent twice"


@needs_fsize
async def test_a_store_that_cannot_write_at_start_holds_delivery(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    # A disk already full when the daemon starts: sending would go out and not be recorded,
    # then again after each restart. Nothing is sent until the store can write.
    chats = ["@chan_a", "@chan_b"]
    store.commit(alerts=[queued_alert(1, chat) for chat in chats])
    deliverer = Deliverer(store, sender, max_backoff_s=0.2)
    try:
        with _store_unwritable(store):
            deliverer.wake()
            assert await until(lambda: deliverer.store_error is not None, 10)
            assert not await until(lambda: bool(telegram.messages), 1.0)
        assert await deliverer.drain(20) == 0
    finally:
        await deliverer.aclose()
    assert _sends(telegram) == Counter({(chat, "<b>alert 1</b>"): 1 for chat in chats})


async def test_a_reload_changes_the_limits_of_the_gate_in_use(
    tmp_path: Path, store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    def config(group_limit: str) -> Path:
        return write_config(
            tmp_path,
            feeds=[{"name": "f", "url": "http://127.0.0.1:9/feed.xml"}],
            watchlists=[{"name": "w", "any": ["x"], "channels": ["@chan"]}],
            telegram={"api_url": telegram.api_url, "group_limit": group_limit},
            token=TOKEN,
        )

    loaded = load_config(config("2/60s")).config
    deliverer = Deliverer.from_config(store, sender, loaded, paced=True, metrics=Metrics())
    gate = deliverer.gate
    assert gate is not None
    deliverer.apply(load_config(config("3/60s")).config)
    # Sends already waiting hold this gate: a new one would not see them, nor stop them.
    assert deliverer.gate is gate
    assert gate.limits.group == Rate(3, 60.0)
    await deliverer.aclose()


async def _drained_through_slow_answers(
    store: Store, telegram: FakeTelegram, alert: OutboxEntry, within_s: float
) -> Deliverer:
    """Deliver ``alert`` to a Telegram that answers 1.5 s late, past a 1 s send_timeout."""
    telegram.slow_answers(1.5)
    store.commit(alerts=[alert])
    sender = TelegramSender(api_url=telegram.api_url, token=TOKEN, timeout_s=1.0)
    deliverer = Deliverer(store, sender, max_backoff_s=0.2)
    try:
        assert await deliverer.drain(within_s) == 0
    finally:
        await deliverer.aclose()
        await sender.aclose()
    return deliverer


async def test_a_slow_telegram_gets_one_copy_more_not_one_per_timeout(
    store: Store, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # Telegram carries the send out but answers after send_timeout: the answer is lost, and
    # the alert must be sent again (it may not have arrived), but with a longer wait for the
    # answer, so that it is not sent again and again, once per timeout.
    alert = queued_alert(1, "@slow_chan")
    deliverer = await _drained_through_slow_answers(store, telegram, alert, 20)
    assert len(telegram.sent_to("@slow_chan")) == 2, "the first copy, and one retry"
    assert deliverer.stats["maybe_sent"] == 1
    (retry,) = [r for r in caplog.records if r.getMessage() == "send failed, will retry"]
    assert retry.__dict__["fields"]["maybe_sent"] is True


async def test_a_slow_telegram_gets_one_copy_more_of_a_split_alerts_first_part_too(
    store: Store, telegram: FakeTelegram
) -> None:
    # The first part of an alert too long for one message is sent as a whole message is: its
    # retry waits longer for the answer, so that a slow Telegram does not get it once per
    # timeout, and the other parts follow.
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]
    alert = queued_alert(1, "@slow_chan", "\n".join(lines))
    await _drained_through_slow_answers(store, telegram, alert, 40)
    shown = "\n".join(m.plain_text for m in telegram.sent_to("@slow_chan"))
    copies = [shown.count(f"line {n} ") for n in range(30)]
    assert min(copies) >= 1, "every line arrives"
    assert max(copies) <= 2, f"at most one copy more of any part: {copies}"
