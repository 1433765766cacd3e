"""A chat taken out of the config: what is queued for it is dropped, and nothing more is sent.

Admins remove a channel (or a watchlist, or an admin) from the TOML file and reload, or edit it
while the daemon is stopped. The alerts and edits still queued for that chat are dropped from
the store at once, with one log line per chat saying how many and why, instead of being sent
to a chat the admins took out (or, if the bot was removed from it too, retried and reported
for paused_keep).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from aggregator.chats import Chats
from aggregator.config import Config, LoadedConfig, load_config
from aggregator.daemon import Daemon
from aggregator.deliver import Deliverer
from aggregator.metrics import Metrics
from aggregator.pacing import Limits, Rate
from aggregator.pipeline import Runtime
from aggregator.store import EditEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.conftest import TOKEN, queued_alert, until, write_config
from tests.servers.fake_telegram import FakeTelegram
from tests.test_delivery_faults import _store_unwritable as store_unwritable
from tests.test_delivery_faults import needs_fsize

DROPPED = "chat is no longer in the config (nor subscribed); dropping what was queued for it"


def _config(
    folder: Path, telegram: FakeTelegram, channels: Sequence[str], paused_retry: str = "1s"
) -> Path:
    return write_config(
        folder,
        feeds=[{"name": "f", "url": "http://127.0.0.1:9/feed.xml"}],
        watchlists=[
            {"name": "w", "any": ["x"], "channels": list(channels)},
            {"name": "open", "any": ["y"], "subscribable": True},
        ],
        telegram={"api_url": telegram.api_url, "admins": [777], "paused_retry": paused_retry},
        token=TOKEN,
    )


def _load(path: Path) -> Config:
    return load_config(path).config


def _dropped(caplog: pytest.LogCaptureFixture) -> dict[str, int]:
    return {
        r.__dict__["fields"]["chat"]: r.__dict__["fields"]["dropped"]
        for r in caplog.records
        if r.getMessage() == DROPPED
    }


async def test_a_chat_removed_while_stopped_is_dropped_at_start_and_sent_nothing(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    chats = Chats(store)
    chats.record_move("-1002", "-1009")  # the config still names the old id
    chats.subscribe("5001", "open")
    chats.subscribe("5002", "gone_watchlist")
    kept = ("@kept", "-1009", "5001", "777")  # a channel, a moved group, a subscriber, an admin
    removed = ("@removed", "5002", "778")  # a channel, a watchlist's subscriber, an ex-admin
    store.commit(alerts=[queued_alert(n, chat) for chat in kept + removed for n in (1, 2)])
    store.commit(alerts=[queued_alert(9, "@removed")])
    store.mark_sent("id-@removed-9", message_id=5, sent_at=time.time())
    store.commit(edits=[EditEntry("id-@removed-9", "@removed", "<b>new</b>", "new", True, 1.0)])

    config = _load(_config(tmp_path, telegram, ["@kept", "-1002"]))
    deliverer = Deliverer.from_config(store, sender, config, paced=True, metrics=Metrics())
    assert {e.chat for e in store.pending()} == set(kept), "dropped at start, before any send"
    assert store.pending_edits() == []
    assert _dropped(caplog) == {"@removed": 3, "5002": 2, "778": 2}  # alerts and edits
    assert await deliverer.drain(10) == 0
    assert all(telegram.sent_to(chat) for chat in kept)
    assert not any(a.chat_id in removed for a in telegram.attempts)
    assert deliverer.stats["dropped_unconfigured"] == 7


async def test_a_split_alert_half_out_when_its_chat_is_removed_keeps_its_message_id(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its first part is in the chat: only the rest is dropped, the alert is not counted as
    # dropped, and its record names that part's message (for edits).
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # three parts
    store.commit(
        alerts=[queued_alert(1, "@removed", "\n".join(lines)), queued_alert(2, "@removed")]
    )
    deliverer = Deliverer(store, sender, limits=Limits(group=Rate(1, 60.0)))
    deliverer.wake()
    assert await until(lambda: any(e.split is not None for e in store.pending()), 5)
    await asyncio.wait_for(deliverer.aclose(), 5)
    (first,) = telegram.sent_to("@removed")

    config = _load(_config(tmp_path, telegram, ["@kept"]))
    deliverer = Deliverer.from_config(store, sender, config, paced=True, metrics=Metrics())
    await deliverer.aclose()
    assert store.pending() == []
    record = store.sent_record("id-@removed-1")
    assert record is not None and record.message_id == first.message_id
    assert deliverer.stats["dropped_unconfigured"] == 1, "alert 2; alert 1 arrived in part"
    assert deliverer.stats["pieces_lost"] == 2
    assert _dropped(caplog) == {"@removed": 1}
    (rest,) = [r for r in caplog.records if r.getMessage().startswith("giving up on the rest")]
    assert rest.__dict__["fields"]["alert"] == "id-@removed-1"
    assert (rest.__dict__["fields"]["delivered"], rest.__dict__["fields"]["given_up"]) == (1, 2)
    assert len(telegram.sent_to("@removed")) == 1


async def test_the_drop_is_per_chat_a_subscriber_still_subscribed_elsewhere_keeps_its_queue(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As the README says: a watchlist closed to subscription drops nothing for a subscriber
    # still subscribed to another open one (an alert names only the first watchlist that
    # matched it, so it cannot tell whether the open one would send it too).
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    chats = Chats(store)
    for chat, watchlist in (("5001", "closed"), ("5001", "open"), ("5002", "closed")):
        chats.subscribe(chat, watchlist)
    store.commit(
        alerts=[
            dataclasses.replace(queued_alert(1, chat), watchlist="closed")
            for chat in ("5001", "5002")
        ]
    )
    config = write_config(
        tmp_path,
        feeds=[{"name": "f", "url": "http://127.0.0.1:9/feed.xml"}],
        watchlists=[
            {"name": "closed", "any": ["x"], "subscribable": False},
            {"name": "open", "any": ["y"], "subscribable": True},
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    deliverer = Deliverer.from_config(store, sender, _load(config), paced=True, metrics=Metrics())
    assert _dropped(caplog) == {"5002": 1}
    assert await deliverer.drain(10) == 0
    assert [m.text for m in telegram.sent_to("5001")] == ["<b>alert 1</b>"]
    assert telegram.sent_to("5002") == []


async def test_a_reload_drops_a_removed_chats_queue_and_nothing_reaches_it_after(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The usual case: the bot was kicked from the channel and the admins take it out of the
    # config. Its alerts must not wait for paused_keep (a week), retried every paused_retry.
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    telegram.forbid("@removed", "Forbidden: bot was kicked from the channel chat")
    config = _config(tmp_path, telegram, ["@kept", "@removed"])
    deliverer = Deliverer.from_config(store, sender, _load(config), paced=True, metrics=Metrics())
    try:
        store.commit(
            alerts=[queued_alert(n, chat) for chat in ("@kept", "@removed") for n in (1, 2)]
        )
        deliverer.wake()
        assert await until(lambda: "@removed" in deliverer.paused_chats, 5)
        assert await until(lambda: len(telegram.sent_to("@kept")) == 2, 5)

        deliverer.apply(_load(_config(tmp_path, telegram, ["@kept"])))
        deliverer.wake()  # as the daemon does once the reload took effect
        assert store.pending() == []
        assert _dropped(caplog) == {"@removed": 2}
        assert "@removed" not in deliverer.paused_chats, "not reported as paused any more"
        # A poll that began before the reload still routes by the old config.
        store.commit(alerts=[queued_alert(3, "@removed"), queued_alert(3, "@kept")])
        deliverer.wake()
        assert await until(lambda: len(telegram.sent_to("@kept")) == 3, 5)
        assert store.pending() == []
        tries = sum(a.chat_id == "@removed" for a in telegram.attempts)
        # Past paused_retry (1s): the paused chat's retry would have come by now.
        assert not await until(
            lambda: sum(a.chat_id == "@removed" for a in telegram.attempts) > tries, 1.5
        )
    finally:
        await deliverer.aclose()
    lines = [r.__dict__["fields"]["dropped"] for r in caplog.records if r.getMessage() == DROPPED]
    assert lines == [2, 1], "one line at the reload, one for the late alert"


def _two_chats_queued(tmp_path: Path, telegram: FakeTelegram) -> LoadedConfig:
    """A config sending to @kept and @removed (which refuses the bot), two alerts each queued."""
    telegram.forbid("@removed", "Forbidden: bot was kicked from the channel chat")
    loaded = load_config(_config(tmp_path, telegram, ["@kept", "@removed"]))
    with Store.open(loaded.storage_path) as store:
        store.commit(
            alerts=[queued_alert(n, chat) for chat in ("@kept", "@removed") for n in (1, 2)]
        )
    return loaded


async def _reload_without_removed(
    daemon: Daemon, tmp_path: Path, telegram: FakeTelegram, done: Callable[[], bool]
) -> None:
    """Run the daemon; once @kept has its alerts, remove @removed from the config, SIGHUP, and
    stop once ``done`` holds."""
    run = asyncio.create_task(daemon.run())
    try:
        assert await asyncio.to_thread(telegram.wait_for_messages, 2, 10, chat_id="@kept")
        _config(tmp_path, telegram, ["@kept"])
        os.kill(os.getpid(), signal.SIGHUP)
        assert await until(done, 10)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(run, 10) == 0


async def test_sighup_after_a_channel_is_removed_drops_its_queue_in_the_running_daemon(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aggregator")
    loaded = _two_chats_queued(tmp_path, telegram)
    daemon = Daemon(loaded, TOKEN)
    await _reload_without_removed(
        daemon, tmp_path, telegram, lambda: "@removed" in _dropped(caplog)
    )
    assert _dropped(caplog) == {"@removed": 2}
    with Store.open(loaded.storage_path) as store:
        assert store.pending() == []


async def test_a_reload_rolled_back_after_a_failure_drops_nothing(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # A reload that fails part way (a bug: a bad config is refused before anything changes)
    # goes back to the old config whole. The old config still sends to @removed, so its
    # queue must still be there: a drop made before the failure could not be undone.
    class SchedulingFails(Daemon):
        fail_next_reload = False

        def _sync_feed_jobs(
            self, scheduler: AsyncIOScheduler, runtime: Runtime, previous: LoadedConfig | None
        ) -> tuple[list[str], list[str], list[str]]:
            if previous is not None and self.fail_next_reload:
                self.fail_next_reload = False  # the rollback's own call goes through
                raise RuntimeError("scheduling the feeds failed")
            return super()._sync_feed_jobs(scheduler, runtime, previous)

    caplog.set_level(logging.INFO, logger="aggregator")
    loaded = _two_chats_queued(tmp_path, telegram)
    daemon = SchedulingFails(loaded, TOKEN)
    daemon.fail_next_reload = True  # the start is no reload: it is the SIGHUP that fails
    rolled_back = "config reload failed; going back to the old one"
    await _reload_without_removed(
        daemon,
        tmp_path,
        telegram,
        lambda: any(r.getMessage() == rolled_back for r in caplog.records),
    )
    assert _dropped(caplog) == {}
    with Store.open(loaded.storage_path) as store:
        assert [e.id for e in store.pending("@removed")] == ["id-@removed-1", "id-@removed-2"]


def _removed_while_the_store_is_full(
    deliverer: Deliverer, store: Store, config: Path, chat: str
) -> None:
    """Apply ``config``, which no longer has ``chat``, while the store cannot write: the
    chat's queue cannot be dropped, so the chat is held."""
    with store_unwritable(store):
        deliverer.apply(_load(config))
        deliverer.wake()
        assert "no longer in the config" in deliverer.paused_chats[chat]


