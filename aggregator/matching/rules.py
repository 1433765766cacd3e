"""What an admin writes for one watchlist (spec/matching.md §4), as a plain frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from aggregator.models import FIELDS


@dataclass(frozen=True)
class WatchlistRules:
    """The matching part of one ``[[watchlists]]`` table.

    Fires when (``any`` is empty or one of its terms matches), every ``all`` term matches, no
    ``none`` term matches, and ``query`` (when given) holds.
    """

    name: str
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    query: str | None = None
    fields: tuple[str, ...] = FIELDS  # subset of models.FIELDS
    feeds: tuple[str, ...] = ()  # empty = every feed; entries are feed names or "tag:NAME"
