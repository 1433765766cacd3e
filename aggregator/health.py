"""Is the daemon healthy? One judgement, used by ``aggregator health`` and the systemd watchdog.

Healthy means: the process is alive and still writing its status file, polls keep finishing,
at least one feed succeeded within ``STALE_FACTOR`` times the shortest interval (plus one fetch
timeout, so that a slow last fetch does not count against it), not every feed is failing, and
delivery is not blocked for good (Telegram refused the token), and the store takes writes (a
full or read-only disk holds delivery, so that a restart cannot send anything twice).

The watchdog acts on a subset: a restart helps a daemon whose polls stopped finishing, not one
whose feeds are down or whose network is gone, so those never stop the pings (systemd would only
restart it in a loop, dropping its backoff state each time, while the outage goes on).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import Config, feed_interval
from .status import (
    STATUS_EVERY_S,
    DaemonStatus,
    FeedStatus,
    StatusFileError,
    format_span,
    read_status,
    status_path,
    tally_feeds,
)

STALE_FACTOR = 3
# A feed whose poll was due longer ago than the fetch timeout plus this is stalled: its poll
# should have started on time and ended within the timeout.
STALL_GRACE_S = 60.0
# A status file older than this was written by a daemon that is hung or gone.
UNRESPONSIVE_AFTER_S = 6 * STATUS_EVERY_S
# A full disk stops the status file as it stops the store: with less free space than this
# where the status file is, an unresponsive daemon is said to be most likely that.
LOW_DISK_BYTES = 1024 * 1024

NOT_RUNNING = "not running"
UNRESPONSIVE = "unresponsive"
STALLED = "stalled"
STALE = "stale"
FAILING = "failing"
FATAL = "fatal"
STORE_NOT_WRITABLE = "store not writable"
NO_STATUS = "no status"
# The problems that a restart of the process can cure.
WATCHDOG_KINDS = frozenset({STALLED, FATAL})


@dataclass(frozen=True)
class Problem:
    """One reason the daemon is not healthy."""

    kind: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """The outcome of a health check: healthy or not, and why, in words."""

    healthy: bool
    summary: str
    problems: tuple[Problem, ...] = ()

    def line(self) -> str:
        """One line for a person: "healthy: ..." or "unhealthy: ...; ..."."""
        if self.healthy:
            return f"healthy: {self.summary}"
        return "unhealthy: " + "; ".join(p.message for p in self.problems)


def stale_after_s(config: Config) -> float | None:
    """How long without a successful poll counts as stale; None when no feed is enabled."""
    intervals = [feed_interval(config, f) for f in config.feeds if f.enabled]
    if not intervals:
        return None
    return STALE_FACTOR * min(intervals) + config.polling.timeout


def _gap(feed: FeedStatus) -> float:
    """The time between this feed's polls as now scheduled: its interval, or longer while it
    backs off or its publisher asks for less."""
    if feed.next_poll_at is not None and feed.last_poll_at is not None:
        return max(feed.interval_s, feed.next_poll_at - feed.last_poll_at)
    return feed.interval_s


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (also when it belongs to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ago(seconds: float) -> str:
    return f"{max(0, round(seconds))} s ago"


def assess(status: DaemonStatus, now: float, *, process_alive: bool = True) -> Verdict:
    """Judge a status document at ``now``; ``process_alive`` is the caller's pid check."""
    problems: list[Problem] = []
    running = status.running and process_alive
    if not running:
        when = f"stopped {_ago(now - status.stopped_at)}" if status.stopped_at else "gone"
        problems.append(Problem(NOT_RUNNING, f"not running (pid {status.pid} {when})"))
    elif now - status.updated_at > UNRESPONSIVE_AFTER_S:
        problems.append(
            Problem(
                UNRESPONSIVE,
                f"unresponsive: pid {status.pid} last wrote its status "
                f"{_ago(now - status.updated_at)} (it writes every {STATUS_EVERY_S:g} s)",
            )
        )
    if status.fatal:
        problems.append(Problem(FATAL, f"delivery blocked (fatal): {status.fatal}"))
    if running and status.store_error:
        since = f" since {_ago(now - status.store_error_since)}" if status.store_error_since else ""
        problems.append(
            Problem(
                STORE_NOT_WRITABLE,
                f"store not writable{since}: {status.store_error}; delivery is held and the "
                "daemon keeps retrying (free space or fix the disk)",
            )
        )
    enabled = [f for f in status.feeds if f.enabled]
    if running and enabled and status.stale_after_s is not None:
        # Backoff and publishers' pace (TTL, adaptive polling) stretch a feed's gaps past its
        # configured interval: the limits follow the gaps as now scheduled.
        shortest = min(map(_gap, enabled))
        limit = max(status.stale_after_s, STALE_FACTOR * shortest + status.fetch_timeout_s)
        since_poll = now - max(status.last_poll_at or 0.0, status.started_at)
        since_success = now - max(status.last_success_at or 0.0, status.started_at)
        overdue = [
            f
            for f in enabled
            if f.next_poll_at is not None
            and now - f.next_poll_at > status.fetch_timeout_s + STALL_GRACE_S
        ]
        scheduled = any(f.next_poll_at is not None for f in enabled)
        if overdue:
            late = max(now - f.next_poll_at for f in overdue if f.next_poll_at is not None)
            problems.append(
                Problem(
                    STALLED,
                    f"stalled: {len(overdue)} feed(s) due but not polled, the first for "
                    f"{round(late)} s (a poll ends within the fetch timeout, "
                    f"{status.fetch_timeout_s:g} s); the scheduler or a fetch is stuck",
                )
            )
        elif not scheduled and since_poll > limit:  # a status without the schedule
            problems.append(
                Problem(
                    STALLED,
                    f"stalled: no poll finished for {round(since_poll)} s "
                    f"(limit {limit:g} s); the scheduler or a fetch is stuck",
                )
            )
        elif since_success > limit:
            last = (
                f"last successful poll {_ago(now - status.last_success_at)}"
                if status.last_success_at
                else f"no successful poll since the start {_ago(now - status.started_at)}"
            )
            problems.append(
                Problem(
                    STALE,
                    f"stale: {last}, more than {STALE_FACTOR} times the shortest interval "
                    f"({shortest:g} s) plus the fetch timeout "
                    f"({status.fetch_timeout_s:g} s)",
                )
            )
        if all(f.failures > 0 for f in enabled):
            errors = ", ".join(f"{f.name}: {f.last_error or 'failed'}" for f in enabled[:3])
            more = f" and {len(enabled) - 3} more" if len(enabled) > 3 else ""
            problems.append(
                Problem(FAILING, f"every feed failing ({len(enabled)}): {errors}{more}")
            )
    if problems:
        return Verdict(False, problems[0].message, tuple(problems))
    return Verdict(True, _summary(status, now))


