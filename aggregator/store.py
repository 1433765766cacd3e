"""Everything the daemon keeps, behind one small interface: seen keys, feed state, outbox, sent,
stories and edits.

The data is a TinyDB document held in memory (see storage.py for the files and why they are
safe to kill at any point). This module adds the domain on top: typed records, in-memory indexes
so that ``is_seen`` is a dict lookup, and batches: each public write is exactly one durable
journal append, so marking items seen, queueing their alerts and saving the feed's state happen
together or not at all. If the append fails, nothing in memory changes.

Tables (TinyDB documents, integer ids assigned here):
    seen     {"key", "feed", "seen_at"}             one per item key
    feeds    {"feed", <FeedState fields>}           one per feed
    present  {"feed", "keys": [...]}                keys in the feed's last parsed body (retention)
    outbox   {<OutboxEntry fields>}                 alerts waiting for Telegram ("split" only
                                                    once a too long one's first part is out)
    sent     {"id", "item_key", "chat", "watchlist", "feed", "message_id", "sent_at",
              "parts_at" (a split alert's earlier parts only)}
    meta     {"key", "value"}                       small named values (set_meta)
    stories  {"id", "created_at", "expires_at", "words", "numbers", "sources", "messages"}
                                                    recent alerts' stories, for near-duplicates
    edits    {<EditEntry fields>}                   edits of sent alerts waiting for Telegram

Measured (bench/bench_store.py, 100,000 seen keys = 13.7 MB snapshot, 2-CPU VM, local SSD):
    is_seen                       0.2 µs    (plain TinyDB ``contains``: 230 ms, a table scan)
    commit, 50 keys + 5 alerts    0.85 ms median, 1.1-2.4 ms p99, fsync included (plain
                                  TinyDB ``insert_multiple``: 580 ms, a whole-file rewrite
                                  without fsync)
    mark_sent                     0.2 ms
    open                          0.15 s snapshot only, 0.26-0.34 s with the journal at its
                                  compaction threshold (plain TinyDB open + read: 0.26 s)
    compaction                    see README; about once per 640 such commits (the journal
                                  grows as large as the snapshot first), run by
                                  ``compact_if_due()`` between polls, never inside a commit.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from .cluster import Fingerprint, Source
from .errors import StoreError
from .storage import DEFAULT_COMPACT_MIN_BYTES, Document, JournalStorage, Op, dumps

SEEN, FEEDS, PRESENT, OUTBOX, SENT, META = "seen", "feeds", "present", "outbox", "sent", "meta"
STORIES, EDITS = "stories", "edits"
TABLES = (SEEN, FEEDS, PRESENT, OUTBOX, SENT, META, STORIES, EDITS)
# FeedState fields that a poll which found nothing new changes (see Store.note_poll), and how
# long such changes may wait in memory before they are written.
POLL_TIMES = frozenset(
    {
        "last_attempt_at",
        "last_success_at",
        "next_poll_at",
        "interval_s",
        "poll_reason",
        "http_floor_s",  # Expires minus Date shrinks from one answer to the next
    }
)
POLL_FLUSH_S = 60.0


def outbox_id(key: str, chat: str) -> str:
    """The id of the outbox entry for item (or notice) ``key`` in ``chat``: one alert per story
    per chat, whichever watchlist found it first; a notice queued again is not sent twice."""
    return hashlib.sha256(f"{key}\x00{chat}".encode()).hexdigest()[:24]


@dataclass
class FeedState:
    """What the scheduler and fetcher remember about one feed between polls."""

    etag: str | None = None
    last_modified: str | None = None
    # The URL those validators came from: another URL (the admin changed it, a redirect made
    # permanent) is fetched without them, or its own older copy would answer 304 for ever.
    validators_url: str | None = None
    body_hash: str | None = None
    initialized: bool = False  # its first poll has been processed (backfill done)
    last_attempt_at: float | None = None  # epoch seconds
    last_success_at: float | None = None
    consecutive_failures: int = 0
    last_error: str | None = None
    url_override: str | None = None  # permanent-redirect target
    identify_by: str = "guid"  # "guid", or "link" once its guids proved unreliable (for good)
    guid_problem: str | None = None  # why its guids are not used
    # Polling policy (aggregator.polling), kept so that a restart neither forgets a feed's pace
    # nor retries a server that asked us to wait before it said we may.
    moved_from: str | None = None  # the config URL url_override replaces (a new one drops it)
    gone_url: str | None = None  # the config URL that answered 410 Gone; not polled while set
    interval_s: float | None = None  # current interval, before jitter
    next_poll_at: float | None = None  # epoch seconds
    poll_reason: str | None = None  # why that interval: "learned", "ttl floor", "backoff", ...
    watching_since: float | None = None  # first successful poll
    item_times: list[float] = field(default_factory=list)  # when recent items appeared
    feed_ttl_s: float | None = None  # RSS <ttl>, from the last parse
    feed_update_period_s: float | None = None  # sy:updatePeriod / sy:updateFrequency, likewise
    http_floor_s: float | None = None  # Cache-Control max-age / Expires, last response
    suspended: bool = False  # failed polling.suspend_after times in a row (admins told)


@dataclass(frozen=True)
class SplitProgress:
    """How far an alert too long for one message got: its first part is out, ``left`` not yet.

    Saved on the alert's outbox entry (``Store.record_part``) each time Telegram confirms a
    part, so that after a stop or a crash delivery goes on with the next part: none lost, none
    sent twice (but the one Telegram may have taken as the crash struck, as for any message).
    """

    message_id: int | None  # the first part's: the alert's message, for edits
    html: bool  # whether the parts are Telegram HTML (else plain text)
    left: tuple[str, ...]  # the parts still to send, in order; never empty
    done: int  # the parts dealt with: sent, or refused for good (logged)
    sent_at: tuple[float, ...]  # when each part Telegram confirmed was sent, for pacing
    text: str  # the alert's text the parts were cut from (it may get another meanwhile)

    @property
    def next_part(self) -> str:
        """Which part comes next, of how many, for the logs: "2/3"."""
        return f"{self.done + 1}/{self.done + len(self.left)}"

    def advanced(self, sent_at: float | None) -> SplitProgress | None:
        """The progress once the next part was sent at ``sent_at`` (None: refused for good);
        None when that was the last part."""
        if len(self.left) <= 1:
            return None
        times = self.sent_at if sent_at is None else (*self.sent_at, sent_at)
        return replace(self, left=self.left[1:], done=self.done + 1, sent_at=times)


@dataclass(frozen=True)
class OutboxEntry:
    """One alert for one chat, persisted before any send attempt."""

    id: str  # unique, stable: caller builds it from (item key, watchlist, chat)
    chat: str  # chat id as text: "@name" or "-1001234567890" or "12345"
    text: str  # the Telegram HTML exactly as it will be sent
    plain: str  # plain-text fallback
    watchlist: str
    item_key: str
    feed: str
    created_at: float  # epoch seconds (item first seen)
    disable_preview: bool = False
    # Set once the first part of an alert too long for one message is out. Stored only then:
    # entries without it (all of them before this field existed) are whole alerts.
    split: SplitProgress | None = None


@dataclass(frozen=True)
class SeenRecord:
    """An item key marked as seen, with the feed it came from."""

    key: str
    feed: str
    seen_at: float


@dataclass(frozen=True)
class SentRecord:
    """An alert Telegram confirmed (or that was given up on: message_id None)."""

    id: str
    item_key: str
    chat: str
    watchlist: str
    feed: str
    message_id: int | None
    sent_at: float


@dataclass(frozen=True)
class StoryMessage:
    """A story's alert in one chat: its outbox entry and its text before any "also:" line."""

    entry: str  # outbox entry id (its sent record holds the Telegram message id)
    html: str
    plain: str
    disable_preview: bool
    source: str  # the outlet this alert came from (never listed under "also:" in it)


