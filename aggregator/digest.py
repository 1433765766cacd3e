"""Digests: several queued alerts packed into one Telegram message.

When a chat's backlog is more than its flood limit can carry within ``max_delay``, or when a
watchlist's quiet hours end, the deliverer sends its alerts packed. Each alert keeps its own
paragraphs (they are complete markup on their own), alerts are separated by a blank line, and
the message stays within Telegram's 4096 characters. Alerts go in whole while enough of them fit;
otherwise in their short form (title, source, time, hashtag; see ``compose.brief``).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .compose import TELEGRAM_LIMIT, brief, utf16_len
from .store import OutboxEntry


@dataclass(frozen=True)
class Digest:
    """One message carrying the alerts ``ids``, all for ``chat``."""

    chat: str
    html: str
    plain: str
    ids: tuple[str, ...]
    created_at: tuple[float, ...]  # of each alert, for the delivery-latency metric


def backlog_title(count: int) -> str:
    """The first line of a digest sent because the chat had a backlog."""
    return f"{count} alerts"


def quiet_title(count: int) -> str:
    """The first line of a digest of alerts held during quiet hours."""
    return f"{count} alerts from quiet hours"


def pack(
    entries: Sequence[OutboxEntry], want: int, title: Callable[[int], str] = backlog_title
) -> Digest | None:
    """The oldest ``entries`` packed into one message: whole if ``want`` of them fit, else
    short, as many as fit. None when fewer than two fit (send the first on its own)."""
    whole = _greedy(entries, title, short=False)
    if whole is not None and len(whole.ids) >= min(want, len(entries)):
        return whole
    return _greedy(entries, title, short=True) or whole


def _greedy(
    entries: Sequence[OutboxEntry], title: Callable[[int], str], *, short: bool
) -> Digest | None:
    html_parts: list[str] = []
    plain_parts: list[str] = []
    ids: list[str] = []
    created_at: list[float] = []
    # The title grows with the count's digits: check against the longest it can get.
    head_units = utf16_len(title(len(entries))) + 2
    plain_units = head_units
    for entry in entries:
        plain = brief(entry.plain) if short else entry.plain
        added = utf16_len(plain) + (2 if plain_parts else 0)
        # `plain` shows everything the HTML shows, plus links: fitting it fits both.
        if plain_units + added > TELEGRAM_LIMIT:
            break
        plain_units += added
        plain_parts.append(plain)
        html_parts.append(brief(entry.text) if short else entry.text)
        ids.append(entry.id)
        created_at.append(entry.created_at)
    if len(ids) < 2:
        return None
    heading = title(len(ids))
    return Digest(
        chat=entries[0].chat,
        html=f"<b>{html.escape(heading, quote=False)}</b>\n\n" + "\n\n".join(html_parts),
        plain=f"{heading}\n\n" + "\n\n".join(plain_parts),
        ids=tuple(ids),
        created_at=tuple(created_at),
    )
