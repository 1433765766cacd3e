"""The deliver stage: drains the durable outbox chat by chat, under Telegram's limits.

One worker task per chat with pending alerts or edits sends them oldest first. A chat that must
wait (429, network trouble, a paused chat) waits alone; the other chats go on. An alert leaves
the outbox only after Telegram confirmed it (``Store.mark_sent``), so a crash at any moment
loses nothing; the one duplicate possible is a send confirmed in the instant before that write.
An alert too long for one message is sent in parts, one per turn at the gate, and how far it
got is written after each part (``Store.record_part``): a stop or a crash goes on with the next.
Edits (a near-duplicate's source added to an alert already sent) are queued in the store the
same way and leave it only once Telegram applied them (``Store.edit_done``); an edit sent twice
is harmless, Telegram answers "not modified".

Pacing: every send waits at a shared ``pacing.Gate`` that keeps Telegram's limits (overall, per
group or channel, per private chat), so 429s are not part of normal operation. When a chat's
backlog is more than its limit can carry before its oldest alert is ``max_delay`` old, alerts
are packed into digests; alerts held by a watchlist's quiet hours go out as a digest when those
end. A chat that refuses the bot (403) is paused alone, its admins told, and retried every
``paused_retry_s``; its alerts are kept for ``paused_keep_s`` and then given up, each logged.
A group that became a supergroup is followed to its new id, durably (chats.Chats). What is
queued for a chat the config no longer sends to is dropped, at start and at each reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, tzinfo
from html import unescape
from zoneinfo import ZoneInfo

from .chats import Chats, configured_chats
from .config import TELEGRAM_LIMITS, Config, TelegramSettings
from .digest import Digest, pack, quiet_title
from .errors import DeliveryError, StoreError
from .logs import event
from .metrics import Metrics
from .notices import queue_admin_notice
from .pacing import Gate, Limits, is_private
from .quiet import QuietHours
from .store import EditEntry, OutboxEntry, SplitProgress, Store
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

# The defaults of what the daemon takes from [telegram] (see config.TelegramSettings):
# the longest wait between retries of a chat while Telegram fails (the first waits
# FIRST_BACKOFF_S, each next one twice as long); the time within which a backlog must go out
# before it is packed into digests; how often a chat that refuses the bot is tried again,
# and how long its alerts are kept.
_SETTINGS = TelegramSettings()
MAX_BACKOFF_S = _SETTINGS.max_backoff
FIRST_BACKOFF_S = 1.0
MAX_DELAY_S = _SETTINGS.max_delay
# At most this many times send_timeout is waited for an answer after answers were lost.
MAX_PATIENCE = 8
PAUSED_RETRY_S = _SETTINGS.paused_retry
PAUSED_KEEP_S = _SETTINGS.paused_keep
# Room kept when planning a backlog against max_delay, as a fraction of it: sends take time.
DELAY_MARGIN = 0.1
# Telegram's limit is 4096 characters; plain-text fallback chunks stay well below it.
PLAIN_CHUNK = 4000
# An alert that Telegram refuses for a reason retrying cannot fix is given up after this many tries.
MAX_PERMANENT_FAILURES = 3


Job = OutboxEntry | EditEntry | Digest


@dataclasses.dataclass(frozen=True)
class _Sent:
    """A send's outcome: the id of its (first) message; for a message sent split, the parts
    still to send (each at a turn of its own at the gate) and whether they are HTML."""

    message_id: int | None
    later: tuple[str, ...] = ()
    html: bool = False


# Telegram's 403 descriptions for a user who blocked the bot or deleted their account.
_LEFT = ("bot was blocked by the user", "user is deactivated")


def _left_the_bot(chat: str, reason: str) -> bool:
    """Whether a refusal says that a private chat's user left the bot (not a channel's rights)."""
    return is_private(chat) and any(words in reason.lower() for words in _LEFT)


def _label(job: Job) -> str:
    """How logs name a queued job: an alert's id, the edit of a sent alert, or a digest."""
    if isinstance(job, OutboxEntry):
        return job.id
    if isinstance(job, EditEntry):
        return f"edit {job.target}"
    return f"digest of {len(job.ids)} from {job.ids[0]}"


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


def html_pieces(text: str, limit: int = PLAIN_CHUNK) -> list[str] | None:
    """A composed message cut between lines into pieces of at most ``limit`` characters.

    Every line of a composed message is complete markup on its own, so each piece is valid
    HTML; None if one line alone is too long (then the plain text is split instead).
    """
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        if len(line) > limit:
            return None
        if current and len(current) + 1 + len(line) > limit:
            pieces.append(current.strip("\n"))
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current.strip():
        pieces.append(current.strip("\n"))
    return [piece for piece in pieces if piece.strip()]


