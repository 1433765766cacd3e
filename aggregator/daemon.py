"""Wiring: builds the stages from a config and runs them, as a daemon or as one pass.

``run`` schedules every feed on its own interval (APScheduler's asyncio scheduler, with jitter)
and delivers continuously; ``once`` polls every feed one time and drains the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from . import __version__, poll_state
from .bot import Bot
from .compose import MessageOptions
from .config import Config, FeedSettings, LoadedConfig, load_config
from .deliver import Deliverer
from .errors import ConfigError, StoreError
from .fetch import Fetcher, FetchLimits
from .health import assess, stale_after_s, watchdog_ok
from .logs import event
from .matching import Matcher
from .matching.native import KERNEL
from .metrics import Gauges, Metrics, serve
from .notices import queue_admin_notice
from .parse_pool import ParsePool
from .pipeline import FeedOutcome, Runtime, poll_feed
from .status import (
    STATUS_EVERY_S,
    DaemonStatus,
    StatusFileError,
    StatusTracker,
    read_status,
    status_path,
    write_status,
)
from .store import Store, settle_heap
from .systemd import notify, watchdog_interval_s
from .telegram_api import ConsoleSender, Sender, TelegramSender

log = logging.getLogger("aggregator.daemon")

USER_AGENT = f"aggregator/{__version__} (+https://github.com/aggregator-news/aggregator)"
# How long a stop waits for polls under way before giving up on them (their state is only
# committed when they finish, so an abandoned poll is simply redone after the restart).
STOP_GRACE_S = 3.0


@dataclass
class Services:
    """The long-lived parts of a running program."""

    runtime: Runtime
    deliverer: Deliverer | None
    sender: Sender | None


# Settings read once, when the daemon starts (the HTTP client, the Telegram connection, the
# parse processes, the bot's long poll): a reload that changes them says so.
_READ_AT_START = {
    "polling": (
        "timeout",
        "connect_timeout",
        "max_body",
        "max_redirects",
        "max_in_flight",
        "max_per_host",
        "parse_workers",
    ),
    "telegram": ("api_url", "send_timeout", "token_file", "commands"),
}


PARSE_TIMEOUT_MIN_S = 20.0


def _restart_keys(running: Config, new: Config) -> list[str]:
    """The settings read at start that ``new`` changes (as section.key)."""
    return [
        f"{section}.{key}"
        for section, keys in _READ_AT_START.items()
        for key in keys
        if getattr(getattr(running, section), key) != getattr(getattr(new, section), key)
    ]


def _zone_of(loaded: LoadedConfig) -> ZoneInfo:
    """The configured time zone of messages."""
    return ZoneInfo(loaded.config.telegram.timezone)


def make_fetcher(loaded: LoadedConfig) -> Fetcher:
    """The one HTTP client for all feeds, with the configured limits."""
    polling = loaded.config.polling
    limits = FetchLimits(
        connect_timeout_s=polling.connect_timeout,
        read_timeout_s=min(polling.timeout, 30.0),
        deadline_s=polling.timeout,
        max_body_bytes=polling.max_body,
        max_redirects=polling.max_redirects,
        max_in_flight=polling.max_in_flight,
        max_per_host=polling.max_per_host,
    )
    return Fetcher(limits, user_agent=USER_AGENT)


def make_sender(loaded: LoadedConfig, token: str | None, console: TextIO | None = None) -> Sender:
    """Telegram when a token is configured, else the terminal (``console``, or stdout)."""
    if token is None:
        return ConsoleSender(console)
    telegram = loaded.config.telegram
    return TelegramSender(api_url=telegram.api_url, token=token, timeout_s=telegram.send_timeout)


@contextlib.asynccontextmanager
async def services(
    loaded: LoadedConfig,
    token: str | None,
    *,
    dry_run: bool = False,
    metrics: Metrics | None = None,
    console: TextIO | None = None,
) -> AsyncIterator[Services]:
    """Open the store, the HTTP client and the sender; close them all on the way out."""
    metrics = metrics or Metrics()
    matcher = Matcher([w.rules() for w in loaded.config.watchlists])
    store = Store.open(loaded.storage_path, readonly=dry_run)
    settle_heap()
    fetcher = make_fetcher(loaded)
    sender = None if dry_run else make_sender(loaded, token, console)
    deliverer = (
        None
        if sender is None
        else Deliverer.from_config(
            store,
            sender,
            loaded.config,
            paced=not isinstance(sender, ConsoleSender),
            metrics=metrics,
        )
    )
    options = MessageOptions(timezone=_zone_of(loaded))
    runtime = Runtime(
        loaded=loaded,
        matcher=matcher,
        store=store,
        fetcher=fetcher,
        message_options=options,
        metrics=metrics,
    )
    if deliverer is not None:
        runtime.on_alerts = deliverer.wake
    workers = loaded.config.polling.parse_worker_count()
    # Parsing gets the fetch timeout, but never under PARSE_TIMEOUT_MIN_S: a short fetch
    # timeout (a local feed) must not fail every parse that starts a worker process first.
    parse_timeout = max(loaded.config.polling.timeout, PARSE_TIMEOUT_MIN_S)
    pool = ParsePool(workers, timeout_s=parse_timeout) if workers else None
    if pool is not None:
        runtime.parse = pool
    try:
        yield Services(runtime, deliverer, sender)
    finally:
        if deliverer is not None:
            await deliverer.aclose()
        if sender is not None:
            await sender.aclose()
        await fetcher.aclose()
        if pool is not None:
            pool.close()
        store.close()


def current_status(
    tracker: StatusTracker,
    loaded: LoadedConfig,
    svc: Services,
    next_polls: Mapping[str, float | None],
    *,
    running: bool = True,
) -> DaemonStatus:
    """The status document of a running program: what its status file holds, and /status shows.

    ``next_polls``: when each feed is polled next, by name (the scheduler's jobs)."""
    assert svc.deliverer is not None
    fatal = svc.deliverer.fatal
    return tracker.snapshot(
        loaded,
        now=time.time(),
        stale_after_s=stale_after_s(loaded.config),
        next_polls=next_polls,
        queue=svc.runtime.store.pending_counts(),
        paused_chats=svc.deliverer.paused_chats,
        delivery_paused=svc.deliverer.all_paused,
        fatal=None if fatal is None else str(fatal),
        delivery=dict(svc.deliverer.stats),
        running=running,
        store_error=svc.runtime.store.write_error or svc.deliverer.store_error,
        store_error_since=svc.runtime.store.write_failing_since,
    )


async def poll_all(runtime: Runtime, *, dry_run: bool = False) -> list[FeedOutcome]:
    """Poll every enabled feed once, concurrently; a failing feed never stops the others."""
    feeds = [f for f in runtime.loaded.config.feeds if f.enabled]
    return list(await asyncio.gather(*(_poll_guarded(runtime, f, dry_run=dry_run) for f in feeds)))


async def _poll_guarded(runtime: Runtime, feed: FeedSettings, *, dry_run: bool) -> FeedOutcome:
    """poll_feed, with a crash (a bug) logged and kept to its own feed."""
    try:
        return await poll_feed(runtime, feed, dry_run=dry_run)
    except Exception as exc:
        log.exception("poll crashed", extra={"fields": {"feed": feed.name}})
        return FeedOutcome(feed.name, "error", error=f"poll crashed: {exc!r}")


async def run_once(
    loaded: LoadedConfig,
    token: str | None,
    *,
    dry_run: bool,
    timeout_s: float,
    console: TextIO | None = None,
) -> tuple[list[FeedOutcome], int]:
    """Poll each feed once and deliver; return the outcomes and how many alerts are left.

    ``console``: where alerts go without a token (standard output unless given)."""
    async with services(loaded, token, dry_run=dry_run, console=console) as svc:
        outcomes = await poll_all(svc.runtime, dry_run=dry_run)
        if svc.deliverer is None:
            return outcomes, 0
        left = await svc.deliverer.drain(timeout_s)
        if svc.deliverer.fatal:
            raise svc.deliverer.fatal
        return outcomes, left


class Daemon:
    """The long-running service: scheduled polls, continuous delivery, clean stop."""

    def __init__(self, loaded: LoadedConfig, token: str | None) -> None:
        self._loaded = loaded
        self._token = token
        self._stop = asyncio.Event()
        self._polls: set[asyncio.Task[FeedOutcome]] = set()
        self._status_path = status_path(loaded.storage_path)
        self._tracker: StatusTracker | None = None
        self._status_due = asyncio.Event()
        self._status_error: str | None = None
        self._metrics = Metrics()
        self._deliverer: Deliverer | None = None
        self._scheduler: AsyncIOScheduler | None = None

    def stop(self) -> None:
        """Ask the daemon to finish in-flight work and exit."""
        self._stop.set()

    async def run(self) -> int:
        """Run until stopped; return the process exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        # A file size limit (systemd LimitFSIZE=, ulimit -f) must fail the write with EFBIG,
        # which the store handles like a full disk (delivery held, retried), not kill the daemon.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        async with (
            services(self._loaded, self._token, metrics=self._metrics) as svc,
            self._metrics_endpoint(svc.runtime),
        ):
            assert svc.deliverer is not None
            self._tracker = StatusTracker(
                pid=os.getpid(),
                started_at=time.time(),
                feed_states=svc.runtime.store.feed_states(),
                previous=self._previous_status(),
            )
            scheduler = self._schedule(svc.runtime)
            scheduler.start()
            loop.add_signal_handler(signal.SIGHUP, self.reload, scheduler, svc.runtime)
            svc.deliverer.wake()  # alerts left queued by an earlier run go out first
            self._deliverer = svc.deliverer
            bot = Bot.start(
                svc.runtime,
                svc.deliverer,
                svc.sender,
                # /status shows what the status file gets, built afresh rather than read back:
                # the file may be seconds old, or unwritable on a full disk.
                status=lambda: self._status(svc, scheduler),
            )
            event(
                log,
                logging.INFO,
                "daemon started",
                feeds=len(self._loaded.config.feeds),
                watchlists=len(self._loaded.config.watchlists),
                telegram="console" if self._token is None else "bot api",
                store=self._loaded.storage_path,
                # "python": installed without a C compiler, the matcher's loops run slower.
                matcher="python" if KERNEL is None else "c",
            )
            notify("READY=1", f"STATUS=polling {len(self._loaded.config.feeds)} feeds")
            await self._supervise(svc, scheduler)
            notify("STOPPING=1")
            if svc.deliverer is not None:
                # First, so that neither an alert nor a bot answer waiting for Telegram's limits
                # or a retry_after holds up the stop; what is queued stays queued.
                svc.deliverer.stop()
            if bot is not None:
                await bot.aclose()
            scheduler.shutdown(wait=False)
            event(log, logging.INFO, "stopping: finishing work under way")
            if self._polls:
                await asyncio.wait(self._polls, timeout=STOP_GRACE_S)
            for task in self._polls:
                task.cancel()
            fatal = svc.deliverer.fatal
            self._write_status(self._status(svc, scheduler, running=False))
        event(log, logging.INFO, "stopped")
        # 3, as the README says of a start that cannot work: Telegram rejected the token.
        return 3 if fatal else 0

    @contextlib.asynccontextmanager
    async def _metrics_endpoint(self, runtime: Runtime) -> AsyncIterator[None]:
        """Serve /metrics at [metrics].address, if set, until the daemon stops."""
        store = runtime.store
        self._metrics.watch(
            Gauges(
                last_success_at=lambda: {
                    f.name: store.feed_state(f.name).last_success_at
                    for f in self._loaded.config.feeds
                    if f.enabled
                },
                pending=store.pending_count,
            )
        )
        address = self._loaded.config.metrics.address
        async with contextlib.AsyncExitStack() as stack:
            if address:
                try:
                    await stack.enter_async_context(serve(self._metrics, address))
                except OSError as exc:
                    # Alerts matter more than their metrics: run on without them (Prometheus
                    # shows the target down) rather than stop alerting over a taken port.
                    event(
                        log,
                        logging.ERROR,
                        "cannot serve metrics; running without them",
                        address=address,
                        error=exc.strerror or str(exc),
                    )
            yield

    async def _supervise(self, svc: Services, scheduler: AsyncIOScheduler) -> None:
        """Until stopped: keep the status file current and ping the watchdog while healthy."""
        assert svc.deliverer is not None
        watchdog_s = watchdog_interval_s()
        tick = min(1.0, watchdog_s or 1.0)
        stop_wait = asyncio.create_task(self._stop.wait())
        status = self._status(svc, scheduler)
        self._write_status(status)
        written = time.monotonic()
        shown = ""
        try:
            while not self._stop.is_set() and not svc.deliverer.fatal:
                await asyncio.wait({stop_wait}, timeout=tick)
                # A store that stops (or starts again) taking writes is news for health at once.
                store_failing = svc.runtime.store.write_error is not None
                store_changed = store_failing != (status.store_error is not None)
                if (
                    self._status_due.is_set()
                    or store_changed
                    or time.monotonic() - written >= STATUS_EVERY_S
                ):
                    self._status_due.clear()
                    status = self._status(svc, scheduler)
                    self._write_status(status)
                    written = time.monotonic()
                # Same judgement as `aggregator health`, on the in-memory status; the pings
                # stop only for what a restart cures (see health.WATCHDOG_KINDS).
                verdict = assess(status, time.time())
                if verdict.line() != shown:
                    shown = verdict.line()
                    notify(f"STATUS={shown}")  # what `systemctl status` shows
                if watchdog_s and scheduler.running and watchdog_ok(verdict):
                    notify("WATCHDOG=1")
        finally:
            stop_wait.cancel()

    def _status(
        self, svc: Services, scheduler: AsyncIOScheduler, *, running: bool = True
    ) -> DaemonStatus:
        assert self._tracker is not None
        next_polls: dict[str, float | None] = {}
        for job in scheduler.get_jobs():
            when = getattr(job, "next_run_time", None)
            next_polls[job.id] = when.timestamp() if when is not None else None
        return current_status(self._tracker, self._loaded, svc, next_polls, running=running)

    def _write_status(self, status: DaemonStatus) -> None:
        """Write the status file; a failure is logged once, and never stops the daemon."""
        try:
            write_status(self._status_path, status)
        except OSError as exc:
            error = f"{exc.strerror or exc}"
            if error != self._status_error:
                event(
                    log,
                    logging.WARNING,
                    "cannot write the status file; `aggregator health` will report "
                    "this daemon as not responding",
                    path=self._status_path,
                    error=error,
                )
            self._status_error = error
            return
        if self._status_error is not None:
            event(log, logging.INFO, "status file written again", path=self._status_path)
            self._status_error = None

    def _previous_status(self) -> DaemonStatus | None:
        """The last run's status, for its 24-hour counts; None if there is none usable."""
        try:
            return read_status(self._status_path)
        except StatusFileError:
            return None

    def _schedule(self, runtime: Runtime) -> AsyncIOScheduler:
        scheduler = self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._sync_feed_jobs(scheduler, runtime, previous=None)
        scheduler.add_job(
            self._housekeeping,
            IntervalTrigger(hours=1),
            args=[runtime],
            id="housekeeping",
            next_run_time=datetime.now(UTC) + timedelta(minutes=1),
            max_instances=1,
            coalesce=True,
        )
        return scheduler

    def _sync_feed_jobs(
        self, scheduler: AsyncIOScheduler, runtime: Runtime, previous: LoadedConfig | None
    ) -> tuple[list[str], list[str], list[str]]:
        """Make the scheduler's feed jobs match the config; return (added, changed, removed)."""
        config = self._loaded.config
        old = {f.name: f for f in previous.config.feeds if f.enabled} if previous else {}
        new = {f.name: f for f in config.feeds if f.enabled}
        old_interval = previous.config.polling.interval if previous else None
        added: list[str] = []
        changed: list[str] = []
        now = datetime.now(UTC)
        for name in old.keys() - new.keys():
            if scheduler.get_job(name) is not None:  # a gone feed (410) has none
                scheduler.remove_job(name)
        for name, feed in new.items():
            before = old.get(name)
            job = scheduler.get_job(name)
            same = before == feed and old_interval == config.polling.interval
            if same and job is not None:
                scheduler.modify_job(name, args=[runtime, feed])
                continue
            if not same:
                (changed if before else added).append(name)
            state = runtime.store.feed_state(name)
            if poll_state.is_gone(state, feed):
                if job is not None:
                    scheduler.remove_job(name)
                event(log, logging.WARNING, poll_state.GONE_ERROR, feed=name)
                continue
            bounds = poll_state.bounds_for(config, feed)
            # A failing feed keeps its backoff or Retry-After, unless the admin just fixed its
            # URL: that one is tried again at once.
            fixed = before is not None and before.url != feed.url
            resume = None if fixed else poll_state.resume_at(state, runtime.clock())
            if resume is not None:
                first = now + timedelta(seconds=resume - runtime.clock())
            else:
                # New feeds start within a few seconds, spread so they never fire in lockstep.
                spread = min(5.0, bounds.start_s * config.polling.jitter)
                first = now + timedelta(seconds=random.uniform(0, spread))
            scheduler.add_job(
                self._poll,
                # Each poll sets the next run itself (aggregator.polling); this trigger only
                # fires if that ever failed, at the slowest pace the policy allows.
                IntervalTrigger(seconds=bounds.max_s + config.polling.max_backoff),
                args=[runtime, feed],
                id=name,
                name=name,
                next_run_time=first,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=None,  # late is better than a skip to the fallback trigger
                replace_existing=True,
            )
        return added, changed, sorted(old.keys() - new.keys())

    def reload(self, scheduler: AsyncIOScheduler, runtime: Runtime) -> bool:
        """Re-read the config file; apply it, or keep the running one if it is invalid."""
        notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            try:
                loaded = load_config(self._loaded.path)
            except ConfigError as exc:
                for key, message in exc.problems:
                    event(
                        log,
                        logging.ERROR,
                        "new config refused; still running the old one",
                        key=key,
                        problem=message,
                    )
                self._tell_admins(runtime, exc.problems)
                return False
            if loaded.storage_path != self._loaded.storage_path:
                event(
                    log,
                    logging.ERROR,
                    "new config refused: storage.path cannot change "
                    "while running; restart to use it",
                    path=loaded.storage_path,
                )
                self._tell_admins(
                    runtime, [("storage.path", "cannot change while running; restart to use it")]
                )
                return False
            if loaded.config.metrics.address != self._loaded.config.metrics.address:
                event(
                    log,
                    logging.WARNING,
                    "metrics.address changed; restart to serve metrics there",
                    serving=self._loaded.config.metrics.address or "off",
                    configured=loaded.config.metrics.address or "off",
                )
            later = _restart_keys(self._loaded.config, loaded.config)
            if later:
                event(
                    log,
                    logging.WARNING,
                    "changed settings take effect at the next restart",
                    keys=",".join(later),
                )
            # Everything that can fail is built before anything changes.
            matcher = Matcher([w.rules() for w in loaded.config.watchlists])
            zone = _zone_of(loaded)
            previous, old_matcher = self._loaded, runtime.matcher
            try:
                added, changed, removed = self._apply(scheduler, runtime, loaded, matcher, zone)
            except Exception as exc:
                # A bug, not a bad config (that was refused above): the old config is put
                # back whole rather than run half of each.
                log.exception("config reload failed; going back to the old one")
                self._apply(scheduler, runtime, previous, old_matcher, _zone_of(previous))
                self._wake_deliverer()
                self._tell_admins(runtime, [("", f"applying it failed: {exc!r}")])
                return False
            # Only now that the new config runs whole: this wake drops what is queued for chats
            # it no longer sends to, which no rollback could put back.
            self._wake_deliverer()
            for name in removed:  # a feed that comes back is read whole once
                runtime.known_items.pop(name, None)
            event(
                log,
                logging.INFO,
                "config reloaded",
                feeds_added=",".join(added),
                feeds_changed=",".join(changed),
                feeds_removed=",".join(removed),
                watchlists=len(loaded.config.watchlists),
            )
            return True
        finally:
            notify("READY=1")

    def _apply(
        self,
        scheduler: AsyncIOScheduler,
        runtime: Runtime,
        loaded: LoadedConfig,
        matcher: Matcher,
        zone: ZoneInfo,
    ) -> tuple[list[str], list[str], list[str]]:
        """Run ``loaded`` from now on; the feeds added, changed and removed."""
        previous, self._loaded = self._loaded, loaded
        runtime.loaded = loaded
        runtime.matcher = matcher
        runtime.message_options = dataclasses.replace(runtime.message_options, timezone=zone)
        if self._deliverer is not None:
            self._deliverer.apply(loaded.config)  # drops nothing: see reload
        return self._sync_feed_jobs(scheduler, runtime, previous)

    def _wake_deliverer(self) -> None:
        """After a reload or its rollback: e.g. quiet hours removed, held alerts go now."""
        if self._deliverer is not None:
            self._deliverer.wake()

    def _tell_admins(self, runtime: Runtime, problems: list[tuple[str, str]]) -> None:
        """Queue a refused config's problems to every telegram.admins user, through the outbox
        like any alert (durable, paced, retried)."""
        admins = self._loaded.config.telegram.admins
        if not admins:
            return
        lines = [f"{key}: {message}" if key else message for key, message in problems]
        title = f"New config refused ({self._loaded.path.name}); still running the old one"
        try:
            queued = queue_admin_notice(runtime.store, admins, title, lines)
        except StoreError as exc:
            event(log, logging.ERROR, "cannot queue the notice to admins", error=str(exc))
            return
        runtime.metrics.alerts_queued(queued)
        runtime.on_alerts()

    async def _housekeeping(self, runtime: Runtime) -> None:
        """Retention: forget items that left their feed longer ago than storage.seen_ttl."""
        config = self._loaded.config
        try:
            dropped = runtime.store.prune(
                now=time.time(),
                seen_ttl_s=config.storage.seen_ttl,
                active_feeds=[f.name for f in config.feeds],
            )
        except StoreError as exc:
            event(log, logging.ERROR, "retention pass failed; will retry", error=str(exc))
            return
        if dropped:
            event(log, logging.INFO, "forgot old seen items", dropped=dropped)

    def _reschedule(self, runtime: Runtime, feed: FeedSettings, outcome: FeedOutcome) -> None:
        """Run the feed's job next when the polling policy said; remove it once it is gone."""
        scheduler = self._scheduler
        if scheduler is None or self._stop.is_set() or scheduler.get_job(feed.name) is None:
            return  # stopping, or the feed left the config while it was being polled
        now = runtime.clock()
        if outcome.next_poll_at is None:
            if poll_state.is_gone(runtime.store.feed_state(feed.name), feed):
                scheduler.remove_job(feed.name)
                return
            # The poll crashed before deciding: try again after the usual interval.
            outcome.next_poll_at = now + poll_state.bounds_for(self._loaded.config, feed).start_s
        delay = max(0.0, outcome.next_poll_at - now)
        scheduler.modify_job(feed.name, next_run_time=datetime.now(UTC) + timedelta(seconds=delay))

    async def _poll(self, runtime: Runtime, feed: FeedSettings) -> None:
        if self._stop.is_set():
            return
        task = asyncio.create_task(_poll_guarded(runtime, feed, dry_run=False))
        self._polls.add(task)
        try:
            outcome = await task
        finally:
            self._polls.discard(task)
        self._reschedule(runtime, feed, outcome)
        # Between polls, not inside a commit: no flush ever waits for a snapshot rewrite.
        if runtime.store.compact_if_due():
            settle_heap()
        if self._tracker is not None:
            self._tracker.record(outcome, time.time())
            self._status_due.set()
