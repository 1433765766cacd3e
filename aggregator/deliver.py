"""The deliver stage: drains the durable outbox chat by chat, under Telegram's limits.

One worker task per chat with pending alerts sends them oldest first. A chat that must wait
(429, network trouble, a paused chat) waits alone; the other chats go on. An alert leaves the
outbox only after Telegram confirmed it (``Store.mark_sent``), so a crash at any moment loses
nothing; the one duplicate possible is a send confirmed in the instant before that write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter

from .errors import DeliveryError, StoreError
from .logs import event
from .store import OutboxEntry, Store
from .telegram_api import (
    BadToken,
    ChatMoved,
    ChatUnavailable,
    MarkupRejected,
    MessageTooLong,
    Outgoing,
    RetryLater,
    Sender,
    TransientError,
)

log = logging.getLogger("aggregator.deliver")

MAX_BACKOFF_S = 60.0
# Telegram allows about one message per second in a private chat; the rate limiter in
# telegram_api covers groups, channels and the overall rate.
PRIVATE_CHAT_INTERVAL_S = 1.0
# Telegram's limit is 4096 characters; plain-text fallback chunks stay well below it.
PLAIN_CHUNK = 4000
# An alert that Telegram refuses for a reason retrying cannot fix is given up after this many tries.
MAX_PERMANENT_FAILURES = 3


def _is_private(chat: str) -> bool:
    return chat.isdigit()


def split_text(text: str, limit: int = PLAIN_CHUNK) -> list[str]:
    """Cut text into pieces of at most ``limit`` characters, at line or word ends when possible."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        if cut < limit // 2:
            cut = text.rfind(" ", 0, limit)
        if cut < limit // 2:
            cut = limit
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip()
    if text:
        pieces.append(text)
    return pieces