class Deliverer:
    """Sends what the outbox holds; ``wake()`` after new alerts are committed."""

    def __init__(
        self,
        store: Store,
        sender: Sender,
        *,
        limits: Limits | None = TELEGRAM_LIMITS,
        metrics: Metrics | None = None,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_delay_s: float = MAX_DELAY_S,
        paused_retry_s: float = PAUSED_RETRY_S,
        paused_keep_s: float = PAUSED_KEEP_S,
        admins: Sequence[int] = (),
        quiet_hours: Mapping[str, QuietHours] | None = None,
        timezone: tzinfo = UTC,
    ) -> None:
        self._store = store
        self._sender = sender
        self._metrics = metrics or Metrics()
        # None: no pacing at all (the terminal).
        self.gate = None if limits is None else Gate(limits)
        self._paced = True  # False for the terminal (from_config): apply() then sets no gate
        self._max_backoff = max_backoff_s
        self.max_delay_s = max_delay_s
        self.paused_retry_s = paused_retry_s
        self.paused_keep_s = paused_keep_s
        # Set again by the daemon on reload.
        self.admins: tuple[int, ...] = tuple(admins)
        self.quiet_hours: dict[str, QuietHours] = dict(quiet_hours or {})
        self.timezone = timezone
        self.chats = Chats(store)
        # What apply() was given; None (no config, as in tests): every chat is sent to.
        self._config: Config | None = None
        self._workers: dict[str, asyncio.Task[None]] = {}
        # Chats sleeping off a transient failure; set() cuts the sleep short (Telegram is back).
        self._backing_off: dict[str, asyncio.Event] = {}
        # Cleared while a sent alert cannot be recorded: no chat sends until the store can.
        self._store_writable = asyncio.Event()
        self._store_writable.set()
        # Set once a write has succeeded in this process (see _prove_store).
        self._store_proven = False
        self._proving = asyncio.Lock()
        # Chats whose last send's answer was lost: how many times send_timeout to wait next.
        self._patience: dict[str, int] = {}
        self.store_error: str | None = None
        self._paused: dict[str, str] = {}
        # Chats out of the config whose queue the store could not drop: held in _paused until
        # a wake drops it, or a config names them again (see _drop_unconfigured); with the
        # reason they were paused for before (they refused the bot), None if they were not.
        self._drop_held: dict[str, str | None] = {}
        self._durably_paused = set(self.chats.paused())
        self._all_paused = self.chats.delivery_paused
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._unpacked: set[str] = set()  # chats whose digest Telegram refused: send singly
        self._failures: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self.fatal: DeliveryError | None = None
        self.stats: Counter[str] = Counter()
        # New alerts are routed to a moved group's new id by the pipeline; this catches those
        # left at the old id by a stop between recording a move and moving its alerts.
        self._follow_moves()

    @classmethod
    def from_config(
        cls, store: Store, sender: Sender, config: Config, *, paced: bool, metrics: Metrics
    ) -> Deliverer:
        """A deliverer with the [telegram] settings; ``paced`` False for the terminal."""
        deliverer = cls(store, sender, limits=None, metrics=metrics)
        deliverer._paced = paced
        deliverer.apply(config)
        deliverer._drop_unconfigured()  # edited while stopped: dropped before any send
        return deliverer

    def apply(self, config: Config) -> None:
        """Take the [telegram] and watchlist settings (at start and on reload).

        What is queued for chats the config no longer sends to is dropped at the next wake,
        not here: a reload that fails after this step is rolled back, and a drop could not be.
        """
        telegram = config.telegram
        self._max_backoff = telegram.max_backoff
        self.max_delay_s = telegram.max_delay
        self.paused_retry_s = telegram.paused_retry
        self.paused_keep_s = telegram.paused_keep
        self.admins = telegram.admins
        self.timezone = ZoneInfo(telegram.timezone)
        self.quiet_hours = {w.name: w.quiet_hours for w in config.watchlists if w.quiet_hours}
        self._config = config
        limits = Limits(telegram.overall_limit, telegram.group_limit, telegram.private_limit)
        if not self._paced:
            self.gate = None
        elif self.gate is not None:
            # Changed in place: sends waiting for room see the new limits, and stop() still
            # reaches them (a gate swapped for a new one would keep them waiting).
            if self.gate.limits != limits:
                self.gate.set_limits(limits)
        else:
            self.gate = Gate(limits)
            # What a previous process sent in the last window still counts at Telegram.
            longest = max(limits.overall.window_s, limits.group.window_s, limits.private.window_s)
            self.gate.seed(
                self._store.recent_sends(time.time() - longest), self._store.chats_with_pending()
            )

    @property
    def paused_chats(self) -> dict[str, str]:
        """Chats the bot cannot post to, with the reason: also those paused before a restart
        that have not been tried again yet."""
        stored = {chat: reason for chat, (_, reason) in self.chats.paused().items()}
        return {**stored, **self._paused}

    @property
    def all_paused(self) -> bool:
        """True while an admin has paused all delivery."""
        return self._all_paused

    def pause_all(self) -> None:
        """Stop sending anywhere (durably) until ``resume_all``; sends under way finish."""
        self.chats.set_delivery_paused(True)
        self._all_paused = True
        event(log, logging.WARNING, "all delivery paused by an admin")

    def resume_all(self) -> None:
        """Send again after ``pause_all``."""
        self.chats.set_delivery_paused(False)
        self._all_paused = False
        event(log, logging.INFO, "delivery resumed by an admin")
        self.wake()

    def wake(self) -> None:
        """Start a worker for every chat that has pending alerts or edits and none running."""
        if self._stop.is_set() or self.fatal or self._all_paused:
            return
        self._drop_unconfigured()
        chats = set(self._store.chats_with_pending())
        chats |= self._store.pending_edit_counts().keys()
        for chat in [c for c, task in self._workers.items() if task.done()]:
            del self._workers[chat]  # a chat that once had alerts needs no task kept
        for chat in chats:
            task = self._workers.get(chat)
            if chat not in self._paused and (task is None or task.done()):
                self._workers[chat] = asyncio.create_task(self._work(chat), name=f"deliver {chat}")

    def _drop_unconfigured(self) -> None:
        """Drop what is queued for chats the config no longer sends to: the admins took a
        channel, a watchlist or an admin out and reloaded, or edited the config while the
        daemon was stopped (or a poll begun before a reload queued alerts by the old config).
        Sent, they would reach a chat the admins took out; kept, a chat that also removed the
        bot would be retried, and reported to the admins, for paused_keep."""
        if self._config is None:
            return
        queued = set(self._store.chats_with_pending()) | self._store.pending_edit_counts().keys()
        if not queued and not self._drop_held:
            return
        configured = configured_chats(self._config, self.chats)
        for chat in sorted(self._drop_held.keys() & configured):
            # Put back in the config before its queue could be dropped: it is sent after all.
            refusal = self._drop_held.pop(chat)
            if refusal is not None and chat in self._timers:
                # It refused the bot too: still paused, until its retry is due (the timer).
                self._paused[chat] = refusal
            else:
                self._paused.pop(chat, None)
            event(log, logging.INFO, "chat is in the config again; its queue is kept", chat=chat)
        for chat in sorted(queued - configured):
            self._drop_chat(chat)

    def _drop_chat(self, chat: str) -> None:
        jobs = self._queued(chat)
        try:
            self._retire_unsent(jobs)
            if chat in self._durably_paused:
                self.chats.unpause(chat)  # no longer ours to report as paused
        except StoreError as exc:
            # Held like a paused chat (no worker sends to it), and tried again at the next wake.
            if chat not in self._drop_held:
                self._drop_held[chat] = self._paused.get(chat)
            self._paused[chat] = f"no longer in the config; its queue cannot be dropped: {exc}"
            event(
                log,
                logging.ERROR,
                "cannot drop what is queued for a chat no longer in the config",
                chat=chat,
                error=str(exc),
            )
            return
        self._drop_held.pop(chat, None)
        self._durably_paused.discard(chat)
        self._paused.pop(chat, None)
        timer = self._timers.pop(chat, None)
        if timer is not None:
            timer.cancel()
        # Split alerts whose first parts are out arrived (in part): only their rest is dropped.
        started = [
            (job, job.split)
            for job in jobs
            if isinstance(job, OutboxEntry) and job.split is not None
        ]
        for entry, split in started:
            self._rest_given_up(entry, split, "chat is no longer in the config", logging.WARNING)
        self.stats["dropped_unconfigured"] += len(jobs) - len(started)
        event(
            log,
            logging.WARNING,
            "chat is no longer in the config (nor subscribed); dropping what was queued for it",
            chat=chat,
            dropped=len(jobs) - len(started),
            **({"split_rest_dropped": len(started)} if started else {}),
        )

    def _follow_moves(self) -> None:
        """Alerts queued for a group that became a supergroup go to its new id."""
        moves = self.chats.moves()
        if not moves:
            return
        for chat in set(self._store.chats_with_pending()) & moves.keys():
            try:
                self._store.replace_chat(chat, self.chats.current(chat))
            except StoreError as exc:
                event(log, logging.ERROR, "cannot move alerts to the new chat id", error=str(exc))

    def deliverable(self) -> int:
        """How many pending alerts and edits are for chats that are not paused."""
        if self._all_paused:
            return 0
        alerts = sum(
            n for chat, n in self._store.pending_counts().items() if chat not in self._paused
        )
        edits = sum(
            n for chat, n in self._store.pending_edit_counts().items() if chat not in self._paused
        )
        return alerts + edits

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

    def stop(self) -> None:
        """Start to stop: no new send begins, and waits (for room, for a retry) end now."""
        self._stop.set()
        if self.gate is not None:
            self.gate.close()  # workers waiting for room stop now, not when room comes

    async def aclose(self) -> None:
        """Stop the workers; a send already under way finishes and is recorded first."""
        self.stop()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        workers = [t for t in self._workers.values() if not t.done()]
        if workers:
            await asyncio.gather(*workers, return_exceptions=True)

    async def _wait(self, seconds: float) -> None:
        """Sleep for this chat's backoff or retry_after, cut short by shutdown."""
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

    async def _prove_store(self) -> None:
        """Before this process's first send, one durable write. A store that cannot record
        (a disk already full at start) then holds delivery as _record does, instead of letting
        each chat send an alert that cannot be recorded, and again after every restart."""
        async with self._proving:  # one write for all the chats that start together
            if self._store_proven:
                return
            await self._record(
                None, functools.partial(self._store.set_meta, "delivery_checked_at", time.time())
            )
            self._store_proven = self._store_writable.is_set()

    async def _until_store_writable(self) -> None:
        """Hold this chat while a sent alert cannot be recorded (see _record)."""
        if not self._store_writable.is_set():
            await self._wait_for(self._store_writable)

    def _wake_at(self, chat: str, delay_s: float) -> None:
        """Look at ``chat`` again in ``delay_s`` seconds (quiet hours end, paused chat retry)."""
        old = self._timers.pop(chat, None)
        if old is not None:
            old.cancel()

        def again() -> None:
            self._timers.pop(chat, None)
            self._paused.pop(chat, None)
            self.wake()

        self._timers[chat] = asyncio.get_running_loop().call_later(max(0.0, delay_s), again)

    # -- what to send next --------------------------------------------------------------------

    def _from_quiet_hours(self, entry: OutboxEntry) -> bool:
        quiet = self.quiet_hours.get(entry.watchlist)
        return quiet is not None and quiet.is_quiet(entry.created_at, self.timezone)

    def _capacity(self, chat: str, oldest: float, now: float) -> int:
        """How many messages this chat can still take before its oldest alert is max_delay old,
        counting the send about to be made."""
        if self.gate is None:
            return 1 << 30
        rate = self.gate.limits.for_chat(chat)
        left_s = oldest + self.max_delay_s * (1 - DELAY_MARGIN) - now
        later = rate.count * math.floor(max(0.0, left_s) / rate.window_s)
        return 1 + self.gate.room(chat) + later

    def _plan(self, chat: str, now: float) -> Job | float | None:
        """The next job for ``chat``; or when its held alerts are released; None: nothing."""
        entries = self._store.pending(chat)
        # A split alert whose first part is out goes on before anything else: its next part
        # is never packed into a digest, nor held by quiet hours that began since.
        started = next((entry for entry in entries if entry.split is not None), None)
        if started is not None:
            return started
        edits = self._store.pending_edits(chat)[:1]
        # Each watchlist's quiet hours are looked at once, not once per alert.
        quiet_now = {
            name for name, quiet in self.quiet_hours.items() if quiet.is_quiet(now, self.timezone)
        }
        ready = [entry for entry in entries if entry.watchlist not in quiet_now]
        if not ready and not edits:
            if not entries:
                return None
            quiet = [self.quiet_hours[entry.watchlist] for entry in entries]
            return min(q.ends_after(now, self.timezone) for q in quiet)
        if edits and (not ready or edits[0].created_at < ready[0].created_at):
            return edits[0]
        if len(ready) > 1 and chat not in self._unpacked:
            released = (
                [entry for entry in ready if self._from_quiet_hours(entry)]
                if self.quiet_hours
                else []
            )
            if len(released) > 1:
                digest = pack(released, len(released), quiet_title)
                if digest is not None:
                    return digest
            capacity = self._capacity(chat, ready[0].created_at, now)
            if len(ready) > capacity:
                digest = pack(ready, math.ceil(len(ready) / max(1, capacity)))
                if digest is not None:
                    return digest
        return ready[0]

    @contextlib.asynccontextmanager
    async def _slot(self, chat: str) -> AsyncIterator[None]:
        if self.gate is None:
            yield
        else:
            async with self.gate.slot(chat):
                yield

    # -- the worker ---------------------------------------------------------------------------

    async def _work(self, chat: str) -> None:
        first_backoff = min(FIRST_BACKOFF_S, self._max_backoff)
        backoff = first_backoff
        failing = False  # the last attempt failed transiently (Telegram down or unreachable)
        while not self._stop.is_set() and not self._all_paused and chat not in self._paused:
            if not self._store.has_pending(chat):
                # Its backlog is gone: a digest refused once no longer keeps later ones off.
                self._unpacked.discard(chat)
                return
            # The job itself is planned once there is room (below): the backlog may grow
            # while it waits. Before that, only quiet hours can hold everything back.
            if self.quiet_hours and isinstance(held := self._plan(chat, time.time()), float):
                self._wake_at(chat, held - time.time())
                return
            if not self._store_proven:
                await self._prove_store()
            await self._until_store_writable()
            if self._stop.is_set():
                return
            error: DeliveryError | None = None
            message_id: int | None = None
            sent: _Sent | None = None
            async with self._slot(chat):
                if (
                    self._stop.is_set()
                    or self._all_paused
                    or chat in self._paused
                    or not self._store_writable.is_set()
                ):
                    # Stopped, paused (all, or this chat: see _drop_chat), or the store failed
                    # while it waited for room: send nothing (the loop waits for the store).
                    continue
                job = self._plan(chat, time.time())
                if job is None or isinstance(job, float):
                    continue
                if isinstance(job, EditEntry):
                    record = self._store.sent_record(job.target)
                    message_id = None if record is None else record.message_id
                    if message_id is None:
                        # Given up on, sent to the terminal or in a digest: nothing to edit.
                        await self._record(
                            job, functools.partial(self._store.edit_done, job.target)
                        )
                        continue
                try:
                    if isinstance(job, EditEntry):
                        assert message_id is not None
                        await self._edit(job, message_id)
                    elif isinstance(job, OutboxEntry) and job.split is not None:
                        # One part per turn at the gate, like any message: sent past it, a
                        # burst of long alerts would break Telegram's limits.
                        await self._send_part(job, job.split)
                        message_id = job.split.message_id
                    else:
                        sent = await self._send(job)
                        message_id = sent.message_id
                except DeliveryError as exc:
                    error = exc
            job_id = _label(job)
            if error is None:
                self._patience.pop(chat, None)
                if failing:
                    self._end_backoffs(chat)
                backoff, failing = first_backoff, False
                self._failures.pop(job_id, None)
                progress = _progress(job, sent, time.time())
                if progress is not None:
                    # Parts still to send: how far it got is recorded after each part, so
                    # that a stop or a crash neither loses the rest nor repeats what is out.
                    assert isinstance(job, OutboxEntry)
                    self._reopened(chat)
                    await self._record(
                        job, functools.partial(self._store.record_part, job.id, progress)
                    )
                    continue
                self._sent(chat, job)
                await self._record(job, self._done(job, message_id))
                continue
            if isinstance(error, RetryLater):
                self.stats["retry_after"] += 1
                self._metrics.retry_after()
                event(
                    log,
                    logging.WARNING,
                    "Telegram asked to wait",
                    chat=chat,
                    retry_after_s=error.retry_after_s,
                )
                await self._wait(error.retry_after_s)
            elif isinstance(error, TransientError):
                # Jitter below the cap, so that chats failing together do not retry together.
                delay = min(backoff, self._max_backoff) * random.uniform(0.8, 1.0)
                backoff = min(backoff * 2, self._max_backoff)
                failing = True
                self.stats["transient_errors"] += 1
                fields: dict[str, object] = {}
                if error.maybe_sent:
                    # Telegram may have it: retried (nothing may be lost), but waiting longer
                    # for the answer, so that a slow Telegram gets one copy more, not one per
                    # timeout.
                    self.stats["maybe_sent"] += 1
                    patience = min(self._patience.get(chat, 1) * 2, MAX_PATIENCE)
                    self._patience[chat] = patience
                    fields = {"maybe_sent": True, "answer_wait": f"{patience}x send_timeout"}
                event(
                    log,
                    logging.WARNING,
                    "send failed, will retry",
                    chat=chat,
                    alert=job_id,
                    error=str(error),
                    retry_in_s=round(delay, 1),
                    **fields,
                )
                await self._back_off(chat, delay)
            elif isinstance(error, ChatMoved):
                self._moved(chat, error.new_chat)
                return
            elif isinstance(error, ChatUnavailable):
                self._refused(chat, str(error))
                return
            elif isinstance(error, BadToken):
                self.fatal = error
                event(log, logging.CRITICAL, str(error))
                self._stop.set()
                return
            elif isinstance(error, EditTargetGone):
                self.stats["edits_dropped"] += 1
                event(
                    log,
                    logging.INFO,
                    "alert to edit is gone; dropping the edit",
                    chat=chat,
                    alert=job_id,
                    error=str(error),
                )
                await self._record(job, self._done(job, None))
            elif isinstance(job, EditEntry) and isinstance(error, MessageTooLong):
                # An alert sent in parts, whose new text ("also: ...") is as long: one message
                # cannot hold it, now or after retries, and the chat need not wait for them.
                self.stats["edits_dropped"] += 1
                event(
                    log,
                    logging.WARNING,
                    "edited text too long for one message; the alert keeps its text",
                    chat=chat,
                    alert=job_id,
                )
                await self._record(job, self._done(job, None))
            elif isinstance(job, OutboxEntry) and job.split is not None:
                # A later part refused for good: logged, and the rest still sent (sending the
                # alert again would repeat the parts already delivered).
                self._piece_lost(job, job.split, error)
                rest = job.split.advanced(None)
                if rest is None:
                    self._sent(chat, job)
                    await self._record(job, self._done(job, job.split.message_id))
                else:
                    await self._record(
                        job, functools.partial(self._store.record_part, job.id, rest)
                    )
            elif isinstance(job, Digest):
                # Telegram refused the packed message: its alerts go one by one, each with its
                # own retries and give-up.
                self._unpacked.add(chat)
                event(
                    log,
                    logging.WARNING,
                    "Telegram refused a digest; sending its alerts one by one",
                    chat=chat,
                    alert=job_id,
                    error=str(error),
                )
            else:
                self._failures[job_id] += 1
                if self._failures[job_id] < MAX_PERMANENT_FAILURES:
                    event(
                        log,
                        logging.WARNING,
                        "Telegram refused the alert, will retry",
                        chat=chat,
                        alert=job_id,
                        error=str(error),
                    )
                    await self._wait(min(backoff, self._max_backoff))
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self._failures.pop(job_id, None)
                self._give_up(job, str(error))
                backoff = first_backoff
                await self._record(job, self._done(job, None))

    def _sent(self, chat: str, job: Job) -> None:
        """Count a confirmed send; a chat that was paused is evidently open again."""
        if isinstance(job, EditEntry):
            self.stats["edited"] += 1
        else:
            created = (job.created_at,) if isinstance(job, OutboxEntry) else job.created_at
            self.stats["sent"] += len(created)
            if isinstance(job, Digest):
                self.stats["digests"] += 1
            for created_at in created:
                self._metrics.alert_sent(created_at)  # created_at: item first seen
        self._reopened(chat)

    def _reopened(self, chat: str) -> None:
        """A send to ``chat`` went through: if it was paused, it is evidently open again."""
        if chat in self._durably_paused:
            self._durably_paused.discard(chat)
            with contextlib.suppress(StoreError):
                self.chats.unpause(chat)
            event(log, logging.INFO, "chat takes alerts again", chat=chat)

    def _give_up(self, job: OutboxEntry | EditEntry, error: str) -> None:
        """Log and count an alert (or edit) that will not be sent."""
        self.stats["failed"] += 1
        if isinstance(job, OutboxEntry):
            self._metrics.alert_failed()
        event(
            log,
            logging.ERROR,
            "giving up on alert" if isinstance(job, OutboxEntry) else "giving up on edit",
            chat=job.chat,
            alert=_label(job),
            feed=job.feed if isinstance(job, OutboxEntry) else None,
            watchlist=job.watchlist if isinstance(job, OutboxEntry) else None,
            error=error,
        )

    def _rest_given_up(
        self, entry: OutboxEntry, split: SplitProgress, why: str, level: int
    ) -> None:
        """Log and count a split alert whose first parts reached the chat and whose other
        parts will not: it arrived (in part), so it counts as sent, its parts not sent as
        lost; not as an alert given up on."""
        self.stats["sent"] += 1
        self.stats["pieces_lost"] += len(split.left)
        self._metrics.alert_sent(entry.created_at, now=split.sent_at[0] if split.sent_at else None)
        event(
            log,
            level,
            "giving up on the rest of a split alert; its first parts were delivered",
            chat=entry.chat,
            alert=_label(entry),
            feed=entry.feed,
            watchlist=entry.watchlist,
            delivered=len(split.sent_at),
            given_up=len(split.left),
            parts=split.done + len(split.left),
            error=why,
        )

    def _moved(self, chat: str, new_chat: str) -> None:
        event(
            log,
            logging.WARNING,
            "group became a supergroup; moving its alerts",
            chat=chat,
            new_chat=new_chat,
        )
        try:
            self.chats.record_move(chat, new_chat)
            self._store.replace_chat(chat, new_chat)
        except StoreError as exc:
            # The next send to the old id is refused the same way, and this runs again.
            event(log, logging.ERROR, "cannot record the chat's new id", error=str(exc))
        if self.gate is not None:
            self.gate.forget(chat)
        self.wake()

    def _refused(self, chat: str, reason: str) -> None:
        """The chat refuses the bot: pause it alone, tell the admins once, retry later, and give
        its alerts up once they are older than paused_keep_s."""
        if _left_the_bot(chat, reason) and self._unsubscribe_left(chat, reason):
            return
        now = time.time()
        try:
            since = self.chats.pause(chat, reason, now)
        except StoreError:
            since = now
        first = chat not in self._durably_paused
        self._durably_paused.add(chat)
        self._paused[chat] = reason
        queued = len(self._store.pending(chat)) + len(self._store.pending_edits(chat))
        if first:
            self.stats["chats_paused"] += 1
        event(
            log,
            logging.ERROR,
            "cannot post to chat; its alerts stay queued",
            chat=chat,
            error=reason,
            queued=queued,
            retry_in_s=self.paused_retry_s,
        )
        if now - since >= self.paused_keep_s:
            self._expire(chat, reason)
            # Still retried: a chat that lets the bot in again gets its new alerts.
            self._wake_at(chat, self.paused_retry_s)
            return
        if first and self.admins:
            try:
                told = queue_admin_notice(
                    self._store,
                    self.admins,
                    f"Cannot post to chat {chat}; its alerts are kept",
                    [
                        reason,
                        f"{queued} alert(s) queued; retried every {self.paused_retry_s:g}s, "
                        f"given up after {self.paused_keep_s:g}s",
                    ],
                    skip=chat,
                )
            except StoreError as exc:
                event(log, logging.ERROR, "cannot queue the notice to admins", error=str(exc))
            else:
                self._metrics.alerts_queued(told)  # counted like every other queued alert
                self.wake()
        self._wake_at(chat, self.paused_retry_s)

    def _unsubscribe_left(self, chat: str, reason: str) -> bool:
        """A subscriber blocked the bot or deleted their account: their choice, not a fault
        for the admins. Unsubscribe them and drop what was queued for them, each alert logged,
        instead of pausing the chat, retrying it for paused_keep_s and telling the admins
        again after every expiry. False (pause it as any chat) if it was no subscriber or the
        store cannot record the change."""
        watchlists = self.chats.subscriptions(chat)
        if not watchlists:
            return False  # a private chat named in the config: the admins must fix that
        jobs = self._queued(chat)
        try:
            for name in watchlists:
                self.chats.unsubscribe(chat, name)
            self._retire_unsent(jobs)
            if chat in self._durably_paused:
                self.chats.unpause(chat)
        except StoreError as exc:
            event(log, logging.ERROR, "cannot unsubscribe a chat that left", error=str(exc))
            return False
        self._durably_paused.discard(chat)
        self._paused.pop(chat, None)
        self.stats["subscribers_left"] += 1
        for job in jobs:
            event(
                log,
                logging.INFO,
                "dropping alert for a subscriber who left",
                chat=chat,
                alert=_label(job),
            )
        event(
            log,
            logging.WARNING,
            "subscriber left the bot; unsubscribed",
            chat=chat,
            watchlists=",".join(watchlists),
            dropped=len(jobs),
            error=reason,
        )
        return True

    def _expire(self, chat: str, reason: str) -> None:
        """A chat refused the bot for longer than paused_keep_s: give its alerts up."""
        jobs = self._queued(chat)
        why = f"chat refused the bot for over {self.paused_keep_s:g}s: {reason}"
        for job in jobs:
            if isinstance(job, OutboxEntry) and job.split is not None:
                self._rest_given_up(job, job.split, why, logging.ERROR)
            else:
                self._give_up(job, why)
        try:
            self._retire_unsent(jobs)
            self.chats.unpause(chat)
        except StoreError as exc:
            event(log, logging.ERROR, "cannot record given-up alerts", error=str(exc))
        self._durably_paused.discard(chat)

    def _queued(self, chat: str) -> list[OutboxEntry | EditEntry]:
        """Every alert and edit waiting for the chat."""
        return [*self._store.pending(chat), *self._store.pending_edits(chat)]

    def _retire_unsent(self, jobs: Sequence[OutboxEntry | EditEntry]) -> None:
        """Take jobs that will never be sent (or not all their parts) out of the queue
        (raises StoreError). A split alert whose first part is out keeps that part's message
        id in its sent record: edits of it reach the chat's message."""
        now = time.time()
        entries = [job.id for job in jobs if isinstance(job, OutboxEntry) and job.split is None]
        self._store.mark_sent_many(entries, message_id=None, sent_at=now)
        for job in jobs:
            if isinstance(job, OutboxEntry) and job.split is not None:
                self._store.mark_sent(job.id, message_id=job.split.message_id, sent_at=now)
            elif isinstance(job, EditEntry):
                self._store.edit_done(job.target)

    def _done(self, job: Job, message_id: int | None) -> Callable[[], None]:
        """The store write that retires a job Telegram answered (or that was given up on)."""
        if isinstance(job, EditEntry):
            return lambda: self._store.edit_done(job.target, sent_text=job.text)
        if isinstance(job, Digest):
            # No message id: the digest is not one alert's message, so no edit may replace it.
            return lambda: self._store.mark_sent_many(job.ids, message_id=None, sent_at=time.time())
        # A split alert's parts were cut from the text it had then: if it has another since
        # (a near-duplicate joined its story), mark_sent queues the edit to it.
        sent_text = job.text if job.split is None else job.split.text
        return lambda: self._store.mark_sent(
            job.id, message_id=message_id, sent_at=time.time(), sent_text=sent_text
        )

    # -- sending ------------------------------------------------------------------------------

    async def _send(self, job: OutboxEntry | Digest) -> _Sent:
        if isinstance(job, Digest):
            # Never split: its parts could not be resumed after a stop (no one entry holds
            # them). Packed under Telegram's limit, it is not too long; if Telegram finds it
            # so, the digest is refused and its alerts go one by one.
            return await self._send_text(
                job.chat, job.html, job.plain, True, _label(job), whole=True
            )
        return await self._send_text(
            job.chat, job.text, job.plain, job.disable_preview, _label(job)
        )

    async def _send_text(
        self,
        chat: str,
        html_text: str,
        plain: str,
        disable_preview: bool,
        label: str,
        *,
        whole: bool = False,
    ) -> _Sent:
        html = self._sender.wants_html
        try:
            message_id = await self._sender.send(
                Outgoing(
                    chat,
                    html_text if html else plain,
                    html=html,
                    disable_preview=disable_preview,
                    patience=self._patience.get(chat, 1),
                )
            )
            return _Sent(message_id)
        except MarkupRejected as exc:
            event(
                log,
                logging.WARNING,
                "Telegram could not parse the HTML; sending plain text",
                chat=chat,
                alert=label,
                error=str(exc),
            )
            return await self._send_plain(chat, plain, disable_preview, label, whole=whole)
        except MessageTooLong:
            if whole:
                raise
            event(
                log, logging.WARNING, "message too long; sending it split", chat=chat, alert=label
            )
            pieces = html_pieces(html_text) if html else None
            if pieces is None:
                return await self._send_plain(chat, plain, disable_preview, label)
            return await self._send_pieces(chat, pieces, True, disable_preview)

    async def _edit(self, edit: EditEntry, message_id: int) -> None:
        html = self._sender.wants_html
        try:
            await self._sender.edit(
                Outgoing(
                    edit.chat,
                    edit.text if html else edit.plain,
                    html=html,
                    disable_preview=edit.disable_preview,
                    patience=self._patience.get(edit.chat, 1),
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

    async def _send_plain(
        self, chat: str, plain: str, disable_preview: bool, label: str, *, whole: bool = False
    ) -> _Sent:
        pieces = split_text(plain)
        if whole and len(pieces) > 1:
            raise MessageTooLong(f"{label}: its plain text is too long for one message")
        return await self._send_pieces(chat, pieces, False, disable_preview)

    async def _send_pieces(
        self, chat: str, pieces: list[str], html: bool, disable_preview: bool
    ) -> _Sent:
        """Send the first of one alert's messages; the others are left for later turns at the
        gate (see _send_part). A failure of the first raises: the alert is retried as usual."""
        if not pieces:
            return _Sent(None)
        # The first part waits for its answer as long as a whole message would (patience):
        # otherwise a slow Telegram gets it again on every retry.
        first = Outgoing(
            chat,
            pieces[0],
            html=html,
            disable_preview=disable_preview,
            patience=self._patience.get(chat, 1),
        )
        return _Sent(await self._sender.send(first), tuple(pieces[1:]), html)

    async def _send_part(self, entry: OutboxEntry, split: SplitProgress) -> None:
        """Send the next part of a split alert whose first part is out; a part whose HTML
        Telegram cannot parse is sent as plain text, as a whole alert is (see _send_text)."""
        part = Outgoing(
            entry.chat,
            split.left[0],
            html=split.html,
            disable_preview=entry.disable_preview,
            patience=self._patience.get(entry.chat, 1),
        )
        try:
            await self._sender.send(part)
        except MarkupRejected as exc:
            plain = _part_to_plain(part.text) if part.html else ""
            if not plain.strip():
                raise
            event(
                log,
                logging.WARNING,
                "Telegram could not parse the HTML of a part; sending it as plain text",
                chat=entry.chat,
                alert=_label(entry),
                part=split.next_part,
                error=str(exc),
            )
            await self._sender.send(dataclasses.replace(part, text=plain, html=False))

    def _piece_lost(self, entry: OutboxEntry, split: SplitProgress, error: DeliveryError) -> None:
        self.stats["pieces_lost"] += 1
        event(
            log,
            logging.ERROR,
            "part of a split alert could not be sent; the others are sent",
            chat=entry.chat,
            alert=_label(entry),
            part=split.next_part,
            error=str(error),
        )

    async def send_now(self, message: Outgoing) -> bool:
        """Send a message that is not an alert (a bot command's answer) at once, within the
        limits; not queued, so a restart does not repeat it. False if it could not be sent."""
        for _ in range(3):
            try:
                async with self._slot(message.chat):
                    try:
                        await self._sender.send(message)
                    except MarkupRejected:
                        # The same text without its markup: as HTML source it would show tags.
                        text = _markup_to_plain(message.text) if message.html else message.text
                        plain = dataclasses.replace(message, text=text, html=False)
                        await self._sender.send(plain)
                return True
            except RetryLater as exc:
                await self._wait(exc.retry_after_s)
            except TransientError:
                await self._wait(FIRST_BACKOFF_S)
            except DeliveryError as exc:
                event(log, logging.WARNING, "cannot answer", chat=message.chat, error=str(exc))
                return False
        event(log, logging.WARNING, "cannot answer; gave up", chat=message.chat)
        return False

    async def _record(self, job: Job | None, write: Callable[[], None]) -> None:
        """Retire a job in the store (None: check that it can write at all, _prove_store);
        while the disk refuses, hold every chat and keep retrying."""
        delay = min(FIRST_BACKOFF_S, self._max_backoff)
        attempts = 0
        about: dict[str, object] = {} if job is None else {"chat": job.chat, "alert": _label(job)}
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
                    "cannot write the store; holding delivery"
                    if job is None
                    else "cannot record a sent alert; holding delivery",
                    **about,
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
                    **about,
                    attempts=attempts,
                )
                self.store_error = None
                self._store_writable.set()
            return


def _progress(job: Job, sent: _Sent | None, now: float) -> SplitProgress | None:
    """What is left of a split alert once Telegram confirmed one of its parts at ``now``;
    None when nothing is (it was the last part, or the alert was not split)."""
    if not isinstance(job, OutboxEntry):
        assert sent is None or not sent.later, "a digest is never split"
        return None
    if job.split is not None:
        return job.split.advanced(now)
    if sent is None or not sent.later:
        return None
    return SplitProgress(
        message_id=sent.message_id,
        html=sent.html,
        left=sent.later,
        done=1,
        sent_at=(now,),
        text=job.text,
    )


_TAG = re.compile(r"<[^>]*>")


def _markup_to_plain(html_text: str) -> str:
    """Our own Telegram HTML (a few tags, lines split by "\n") as the text it shows."""
    return unescape(_TAG.sub("", html_text))


_LINK = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.DOTALL)


def _part_to_plain(html_text: str) -> str:
    """A part of a composed alert (whole lines of its HTML, see html_pieces) as plain text.

    As compose makes an alert's plain twin: the text the HTML shows, and each link's address
    after its text (the "also:" line's sources), since plain text cannot carry it otherwise.
    """
    return _markup_to_plain(_LINK.sub(r"\2 \1", html_text))
