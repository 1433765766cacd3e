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
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return when if math.isfinite(when.timestamp()) else None
    except (OverflowError, ValueError, OSError):
        return None
