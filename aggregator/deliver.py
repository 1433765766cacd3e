"""The deliver stage: drains the durable outbox chat by chat, under Telegram's limits.

One worker task per chat with pending alerts or edits sends them oldest first. A chat that must
wait (429, network trouble, a paused chat) waits alone; the other chats go on. An alert leaves
the outbox only after Telegram confirmed it (``Store.mark_sent``), so a crash at any moment
loses nothing; the one duplicate possible is a send confirmed in the instant before that write.
Edits (a near-duplicate's source added to an alert already sent) are queued in the store the
same way and leave it only once Telegram applied them (``Store.edit_done``); an edit sent twice
is harmless, Telegram answers "not modified".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from .errors import DeliveryError, StoreError
from .logs import event
from .metrics import Metrics
from .store import EditEntry, OutboxEntry, Store
from .telegram_api import (
    BadToken,
    ChatMoved,
    ChatUnavailable,
    EditTargetGone,
    MarkupRejected,
    MessageTooLong,
    Outgoing,
    RetryLater,
    Sender,
    TransientError,
)

log = logging.getLogger("aggregator.deliver")

# Longest wait between retries of a chat while Telegram fails (5xx, timeouts, network errors);
# the daemon takes it from [telegram] max_backoff. The first retry waits FIRST_BACKOFF_S, each
# next one twice as long.
MAX_BACKOFF_S = 60.0
FIRST_BACKOFF_S = 1.0
# Telegram allows about one message per second in a private chat; the rate limiter in
# telegram_api covers groups, channels and the overall rate.
PRIVATE_CHAT_INTERVAL_S = 1.0
# Telegram's limit is 4096 characters; plain-text fallback chunks stay well below it.
PLAIN_CHUNK = 4000
# An alert that Telegram refuses for a reason retrying cannot fix is given up after this many tries.
MAX_PERMANENT_FAILURES = 3


def _is_private(chat: str) -> bool:
    return chat.isdigit()


def _label(job: OutboxEntry | EditEntry) -> str:
    """How logs name a queued job: an alert's id, or the edit of a sent alert."""
    return job.id if isinstance(job, OutboxEntry) else f"edit {job.target}"


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
        metrics: Metrics | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self._store = store
        self._sender = sender
        self._metrics = metrics or Metrics()
        self._private_interval = private_chat_interval_s
        self._max_backoff = max_backoff_s
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Chats sleeping off a transient failure; set() cuts the sleep short (Telegram is back).
        self._backing_off: dict[str, asyncio.Event] = {}
        # Cleared while a sent alert cannot be recorded: no chat sends until the store can.
        self._store_writable = asyncio.Event()
        self._store_writable.set()
        self.store_error: str | None = None
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
        """Start a worker for every chat that has pending alerts or edits and none running."""
        if self._stop.is_set() or self.fatal:
            return
        chats = {entry.chat for entry in self._store.pending()}
        chats |= {edit.chat for edit in self._store.pending_edits()}
        for chat in chats:
            task = self._workers.get(chat)
            if chat not in self._paused and (task is None or task.done()):
                self._workers[chat] = asyncio.create_task(self._work(chat), name=f"deliver {chat}")

    def deliverable(self) -> int:
        """How many pending alerts and edits are for chats that are not paused."""
        jobs: list[OutboxEntry | EditEntry] = [*self._store.pending(), *self._store.pending_edits()]
        return sum(1 for job in jobs if job.chat not in self._paused)

    async def drain(self, timeout_s: float) -> int:
        """Deliver until nothing deliverable is left or the timeout passes; return how many
        alerts and edits are left."""
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
        return self._store.pending_count() + len(self._store.pending_edits())

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

    async def _wait_for(self, wake: asyncio.Event, seconds: float | None = None) -> None:
        """Sleep until ``wake`` is set, shutdown, or ``seconds`` (None: no limit) have passed."""
        waits = {asyncio.create_task(wake.wait()), asyncio.create_task(self._stop.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _back_off(self, chat: str, seconds: float) -> None:
        """Sleep off a transient failure; cut short once another chat gets through."""
        wake = self._backing_off[chat] = asyncio.Event()
        try:
            await self._wait_for(wake, seconds)
        finally:
            if self._backing_off.get(chat) is wake:
                del self._backing_off[chat]

    def _end_backoffs(self, chat: str) -> None:
        """``chat`` got through after transient failures: Telegram is back, so the chats still
        sleeping off theirs retry now instead of up to a whole backoff later. Chats waiting out a
        429 are not among them: its retry_after is obeyed exactly."""
        waiting = [other for other in self._backing_off if other != chat]
        for other in waiting:
            self._backing_off.pop(other).set()
        if waiting:
            event(
                log,
                logging.INFO,
                "Telegram answers again; retrying the waiting chats now",
                chat=chat,
                chats=len(waiting),
            )

    async def _until_store_writable(self) -> None:
        """Hold this chat while a sent alert cannot be recorded (see _record)."""
        if not self._store_writable.is_set():
            await self._wait_for(self._store_writable)

    def _next(self, chat: str) -> OutboxEntry | EditEntry | None:
        """The chat's oldest pending alert or edit."""
        jobs: list[OutboxEntry | EditEntry] = [
            *self._store.pending(chat)[:1],
            *self._store.pending_edits(chat)[:1],
        ]
        return min(jobs, key=lambda job: job.created_at, default=None)

    async def _work(self, chat: str) -> None:
        first_backoff = min(FIRST_BACKOFF_S, self._max_backoff)
        backoff = first_backoff
        failing = False  # the last attempt failed transiently (Telegram down or unreachable)
        while not self._stop.is_set():
            job = self._next(chat)
            if job is None:
                return
            job_id = _label(job)
            message_id: int | None = None
            if isinstance(job, EditEntry):
                record = self._store.sent_record(job.target)
                message_id = None if record is None else record.message_id
                if message_id is None:
                    # Given up on, sent to the terminal, or forgotten: nothing to edit.
                    await self._record(job, functools.partial(self._store.edit_done, job.target))
                    continue
            await self._pace(chat)
            await self._until_store_writable()
            if self._stop.is_set():
                return
            try:
                if isinstance(job, EditEntry):
                    assert message_id is not None
                    await self._edit(job, message_id)
                else:
                    message_id = await self._send(job)
            except RetryLater as exc:
                self.stats["retry_after"] += 1
                self._metrics.retry_after()
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
                # Jitter below the cap, so that chats failing together do not retry together.
                delay = min(backoff, self._max_backoff) * random.uniform(0.8, 1.0)
                backoff = min(backoff * 2, self._max_backoff)
                failing = True
                self.stats["transient_errors"] += 1
                event(
                    log,
                    logging.WARNING,
                    "send failed, will retry",
                    chat=chat,
                    alert=job_id,
                    error=str(exc),
                    retry_in_s=round(delay, 1),
                )
                await self._back_off(chat, delay)
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
                    queued=len(self._store.pending(chat)) + len(self._store.pending_edits(chat)),
                )
                return
            except BadToken as exc:
                self.fatal = exc
                event(log, logging.CRITICAL, str(exc))
                self._stop.set()
                return
            except EditTargetGone as exc:
                self.stats["edits_dropped"] += 1
                event(
                    log,
                    logging.INFO,
                    "alert to edit is gone; dropping the edit",
                    chat=chat,
                    alert=job_id,
                    error=str(exc),
                )
            except DeliveryError as exc:
                self._failures[job_id] += 1
                if self._failures[job_id] < MAX_PERMANENT_FAILURES:
                    event(
                        log,
                        logging.WARNING,
                        "Telegram refused the alert, will retry",
                        chat=chat,
                        alert=job_id,
                        error=str(exc),
                    )
                    await self._wait(min(backoff, self._max_backoff))
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self.stats["failed"] += 1
                if isinstance(job, OutboxEntry):
                    self._metrics.alert_failed()
                event(
                    log,
                    logging.ERROR,
                    "giving up on alert" if isinstance(job, OutboxEntry) else "giving up on edit",
                    chat=chat,
                    alert=job_id,
                    feed=job.feed if isinstance(job, OutboxEntry) else None,
                    watchlist=job.watchlist if isinstance(job, OutboxEntry) else None,
                    error=str(exc),
                )
                message_id = None
            else:
                self.stats["sent" if isinstance(job, OutboxEntry) else "edited"] += 1
                if isinstance(job, OutboxEntry):
                    self._metrics.alert_sent(job.created_at)  # created_at: item first seen
                if failing:
                    self._end_backoffs(chat)
            backoff, failing = first_backoff, False
            self._failures.pop(job_id, None)
            await self._record(job, self._done(job, message_id))

    def _done(self, job: OutboxEntry | EditEntry, message_id: int | None) -> Callable[[], None]:
        """The store write that retires a job Telegram answered (or that was given up on)."""
        if isinstance(job, EditEntry):
            return lambda: self._store.edit_done(job.target, sent_text=job.text)
        return lambda: self._store.mark_sent(
            job.id, message_id=message_id, sent_at=time.time(), sent_text=job.text
        )

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

    async def _edit(self, edit: EditEntry, message_id: int) -> None:
        html = self._sender.wants_html
        try:
            await self._sender.edit(
                Outgoing(
                    edit.chat,
                    edit.text if html else edit.plain,
                    html=html,
                    disable_preview=edit.disable_preview,
                ),
                message_id,
            )
        except MarkupRejected as exc:
            event(
                log,
                logging.WARNING,
                "Telegram could not parse the HTML; editing with plain text",
                chat=edit.chat,
                alert=edit.target,
                error=str(exc),
            )
            await self._sender.edit(
                Outgoing(edit.chat, edit.plain, html=False, disable_preview=edit.disable_preview),
                message_id,
            )
        finally:
            self._last_send[edit.chat] = time.monotonic()

    async def _send_plain(self, entry: OutboxEntry) -> int | None:
        first: int | None = None
        for piece in split_text(entry.plain):
            message_id = await self._sender.send(
                Outgoing(entry.chat, piece, html=False, disable_preview=entry.disable_preview)
            )
            first = first if first is not None else message_id
        return first

    async def _record(self, job: OutboxEntry | EditEntry, write: Callable[[], None]) -> None:
        """Retire a job in the store; while the disk refuses, hold every chat and keep retrying."""
        delay = min(FIRST_BACKOFF_S, self._max_backoff)
        attempts = 0
        while True:
            try:
                write()
            except StoreError as exc:
                # A send made now could not be recorded either, and would go out again after a
                # restart: no chat sends until the store can record what was already sent.
                self._store_writable.clear()
                self.store_error = str(exc)
                attempts += 1
                self.stats["store_write_failures"] += 1
                event(
                    log,
                    logging.ERROR,
                    "cannot record a sent alert; holding delivery",
                    chat=job.chat,
                    alert=_label(job),
                    error=str(exc),
                    attempts=attempts,
                    retry_in_s=round(delay, 1),
                )
                if self._stop.is_set():
                    return
                await self._wait(delay)
                delay = min(delay * 2, self._max_backoff)
                continue
            if not self._store_writable.is_set():
                event(
                    log,
                    logging.WARNING,
                    "store writable again; delivery resumes",
                    chat=job.chat,
                    alert=_label(job),
                    attempts=attempts,
                )
                self.store_error = None
                self._store_writable.set()
            return
