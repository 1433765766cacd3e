"""The interval policy (aggregator.polling) on plain numbers: no clock, no network."""

from __future__ import annotations

import random

import pytest

from aggregator.polling import (
    MAX_ITEM_TIMES,
    PollBounds,
    after_failure,
    after_success,
    http_floor,
    is_gap,
    learned_interval,
    remember_item_times,
)

NOW = 1_700_000_000.0
MIN, HOUR, DAY = 60.0, 3600.0, 86_400.0
BOUNDS = PollBounds.resolve(
    interval_s=10 * MIN, min_interval_s=2 * MIN, max_interval_s=2 * HOUR, max_backoff_s=HOUR
)


def every(step_s: float, count: int, *, newest_ago: float = 0.0) -> list[float]:
    return [NOW - newest_ago - i * step_s for i in range(count)]


def test_fast_feed_is_polled_more_often_than_a_daily_one() -> None:
    fast, why = learned_interval(every(3 * MIN, 40), NOW - 2 * HOUR, NOW, BOUNDS)
    daily, _ = learned_interval(every(DAY, 5, newest_ago=2 * HOUR), NOW - 6 * DAY, NOW, BOUNDS)
    assert why == "learned"
    assert fast == pytest.approx(3 * MIN, rel=0.05)
    assert daily == 2 * HOUR  # capped at max_interval
    very_fast, _ = learned_interval(every(10, 50), NOW - HOUR, NOW, BOUNDS)
    assert very_fast == 2 * MIN  # floored at min_interval


def test_first_poll_learns_from_publication_dates_and_silence_counts() -> None:
    # 20 items over the last 2 hours, first seen just now: one every 6 minutes.
    interval, _ = learned_interval(every(6 * MIN, 20), NOW, NOW, BOUNDS)
    assert interval == pytest.approx(6 * MIN, rel=0.01)
    # The same items, but the feed has said nothing for the 20 hours since.
    later, _ = learned_interval(every(6 * MIN, 20, newest_ago=20 * HOUR), NOW, NOW, BOUNDS)
    assert later > 60 * MIN


def test_feed_without_history_starts_at_the_configured_interval_then_slows_down() -> None:
    assert learned_interval([], None, NOW, BOUNDS) == (10 * MIN, "start")
    assert learned_interval([], NOW, NOW, BOUNDS) == (10 * MIN, "start")
    quiet, why = learned_interval([], NOW - 5 * HOUR, NOW, BOUNDS)
    assert (quiet, why) == (2 * HOUR, "quiet")


def test_item_times_kept_are_recent_and_bounded() -> None:
    kept = remember_item_times(every(MIN, 40), every(MIN, 40, newest_ago=10.0), NOW)
    assert len(kept) == MAX_ITEM_TIMES
    assert kept == sorted(kept) and max(kept) == NOW
    assert remember_item_times([NOW - 8 * DAY, NOW + 60], [], NOW) == []


@pytest.mark.parametrize(
    ("hints", "expected", "reason"),
    [
        ({"ttl_s": 60 * MIN}, 60 * MIN, "ttl floor"),
        ({"update_period_s": HOUR / 2}, HOUR / 2, "sy:updatePeriod floor"),
        ({"http_floor_s": 45 * MIN}, 45 * MIN, "cache headers floor"),
        ({"ttl_s": 10 * HOUR}, 2 * HOUR, "ttl floor"),  # capped by max_interval
        ({"ttl_s": MIN}, 3 * MIN, "learned"),  # a floor below the learned pace changes nothing
    ],
)
def test_publisher_floors_hold_and_are_capped(
    hints: dict[str, float], expected: float, reason: str
) -> None:
    decision = after_success(
        item_times=every(3 * MIN, 50), watching_since=NOW - DAY, now=NOW, bounds=BOUNDS, **hints
    )
    assert decision.interval_s == pytest.approx(expected, rel=0.05)
    assert decision.reason == reason
    assert decision.delay_s == decision.interval_s  # jitter 0


def test_floors_hold_under_jitter_and_jitter_spreads_feeds() -> None:
    bounds = PollBounds.resolve(
        interval_s=10 * MIN, min_interval_s=MIN, max_interval_s=HOUR, jitter=0.2
    )
    rng = random.Random(5)
    delays = [
        after_success(
            item_times=[], watching_since=None, now=NOW, bounds=bounds, ttl_s=30 * MIN, rng=rng
        ).delay_s
        for _ in range(200)
    ]
    assert min(delays) >= 30 * MIN  # jitter only ever adds
    assert max(delays) <= 36 * MIN
    assert len({round(d) for d in delays}) > 150  # no two feeds in lockstep


