"""The polling policy applied to one feed's stored state after each poll, and the admin notices
that follow from it (suspended, recovered, gone, moved).

aggregator.polling decides with plain numbers; this module reads those numbers out of a
``FeedState`` and a fetch result, writes the decision back (``next_poll_at``, ``interval_s``, ...)
and says what the admins must hear. The pipeline commits the state and the notices in the same
store write, so a notice is queued exactly once: the outbox ids are derived from the event
(feed, kind, when it began), and a write that is repeated after a crash queues nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from . import notices as notices_module
from .config import Config, FeedSettings, feed_interval
from .errors import FetchError
from .fetch import HTTPStatusError
from .logs import event
from .polling import (
    LEARN_WINDOW_S,
    Decision,
    PollBounds,
    after_failure,
    after_success,
    http_floor,
    is_gap,
    is_suspended,
    remember_item_times,
)
from .store import FeedState, OutboxEntry

log = logging.getLogger("aggregator.polling")

GONE_ERROR = "gone: the server answered 410 Gone; not polled until the feed's url changes"


@dataclass(frozen=True)
class Notice:
    """Something the admins are told once: a title and a few lines."""

    key: str  # unique per event; the outbox ids are derived from it
    title: str
    lines: tuple[str, ...]


def bounds_for(config: Config, feed: FeedSettings) -> PollBounds:
    """The feed's polling bounds: its own settings, else [polling]'s."""
    polling = config.polling
    return PollBounds.resolve(
        interval_s=feed_interval(config, feed),
        min_interval_s=feed.min_interval if feed.min_interval is not None else polling.min_interval,
        max_interval_s=feed.max_interval if feed.max_interval is not None else polling.max_interval,
        jitter=polling.jitter,
        max_backoff_s=polling.max_backoff,
        suspend_after=polling.suspend_after,
    )


def feed_url(state: FeedState, feed: FeedSettings) -> str:
    """Where to fetch: the permanent-redirect target, unless the config's URL changed since."""
    if state.url_override and state.moved_from in (None, feed.url):
        return state.url_override
    return feed.url


def is_gone(state: FeedState, feed: FeedSettings) -> bool:
    """True while the config still names the URL that answered 410 Gone."""
    return state.gone_url is not None and state.gone_url == feed.url


def resume_at(state: FeedState, now: float) -> float | None:
    """When a restarted daemon may first poll this feed; None: as soon as it likes.

    Only a failing feed keeps its time: its server asked us to wait (Retry-After) or it is in
    backoff, and a restart must not turn into a retry. A healthy feed is polled at start-up
    (a cheap conditional GET) so nothing published during the downtime waits a whole interval.
    """
    if state.consecutive_failures and state.next_poll_at is not None and state.next_poll_at > now:
        return state.next_poll_at
    return None


def item_time(published: datetime | None, now: float, *, first_poll: bool) -> float | None:
    """When an item appeared, for learning the feed's pace; None when it tells nothing."""
    stamp = published.timestamp() if published is not None else None
    if stamp is not None and now - LEARN_WINDOW_S < stamp <= now:
        return stamp
    # A first poll finds every item at once: their arrival then says nothing about the pace.
    return None if first_poll else now


def on_fetched(
    state: FeedState,
    feed: FeedSettings,
    *,
    headers: Mapping[str, str],
    moved_to: str | None,
    now: float,
) -> list[Notice]:
    """Take in what any successful response says: caching floors and a permanent move."""
    state.http_floor_s = http_floor(headers, now)
    if not moved_to or moved_to == feed_url(state, feed):
        return []
    state.url_override, state.moved_from = moved_to, feed.url
    event(
        log,
        logging.WARNING,
        "feed moved permanently; polling the new URL (update the config)",
        feed=feed.name,
        new_url=moved_to,
    )
    return [
        Notice(
            key=f"moved:{feed.name}:{moved_to}",
            title=f"Feed {feed.name} moved permanently",
            lines=(
                f"now polling {moved_to}",
                f"please change its url in the config (it says {feed.url})",
            ),
        )
    ]


