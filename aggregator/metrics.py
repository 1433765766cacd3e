"""Prometheus metrics: what the stages count, and the /metrics endpoint that shows them.

The stages call plain methods on a ``Metrics`` (``poll_done``, ``alert_sent``...) and never see
prometheus-client. Each ``Metrics`` has its own CollectorRegistry rather than the library's
global one, so two daemons in one test process, or a rebuilt one, never clash over names. A
``Metrics()`` that nobody serves is the default everywhere: it only counts, in memory.

The endpoint runs on the daemon's event loop (``serve``), not on prometheus-client's thread
server: the feed-age and queue gauges are computed at scrape time from the store, which is
meant for one event loop and must not be read from another thread while the loop writes it.
It also stops with the daemon's other tasks, with nothing to join on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from .logs import event

log = logging.getLogger("aggregator.metrics")

PREFIX = "aggregator"
# Item first seen -> Telegram confirmed: about a second when all is well, up to hours during
# an outage or a long Retry-After.
LATENCY_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
# A scraper's request line and headers must arrive within this time and size.
REQUEST_TIMEOUT_S = 10.0
MAX_REQUEST_HEADERS = 100


@dataclass(frozen=True)
class Gauges:
    """What the scrape-time gauges read: each feed's last successful poll and the queue."""

    last_success_at: Callable[[], Mapping[str, float | None]]  # feed -> epoch seconds
    pending: Callable[[], int]
    clock: Callable[[], float] = time.time


class _ScrapeTimeGauges(Collector):
    """Gauges computed from the daemon's state when scraped, so they are never stale."""

    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        age = self._families()[0]
        now = self._gauges.clock()
        for feed, at in sorted(self._gauges.last_success_at().items()):
            if at is not None:  # a feed that never succeeded has no age; see polls/failures
                age.add_metric([feed], max(0.0, now - at))
        pending = self._families()[1]
        pending.add_metric([], self._gauges.pending())
        return [age, pending]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                f"{PREFIX}_feed_last_success_age_seconds",
                "Seconds since the feed was last polled successfully",
                labels=["feed"],
            ),
            GaugeMetricFamily(
                f"{PREFIX}_alerts_pending", "Alerts in the outbox waiting for Telegram"
            ),
        ]


class Metrics:
    """The daemon's counters and histogram, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._polls = Counter(f"{PREFIX}_feed_polls", "Polls of a feed", ["feed"], registry=r)
        self._failures = Counter(
            f"{PREFIX}_feed_poll_failures", "Polls of a feed that failed", ["feed"], registry=r
        )
        self._items = Counter(
            f"{PREFIX}_items_seen", "Items seen for the first time", ["feed"], registry=r
        )
        self._matches = Counter(
            f"{PREFIX}_watchlist_matches",
            "New items a watchlist matched and alerted",
            ["watchlist"],
            registry=r,
        )
        self._queued = Counter(f"{PREFIX}_alerts_queued", "Alerts put in the outbox", registry=r)
        self._sent = Counter(f"{PREFIX}_alerts_sent", "Alerts Telegram confirmed", registry=r)
        self._failed = Counter(
            f"{PREFIX}_alerts_failed", "Alerts given up on (Telegram refused them)", registry=r
        )
        self._retry_after = Counter(
            f"{PREFIX}_telegram_retry_after",
            "429 answers (flood control, Retry-After) received from Telegram",
            registry=r,
        )
        self._latency = Histogram(
            f"{PREFIX}_delivery_latency_seconds",
            "Time from an item first seen to Telegram confirming its alert",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )

    def watch(self, gauges: Gauges) -> None:
        """Add the scrape-time gauges (feed ages, queue length), read from the daemon's state."""
        self.registry.register(_ScrapeTimeGauges(gauges))

    def poll_done(self, feed: str, *, failed: bool) -> None:
        """One poll of a feed finished."""
        self._polls.labels(feed).inc()
        failures = self._failures.labels(feed)  # shown at 0 too, so that rate() works
        if failed:
            failures.inc()

    def items_seen(self, feed: str, n: int) -> None:
        """A poll found ``n`` items never seen before."""
        if n:
            self._items.labels(feed).inc(n)

    def matched(self, watchlist: str, n: int = 1) -> None:
        """A watchlist matched ``n`` new items."""
        self._matches.labels(watchlist).inc(n)

    def alerts_queued(self, n: int) -> None:
        """``n`` alerts were committed to the outbox."""
        if n:
            self._queued.inc(n)

    def alert_sent(self, first_seen_at: float, *, now: float | None = None) -> None:
        """Telegram confirmed an alert whose item was first seen at ``first_seen_at``."""
        self._sent.inc()
        self._latency.observe(max(0.0, (time.time() if now is None else now) - first_seen_at))

    def alert_failed(self) -> None:
        """An alert was given up on."""
        self._failed.inc()

    def retry_after(self) -> None:
        """Telegram answered 429 and asked us to wait."""
        self._retry_after.inc()


def parse_address(address: str) -> tuple[str, int]:
    """Split "HOST:PORT" (IPv6 as "[::1]:PORT") into (host, port); ValueError if malformed."""
    host, sep, port_text = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # an IPv6 address needs its brackets, or the port is ambiguous
    if (
        not sep
        or not re.fullmatch(r"[A-Za-z0-9._:-]+", host)
        or not port_text.isdigit()
        or not 1 <= int(port_text) <= 65535
    ):
        raise ValueError(
            'expected "HOST:PORT" such as "127.0.0.1:9464" ("0.0.0.0:9464" for every '
            f'interface, "" for off), got {address!r}'
        )
    return host, int(port_text)


@contextlib.asynccontextmanager
async def serve(metrics: Metrics, address: str) -> AsyncIterator[None]:
    """Serve GET /metrics at ``address`` on this event loop until the block exits.

    Raises OSError if the address cannot be bound.
    """
    host, port = parse_address(address)
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _answer(metrics, reader, writer)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            pass  # a scraper that hung up or sent garbage; the next scrape starts afresh
        finally:
            connections.discard(task)
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    event(log, logging.INFO, "serving metrics", url=f"http://{address}/metrics")
    try:
        yield
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        if connections:
            await asyncio.wait(connections, timeout=1.0)
        await server.wait_closed()


async def _answer(
    metrics: Metrics, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Read one HTTP/1.x request and answer it; the connection is then closed."""
    async with asyncio.timeout(REQUEST_TIMEOUT_S):
        request_line = (await reader.readline()).decode("latin-1").split()
        headers: dict[str, str] = {}
        for _ in range(MAX_REQUEST_HEADERS):
            line = (await reader.readline()).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise ValueError("too many request headers")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/"):
        status, content_type, body = "400 Bad Request", "text/plain", b"bad request\n"
    elif request_line[0] not in ("GET", "HEAD"):
        status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
    elif request_line[1].split("?")[0] not in ("/metrics", "/"):
        status, content_type, body = "404 Not Found", "text/plain", b"see /metrics\n"
    else:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        status, body = "200 OK", encoder(metrics.registry)
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        + ("Allow: GET, HEAD\r\n" if status.startswith("405") else "")
        + "\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if request_line[:1] == ["HEAD"] else body))
    await writer.drain()
