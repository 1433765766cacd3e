"""An RSS feed of items that share no words, for tests that count alerts one by one.

Titles carry ``refNNN`` (find it with ``REF``) and words no two items share, so the cluster
stage never joins two items into one story.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

REF = re.compile(r"\bref(\d{3})\b")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def distinct_feed(name: str, topic: str, count: int) -> bytes:
    """RSS with items 0..count-1 (newest first) about ``topic``, at https://NAME.example/."""

    def item(n: int) -> str:
        words = " ".join(
            _SYLLABLES[(n * 7 + k) % len(_SYLLABLES)] + f"{n}{name[0]}{k}" for k in range(5)
        )
        published = datetime(2024, 5, 10, 6, 0, tzinfo=UTC) + timedelta(minutes=n)
        return (
            f"<item><title>{topic} {words} ref{n:03d}</title>"
            f"<link>https://{name}.example/{n}</link><guid>{name}-{n}</guid>"
            f"<description>{topic} report {words}</description>"
            f"<pubDate>{format_datetime(published)}</pubDate></item>\n"
        )

    items = "".join(item(n) for n in reversed(range(count)))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{name}</title><link>https://{name}.example/</link>"
        f"<description>{name} test</description>\n{items}</channel></rss>\n"
    ).encode()
