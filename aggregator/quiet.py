"""Quiet hours: a daily stretch of local time in which a watchlist's alerts are held.

Held alerts stay in the outbox; when the stretch ends they go out packed into a digest. Whether
an alert is held, and whether it was queued during quiet hours, follows from the clock and its
queue time alone, so a restart changes neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class QuietHours:
    """From ``start`` to ``end`` local time every day; a span over midnight wraps."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def is_quiet(self, at: float, zone: tzinfo) -> bool:
        """True if epoch time ``at`` falls in the quiet stretch, in time zone ``zone``."""
        local = datetime.fromtimestamp(at, zone).time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, at: float, zone: tzinfo) -> float:
        """The epoch time at which the quiet stretch holding ``at`` ends (``at`` if none)."""
        if not self.is_quiet(at, zone):
            return at
        local = datetime.fromtimestamp(at, zone)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end.timestamp()


def parse_quiet_hours(value: object) -> QuietHours | None:
    """ "22:00-07:00" (local time, in telegram.timezone); "" means none."""
    if value is None or value == "":
        return None
    found = _SPAN.match(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f'expected "HH:MM-HH:MM" such as "22:00-07:00", got {value!r}')
    h1, m1, h2, m2 = (int(part) for part in found.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"hours run 00-23 and minutes 00-59, got {value!r}")
    if (h1, m1) == (h2, m2):
        raise ValueError(f"start and end are the same time, got {value!r}")
    return QuietHours(time(h1, m1), time(h2, m2))
