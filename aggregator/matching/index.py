"""The term index: which terms can start at a token, and where terms occur in one field.

Every first-word form of every term (the Arabic prefix chain of §3.2 is expanded when a term is
compiled) is a key of one dictionary; `*` first words sit in a second one, keyed by the first
letters of their stem. Each distinct space-separated chunk of text is looked up once and the
answer cached, so that scanning a field is one dictionary lookup per word, then one loop over the
tokens that finds where terms start (``_find``). A phrase's second word is a dictionary key too,
so a common first word ("في", "the") costs nothing unless its phrase's second word follows.

The two loops per field, ``_find`` and ``_hits``, run in C where the extension was built
(_kernel.c, native.py); ``_find_python`` and ``_hits_python`` are the same loops in Python, the
reference that tests/test_matching_kernel.py holds the C to, and the fallback.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import accumulate, chain, compress
from operator import and_, attrgetter, itemgetter
from typing import Final

from aggregator.matching.native import KERNEL
from aggregator.matching.terms import LaterWord, Term, case_allows
from aggregator.matching.tokens import (
    CHUNK_SEPARATOR,
    CHUNK_TOKENS,
    OTHER,
    ChunkToken,
    Prepared,
    prepare,
    token_info,
)
from aggregator.models import Hit

_CACHE_LIMIT: Final = 500_000
# A phrase's words after its second: (term id, case the second word needs, the words after it).
_Second = tuple[int, int, tuple[LaterWord, ...]]


# What a token starts as a phrase's first word, by the key of the phrase's second word: the
# two-word phrases that need nothing more (their term ids), and the rest (a case rule on the
# second word, or more words after it), which are checked one by one.
_Pairs = dict[str, tuple[int, ...]]
_Checked = dict[str, tuple[_Second, ...]]
_NO_PAIRS: Final[_Pairs] = {}
_NO_CHECKED: Final[_Checked] = {}
_TokenStarts = tuple[
    str,  # key
    tuple[int, ...],  # one-word terms
    _Pairs,
    tuple[tuple[int, tuple[LaterWord, ...]], ...],  # phrases whose second word has `*`
    int,  # bits of the second words of its phrases (_second_bit)
    int,  # its own bit, if it is the second word of a phrase
    _Checked,
    int,  # its case class (tokens.OTHER, UPPER, TITLE), for phrases' case rules
    bool,  # whether a term can start at it (one-word terms, or phrases' first words)
]
_KEY, _SINGLES, _PAIRS, _OTHERS, _NEEDS, _IS, _CHECKED, _CASE, _STARTS = (
    itemgetter(n) for n in range(9)
)
# The entry of a token that is no word of any term. Its key "" (that of a sentence end) equals
# no term word and starts with none, which is all that a key is used for; no case rule ever
# asks about it.
_NOTHING: Final[_TokenStarts] = ("", (), _NO_PAIRS, (), 0, 0, _NO_CHECKED, OTHER, False)
# A phrase's second word is looked up only where the token before can start a phrase whose
# second word has the same bit as the token: ``needs & is`` in C over the whole text, with data
# that is in the tokens' own entries, instead of a dictionary lookup (a cache miss) per token.
_SECOND_BITS: Final = 30  # one digit of a Python int: the & stays cheap


def _second_bit(key: str) -> int:
    return _shared(1 << (hash(key) % _SECOND_BITS))


_SHARED_INTS: dict[int, int] = {}


def _shared(number: int) -> int:
    """One int object per value: the scan reads the bit sets of thousands of tokens' entries,
    and a few hundred shared objects stay in the CPU's cache where one per entry would not."""
    return _SHARED_INTS.setdefault(number, number)


_TERM_ID = itemgetter(2)
_NEXT = (1).__add__
_HIT_ORDER = attrgetter("start", "end", "term")
# A term found in a field: (first token, last token, term id).
Found = tuple[int, int, int]