class Deliverer:
    """Sends what the outbox holds; ``wake()`` after new alerts are committed."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        private_chat_interval_s: float = PRIVATE_CHAT_INTERVAL_S,
    ) -> None:
        self._store = store
        self._sender = sender
        self._private_interval = private_chat_interval_s
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._paused: dict[str, str] = {}
        self._last_send: dict[str, float] = {}
        self._failures: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self.fatal: DeliveryError | None = None
        self.stats: Counter[str] = Counter()

    @property
    def paused_chats(self) -> dict[str, str]:
        """Chats the bot cannot post to, with the reason."""
        return dict(self._paused)

    def wake(self) -> None:
        """Start a worker for every chat that has pending alerts and none running."""
        if self._stop.is_set() or self.fatal:
            return
        for chat in {entry.chat for entry in self._store.pending()}:
            task = self._workers.get(chat)
            if chat not in self._paused and (task is None or task.done()):
                self._workers[chat] = asyncio.create_task(self._work(chat), name=f"deliver {chat}")

    def deliverable(self) -> int:
        """How many pending alerts are for chats that are not paused."""
        return sum(1 for e in self._store.pending() if e.chat not in self._paused)

    async def drain(self, timeout_s: float) -> int:
        """Deliver until nothing deliverable is left or the timeout passes; return what is left."""
        deadline = time.monotonic() + timeout_s
        while not self.fatal:
            self.wake()
            running = [t for t in self._workers.values() if not t.done()]
            if not running:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        await self.aclose()
        return len(self._store.pending())

    async def aclose(self) -> None:
        """Stop the workers; a send already under way finishes and is recorded first."""
        self._stop.set()
        workers = [t for t in self._workers.values() if not t.done()]
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    async def _wait(self, seconds: float) -> None:
        """Sleep for this chat's pacing or backoff, cut short by shutdown."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

    async def _work(self, chat: str) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            pending = self._store.pending(chat)
            if not pending:
                return
            entry = pending[0]
            await self._pace(chat)
            if self._stop.is_set():
                return
            try:
                message_id = await self._send(entry)
            except RetryLater as exc:
                self.stats["retry_after"] += 1
                event(
                    log,
                    logging.WARNING,
                    "Telegram asked to wait",
                    chat=chat,
                    retry_after_s=exc.retry_after_s,
                )
                await self._wait(exc.retry_after_s)
                continue
            except TransientError as exc:
                delay = min(backoff, MAX_BACKOFF_S) * random.uniform(0.8, 1.2)
                backoff *= 2
                self.stats["transient_errors"] += 1
                event(
                    log,
                    logging.WARNING,
                    "send failed, will retry",
                    chat=chat,
                    alert=entry.id,
                    error=str(exc),
                    retry_in_s=round(delay, 1),
                )
                await self._wait(delay)
                continue
            except ChatMoved as exc:
                event(
                    log,
                    logging.WARNING,
                    "group became a supergroup; moving its alerts",
                    chat=chat,
                    new_chat=exc.new_chat,
                )
                self._store.replace_chat(chat, exc.new_chat)
                self.wake()
                return
            except ChatUnavailable as exc:
                self._paused[chat] = str(exc)
                self.stats["chats_paused"] += 1
                event(
                    log,
                    logging.ERROR,
                    "cannot post to chat; its alerts stay queued",
                    chat=chat,
                    error=str(exc),
                    queued=len(pending),
                )
                return
            except BadToken as exc:
                self.fatal = exc
                event(log, logging.CRITICAL, str(exc))
                self._stop.set()
                return
            except DeliveryError as exc:
                self._failures[entry.id] += 1
                if self._failures[entry.id] < MAX_PERMANENT_FAILURES:
                    event(
                        log,
                        logging.WARNING,
                        "Telegram refused the alert, will retry",
                        chat=chat,
                        alert=entry.id,
                        error=str(exc),
                    )
                    await self._wait(min(backoff, MAX_BACKOFF_S))
                    backoff *= 2
                    continue
                self.stats["failed"] += 1
                event(
                    log,
                    logging.ERROR,
                    "giving up on alert",
                    chat=chat,
                    alert=entry.id,
                    feed=entry.feed,
                    watchlist=entry.watchlist,
                    error=str(exc),
                )
                message_id = None
            else:
                self.stats["sent"] += 1
            backoff = 1.0
            await self._record_sent(entry, message_id)

    async def _pace(self, chat: str) -> None:
        if _is_private(chat) and self._private_interval > 0:
            last = self._last_send.get(chat)
            if last is not None:
                await self._wait(last + self._private_interval - time.monotonic())

    async def _send(self, entry: OutboxEntry) -> int | None:
        html = self._sender.wants_html
        text = entry.text if html else entry.plain
        try:
            return await self._sender.send(
                Outgoing(entry.chat, text, html=html, disable_preview=entry.disable_preview)
            )
        except MarkupRejected as exc:
            event(
                log,
                logging.WARNING,
                "Telegram could not parse the HTML; sending plain text",
                chat=entry.chat,
                alert=entry.id,
                error=str(exc),
            )
            return await self._send_plain(entry)
        except MessageTooLong:
            event(
                log,
                logging.WARNING,
                "message too long; sending it split",
                chat=entry.chat,
                alert=entry.id,
            )
            return await self._send_plain(entry)
        finally:
            self._last_send[entry.chat] = time.monotonic()

    async def _send_plain(self, entry: OutboxEntry) -> int | None:
        first: int | None = None
        for piece in split_text(entry.plain):
            message_id = await self._sender.send(
                Outgoing(entry.chat, piece, html=False, disable_preview=entry.disable_preview)
            )
            first = first if first is not None else message_id
        return first

    async def _record_sent(self, entry: OutboxEntry, message_id: int | None) -> None:
        """Remove a confirmed alert from the outbox; keep retrying if the disk refuses."""
        delay = 1.0
        while True:
            try:
                self._store.mark_sent(entry.id, message_id=message_id, sent_at=time.time())
                self._failures.pop(entry.id, None)
                return
            except StoreError as exc:
                # Sending more now would be duplicated after a restart: hold this chat until the
                # store can record what was already sent.
                event(
                    log,
                    logging.ERROR,
                    "cannot record a sent alert; holding delivery",
                    chat=entry.chat,
                    alert=entry.id,
                    error=str(exc),
                )
                if self._stop.is_set():
                    return
                await self._wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
