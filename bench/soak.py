"""Soak: 500 feeds polled for hundreds of cycles at a fast clock; memory must stay flat.

Usage: python bench/soak.py [--feeds 500] [--cycles 300] [--tracemalloc] [--dir DIR]

The daemon's scheduler runs in real time with a 10-second minimum interval, so the soak drives
the pipeline in process instead: the daemon's own stages (``pipeline.poll_feed`` with the real
Fetcher, Store, Matcher and composer, the real Deliverer draining the outbox to the terminal
sender, and the hourly retention pass) against a feed server on 127.0.0.1, with ``Runtime.clock``
advanced by one polling interval per cycle. The feed server runs in a child process, because it
records every request it answers and that record is not the daemon's memory.

Each feed carries a window of ``WINDOW`` items. Every cycle about one feed in ten gains an item
(the oldest leaves the window); the rest answer 304 (ETag/Last-Modified) or, for one feed in four,
the same body again (skipped by its hash). Watchlists fire on most new items, and some
new items are near-duplicates of others, so alerts, stories and the outbox all see traffic.

What stays flat, and why: the seen keys of items that left their feed are dropped by retention
once older than ``seen_ttl`` (1 h = 3 cycles), sent records the same, stories after the dedup
window (1 h). After warm-up the store holds about ``feeds * WINDOW`` items' keys, so memory
measured after the first cycles should not grow. Baseline: the row at the end of warm-up (cycle
10), measured in the same run; growth is reported against it. Memory is read three ways: RSS,
live interpreter blocks (``sys.getallocatedblocks()``, free to read, after a full collection) and,
with --tracemalloc (which makes each cycle about 2.5 times slower), traced bytes. Exits 1 if
blocks grew by more than ``BLOCKS_BOUND`` or traced bytes by more than ``GROWTH_BOUND_BYTES``
from cycle 10 to the end.

Measured (2-core VM, 500 feeds x 300 cycles, 12 min): RSS 85.0 MB at cycle 10, 89.1 at 100,
89.8 at 200 and 300; blocks 350,193 / 351,687 / 354,441 / 348,372 (-1,821 from cycle 10 to
300); seen keys 10,100 / 10,100 / 10,200 / 10,000; 2.4-2.7 s a cycle (4.7 s for the first,
which parses every feed). With --tracemalloc, 500 feeds x 100 cycles (12 min): traced 8.81 MB
after cycle 1, 10.14 at 10, 10.75 at 100 (+0.61 MB), blocks +1,523, RSS +4.95 MB.
Since changed feeds have only their new items parsed (aggregator/segments.py, which keeps what
identifies each feed's current items: +40,000 blocks), 500 feeds x 60 cycles: blocks 390,013 at
cycle 10 and 387,599 at 60 (-2,414), RSS 79.8 and 84.9 MB, 0.91-0.94 s a cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import logging
import os
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.compose import MessageOptions  # noqa: E402
from aggregator.config import LoadedConfig, load_config  # noqa: E402
from aggregator.daemon import make_fetcher  # noqa: E402
from aggregator.deliver import Deliverer  # noqa: E402
from aggregator.matching import Matcher  # noqa: E402
from aggregator.pipeline import FeedOutcome, Runtime, poll_feed  # noqa: E402
from aggregator.store import Store  # noqa: E402
from aggregator.telegram_api import ConsoleSender  # noqa: E402
from bench.child import LineChild  # noqa: E402

WINDOW = 10  # items per feed
CHANGE_PERIOD = 10  # a feed gains an item every CHANGE_PERIOD cycles
INTERVAL_S = 1200.0  # the fake clock's step: one polling interval per cycle
WARMUP = 10  # cycles before the baseline sample
SAMPLES = (1, 10, 100, 200, 300)
# Traced memory may move a little after warm-up: dict and set resizes in the store's indexes
# (their sizes hover around a power of two), httpx's connection pool, the interpreter's free
# lists, the outbox, stories and sent records between retention passes. Measured: +0.61 MB from
# cycle 10 to 100 (blocks went up and down by 2,000-6,000 over 300 cycles, ending lower); a leak
# of one small object per feed poll would add 1-10 MB per 100 cycles of 500 feeds.
GROWTH_BOUND_BYTES = 2 * 1024 * 1024
# The same in interpreter blocks (sys.getallocatedblocks(), which costs nothing to read): most
# blocks are small objects of 32-100 bytes, so 20,000 blocks is about 1-2 MB.
BLOCKS_BOUND = 20_000

WORDS = (  # noqa: SIM905 (one string is easier to read than 41 quoted words)
    "minister talks border ceasefire election parliament budget storm harbour protest "
    "court ruling summit trade tariffs drought wildfire vaccine strike railway "
    "وزير الخارجية الحكومة البرلمان الانتخابات سوريا لبنان مصر الأردن اتفاق مفاوضات "
    "الاقتصاد النفط الموازنة الرئيس المحكمة قمة الحدود الأمطار الجامعة المستشفى"
).split()
WATCHLISTS = (
    ("politics", ("minister", "parliament", "الحكومة", "الرئيس"), ("@soak_politics",)),
    ("weather", ("storm", "drought", "wildfire", "الأمطار"), ("@soak_weather", "1001")),
    ("levant", ("سوريا", "لبنان"), ("-1001000000001",)),
)


def changes(feed: int, cycle: int) -> bool:
    """Whether ``feed`` gains an item at ``cycle`` (cycle 0 is the initial window)."""
    return cycle > 0 and (feed + cycle * 7) % CHANGE_PERIOD == 0


def has_validators(feed: int) -> bool:
    """Three feeds in four send ETag and Last-Modified (304s); the rest send the body again."""
    return feed % 4 != 3


def feed_body(feed: int, cycle: int, start: float) -> bytes:
    """Feed ``feed``'s document as served during ``cycle``."""
    added = sum(1 for c in range(1, cycle + 1) if changes(feed, c))
    newest = WINDOW + added  # items are numbered from 1; the window holds the last WINDOW
    entries = []
    for number in range(newest, newest - WINDOW, -1):
        rng = random.Random(f"{feed}/{number}")
        # Items of the initial window are a day old (no alerts, see backfill); later ones are
        # dated at the cycle they appeared in.
        appeared = (
            start - 86400
            if number <= WINDOW
            else start + INTERVAL_S * _cycle_of(feed, number - WINDOW)
        )
        # One new item in five copies an earlier item's words: a near-duplicate story.
        text_seed = f"{feed}/{number - 1}" if number > WINDOW and number % 5 == 0 else None
        words = random.Random(text_seed).sample(WORDS, 8) if text_seed else rng.sample(WORDS, 8)
        title = " ".join(words[:6])
        summary = " ".join(words) + " " + " ".join(rng.sample(WORDS, 12))
        entries.append(
            f"<item><title>{escape(title)}</title>"
            f"<link>https://feed{feed}.soak.example/news/{number}</link>"
            f"<guid>https://feed{feed}.soak.example/news/{number}</guid>"
            f"<description>{escape(summary)}</description>"
            f"<pubDate>{format_datetime(datetime.fromtimestamp(appeared, UTC))}</pubDate>"
            "</item>\n"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>Soak feed {feed}</title><link>https://feed{feed}.soak.example/</link>"
        f"<description>soak</description>\n{''.join(entries)}</channel></rss>\n"
    ).encode()