@dataclass(frozen=True)
class Story:
    """A recent alert's story: what near-duplicates are compared with, and what to edit."""

    id: str  # the key of the item that started it
    created_at: float
    expires_at: float  # no longer joined nor kept after this (epoch seconds)
    fingerprint: Fingerprint
    sources: tuple[Source, ...]  # outlets that carried it, first one first
    messages: dict[str, StoryMessage]  # chat -> its alert there; do not modify


@dataclass(frozen=True)
class EditEntry:
    """A new text for an alert Telegram already has, persisted before the edit is sent."""

    target: str  # the sent alert's outbox entry id; one pending edit per alert
    chat: str
    text: str
    plain: str
    disable_preview: bool
    created_at: float


@dataclass(frozen=True)
class StoreStats:
    """Sizes, for status output and health checks."""

    seen: int
    feeds: int
    pending: int
    sent: int
    journal_bytes: int
    snapshot_bytes: int
    stories: int = 0
    edits: int = 0


_FEED_STATE_FIELDS = tuple(f.name for f in fields(FeedState))
_SENT_RECORD_FIELDS = tuple(f.name for f in fields(SentRecord))


class _Batch:
    """The changes of one durable write: at most one op per document, ids allocated locally."""

    def __init__(self, tables: Document, next_id: dict[str, int]) -> None:
        self._tables = tables
        self.next_id = dict(next_id)
        self.ops: dict[tuple[str, str], dict[str, Any] | None] = {}

    def put(self, table: str, doc_id: str | None, value: dict[str, Any]) -> None:
        """Write a document; a new one (doc_id None) gets the table's next id."""
        if doc_id is None:
            doc_id = str(self.next_id[table])
            self.next_id[table] += 1
        self.ops[table, doc_id] = value

    def delete(self, table: str, doc_id: str) -> None:
        """Remove a document."""
        self.ops[table, doc_id] = None

    def current(self, table: str, doc_id: str) -> dict[str, Any] | None:
        """The document as this batch leaves it."""
        if (table, doc_id) in self.ops:
            return self.ops[table, doc_id]
        return self._tables[table].get(doc_id)


