"""The compiled matcher: every watchlist of a config, evaluated against one item at a time.

Built once per config load. ``index.TermIndex`` finds every term in each field at a cost that
does not grow with the number of terms; then only the watchlists that use a term that was found
are evaluated (plus those whose query can hold without any term, e.g. ``a OR NOT b``), and hits
(offsets into the original text) are built only for the terms of the watchlists that fire, once
per term however many watchlists share it.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence, Set
from dataclasses import dataclass, field
from itertools import compress
from typing import Final

from aggregator.errors import ConfigError
from aggregator.matching.explain import Explanation
from aggregator.matching.index import FieldScan, TermIndex
from aggregator.matching.lint import check_rules
from aggregator.matching.native import KERNEL
from aggregator.matching.query import (
    Node,
    Predicate,
    Witnesses,
    compile_query,
    compile_witnesses,
    evaluate,
    leaves,
    parse_query,
    unmet,
)
from aggregator.matching.rules import WatchlistRules
from aggregator.matching.terms import Term, compile_term
from aggregator.models import FIELDS, Hit, WatchlistMatch

_FIELD_ORDER: Final = {name: index for index, name in enumerate(FIELDS)}


@dataclass(frozen=True, slots=True)
class _Watchlist:
    name: str
    any_ids: frozenset[int]
    all_ids: frozenset[int]
    none_ids: frozenset[int]
    all_order: tuple[int, ...]  # `all` terms in config order, for explanations
    query: Node | None
    query_holds: Predicate | None
    query_witnesses: Witnesses | None
    fields: tuple[str, ...]  # in FIELDS order
    feed_names: frozenset[str]
    feed_tags: frozenset[str]
    positive_ids: frozenset[int]
    # Only `any` (and `none`) terms, every field, every feed: most watchlists, evaluated inline.
    simple: bool

    def applies(self, feed: str | None, feed_tags: Collection[str]) -> bool:
        if feed is None or not (self.feed_names or self.feed_tags):
            return True
        return feed in self.feed_names or any(tag in self.feed_tags for tag in feed_tags)

    def fires(self, present: set[int] | frozenset[int]) -> bool:
        return (
            (not self.any_ids or not self.any_ids.isdisjoint(present))
            and self.all_ids <= present
            and self.none_ids.isdisjoint(present)
            and (self.query_holds is None or self.query_holds(present))
        )


@dataclass(slots=True)
class _Hits:
    """Every hit of some terms in one item, in output order, with the term id of each."""

    hits: list[Hit] = field(default_factory=list)  # by field, then offsets, then term text
    owners: list[int] = field(default_factory=list)

    def of(self, term_ids: Container[int], fields: tuple[str, ...]) -> tuple[Hit, ...]:
        """The hits of these terms in these fields, in output order."""
        hits = compress(self.hits, map(term_ids.__contains__, self.owners))
        if len(fields) < len(FIELDS):
            return tuple(hit for hit in hits if hit.field in fields)
        return tuple(hits)


@dataclass(slots=True)
class _Scan:
    """One item's fields as scanned."""

    texts: Mapping[str, str]
    fields: dict[str, FieldScan] = field(default_factory=dict)  # in FIELDS order
    present_cache: dict[tuple[str, ...], set[int]] = field(default_factory=dict)

    def present(self, fields: tuple[str, ...]) -> set[int]:
        """Ids of the terms found in any of these fields."""
        found = self.present_cache.get(fields)
        if found is None:
            found = self.present_cache[fields] = set()
            every: list[int] = []
            for name in fields:
                if name in self.fields:
                    self.fields[name].add_term_ids(found, every)
        return found

    def found(self) -> list[int]:
        """Ids of the terms found in any field, once per occurrence (and, as a set, what
        ``present(FIELDS)`` returns)."""
        present: set[int] = set()
        every: list[int] = []
        for field_scan in self.fields.values():
            field_scan.add_term_ids(present, every)
        self.present_cache[FIELDS] = present
        return every

    def hits(self, term_ids: Set[int], term_texts: Sequence[str]) -> _Hits:
        """Every Hit of these terms (each field is walked once for all of them)."""
        made = _Hits()
        for name, field_scan in self.fields.items():
            hits, owners = field_scan.hits(term_ids, name, self.texts[name], term_texts)
            made.hits += hits
            made.owners += owners
        return made


