"""Feed parsing in worker processes, so that a heavy poll cycle never holds up the event loop.

feedparser is pure Python and holds the GIL: in a thread it still keeps the event loop (and so
every delivery) waiting, and it uses one core. On bench/bench_polling.py's cycle where 1,000
feeds changed, two worker processes on a 2-core machine were 1.7-2x faster than a thread with
3-10x less event-loop lag when whole bodies were parsed, and are 1.4x faster with 2.4x less lag
now that only new items are (segments.py); an unchanged feed is never parsed at all, so the
pool costs nothing there. A hostile document that makes the parser balloon does so in a
worker, not in the daemon.

Workers are spawned (not forked: the daemon has threads, and forking those is unsafe), ignore
SIGINT, so that Ctrl-C in a terminal stops the daemon, which then shuts them down, and on Linux
ask the kernel to kill them when the daemon dies: a SIGKILLed daemon must not leave them behind
(they would wait forever on their task queue). A worker that dies (killed, out of memory) breaks
the pool: it is replaced, the document retried once in the new pool, and if it kills that one
too, the feed's poll fails with a clear error.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .logs import event
from .parse import ParsedFeed, ParseError, parse_feed

log = logging.getLogger("aggregator.parse")


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _start_worker(daemon_pid: int) -> None:
    """In each worker, first: ignore Ctrl-C and die with the daemon."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:  # it died before the kernel was asked
        os._exit(0)


class ParsePool:
    """An awaitable ``parse_feed`` (a pipeline ``FeedParser``) run in worker processes."""

    def __init__(self, workers: int, *, timeout_s: float = 60.0) -> None:
        if workers < 1:
            raise ValueError("a parse pool needs at least one worker")
        self.workers = workers
        # A document that keeps a worker busy this long is given up, and the worker killed: a
        # parse that never ends would otherwise stop its feed's polls for good.
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def _executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise ParseError("the parse pool is closed (the daemon is stopping)")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            broken.shutdown(wait=False, cancel_futures=True)

    async def __call__(
        self,
        body: bytes,
        *,
        feed_name: str,
        headers: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> ParsedFeed:
        # A plain dict: httpx's header views do not pickle.
        call = functools.partial(
            parse_feed, body, feed_name=feed_name, headers=dict(headers or {}), base_url=base_url
        )
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._executor()
            try:
                return await asyncio.wait_for(loop.run_in_executor(pool, call), self.timeout_s)
            except TimeoutError:
                for worker in list((pool._processes or {}).values()):
                    worker.kill()  # which one is stuck is not known: start afresh
                self._replace(pool)
                raise ParseError(
                    f"parsing took over {self.timeout_s:g} s; the document was given up"
                ) from None
            except BrokenProcessPool:
                self._replace(pool)
                if self._closed:  # close() stopped the workers: no new pool, no retry
                    raise ParseError("the parse pool is closed (the daemon is stopping)") from None
                event(
                    log,
                    logging.WARNING,
                    "parser process died; replaced",
                    feed=feed_name,
                    attempt=attempt,
                )
        raise ParseError("the parser process died twice on this document (killed or out of memory)")

    def close(self) -> None:
        """Stop the workers (a parse under way is abandoned)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            # Stopped, not left to finish, and waited for: Python 3.11's exit hook wakes the
            # pool's manager thread without a lock, and a pool still winding down when the
            # daemon exits can have closed that wakeup pipe just before (a traceback at exit,
            # "OSError: Bad file descriptor").
            for worker in list((pool._processes or {}).values()):
                worker.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
