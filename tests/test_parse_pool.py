"""Parsing in worker processes: same result as in the daemon's own process, and a worker that
dies is replaced without losing the feed's poll."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from aggregator.parse import ParseError, parse_feed
from aggregator.parse_pool import ParsePool
from tests.conftest import FEEDS, TOKEN, write_config
from tests.daemon_process import DaemonProcess
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

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


async def test_a_parse_that_takes_too_long_is_given_up_and_its_worker_replaced() -> None:
    # A stand-in for a document that keeps feedparser busy for ever: a deadline no parse meets.
    pool = ParsePool(1, timeout_s=0.001)
    try:
        with pytest.raises(ParseError, match=r"parsing took over 0.001 s"):
            await pool(SAMPLE.read_bytes(), feed_name="sample")
        pool.timeout_s = 60.0
        assert (await pool(SAMPLE.read_bytes(), feed_name="sample")).items
    finally:
        pool.close()


def test_a_pool_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        ParsePool(0)


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_do_not_outlive_a_killed_daemon(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    config = write_config(
        tmp_path,
        feeds=[{"name": "sample", "url": feed_server.url_for("/sample.xml")}],
        watchlists=[{"name": "w", "any": ["the"], "channels": ["@pool_test"]}],
        telegram={"api_url": telegram.api_url},
        polling={"parse_workers": 2},
        token=TOKEN,
    )
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        assert daemon.wait_for(r"feed polled", 20), daemon.output()
        workers = _children(daemon.proc.pid)
        assert len(workers) >= 2, workers  # the pool's workers (and its resource tracker)
        daemon.kill()
    finally:
        daemon.close()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, [pid for pid in workers if _alive(pid)]
        assert telegram.wait_until(lambda: False, 0.05) is False  # a bounded poll interval


async def test_a_closed_pool_parses_nothing_and_starts_no_workers(
    pool: ParsePool, caplog: pytest.LogCaptureFixture
) -> None:
    items = "".join(
        f"<item><title>story {n}</title><description>{'text ' * 400}</description></item>"
        for n in range(1500)
    )
    big = f'<rss version="2.0"><channel><title>T</title>{items}</channel></rss>'.encode()
    await pool(SAMPLE.read_bytes(), feed_name="warm")
    executor = pool._pool
    assert executor is not None
    parsing = asyncio.create_task(pool(big, feed_name="big"))
    await asyncio.sleep(0)  # one step of the task: it submits the document to the pool
    assert executor._pending_work_items
    pool.close()  # the daemon stopping while a parse is under way
    with pytest.raises((ParseError, asyncio.CancelledError)):
        await parsing
    assert pool._pool is None  # the call gave up instead of starting a new pool
    assert not [r for r in caplog.records if "replaced" in r.getMessage()]
    with pytest.raises(ParseError, match="closed"):
        await pool(SAMPLE.read_bytes(), feed_name="after")
    assert pool._pool is None