@needs_fsize
async def test_a_removed_chat_whose_queue_cannot_be_dropped_yet_is_held_not_sent_to(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The disk is full at the reload: the queue stays until a later wake can drop it, and
    # meanwhile no worker may send it (it would go out once the store writes again).
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    config = _config(tmp_path, telegram, ["@kept", "@removed"])
    deliverer = Deliverer.from_config(store, sender, _load(config), paced=True, metrics=Metrics())
    store.commit(alerts=[queued_alert(n, chat) for chat in ("@kept", "@removed") for n in (1, 2)])
    try:
        _removed_while_the_store_is_full(
            deliverer, store, _config(tmp_path, telegram, ["@kept"]), "@removed"
        )
        assert await until(lambda: len(telegram.sent_to("@kept")) == 2, 10)
        deliverer.wake()
        assert await until(lambda: _dropped(caplog) == {"@removed": 2}, 5)
        assert store.pending() == []
    finally:
        await deliverer.aclose()
    assert not any(a.chat_id == "@removed" for a in telegram.attempts)


@needs_fsize
async def test_a_chat_held_because_its_queue_could_not_be_dropped_is_sent_to_once_back(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The disk is full at the reload that takes the channel out, and the admins put it back
    # before a wake could drop its queue: it is theirs again, so it is no longer held.
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    config = _config(tmp_path, telegram, ["@kept", "@back"])
    deliverer = Deliverer.from_config(store, sender, _load(config), paced=True, metrics=Metrics())
    store.commit(alerts=[queued_alert(n, "@back") for n in (1, 2)])
    try:
        _removed_while_the_store_is_full(
            deliverer, store, _config(tmp_path, telegram, ["@kept"]), "@back"
        )
        deliverer.apply(_load(_config(tmp_path, telegram, ["@kept", "@back"])))
        deliverer.wake()
        assert "@back" not in deliverer.paused_chats
        assert await until(lambda: len(telegram.sent_to("@back")) == 2, 10)
        assert await until(lambda: store.pending() == [], 5)
    finally:
        await deliverer.aclose()
    assert _dropped(caplog) == {}


@needs_fsize
async def test_a_chat_that_refused_the_bot_stays_paused_when_put_back_before_its_drop(
    tmp_path: Path,
    store: Store,
    sender: TelegramSender,
    telegram: FakeTelegram,
) -> None:
    # The channel kicked the bot; the admins take it out of the config while the disk is full,
    # then put it back. Only the hold for the drop ends: it still refused the bot, so it is
    # tried again when paused_retry says, not at once.
    telegram.forbid("@back", "Forbidden: bot was kicked from the channel chat")
    config = _config(tmp_path, telegram, ["@kept", "@back"], paused_retry="1h")
    deliverer = Deliverer.from_config(store, sender, _load(config), paced=True, metrics=Metrics())
    store.commit(alerts=[queued_alert(n, "@back") for n in (1, 2)])
    try:
        deliverer.wake()
        assert await until(lambda: "kicked" in deliverer.paused_chats.get("@back", ""), 5)
        assert await until(lambda: bool(telegram.sent_to("777")), 5), "the admins were told"
        _removed_while_the_store_is_full(
            deliverer, store, _config(tmp_path, telegram, ["@kept"], paused_retry="1h"), "@back"
        )
        deliverer.apply(_load(_config(tmp_path, telegram, ["@kept", "@back"], paused_retry="1h")))
        deliverer.wake()
        assert "kicked" in deliverer.paused_chats["@back"]
        store.commit(alerts=[queued_alert(1, "@kept")])
        assert await deliverer.drain(10) == 2, "@back's alerts wait for its retry"
    finally:
        await deliverer.aclose()
    assert sum(a.chat_id == "@back" for a in telegram.attempts) == 1, "not retried at once"
    assert len(telegram.sent_to("@kept")) == 1