class Store:
    """The daemon's durable state; methods are synchronous and meant for one event loop."""

    def __init__(self, storage: JournalStorage) -> None:
        self._storage = storage
        self.path = storage.path
        self.readonly = storage.readonly
        self._doc = storage.read()
        for table in TABLES:
            self._doc.setdefault(table, {})
        self._seen: dict[str, str] = {}  # item key -> doc id
        self._feeds: dict[str, str] = {}  # feed -> doc id
        # Feed docs changed in memory by note_poll and not yet written, since when.
        self._unsaved_polls: set[str] = set()
        self._unsaved_since: float | None = None
        self._present: dict[str, tuple[str, frozenset[str]]] = {}  # feed -> (doc id, keys)
        self._outbox: dict[str, str] = {}  # entry id -> doc id
        self._outbox_by_chat: dict[str, dict[str, None]] = {}  # chat -> entry ids (ordered set)
        self._sent: dict[str, str] = {}  # entry id -> doc id
        self._sent_by_item_chat: dict[tuple[str, str], str] = {}
        self._meta: dict[str, str] = {}
        self._stories: dict[str, tuple[str, Story]] = {}  # story id -> (doc id, story)
        self._edits: dict[str, str] = {}  # target entry id -> doc id
        self._edits_by_chat: dict[str, dict[str, None]] = {}  # chat -> targets (ordered set)
        self._next_id: dict[str, int] = {}
        # Why the last write failed, and since when (epoch seconds); None once a write succeeds.
        self.write_error: str | None = None
        self.write_failing_since: float | None = None
        self._build_indexes()

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        readonly: bool = False,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    ) -> Store:
        """Open (or create) the store at ``path``; locks it unless read-only.

        Read-only never writes: a missing store opens empty, a damaged one is recovered in memory.
        """
        storage = JournalStorage(path, readonly=readonly, compact_min_bytes=compact_min_bytes)
        try:
            return cls(storage)
        except BaseException:
            storage.close()
            raise

    def close(self) -> None:
        """Write what note_poll kept in memory, compact if due (so short runs such as
        ``aggregator once`` keep the journal bounded too), then release the lock; later writes
        raise StoreError."""
        if not self.readonly:
            with contextlib.suppress(StoreError):  # already logged by the writer's caller
                self.flush_polls()
        self.compact_if_due()
        self._storage.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- indexes ------------------------------------------------------------------------------

    def _build_indexes(self) -> None:
        table, doc_id = "", ""
        try:
            for table in TABLES:
                docs = self._doc[table]
                self._next_id[table] = max(map(int, docs), default=0) + 1
            # The seen table is the big one: one comprehension instead of a call per document.
            table = SEEN
            self._seen = {d["key"]: i for i, d in self._doc[SEEN].items()}
            for table in (FEEDS, PRESENT, OUTBOX, SENT, META, STORIES, EDITS):
                for doc_id, value in self._doc[table].items():
                    self._index(table, doc_id, value)
        except (KeyError, TypeError, ValueError) as exc:
            where = f"table {table!r}" + (f" document {doc_id}" if doc_id else "")
            raise StoreError(
                f"store {self.path}: {where} is malformed ({type(exc).__name__}: {exc})"
            ) from exc

    def _index(self, table: str, doc_id: str, value: dict[str, Any]) -> None:
        if table == SEEN:
            self._seen[value["key"]] = doc_id
        elif table == FEEDS:
            self._feeds[value["feed"]] = doc_id
        elif table == PRESENT:
            self._present[value["feed"]] = (doc_id, frozenset(value["keys"]))
        elif table == OUTBOX:
            self._outbox[value["id"]] = doc_id
            self._outbox_by_chat.setdefault(value["chat"], {})[value["id"]] = None
        elif table == SENT:
            self._sent[value["id"]] = doc_id
            self._sent_by_item_chat[value["item_key"], value["chat"]] = doc_id
        elif table == META:
            self._meta[value["key"]] = doc_id
        elif table == STORIES:
            self._stories[value["id"]] = (doc_id, _story(value))
        elif table == EDITS:
            self._edits[value["target"]] = doc_id
            self._edits_by_chat.setdefault(value["chat"], {})[value["target"]] = None

    def _unindex(self, table: str, doc_id: str, value: dict[str, Any]) -> None:
        if table == SEEN:
            self._seen.pop(value["key"], None)
        elif table == FEEDS:
            self._feeds.pop(value["feed"], None)
        elif table == PRESENT:
            self._present.pop(value["feed"], None)
        elif table == OUTBOX:
            self._outbox.pop(value["id"], None)
            by_chat = self._outbox_by_chat.get(value["chat"], {})
            by_chat.pop(value["id"], None)
            if not by_chat:
                self._outbox_by_chat.pop(value["chat"], None)
        elif table == SENT:
            self._sent.pop(value["id"], None)
            item_chat = (value["item_key"], value["chat"])
            if self._sent_by_item_chat.get(item_chat) == doc_id:
                del self._sent_by_item_chat[item_chat]
        elif table == META:
            self._meta.pop(value["key"], None)
        elif table == STORIES:
            self._stories.pop(value["id"], None)
        elif table == EDITS:
            self._edits.pop(value["target"], None)
            edits = self._edits_by_chat.get(value["chat"], {})
            edits.pop(value["target"], None)
            if not edits:
                self._edits_by_chat.pop(value["chat"], None)

    def _write(self, batch: _Batch) -> None:
        """One durable write, then the same changes in memory (which cannot fail)."""
        if not batch.ops:
            return
        ops: list[Op] = [(t, i, v) for (t, i), v in batch.ops.items()]
        try:
            self._storage.append(ops)
        except StoreError as exc:
            self.write_error = str(exc)
            self.write_failing_since = self.write_failing_since or time.time()
            raise
        self.write_error = self.write_failing_since = None
        for table, doc_id, value in ops:
            docs = self._doc[table]
            old = docs.get(doc_id)
            if old is not None:
                self._unindex(table, doc_id, old)
            if value is None:
                docs.pop(doc_id, None)
            else:
                docs[doc_id] = value
                self._index(table, doc_id, value)
        self._next_id = batch.next_id
        if self._unsaved_polls:
            self._unsaved_polls.difference_update(i for t, i, _ in ops if t == FEEDS)
            if not self._unsaved_polls:  # all written with this batch: nothing waits
                self._unsaved_since = None

    def _batch(self) -> _Batch:
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        return _Batch(self._doc, self._next_id)

    # -- reads --------------------------------------------------------------------------------

    def is_seen(self, key: str) -> bool:
        """True if this item key was committed as seen (and not yet pruned)."""
        return key in self._seen

    def feed_state(self, feed: str) -> FeedState:
        """A copy of the feed's state; a fresh FeedState if the feed is unknown."""
        doc_id = self._feeds.get(feed)
        if doc_id is None:
            return FeedState()
        return _feed_state(self._doc[FEEDS][doc_id])

    def feed_states(self) -> dict[str, FeedState]:
        """Copies of every known feed's state, by feed name."""
        return {feed: _feed_state(self._doc[FEEDS][i]) for feed, i in self._feeds.items()}

    def pending(self, chat: str | None = None) -> list[OutboxEntry]:
        """Alerts waiting to be sent (for one chat, or all), oldest first."""
        docs = self._doc[OUTBOX]
        if chat is None:
            doc_ids = list(self._outbox.values())
        else:
            doc_ids = [self._outbox[e] for e in self._outbox_by_chat.get(chat, {})]
        doc_ids.sort(key=lambda i: (docs[i]["created_at"], int(i)))
        return [_outbox_entry(docs[i]) for i in doc_ids]

    def pending_count(self) -> int:
        """How many alerts are waiting, without building them."""
        return len(self._outbox)

    def is_pending(self, entry_id: str) -> bool:
        """True while this alert waits in the outbox."""
        return entry_id in self._outbox

    def pending_edits(self, chat: str | None = None) -> list[EditEntry]:
        """Edits waiting to be sent (for one chat, or all), oldest first."""
        docs = self._doc[EDITS]
        if chat is None:
            doc_ids = list(self._edits.values())
        else:
            doc_ids = [self._edits[t] for t in self._edits_by_chat.get(chat, {})]
        doc_ids.sort(key=lambda i: (docs[i]["created_at"], int(i)))
        return [EditEntry(**docs[i]) for i in doc_ids]

    def stories(self) -> list[Story]:
        """Every story kept (expired ones too, until the next prune)."""
        return [story for _, story in self._stories.values()]

    def seen_by(self, key: str) -> str | None:
        """The feed whose item first had this key, or None if the key is not seen."""
        doc_id = self._seen.get(key)
        if doc_id is None:
            return None
        feed: str = self._doc[SEEN][doc_id]["feed"]
        return feed

    def sent_record(self, entry_id: str) -> SentRecord | None:
        """What was recorded when this outbox entry was sent; None if unknown or pruned."""
        doc_id = self._sent.get(entry_id)
        if doc_id is None:
            return None
        doc = self._doc[SENT][doc_id]
        return SentRecord(**{name: doc[name] for name in _SENT_RECORD_FIELDS})

    def recent_sends(self, since: float) -> dict[str, list[float]]:
        """When each chat was last sent messages, from ``since`` (epoch seconds) on, oldest
        first; the alerts of one digest count as one message, each part of a split alert as
        one (also of one still being sent). For pacing after a restart."""
        # A digest's alerts are recorded together with no message id and one sent_at; so are
        # alerts given up on together, which then count as a send too (erring on the safe side).
        messages: dict[tuple[str, float], float] = {}
        parts: list[tuple[str, float]] = []
        for doc in self._doc[SENT].values():
            message_id, sent_at = doc["message_id"], doc["sent_at"]
            if sent_at >= since:
                messages[(doc["chat"], sent_at if message_id is None else message_id)] = sent_at
            parts += [(doc["chat"], at) for at in doc.get("parts_at", ()) if at >= since]
        for doc in self._doc[OUTBOX].values():
            split = doc.get("split")
            if split is not None:
                parts += [(doc["chat"], at) for at in split["sent_at"] if at >= since]
        sends: dict[str, list[float]] = {}
        for (chat, _), sent_at in messages.items():
            sends.setdefault(chat, []).append(sent_at)
        for chat, sent_at in parts:
            sends.setdefault(chat, []).append(sent_at)
        for times in sends.values():
            times.sort()
        return sends

    def chats_with_pending(self) -> list[str]:
        """Chats that have alerts waiting."""
        return [chat for chat, entries in self._outbox_by_chat.items() if entries]

    def pending_counts(self) -> dict[str, int]:
        """How many alerts wait for each chat (from the index: no entry is built)."""
        return {chat: len(entries) for chat, entries in self._outbox_by_chat.items() if entries}

    def pending_edit_counts(self) -> dict[str, int]:
        """How many edits wait for each chat (from the index: no entry is built)."""
        return {chat: len(edits) for chat, edits in self._edits_by_chat.items() if edits}

    def has_pending(self, chat: str) -> bool:
        """Whether alerts or edits wait for this chat (from the index)."""
        return bool(self._outbox_by_chat.get(chat) or self._edits_by_chat.get(chat))

    def sent_message_id(self, item_key: str, chat: str) -> int | None:
        """The Telegram message id of the latest alert for this item in this chat, for edits."""
        doc_id = self._sent_by_item_chat.get((item_key, chat))
        if doc_id is None:
            return None
        message_id: int | None = self._doc[SENT][doc_id]["message_id"]
        return message_id

    def get_meta(self, key: str) -> object | None:
        """A copy of the value saved under ``key``, or None."""
        doc_id = self._meta.get(key)
        return None if doc_id is None else copy.deepcopy(self._doc[META][doc_id]["value"])

    def stats(self) -> StoreStats:
        """Table sizes and file sizes."""
        return StoreStats(
            seen=len(self._seen),
            feeds=len(self._feeds),
            pending=len(self._outbox),
            sent=len(self._sent),
            journal_bytes=self._storage.journal_bytes,
            snapshot_bytes=self._storage.snapshot_bytes,
            stories=len(self._stories),
            edits=len(self._edits),
        )

    # -- writes -------------------------------------------------------------------------------

    def commit(
        self,
        *,
        feed: str | None = None,
        state: FeedState | None = None,
        seen: Iterable[SeenRecord] = (),
        alerts: Iterable[OutboxEntry] = (),
        present_keys: Iterable[str] | None = None,
        stories: Iterable[Story] = (),
        edits: Iterable[EditEntry] = (),
        retexts: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        """Mark items seen, queue their alerts and save the feed's state in one durable write.

        Keys already seen keep their first record; alerts whose id is pending or already sent
        are skipped. ``present_keys`` are the keys in the feed's current body: they are kept past
        the retention time. ``stories`` are saved (replacing those of the same id), ``edits``
        queued (replacing a pending edit of the same alert), and ``retexts`` (entry id ->
        (text, plain)) give alerts still pending their new text. On StoreError nothing changed,
        on disk or in memory.
        """
        if feed is None and (state is not None or present_keys is not None):
            raise ValueError("Store.commit: state and present_keys need the feed they belong to")
        batch = self._batch()
        new_keys: set[str] = set()
        for record in seen:
            if record.key not in self._seen and record.key not in new_keys:
                new_keys.add(record.key)
                batch.put(SEEN, None, asdict(record))
        new_ids: set[str] = set()
        for entry in alerts:
            if entry.id in self._outbox or entry.id in self._sent or entry.id in new_ids:
                continue
            _check_entry(entry)
            new_ids.add(entry.id)
            batch.put(OUTBOX, None, _outbox_doc(entry))
        if feed is not None and state is not None:
            doc_id = self._feeds.get(feed)
            value = _feed_doc(feed, state)
            if doc_id is None or self._doc[FEEDS][doc_id] != value:
                batch.put(FEEDS, doc_id, value)
        if feed is not None and present_keys is not None:
            keys = list(dict.fromkeys(present_keys))
            doc_id, current = self._present.get(feed, (None, frozenset()))
            if doc_id is None or current != frozenset(keys):
                batch.put(PRESENT, doc_id, {"feed": feed, "keys": keys})
        for story in stories:
            if not story.id:
                raise ValueError("Story.id must not be empty")
            batch.put(STORIES, self._stories.get(story.id, (None,))[0], _story_doc(story))
        for edit in edits:
            if not edit.target or not edit.chat:
                raise ValueError(f"EditEntry needs a target and a chat (edit {edit!r:.200})")
            batch.put(EDITS, self._edits.get(edit.target), asdict(edit))
        for entry_id, (text, plain) in (retexts or {}).items():
            entry_doc_id = self._outbox.get(entry_id)
            pending = None if entry_doc_id is None else batch.current(OUTBOX, entry_doc_id)
            if entry_doc_id is not None and pending is not None:
                batch.put(OUTBOX, entry_doc_id, {**pending, "text": text, "plain": plain})
        self._write(batch)

    def note_poll(self, feed: str, state: FeedState, now: float) -> bool:
        """Save a poll that changed nothing but when the feed was polled and is next due.

        An unchanged feed (304, or the same bytes) must cost almost nothing, and an fsync'd
        write per poll is most of what it would cost. So when ``state`` differs from the stored
        one only in POLL_TIMES fields, it is kept in memory (``feed_state`` returns it) and
        written with the feed's next write, or by the first note_poll POLL_FLUSH_S after it,
        or on close: a crash loses at most that long of poll times, which the next poll sets
        again. Returns False, and does nothing, when anything else changed: commit it instead.
        """
        doc_id = self._feeds.get(feed)
        if doc_id is None or self.readonly:
            return False
        current = self._doc[FEEDS][doc_id]
        value = _feed_doc(feed, state)
        if any(current.get(k) != v for k, v in value.items() if k not in POLL_TIMES):
            return False
        if current != value:
            current.update(value)  # no index looks at these fields
            self._unsaved_polls.add(doc_id)
            self._unsaved_since = self._unsaved_since or now
        if self._unsaved_since is not None and now - self._unsaved_since >= POLL_FLUSH_S:
            self.flush_polls()
        return True

    def flush_polls(self) -> None:
        """Write the poll times note_poll kept in memory (one write for every feed)."""
        if not self._unsaved_polls:
            self._unsaved_since = None
            return
        batch = self._batch()
        for doc_id in self._unsaved_polls:
            batch.put(FEEDS, doc_id, dict(self._doc[FEEDS][doc_id]))
        self._write(batch)
        self._unsaved_since = None

    def record_part(self, entry_id: str, split: SplitProgress) -> None:
        """Durably note how far a split alert got, in one write, after Telegram confirmed one
        of its parts; it stays in the outbox until the last. Unknown id: no-op."""
        doc_id = self._outbox.get(entry_id)
        if doc_id is None:
            return
        batch = self._batch()
        batch.put(OUTBOX, doc_id, {**self._doc[OUTBOX][doc_id], "split": _split_doc(split)})
        self._write(batch)

    def mark_sent(
        self,
        entry_id: str,
        *,
        message_id: int | None = None,
        sent_at: float,
        sent_text: str | None = None,
    ) -> None:
        """Durably move an alert from the outbox to the sent table; unknown id: no-op.

        ``sent_text`` is the text that was sent: if the pending entry was given another one
        meanwhile (a near-duplicate joined its story), an edit to that text is queued in the
        same write.
        """
        doc_id = self._outbox.get(entry_id)
        entry = None if doc_id is None else self._doc[OUTBOX][doc_id]
        edit = None
        if (
            entry is not None
            and message_id is not None
            and sent_text is not None
            and entry["text"] != sent_text
        ):
            edit = EditEntry(
                target=entry_id,
                chat=entry["chat"],
                text=entry["text"],
                plain=entry["plain"],
                disable_preview=entry.get("disable_preview", False),
                created_at=sent_at,
            )
        self.mark_sent_many((entry_id,), message_id=message_id, sent_at=sent_at, edit=edit)

    def mark_sent_many(
        self,
        entry_ids: Iterable[str],
        *,
        message_id: int | None = None,
        sent_at: float,
        edit: EditEntry | None = None,
    ) -> None:
        """Like mark_sent for alerts packed into one Telegram message, in one write."""
        batch = self._batch()
        if edit is not None:
            batch.put(EDITS, self._edits.get(edit.target), asdict(edit))
        for entry_id in entry_ids:
            doc_id = self._outbox.get(entry_id)
            if doc_id is None or batch.current(OUTBOX, doc_id) is None:
                continue
            entry = self._doc[OUTBOX][doc_id]
            batch.delete(OUTBOX, doc_id)
            record = SentRecord(
                id=entry_id,
                item_key=entry["item_key"],
                chat=entry["chat"],
                watchlist=entry["watchlist"],
                feed=entry["feed"],
                message_id=message_id,
                sent_at=sent_at,
            )
            sent = asdict(record)
            split = entry.get("split")
            if split is not None and split["sent_at"]:
                sent["parts_at"] = list(split["sent_at"])  # Telegram's limits counted them
            batch.put(SENT, self._sent.get(entry_id), sent)
        self._write(batch)

    def replace_chat(self, old: str, new: str) -> None:
        """Point every pending alert for chat ``old`` at ``new`` (a group became a supergroup).

        An alert already pending for ``new`` with the same item and watchlist wins over the moved
        one, so the new chat does not get it twice.
        """
        if old == new:
            return
        batch = self._batch()
        docs = self._doc[OUTBOX]
        waiting = {
            (docs[self._outbox[e]]["item_key"], docs[self._outbox[e]]["watchlist"])
            for e in self._outbox_by_chat.get(new, {})
        }
        for entry_id in self._outbox_by_chat.get(old, {}):
            doc_id = self._outbox[entry_id]
            value = docs[doc_id]
            if (value["item_key"], value["watchlist"]) in waiting:
                batch.delete(OUTBOX, doc_id)
            else:
                moved = {**value, "chat": new}
                if moved.get("split") is not None:
                    # Its first part is in the old group: that message id means another
                    # message in the new one (or none), so nothing may be edited through it.
                    moved["split"] = {**moved["split"], "message_id": None}
                batch.put(OUTBOX, doc_id, moved)
        # The messages to edit stayed in the old group: Telegram gives them other ids.
        for target in self._edits_by_chat.get(old, {}):
            batch.delete(EDITS, self._edits[target])
        self._write(batch)

    def edit_done(self, target: str, *, sent_text: str | None = None) -> None:
        """Durably drop the pending edit of alert ``target`` (sent, or given up on).

        With ``sent_text``, only when that is still its text: a newer one stays to be sent.
        """
        doc_id = self._edits.get(target)
        if doc_id is None:
            return
        if sent_text is not None and self._doc[EDITS][doc_id]["text"] != sent_text:
            return
        batch = self._batch()
        batch.delete(EDITS, doc_id)
        self._write(batch)

    def set_meta(self, key: str, value: object) -> None:
        """Durably save a JSON-compatible value under ``key``; None deletes it."""
        if not isinstance(key, str):
            raise TypeError(f"meta key must be a string, not {type(key).__name__}")
        if value is not None:
            try:
                value = orjson.loads(dumps(value))
            except (TypeError, ValueError) as exc:
                raise TypeError(f"meta value for {key!r} is not JSON-compatible: {exc}") from exc
        batch = self._batch()
        doc_id = self._meta.get(key)
        if value is None:
            if doc_id is not None:
                batch.delete(META, doc_id)
        elif doc_id is None or self._doc[META][doc_id]["value"] != value:
            batch.put(META, doc_id, {"key": key, "value": value})
        self._write(batch)

    def prune(
        self,
        *,
        now: float,
        seen_ttl_s: float,
        sent_ttl_s: float | None = None,
        active_feeds: Iterable[str] | None = None,
    ) -> int:
        """Drop seen keys older than ``seen_ttl_s`` that no feed still lists; return how many.

        Also drops sent records older than ``sent_ttl_s`` (default: ``seen_ttl_s``), stories
        past their expiry, and, when ``active_feeds`` is given, the present-key lists of feeds
        not in it (so that a feed removed from the config stops holding its keys).
        """
        if seen_ttl_s < 0 or (sent_ttl_s is not None and sent_ttl_s < 0):
            raise ValueError("Store.prune: retention times must not be negative")
        batch = self._batch()
        active = None if active_feeds is None else set(active_feeds)
        still_listed: set[str] = set()
        for feed, (doc_id, keys) in self._present.items():
            if active is None or feed in active:
                still_listed |= keys
            else:
                batch.delete(PRESENT, doc_id)
        seen_docs = self._doc[SEEN]
        seen_cutoff = now - seen_ttl_s
        dropped = 0
        for key, doc_id in self._seen.items():
            if seen_docs[doc_id]["seen_at"] < seen_cutoff and key not in still_listed:
                batch.delete(SEEN, doc_id)
                dropped += 1
        sent_cutoff = now - (seen_ttl_s if sent_ttl_s is None else sent_ttl_s)
        for doc_id, value in self._doc[SENT].items():
            if value["sent_at"] < sent_cutoff:
                batch.delete(SENT, doc_id)
        for doc_id, story in self._stories.values():
            if story.expires_at <= now:
                batch.delete(STORIES, doc_id)
        self._write(batch)
        return dropped

    def compact_if_due(self) -> bool:
        """Rewrite the snapshot if the journal has grown as large as it; True if it did.

        Never part of a write: the daemon calls it between polls, so no commit (and no alert
        waiting on one) pays for a snapshot rewrite. A failure is logged, not raised: the
        journal still holds every change.
        """
        if self.readonly:
            return False
        return self._storage.maybe_compact()

    def compact(self) -> None:
        """Rewrite the snapshot now and start an empty journal (e.g. at a quiet moment)."""
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        self._storage.compact()


def settle_heap() -> None:
    """Exempt the objects alive now (mostly the store's documents) from the cyclic GC.

    A store of 100,000 seen items is ~10^6 long-lived Python objects; every full collection
    walks them all, and those pauses (measured 12-57 ms in bench/bench_store.py) land on
    whatever the event loop is doing, flushes included. They are never garbage, so the daemon
    freezes them after loading and after each compaction. Collecting first means no garbage
    cycle is frozen with them.
    """
    gc.collect()
    gc.freeze()


def _feed_doc(feed: str, state: FeedState) -> dict[str, Any]:
    """The stored document of a feed's state. Not asdict: its deep copy of every field costs
    more than the rest of an unchanged poll's bookkeeping, and only lists need a copy."""
    doc: dict[str, Any] = {"feed": feed}
    for name in _FEED_STATE_FIELDS:
        value = getattr(state, name)
        doc[name] = list(value) if isinstance(value, list) else value
    return doc


def _feed_state(value: dict[str, Any]) -> FeedState:
    return FeedState(**{name: value[name] for name in _FEED_STATE_FIELDS if name in value})


def _outbox_entry(value: dict[str, Any]) -> OutboxEntry:
    split = value.get("split")
    if split is None:
        return OutboxEntry(**value)
    progress = SplitProgress(
        message_id=split["message_id"],
        html=split["html"],
        left=tuple(split["left"]),
        done=split["done"],
        sent_at=tuple(split["sent_at"]),
        text=split["text"],
    )
    return OutboxEntry(**{**value, "split": progress})


def _outbox_doc(entry: OutboxEntry) -> dict[str, Any]:
    doc = asdict(entry)
    del doc["split"]
    if entry.split is not None:
        doc["split"] = _split_doc(entry.split)
    return doc


def _split_doc(split: SplitProgress) -> dict[str, Any]:
    return {
        "message_id": split.message_id,
        "html": split.html,
        "left": list(split.left),
        "done": split.done,
        "sent_at": list(split.sent_at),
        "text": split.text,
    }


def _story(value: dict[str, Any]) -> Story:
    return Story(
        id=value["id"],
        created_at=float(value["created_at"]),
        expires_at=float(value["expires_at"]),
        fingerprint=Fingerprint(frozenset(value["words"]), frozenset(value["numbers"])),
        sources=tuple(Source(name, link) for name, link in value["sources"]),
        messages={chat: StoryMessage(**message) for chat, message in value["messages"].items()},
    )


def _story_doc(story: Story) -> dict[str, Any]:
    return {
        "id": story.id,
        "created_at": story.created_at,
        "expires_at": story.expires_at,
        "words": sorted(story.fingerprint.words),
        "numbers": sorted(story.fingerprint.numbers),
        "sources": [[source.name, source.link] for source in story.sources],
        "messages": {chat: asdict(message) for chat, message in story.messages.items()},
    }


def _check_entry(entry: OutboxEntry) -> None:
    for name in ("id", "chat", "item_key"):
        if not getattr(entry, name):
            raise ValueError(f"OutboxEntry.{name} must not be empty (entry {entry!r:.200})")
