"""The project's exception tree.

    AggregatorError              root: everything the program raises on purpose
    ├── ConfigError              the config file cannot be used; ``problems`` lists every one
    ├── StoreError               the state file cannot be opened, read or written
    │   └── StoreLockedError     another process holds the store's lock
    ├── FetchError               a feed could not be fetched (network, HTTP status, limits)
    │   └── BodyTooLargeError    a feed's body went over the configured cap
    └── DeliveryError            Telegram refused or failed a send after retries

Library exceptions (httpx, feedparser, telegram) are mapped to these at the adapters, so the
stages above them never see a third-party exception type.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of every error the program raises on purpose."""


class ConfigError(AggregatorError):
    """Raised when a config cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__("invalid config:\n" + "\n".join(f"  {line}" for line in lines))


class StoreError(AggregatorError):
    """Raised when the state file cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Raised when another process already holds the store's exclusive lock."""


class FetchError(AggregatorError):
    """Raised when a feed cannot be fetched: network failure, bad status, or a limit hit."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class BodyTooLargeError(FetchError):
    """Raised when a response body (after decompression) goes over the configured cap."""


class DeliveryError(AggregatorError):
    """Raised when Telegram refuses or fails a send and retrying will not help."""
