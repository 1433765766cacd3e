"""When to poll a feed next: the polite, adaptive interval policy, as pure functions.

Inputs are plain values (the times items appeared, the feed's own hints, the HTTP caching
headers, the failures so far and the configured bounds); outputs are seconds. Nothing here
touches the clock, the network or the store, so every rule is tested with plain numbers.

The rules, in the order they apply after a poll:

- **410 Gone**: never again (the caller stops the feed and tells the admins).
- **Retry-After** on a 429 or 503: exactly that many seconds, no jitter, no rounding.
- **Other failures**: exponential backoff from the feed's interval, ``interval * 2**failures``,
  capped at ``max_backoff`` (never below the interval itself: a failing feed is never polled
  more often than a healthy one). After ``suspend_after`` failures in a row the feed is
  suspended: still retried, at the cap.
- **Success**: the interval learned from the times items appeared (one poll per expected new
  item), within ``[min_interval, max_interval]``; then the floors the publisher asks for (RSS
  ``ttl``, ``sy:updatePeriod``/``sy:updateFrequency``, ``Cache-Control: max-age``, ``Expires``),
  each capped at ``max_interval``; a fetch whose items were all new (a probable gap) halves it.
- **Jitter**: a random ``0..jitter`` fraction is added (never subtracted, so no floor is ever
  undercut), so feeds configured alike drift apart instead of firing in lockstep.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .httpdate import seconds_until

# How far back item times count when learning a feed's pace, and how many are kept.
LEARN_WINDOW_S = 7 * 86_400.0
MAX_ITEM_TIMES = 50
# A fetch with at least this many items, all of them new, probably missed some in between.
GAP_MIN_ITEMS = 10
# A Retry-After shorter than this is ignored (normal backoff applies).
MIN_RETRY_AFTER_S = 1.0
# Without a limit a broken Retry-After ("99999999") would park a feed for years.
MAX_RETRY_AFTER_S = 7 * 86_400.0
# Default lower bound when [polling] min_interval is not set; a configured interval that is
# shorter than it is still honoured (it lowers the bound), as before adaptivity existed.
DEFAULT_MIN_INTERVAL_S = 60.0

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|=|$)", re.IGNORECASE)


@dataclass(frozen=True)
class PollBounds:
    """One feed's polling settings, resolved from [polling] and its [[feeds]] entry."""

    start_s: float  # the interval of a feed with no history ([polling]/[[feeds]] interval)
    min_s: float
    max_s: float
    jitter: float = 0.0  # fraction, 0..0.5
    max_backoff_s: float = 3600.0
    suspend_after: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.start_s <= self.max_s:
            raise ValueError(
                f"need 0 < min_s <= start_s <= max_s, got {self.min_s}, {self.start_s}, "
                f"{self.max_s}"
            )

    @classmethod
    def resolve(
        cls,
        *,
        interval_s: float,
        min_interval_s: float | None,
        max_interval_s: float | None,
        jitter: float = 0.0,
        max_backoff_s: float = 3600.0,
        suspend_after: int = 5,
    ) -> PollBounds:
        """Bounds from config values; unset bounds keep the configured interval reachable.

        An unset ``max_interval`` is the interval itself, so a config written before adaptive
        polling never polls a feed less often than it says; an explicit bound wins over the
        interval, which then only says where a new feed starts.
        """
        low = (
            min_interval_s
            if min_interval_s is not None
            else min(DEFAULT_MIN_INTERVAL_S, interval_s)
        )
        high = max_interval_s if max_interval_s is not None else max(interval_s, low)
        high = max(high, low)
        start = min(max(interval_s, low), high)
        return cls(start, low, high, jitter, max_backoff_s, suspend_after)


@dataclass(frozen=True)
class Decision:
    """When to poll next, and the interval to remember for the feed."""

    delay_s: float  # from now, jitter included
    interval_s: float  # the feed's current interval (before jitter); backoff starts from it
    reason: str  # a few words for logs and status: "learned", "ttl floor", "retry-after", ...


def learned_interval(
    item_times: Sequence[float], watching_since: float | None, now: float, bounds: PollBounds
) -> tuple[float, str]:
    """The interval at which about one new item appears per poll, within the bounds.

    ``item_times`` are when items appeared (publication times, or when first seen for undated
    items), ``watching_since`` when this feed was first polled. The pace is counted from the
    oldest time that is still known complete: the oldest kept item when the list is full or
    older than our watch, else the start of the watch (silence since then counts too).
    """
    horizon = now - LEARN_WINDOW_S
    recent = sorted(t for t in item_times if horizon < t <= now)
    since = watching_since if watching_since is not None else now
    if not recent:
        if since >= now:
            return bounds.start_s, "start"
        # Nothing new for this long: at most one item per that span, but no faster than usual.
        return _clamp(max(bounds.start_s, now - max(since, horizon)), bounds), "quiet"
    if len(item_times) >= MAX_ITEM_TIMES or recent[0] < since:
        # Counted from the oldest item: the items after it are the ones that arrived since.
        pace = (now - recent[0]) / max(1, len(recent) - 1)
    else:
        pace = (now - max(since, horizon)) / len(recent)
    return _clamp(pace, bounds), "learned"