def _summary(status: DaemonStatus, now: float) -> str:
    feeds = tally_feeds(status.feeds)
    parts = [f"pid {status.pid}", f"up {format_span(now - status.started_at)}"]
    if status.last_poll_at is None:
        parts.append("starting: no poll finished yet")
    elif status.last_success_at is not None:
        parts.append(f"last successful poll {_ago(now - status.last_success_at)}")
    parts.append(f"{feeds.ok}/{feeds.enabled} feeds ok")
    parts.append(f"{sum(status.queue.values())} alerts queued")
    if status.paused_chats:
        parts.append(f"{len(status.paused_chats)} chats paused")
    if status.delivery_paused:
        parts.append("delivery paused by an admin")
    return ", ".join(parts)


def watchdog_ok(verdict: Verdict) -> bool:
    """Whether the systemd watchdog should be pinged: no problem that a restart would cure."""
    return not any(p.kind in WATCHDOG_KINDS for p in verdict.problems)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check(
    storage_path: Path,
    now: float,
    *,
    free_bytes: Callable[[Path], int | None] = _free_bytes,
) -> tuple[Verdict, DaemonStatus | None]:
    """Read the status file beside this store and judge it (the CLI's health check)."""
    path = status_path(storage_path)
    try:
        status = read_status(path)
    except StatusFileError as exc:
        reason = (
            f"not running: {exc} (the daemon writes it once it starts)"
            if not path.exists()
            else str(exc)
        )
        return Verdict(False, reason, (Problem(NO_STATUS, reason),)), None
    verdict = assess(status, now, process_alive=pid_alive(status.pid))
    if any(p.kind == UNRESPONSIVE for p in verdict.problems):
        free = free_bytes(path.parent)
        if free is not None and free < LOW_DISK_BYTES:
            note = (
                f"; the disk it writes to has {free} bytes free, and a full disk stops its "
                "status file and its store alike (free some space)"
            )
            problems = tuple(
                Problem(p.kind, p.message + note) if p.kind == UNRESPONSIVE else p
                for p in verdict.problems
            )
            verdict = Verdict(False, problems[0].message, problems)
    return verdict, status