def _cycle_of(feed: int, nth: int) -> int:
    """The cycle at which ``feed`` gained its ``nth`` new item."""
    cycle, seen = 0, 0
    while seen < nth:
        cycle += 1
        seen += changes(feed, cycle)
    return cycle


# -- the feed server, in a child process ----------------------------------------------------


def serve(feeds: int, start: float) -> None:
    """Child process: serve the feeds; on "cycle N" apply that cycle's changes, answer "ready N"."""
    from tests.servers.feed_server import FeedServer

    with FeedServer() as server:

        def publish(feed: int, cycle: int) -> None:
            server.add(
                f"/feed{feed}.xml",
                feed_body(feed, cycle, start),
                etag=has_validators(feed),
                last_modified=has_validators(feed),
            )

        for feed in range(feeds):
            publish(feed, 0)
        print(f"listening {server.url}", flush=True)
        for line in sys.stdin:
            cycle = int(line.split()[1])
            for feed in range(feeds):
                if changes(feed, cycle):
                    publish(feed, cycle)
            print(f"ready {cycle}", flush=True)


class FeedServerProcess:
    """The child process serving the soak's feeds."""

    def __init__(self, feeds: int, start: float) -> None:
        self._child = LineChild(
            Path(__file__).resolve(),
            ["serve", str(feeds), repr(start)],
            env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
        )
        first = self._child.read()
        if not first.startswith("listening "):
            raise RuntimeError(f"feed server did not start: {first!r}")
        self.url = first.split()[1]

    def advance(self, cycle: int) -> None:
        """Publish this cycle's new items; return once the server serves them."""
        answer = self._child.ask(f"cycle {cycle}")
        if answer != f"ready {cycle}":
            raise RuntimeError(f"feed server answered {answer!r}")

    def close(self) -> None:
        """Stop the child (closing its stdin ends its loop)."""
        self._child.close()