class _ChunkCache(dict[str, tuple[_TokenStarts, ...]]):
    """What the tokens of each distinct space-separated chunk start (see tokens.CHUNK_TOKENS):
    one lookup per word of a text, where a token cache alone would need a regex pass too."""

    def __init__(self, tokens: _TokenCache) -> None:
        super().__init__()
        self._tokens = tokens

    def __missing__(self, chunk: str) -> tuple[_TokenStarts, ...]:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        tokens = self._tokens
        spans = CHUNK_TOKENS[chunk]
        found = tuple(tokens[raw] for raw, _, _ in spans)
        if len(spans) == 1 and spans[0][1] == 0 and spans[0][2] == len(chunk):
            found = WholeChunk(found)
        self[chunk] = found
        return found


class WholeChunk(tuple[_TokenStarts, ...]):
    """The entry of a chunk that is one token from its first character to its last, as most
    words of a text are: the token's span is the chunk's, which _kernel.hits then knows
    without looking the chunk's spans up (a hash lookup and three objects read, per hit, in
    tables too large for the CPU's cache). A tuple in every other respect."""

    __slots__ = ()


class _TokenCache(dict[str, _TokenStarts]):
    """What each distinct raw token starts, worked out on first lookup.

    Per token: its key, the one-word terms it matches, the phrases it starts by their second
    word's key, and the phrases it starts whose second word has `*`. Filling it in
    ``__missing__`` keeps the hot path a single C-level ``map`` over the tokens.
    """

    def __init__(self, learn: Callable[[str], _TokenStarts]) -> None:
        super().__init__()
        self._learn = learn

    def __missing__(self, raw: str) -> _TokenStarts:
        return self._learn(raw)


@dataclass(slots=True)
class FieldScan:
    """Where terms occur in one field, and how to turn token positions into text offsets.

    Occurrences are kept as the scan found them, in bulk (no tuple per occurrence): most are
    of terms whose watchlists do not fire, and only those of the ones that do are looked at.
    """

    prepared: Prepared
    chunks: list[str]  # the prepared text split at spaces ...
    chunk_tokens: list[tuple[_TokenStarts, ...]]  # ... and the entries of each one's tokens
    single_at: list[int]  # tokens that are one-word terms ...
    single_ids: list[tuple[int, ...]]  # ... and the ids of those terms
    pair_at: list[int]  # tokens that start a two-word phrase with the next token ...
    pair_ids: list[tuple[int, ...]]  # ... and the ids of those phrases
    longer: list[Found]  # the other phrases (3+ words, `*` or case rules on later words)

    def add_term_ids(self, into: set[int], every: list[int]) -> None:
        """Add the id of every term found here to ``into``, and to ``every`` once per
        occurrence."""
        _add_ids(into, every, self.single_ids, self.pair_ids, self.longer)

    def hits(
        self, term_ids: Set[int], name: str, original: str, term_texts: Sequence[str]
    ) -> tuple[list[Hit], list[int]]:
        """The Hits of these terms here, by offsets then term text, and the term id of each.

        ``original`` is the field's text as given: offsets index it, and a hashtag's # is
        part of the hit. Term ids must be numbered in the order of the terms' texts.
        """
        prepared = self.prepared
        made, owners = _hits(
            self.single_at,
            self.single_ids,
            self.pair_at,
            self.pair_ids,
            self.longer,
            term_ids,
            self.chunks,
            self.chunk_tokens,
            CHUNK_TOKENS,
            len(CHUNK_SEPARATOR),
            original,
            prepared.starts,
            prepared.ends,
            name,
            term_texts,
            Hit,
            WholeChunk,
        )
        if prepared.starts is not None:
            # NFKC can turn one character into several tokens, and then token order is not
            # quite offset order.
            order = sorted(range(len(made)), key=lambda i: _HIT_ORDER(made[i]))
            made = [made[i] for i in order]
            owners = [owners[i] for i in order]
        return made, owners


def _add_ids_python(
    into: set[int],
    every: list[int],
    single_ids: list[tuple[int, ...]],
    pair_ids: list[tuple[int, ...]],
    longer: list[Found],
) -> None:
    """Add the term ids of a field's scan to a set, and to a list once per occurrence (the
    reference implementation of _kernel.add_ids)."""
    found = list(chain(chain.from_iterable(single_ids), chain.from_iterable(pair_ids)))
    found += map(_TERM_ID, longer)
    into.update(found)
    every += found