_Roles = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _group_python(
    hits: list[Hit],
    owners: list[int],
    any_of: list[int],
    fired: Set[int],
    several: dict[int, _Roles],
    names: list[str],
    match_type: type[WatchlistMatch],
) -> dict[int, WatchlistMatch]:
    """The match of each simple watchlist that fired, with the hits of its `any` terms, in
    order (owners[n] is the term id of hits[n]; the reference implementation of
    _kernel.group)."""
    lists: dict[int, list[Hit]] = {index: [] for index in fired}
    for hit, term_id in zip(hits, owners, strict=True):
        index = any_of[term_id]
        if index in lists:
            lists[index].append(hit)
        elif term_id in several:
            for index in several[term_id][0]:
                if index in lists:
                    lists[index].append(hit)
    return {index: match_type(names[index], tuple(found)) for index, found in lists.items()}


def _triage_python(
    found: list[int],
    any_of: list[int],
    none_of: list[int],
    other_of: list[int],
    several: dict[int, _Roles],
    always: tuple[int, ...],
    count: int,
) -> tuple[set[int], set[int], set[int]]:
    """From the terms found (each once or more): the simple watchlists that fire (one of
    their `any` terms found and none of their `none` terms), the other watchlists to evaluate,
    and the terms to make hits of for the simple ones (the reference implementation of
    _kernel.triage).

    ``any_of``, ``none_of`` and ``other_of`` give each term's one watchlist in that role (-1:
    none, or several, which ``several`` lists); ``always`` are the watchlists that can fire with
    no term found; ``count`` is the number of watchlists.
    """
    present = set(found)
    fired = set(map(any_of.__getitem__, present))
    vetoed = set(map(none_of.__getitem__, present))
    others = set(map(other_of.__getitem__, present))
    others.update(always)
    shared = several.keys() & present
    for term_id in shared:
        in_any, in_none, in_other = several[term_id]
        fired.update(in_any)
        vetoed.update(in_none)
        others.update(in_other)
    fired -= vetoed
    fired.discard(-1)
    others.discard(-1)
    wanted = set(compress(present, map(fired.__contains__, map(any_of.__getitem__, present))))
    wanted.update(t for t in shared if not fired.isdisjoint(several[t][0]))
    return fired, others, wanted


# The C versions, if they were built (native.py).
_group, _triage = _group_python, _triage_python
if KERNEL is not None:
    _group, _triage = KERNEL.group, KERNEL.triage


