"""The fake Telegram Bot API, driven by the real python-telegram-bot over real HTTP.

These tests pin down that each fault the fake injects reaches PTB as the exception Telegram's
real answer would raise, so that delivery tests built on the fake test the product for real.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.ext import Application, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from tests.servers.fake_telegram import (
    FakeTelegram,
    TelegramLimits,
    parse_telegram_html,
    utf16_length,
)

PRIVATE = 1001
OTHER_PRIVATE = 1002
GROUP = -1001234567890


def _ci(fragment: str) -> str:
    """A pattern for PTB's message, which drops "Bad Request: " and changes letter case."""
    return "(?i)" + re.escape(fragment)


def _request(read_timeout: float = 2.0) -> HTTPXRequest:
    # trust_env=False: a proxy configured in the environment must not sit between PTB and the fake.
    return HTTPXRequest(
        connect_timeout=1.0,
        read_timeout=read_timeout,
        write_timeout=1.0,
        pool_timeout=1.0,
        httpx_kwargs={"trust_env": False},
    )


def _bot(fake: FakeTelegram, *, token: str | None = None, read_timeout: float = 2.0) -> Bot:
    return Bot(
        token or fake.token,
        base_url=fake.api_url + "/bot",
        request=_request(read_timeout),
        get_updates_request=_request(read_timeout),
    )


@pytest.fixture(autouse=True)
def _timedelta_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB 22 warns (PTBDeprecationWarning) whenever it builds a RetryAfter unless PTB_TIMEDELTA
    # opts in to the future timedelta API; with warnings as errors that warning would replace
    # the RetryAfter we test for. Opting in is the deliberate, forward-compatible answer.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server
    assert server.server_errors == []


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with _bot(fake) as client:
        yield client


# --- sending -------------------------------------------------------------------------------


async def test_send_message_is_recorded_with_exact_text(fake: FakeTelegram, bot: Bot) -> None:
    text = '<b>عاجل</b> &amp; news 🚀 <a href="https://example.org/?a=1&amp;b=2">source</a>'
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("open", url="https://example.org")]])

    first = await bot.send_message(
        PRIVATE,
        text,
        parse_mode="HTML",
        link_preview_options=LinkPreviewOptions(is_disabled=True),
        reply_markup=markup,
    )
    second = await bot.send_message(PRIVATE, "plain <not a tag>")
    elsewhere = await bot.send_message(GROUP, "group")

    assert (first.message_id, second.message_id, elsewhere.message_id) == (1, 2, 1)
    assert first.text == "عاجل & news 🚀 source"
    assert first.entities[0].type == "bold"
    assert first.entities[1].url == "https://example.org/?a=1&b=2"
    assert first.link_preview_options == LinkPreviewOptions(is_disabled=True)
    assert [m.text for m in fake.sent_to(PRIVATE)] == [text, "plain <not a tag>"]
    recorded = fake.messages[0]
    assert recorded.chat_id == str(PRIVATE)
    assert recorded.parse_mode == "HTML"
    assert recorded.link_preview_disabled is True
    assert recorded.method == "sendMessage"
    assert recorded.reply_markup == {
        "inline_keyboard": [[{"text": "open", "url": "https://example.org"}]]
    }
    assert recorded.received_at.tzinfo is not None
    assert fake.messages[1].link_preview_disabled is False
    assert fake.sent_to(GROUP)[0].text == "group"
    assert fake.stats.requests_by_method == {"getMe": 1, "sendMessage": 3}


