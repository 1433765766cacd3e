"""The bot's /status: the daemon's status document as a Telegram message for a phone.

It renders the same ``DaemonStatus`` that the daemon writes to its status file, with the same
health verdict, so /status and ``aggregator status`` / ``aggregator health`` cannot disagree;
only the layout differs: short lines instead of wide tables, failing feeds first, Telegram HTML
with every name and error escaped. Long lists are cut to fit one message, each with a last
"… and N more" line, and the sections share the room so that a thousand feeds cannot push the
queue out of the message.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, tzinfo

from .compose import utf16_len
from .status import (
    DaemonStatus,
    FeedStatus,
    WatchlistStatus,
    clip,
    feed_health,
    format_next,
    format_span,
    format_when,
    tally_feeds,
)

# UTF-16 units of HTML, as Telegram counts; the text it counts against 4096 after parsing is
# shorter still.
MESSAGE_MAX = 3900
# Each long text is clipped before escaping, so an entity (&amp;) is never cut in half.
HEALTH_MAX = 400
PROBLEM_MAX = 200
NAME_MAX = 64
ERROR_MAX = 100
REASON_MAX = 80
# Failing feeds first: those are what an admin opens /status for.
FEED_ORDER = {"failing": 0, "waiting": 1, "ok": 2, "disabled": 3}


@dataclass(frozen=True)
class _Section:
    title: str
    entries: list[str]  # one per feed, watchlist or chat; an entry may take two lines

    def render(self, room: int) -> str:
        """The title and the entries that fit in ``room`` characters, then "… and N more"."""
        if self.size() <= room:
            return "\n".join([self.title, *self.entries])
        lines = [self.title]
        used = utf16_len(self.title)
        for shown, entry in enumerate(self.entries):
            more = f"… and {len(self.entries) - shown} more"
            # Room is kept for the "more" line that must follow (the whole list does not fit).
            if used + 1 + utf16_len(entry) + 1 + len(more) > room:
                lines.append(more)
                break
            lines.append(entry)
            used += 1 + utf16_len(entry)
        return "\n".join(lines)

    def size(self) -> int:
        return utf16_len("\n".join([self.title, *self.entries]))


def status_message(
    status: DaemonStatus,
    health_line: str,
    now: float,
    zone: tzinfo,
    *,
    limit: int = MESSAGE_MAX,
) -> str:
    """/status in Telegram HTML, within ``limit`` characters.

    ``health_line`` is the verdict as ``aggregator health`` prints it (``Verdict.line()``).
    """
    head = "\n".join(_head(status, health_line, now, zone))
    sections = [_feeds(status, now), _watchlists(status, now), _queue(status)]
    separator = "\n\n"
    room = limit - utf16_len(head) - len(separator) * len(sections)
    parts = [head]
    for section, share in zip(sections, _share(room, [s.size() for s in sections]), strict=True):
        parts.append(section.render(share))
    return separator.join(parts)


def _share(room: int, sizes: list[int]) -> list[int]:
    """Room per section: each gets what it needs, the big ones an equal part of what is left."""
    shares = [0] * len(sizes)
    left = room
    by_size = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for rank, i in enumerate(by_size):
        shares[i] = min(sizes[i], left // (len(sizes) - rank))
        left -= shares[i]
    return shares


def _head(status: DaemonStatus, health_line: str, now: float, zone: tzinfo) -> list[str]:
    up = format_span(now - status.started_at)
    daemon = f"running, pid {status.pid}, up {up}" if status.running else "stopped"
    lines = [
        "<b>Status</b>",
        "Health: " + _text(health_line, HEALTH_MAX),
        f"Daemon: {daemon}",
        "Delivery: " + ("PAUSED (/resume)" if status.delivery_paused else "running"),
    ]
    if status.fatal:
        lines.append("Delivery blocked: " + _text(status.fatal, PROBLEM_MAX))
    if status.store_error:
        lines.append(
            "Store not writable (delivery held): " + _text(status.store_error, PROBLEM_MAX)
        )
    feeds = tally_feeds(status.feeds)
    counts = f"Feeds: {feeds.ok} healthy, {feeds.failing} failing, {feeds.waiting} not polled yet"
    lines.append(counts + (f", {feeds.disabled} disabled" if feeds.disabled else ""))
    polls = [f.last_poll_at for f in status.feeds if f.last_poll_at is not None]
    if polls:
        last = max(polls)
        shown = datetime.fromtimestamp(last, zone).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"Last poll: {shown} ({format_when(last, now)})")
    else:
        lines.append("Last poll: none yet")
    return lines


def _feeds(status: DaemonStatus, now: float) -> _Section:
    feeds = sorted(status.feeds, key=lambda f: FEED_ORDER[feed_health(f)])
    if not feeds:
        return _Section("Feeds: none configured", [])
    return _Section("<b>Feeds</b>", [_feed(f, now, status.running) for f in feeds])


def _feed(feed: FeedStatus, now: float, running: bool) -> str:
    health = feed_health(feed)
    name = _text(feed.name, NAME_MAX)
    if health == "disabled":
        return f"• {name}: disabled"
    if health == "failing":
        verdict = f"<b>{feed.failures} failure{'s' if feed.failures > 1 else ''}</b>"
    else:
        verdict = "ok" if health == "ok" else "not polled yet"
    parts = [f"• {name}: {verdict}"]
    if feed.last_poll_at is not None:
        parts.append(f"polled {format_when(feed.last_poll_at, now)}")
    parts.append(f"next {format_next(feed, now, running)}")
    if feed.items is not None:
        parts.append(f"{feed.items} items")
    parts.append(f"{feed.new_24h} new in 24h")
    line = ", ".join(parts)
    if health == "failing" and feed.last_error:
        line += "\n  " + _text(feed.last_error, ERROR_MAX)
    return line


def _watchlists(status: DaemonStatus, now: float) -> _Section:
    if not status.watchlists:
        return _Section("Watchlists: none configured", [])
    # The busiest first: when the list is cut, what is left out matched least.
    ordered = sorted(status.watchlists, key=lambda w: -w.matches_24h)
    return _Section("<b>Watchlists</b>, matches in 24h", [_watchlist(w, now) for w in ordered])


def _watchlist(watchlist: WatchlistStatus, now: float) -> str:
    line = f"• {_text(watchlist.name, NAME_MAX)}: {watchlist.matches_24h}"
    if watchlist.last_match_at is not None:
        line += f", last {format_when(watchlist.last_match_at, now)}"
    return line


def _queue(status: DaemonStatus) -> _Section:
    chats = set(status.queue) | set(status.paused_chats)
    if not chats:
        return _Section("Queue: empty", [])
    # Paused chats first (they need an admin), then the longest queues.
    ordered = sorted(
        chats, key=lambda c: (c not in status.paused_chats, -status.queue.get(c, 0), c)
    )
    entries = []
    for chat in ordered:
        entry = f"• {_text(chat, NAME_MAX)}: {status.queue.get(chat, 0)}"
        if chat in status.paused_chats:
            entry += f" (paused: {_text(status.paused_chats[chat], REASON_MAX)})"
        entries.append(entry)
    total = sum(status.queue.values())
    return _Section(f"<b>Queue</b>: {total} alerts waiting", entries)


def _text(text: str, limit: int) -> str:
    """Plain text for Telegram HTML: on one line, clipped, then escaped."""
    return html.escape(clip(text, limit), quote=False)
