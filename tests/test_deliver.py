"""Delivery: the real Store and python-telegram-bot against the fake Bot API, in-process."""

from __future__ import annotations

import itertools
import time

from aggregator.deliver import Deliverer, split_text
from aggregator.store import EditEntry, OutboxEntry, Store
from aggregator.telegram_api import Outgoing, TelegramSender
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


# -- edits (a near-duplicate's source added to an alert already sent) ---------------------------


def _edit(target: str, chat: str, text: str, plain: str = "plain edit") -> EditEntry:
    return EditEntry(target, chat, text, plain, disable_preview=True, created_at=time.time())


async def _sent(store: Store, sender: TelegramSender, *entries: OutboxEntry) -> None:
    _queue(store, *entries)
    assert await Deliverer(store, sender).drain(10) == 0


async def test_edit_replaces_the_sent_alerts_text(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    await _sent(store, sender, _entry(1, "@chan_edit"), _entry(2, "@chan_edit"))
    first = telegram.sent_to("@chan_edit")[0]
    store.commit(edits=[_edit("id-@chan_edit-1", "@chan_edit", "<b>alert 1</b>\nalso: X")])
    deliverer = Deliverer(store, sender)
    assert await deliverer.drain(10) == 0
    edit = telegram.messages[-1]
    assert edit.method == "editMessageText"
    assert (edit.chat_id, edit.message_id) == ("@chan_edit", first.message_id)
    assert edit.text == "<b>alert 1</b>\nalso: X" and edit.parse_mode == "HTML"
    assert edit.link_preview_disabled
    assert store.pending_edits() == []
    assert deliverer.stats["edited"] == 1


async def test_edit_to_the_same_text_counts_as_done(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    await _sent(store, sender, _entry(1, "@chan_same"))
    original = telegram.sent_to("@chan_same")[0].text
    store.commit(edits=[_edit("id-@chan_same-1", "@chan_same", original)])
    assert await Deliverer(store, sender).drain(10) == 0
    (attempt,) = [a for a in telegram.attempts if a.method == "editMessageText"]
    assert attempt.description is not None and "message is not modified" in attempt.description
    assert store.pending_edits() == []


async def test_edit_of_a_message_that_is_gone_is_dropped(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    _queue(store, _entry(1, "@chan_gone"), _entry(2, "@chan_gone"))
    store.mark_sent("id-@chan_gone-1", message_id=999, sent_at=1.0)  # never sent by the bot
    store.mark_sent("id-@chan_gone-2", message_id=None, sent_at=1.0)  # given up on
    store.commit(
        edits=[
            _edit("id-@chan_gone-1", "@chan_gone", "<b>new</b>"),
            _edit("id-@chan_gone-2", "@chan_gone", "<b>new</b>"),
        ]
    )
    deliverer = Deliverer(store, sender)
    assert await deliverer.drain(10) == 0
    edits = [a for a in telegram.attempts if a.method == "editMessageText"]
    assert [a.params["message_id"] for a in edits] == ["999"], "no request without a message id"
    assert edits[0].description == "Bad Request: message to edit not found"
    assert deliverer.stats["edits_dropped"] == 1
    assert store.pending_edits() == []


async def test_edit_too_long_for_one_message_is_dropped_at_once(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    # An alert that went out in parts gets a near-duplicate's "also:" line: its text is too
    # long for the one message an edit replaces. Dropped with a warning, not retried (each
    # retry would hold the chat's queue through a backoff), and the next alert goes out.
    await _sent(store, sender, _entry(1, "@chan_long"))
    long_text = "\n".join(f"line {n} " + "word " * 60 for n in range(30))
    store.commit(edits=[_edit("id-@chan_long-1", "@chan_long", long_text, long_text)])
    _queue(store, _entry(2, "@chan_long"))
    deliverer = Deliverer(store, sender)
    assert await deliverer.drain(10) == 0
    edits = [a for a in telegram.attempts if a.method == "editMessageText"]
    assert len(edits) == 1 and "too long" in (edits[0].description or "")
    assert deliverer.stats["edits_dropped"] == 1
    assert store.pending_edits() == []
    assert len(telegram.sent_to("@chan_long")) == 2


async def test_edit_with_unparseable_html_falls_back_to_plain_text(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    await _sent(store, sender, _entry(1, "@chan_markup"))
    telegram.reject_entities_next(1, chat_id="@chan_markup")
    store.commit(edits=[_edit("id-@chan_markup-1", "@chan_markup", "<b>x</b>", "x also: Y")])
    assert await Deliverer(store, sender).drain(10) == 0
    edit = telegram.messages[-1]
    assert (edit.method, edit.text, edit.parse_mode) == ("editMessageText", "x also: Y", None)


async def test_text_replaced_during_the_send_is_edited_in_after_it(
    store: Store, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    class CommitsDuringSend:
        """The real sender; the pipeline commits a near-duplicate while the send is under way."""

        wants_html = True

        async def send(self, message: Outgoing) -> int | None:
            store.commit(retexts={"id-@chan_race-1": ("<b>alert 1</b>\nalso: B", "also: B")})
            return await sender.send(message)

        async def edit(self, message: Outgoing, message_id: int) -> None:
            await sender.edit(message, message_id)

        async def aclose(self) -> None:
            """The real sender is closed by its fixture."""

    _queue(store, _entry(1, "@chan_race"))
    assert await Deliverer(store, CommitsDuringSend()).drain(10) == 0
    sent, edit = telegram.sent_to("@chan_race")
    assert (sent.method, sent.text) == ("sendMessage", "<b>alert 1</b> &amp; more")
    assert (edit.method, edit.message_id) == ("editMessageText", sent.message_id)
    assert edit.text == "<b>alert 1</b>\nalso: B"
    assert store.pending() == [] and store.pending_edits() == []
