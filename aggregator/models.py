"""Plain values that flow between the stages: items, matches, alerts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

# Fields of an item that a watchlist can search (spec/matching.md §4).
FIELDS: tuple[str, ...] = ("title", "summary", "content", "categories")


@dataclass(frozen=True, slots=True)
class Item:
    """One feed entry after parsing: text fields are clean plain text.

    Paragraphs are separated by "\\n" (a line break ends a sentence for phrase matching);
    ``categories`` holds one category per line. HTML is already stripped, entities decoded,
    boilerplate and repeated paragraphs dropped, so that the matcher and the composer see
    exactly the same text and match offsets stay valid for highlighting.
    """

    feed: str
    title: str
    link: str | None = None
    guid: str | None = None
    summary: str = ""
    content: str = ""
    categories: str = ""
    published: datetime | None = None  # timezone-aware UTC, or None when absent/unparseable

    def fields(self) -> dict[str, str]:
        """The searchable fields by name."""
        return {
            "title": self.title,
            "summary": self.summary,
            "content": self.content,
            "categories": self.categories,
        }


class Hit(NamedTuple):
    """One matched term: where it matched and the words as written in the original text.

    A named tuple rather than a dataclass: the matcher builds tens of them per item, and a tuple
    is built several times faster. Read it by attribute; it is immutable and hashable.
    """

    term: str  # the term as the admin wrote it in the config
    field: str  # one of FIELDS
    start: int  # offset of the first matched character in the field's original text
    end: int  # offset one past the last matched character
    text: str  # the original text between start and end


@dataclass(frozen=True, slots=True)
class WatchlistMatch:
    """A watchlist that fired on an item, with every positive term that matched."""

    watchlist: str
    hits: tuple[Hit, ...] = field(default_factory=tuple)