def on_success(
    state: FeedState,
    feed: FeedSettings,
    config: Config,
    *,
    now: float,
    ttl_s: float | None = None,
    update_period_s: float | None = None,
    parsed: bool = False,
    new_item_times: Iterable[float] = (),
    items: int = 0,
    new_items: int = 0,
    first_poll: bool = False,
    rng: random.Random | None = None,
) -> list[Notice]:
    """Schedule the next poll after a successful one; a recovery is news for the admins."""
    notices: list[Notice] = []
    if state.suspended:
        state.suspended = False
        event(log, logging.WARNING, "feed recovered; polling it normally again", feed=feed.name)
        notices.append(
            Notice(
                key=f"recovered:{feed.name}:{now:.0f}",
                title=f"Feed {feed.name} recovered",
                lines=("polling it normally again",),
            )
        )
    if state.watching_since is None:
        state.watching_since = now
    if parsed:  # a 304 or the same body: the floors of the last parse still hold
        state.feed_ttl_s, state.feed_update_period_s = ttl_s, update_period_s
    state.item_times = remember_item_times(state.item_times, new_item_times, now)
    gap = is_gap(items, new_items, first_poll=first_poll)
    if gap:
        event(
            log,
            logging.WARNING,
            "every item of the feed was new: items were probably missed between polls; "
            "polling it more often",
            feed=feed.name,
            items=items,
        )
    decision = after_success(
        item_times=state.item_times,
        watching_since=state.watching_since,
        now=now,
        bounds=bounds_for(config, feed),
        ttl_s=state.feed_ttl_s,
        update_period_s=state.feed_update_period_s,
        http_floor_s=state.http_floor_s,
        previous_interval_s=state.interval_s,
        gap=gap,
        rng=rng,
    )
    _apply(state, decision, now)
    return notices


def on_failure(
    state: FeedState,
    feed: FeedSettings,
    config: Config,
    *,
    error: Exception,
    now: float,
    rng: random.Random | None = None,
) -> list[Notice]:
    """Back off after a failure (``consecutive_failures`` already counts it); say what changed."""
    status = error.status if isinstance(error, FetchError) else None
    if status == 410:
        state.gone_url, state.next_poll_at, state.poll_reason = feed.url, None, "gone"
        event(log, logging.ERROR, "feed is gone (HTTP 410); polling stopped", feed=feed.name)
        return [
            Notice(
                key=f"gone:{feed.name}:{feed.url}",
                title=f"Feed {feed.name} is gone (HTTP 410)",
                lines=(
                    "polling stopped",
                    "remove it from the config, or give it a new url",
                ),
            )
        ]
    bounds = bounds_for(config, feed)
    retry_after = error.retry_after_s if isinstance(error, HTTPStatusError) else None
    decision = after_failure(
        failures=state.consecutive_failures,
        interval_s=state.interval_s,
        bounds=bounds,
        retry_after_s=retry_after,
        rng=rng,
    )
    _apply(state, decision, now)
    if state.suspended or not is_suspended(state.consecutive_failures, bounds):
        return []
    state.suspended = True
    event(
        log,
        logging.ERROR,
        "feed suspended: too many failures in a row; retrying it at the backoff cap",
        feed=feed.name,
        failures=state.consecutive_failures,
        error=str(error),
    )
    return [
        Notice(
            # Keyed by when the failures began, so one run of failures is one notice.
            key=f"suspended:{feed.name}:{state.last_success_at or state.watching_since or 0:.0f}",
            title=f"Feed {feed.name} suspended after {state.consecutive_failures} failures",
            lines=(
                f"last error: {error}",
                f"retrying it every {bounds.max_backoff_s:g} s; you will hear when it recovers",
            ),
        )
    ]


def admin_entries(config: Config, notices: Iterable[Notice], now: float) -> list[OutboxEntry]:
    """Outbox entries that tell every telegram.admins user about each notice."""
    entries: list[OutboxEntry] = []
    for notice in notices:
        key = "admin-notice:" + hashlib.sha256(notice.key.encode()).hexdigest()[:24]
        entries += notices_module.admin_entries(
            config.telegram.admins, notice.title, notice.lines, key=key, now=now
        )
    return entries


def _apply(state: FeedState, decision: Decision, now: float) -> None:
    state.interval_s = decision.interval_s
    state.next_poll_at = now + decision.delay_s
    state.poll_reason = decision.reason