def _hits_python(
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
) -> tuple[list[Hit], list[int]]:
    """The Hits of some terms in a field scanned into these lists, in token order (the
    reference implementation of _kernel.hits, which takes the span of a token alone in a
    chunk of ``whole_type`` to be the chunk's; here every span is looked up)."""
    selected = [
        (index, index, term_id)
        for index, ids in zip(single_at, single_ids, strict=True)
        for term_id in ids
        if term_id in term_ids
    ]
    selected += [
        (index, index + 1, term_id)
        for index, ids in zip(pair_at, pair_ids, strict=True)
        for term_id in ids
        if term_id in term_ids
    ]
    selected += [entry for entry in longer if entry[2] in term_ids]
    selected.sort()
    made: list[Hit] = []
    append = made.append
    new_tuple = tuple.__new__  # Hit(...) without the call of its Python-level __new__
    hashtags = "#" in original or "\uff03" in original
    # Offsets are worked out only here, for the tokens that hits need: the scan itself
    # never measures where a token is.
    # Token i is token i - first_token[c] of chunk c, the last chunk whose first token is
    # at most i; chunk c starts after the chunks before it and one separator each.
    first_token = list(accumulate(map(len, chunk_tokens), initial=0))
    first_char = list(accumulate(map(len, chunks), initial=0))
    for first, last, term_id in selected:
        chunk = bisect_right(first_token, first) - 1
        start = (
            first_char[chunk]
            + chunk * step
            + spans_by_chunk[chunks[chunk]][first - first_token[chunk]][1]
        )
        if last != first:
            chunk = bisect_right(first_token, last) - 1
        end = (
            first_char[chunk]
            + chunk * step
            + spans_by_chunk[chunks[chunk]][last - first_token[chunk]][2]
        )
        if mapped_starts is not None and mapped_ends is not None:
            start, end = mapped_starts[start], mapped_ends[end - 1]
        if hashtags and start and original[start - 1] in "#\uff03":
            start -= 1
        # The words as written: the original's characters, at original offsets.
        append(new_tuple(hit_type, (term_texts[term_id], name, start, end, original[start:end])))
    return made, list(map(_TERM_ID, selected))


def _follow(
    keys: list[str], tokens: list[_TokenStarts], index: int, later: tuple[LaterWord, ...]
) -> int:
    """Index of a phrase's last token when ``later`` follows token ``index``, else -1."""
    count = len(keys)
    for key, star, required in later:
        index += 1
        if index >= count:
            return -1
        found = keys[index]
        if not (found.startswith(key) if star else found == key):
            return -1
        # A later word's token has an entry of its own (never _NOTHING), so its case is there.
        if required and not case_allows(required, _CASE(tokens[index])):
            return -1
    return index


_Found = tuple[
    list[int],  # tokens that are one-word terms ...
    list[tuple[int, ...]],  # ... and the ids of those terms
    list[int],  # tokens that start a two-word phrase with the next token ...
    list[tuple[int, ...]],  # ... and the ids of those phrases
    list[int],  # tokens whose next token is the second word of a phrase to check ...
    list[tuple[_Second, ...]],  # ... and those phrases
    list[int],  # tokens that start a phrase whose second word has `*`
]


