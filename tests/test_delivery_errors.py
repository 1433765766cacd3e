"""Each Bot API error the deliverer must handle, against the fake Bot API over HTTP.

Covered in tests/test_deliver.py as well: RetryAfter waits for that chat only, "can't parse
entities" is resent as plain text, and 502s are retried. Here: a migrated group that keeps its
new id after a restart, a chat that refuses the bot (paused alone, admins told, alerts kept and
then given up, each logged), a message too long (split, markup kept), timeouts retried with
backoff, a permanent refusal given up with a log line naming the chat and the alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from telegram.error import BadRequest

from aggregator.deliver import Deliverer
from aggregator.pacing import Limits, Rate
from aggregator.store import Store
from aggregator.telegram_api import ChatUnavailable, Outgoing, TelegramSender, _delivery_error
from tests.conftest import TOKEN, queued_alert
from tests.servers.fake_telegram import FakeTelegram


async def test_migrated_group_keeps_its_new_id_after_a_restart(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    path = tmp_path / "state.json"
    telegram.migrate("-1002", -1008888)
    with Store.open(path) as store:
        store.commit(alerts=[queued_alert(1, "-1002")])
        assert await Deliverer(store, sender).drain(10) == 0
    # A restart: the config still names the old id, so new alerts are queued for it.
    with Store.open(path) as store:
        store.commit(alerts=[queued_alert(2, "-1002"), queued_alert(3, "-1002")])
        assert await Deliverer(store, sender).drain(10) == 0
    assert [m.text for m in telegram.sent_to("-1008888")] == [
        "<b>alert 1</b>",
        "<b>alert 2</b>",
        "<b>alert 3</b>",
    ]
    refused = [a for a in telegram.attempts if a.chat_id == "-1002"]
    assert len(refused) == 1, "after the first refusal, nothing goes to the old id again"


async def test_refusing_chat_is_paused_alone_admins_told_and_alerts_given_up_after_keep(
    tmp_path: Path,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    telegram.forbid("@gone_chat", "Forbidden: bot was kicked from the channel chat")
    with Store.open(tmp_path / "state.json") as store:
        store.commit(
            alerts=[
                queued_alert(1, "@gone_chat"),
                queued_alert(2, "@gone_chat"),
                queued_alert(3, "@ok_chat"),
            ]
        )
        deliverer = Deliverer(store, sender, admins=(777,), paused_retry_s=0.5, paused_keep_s=60)
        assert await deliverer.drain(3) == 2
        assert "@gone_chat" in deliverer.paused_chats
        assert len(telegram.sent_to("@ok_chat")) == 1, "the other chat went on"
        (notice,) = telegram.sent_to("777")
        assert "@gone_chat" in notice.plain_text and "kicked" in notice.plain_text
        # Retried every paused_retry_s (as the daemon runs: drain gives up on paused chats).
        deliverer = Deliverer(store, sender, admins=(777,), paused_retry_s=0.3, paused_keep_s=60)
        deliverer.wake()

        def tries() -> int:
            return sum(a.chat_id == "@gone_chat" for a in telegram.attempts)

        assert await asyncio.to_thread(telegram.wait_until, lambda: tries() >= 4, 5)
        await deliverer.aclose()
        assert [e.chat for e in store.pending()] == ["@gone_chat", "@gone_chat"]

    # After a restart the refusal keeps its first time; once older than paused_keep, given up.
    with Store.open(tmp_path / "state.json") as store:
        caplog.set_level(logging.ERROR, logger="aggregator.deliver")
        deliverer = Deliverer(store, sender, admins=(777,), paused_keep_s=0.0)
        assert await deliverer.drain(5) == 0
        assert deliverer.stats["failed"] == 2
        gave_up = [r for r in caplog.records if r.getMessage() == "giving up on alert"]
        assert {r.__dict__["fields"]["alert"] for r in gave_up} == {
            "id-@gone_chat-1",
            "id-@gone_chat-2",
        }
        assert all(r.__dict__["fields"]["chat"] == "@gone_chat" for r in gave_up)
    assert len(telegram.sent_to("777")) == 1, "admins were told once"


async def test_chat_that_opens_again_is_resumed(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.forbid("4343")
    with Store.open(tmp_path / "state.json") as store:
        store.commit(alerts=[queued_alert(1, "4343")])
        deliverer = Deliverer(store, sender, paused_retry_s=0.3)
        deliverer.wake()
        assert await asyncio.to_thread(telegram.wait_until, lambda: bool(telegram.attempts), 5)
        telegram.clear_faults()  # the user unblocked the bot
        assert await asyncio.to_thread(telegram.wait_for_messages, 1, 5, chat_id="4343")
        await deliverer.aclose()
        assert store.pending() == []
        assert deliverer.chats.paused() == {}


async def test_message_too_long_is_split_with_its_markup(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # about 9,500 characters
    with Store.open(tmp_path / "state.json") as store:
        store.commit(alerts=[queued_alert(1, "@long_chat", "\n".join(lines))])
        assert await Deliverer(store, sender).drain(10) == 0
    sent = telegram.sent_to("@long_chat")
    assert len(sent) == 3
    assert all(m.parse_mode == "HTML" and len(m.plain_text) <= 4096 for m in sent)
    shown = "\n".join(m.plain_text for m in sent)
    assert all(f"line {n} " in shown for n in range(30))


async def test_timeouts_are_retried_with_backoff(tmp_path: Path, telegram: FakeTelegram) -> None:
    quick = TelegramSender(api_url=telegram.api_url, token=TOKEN, timeout_s=0.5)
    try:
        with Store.open(tmp_path / "state.json") as store:
            store.commit(alerts=[queued_alert(1, "@slow_api")])
            telegram.set_down(True, mode="timeout", chat_id="@slow_api")
            deliverer = Deliverer(store, quick, max_backoff_s=1)
            drained = asyncio.create_task(deliverer.drain(20))

            def hung(n: int) -> bool:
                return sum(a.status is None for a in telegram.attempts) >= n

            assert await asyncio.to_thread(telegram.wait_until, lambda: hung(2), 10)
            telegram.set_down(False, chat_id="@slow_api")
            assert await drained == 0
            assert deliverer.stats["transient_errors"] >= 2
            assert len(telegram.sent_to("@slow_api")) == 1
    finally:
        await quick.aclose()


async def test_permanent_refusal_is_given_up_logged_and_counted(
    tmp_path: Path,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="aggregator.deliver")
    telegram.fail_next(3, status=400, body="json", chat_id="@picky_chat")
    with Store.open(tmp_path / "state.json") as store:
        store.commit(alerts=[queued_alert(1, "@picky_chat"), queued_alert(2, "@picky_chat")])
        deliverer = Deliverer(store, sender, max_backoff_s=0.2)
        assert await deliverer.drain(10) == 0
    assert deliverer.stats["failed"] == 1
    (record,) = [r for r in caplog.records if r.getMessage() == "giving up on alert"]
    assert record.__dict__["fields"]["chat"] == "@picky_chat"
    assert record.__dict__["fields"]["alert"] == "id-@picky_chat-1"
    assert [m.text for m in telegram.sent_to("@picky_chat")] == ["<b>alert 2</b>"]


async def test_a_chat_paused_before_a_restart_is_reported_paused_after_it(
    tmp_path: Path, sender: TelegramSender
) -> None:
    # Status and /status must not show a blocked chat as fine just because this process has
    # not tried it yet.
    with Store.open(tmp_path / "state.json") as store:
        Deliverer(store, sender).chats.pause("4242", "Forbidden: bot was blocked", time.time())
    with Store.open(tmp_path / "state.json") as store:
        deliverer = Deliverer(store, sender)
        assert deliverer.paused_chats == {"4242": "Forbidden: bot was blocked"}
        await deliverer.aclose()


@pytest.mark.parametrize(
    "description",
    [
        "Bad Request: chat not found",
        "Bad Request: need administrator rights in the channel chat",
        "Bad Request: have no rights to send a message",
        "Bad Request: CHAT_WRITE_FORBIDDEN",
    ],
)
def test_400s_that_mean_the_bot_may_not_post_pause_the_chat(description: str) -> None:
    # Giving such a chat's alerts up one by one would lose every alert while an admin fixes
    # the bot's rights; pausing keeps them for paused_keep.
    assert isinstance(_delivery_error(BadRequest(description)), ChatUnavailable)


async def test_a_chat_given_up_on_is_still_retried_and_gets_new_alerts_once_open(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    telegram.forbid("4545")
    with Store.open(tmp_path / "state.json") as store:
        store.commit(alerts=[queued_alert(1, "4545")])
        deliverer = Deliverer(store, sender, paused_retry_s=0.2, paused_keep_s=0.0)
        deliverer.wake()
        assert await asyncio.to_thread(telegram.wait_until, lambda: bool(telegram.attempts), 5)
        assert await asyncio.to_thread(telegram.wait_until, lambda: not store.pending(), 5)
        assert deliverer.stats["failed"] == 1, "the old alert was given up"
        telegram.clear_faults()  # the user unblocked the bot weeks later
        store.commit(alerts=[queued_alert(2, "4545")])
        deliverer.wake()
        assert await asyncio.to_thread(telegram.wait_for_messages, 1, 5, chat_id="4545")
        await deliverer.aclose()


async def test_a_split_alert_whose_later_part_fails_is_not_sent_again(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # Retrying the whole alert would repeat the parts already delivered: once the first part
    # is out, a part that fails is logged and counted instead.
    class SecondPartRefused(TelegramSender):
        calls = 0

        async def send(self, message: Outgoing) -> int | None:
            self.calls += 1
            if self.calls == 3:  # the whole message, part 1, then part 2
                telegram.fail_next(1, status=400, chat_id="@long_chat", body="json")
            return await super().send(message)

    caplog.set_level(logging.ERROR, logger="aggregator.deliver")
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # three parts
    sender = SecondPartRefused(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
    try:
        with Store.open(tmp_path / "state.json") as store:
            store.commit(alerts=[queued_alert(1, "@long_chat", "\n".join(lines))])
            deliverer = Deliverer(store, sender)
            assert await deliverer.drain(10) == 0
            assert store.pending() == []
    finally:
        await sender.aclose()
    sent = telegram.sent_to("@long_chat")
    assert len(sent) == 2, "parts 1 and 3; part 1 was not sent again"
    assert deliverer.stats["pieces_lost"] == 1
    lost = [r for r in caplog.records if r.getMessage().startswith("part of a split alert")]
    assert [r.__dict__["fields"]["part"] for r in lost] == ["2/3"]


class _RefusesPartTwo(TelegramSender):
    """Telegram cannot parse the HTML of the second part (the whole message, part 1, then
    part 2); ``plain_refused``: it refuses that part's plain resend as well."""

    calls = 0
    plain_refused = False

    def __init__(self, telegram: FakeTelegram, chat: str) -> None:
        super().__init__(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
        self.telegram, self.chat = telegram, chat

    async def send(self, message: Outgoing) -> int | None:
        self.calls += 1
        if self.calls == 3:
            self.telegram.reject_entities_next(1, chat_id=self.chat)
        if self.calls == 4 and self.plain_refused:
            self.telegram.fail_next(1, status=400, chat_id=self.chat, body="json")
        return await super().send(message)


def _long_alert_with_a_link() -> str:
    # Three parts; the second holds a line with a link, as an alert's "also:" line does.
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]
    lines[14] = 'also: <a href="https://example.com/a?x=1&amp;y=2">Example &amp; Co</a>'
    return "\n".join(lines)


