"""Parsing in worker processes: same result as in the daemon's own process, and a worker that
dies is replaced without losing the feed's poll."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from aggregator.parse import ParseError, parse_feed
from aggregator.parse_pool import ParsePool
from tests.conftest import FEEDS

SAMPLE = next((FEEDS / "news-ar").glob("*.xml"))


@pytest.fixture
def pool() -> ParsePool:
    parse_pool = ParsePool(1)
    yield parse_pool  # type: ignore[misc]
    parse_pool.close()


async def test_parses_as_in_process(pool: ParsePool) -> None:
    body = SAMPLE.read_bytes()
    parsed = await pool(body, feed_name="sample", headers={"content-type": "application/rss+xml"})
    assert parsed == parse_feed(
        body, feed_name="sample", headers={"content-type": "application/rss+xml"}
    )
    assert parsed.items


async def test_parse_errors_come_back_as_parse_errors(pool: ParsePool) -> None:
    with pytest.raises(ParseError, match="HTML"):
        await pool(b"<!DOCTYPE html><html><body>not a feed</body></html>", feed_name="page")


async def test_a_dead_worker_is_replaced_and_the_feed_still_parses(pool: ParsePool) -> None:
    body = SAMPLE.read_bytes()
    await pool(body, feed_name="sample")  # the worker is up
    executor = pool._pool
    assert executor is not None
    workers = list((executor._processes or {}).values())
    for worker in workers:
        assert worker.pid is not None
        os.kill(worker.pid, signal.SIGKILL)
    for worker in workers:
        await asyncio.to_thread(worker.join, 10)
        assert not worker.is_alive()
    parsed = await pool(body, feed_name="sample")
    assert parsed.items
    assert pool._pool is not executor, "a new pool took over"


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        ParsePool(0)