def _find_python(tokens: list[_TokenStarts], phrases: bool, checked: bool) -> _Found:
    """Where terms start among a field's tokens (the reference implementation of
    _kernel.find).

    Everything per token is done by C loops (map, compress); Python runs only where a term
    starts. Most tokens play no part in any term (or are only a phrase's later word): one pass
    picks out those where a term can start, and the rest of the work is on those alone.
    """
    at = list(compress(range(len(tokens)), map(_STARTS, tokens)))
    found_at = list(map(tokens.__getitem__, at))
    singles = list(map(_SINGLES, found_at))
    single_at = list(compress(at, singles))
    single_ids = list(filter(None, singles))
    if not phrases:
        return single_at, single_ids, [], [], [], [], []
    # The phrases that start at a token and whose second word is the next token: looked up
    # only where the bits say that they may.
    needs = list(map(_NEEDS, found_at))
    starts_at = list(compress(at, needs))
    tokens.append(_NOTHING)  # so that the last token has a next one
    following = list(map(tokens.__getitem__, map(_NEXT, starts_at)))
    tokens.pop()
    maybe = list(map(and_, compress(needs, needs), map(_IS, following)))
    maybe_at = list(compress(starts_at, maybe))
    firsts = list(map(tokens.__getitem__, maybe_at))
    second_keys = list(map(_KEY, compress(following, maybe)))
    looked_up = list(map(dict.get, map(_PAIRS, firsts), second_keys))
    checked_at: list[int] = []
    checked_entries: list[tuple[_Second, ...]] = []
    if checked:
        to_check = list(map(dict.get, map(_CHECKED, firsts), second_keys))
        checked_at = list(compress(maybe_at, to_check))
        checked_entries = list(filter(None, to_check))
    return (
        single_at,
        single_ids,
        list(compress(maybe_at, looked_up)),
        list(filter(None, looked_up)),
        checked_at,
        checked_entries,
        list(compress(at, map(_OTHERS, found_at))),
    )


# The C versions of the two loops, if they were built (native.py).
_find: Callable[[list[_TokenStarts], bool, bool], _Found] = _find_python
_hits = _hits_python
_add_ids = _add_ids_python
if KERNEL is not None:
    _find = KERNEL.find
    _hits = KERNEL.hits
    _add_ids = KERNEL.add_ids