async def test_edit_and_delete_behave_like_telegram(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(PRIVATE, "<b>v1</b>", parse_mode="HTML")

    edited = await bot.edit_message_text("<b>v2</b>", PRIVATE, sent.message_id, parse_mode="HTML")
    assert isinstance(edited, Message)
    assert edited.text == "v2"
    assert edited.edit_date is not None
    with pytest.raises(BadRequest, match=_ci("message is not modified")):
        await bot.edit_message_text("<b>v2</b>", PRIVATE, sent.message_id, parse_mode="HTML")
    with pytest.raises(BadRequest, match=_ci("message to edit not found")):
        await bot.edit_message_text("x", PRIVATE, 999)

    assert await bot.delete_message(PRIVATE, sent.message_id) is True
    with pytest.raises(BadRequest, match=_ci("message to delete not found")):
        await bot.delete_message(PRIVATE, sent.message_id)

    assert [(m.method, m.text) for m in fake.messages] == [
        ("sendMessage", "<b>v1</b>"),
        ("editMessageText", "<b>v2</b>"),
    ]
    assert fake.deletions == [(str(PRIVATE), sent.message_id)]
    # Only successes are messages; every request is an attempt.
    assert len(fake.attempts) == 1 + 6
    assert [a.status for a in fake.attempts if a.method == "editMessageText"] == [200, 400, 400]


async def test_bad_requests_name_the_problem(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=_ci("message text is empty")):
        await bot.send_message(PRIVATE, "<b> </b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=_ci("message is too long")):
        await bot.send_message(PRIVATE, "😀" * 2049)  # 4098 UTF-16 code units
    # 4096 code units after parsing: tags do not count, an entity counts as one character.
    fits = "<i>" + "&amp;" * 2048 + "</i>" + "😀" * 1024
    fits_plain = "&" * 2048 + "😀" * 1024
    assert (await bot.send_message(PRIVATE, fits, parse_mode="HTML")).text == fits_plain
    with pytest.raises(BadRequest, match=_ci("unsupported parse_mode")):
        await bot.send_message(PRIVATE, "x", parse_mode="BBCode")
    with pytest.raises(BadRequest, match=_ci("chat not found")):
        await bot.send_message("@x", "x")


async def test_invalid_html_is_refused_as_telegram_does(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=_ci("can't parse entities: Can't find end tag")):
        await bot.send_message(PRIVATE, "<b>open", parse_mode="HTML")
    with pytest.raises(BadRequest, match=_ci('can\'t parse entities: unsupported start tag "br"')):
        await bot.send_message(PRIVATE, "a<br>b", parse_mode="HTML")

    fake.reject_entities_next(1)
    with pytest.raises(BadRequest, match=_ci("can't parse entities")):
        await bot.send_message(PRIVATE, "<b>valid</b>", parse_mode="HTML")
    await bot.send_message(PRIVATE, "<b>valid</b>", parse_mode="HTML")
    assert [m.plain_text for m in fake.messages] == ["valid"]


# --- injected faults -------------------------------------------------------------------------


async def test_retry_after_carries_the_delay(fake: FakeTelegram, bot: Bot) -> None:
    fake.retry_after_next(PRIVATE, 5, n=2)

    for _ in range(2):
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(PRIVATE, "x")
        assert caught.value.retry_after == timedelta(seconds=5)
    await bot.send_message(OTHER_PRIVATE, "other chats are not affected")
    await bot.send_message(PRIVATE, "then it goes through")

    assert [m.text for m in fake.sent_to(PRIVATE)] == ["then it goes through"]
    assert fake.stats.retry_after_sent == 2
    refused = [a for a in fake.attempts if a.status == 429]
    assert [a.description for a in refused] == ["Too Many Requests: retry after 5"] * 2


async def test_migrated_group_names_its_new_id(fake: FakeTelegram, bot: Bot) -> None:
    fake.migrate(-4242, GROUP)

    with pytest.raises(ChatMigrated) as caught:
        await bot.send_message(-4242, "x")
    assert caught.value.new_chat_id == GROUP
    with pytest.raises(ChatMigrated):
        await bot.send_message(-4242, "still migrated")
    await bot.send_message(caught.value.new_chat_id, "moved")
    assert [m.text for m in fake.sent_to(GROUP)] == ["moved"]


async def test_forbidden_chat(fake: FakeTelegram, bot: Bot) -> None:
    fake.forbid(PRIVATE)
    fake.forbid(GROUP, "Forbidden: bot was kicked from the supergroup chat")

    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(PRIVATE, "x")
    with pytest.raises(Forbidden, match="kicked from the supergroup"):
        await bot.send_message(GROUP, "x")
    assert fake.messages == []


async def test_server_error_page_is_a_network_error(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next(1, method="sendMessage")
    fake.fail_next(1, status=500, body="json", chat_id=GROUP)

    await bot.get_me()  # another method: not affected
    with pytest.raises(NetworkError, match="Bad Gateway") as caught:
        await bot.send_message(PRIVATE, "x")
    assert type(caught.value) is NetworkError
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.send_message(GROUP, "x")
    await bot.send_message(PRIVATE, "recovered")
    assert fake.stats.responses_by_status[502] == 1


@pytest.mark.parametrize("mode", ["502", "reset"])
async def test_outage_fails_every_request(fake: FakeTelegram, bot: Bot, mode: str) -> None:
    fake.set_down(True, mode="502" if mode == "502" else "reset")

    for call in (bot.get_me(), bot.send_message(PRIVATE, "x")):
        with pytest.raises(NetworkError) as caught:
            await call
        assert not isinstance(caught.value, TimedOut | BadRequest)
    fake.set_down(False)
    await bot.send_message(PRIVATE, "back")
    assert [m.text for m in fake.messages] == ["back"]


async def test_hanging_outage_times_out_and_stop_releases_it() -> None:
    fake = FakeTelegram().start()
    try:
        async with _bot(fake, read_timeout=0.3) as bot:
            fake.set_down(True, mode="timeout")
            started = time.monotonic()
            with pytest.raises(TimedOut):
                await bot.send_message(PRIVATE, "x")
            assert time.monotonic() - started < 2
            assert fake.stats.dropped == 1
    finally:
        stopping = threading.Thread(target=fake.stop)
        stopping.start()
        stopping.join(5)
    assert not stopping.is_alive(), "stop() must not wait for the hung request"


async def test_per_chat_outage_leaves_other_chats_alone(fake: FakeTelegram, bot: Bot) -> None:
    fake.set_down(True, chat_id=GROUP)
    with pytest.raises(NetworkError):
        await bot.send_message(GROUP, "x")
    await bot.send_message(PRIVATE, "fine")
    assert [m.chat_id for m in fake.messages] == [str(PRIVATE)]


# --- tokens and unknown methods -------------------------------------------------------------


async def test_wrong_token_is_invalid_token(fake: FakeTelegram) -> None:
    for token in ("123456:WRONG-token", "not-a-token"):
        with pytest.raises(InvalidToken, match="was rejected by the server"):
            async with _bot(fake, token=token):
                pass  # initialize() calls getMe, as an application's startup does
    statuses = [a.status for a in fake.attempts]
    assert statuses == [401, 404]


async def test_unknown_method_is_not_found(fake: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendHologram", api_kwargs={"chat_id": PRIVATE})
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.post(f"{fake.api_url}/bot{fake.token}/sendHologram")
    assert response.status_code == 404
    assert response.json() == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_json_and_multipart_bodies_are_accepted(fake: FakeTelegram) -> None:
    url = f"{fake.api_url}/bot{fake.token}/sendMessage"
    async with httpx.AsyncClient(trust_env=False) as client:
        as_json = await client.post(url, json={"chat_id": PRIVATE, "text": "json body"})
        as_multipart = await client.post(
            url,
            data={"chat_id": str(PRIVATE), "text": "multipart body"},
            files={"document": ("a.txt", b"payload", "text/plain")},
        )
        bad_markup = await client.post(
            url, data={"chat_id": str(PRIVATE), "text": "x", "reply_markup": "[1"}
        )
    assert as_json.json()["result"]["text"] == "json body"
    assert as_multipart.json()["result"]["message_id"] == 2
    assert bad_markup.status_code == 400
    assert "reply keyboard markup" in bad_markup.json()["description"]
    assert fake.messages[1].params["document"] == "<file 'a.txt', 7 bytes>"


# --- getUpdates -------------------------------------------------------------------------------


async def test_long_poll_returns_a_pushed_update_promptly(fake: FakeTelegram, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    assert await asyncio.to_thread(fake.wait_for_poller, 5)
    started = time.monotonic()
    fake.push_update(text="/start now", chat_id=PRIVATE, user_id=PRIVATE, username="ali")

    updates = await poll
    assert time.monotonic() - started < 1
    assert len(updates) == 1
    message = updates[0].message
    assert message is not None
    assert message.text == "/start now"
    assert message.chat.id == PRIVATE
    assert message.from_user is not None
    assert message.from_user.username == "ali"
    assert message.entities[0].type == "bot_command"

    # The offset confirms it: nothing more arrives, so the poll ends empty after its timeout.
    started = time.monotonic()
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=1) == ()
    assert 0.9 <= time.monotonic() - started < 3


async def test_pending_updates_are_kept_until_confirmed(fake: FakeTelegram, bot: Bot) -> None:
    fake.push_update(text="one", chat_id=GROUP, user_id=7, chat_type="supergroup")
    fake.push_update(text="two", chat_id=GROUP, user_id=7, chat_type="supergroup")

    first = await bot.get_updates()
    again = await bot.get_updates()
    assert [u.message.text for u in first if u.message] == ["one", "two"]
    assert [u.update_id for u in again] == [u.update_id for u in first]
    assert await bot.get_updates(offset=first[-1].update_id + 1) == ()
    # A message id from a user counts in the chat's sequence, as in Telegram.
    assert (await bot.send_message(GROUP, "reply")).message_id == 3


async def test_a_second_long_poll_ends_the_first_with_conflict(fake: FakeTelegram) -> None:
    async with _bot(fake) as first, _bot(fake) as second:
        older = asyncio.create_task(first.get_updates(timeout=5))
        assert await asyncio.to_thread(fake.wait_for_poller, 5)
        newer = asyncio.create_task(second.get_updates(timeout=5))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await older
        fake.push_update(text="hi", chat_id=PRIVATE, user_id=PRIVATE)
        assert len(await newer) == 1


def test_stop_releases_a_long_poll() -> None:
    fake = FakeTelegram().start()
    url = f"{fake.api_url}/bot{fake.token}/getUpdates"
    answers: list[httpx.Response] = []
    poller = threading.Thread(
        target=lambda: answers.append(httpx.post(url, data={"timeout": "30"}, trust_env=False))
    )
    poller.start()
    assert fake.wait_for_poller(5)
    started = time.monotonic()
    fake.stop()
    poller.join(25)
    # Released, not answered when its 30 s ran out (the bound is loose: a loaded CI machine).
    assert time.monotonic() - started < 15
    assert [a.json() for a in answers] == [{"ok": True, "result": []}]


# --- flood limits ---------------------------------------------------------------------------


async def test_enforced_limits_refuse_a_second_private_message_within_a_second() -> None:
    with FakeTelegram(enforce_limits=True) as fake:
        async with _bot(fake) as bot:
            await bot.send_message(PRIVATE, "first")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(PRIVATE, "second")
            assert caught.value.retry_after == timedelta(seconds=1)
            await bot.send_message(OTHER_PRIVATE, "another chat has its own budget")
        assert fake.stats.flood_limited == 1
        assert [m.text for m in fake.messages] == ["first", "another chat has its own budget"]


async def test_enforced_limits_for_groups_and_overall() -> None:
    with FakeTelegram(enforce_limits=True) as fake:
        async with _bot(fake) as bot:
            for n in range(20):
                await bot.send_message(GROUP, f"group {n}")
            with pytest.raises(RetryAfter) as caught:
                await bot.send_message(GROUP, "21st in a minute")
            retry_after = caught.value.retry_after
            assert isinstance(retry_after, timedelta)
            assert timedelta(seconds=55) <= retry_after <= timedelta(seconds=60)
            # 20 group messages so far; 10 more private chats reach 30 in a second.
            for chat in range(1, 11):
                await bot.send_message(chat, "x")
            with pytest.raises(RetryAfter):
                await bot.send_message(11, "31st in a second")


async def test_limits_are_configurable_and_windows_slide() -> None:
    limits = TelegramLimits(private_messages=2, private_window_s=0.5, slack_s=0.0)
    with FakeTelegram(enforce_limits=True, limits=limits) as fake:
        async with _bot(fake) as bot:
            await bot.send_message(PRIVATE, "1")
            await bot.send_message(PRIVATE, "2")
            with pytest.raises(RetryAfter):
                await bot.send_message(PRIVATE, "3")
            # The behaviour under test is the clock: the window must slide past message 1.
            elapsed = time.time() - fake.messages[0].received_at.timestamp()
            await asyncio.sleep(max(0.0, 0.55 - elapsed))
            await bot.send_message(PRIVATE, "3 again")
    with pytest.raises(ValueError, match="private_window_s must be > slack_s"):
        TelegramLimits(private_window_s=0.01)


# --- waiting and bad arguments ----------------------------------------------------------------


async def test_wait_for_messages(fake: FakeTelegram, bot: Bot) -> None:
    assert not await asyncio.to_thread(fake.wait_for_messages, 1, 0.05)
    waiting = asyncio.create_task(asyncio.to_thread(fake.wait_for_messages, 2, 5))
    await bot.send_message(PRIVATE, "a")
    await bot.send_message(GROUP, "b")
    assert await waiting
    assert fake.wait_for_messages(1, 0, chat_id=GROUP)
    assert not fake.wait_for_messages(2, 0, chat_id=GROUP)


def test_bad_arguments_are_refused_clearly() -> None:
    fake = FakeTelegram()
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        fake.fail_next(0)
    with pytest.raises(ValueError, match="status must be an HTTP error status"):
        fake.fail_next(1, status=200)
    with pytest.raises(ValueError, match="seconds must be an int >= 1"):
        fake.retry_after_next(PRIVATE, 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        fake.set_down(True, mode="slow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="new_chat_id must be a different supergroup id"):
        fake.migrate(-1, 5)
    with pytest.raises(ValueError, match="chat_id must be an integer or an '@username'"):
        fake.forbid("nobody")
    with pytest.raises(ValueError, match="private chat's id"):
        fake.push_update(text="x", chat_id=-5, user_id=5)
    with pytest.raises(ValueError, match="token must look like"):
        FakeTelegram(token="secret")
    with pytest.raises(RuntimeError, match="not started"):
        _ = fake.api_url


# --- the HTML validator -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "plain"),
    [
        ("plain text", "plain text"),
        ("<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins>", "bsieun"),
        ("<s>s</s><strike>t</strike><del>d</del>", "std"),
        ('<span class="tg-spoiler">x</span><tg-spoiler>y</tg-spoiler>', "xy"),
        ("<a href='https://e.org/?q=1&amp;r=2'>link</a>", "link"),
        ("<code>a &lt; b</code>", "a < b"),
        ('<pre><code class="language-python">x = 1</code></pre>', "x = 1"),
        ("<blockquote expandable>quote</blockquote><blockquote>q</blockquote>", "quoteq"),
        ('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>', "👍"),
        ("<B>upper</b> and <i>x</>", "upper and x"),
        ("&lt;&gt;&amp;&quot;&#39;&#x1F600;", "<>&\"'😀"),
        ("a > b", "a > b"),
        ("<b>bold <i>both</i></b>", "bold both"),
        ("عربي <b>غامق</b>", "عربي غامق"),
    ],
)
def test_html_validator_accepts_telegram_html(html: str, plain: str) -> None:
    assert parse_telegram_html(html) == plain


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("fish & chips", 'Unescaped "&" at byte offset 5'),
        ("&nbsp;", 'Unescaped "&" at byte offset 0'),
        ("&amp", 'Unescaped "&" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("<div>x</div>", 'Unsupported start tag "div" at byte offset 0'),
        ("é<br/>", 'Unsupported start tag "br/" at byte offset 2'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler"'),
        ("<a href=x/y>x</a>", "Unexpected end of name token at byte offset 8"),
        ("<a href", "Unclosed start tag at byte offset 0"),
        ("<b>x</b", "Unclosed end tag at byte offset 4"),
        ("<a href='x>y</a>", "Unclosed start tag at byte offset 0"),
        ("<b bold>x</b>", 'Expected equal sign in declaration of an attribute of the tag "b"'),
        ("&#0;", "Invalid character reference"),
    ],
)
def test_html_validator_rejects_what_telegram_rejects(html: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_telegram_html(html)
    assert reason in str(caught.value)


def test_utf16_length_counts_like_telegram() -> None:
    assert utf16_length("abc") == 3
    assert utf16_length("عربي") == 4
    assert utf16_length("😀") == 2


def test_raw_http_answers_look_like_telegram(fake: FakeTelegram) -> None:
    with httpx.Client(trust_env=False) as client:
        unauthorized = client.post(f"{fake.api_url}/bot123:other/getMe")
        fake.retry_after_next(PRIVATE, 7)
        flood = client.post(
            f"{fake.api_url}/bot{fake.token}/sendMessage", data={"chat_id": PRIVATE, "text": "x"}
        )
        me = client.get(f"{fake.api_url}/bot{fake.token}/getme")
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert flood.status_code == 429
    assert json.loads(flood.content) == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    assert me.json()["result"]["is_bot"] is True
    assert fake.stats.requests_by_method["getMe"] == 2


async def test_a_ptb_application_answers_a_command_through_the_fake(fake: FakeTelegram) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "welcome")

    app = (
        Application.builder()
        .token(fake.token)
        .base_url(fake.api_url + "/bot")
        .request(_request())
        .get_updates_request(_request())
        .build()
    )
    app.add_handler(CommandHandler("start", start))
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(timeout=5)
        await app.start()
        fake.push_update(text="/start", chat_id=PRIVATE, user_id=PRIVATE)
        delivered = await asyncio.to_thread(fake.wait_for_messages, 1, 5)
        await app.updater.stop()
        await app.stop()
    assert delivered
    assert [(m.chat_id, m.text) for m in fake.messages] == [(str(PRIVATE), "welcome")]