# -- the pipeline side ------------------------------------------------------------------------


def write_config(folder: Path, feeds: int, server_url: str) -> Path:
    """A config with ``feeds`` feeds on the local server and the soak's watchlists."""
    lines = [
        "[storage]",
        'path = "state/aggregator.json"',
        'seen_ttl = "1h"',
        "[polling]",
        f'interval = "{int(INTERVAL_S)}s"',
        "jitter = 0",
        # 500 feeds on one loopback server stand in for 500 hosts.
        "max_per_host = 20",
        "max_in_flight = 100",
        "[dedup]",
        'window = "1h"',
    ]
    for feed in range(feeds):
        lines += ["[[feeds]]", f'name = "feed{feed}"', f'url = "{server_url}/feed{feed}.xml"']
    for name, terms, chats in WATCHLISTS:
        quoted = ", ".join(f'"{t}"' for t in terms)
        channels = ", ".join(f'"{c}"' for c in chats)
        lines += ["[[watchlists]]", f'name = "{name}"', f"any = [{quoted}]"]
        lines += [f"channels = [{channels}]"]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Sample:
    """Memory and store sizes after one cycle."""

    cycle: int
    rss_bytes: int
    traced_bytes: int | None
    blocks: int  # sys.getallocatedblocks(): live interpreter allocations, free to read
    seen: int
    sent: int
    stories: int
    pending: int
    cycle_s: float  # mean wall time per cycle since the previous sample


@dataclass
class SoakResult:
    """Everything one soak run measured."""

    feeds: int
    cycles: int
    samples: list[Sample] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    alerts: int = 0
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def at(self, cycle: int) -> Sample:
        """The sample taken after ``cycle``."""
        return next(s for s in self.samples if s.cycle == cycle)

    def blocks_growth(self, since: int = WARMUP) -> int:
        """Allocated blocks gained from ``since`` to the last sample."""
        return self.samples[-1].blocks - self.at(since).blocks

    def traced_growth(self, since: int = WARMUP) -> int:
        """Traced bytes gained from ``since`` to the last sample."""
        first, last = self.at(since).traced_bytes, self.samples[-1].traced_bytes
        assert first is not None and last is not None, "tracemalloc was off"
        return last - first


def rss_bytes() -> int:
    """This process's resident set size now (Linux), else its peak."""
    with contextlib.suppress(OSError), open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def quiet_pipeline_logs() -> Iterator[None]:
    """Drop the per-feed INFO lines (500 a cycle): a log handler that keeps them, like a test
    runner's capture, would be measured as the daemon's memory."""
    logger = logging.getLogger("aggregator")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class Discard(io.StringIO):
    """A text stream that keeps nothing."""

    def write(self, text: str) -> int:
        """Accept and drop ``text``."""
        return len(text)


