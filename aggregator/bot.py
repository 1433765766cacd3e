"""Bot commands, by long polling: subscriptions for everyone, status and control for admins.

A small getUpdates loop on the daemon's event loop rather than PTB's Application: the daemon
already owns the bot's HTTP client, its lifecycle and the send pacing, and an Application would
bring a second copy of each (its own Bot, initialize/shutdown, rate limiting). Answers go out
through ``Deliverer.send_now``, so they share the flood limits with alerts; they are not queued,
and a restart does not repeat them. Telegram re-sends updates not confirmed before a crash, so
every command is safe to run twice.

    /start, /help        what the bot does and its commands
    /list                watchlists open to subscription (subscribable = true)
    /subscribe NAME      private chats only: alerts of NAME also come here (kept in the store)
    /unsubscribe NAME
    /mine                this chat's subscriptions
    /status              admins: the daemon's status as `aggregator status` has it (health,
                         feeds, watchlists, queue per chat), formatted for a phone
    /test TEXT           admins: which watchlists match TEXT, and why (as `aggregator match`)
    /pause, /resume      admins: stop and restart all delivery (kept across restarts)
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .chats import Chats
from .errors import DeliveryError, StoreError
from .health import assess
from .logs import event
from .matching.explain import format_explanations
from .models import FIELDS
from .pipeline import Runtime
from .status import DaemonStatus
from .status_message import status_message
from .telegram_api import BadToken, Incoming, Outgoing, RetryLater, Sender, TelegramSender

log = logging.getLogger("aggregator.bot")

POLL_TIMEOUT_S = 30.0
MAX_POLL_BACKOFF_S = 60.0
ANSWER_MAX = 3900  # characters of an answer, within Telegram's 4096 after markup

COMMANDS = [
    ("help", "what this bot does"),
    ("list", "watchlists you can subscribe to"),
    ("subscribe", "NAME: get a watchlist's alerts here"),
    ("unsubscribe", "NAME: stop them"),
    ("mine", "your subscriptions"),
]
ADMIN_COMMANDS = ("status", "test", "pause", "resume")
REFUSAL = "Sorry, only the bot's admins can use /{command}."
PRIVATE_ONLY = "Subscriptions are personal: send /{command} to me in a private chat."


class UpdateSource(Protocol):
    """Where messages to the bot come from (the Bot API's getUpdates)."""

    async def get_updates(self, offset: int | None, timeout_s: float) -> list[Incoming]: ...

    async def set_commands(self, commands: list[tuple[str, str]]) -> None: ...


class Deliveries(Protocol):
    """What the bot needs of the deliverer."""

    def pause_all(self) -> None: ...

    def resume_all(self) -> None: ...

    async def send_now(self, message: Outgoing) -> bool: ...


class Bot:
    """Answers commands until ``stop()``."""

    def __init__(
        self,
        runtime: Runtime,
        deliveries: Deliveries,
        source: UpdateSource,
        *,
        status: Callable[[], DaemonStatus],
        poll_timeout_s: float = POLL_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        # The document the daemon writes to its status file, built afresh: /status renders
        # it, so that it cannot disagree with `aggregator status` and `aggregator health`.
        self._daemon_status = status
        self._deliveries = deliveries
        self._source = source
        self._poll_timeout_s = poll_timeout_s
        self._clock = clock
        self._chats = Chats(runtime.store)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.answered = 0

    @classmethod
    def start(
        cls,
        runtime: Runtime,
        deliveries: Deliveries,
        sender: Sender | None,
        *,
        status: Callable[[], DaemonStatus],
    ) -> Bot | None:
        """Answer commands in a task when the bot speaks to Telegram and commands are on."""
        if not isinstance(sender, TelegramSender) or not runtime.loaded.config.telegram.commands:
            return None
        bot = cls(runtime, deliveries, sender, status=status)
        bot._task = asyncio.create_task(bot.run(), name="bot commands")
        return bot

    async def aclose(self) -> None:
        """Stop answering; an answer under way is finished first."""
        self.stop()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def stop(self) -> None:
        """Finish the answer under way and return from ``run``."""
        self._stop.set()

    async def run(self) -> None:
        """Long-poll for commands and answer them until stopped (or the token is refused)."""
        try:
            await self._source.set_commands(COMMANDS)
        except DeliveryError as exc:
            event(log, logging.WARNING, "cannot set the bot's command menu", error=str(exc))
        offset: int | None = None
        backoff = 1.0
        while not self._stop.is_set():
            poll = asyncio.create_task(self._source.get_updates(offset, self._poll_timeout_s))
            stopping = asyncio.create_task(self._stop.wait())
            await asyncio.wait({poll, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not poll.done():
                # Not confirmed: Telegram hands the same updates to the next run.
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                return
            try:
                updates = poll.result()
            except RetryLater as exc:
                await self._sleep(exc.retry_after_s)
                continue
            except BadToken as exc:
                event(log, logging.ERROR, "bot commands off: token refused", error=str(exc))
                return
            except DeliveryError as exc:
                event(log, logging.WARNING, "getUpdates failed, will retry", error=str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_POLL_BACKOFF_S)
                continue
            backoff = 1.0
            for update in updates:
                offset = update.update_id + 1
                try:
                    answer = self.answer(update)
                except Exception:
                    # One bad command must not end the answering of all others.
                    log.exception("command failed", extra={"fields": {"chat": update.chat}})
                    answer = "Sorry, that failed; the admins can find why in the log."
                if answer is not None:
                    outgoing = Outgoing(update.chat, answer, html=True, disable_preview=True)
                    if await self._deliveries.send_now(outgoing):
                        self.answered += 1

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    # -- commands ---------------------------------------------------------------------------

    def answer(self, update: Incoming) -> str | None:
        """The HTML answer to one message; None when it needs none."""
        text = update.text.strip()
        if not text.startswith("/"):
            return self._help(update) if update.private and text else None
        head, _, rest = text.partition(" ")
        command = head[1:].split("@", 1)[0].lower()
        argument = rest.strip()
        event(log, logging.INFO, "command", chat=update.chat, user=update.user, command=command)
        if command in ADMIN_COMMANDS:
            if update.user not in self._runtime.loaded.config.telegram.admins:
                return html.escape(REFUSAL.format(command=command))
            return self._admin(command, argument)
        if command in ("start", "help"):
            return self._help(update)
        if command == "list":
            return self._list()
        if command in ("subscribe", "unsubscribe", "mine"):
            if not update.private:
                return html.escape(PRIVATE_ONLY.format(command=command))
            try:
                return self._subscriptions(command, argument, update.chat)
            except StoreError as exc:
                event(log, logging.ERROR, "cannot save a subscription", error=str(exc))
                return "Sorry, I could not save that just now. Please try again later."
        if not update.private:
            return None  # in a group it may well be another bot's: stay quiet
        return f"Unknown command /{html.escape(command)}. /help lists what I can do."

    def _admin(self, command: str, argument: str) -> str:
        if command == "status":
            return self._status()
        if command == "test":
            return self._test(argument)
        try:
            if command == "pause":
                self._deliveries.pause_all()
                return "Delivery paused everywhere. Alerts are kept; /resume sends them."
            self._deliveries.resume_all()
            return "Delivery resumed."
        except StoreError as exc:
            return f"Could not save that: {html.escape(str(exc))}"

    def _help(self, update: Incoming) -> str:
        lines = [
            "<b>News alerts</b>",
            "I send news items that match watchlists, as they appear.",
            "",
            *(f"/{name} {html.escape(about)}" for name, about in COMMANDS),
        ]
        if update.user in self._runtime.loaded.config.telegram.admins:
            lines += [
                "",
                "Admin: /status, /test TEXT (which watchlists match), /pause, /resume",
            ]
        return "\n".join(lines)

    def _subscribable(self) -> list[str]:
        return [w.name for w in self._runtime.loaded.config.watchlists if w.subscribable]

    def _list(self) -> str:
        names = self._subscribable()
        if not names:
            return "No watchlist is open to subscription."
        return "\n".join(
            ["Watchlists you can subscribe to:"]
            + [f"• <code>{html.escape(name)}</code>" for name in names]
            + ["", "Send /subscribe NAME."]
        )

    def _find(self, argument: str) -> str | None:
        """The subscribable watchlist named ``argument`` (case does not matter)."""
        wanted = argument.strip().casefold()
        return next((n for n in self._subscribable() if n.casefold() == wanted), None)

    def _subscriptions(self, command: str, argument: str, chat: str) -> str:
        if command == "mine":
            names = self._chats.subscriptions(chat)
            if not names:
                return "You have no subscriptions. /list shows what you can subscribe to."
            return "\n".join(
                ["Your subscriptions:"] + [f"• <code>{html.escape(n)}</code>" for n in names]
            )
        if not argument:
            return f"Which one? Send /{command} NAME; /list shows the names."
        if command == "unsubscribe":
            current = self._chats.subscriptions(chat)
            name = next((n for n in current if n.casefold() == argument.casefold()), None)
            if name is None or not self._chats.unsubscribe(chat, name):
                return f"You are not subscribed to <code>{html.escape(argument)}</code>."
            return f"Unsubscribed from <code>{html.escape(name)}</code>."
        name = self._find(argument)
        if name is None:
            return (
                f"No watchlist <code>{html.escape(argument)}</code> is open to subscription. "
                "/list shows the names."
            )
        if not self._chats.subscribe(chat, name):
            return f"You are already subscribed to <code>{html.escape(name)}</code>."
        return f"Subscribed to <code>{html.escape(name)}</code>: its alerts will come here."

    def _status(self) -> str:
        status = self._daemon_status()
        now = self._clock()
        try:
            # In the daemon's own process: alive, so judged as `aggregator health` judges it.
            health = assess(status, now).line()
        except Exception as exc:  # the rest of /status still helps the admin
            log.exception("cannot judge the daemon's health for /status")
            health = f"unknown ({type(exc).__name__} while judging it)"
        return status_message(status, health, now, self._runtime.message_options.timezone)

    def _test(self, text: str) -> str:
        if not text:
            return "Send /test TEXT: I show which watchlists match it, and why."
        fields = {name: (text if name == "title" else "") for name in FIELDS}
        report = format_explanations(text, self._runtime.matcher.explain(fields))
        return f"<pre>{html.escape(report[:ANSWER_MAX], quote=False)}</pre>"
