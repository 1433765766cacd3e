"""Bot commands through the fake Bot API's getUpdates, as a subscriber and as an admin.

The real python-telegram-bot long-polls the fake; each command is a pushed update and each
answer the message the fake received. A subscription is then shown to work end to end: a feed
poll queues the watchlist's alert for the subscriber's private chat too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.bot import Bot
from aggregator.chats import Chats
from aggregator.config import load_config
from aggregator.daemon import Services, current_status, services
from aggregator.pipeline import FeedOutcome, poll_feed
from aggregator.status import StatusTracker
from aggregator.store import OutboxEntry
from tests.conftest import TOKEN, write_config
from tests.distinct_feed import distinct_feed
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

ADMIN = 9001
USER = 5001
GROUP = -1001234


@dataclass
class Running:
    svc: Services
    bot: Bot
    telegram: FakeTelegram
    tracker: StatusTracker

    async def poll(self) -> FeedOutcome:
        """Poll the feed once and tell the status about it, as the daemon's scheduler does."""
        outcome = await poll_feed(self.svc.runtime, self.svc.runtime.loaded.config.feeds[0])
        self.tracker.record(outcome, time.time())
        return outcome

    async def ask(self, text: str, *, user: int = USER, chat: int | None = None) -> str:
        """Send ``text`` as ``user`` (in their private chat unless ``chat``); the answer."""
        chat_id = user if chat is None else chat
        before = len(self.telegram.sent_to(chat_id))
        self.telegram.push_update(
            text=text,
            chat_id=chat_id,
            user_id=user,
            chat_type="private" if chat is None else "supergroup",
        )
        answered = await asyncio.to_thread(
            self.telegram.wait_for_messages, before + 1, 10, chat_id=chat_id
        )
        assert answered, f"no answer to {text!r}"
        return self.telegram.sent_to(chat_id)[-1].plain_text


@pytest.fixture
async def running(
    tmp_path: Path, telegram: FakeTelegram, feed_server: FeedServer
) -> AsyncIterator[Running]:
    feed_server.add("/wire.xml", distinct_feed("wire", "harbour", 2))
    config = write_config(
        tmp_path,
        feeds=[{"name": "wire", "url": feed_server.url_for("/wire.xml")}],
        watchlists=[
            {"name": "harbour", "any": ["harbour"], "subscribable": True},
            {"name": "internal", "any": ["secret"], "channels": ["@internal_chan"]},
        ],
        # Answers keep the private-chat limit too; scaled from 1/s so the test takes no minutes.
        telegram={"api_url": telegram.api_url, "admins": [ADMIN], "private_limit": "1/0.05s"},
        token=TOKEN,
    )
    async with services(load_config(config), TOKEN) as svc:
        assert svc.deliverer is not None
        tracker = StatusTracker(
            pid=os.getpid(), started_at=time.time(), feed_states=svc.runtime.store.feed_states()
        )
        bot = Bot(
            svc.runtime,
            svc.deliverer,
            svc.sender,  # type: ignore[arg-type]
            # What the daemon passes, less its scheduler's next polls.
            status=lambda: current_status(tracker, svc.runtime.loaded, svc, {}),
            poll_timeout_s=2,
        )
        task = asyncio.create_task(bot.run())
        yield Running(svc, bot, telegram, tracker)
        bot.stop()
        await task
    assert telegram.server_errors == []


