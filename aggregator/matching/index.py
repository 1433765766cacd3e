"""The term index: which terms can start at a token, and where terms occur in one field.

Every first-word form of every term (the Arabic prefix chain of §3.2 is expanded when a term is
compiled) is a key of one dictionary; `*` first words sit in a second one, keyed by the first
letters of their stem. Each distinct raw token is looked up once and the answer cached, so that
scanning a field is one regex pass plus a few C-level passes (``map``, ``compress``) over its
tokens; Python code runs only where a term starts. A phrase's second word is a dictionary key too,
so a common first word ("في", "the") costs nothing unless its phrase's second word follows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress
from operator import itemgetter
from typing import Final

from aggregator.matching.terms import LaterWord, Term, case_allows
from aggregator.matching.tokens import SPLIT_RE, Prepared, prepare, token_info

_CACHE_LIMIT: Final = 500_000
# A phrase's words after its second: (term id, case the second word needs, the words after it).
_Second = tuple[int, int, tuple[LaterWord, ...]]


_NO_SECOND: Final[dict[str, tuple[_Second, ...]]] = {}
_TokenStarts = tuple[
    str,
    tuple[int, ...],
    dict[str, tuple[_Second, ...]],
    tuple[tuple[int, tuple[LaterWord, ...]], ...],
]
_KEY, _SINGLES, _SECONDS, _OTHERS = (itemgetter(n) for n in range(4))


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
    """Where terms occur in one field, and how to turn token positions into text offsets."""

    prepared: Prepared
    parts: list[str]  # SPLIT_RE.split of the prepared text: gap, token, gap, token, ..., gap
    hits: dict[int, list[tuple[int, int]]]  # term id -> [(first token, last token)]
    offsets: list[int] | None = None  # offsets[k]: length of parts[0..k]; made on first use

    def spans(self, found: list[tuple[int, int]], original: str) -> list[tuple[int, int]]:
        """Original offsets of token runs first..last; a hashtag's # is included."""
        parts = self.parts
        offsets = self.offsets
        if offsets is None and len(found) > 6:
            # Many hits: one running total of the part lengths serves them all.
            offsets = self.offsets = list(accumulate(map(len, parts)))
        starts, ends = self.prepared.starts, self.prepared.ends
        spans = []
        for first, last in found:
            # token i is parts[2i + 1]
            if offsets is not None:
                start, end = offsets[2 * first], offsets[2 * last + 1]
            else:  # a few hits: joining the text before each is cheaper than a running total
                start = len("".join(parts[: 2 * first + 1]))
                end = start + len("".join(parts[2 * first + 1 : 2 * last + 2]))
            if starts is not None and ends is not None:
                start, end = starts[start], ends[end - 1]
            if start and original[start - 1] in "#\uff03":
                start -= 1
            spans.append((start, end))
        return spans


def _follow(keys: list[str], raws: list[str], index: int, later: tuple[LaterWord, ...]) -> int:
    """Index of a phrase's last token when ``later`` follows token ``index``, else -1."""
    count = len(keys)
    for key, star, required in later:
        index += 1
        if index >= count:
            return -1
        found = keys[index]
        if not (found.startswith(key) if star else found == key):
            return -1
        if required and not case_allows(required, token_info(raws[index])[1]):
            return -1
    return index


class TermIndex:
    """Every term of a config, indexed by the tokens it can start with."""

    def __init__(self, terms: Sequence[Term]) -> None:
        """Index terms (a term's id is its position in ``terms``)."""
        self._forms: dict[str, list[tuple[int, int, tuple[LaterWord, ...]]]] = {}
        # `*` first words, keyed by the first 3 letters of the stem they need.
        self._stems: dict[str, list[tuple[str, frozenset[str], int, int, tuple[LaterWord, ...]]]]
        self._stems = {}
        for term_id, term in enumerate(terms):
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
        self._tokens = _TokenCache(self._learn)

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
        seconds: dict[str, list[_Second]] = {}
        others: list[tuple[int, tuple[LaterWord, ...]]] = []
        for term_id, later in found:
            if not later:
                singles.append(term_id)
            elif later[0][1]:
                others.append((term_id, later))
            else:
                second_key, _, second_case = later[0]
                seconds.setdefault(second_key, []).append((term_id, second_case, later[1:]))
        if len(self._tokens) >= _CACHE_LIMIT:
            self._tokens.clear()
        learned = self._tokens[raw] = (
            key,
            tuple(singles),
            {k: tuple(v) for k, v in seconds.items()} if seconds else _NO_SECOND,
            tuple(others),
        )
        return learned

    def scan(self, text: str) -> FieldScan:
        """Every occurrence of every term in one field's text."""
        prepared = prepare(text)
        parts = SPLIT_RE.split(prepared.text)
        raws = parts[1::2]
        # Everything per token is done by C loops (map, compress); Python runs only where a
        # term starts, or for a token never seen before (``_TokenCache.__missing__``).
        tokens = list(map(self._tokens.__getitem__, raws))
        hits: dict[int, list[tuple[int, int]]] = {}
        for index in compress(range(len(raws)), map(_SINGLES, tokens)):
            for term_id in tokens[index][1]:
                hits.setdefault(term_id, []).append((index, index))
        if self._phrases:
            # The phrases that start at each token and whose second word is the next token.
            following: list[tuple[_Second, ...] | None]
            following = list(map(dict.get, map(_SECONDS, tokens), map(_KEY, tokens[1:])))
            keys: list[str] = []
            for index in compress(range(len(following)), following):
                for term_id, required, later in following[index] or ():
                    if required and not case_allows(required, token_info(raws[index + 1])[1]):
                        continue
                    last = index + 1
                    if later:
                        keys = keys or list(map(_KEY, tokens))
                        last = _follow(keys, raws, last, later)
                    if last >= 0:
                        hits.setdefault(term_id, []).append((index, last))
            if self._star_phrases:
                keys = keys or list(map(_KEY, tokens))
                for index in compress(range(len(tokens)), map(_OTHERS, tokens)):
                    for term_id, later in tokens[index][3]:
                        last = _follow(keys, raws, index, later)
                        if last >= 0:
                            hits.setdefault(term_id, []).append((index, last))
        for term_id, found in hits.items():
            if len(found) > 1:  # phrase hits were added after one-word hits; variants may repeat
                hits[term_id] = sorted(set(found))
        return FieldScan(prepared, parts, hits)
