"""Telegram's flood limits, kept before sending rather than learnt from 429s.

Telegram allows about 30 messages per second overall, one per second in a private chat and 20
per minute in a group or channel. ``Gate`` holds each send until both its chat's window and the
overall window have room. A window counts a send from the moment it starts until one window
after Telegram answered it: Telegram received it somewhere in between, so however long the
request took on the way, two sends that the gate let through one window apart reach Telegram at
least one window apart. (python-telegram-bot's AIORateLimiter is a leaky bucket: after a full
burst it lets the next message through one interval later, twice the window's allowance within
one window, and it knows nothing of private chats; so the gate replaces it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .durations import parse_duration

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(.+)$")


@dataclass(frozen=True)
class Rate:
    """At most ``count`` messages in any ``window_s`` seconds."""

    count: int
    window_s: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.window_s <= 0:
            raise ValueError(f"a rate needs count >= 1 and a positive window, got {self}")

    def __str__(self) -> str:
        return f"{self.count}/{self.window_s:g}s"


def parse_rate(value: object) -> Rate:
    """A rate from "20/1m", "1/1s" or "30/1s": messages per duration."""
    found = _RATE.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f'expected messages per duration such as "20/1m", got {value!r}')
    count = int(found.group(1))
    window = parse_duration(found.group(2))
    if count < 1 or window <= 0:
        raise ValueError(f"expected at least 1 message per positive duration, got {value!r}")
    return Rate(count, window)


@dataclass(frozen=True)
class Limits:
    """The limits the gate keeps: Telegram's published ones by default."""

    overall: Rate = Rate(30, 1.0)
    group: Rate = Rate(20, 60.0)  # groups, supergroups and channels
    private: Rate = Rate(1, 1.0)

    def for_chat(self, chat: str) -> Rate:
        """The per-chat limit of a chat id ("@name" and negative ids are groups or channels)."""
        return self.private if is_private(chat) else self.group


def is_private(chat: str) -> bool:
    """A private chat's id is its user's id, a positive number."""
    return chat.isdigit()


@dataclass
class _Window:
    rate: Rate
    done: deque[float] = field(default_factory=deque)  # when answered sends were answered
    in_flight: int = 0

    def free_at(self, now: float) -> float:
        """When this window has room for one more send (``now`` if it has room now)."""
        while self.done and self.done[0] <= now - self.rate.window_s:
            self.done.popleft()
        used = len(self.done) + self.in_flight
        if used < self.rate.count:
            return now
        if len(self.done) > used - self.rate.count:
            return self.done[used - self.rate.count] + self.rate.window_s
        return math.inf  # full of sends still under way: wait for an answer


# How many chats' windows the gate keeps before it forgets the idle ones.
_SWEEP_AT = 10_000


class Gate:
    """Holds sends until Telegram's limits have room; one per event loop, shared by all sends."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._overall = _Window(self.limits.overall)
        self._chats: dict[str, _Window] = {}
        self._answered = asyncio.Event()
        self._closed = False

    def set_limits(self, limits: Limits) -> None:
        """New limits (a reload) for this gate: what was sent still counts, and sends waiting
        for room look again now. One gate for the life of the deliverer, so that stop() reaches
        every waiting send."""
        self.limits = limits
        self._overall.rate = limits.overall
        for chat, window in self._chats.items():
            window.rate = limits.for_chat(chat)
        self._answered.set()

    def _window(self, chat: str) -> _Window:
        window = self._chats.get(chat)
        if window is None:
            if len(self._chats) >= _SWEEP_AT:
                self._sweep()
            window = self._chats[chat] = _Window(self.limits.for_chat(chat))
        return window

    def _sweep(self) -> None:
        """Forget the windows of chats with nothing in them (a bot answers many users once)."""
        now = time.monotonic()
        for chat, window in list(self._chats.items()):
            if not window.in_flight and window.free_at(now) <= now and not window.done:
                del self._chats[chat]

    @contextlib.asynccontextmanager
    async def slot(self, chat: str) -> AsyncIterator[None]:
        """Wait for room, then count the send made inside the block (answered or not)."""
        chat_window = self._window(chat)
        while True:
            now = time.monotonic()
            free_at = max(chat_window.free_at(now), self._overall.free_at(now))
            if free_at <= now or self._closed:  # closed: the caller checks why, and stops
                break
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                wait = None if math.isinf(free_at) else free_at - now
                await asyncio.wait_for(self._answered.wait(), wait)
        chat_window.in_flight += 1
        self._overall.in_flight += 1
        try:
            yield
        finally:
            answered = time.monotonic()
            for window in (chat_window, self._overall):
                window.in_flight -= 1
                window.done.append(answered)
            self._answered.set()

    def seed(self, sends: dict[str, list[float]], maybe_in_flight: list[str]) -> None:
        """Count sends made before this gate existed (epoch seconds, oldest first), such as a
        previous process's: Telegram counts them in its windows, so a restart must too.

        ``maybe_in_flight``: chats that may have had one more send under way when that
        process ended (Telegram took it, the store never heard): counted as sent now.
        """
        now, wall = time.monotonic(), time.time()
        overall: list[float] = []
        for chat, times in sends.items():
            window = self._window(chat)
            seeded = [now - (wall - at) for at in times if wall - at < window.rate.window_s]
            window.done.extend(seeded)
            overall += seeded
        for chat in maybe_in_flight:
            self._window(chat).done.append(now)
            overall.append(now)
        self._overall.done.extend(
            sorted(t for t in overall if now - t < self.limits.overall.window_s)
        )

    def close(self) -> None:
        """Let every waiting send through at once, for shutdown (it must not send then)."""
        self._closed = True
        self._answered.set()

    def room(self, chat: str) -> int:
        """How many more sends the chat's window takes right now."""
        window = self._window(chat)
        window.free_at(time.monotonic())  # drops what left the window
        return max(0, window.rate.count - len(window.done) - window.in_flight)

    def forget(self, chat: str) -> None:
        """Drop an idle chat's window (e.g. a migrated group's old id)."""
        window = self._chats.get(chat)
        if window is not None and not window.in_flight:
            del self._chats[chat]
