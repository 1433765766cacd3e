# The C extension's functions (_kernel.c), typed as their Python versions in index.py.
from collections.abc import Mapping, Sequence, Set

from aggregator.matching.index import Found, _Found, _TokenStarts
from aggregator.matching.tokens import ChunkToken
from aggregator.models import Hit, WatchlistMatch

def find(tokens: list[_TokenStarts], phrases: bool, checked: bool, /) -> _Found: ...
def hits(
    single_at: list[int],
    single_ids: list[tuple[int, ...]],
    pair_at: list[int],
    pair_ids: list[tuple[int, ...]],
    longer: list[Found],
    term_ids: Set[int],
    chunks: list[str],
    chunk_tokens: list[tuple[_TokenStarts, ...]],
    spans_by_chunk: Mapping[str, tuple[ChunkToken, ...]],
    step: int,
    original: str,
    mapped_starts: list[int] | None,
    mapped_ends: list[int] | None,
    name: str,
    term_texts: Sequence[str],
    hit_type: type[Hit],
    whole_type: type[tuple[_TokenStarts, ...]],
    /,
) -> tuple[list[Hit], list[int]]: ...
def group(
    hits: list[Hit],
    owners: list[int],
    any_of: list[int],
    fired: Set[int],
    several: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    names: list[str],
    match_type: type[WatchlistMatch],
    /,
) -> dict[int, WatchlistMatch]: ...
def add_ids(
    into: set[int],
    every: list[int],
    single_ids: list[tuple[int, ...]],
    pair_ids: list[tuple[int, ...]],
    longer: list[Found],
    /,
) -> None: ...
def triage(
    found: list[int],
    any_of: list[int],
    none_of: list[int],
    other_of: list[int],
    several: dict[int, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]],
    always: tuple[int, ...],
    count: int,
    /,
) -> tuple[set[int], set[int], set[int]]: ...
