"""Human durations and sizes in the config: "45s", "10m", "2h", "1d", or plain seconds/bytes."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

# Longer than anything a setting needs, short enough for every timer and date sum.
MAX_DURATION_S = 3650 * 86400.0

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from "45s" / "10m" / "2h" / "1d" / "1w" / "250ms" or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration such as "45s", "10m" or "2h", got {value!r}')
    if isinstance(value, int | float) and not math.isnan(value):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.lower())):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]
    else:
        raise ValueError(f'expected a duration such as "45s", "10m" or "2h", got {value!r}')
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration must be at most 3650d (10 years), got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from "10MB" / "512KiB" / a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size such as "10MB" or a number of bytes, got {value!r}')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])
    else:
        raise ValueError(f'expected a size such as "10MB" or a number of bytes, got {value!r}')
    if size <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return size


def format_duration(seconds: float) -> str:
    """The shortest exact human form of a duration: 600 → "10m", 90 → "90s"."""
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"
