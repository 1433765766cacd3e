"""The compiled matcher: every watchlist of a config, evaluated against one item at a time.

Built once per config load. ``index.TermIndex`` finds every term in each field at a cost that
does not grow with the number of terms; then only the watchlists that use a term that was found
are evaluated (plus those whose query can hold without any term, e.g. ``a OR NOT b``), and hits
(offsets into the original text) are built only for the watchlists that fire.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

from aggregator.errors import ConfigError
from aggregator.matching.explain import Explanation
from aggregator.matching.index import FieldScan, TermIndex
from aggregator.matching.lint import check_rules
from aggregator.matching.query import (
    Node,
    Predicate,
    compile_query,
    evaluate,
    leaves,
    parse_query,
    witnesses,
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
    fields: tuple[str, ...]  # in FIELDS order
    feed_names: frozenset[str]
    feed_tags: frozenset[str]
    positive_ids: frozenset[int]

    def applies(self, feed: str | None, feed_tags: Collection[str]) -> bool:
        if feed is None or not (self.feed_names or self.feed_tags):
            return True
        return feed in self.feed_names or any(tag in self.feed_tags for tag in feed_tags)

    def fires(self, present: frozenset[int]) -> bool:
        return (
            (not self.any_ids or not self.any_ids.isdisjoint(present))
            and self.all_ids <= present
            and self.none_ids.isdisjoint(present)
            and (self.query_holds is None or self.query_holds(present))
        )


@dataclass(slots=True)
class _Scan:
    texts: Mapping[str, str]
    terms: list[Term]
    fields: dict[str, FieldScan] = field(default_factory=dict)
    present_cache: dict[tuple[str, ...], frozenset[int]] = field(default_factory=dict)
    hit_cache: dict[int, list[Hit]] = field(default_factory=dict)

    def present(self, fields: tuple[str, ...]) -> frozenset[int]:
        """Ids of the terms found in any of these fields."""
        found = self.present_cache.get(fields)
        if found is None:
            scans = [self.fields[name].hits for name in fields if name in self.fields]
            found = self.present_cache[fields] = frozenset().union(*scans)
        return found

    def make_hits(self, term_ids: Collection[int]) -> None:
        """Build the Hits of these terms (each field is walked once for all of them)."""
        wanted = [t for t in term_ids if t not in self.hit_cache]
        for term_id in wanted:
            self.hit_cache[term_id] = []
        for name, field_scan in self.fields.items():
            owners = [t for t in wanted if t in field_scan.hits]
            if not owners:
                continue
            runs = [run for t in owners for run in field_scan.hits[t]]
            spans = iter(field_scan.spans(runs, self.texts[name]))
            text = self.texts[name]
            for term_id in owners:
                term = self.terms[term_id].text
                self.hit_cache[term_id].extend(
                    Hit(term, name, start, end, text[start:end])
                    for start, end in islice(spans, len(field_scan.hits[term_id]))
                )

    def hits_of(self, term_id: int) -> list[Hit]:
        """Every occurrence of a term in every field, in field order then text order."""
        if term_id not in self.hit_cache:
            self.make_hits((term_id,))
        return self.hit_cache[term_id]


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
        self._terms: list[Term] = []
        self._term_ids: dict[str, int] = {}
        self._watchlists = [self._compile(rules) for rules in watchlists]
        self._index = TermIndex(self._terms)
        self._users: list[list[int]] = [[] for _ in self._terms]  # term id -> watchlist indexes
        for index, watchlist in enumerate(self._watchlists):
            for term_id in watchlist.positive_ids:
                self._users[term_id].append(index)
        # Watchlists that can fire with none of their terms present (`a OR NOT b`).
        self._always = tuple(
            index for index, w in enumerate(self._watchlists) if w.fires(frozenset())
        )
        self._used_fields = tuple(
            name for name in FIELDS if any(name in w.fields for w in self._watchlists)
        )

    def _term_id(self, text: str) -> int:
        term_id = self._term_ids.get(text)
        if term_id is None:
            term_id = self._term_ids[text] = len(self._terms)
            self._terms.append(compile_term(text))
        return term_id

    def _compile(self, rules: WatchlistRules) -> _Watchlist:
        any_ids = [self._term_id(t) for t in rules.any]
        all_ids = [self._term_id(t) for t in rules.all]
        none_ids = [self._term_id(t) for t in rules.none]
        query = parse_query(rules.query) if rules.query is not None else None
        query_ids = []
        holds = None
        if query is not None:
            for leaf, negated in leaves(query):
                term_id = self._term_id(leaf.term)
                if not negated:
                    query_ids.append(term_id)
            holds = compile_query(query, self._term_ids.__getitem__)
        return _Watchlist(
            name=rules.name,
            any_ids=frozenset(any_ids),
            all_ids=frozenset(all_ids),
            none_ids=frozenset(none_ids),
            all_order=tuple(dict.fromkeys(all_ids)),
            query=query,
            query_holds=holds,
            fields=tuple(name for name in FIELDS if name in rules.fields),
            feed_names=frozenset(f for f in rules.feeds if not f.startswith("tag:")),
            feed_tags=frozenset(f[4:].strip() for f in rules.feeds if f.startswith("tag:")),
            positive_ids=frozenset(any_ids + all_ids + query_ids),
        )

    def _scan(self, fields: Mapping[str, str]) -> _Scan:
        for name, value in fields.items():
            if name not in _FIELD_ORDER:
                raise ValueError(f"unknown item field {name!r}; the fields are {', '.join(FIELDS)}")
            if not isinstance(value, str):
                raise TypeError(f"item field {name!r} must be a string, not {type(value).__name__}")
        scan = _Scan(fields, self._terms)
        for name in self._used_fields:
            text = fields.get(name)
            if text:
                scan.fields[name] = self._index.scan(text)
        return scan

    def _hits(self, scan: _Scan, term_ids: Iterable[int], fields: tuple[str, ...]) -> list[Hit]:
        found: list[Hit] = []
        for term_id in term_ids:
            found.extend(scan.hits_of(term_id))
        if len(fields) < len(FIELDS):
            found = [hit for hit in found if hit.field in fields]
        if len(found) > 1:  # several terms: interleave them in text order
            found.sort(key=lambda h: (_FIELD_ORDER[h.field], h.start, h.end, h.term))
        return found

    def _positive_found(self, watchlist: _Watchlist, present: frozenset[int]) -> list[int]:
        ids = list(watchlist.any_ids & present)
        ids.extend(watchlist.all_order)
        if watchlist.query is not None:
            term_ids = self._term_ids
            ids.extend(
                term_ids[term]
                for term in witnesses(watchlist.query, lambda term: term_ids[term] in present)
            )
        return list(dict.fromkeys(ids))

    def match(
        self,
        fields: Mapping[str, str],
        *,
        feed: str | None = None,
        feed_tags: Collection[str] = (),
    ) -> list[WatchlistMatch]:
        """The watchlists that fire on an item, in config order, each with its positive hits."""
        scan = self._scan(fields)
        candidates = set(self._always)
        users = self._users
        for field_scan in scan.fields.values():
            for term_id in field_scan.hits:
                candidates.update(users[term_id])
        fired: list[tuple[_Watchlist, list[int]]] = []
        for index in sorted(candidates):
            watchlist = self._watchlists[index]
            if not watchlist.applies(feed, feed_tags):
                continue
            present = scan.present(watchlist.fields)
            if watchlist.fires(present):
                fired.append((watchlist, self._positive_found(watchlist, present)))
        scan.make_hits({term_id for _, positive in fired for term_id in positive})
        matches = [
            WatchlistMatch(watchlist.name, tuple(self._hits(scan, positive, watchlist.fields)))
            for watchlist, positive in fired
        ]
        return matches

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
                if term_id not in present:
                    if not negated:
                        missing.append(leaf.term)
                elif negated:
                    vetoes.append(term_id)
                else:
                    positive.append(term_id)
            if not evaluate(watchlist.query, lambda term: term_ids[term] in present):
                reasons.append("the query does not hold")
        if vetoes and not matched:
            reasons.append("vetoed")
        return Explanation(
            watchlist.name,
            matched=matched,
            hits=tuple(self._hits(scan, dict.fromkeys(positive), watchlist.fields)),
            vetoed_by=()
            if matched
            else tuple(self._hits(scan, dict.fromkeys(vetoes), watchlist.fields)),
            missing=tuple(dict.fromkeys(missing)),
            reason="" if matched else "; ".join(reasons),
        )
