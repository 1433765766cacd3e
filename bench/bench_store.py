"""Benchmark of the store against plain TinyDB (default JSONStorage), in the same run.

Usage: python bench/bench_store.py [--keys 100000] [--dir DIR]

Targets (ARCHITECTURE "store", issue 4), with 100,000 seen keys:
    seen-check under 10 µs; flush of one feed's changes (50 new seen keys + 5 alerts) under
    50 ms, including the worst flush of a whole compaction cycle (compaction runs between
    polls, never inside a flush; it is timed on its own); start-up load under 1 s.
Plain TinyDB is measured on the same data for comparison: ``contains`` (a query), ``insert``
of one document and ``insert_multiple`` of a feed's 55 documents (each rewrites the whole file,
without fsync), and opening + reading the table. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tinydb import Query, TinyDB

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator.store import FeedState, OutboxEntry, SeenRecord, Store, settle_heap  # noqa: E402

FEEDS = 50
KEYS_PER_FLUSH = 50
ALERTS_PER_FLUSH = 5


def key(n: int) -> str:
    """A realistic item key: a normalised article URL."""
    return f"https://www.example-news.org/world/2024/05/{n:07d}/some-article-slug-here"


def alert(n: int, now: float) -> OutboxEntry:
    """An outbox entry of realistic size (an Arabic summary with HTML)."""
    text = "<b>عاجل: اجتماع وزراء الخارجية</b>\n" + "ملخص الخبر " * 40
    return OutboxEntry(
        id=f"alert-{n}",
        chat="-1001234567890",
        text=text,
        plain=text,
        watchlist="politics",
        item_key=key(n),
        feed=f"feed{n % FEEDS}",
        created_at=now,
    )


def timed(func: Callable[[], object], repeat: int) -> list[float]:
    """Seconds per call, one sample per call."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return samples


def fill_store(path: Path, keys: int) -> None:
    """A store with ``keys`` seen keys spread over the feeds, compacted into one snapshot."""
    with Store.open(path, compact_min_bytes=1 << 40) as store:
        now = time.time()
        for start in range(0, keys, 5000):
            records = [
                SeenRecord(key=key(n), feed=f"feed{n % FEEDS}", seen_at=now)
                for n in range(start, min(start + 5000, keys))
            ]
            store.commit(seen=records)
        for f in range(FEEDS):
            store.commit(feed=f"feed{f}", state=FeedState(etag=f"e{f}", initialized=True))
        store.compact()


def flush(store: Store, n: int) -> None:
    """One feed's poll: 50 new keys, 5 alerts, its state and its present keys."""
    feed = f"feed{n % FEEDS}"
    now = time.time()
    base = 10_000_000 + n * KEYS_PER_FLUSH
    keys = [key(base + i) for i in range(KEYS_PER_FLUSH)]
    store.commit(
        feed=feed,
        state=FeedState(etag=f"e{n}", initialized=True, last_success_at=now),
        seen=[SeenRecord(key=k, feed=feed, seen_at=now) for k in keys],
        alerts=[alert(base + i, now) for i in range(ALERTS_PER_FLUSH)],
        present_keys=keys,
    )


def bench_store(folder: Path, keys: int) -> dict[str, float]:
    """This project's store: seconds for each operation."""
    path = folder / "store" / "aggregator.json"
    fill_store(path, keys)
    results: dict[str, float] = {}
    start = time.perf_counter()
    store = Store.open(path)
    results["open (snapshot only)"] = time.perf_counter() - start
    results["_snapshot MB"] = store.stats().snapshot_bytes / 1e6
    hits = [key(n) for n in range(0, keys, 7)]
    misses = [key(n) for n in range(keys, keys + len(hits))]
    start = time.perf_counter()
    for k in hits:
        store.is_seen(k)
    for k in misses:
        store.is_seen(k)
    results["seen-check"] = (time.perf_counter() - start) / (2 * len(hits))
    n = 0

    def one_flush() -> None:
        nonlocal n
        flush(store, n)
        n += 1

    samples = timed(one_flush, 300)
    results["flush 50 keys + 5 alerts (median)"] = statistics.median(samples)
    results["flush 50 keys + 5 alerts (p99)"] = statistics.quantiles(samples, n=100)[98]
    pending = [e.id for e in store.pending()]
    sent = timed(lambda: store.mark_sent(pending.pop(), message_id=1, sent_at=time.time()), 100)
    results["mark_sent (median)"] = statistics.median(sent)
    # From here on the deliverer's work is done between flushes (untimed), as in the daemon,
    # so the outbox stays near empty instead of growing by 5 alerts per flush.
    deliver_all(store)
    # Worst-case start-up: the journal just below its compaction threshold (as big as the
    # snapshot), so open replays a whole snapshot's worth of batches.
    before = store.stats().journal_bytes
    one_flush()
    per_flush = store.stats().journal_bytes - before
    while store.stats().journal_bytes + 2 * per_flush < store.stats().snapshot_bytes:
        one_flush()
        deliver_all(store)
    stats = store.stats()
    store.close()
    start = time.perf_counter()
    store = Store.open(path)
    results["open (journal at threshold)"] = time.perf_counter() - start
    settle_heap()  # as the daemon does after opening and after each compaction
    # A compaction as the daemon runs it: each flush is followed by compact_if_due() between
    # polls. The flush's worst case around it is what a poll waits for; the compaction (which
    # never runs inside a flush) is timed on its own.
    cycle: list[float] = []
    compaction: float | None = None
    while compaction is None or len(cycle) < 300:
        cycle.extend(timed(one_flush, 1))
        deliver_all(store)
        start = time.perf_counter()
        if store.compact_if_due():
            compaction = time.perf_counter() - start
            settle_heap()
    results["flush around a compaction (max)"] = max(cycle)
    results["compaction, between polls"] = compaction
    results["_journal MB at threshold"] = stats.journal_bytes / 1e6
    results["_flushes per compaction"] = stats.snapshot_bytes / per_flush
    store.close()
    return results


