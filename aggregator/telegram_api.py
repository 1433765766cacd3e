"""Adapters that put one message in one chat: the Telegram Bot API, or the terminal.

python-telegram-bot's exceptions are mapped here to the few outcomes the delivery loop acts on,
so that nothing above this module knows about PTB. Pacing is not done here: every send goes
through the delivery loop's ``pacing.Gate``, which keeps all three of Telegram's limits (PTB's
AIORateLimiter lets a burst through twice per window and ignores private chats; see pacing).

Bot commands arrive by long polling (``get_updates``) on a connection pool of their own, so that
a poll held open for ``timeout`` seconds never delays a send.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Protocol, TextIO

import httpx
from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import ExtBot
from telegram.request import HTTPXRequest

from .errors import DeliveryError
from .logs import redact


class RetryLater(DeliveryError):
    """Telegram asked us to wait (429): retry this chat after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"Telegram flood control: retry after {retry_after_s:g}s")


class TransientError(DeliveryError):
    """A timeout, network error or 5xx: retry with backoff.

    ``maybe_sent``: the request went out and its answer was lost (read timeout, connection
    dropped before the answer): Telegram may have carried it out, and a retry may duplicate it.
    """

    def __init__(self, message: str, *, maybe_sent: bool = False) -> None:
        super().__init__(message)
        self.maybe_sent = maybe_sent


class ChatMoved(DeliveryError):
    """The group became a supergroup; its new id is ``new_chat``."""

    def __init__(self, new_chat: str) -> None:
        self.new_chat = new_chat
        super().__init__(f"chat migrated to {new_chat}")


class ChatUnavailable(DeliveryError):
    """The bot cannot post there (blocked, kicked, chat not found): pause the chat."""


class MarkupRejected(DeliveryError):
    """Telegram could not parse the HTML; resending as plain text will work."""


class MessageTooLong(DeliveryError):
    """Telegram says the text is over its limit; split and resend."""


class BadToken(DeliveryError):
    """Telegram rejected the bot token: nothing can be sent until an operator fixes it."""


class EditTargetGone(DeliveryError):
    """The message to edit was deleted, or can no longer be edited: drop the edit."""


@dataclass(frozen=True)
class Incoming:
    """A text message sent to the bot (a command, maybe)."""

    update_id: int
    chat: str  # where to answer
    private: bool  # a one-to-one chat with the user
    user: int | None  # who sent it (None in a channel)
    text: str


@dataclass(frozen=True)
class Outgoing:
    """One message to put in one chat."""

    chat: str
    text: str
    html: bool = True
    disable_preview: bool = True
    # How many times the usual read timeout to wait for the answer: raised after a send whose
    # answer was lost, so that a slow Telegram is waited for rather than sent it again.
    patience: int = 1


class Sender(Protocol):
    """Puts one message in one chat and returns Telegram's message id (None for the terminal);
    replaces the text of a message it sent."""

    wants_html: bool

    async def send(self, message: Outgoing) -> int | None: ...

    async def edit(self, message: Outgoing, message_id: int) -> None: ...

    async def aclose(self) -> None: ...


def _chat_arg(chat: str) -> int | str:
    return int(chat) if chat.lstrip("-").isdigit() else chat