def floor_s(
    *, ttl_s: float | None, update_period_s: float | None, http_floor_s: float | None
) -> tuple[float | None, str]:
    """The longest of the publisher's floors, and which one it is."""
    candidates = [
        (value, name)
        for value, name in (
            (ttl_s, "ttl"),
            (update_period_s, "sy:updatePeriod"),
            (http_floor_s, "cache headers"),
        )
        if value is not None and value > 0
    ]
    if not candidates:
        return None, ""
    return max(candidates)


def after_success(
    *,
    item_times: Sequence[float],
    watching_since: float | None,
    now: float,
    bounds: PollBounds,
    ttl_s: float | None = None,
    update_period_s: float | None = None,
    http_floor_s: float | None = None,
    previous_interval_s: float | None = None,
    gap: bool = False,
    rng: random.Random | None = None,
) -> Decision:
    """Next poll after a successful one (new body, same body, or 304)."""
    interval, reason = learned_interval(item_times, watching_since, now, bounds)
    if gap:
        # Items went missing between polls: poll at least twice as often as before.
        before = previous_interval_s if previous_interval_s is not None else interval
        interval, reason = max(bounds.min_s, min(interval, before) / 2), "gap"
    floor, floor_name = floor_s(
        ttl_s=ttl_s, update_period_s=update_period_s, http_floor_s=http_floor_s
    )
    if floor is not None and min(floor, bounds.max_s) > interval:
        interval, reason = min(floor, bounds.max_s), f"{floor_name} floor"
    return Decision(_jittered(interval, bounds.jitter, rng), interval, reason)


def after_failure(
    *,
    failures: int,
    interval_s: float | None,
    bounds: PollBounds,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Next poll after ``failures`` failures in a row (this one included)."""
    interval = interval_s if interval_s is not None else bounds.start_s
    cap = max(bounds.max_backoff_s, interval)
    # The server said exactly when: no jitter and no rounding. Except for a wait under a
    # second ("Retry-After: 0", or a date our clock has passed), which says nothing and, on
    # every answer, would have us ask again the moment each one arrives; and except once the
    # feed is suspended, when it never makes us ask more often than the suspension does.
    if retry_after_s is not None and retry_after_s >= MIN_RETRY_AFTER_S:
        wait = min(retry_after_s, MAX_RETRY_AFTER_S)
        if is_suspended(failures, bounds):
            wait = max(wait, cap)
        return Decision(wait, interval, "retry-after")
    # 2**failures overflows float for absurd counts; the cap is reached long before.
    backoff = cap if failures >= 60 else min(cap, interval * 2.0 ** max(failures, 1))
    reason = "suspended" if is_suspended(failures, bounds) else "backoff"
    if reason == "suspended":
        backoff = cap
    return Decision(_jittered(backoff, bounds.jitter, rng), interval, reason)


def is_suspended(failures: int, bounds: PollBounds) -> bool:
    """True once a feed has failed ``suspend_after`` times in a row."""
    return failures >= bounds.suspend_after


def is_gap(items: int, new_items: int, *, first_poll: bool) -> bool:
    """True when every item of a (not first) fetch is new and there are enough to be sure."""
    return not first_poll and items >= GAP_MIN_ITEMS and new_items == items


def http_floor(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the response says it stays fresh (Cache-Control max-age, else Expires)."""
    cache_control = headers.get("cache-control", "")
    if _NO_CACHE.search(cache_control):
        return None
    match = _MAX_AGE.search(cache_control)
    if match:
        age = int(match.group(1))
        return float(age) if age > 0 else None
    fresh = seconds_until(headers.get("expires"), headers.get("date"), now)
    return fresh if fresh is not None and fresh > 0 else None


def remember_item_times(kept: Iterable[float], new: Iterable[float], now: float) -> list[float]:
    """The item times to keep: the newest MAX_ITEM_TIMES within the learning window."""
    horizon = now - LEARN_WINDOW_S
    times = sorted({t for t in (*kept, *new) if horizon < t <= now})
    return times[-MAX_ITEM_TIMES:]


def _clamp(value: float, bounds: PollBounds) -> float:
    return min(max(value, bounds.min_s), bounds.max_s)


def _jittered(seconds: float, jitter: float, rng: random.Random | None) -> float:
    if jitter <= 0:
        return seconds
    return seconds * (1.0 + (rng or random).uniform(0.0, jitter))