def deliver_all(store: Store) -> None:
    """Mark every queued alert sent, as the deliverer does between polls."""
    pending = [e.id for e in store.pending()]
    if pending:
        store.mark_sent_many(pending, message_id=1, sent_at=time.time())


def bench_tinydb(folder: Path, keys: int) -> dict[str, float]:
    """Plain TinyDB with its default JSONStorage on the same data: seconds per operation."""
    path = folder / "plain.json"
    now = time.time()
    seen = {
        str(i + 1): {"key": key(i), "feed": f"feed{i % FEEDS}", "seen_at": now} for i in range(keys)
    }
    path.write_text(json.dumps({"seen": seen}), encoding="utf-8")
    results: dict[str, float] = {}

    def open_and_read() -> None:
        db = TinyDB(path)
        db.table("seen").count(Query().noop())
        db.close()

    results["open (snapshot only)"] = timed(open_and_read, 1)[0]
    db = TinyDB(path)
    table = db.table("seen")
    item = Query()
    probe = iter(range(0, keys, keys // 20))
    results["seen-check"] = statistics.median(
        timed(lambda: table.contains(item.key == key(next(probe))), 10)
    )
    single = iter(range(20_000_000, 20_000_100))
    results["insert one document (median)"] = statistics.median(
        timed(lambda: table.insert({"key": key(next(single)), "feed": "f", "seen_at": now}), 5)
    )
    batch_no = iter(range(100))

    def insert_batch() -> None:
        base = 30_000_000 + next(batch_no) * 100
        docs = [{"key": key(base + i), "feed": "f", "seen_at": now} for i in range(50)]
        table.insert_multiple(docs)
        db.table("outbox").insert_multiple(
            alert(base + i, now).__dict__ for i in range(ALERTS_PER_FLUSH)
        )

    results["flush 50 keys + 5 alerts (median)"] = statistics.median(timed(insert_batch, 5))
    db.close()
    return results


def report(ours: dict[str, float], plain: dict[str, float], keys: int) -> bool:
    """Print the comparison table; True if every target is met."""
    targets = {
        "seen-check": 10e-6,
        "flush 50 keys + 5 alerts (median)": 50e-3,
        "flush 50 keys + 5 alerts (p99)": 50e-3,
        "flush around a compaction (max)": 50e-3,
        "open (snapshot only)": 1.0,
        "open (journal at threshold)": 1.0,
    }
    names = [k for k in ours if not k.startswith("_")] + ["insert one document (median)"]
    print(f"store benchmark, {keys:,} seen keys (times per operation)")
    print(f"{'operation':<36} {'this store':>12} {'plain TinyDB':>14} {'target':>10}  ok")
    ok = True
    for name in names:
        target = targets.get(name)
        mine = ours.get(name)
        met = "" if target is None or mine is None else ("yes" if mine < target else "NO")
        ok = ok and met != "NO"
        print(f"{name:<36} {_fmt(mine):>12} {_fmt(plain.get(name)):>14} {_fmt(target):>10}  {met}")
    flushes = ours["_flushes per compaction"]
    print(
        f"snapshot of {keys:,} keys {ours['_snapshot MB']:.1f} MB, journal at threshold "
        f"{ours['_journal MB at threshold']:.1f} MB, one compaction per ~{flushes:.0f} flushes "
        "plain TinyDB does not fsync, this store fsyncs every write"
    )
    return ok


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def main() -> int:
    """Run both benchmarks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as folder:
        ours = bench_store(Path(folder), args.keys)
        plain = bench_tinydb(Path(folder), args.keys)
    return 0 if report(ours, plain, args.keys) else 1


if __name__ == "__main__":
    sys.exit(main())