async def test_subscriber_commands(running: Running) -> None:
    assert "/subscribe" in await running.ask("/start")
    assert "/list" in await running.ask("/help")
    listed = await running.ask("/list")
    assert "harbour" in listed and "internal" not in listed
    assert "no subscriptions" in await running.ask("/mine")
    assert "is open to subscription" in await running.ask("/subscribe internal")
    assert "Subscribed to harbour" in await running.ask("/subscribe Harbour")
    assert "already subscribed" in await running.ask("/subscribe harbour")
    assert "harbour" in await running.ask("/mine")
    assert Chats(running.svc.runtime.store).subscribers("harbour") == (str(USER),)
    # In a group, subscriptions are refused: they are personal.
    assert "private chat" in await running.ask("/subscribe harbour", chat=GROUP)
    # Admin commands are politely refused.
    for command in ("/status", "/test harbour", "/pause", "/resume"):
        assert "only the bot's admins" in await running.ask(command)
    assert not running.svc.deliverer.all_paused  # type: ignore[union-attr]

    # The subscription works: the watchlist's alert comes to the private chat.
    outcome = await running.poll()
    assert len(outcome.alerts) == 2

    def alerted() -> bool:
        shown = "".join(m.plain_text for m in running.telegram.sent_to(USER))
        return "ref000" in shown and "ref001" in shown

    assert await asyncio.to_thread(running.telegram.wait_until, alerted, 10)

    assert "Unsubscribed from harbour" in await running.ask("/unsubscribe harbour")
    assert "not subscribed" in await running.ask("/unsubscribe harbour")
    assert Chats(running.svc.runtime.store).subscribers("harbour") == ()
    assert "Unknown command" in await running.ask("/frobnicate")


async def test_admin_commands(running: Running) -> None:
    deliverer = running.svc.deliverer
    assert deliverer is not None
    assert "Admin: /status" in await running.ask("/help", user=ADMIN)
    status = await running.ask("/status", user=ADMIN)
    assert "Delivery: running" in status
    assert "Feeds: 0 healthy, 0 failing, 1 not polled yet" in status
    assert "Queue: empty" in status

    tested = await running.ask("/test the harbour was closed", user=ADMIN)
    assert "harbour: MATCHED" in tested and "internal: not matched" in tested

    assert "paused" in await running.ask("/pause", user=ADMIN)
    assert deliverer.all_paused and Chats(running.svc.runtime.store).delivery_paused
    # While paused, alerts wait; /status says so and shows the queue per chat.
    await running.poll()  # no subscriber: nothing queued
    running.svc.runtime.store.commit(alerts=[_alert("@internal_chan")])
    status = await running.ask("/status", user=ADMIN)
    assert "PAUSED" in status and "@internal_chan: 1" in status
    assert "1 healthy" in status and "Last poll:" in status
    assert running.telegram.sent_to("@internal_chan") == []

    assert "resumed" in await running.ask("/resume", user=ADMIN)
    assert not deliverer.all_paused
    assert await asyncio.to_thread(
        running.telegram.wait_for_messages, 1, 10, chat_id="@internal_chan"
    )


async def test_in_a_group_other_bots_commands_and_unknown_ones_get_no_answer(
    running: Running,
) -> None:
    deliverer = running.svc.deliverer
    assert deliverer is not None
    for text in ("/pause@OtherBot", "/frobnicate"):
        running.telegram.push_update(
            text=text, chat_id=GROUP, user_id=ADMIN, chat_type="supergroup"
        )
    # Updates are answered in order: once this one is, the two before it were handled.
    status = await running.ask("/status@fake_test_bot", user=ADMIN, chat=GROUP)
    assert "Delivery: running" in status
    assert not deliverer.all_paused, "another bot's /pause paused nothing here"
    assert len(running.telegram.sent_to(GROUP)) == 1


def _alert(chat: str) -> OutboxEntry:
    return OutboxEntry(
        id=f"held-{chat}",
        chat=chat,
        text="<b>held</b>",
        plain="held",
        watchlist="internal",
        item_key="held",
        feed="wire",
        created_at=time.time(),
    )


async def test_status_still_answers_when_judging_health_fails(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("aggregator.bot.assess", failing)
    status = await running.ask("/status", user=ADMIN)
    assert "Health: unknown (RuntimeError while judging it)" in status
    assert "Delivery: running" in status


async def test_an_answer_whose_markup_is_refused_arrives_as_its_plain_text(
    running: Running,
) -> None:
    running.telegram.reject_entities_next(1, chat_id=ADMIN)
    status = await running.ask("/status", user=ADMIN)
    assert status.startswith("Status\nHealth: healthy: "), status
    assert "<b>" not in status