class TelegramSender:
    """The real Bot API via python-telegram-bot, at the configured server root."""

    wants_html = True

    def __init__(self, *, api_url: str, token: str, timeout_s: float = 30.0) -> None:
        self._read_timeout_s = timeout_s

        def request(connections: int) -> HTTPXRequest:
            return HTTPXRequest(
                connection_pool_size=connections,
                connect_timeout=min(timeout_s, 10.0),
                read_timeout=timeout_s,
                write_timeout=timeout_s,
                pool_timeout=timeout_s,
            )

        # Sends share a pool; the bot's one long poll (getUpdates) has a connection of its own.
        self._bot: ExtBot[None] = ExtBot(
            token,
            base_url=f"{api_url}/bot",
            request=request(32),
            get_updates_request=request(1),
        )
        self._ready = False

    async def _ensure_ready(self) -> None:
        if not self._ready:
            try:
                await self._bot.initialize()
            except InvalidToken:
                raise BadToken(
                    "Telegram rejected the bot token (check the token and telegram.api_url)"
                ) from None
            except TelegramError as exc:
                raise TransientError(redact(f"cannot reach Telegram: {exc}")) from None
            self._ready = True

    async def send(self, message: Outgoing) -> int | None:
        """Send one message; raise one of this module's DeliveryError subclasses on failure."""
        await self._ensure_ready()
        try:
            sent = await self._bot.send_message(
                chat_id=_chat_arg(message.chat),
                text=message.text,
                parse_mode=ParseMode.HTML if message.html else None,
                link_preview_options=LinkPreviewOptions(is_disabled=message.disable_preview),
                read_timeout=self._read_timeout_s * message.patience,
            )
        except TelegramError as exc:
            raise _delivery_error(exc) from None
        return sent.message_id

    async def edit(self, message: Outgoing, message_id: int) -> None:
        """Replace the text of a message the bot sent; unchanged text counts as done.

        Raises EditTargetGone when the message is gone or can no longer be edited, else the
        same errors as send.
        """
        await self._ensure_ready()
        try:
            await self._bot.edit_message_text(
                chat_id=_chat_arg(message.chat),
                message_id=message_id,
                text=message.text,
                parse_mode=ParseMode.HTML if message.html else None,
                link_preview_options=LinkPreviewOptions(is_disabled=message.disable_preview),
                read_timeout=self._read_timeout_s * message.patience,
            )
        except BadRequest as exc:
            text = exc.message.lower()
            if "message is not modified" in text:
                return  # a retried edit that had already been applied
            if "message to edit not found" in text or "message can't be edited" in text:
                raise EditTargetGone(redact(exc.message)) from None
            raise _delivery_error(exc) from None
        except TelegramError as exc:
            raise _delivery_error(exc) from None

    async def get_updates(self, offset: int | None, timeout_s: float) -> list[Incoming]:
        """Long-poll for messages to the bot; confirms every update before ``offset``."""
        await self._ensure_ready()
        try:
            updates = await self._bot.get_updates(
                offset=offset,
                timeout=int(timeout_s),
                allowed_updates=[Update.MESSAGE],
            )
        except TelegramError as exc:
            raise _delivery_error(exc) from None
        incoming = []
        for update in updates:
            message = update.message
            if message is None or message.text is None:
                # Not a text message: confirmed (skipped) with an empty text.
                incoming.append(Incoming(update.update_id, "", False, None, ""))
                continue
            user = message.from_user
            if not self._for_this_bot(message.text):
                incoming.append(Incoming(update.update_id, "", False, None, ""))
                continue
            incoming.append(
                Incoming(
                    update_id=update.update_id,
                    chat=str(message.chat.id),
                    private=message.chat.type == "private",
                    user=None if user is None else user.id,
                    text=message.text,
                )
            )
        return incoming

    def _for_this_bot(self, text: str) -> bool:
        """False for "/command@OtherBot": in a group, that is another bot's command."""
        head = text.split(maxsplit=1)[0] if text.strip() else ""
        if not head.startswith("/") or "@" not in head:
            return True
        return head.split("@", 1)[1].lower() == (self._bot.username or "").lower()

    async def set_commands(self, commands: list[tuple[str, str]]) -> None:
        """The command menu Telegram shows users."""
        await self._ensure_ready()
        try:
            await self._bot.set_my_commands([BotCommand(name, about) for name, about in commands])
        except TelegramError as exc:
            raise _delivery_error(exc) from None

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        if self._ready:
            await self._bot.shutdown()


def _delivery_error(exc: TelegramError) -> DeliveryError:
    """The DeliveryError subclass the delivery loop acts on, for a PTB exception."""
    if isinstance(exc, RetryAfter):
        retry_after = exc.retry_after
        return RetryLater(
            retry_after if isinstance(retry_after, int | float) else retry_after.total_seconds()
        )
    if isinstance(exc, ChatMigrated):
        return ChatMoved(str(exc.new_chat_id))
    if isinstance(exc, Forbidden):
        return ChatUnavailable(redact(exc.message))
    if isinstance(exc, InvalidToken):
        return BadToken("Telegram rejected the bot token")
    if isinstance(exc, BadRequest):
        text = exc.message.lower()
        if "can't parse entities" in text or "can't find end" in text:
            return MarkupRejected(redact(exc.message))
        if "message is too long" in text:
            return MessageTooLong(redact(exc.message))
        if any(phrase in text for phrase in _CANNOT_POST):
            return ChatUnavailable(redact(exc.message))
        return DeliveryError(redact(exc.message))
    if isinstance(exc, TimedOut | NetworkError):
        return TransientError(
            redact(exc.message or type(exc).__name__),
            maybe_sent=isinstance(exc.__cause__, _ANSWER_LOST),
        )
    return TransientError(redact(exc.message))


# httpx errors after the request was written: Telegram may have carried it out. (A connect
# error, a connect or pool timeout, or a write timeout mean it never arrived whole.)
_ANSWER_LOST = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)

# 400s that mean the bot may not post in that chat (rights taken away, not a member): the
# chat is paused like a 403, not its alerts given up one by one.
_CANNOT_POST = (
    "chat not found",
    "not enough rights",
    "need administrator rights",
    "have no rights to send",
    "chat_write_forbidden",
)


class ConsoleSender:
    """No token configured: alerts are printed for a person to read, and count as delivered."""

    wants_html = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout

    async def send(self, message: Outgoing) -> int | None:
        """Print the message with the chat it was meant for."""
        print(f"──── alert for {message.chat} ────", file=self._stream)
        print(message.text, file=self._stream)
        print(file=self._stream, flush=True)
        return None

    async def edit(self, message: Outgoing, message_id: int) -> None:
        """Print the new text (the terminal has no message ids, so this is never called)."""
        print(f"──── update of alert {message_id} for {message.chat} ────", file=self._stream)
        print(message.text, file=self._stream)
        print(file=self._stream, flush=True)

    async def aclose(self) -> None:
        """Nothing to close."""
