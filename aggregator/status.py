"""The daemon's status file: what it is doing, for ``aggregator status`` and ``aggregator health``.

The daemon writes ``<storage.path>.status.json`` (temp file + rename, so a reader never sees half
a file) within a second of each poll and every few seconds otherwise. Other processes only read
it: they never open the store, whose lock belongs to the daemon.

Counts over the last 24 hours (new items per feed, matches per watchlist) are kept as hourly
buckets in the file itself, so they survive a restart and cost a few numbers each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import unicodedata
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .config import LoadedConfig, feed_interval
from .errors import AggregatorError
from .pipeline import FeedOutcome
from .store import FeedState

STATUS_VERSION = 1
STATUS_SUFFIX = ".status.json"
# How often the daemon rewrites the file when nothing happens; health treats a file much older
# than this as a daemon that stopped responding.
STATUS_EVERY_S = 10.0
WINDOW_S = 24 * 3600
BUCKET_S = 3600

Buckets = dict[int, int]  # hour start (epoch seconds) -> count


class StatusFileError(AggregatorError):
    """Raised when the status file cannot be read or is not one this program wrote."""


@dataclass
class FeedStatus:
    """One feed as the daemon last saw it."""

    name: str
    url: str
    enabled: bool
    interval_s: float
    last_poll_at: float | None = None
    last_success_at: float | None = None
    next_poll_at: float | None = None
    failures: int = 0
    last_error: str | None = None
    items: int | None = None  # items in its last fetched body
    new_24h: int = 0


@dataclass
class WatchlistStatus:
    """Matches of one watchlist in the last 24 hours."""

    name: str
    matches_24h: int = 0
    last_match_at: float | None = None


@dataclass
class DaemonStatus:
    """The whole status document; times are epoch seconds."""

    pid: int
    running: bool
    started_at: float
    updated_at: float
    config: str
    shortest_interval_s: float | None
    fetch_timeout_s: float
    stale_after_s: float | None
    version: int = STATUS_VERSION
    stopped_at: float | None = None
    last_poll_at: float | None = None
    last_success_at: float | None = None
    feeds: list[FeedStatus] = field(default_factory=list)
    watchlists: list[WatchlistStatus] = field(default_factory=list)
    queue: dict[str, int] = field(default_factory=dict)
    paused_chats: dict[str, str] = field(default_factory=dict)
    delivery_paused: bool = False  # an admin sent /pause
    fatal: str | None = None
    delivery: dict[str, int] = field(default_factory=dict)
    # Why the store cannot be written (disk full, read-only), and since when; delivery is held.
    store_error: str | None = None
    store_error_since: float | None = None
    # Hourly buckets behind the 24 h counts: {"new_items": {feed: ...}, "matches": {wl: ...}}.
    counts: dict[str, dict[str, Buckets]] = field(default_factory=dict)


_ADAPTER = TypeAdapter(DaemonStatus)


def status_path(storage_path: Path) -> Path:
    """Where the daemon using this store writes its status."""
    return storage_path.with_name(storage_path.name + STATUS_SUFFIX)


def window_count(buckets: Mapping[int, int], now: float) -> int:
    """How many were counted in the 24 hours before ``now`` (to the hour)."""
    oldest = _bucket(now) - WINDOW_S + BUCKET_S
    return sum(n for hour, n in buckets.items() if hour >= oldest)


def refresh_counts(status: DaemonStatus, now: float) -> None:
    """Recompute the 24 h counts for ``now`` (the file may be hours old)."""
    new_items = status.counts.get("new_items", {})
    matches = status.counts.get("matches", {})
    for feed in status.feeds:
        feed.new_24h = window_count(new_items.get(feed.name, {}), now)
    for watchlist in status.watchlists:
        watchlist.matches_24h = window_count(matches.get(watchlist.name, {}), now)


def read_status(path: Path) -> DaemonStatus:
    """Read and check a status file; raise StatusFileError naming the problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StatusFileError(f"no status file at {path}") from None
    except OSError as exc:
        raise StatusFileError(f"cannot read the status file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StatusFileError(f"status file {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != STATUS_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise StatusFileError(
            f"status file {path} has version {version!r}, expected {STATUS_VERSION} "
            "(written by another aggregator version?)"
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StatusFileError(f"status file {path} is damaged: {where}: {first['msg']}") from None


def write_status(path: Path, status: DaemonStatus) -> None:
    """Replace the status file atomically (readers see the old or the new one, never half)."""
    data = json.dumps(dataclasses.asdict(status), ensure_ascii=False, separators=(",", ":"))
    tmp = path.with_name(path.name + ".tmp")
    # No fsync: after a power cut a stale or missing status only makes health report "not
    # running" until the next write, and fsync would put the disk's latency on the event loop.
    try:
        tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def public_view(status: DaemonStatus) -> dict[str, Any]:
    """The status as ``status --json`` prints it: without the raw hourly buckets."""
    data = dataclasses.asdict(status)
    del data["counts"]
    return data


@dataclass(frozen=True)
class FeedTally:
    """Enabled feeds by state, and disabled ones: one count for health, the CLI and /status."""

    ok: int  # no failure since its last successful poll
    failing: int  # its last poll failed
    waiting: int  # no poll has finished for it yet
    disabled: int

    @property
    def enabled(self) -> int:
        """Feeds the daemon polls."""
        return self.ok + self.failing + self.waiting


def feed_health(feed: FeedStatus) -> str:
    """One of: disabled, failing, ok, waiting (no poll has finished for it yet)."""
    if not feed.enabled:
        return "disabled"
    if feed.failures > 0:
        return "failing"
    return "ok" if feed.last_success_at is not None else "waiting"


def tally_feeds(feeds: list[FeedStatus]) -> FeedTally:
    """How many feeds are in each state."""
    states = Counter(feed_health(f) for f in feeds)
    return FeedTally(states["ok"], states["failing"], states["waiting"], states["disabled"])


def _bucket(ts: float) -> int:
    return int(ts // BUCKET_S * BUCKET_S)


def _add(buckets: Buckets, ts: float, n: int, now: float) -> None:
    hour = _bucket(ts)
    buckets[hour] = buckets.get(hour, 0) + n
    oldest = _bucket(now) - WINDOW_S
    for stale in [h for h in buckets if h < oldest]:
        del buckets[stale]


@dataclass
class _FeedRecord:
    last_poll_at: float | None = None
    last_success_at: float | None = None
    failures: int = 0
    last_error: str | None = None
    items: int | None = None


class StatusTracker:
    """Collects what the daemon did, and builds the status document from it."""

    def __init__(
        self,
        *,
        pid: int,
        started_at: float,
        feed_states: Mapping[str, FeedState],
        previous: DaemonStatus | None = None,
    ) -> None:
        self.pid = pid
        self.started_at = started_at
        self.last_poll_at: float | None = None
        self.last_success_at: float | None = None
        # What the store remembers from earlier runs, until this run polls the feed.
        self._feeds = {
            name: _FeedRecord(
                last_poll_at=state.last_attempt_at,
                last_success_at=state.last_success_at,
                failures=state.consecutive_failures,
                last_error=state.last_error,
            )
            for name, state in feed_states.items()
        }
        self._new_items: dict[str, Buckets] = {}
        self._matches: dict[str, Buckets] = {}
        self._last_match: dict[str, float] = {}
        if previous is not None:
            self._new_items = {k: dict(v) for k, v in previous.counts.get("new_items", {}).items()}
            self._matches = {k: dict(v) for k, v in previous.counts.get("matches", {}).items()}
            self._last_match = {
                w.name: w.last_match_at for w in previous.watchlists if w.last_match_at is not None
            }
            for feed in previous.feeds:
                self._feeds.setdefault(feed.name, _FeedRecord()).items = feed.items

    def record(self, outcome: FeedOutcome, now: float) -> None:
        """Take in the result of one poll."""
        record = self._feeds.setdefault(outcome.feed, _FeedRecord())
        record.last_poll_at = now
        self.last_poll_at = now
        if outcome.status == "error":
            record.failures += 1
            record.last_error = outcome.error
            return
        record.failures, record.last_error = 0, None
        record.last_success_at = self.last_success_at = now
        if outcome.status == "ok":
            record.items = outcome.items
        if outcome.new_items:
            _add(self._new_items.setdefault(outcome.feed, {}), now, outcome.new_items, now)
        for watchlist, n in Counter(a.match.watchlist for a in outcome.alerts).items():
            _add(self._matches.setdefault(watchlist, {}), now, n, now)
            self._last_match[watchlist] = now

    def snapshot(
        self,
        loaded: LoadedConfig,
        *,
        now: float,
        stale_after_s: float | None,
        next_polls: Mapping[str, float | None],
        queue: Mapping[str, int],
        paused_chats: Mapping[str, str],
        fatal: str | None,
        delivery_paused: bool = False,
        delivery: Mapping[str, int],
        running: bool = True,
        store_error: str | None = None,
        store_error_since: float | None = None,
    ) -> DaemonStatus:
        """The status document for the running config at ``now``."""
        config = loaded.config
        feeds = []
        for feed in config.feeds:
            record = self._feeds.get(feed.name, _FeedRecord())
            feeds.append(
                FeedStatus(
                    name=feed.name,
                    url=feed.url,
                    enabled=feed.enabled,
                    interval_s=feed_interval(config, feed),
                    last_poll_at=record.last_poll_at,
                    last_success_at=record.last_success_at,
                    next_poll_at=next_polls.get(feed.name),
                    failures=record.failures,
                    last_error=record.last_error,
                    items=record.items,
                )
            )
        intervals = [f.interval_s for f in feeds if f.enabled]
        known_success = [f.last_success_at for f in feeds if f.last_success_at is not None]
        status = DaemonStatus(
            pid=self.pid,
            running=running,
            started_at=self.started_at,
            updated_at=now,
            stopped_at=None if running else now,
            config=str(loaded.path.resolve()),
            shortest_interval_s=min(intervals, default=None),
            fetch_timeout_s=config.polling.timeout,
            stale_after_s=stale_after_s,
            last_poll_at=self.last_poll_at,
            last_success_at=max(known_success, default=None),
            feeds=feeds,
            watchlists=[
                WatchlistStatus(name=w.name, last_match_at=self._last_match.get(w.name))
                for w in config.watchlists
            ],
            queue=dict(sorted(queue.items())),
            paused_chats=dict(paused_chats),
            delivery_paused=delivery_paused,
            fatal=fatal,
            delivery=dict(delivery),
            store_error=store_error,
            store_error_since=store_error_since if store_error else None,
            counts={
                "new_items": {k: dict(v) for k, v in self._new_items.items()},
                "matches": {k: dict(v) for k, v in self._matches.items()},
            },
        )
        refresh_counts(status, now)
        return status


def format_status(status: DaemonStatus, health_line: str, now: float) -> str:
    """The status as tables for a person: feeds, watchlists, queue per chat."""
    stopped = format_when(status.stopped_at or status.updated_at, now)
    state = (
        f"running, pid {status.pid}, up {format_span(now - status.started_at)}"
        if status.running
        else f"stopped {stopped} (pid {status.pid})"
    )
    lines = [
        f"aggregator: {state}",
        f"config: {status.config}; status written {format_when(status.updated_at, now)}",
        health_line,
        "",
    ]
    if status.delivery_paused:
        lines[-1:-1] = ["delivery: PAUSED by an admin; alerts are queued until /resume"]
    feed_rows = [
        [
            f.name,
            format_when(f.last_poll_at, now),
            format_next(f, now, status.running),
            str(f.failures),
            "-" if f.items is None else str(f.items),
            str(f.new_24h),
            clip(f.last_error or "", 60),
        ]
        for f in status.feeds
    ]
    header = ["FEED", "LAST POLL", "NEXT POLL", "FAILURES", "ITEMS", "NEW 24H", "LAST ERROR"]
    lines += _table(header, feed_rows) if feed_rows else ["no feeds configured"]
    lines.append("")
    watch_rows = [
        [w.name, str(w.matches_24h), format_when(w.last_match_at, now)] for w in status.watchlists
    ]
    if watch_rows:
        lines += _table(["WATCHLIST", "MATCHES 24H", "LAST MATCH"], watch_rows)
    else:
        lines.append("no watchlists configured")
    lines.append("")
    chats = sorted(set(status.queue) | set(status.paused_chats))
    if chats:
        chat_rows = [
            [chat, str(status.queue.get(chat, 0)), clip(status.paused_chats.get(chat, ""), 60)]
            for chat in chats
        ]
        lines += _table(["CHAT", "QUEUED", "PAUSED BECAUSE"], chat_rows)
    else:
        lines.append("queue: empty (every alert delivered)")
    if status.fatal:
        lines += ["", f"delivery blocked: {status.fatal}"]
    if status.store_error:
        lines += ["", f"store not writable (delivery held): {status.store_error}"]
    return "\n".join(line.rstrip() for line in lines)


def _width(text: str) -> int:
    """Columns the text takes in a terminal: combining marks take none, wide letters two."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(_width(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(row))
        for row in [header, *rows]
    ]


def clip(text: str, limit: int) -> str:
    """The text on one line, cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_span(seconds: float) -> str:
    """A duration in a few characters: 45s, 7m05s, 95m, 3h20m, 2d04h."""
    seconds = max(0, round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes}m{seconds % 60:02d}s" if minutes < 10 else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def format_when(ts: float | None, now: float) -> str:
    """A time relative to ``now``: never, 5m ago, in 20s."""
    if ts is None:
        return "never"
    return f"{format_span(now - ts)} ago" if ts <= now else f"in {format_span(ts - now)}"


def format_next(feed: FeedStatus, now: float, running: bool) -> str:
    """When a feed is polled next: disabled, -, due now, in 9m."""
    if not feed.enabled:
        return "disabled"
    if not running or feed.next_poll_at is None:
        return "-"
    return "due now" if feed.next_poll_at <= now else f"in {format_span(feed.next_poll_at - now)}"
