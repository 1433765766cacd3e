"""HTTP dates (RFC 9110 section 5.6.7), as Retry-After, Expires and Date headers carry them."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime


def parse_http_date(value: str | None) -> datetime | None:
    """The aware datetime an HTTP date names, or None if it is missing or unusable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # a year of 20 digits
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when if math.isfinite(when.timestamp()) else None
    except (OverflowError, ValueError, OSError):
        return None


def seconds_until(value: str | None, date_header: str | None, now: float) -> float | None:
    """Seconds from the response's time to the HTTP date ``value``: measured against the
    server's own clock (its Date header) when it gives one, since clocks disagree, else
    against ``now`` (epoch seconds). None if ``value`` is no usable date; may be negative."""
    when = parse_http_date(value)
    if when is None:
        return None
    served = parse_http_date(date_header)
    return when.timestamp() - (served.timestamp() if served is not None else now)