class TermIndex:
    """Every term of a config, indexed by the tokens it can start with."""

    def __init__(self, terms: Sequence[Term], ids: Sequence[int] | None = None) -> None:
        """Index terms (a term's id is its position in ``terms``; ``ids`` may give the int
        objects to use, ``list(range(len(terms)))``)."""
        self._forms: dict[str, list[tuple[int, int, tuple[LaterWord, ...]]]] = {}
        # `*` first words, keyed by the first 3 letters of the stem they need.
        self._stems: dict[str, list[tuple[str, frozenset[str], int, int, tuple[LaterWord, ...]]]]
        self._stems = {}
        if ids is None:
            ids = list(range(len(terms)))
        for term_id, term in zip(ids, terms, strict=True):
            for variant in term.variants:
                for form in variant.forms:
                    self._forms.setdefault(form, []).append(
                        (term_id, variant.first_case, variant.later)
                    )
                for stem, prefixes in variant.stems:
                    entry = (stem, prefixes, term_id, variant.first_case, variant.later)
                    self._stems.setdefault(stem[:3], []).append(entry)
        self._stem_prefixes = tuple(
            sorted({p for entries in self._stems.values() for entry in entries for p in entry[1]})
        )
        self._stem_lengths = tuple(sorted({len(key) for key in self._stems}))
        variants = [v for term in terms for v in term.variants]
        self._phrases = any(v.later for v in variants)
        self._star_phrases = any(v.later and v.later[0][1] for v in variants)
        self._checked_phrases = any(
            v.later and not v.later[0][1] and (v.later[0][2] or len(v.later) > 1) for v in variants
        )
        self._second_keys = frozenset(
            v.later[0][0] for v in variants if v.later and not v.later[0][1]
        )
        # Words after a phrase's first, which ``_follow`` compares with tokens' keys; `*` ones
        # (a prefix of the token) by their first 3 letters.
        self._later_keys = frozenset(key for v in variants for key, star, _ in v.later if not star)
        self._later_stems: dict[str, list[str]] = {}
        for v in variants:
            for key, star, _ in v.later:
                if star:
                    self._later_stems.setdefault(key[:3], []).append(key)
        self._tokens = _TokenCache(self._learn)
        self._chunks = _ChunkCache(self._tokens)

    def _learn(self, raw: str) -> _TokenStarts:
        """Work out what this raw token can start and cache it (once per distinct token)."""
        key, case, _ = token_info(raw)
        found: dict[tuple[int, tuple[LaterWord, ...]], None] = {}
        for term_id, first_case, later in self._forms.get(key, ()):
            if case_allows(first_case, case):
                found[(term_id, later)] = None
        for prefix in self._stem_prefixes:
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            for length in self._stem_lengths:
                for stem, allowed, term_id, first_case, later in self._stems.get(rest[:length], ()):
                    if (
                        prefix in allowed
                        and rest.startswith(stem)
                        and case_allows(first_case, case)
                    ):
                        found[(term_id, later)] = None
        singles: list[int] = []
        plain: dict[str, list[int]] = {}
        checked: dict[str, list[_Second]] = {}
        others: list[tuple[int, tuple[LaterWord, ...]]] = []
        for term_id, later in found:
            if not later:
                singles.append(term_id)
            elif later[0][1]:
                others.append((term_id, later))
            else:
                second_key, _, second_case = later[0]
                if second_case or later[1:]:
                    entry = (term_id, second_case, later[1:])
                    checked.setdefault(second_key, []).append(entry)
                else:
                    plain.setdefault(second_key, []).append(term_id)
        if len(self._tokens) >= _CACHE_LIMIT:
            self._tokens.clear()
        if not (found or key in self._later_keys or self._later_stem(key)):
            # Most tokens of a text play no part in any term: they share one entry, which
            # keeps the entries that a scan reads few and in the CPU's cache.
            self._tokens[raw] = _NOTHING
            return _NOTHING
        needs = 0
        for second_key in plain.keys() | checked.keys():
            needs |= _second_bit(second_key)
        learned = self._tokens[raw] = (
            key,
            tuple(singles),
            {k: tuple(v) for k, v in plain.items()} if plain else _NO_PAIRS,
            tuple(others),
            _shared(needs),
            _second_bit(key) if key in self._second_keys else 0,
            {k: tuple(v) for k, v in checked.items()} if checked else _NO_CHECKED,
            case,
            bool(singles or needs or others),
        )
        return learned

    def _later_stem(self, key: str) -> bool:
        return any(key.startswith(stem) for stem in self._later_stems.get(key[:3], ()))

    def scan(self, text: str) -> FieldScan:
        """Every occurrence of every term in one field's text."""
        prepared = prepare(text)
        chunks = prepared.text.split(CHUNK_SEPARATOR)
        per_chunk = list(map(self._chunks.__getitem__, chunks))
        # Everything per token is done by C loops (map, compress); Python runs only where a
        # term starts, or for a chunk never seen before (``_ChunkCache.__missing__``). Most
        # tokens play no part in any term (or are only a phrase's later word): one pass picks
        # out those where a term can start, and the rest of the work is on those alone.
        tokens = list(chain.from_iterable(per_chunk))
        single_at, single_ids, pair_at, pair_ids, checked_at, checked_entries, star_at = _find(
            tokens, self._phrases, self._checked_phrases
        )
        # The rest, phrases with a case rule on a later word, 3+ words or `*` later words, is
        # rare: checked here one by one.
        longer: list[Found] = []
        keys: list[str] = []
        for index, entries in zip(checked_at, checked_entries, strict=True):
            for term_id, required, later in entries:
                if required and not case_allows(required, _CASE(tokens[index + 1])):
                    continue
                last = index + 1
                if later:
                    keys = keys or list(map(_KEY, tokens))
                    last = _follow(keys, tokens, last, later)
                if last >= 0:
                    longer.append((index, last, term_id))
        for index in star_at:
            keys = keys or list(map(_KEY, tokens))
            for term_id, later in tokens[index][3]:
                last = _follow(keys, tokens, index, later)
                if last >= 0:
                    longer.append((index, last, term_id))
        if len(longer) > 1:
            # Two variants of a term (names joined or apart) may find the same words.
            longer = list(dict.fromkeys(longer))
        return FieldScan(
            prepared,
            chunks,
            per_chunk,
            single_at,
            single_ids,
            pair_at,
            pair_ids,
            longer,
        )