class Matcher:
    """Every watchlist of a config, compiled for matching items (spec/matching.md).

    Build one per config load. ``match`` only ever adds to (or drops) caches of tokens seen, so a
    Matcher may be shared, also between threads (at worst a new token is worked out twice).
    """

    def __init__(self, watchlists: Sequence[WatchlistRules]) -> None:
        """Compile once per config load; raises ConfigError listing every problem by path."""
        problems: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for index, rules in enumerate(watchlists):
            base = f"watchlists[{index}]"
            errors, _ = check_rules(rules)
            problems.extend((f"{base}.{path}" if path else base, msg) for path, msg in errors)
            if rules.name in seen:
                other = f"watchlists[{seen[rules.name]}]"
                problems.append((f"{base}.name", f"duplicate name {rules.name!r} (see {other})"))
            seen.setdefault(rules.name, index)
        if problems:
            raise ConfigError(problems)
        queries = [parse_query(r.query) if r.query is not None else None for r in watchlists]
        texts = {text for rules in watchlists for text in (*rules.any, *rules.all, *rules.none)}
        texts.update(leaf.term for query in queries if query for leaf, _ in leaves(query))
        # Term ids in the order of the terms' texts: hits at the same place sort by id then.
        self._texts = sorted(texts)
        # The int objects of the ids, made one after the other and shared by every structure
        # below: they sit together in memory, and matching an item reads dozens of them.
        ids = list(range(len(self._texts)))
        self._term_ids = dict(zip(self._texts, ids, strict=True))
        self._terms: list[Term] = list(map(compile_term, self._texts))
        self._watchlists = list(map(self._compile, watchlists, queries))
        self._names = [watchlist.name for watchlist in self._watchlists]
        self._index = TermIndex(self._terms, ids)
        # Term id -> the watchlists that finding it concerns, by role: simple watchlists that
        # it can make fire (`any`) or veto (`none`), and the others, which it can make fire.
        in_any: list[list[int]] = [[] for _ in ids]
        in_none: list[list[int]] = [[] for _ in ids]
        in_other: list[list[int]] = [[] for _ in ids]
        for index, watchlist in enumerate(self._watchlists):
            if watchlist.simple:
                for term_id in watchlist.any_ids:
                    in_any[term_id].append(index)
                for term_id in watchlist.none_ids:
                    in_none[term_id].append(index)
            else:
                for term_id in watchlist.positive_ids:
                    in_other[term_id].append(index)
        # Most terms have at most one watchlist in each role: its index, or -1 (an index list
        # is collected for all the terms of an item in C). The few others are listed apart.
        self._any_of, self._none_of, self._other_of = (
            [indexes[0] if len(indexes) == 1 else -1 for indexes in role]
            for role in (in_any, in_none, in_other)
        )
        self._several = {
            term_id: (tuple(a), tuple(n), tuple(o))
            for term_id, a, n, o in zip(ids, in_any, in_none, in_other, strict=True)
            if len(a) > 1 or len(n) > 1 or len(o) > 1
        }
        # Watchlists that can fire with none of their terms present (`a OR NOT b`).
        self._always = tuple(
            index for index, w in enumerate(self._watchlists) if w.fires(frozenset())
        )
        self._used_fields = tuple(
            name for name in FIELDS if any(name in w.fields for w in self._watchlists)
        )
        # Whether some watchlist looks at some feeds only (its `feeds`).
        self.feed_specific = any(w.feed_names or w.feed_tags for w in self._watchlists)

    def watchlists_for(self, feed: str, feed_tags: Collection[str]) -> frozenset[str]:
        """The names of the watchlists that look at this feed's items."""
        return frozenset(w.name for w in self._watchlists if w.applies(feed, feed_tags))

    def _compile(self, rules: WatchlistRules, query: Node | None) -> _Watchlist:
        term_ids = self._term_ids
        any_ids = [term_ids[t] for t in rules.any]
        all_ids = [term_ids[t] for t in rules.all]
        none_ids = [term_ids[t] for t in rules.none]
        query_ids = []
        if query is not None:
            query_ids = [term_ids[leaf.term] for leaf, negated in leaves(query) if not negated]
        fields = tuple(name for name in FIELDS if name in rules.fields)
        return _Watchlist(
            name=rules.name,
            any_ids=frozenset(any_ids),
            all_ids=frozenset(all_ids),
            none_ids=frozenset(none_ids),
            all_order=tuple(dict.fromkeys(all_ids)),
            query=query,
            query_holds=compile_query(query, term_ids.__getitem__) if query else None,
            query_witnesses=compile_witnesses(query, term_ids.__getitem__) if query else None,
            fields=fields,
            feed_names=frozenset(f for f in rules.feeds if not f.startswith("tag:")),
            feed_tags=frozenset(f[4:].strip() for f in rules.feeds if f.startswith("tag:")),
            positive_ids=frozenset(any_ids + all_ids + query_ids),
            simple=bool(any_ids)
            and not all_ids
            and query is None
            and fields == FIELDS
            and not rules.feeds,
        )

    def _scan(self, fields: Mapping[str, str]) -> _Scan:
        for name, value in fields.items():
            if name not in _FIELD_ORDER:
                raise ValueError(f"unknown item field {name!r}; the fields are {', '.join(FIELDS)}")
            if not isinstance(value, str):
                raise TypeError(f"item field {name!r} must be a string, not {type(value).__name__}")
        scan = _Scan(fields)
        for name in self._used_fields:
            text = fields.get(name)
            if text:
                scan.fields[name] = self._index.scan(text)
        return scan

    def _hits(
        self, scan: _Scan, term_ids: Collection[int], fields: tuple[str, ...]
    ) -> tuple[Hit, ...]:
        unique = set(term_ids)
        return scan.hits(unique, self._texts).of(unique, fields)

    def _positive_found(self, watchlist: _Watchlist, present: set[int]) -> Set[int]:
        found = present & watchlist.any_ids
        found |= watchlist.all_ids
        if watchlist.query_witnesses is not None:
            found |= watchlist.query_witnesses(present)
        return found

    def match(
        self,
        fields: Mapping[str, str],
        *,
        feed: str | None = None,
        feed_tags: Collection[str] = (),
    ) -> list[WatchlistMatch]:
        """The watchlists that fire on an item, in config order, each with its positive hits."""
        scan = self._scan(fields)
        any_of = self._any_of
        fired, others, wanted = _triage(
            scan.found(),
            any_of,
            self._none_of,
            self._other_of,
            self._several,
            self._always,
            len(self._watchlists),
        )
        # The others fire as their rules say, and report the hits of their positive terms.
        positives: dict[int, Set[int]] = {}
        for index in others:
            watchlist = self._watchlists[index]
            if watchlist.applies(feed, feed_tags):
                watchlist_present = scan.present(watchlist.fields)
                if watchlist.fires(watchlist_present):
                    positives[index] = self._positive_found(watchlist, watchlist_present)
        if not (fired or positives):
            return []
        # Hits are made for the terms found of the watchlists that fired.
        wanted.update(*positives.values())
        made = scan.hits(wanted, self._texts)
        # A simple watchlist reports every hit of its `any` terms (hits are made only of terms
        # found), in the order made.
        names = self._names
        simple = _group(made.hits, made.owners, any_of, fired, self._several, names, WatchlistMatch)
        return [
            simple[index]
            if index in simple
            else WatchlistMatch(
                names[index], made.of(positives[index], self._watchlists[index].fields)
            )
            for index in sorted(fired.union(positives))
        ]

    def explain(
        self,
        fields: Mapping[str, str],
        *,
        feed: str | None = None,
        feed_tags: Collection[str] = (),
    ) -> list[Explanation]:
        """One Explanation per watchlist, in config order: matched or not, and why."""
        scan = self._scan(fields)
        return [self._explain(w, scan, feed, feed_tags) for w in self._watchlists]

    def _explain(
        self, watchlist: _Watchlist, scan: _Scan, feed: str | None, feed_tags: Collection[str]
    ) -> Explanation:
        if not watchlist.applies(feed, feed_tags):
            wanted = sorted(watchlist.feed_names) + sorted(f"tag:{t}" for t in watchlist.feed_tags)
            tags = f" (tags: {', '.join(sorted(feed_tags))})" if feed_tags else ""
            return Explanation(
                watchlist.name,
                matched=False,
                reason="not for this feed",
                skipped=f"feed {feed!r}{tags} is not in its feeds: {', '.join(wanted)}",
            )
        present = scan.present(watchlist.fields)
        matched = watchlist.fires(present)
        positive = [t for t in watchlist.any_ids if t in present]
        positive.extend(t for t in watchlist.all_order if t in present)
        vetoes = [t for t in watchlist.none_ids if t in present]
        missing = [self._terms[t].text for t in watchlist.all_order if t not in present]
        reasons = []
        if watchlist.any_ids and not positive:
            reasons.append("no `any` term found")
        if missing:
            reasons.append("`all` terms missing")
        if watchlist.query is not None:
            term_ids = self._term_ids
            for leaf, negated in leaves(watchlist.query):
                term_id = term_ids[leaf.term]
                if term_id in present:
                    (vetoes if negated else positive).append(term_id)
            # Missing: only operands that would help, not those of an OR group already met.
            holds = watchlist.query, lambda term: term_ids[term] in present
            missing.extend(unmet(*holds))
            if not evaluate(*holds):
                reasons.append("the query does not hold")
        # Vetoed: it would have fired but for its `none` terms (or negated operands). Present
        # alone, they changed nothing, and the reasons above say why it did not fire.
        vetoed = bool(vetoes) and not matched and watchlist.fires(present - set(vetoes))
        if vetoed:
            reasons = ["vetoed"]
        return Explanation(
            watchlist.name,
            matched=matched,
            hits=self._hits(scan, positive, watchlist.fields),
            vetoed_by=self._hits(scan, vetoes, watchlist.fields) if vetoed else (),
            missing=tuple(dict.fromkeys(missing)),
            reason="" if matched else "; ".join(reasons),
        )