class FakeClock:
    """``Runtime.clock``: real time at the start, one polling interval later each cycle."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def run_soak(
    folder: Path,
    *,
    feeds: int,
    cycles: int,
    samples: tuple[int, ...] = SAMPLES,
    trace: bool = True,
) -> SoakResult:
    """Poll ``feeds`` feeds for ``cycles`` cycles; sample memory after the cycles in ``samples``.

    The harness talks to its feed server with blocking pipe reads between cycles, when no poll
    is under way, so they hold up nothing that is measured.
    """
    start = time.time()
    server = FeedServerProcess(feeds, start)
    try:
        with quiet_pipeline_logs():
            loaded = load_config(write_config(folder, feeds, server.url))
            return await _soak(loaded, server, start, cycles, samples, trace)
    finally:
        server.close()


async def _soak(
    loaded: LoadedConfig,
    server: FeedServerProcess,
    start: float,
    cycles: int,
    samples: tuple[int, ...],
    trace: bool,
) -> SoakResult:
    config = loaded.config
    result = SoakResult(feeds=len(config.feeds), cycles=cycles)
    clock = FakeClock(start)
    # Built as daemon.services builds it, with the clock injected.
    store = Store.open(loaded.storage_path)
    fetcher = make_fetcher(loaded)
    sender = ConsoleSender(Discard())  # the terminal sender, printing nowhere
    runtime = Runtime(
        loaded=loaded,
        matcher=Matcher([w.rules() for w in config.watchlists]),
        store=store,
        fetcher=fetcher,
        message_options=MessageOptions(timezone=ZoneInfo(config.telegram.timezone)),
        clock=clock,
    )
    housekeeping_every = max(1, round(3600 / INTERVAL_S))  # the daemon's hourly retention pass
    if trace:
        tracemalloc.start()
    began = last = time.perf_counter()
    last_cycle = 0
    try:
        for cycle in range(1, cycles + 1):
            server.advance(cycle)
            if cycle > 1:
                clock.now += INTERVAL_S
            outcomes: list[FeedOutcome] = await asyncio.gather(
                *(poll_feed(runtime, feed) for feed in config.feeds)
            )
            for outcome in outcomes:
                result.statuses[outcome.status] = result.statuses.get(outcome.status, 0) + 1
                result.alerts += len(outcome.alerts)
                if outcome.error and len(result.errors) < 5:
                    result.errors.append(f"cycle {cycle} {outcome.feed}: {outcome.error}")
            deliverer = Deliverer(store, sender, limits=None)  # the terminal: no pacing
            await deliverer.drain(60.0)
            if cycle % housekeeping_every == 0:
                store.prune(
                    now=clock.now,
                    seen_ttl_s=config.storage.seen_ttl,
                    active_feeds=[f.name for f in config.feeds],
                )
            if cycle in samples or cycle == cycles:
                now = time.perf_counter()
                result.samples.append(_sample(store, cycle, (now - last) / (cycle - last_cycle)))
                last, last_cycle = time.perf_counter(), cycle
    finally:
        if trace:
            tracemalloc.stop()
        await fetcher.aclose()
        store.close()
    result.wall_s = time.perf_counter() - began
    return result


def _sample(store: Store, cycle: int, cycle_s: float) -> Sample:
    gc.collect()
    stats = store.stats()
    return Sample(
        cycle=cycle,
        rss_bytes=rss_bytes(),
        traced_bytes=tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
        blocks=sys.getallocatedblocks(),
        seen=stats.seen,
        sent=stats.sent,
        stories=stats.stories,
        pending=stats.pending,
        cycle_s=cycle_s,
    )


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def report(result: SoakResult) -> bool:
    """Print the table; True if memory stayed within the bound after warm-up."""
    polls = sum(result.statuses.values())
    print(
        f"soak: {result.feeds} feeds x {result.cycles} cycles, clock +{INTERVAL_S:g}s per cycle, "
        f"{polls:,} polls ({', '.join(f'{k} {v:,}' for k, v in sorted(result.statuses.items()))}), "
        f"{result.alerts:,} alerts, {result.wall_s:.1f}s"
    )
    header = (
        f"{'cycle':>6} {'RSS MB':>8} {'traced MB':>10} {'blocks':>9} {'seen keys':>10} {'sent':>6} "
        f"{'stories':>8} {'pending':>8} {'s/cycle':>8}"
    )
    print(header)
    for s in result.samples:
        print(
            f"{s.cycle:>6} {_mb(s.rss_bytes):>8} {_mb(s.traced_bytes):>10} {s.blocks:>9,} "
            f"{s.seen:>10,} "
            f"{s.sent:>6,} {s.stories:>8,} {s.pending:>8,} {s.cycle_s:>8.3f}"
        )
    base, last = result.at(WARMUP), result.samples[-1]
    blocks = result.blocks_growth()
    ok = blocks <= BLOCKS_BOUND
    parts = [
        f"blocks {blocks:+,} (bound {BLOCKS_BOUND:,}: {'ok' if ok else 'EXCEEDED'})",
        f"RSS {(last.rss_bytes - base.rss_bytes) / 1e6:+.2f} MB",
        f"seen keys {last.seen - base.seen:+,}",
    ]
    if base.traced_bytes is not None:
        traced = result.traced_growth()
        traced_ok = traced <= GROWTH_BOUND_BYTES
        ok = ok and traced_ok
        parts.insert(
            0,
            f"traced {traced / 1e6:+.2f} MB (bound {GROWTH_BOUND_BYTES / 1e6:.1f} MB: "
            f"{'ok' if traced_ok else 'EXCEEDED'})",
        )
    print(f"growth from cycle {WARMUP} (baseline) to {last.cycle}: " + ", ".join(parts))
    for error in result.errors:
        print(f"error: {error}")
    return ok and not result.errors


def main() -> int:
    """Run the soak and print the table."""
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]), float(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace allocations (2.5x slower)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to put the store")
    args = parser.parse_args()
    if args.cycles < WARMUP:
        parser.error(f"--cycles must be at least {WARMUP}")
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        result = asyncio.run(
            run_soak(Path(folder), feeds=args.feeds, cycles=args.cycles, trace=args.tracemalloc)
        )
    return 0 if report(result) else 1


if __name__ == "__main__":
    sys.exit(main())