@pytest.mark.parametrize("retry_after", [1.0, 7.0, 137.0, 5 * HOUR])
def test_retry_after_is_obeyed_exactly(retry_after: float) -> None:
    jittery = PollBounds.resolve(
        interval_s=10 * MIN, min_interval_s=MIN, max_interval_s=HOUR, jitter=0.5
    )
    decision = after_failure(
        failures=1, interval_s=4 * MIN, bounds=jittery, retry_after_s=retry_after
    )
    assert decision.delay_s == retry_after
    assert decision.reason == "retry-after"


@pytest.mark.parametrize("retry_after", [0.0, 0.5, -30.0])
def test_a_retry_after_under_a_second_is_ignored_not_a_tight_loop(retry_after: float) -> None:
    # "Retry-After: 0" on every answer (or a date our clock has passed) says nothing.
    decision = after_failure(
        failures=1, interval_s=5 * MIN, bounds=BOUNDS, retry_after_s=retry_after
    )
    assert decision.reason == "backoff"
    assert decision.delay_s >= 5 * MIN


def test_a_suspended_feed_waits_at_least_the_suspension_whatever_retry_after_says() -> None:
    failures = BOUNDS.suspend_after
    cap = after_failure(failures=failures, interval_s=5 * MIN, bounds=BOUNDS).interval_s
    decision = after_failure(
        failures=failures, interval_s=5 * MIN, bounds=BOUNDS, retry_after_s=2.0
    )
    assert decision.delay_s >= max(BOUNDS.max_backoff_s, cap)


def test_backoff_grows_and_caps_then_suspends() -> None:
    delays = [
        after_failure(failures=n, interval_s=5 * MIN, bounds=BOUNDS).delay_s for n in range(1, 9)
    ]
    assert delays == [10 * MIN, 20 * MIN, 40 * MIN, HOUR, HOUR, HOUR, HOUR, HOUR]
    reasons = [after_failure(failures=n, interval_s=5 * MIN, bounds=BOUNDS).reason for n in (4, 5)]
    assert reasons == ["backoff", "suspended"]  # suspend_after defaults to 5
    # A cap below the interval never makes a failing feed poll faster than a healthy one.
    low_cap = PollBounds.resolve(
        interval_s=30 * MIN, min_interval_s=None, max_interval_s=None, max_backoff_s=MIN
    )
    assert after_failure(failures=3, interval_s=None, bounds=low_cap).delay_s == 30 * MIN
    assert after_failure(failures=10_000, interval_s=None, bounds=BOUNDS).delay_s == HOUR


def test_gap_halves_the_interval_but_not_below_the_minimum() -> None:
    assert is_gap(10, 10, first_poll=False)
    assert not is_gap(10, 10, first_poll=True)
    assert not is_gap(9, 9, first_poll=False)
    assert not is_gap(20, 19, first_poll=False)
    decision = after_success(
        item_times=[], watching_since=None, now=NOW, bounds=BOUNDS, gap=True,
        previous_interval_s=10 * MIN,
    )  # fmt: skip
    assert (decision.interval_s, decision.reason) == (5 * MIN, "gap")
    floor = after_success(
        item_times=[], watching_since=None, now=NOW, bounds=BOUNDS, gap=True,
        previous_interval_s=3 * MIN,
    )  # fmt: skip
    assert floor.interval_s == 2 * MIN


def test_http_floor_reads_max_age_and_expires() -> None:
    assert http_floor({"cache-control": "public, max-age=900"}, NOW) == 900
    assert http_floor({"cache-control": 'max-age="300", must-revalidate'}, NOW) == 300
    assert http_floor({"cache-control": "no-cache, max-age=900"}, NOW) is None
    assert http_floor({"cache-control": "max-age=0"}, NOW) is None
    assert http_floor({"cache-control": "s-maxage=900"}, NOW) is None
    headers = {
        "date": "Tue, 14 Nov 2023 22:00:00 GMT",
        "expires": "Tue, 14 Nov 2023 22:30:00 GMT",
    }
    assert http_floor(headers, NOW) == 1800  # relative to the server's Date, not our clock
    assert http_floor({"expires": "0"}, NOW) is None
    assert http_floor({}, NOW) is None


def test_bounds_keep_old_configs_working() -> None:
    # No bounds configured: never slower than the interval, a shorter interval is honoured.
    old = PollBounds.resolve(interval_s=10.0, min_interval_s=None, max_interval_s=None)
    assert (old.min_s, old.start_s, old.max_s) == (10.0, 10.0, 10.0)
    default = PollBounds.resolve(interval_s=600.0, min_interval_s=None, max_interval_s=None)
    assert (default.min_s, default.start_s, default.max_s) == (60.0, 600.0, 600.0)
    # Explicit bounds win over the interval, which is only where a feed starts.
    clamped = PollBounds.resolve(interval_s=600.0, min_interval_s=60.0, max_interval_s=300.0)
    assert clamped.start_s == 300.0
