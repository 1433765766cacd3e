"""Notices to the bot's admins, queued through the outbox like any alert (durable, paced)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

from .compose import compose_notice
from .logs import redact
from .store import OutboxEntry, Store


def queue_admin_notice(
    store: Store, admins: Sequence[int], title: str, lines: Sequence[str], *, skip: str = ""
) -> int:
    """Queue one notice per admin (except chat ``skip``); return how many. Raises StoreError."""
    notice = compose_notice(title, [redact(line) for line in lines])
    now = time.time()
    key = f"admin-notice:{time.time_ns()}"
    entries = [
        OutboxEntry(
            id=hashlib.sha256(f"{key}\x00{admin}".encode()).hexdigest()[:24],
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
    if entries:
        store.commit(alerts=entries)
    return len(entries)
