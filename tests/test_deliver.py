"""Delivery: the real Store and python-telegram-bot against the fake Bot API, in-process."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aggregator.deliver import Deliverer, split_text
from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.conftest import TOKEN
from tests.servers.fake_telegram import FakeTelegram


def _entry(n: int, chat: str, text: str | None = None) -> OutboxEntry:
    body = text or f"<b>alert {n}</b> &amp; more"
    return OutboxEntry(
        id=f"id-{chat}-{n}",
        chat=chat,
        text=body,
        plain=f"alert {n} & more",
        watchlist="w",
        item_key=f"key-{n}",
        feed="f",
        created_at=time.time(),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    with Store.open(tmp_path / "state.json") as opened:
        yield opened


@pytest.fixture
async def sender(telegram: FakeTelegram) -> AsyncIterator[TelegramSender]:
    real = TelegramSender(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
    yield real
    await real.aclose()


def _queue(store: Store, *entries: OutboxEntry) -> None:
    store.commit(alerts=entries)


async def test_delivers_in_order_and_empties_the_outbox(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    _queue(store, *(_entry(n, "@chan_one") for n in range(3)))
    left = await Deliverer(store, sender).drain(10)
    assert left == 0
    assert [m.text for m in telegram.sent_to("@chan_one")] == [
        f"<b>alert {n}</b> &amp; more" for n in range(3)
    ]
    assert store.pending() == []


async def test_retry_after_waits_for_that_chat_only(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.retry_after_next("@slow_chat", 2)
    _queue(store, _entry(1, "@slow_chat"), _entry(2, "@fast_chat"))
    started = time.monotonic()
    deliverer = Deliverer(store, sender)
    assert await deliverer.drain(10) == 0
    slow = telegram.sent_to("@slow_chat")[0].received_at.timestamp()
    fast = telegram.sent_to("@fast_chat")[0].received_at.timestamp()
    assert slow - fast >= 1.9, "the slow chat waited its retry_after"
    assert time.monotonic() - started >= 2.0
    assert deliverer.stats["retry_after"] == 1


async def test_migrated_group_keeps_receiving_at_its_new_id(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.migrate("-1001", -1009999)
    _queue(store, _entry(1, "-1001"), _entry(2, "-1001"))
    assert await Deliverer(store, sender).drain(10) == 0
    assert len(telegram.sent_to("-1009999")) == 2
    assert telegram.sent_to("-1001") == []


async def test_forbidden_chat_is_paused_and_keeps_its_alerts(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.forbid("@blocked_chat")
    _queue(store, _entry(1, "@blocked_chat"), _entry(2, "@open_chat"))
    deliverer = Deliverer(store, sender)
    left = await deliverer.drain(10)
    assert left == 1
    assert "@blocked_chat" in deliverer.paused_chats
    assert [e.chat for e in store.pending()] == ["@blocked_chat"]
    assert len(telegram.sent_to("@open_chat")) == 1


async def test_unparseable_html_is_resent_as_plain_text(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.reject_entities_next(1, chat_id="@chan_two")
    _queue(store, _entry(1, "@chan_two"))
    assert await Deliverer(store, sender).drain(10) == 0
    (message,) = telegram.sent_to("@chan_two")
    assert message.text == "alert 1 & more"
    assert message.parse_mode is None


async def test_outage_is_retried_until_telegram_returns(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.fail_next(3, status=502)
    _queue(store, _entry(1, "@chan_three"))
    deliverer = Deliverer(store, sender)
    assert await deliverer.drain(30) == 0
    assert len(telegram.sent_to("@chan_three")) == 1
    assert deliverer.stats["transient_errors"] >= 1


async def test_private_chats_are_paced_at_one_message_per_second(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    _queue(store, *(_entry(n, "4242") for n in range(3)))
    assert await Deliverer(store, sender).drain(10) == 0
    times = [m.received_at.timestamp() for m in telegram.sent_to("4242")]
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times)), times


def test_split_text_cuts_at_line_or_word_ends() -> None:
    text = ("word " * 2000).strip()
    pieces = split_text(text, limit=1000)
    assert all(len(p) <= 1000 for p in pieces)
    assert " ".join(pieces) == text