async def test_a_later_part_whose_html_is_refused_is_sent_as_plain_text(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # Like a whole alert (and the first part): the part goes out as plain text, not lost.
    caplog.set_level(logging.WARNING, logger="aggregator.deliver")
    sender = _RefusesPartTwo(telegram, "@long_chat")
    try:
        with Store.open(tmp_path / "state.json") as store:
            store.commit(alerts=[queued_alert(1, "@long_chat", _long_alert_with_a_link())])
            deliverer = Deliverer(store, sender)
            assert await deliverer.drain(10) == 0
            record = store.sent_record("id-@long_chat-1")
    finally:
        await sender.aclose()
    sent = telegram.sent_to("@long_chat")
    assert [m.parse_mode for m in sent] == ["HTML", None, "HTML"]
    assert deliverer.stats["pieces_lost"] == 0
    part = sent[1].text
    assert "<" not in part and "line 13 word" in part
    assert "also: Example & Co https://example.com/a?x=1&y=2" in part, "the link is kept"
    shown = "\n".join(m.plain_text for m in sent)
    assert all(shown.count(f"line {n} ") == 1 for n in range(30) if n != 14), "every line, once"
    assert record is not None and record.message_id == sent[0].message_id
    (fallback,) = [r for r in caplog.records if "sending it as plain text" in r.getMessage()]
    assert fallback.__dict__["fields"]["part"] == "2/3"
    assert not [r for r in caplog.records if r.getMessage().startswith("part of a split alert")]


async def test_a_later_part_refused_as_plain_text_too_is_logged_lost(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="aggregator.deliver")
    sender = _RefusesPartTwo(telegram, "@long_chat")
    sender.plain_refused = True
    try:
        with Store.open(tmp_path / "state.json") as store:
            store.commit(alerts=[queued_alert(1, "@long_chat", _long_alert_with_a_link())])
            deliverer = Deliverer(store, sender)
            assert await deliverer.drain(10) == 0
    finally:
        await sender.aclose()
    assert [m.parse_mode for m in telegram.sent_to("@long_chat")] == ["HTML", "HTML"]
    assert deliverer.stats["pieces_lost"] == 1
    lost = [r for r in caplog.records if r.getMessage().startswith("part of a split alert")]
    assert [r.__dict__["fields"]["part"] for r in lost] == ["2/3"]


async def test_a_split_alert_given_up_after_its_first_part_is_reported_as_delivered_in_part(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    # The chat refuses the bot from the second part on, past paused_keep: the alert reached
    # it (in part), so it is no alert given up on, and its record keeps the first part's
    # message id, which later edits need.
    class KickedAfterPartOne(TelegramSender):
        calls = 0

        async def send(self, message: Outgoing) -> int | None:
            self.calls += 1
            if self.calls == 3:  # the whole message, part 1, then part 2
                telegram.forbid("@long_chat", "Forbidden: bot was kicked from the channel chat")
            return await super().send(message)

    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # three parts
    sender = KickedAfterPartOne(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
    try:
        with Store.open(tmp_path / "state.json") as store:
            store.commit(alerts=[queued_alert(1, "@long_chat", "\n".join(lines))])
            deliverer = Deliverer(store, sender, paused_keep_s=0.0)
            assert await deliverer.drain(10) == 0
            record = store.sent_record("id-@long_chat-1")
    finally:
        await sender.aclose()
    (first,) = telegram.sent_to("@long_chat")
    assert record is not None and record.message_id == first.message_id
    assert deliverer.stats["failed"] == 0
    assert deliverer.stats["sent"] == 1 and deliverer.stats["pieces_lost"] == 2
    assert not [r for r in caplog.records if r.getMessage() == "giving up on alert"]
    (rest,) = [r for r in caplog.records if r.getMessage().startswith("giving up on the rest")]
    fields = rest.__dict__["fields"]
    assert (fields["delivered"], fields["given_up"], fields["parts"]) == (1, 2, 3)
    assert fields["alert"] == "id-@long_chat-1" and "kicked" in fields["error"]


async def test_a_stop_between_the_parts_of_a_split_alert_loses_none_and_repeats_none(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    # Each part waits its turn at the gate, and a stop must not wait out a channel's window
    # for them (nor send them past it). The parts not yet out stay queued, with how far the
    # alert got: the next start sends them, and only them.
    lines = [f"<b>line {n}</b> " + "word " * 60 for n in range(30)]  # three parts
    path = tmp_path / "state.json"
    with Store.open(path) as store:
        store.commit(alerts=[queued_alert(1, "@long_chat", "\n".join(lines))])
        deliverer = Deliverer(store, sender, limits=Limits(group=Rate(1, 60.0)))
        deliverer.wake()
        assert await asyncio.to_thread(telegram.wait_for_messages, 1, 5, chat_id="@long_chat")
        await asyncio.wait_for(deliverer.aclose(), 5)
        assert [e.id for e in store.pending()] == ["id-@long_chat-1"], "not all out yet"
    assert len(telegram.sent_to("@long_chat")) == 1
    assert deliverer.stats["pieces_lost"] == 0
    with Store.open(path) as store:  # the next start (a restart, a deploy, the next `once`)
        assert await Deliverer(store, sender).drain(10) == 0
        record = store.sent_record("id-@long_chat-1")
    sent = telegram.sent_to("@long_chat")
    assert len(sent) == 3, "parts 2 and 3, not part 1 again"
    shown = "\n".join(m.plain_text for m in sent)
    assert all(shown.count(f"line {n} ") == 1 for n in range(30)), "every line, once"
    assert record is not None and record.message_id == sent[0].message_id, "edits go to part 1"


async def test_a_subscriber_who_blocked_the_bot_is_unsubscribed_without_telling_admins(
    tmp_path: Path,
    sender: TelegramSender,
    telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Users block bots all the time: pausing each of them, retrying for paused_keep and telling
    # the admins again after every expiry would bury the admins in notices.
    telegram.forbid("5001")  # "Forbidden: bot was blocked by the user"
    telegram.forbid("5002", "Forbidden: user is deactivated")
    telegram.forbid("5003")  # a private chat named in the config, not a subscriber
    caplog.set_level(logging.INFO, logger="aggregator.deliver")
    with Store.open(tmp_path / "state.json") as store:
        deliverer = Deliverer(store, sender, admins=(777,), paused_retry_s=60, paused_keep_s=60)
        for chat in ("5001", "5002"):
            deliverer.chats.subscribe(chat, "harbour")
            deliverer.chats.subscribe(chat, "quay")
        store.commit(
            alerts=[queued_alert(n, chat) for chat in ("5001", "5002", "5003") for n in (1, 2)]
        )
        assert await deliverer.drain(5) == 2, "only the configured chat's alerts stay queued"
        assert deliverer.chats.subscriptions("5001") == []
        assert deliverer.chats.subscriptions("5002") == []
        assert deliverer.chats.subscribers("harbour") == ()
        assert set(deliverer.paused_chats) == {"5003"}
        assert [e.chat for e in store.pending()] == ["5003", "5003"]
        notices = telegram.sent_to("777")
        assert len(notices) == 1 and "5003" in notices[0].plain_text, "one notice, for 5003"
        assert deliverer.stats["subscribers_left"] == 2
    left = [r for r in caplog.records if r.getMessage() == "subscriber left the bot; unsubscribed"]
    assert sorted(r.__dict__["fields"]["chat"] for r in left) == ["5001", "5002"]
    assert all(r.__dict__["fields"]["dropped"] == 2 for r in left)
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropping alert")]
    assert len(dropped) == 4
