"""Notices to the bot's admins, queued through the outbox like any alert (durable, paced)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from .compose import compose_notice
from .logs import redact
from .store import OutboxEntry, Store, outbox_id


def admin_entries(
    admins: Sequence[int],
    title: str,
    lines: Sequence[str],
    *,
    key: str,
    now: float,
    skip: str = "",
) -> list[OutboxEntry]:
    """One outbox entry per admin (except chat ``skip``) for the notice ``key`` names: the same
    key gives the same entry ids, so a notice queued again is not sent twice."""
    # Problems and errors never hold the token; redact() makes sure of it.
    notice = compose_notice(title, [redact(line) for line in lines])
    return [
        OutboxEntry(
            id=outbox_id(key, str(admin)),
            chat=str(admin),
            text=notice.html,
            plain=notice.plain,
            watchlist="",
            item_key=key,
            feed="",
            created_at=now,
            disable_preview=True,
        )
        for admin in admins
        if str(admin) != skip
    ]


def queue_admin_notice(
    store: Store, admins: Sequence[int], title: str, lines: Sequence[str], *, skip: str = ""
) -> int:
    """Queue one notice per admin (except chat ``skip``); return how many. Raises StoreError."""
    key = f"admin-notice:{time.time_ns()}"
    entries = admin_entries(admins, title, lines, key=key, now=time.time(), skip=skip)
    if entries:
        store.commit(alerts=entries)
    return len(entries)
