"""Helper for the store kill test: commits batches forever, reporting each one once it returned.

Usage: python tests/store_writer.py STORE_PATH [KILL_AT_CALL | +KILL_AT_CALL]

Prints "opened" after the store is open, then for batch N (continuing after the last batch in
the store) "committed N" once commit() returned, "sent ID" once mark_sent() returned and
"meta N" once set_meta() returned, each flushed at once. The test SIGKILLs it at random points
and checks that everything it printed is in the store. Snapshot rewrites are made frequent
(every second batch, and a small size threshold) so that kills land inside them too.

A kill from outside mostly lands in an fsync, the slowest step. With KILL_AT_CALL=K the writer
SIGKILLs itself just before its K-th file-system call (open, write, fsync, rename, link,
truncate, unlink), so that kills also land between the steps of a snapshot rewrite; with
+KILL_AT_CALL it counts from after the store is open.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from aggregator.store import FeedState, OutboxEntry, SeenRecord, Store

KEYS_PER_BATCH = 20
ALERTS_PER_BATCH = 3
MAX_BATCHES = 5000  # a guard: the test kills the writer long before this


def batch_keys(n: int) -> list[str]:
    """The seen keys of batch n."""
    return [f"b{n}-k{j}" for j in range(KEYS_PER_BATCH)]


def alert_ids(n: int) -> list[str]:
    """The outbox ids of batch n."""
    return [f"b{n}-a{j}" for j in range(ALERTS_PER_BATCH)]


def feed_of(n: int) -> str:
    """The feed that batch n belongs to."""
    return f"feed{n % 4}"


def first_free_batch(store: Store) -> int:
    """The number after the last batch in the store."""
    n = 0
    while store.is_seen(batch_keys(n)[0]):
        n += 1
    return n


def main(path: str, kill_at: str | None = None) -> None:
    """Open the store and commit until killed."""
    if kill_at is not None and not kill_at.startswith("+"):
        kill_at_call(int(kill_at))
    store = Store.open(path, compact_min_bytes=16 * 1024)
    print("opened", flush=True)
    if kill_at is not None and kill_at.startswith("+"):
        kill_at_call(int(kill_at[1:]))
    start = first_free_batch(store)
    for n in range(start, start + MAX_BATCHES):
        keys = batch_keys(n)
        store.commit(
            feed=feed_of(n),
            state=FeedState(etag=f"e{n}", consecutive_failures=n, initialized=True),
            seen=[SeenRecord(key=k, feed=feed_of(n), seen_at=float(n)) for k in keys],
            alerts=[
                OutboxEntry(
                    id=entry_id,
                    chat=f"@chat{j}",
                    text=f"<b>alert {entry_id}</b> عاجل",
                    plain=f"alert {entry_id} عاجل",
                    watchlist="w",
                    item_key=keys[0],
                    feed=feed_of(n),
                    created_at=float(n),
                )
                for j, entry_id in enumerate(alert_ids(n))
            ],
            present_keys=keys,
        )
        print(f"committed {n}", flush=True)
        store.compact_if_due()
        if n % 3 == 2:
            entry_id = alert_ids(n - 1)[0]
            store.mark_sent(entry_id, message_id=n, sent_at=float(n))
            print(f"sent {entry_id}", flush=True)
        if n % 7 == 6:
            store.set_meta("last", n)
            print(f"meta {n}", flush=True)
        if n % 2 == 1:  # besides the size-triggered ones, so that kills often land in one
            store.compact()


def kill_at_call(k: int) -> None:
    """SIGKILL this process just before its k-th file-system call."""
    calls = 0
    kill, pid = os.kill, os.getpid()

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls >= k:
                kill(pid, signal.SIGKILL)
            return func(*args, **kwargs)

        return counted

    for name in ("open", "write", "fsync", "replace", "link", "ftruncate", "unlink"):
        setattr(os, name, wrap(getattr(os, name)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
