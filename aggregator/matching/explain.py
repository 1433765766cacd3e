"""Why a watchlist did or did not fire on a text, for `aggregator match` and for highlighting."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aggregator.models import Hit


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict of one watchlist on one item, with the evidence."""

    watchlist: str
    matched: bool
    hits: tuple[Hit, ...] = ()  # positive terms found (in the watchlist's fields)
    vetoed_by: tuple[Hit, ...] = ()  # `none` terms (or negated query operands) that vetoed it
    missing: tuple[str, ...] = ()  # `all` terms and positive query operands not found, as written
    reason: str = ""  # one line: why it did not fire ("" when it fired)
    skipped: str | None = None  # set when the watchlist does not apply to this feed


def highlight_spans(hits: Iterable[Hit], field: str) -> list[tuple[int, int]]:
    """The (start, end) offsets to highlight in ``field``: sorted, overlapping spans merged."""
    spans = sorted((hit.start, hit.end) for hit in hits if hit.field == field)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _hit_line(hit: Hit) -> str:
    return f"{hit.term!r} in {hit.field} [{hit.start}:{hit.end}], written {hit.text!r}"


def format_explanations(text_label: str, explanations: Sequence[Explanation]) -> str:
    """A report for `aggregator match`: which watchlists fired, on which words, and why not."""
    lines = [f"Text: {text_label}"]
    counts = {"matched": 0, "vetoed": 0, "not matched": 0, "skipped": 0}
    for explanation in explanations:
        name = explanation.watchlist
        if explanation.skipped is not None:
            counts["skipped"] += 1
            lines.append(f"{name}: skipped ({explanation.skipped})")
            continue
        if explanation.matched:
            counts["matched"] += 1
            lines.append(f"{name}: MATCHED")
            lines.extend(f"  matched {_hit_line(hit)}" for hit in explanation.hits)
            continue
        if explanation.vetoed_by:
            counts["vetoed"] += 1
            lines.append(f"{name}: not matched, vetoed by a `none` term")
            lines.extend(f"  vetoed by {_hit_line(hit)}" for hit in explanation.vetoed_by)
        else:
            counts["not matched"] += 1
            lines.append(f"{name}: not matched ({explanation.reason})")
        lines.extend(f"  found {_hit_line(hit)}" for hit in explanation.hits)
        if explanation.missing:
            lines.append(f"  missing: {', '.join(repr(term) for term in explanation.missing)}")
    total = len(explanations)
    summary = ", ".join(f"{count} {label}" for label, count in counts.items())
    lines.append(f"{total} watchlist{'s' if total != 1 else ''}: {summary}")
    return "\n".join(lines)
