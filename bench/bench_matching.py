"""Benchmark of the watchlist matcher against a per-watchlist regex baseline.

Run ``python bench/bench_matching.py`` (or ``--quick``). Items are built from the real Arabic and
English feeds of the test corpus (``--corpus``, default tests/data/feeds): each item is the
title and text of an entry, padded with the text of other entries of the same language to 1-3 KB.
Terms are words and bigrams of that text (see ``story_watchlists``). It prints items/second on
one core for the matcher with 10 terms and with 10,000 terms in 200 watchlists: terms of 200
stories; the same terms written backwards, so that nothing is found (the cost of the index
alone); and terms common enough that ~40 watchlists fire on every item (the cost of building
results). Beside each, the baseline: one case-insensitive ``re`` alternation per watchlist over
the raw text, the substring search the spec replaces (wrong on many texts, and slow with many
terms), timed on the first 500 items (200 with ``--quick``).
"cold" is a first pass with empty token caches; "warm" the best of three more passes. Before
each, the heap is settled as the daemon settles it (``store.settle_heap``, after loading the
config and after each compaction of the store).
The matcher's per-item loops run in C where pip built the extension (the header says which);
``--python`` times the Python versions instead, as on a machine without a C compiler."""

from __future__ import annotations

import argparse
import html
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path

import feedparser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if "--python" in sys.argv[1:]:
    os.environ["AGGREGATOR_PURE_PYTHON"] = "1"  # before the matcher is imported: native.py

from aggregator.matching import Matcher, WatchlistRules
from aggregator.matching.native import KERNEL
from aggregator.matching.query import leaves, parse_query
from aggregator.matching.tokens import clear_cache
from aggregator.store import settle_heap

DEFAULT_CORPUS = Path(
    os.environ.get(
        "AGGREGATOR_CORPUS", Path(__file__).resolve().parent.parent / "tests" / "data" / "feeds"
    )
)
TAG = re.compile(r"<[^>]+>")
SPACE = re.compile(r"\s+")
WORD = re.compile(r"[^\W\d_\u0640]{3,}")
SEED = 20240601

Item = dict[str, str]


def strip_tags(text: str) -> str:
    """Markup to plain text, the simple way (the benchmark does not use the parse stage)."""
    return SPACE.sub(" ", html.unescape(TAG.sub(" ", text))).strip()


def load_texts(folder: Path, skip: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(title, body) of every entry of every feed in a folder."""
    texts = []
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".xml", ".atom") or path.name in skip:
            continue
        parsed = feedparser.parse(path.read_bytes())
        for entry in parsed.entries:
            title = strip_tags(entry.get("title", ""))
            parts = [c.get("value", "") for c in entry.get("content", [])]
            parts.append(entry.get("summary", ""))
            body = strip_tags(" ".join(parts))
            if title or body:
                texts.append((title, body))
    return texts


def make_items(texts: list[tuple[str, str]], count: int, rng: random.Random) -> list[Item]:
    """Items of 1-3 KB (UTF-8): an entry's title and text, padded with other entries' text."""
    items = []
    for _ in range(count):
        title, body = rng.choice(texts)
        target = rng.randint(1000, 3000)
        parts = [body]
        size = len(title.encode()) + len(body.encode())
        while size < target:
            extra = rng.choice(texts)[1]
            parts.append(extra)
            size += len(extra.encode()) + 1
        content = " ".join(parts)
        budget = target - len(title.encode())
        raw = content.encode()[: max(budget, 200)].decode("utf-8", "ignore")
        content = raw.rsplit(" ", 1)[0]
        items.append({"title": title, "content": content})
    return items


def _decorate(term: str, rng: random.Random) -> str:
    """Now and then a `*` or `=` term, as admins write them."""
    roll = rng.random()
    if roll < 0.05 and " " not in term and len(term) >= 5:
        return term[: len(term) - 2] + "*"
    if roll < 0.1:
        return "=" + term
    return term


def story_watchlists(
    texts: list[tuple[str, str]],
    count: int,
    per: int,
    rng: random.Random,
    prefix: str,
    *,
    max_entries: int | None = None,
) -> list[WatchlistRules]:
    """Watchlists that each follow one story: words and bigrams of one entry.

    This is how admins write watchlists: the names, places and phrases of a topic. A term is kept
    only if the matcher itself finds it in at most ``max_entries`` entries (default: 5% of them),
    so "the", "في" or "said" never are, and a bigram only if neither of its words is that common.
    With 3, a watchlist fires on the items that carry its story or a republished copy of it.
    With 5%, its terms are also the common words of other stories: on this small corpus of one
    country's news, ~40 of the 200 watchlists then fire on every item (a stress test of building
    results more than of matching).
    """
    order = list(range(len(texts)))
    rng.shuffle(order)
    stories = order[: count * 5]
    candidates: dict[int, list[str]] = {}
    bigrams: dict[str, tuple[str, str]] = {}
    words_of: dict[int, list[str]] = {}
    for entry in stories:
        title, body = texts[entry]
        words = WORD.findall(f"{title} {body}")
        words_of[entry] = words
        pairs = {f"{a} {b}": (a, b) for a, b in pairwise(words)}
        bigrams.update(pairs)
        found = list(dict.fromkeys(words)) + list(pairs)
        candidates[entry] = list(dict.fromkeys(_decorate(t, rng) for t in found))
    every = sorted(
        {t for terms in candidates.values() for t in terms}
        | {w for words in words_of.values() for w in words}
    )
    probe = Matcher([WatchlistRules(name=str(n), any=(t,)) for n, t in enumerate(every)])
    entries_with: Counter[str] = Counter()
    for title, body in texts:
        entries_with.update(
            every[int(m.watchlist)] for m in probe.match({"title": title, "content": body})
        )
    # Admins write names and places as phrases ("حزب الله", "Gaza City"), not "in Gaza".
    common_word = len(texts) // 20
    for entry in stories:
        candidates[entry] = [
            t
            for t in candidates[entry]
            if t not in bigrams or all(entries_with[w] <= common_word for w in bigrams[t])
        ]
    limit = max_entries if max_entries is not None else len(texts) // 20
    watchlists: list[WatchlistRules] = []
    terms: list[str] = []
    for entry in stories:  # a short entry's story continues with the next entry
        kept = [t for t in candidates[entry] if entries_with[t] <= limit and t not in terms]
        rng.shuffle(kept)
        terms += kept[: per - len(terms)]
        if len(terms) == per and len(watchlists) < count:
            number = len(watchlists)
            watchlists.append(_watchlist(f"{prefix}{number}", terms, number))
            terms = []
    return watchlists


def _watchlist(name: str, terms: list[str], number: int) -> WatchlistRules:
    """A watchlist of these terms; one in ten is written as a query instead of lists."""
    if number % 10 == 9 and len(terms) >= 6:
        quoted = [f'"{t}"' if " " in t else t for t in terms]
        half = (len(quoted) - 1) // 2
        query = f"({' OR '.join(quoted[:half])}) ({' OR '.join(quoted[half:-1])}) -{quoted[-1]}"
        return WatchlistRules(name=name, query=query)
    cut = max(1, len(terms) * 9 // 10)
    return WatchlistRules(name=name, any=tuple(terms[:cut]), none=tuple(terms[cut:]))


def backwards(rules: WatchlistRules) -> WatchlistRules:
    """The same watchlist with every word written backwards: terms that never match.

    Its row shows what 10,000 terms cost when nothing is found, i.e. the index alone.
    """

    def reverse(term: str) -> str:
        exact = term.startswith("=")
        star = term.endswith("*")
        body = term.strip("=*")
        return (
            ("=" if exact else "") + " ".join(w[::-1] for w in body.split()) + ("*" if star else "")
        )

    def operand(match: re.Match[str]) -> str:
        text = match.group()
        return text if text in ("OR", "AND", "NOT") else reverse(text)

    query = re.sub(r"[^\s()\"-][^\s()\"]*", operand, rules.query) if rules.query else None
    return WatchlistRules(
        name=rules.name,
        any=tuple(map(reverse, rules.any)),
        none=tuple(map(reverse, rules.none)),
        query=query,
    )


def baseline(watchlists: list[WatchlistRules]) -> Callable[[Item], int]:
    """One case-insensitive alternation of a watchlist's positive terms, over the raw text."""
    patterns = []
    for rules in watchlists:
        terms = list(rules.any) + list(rules.all)
        if rules.query:
            terms += [t.strip('"') for t in re.findall(r'"[^"]+"|[^\s()"]+', rules.query)]
        literal = [t.lstrip("=#-").rstrip("*").replace("_", " ") for t in terms]
        literal = [t for t in literal if t and t not in ("OR", "AND", "NOT")]
        patterns.append(re.compile("|".join(re.escape(t) for t in literal), re.IGNORECASE))

    def run(item: Item) -> int:
        text = f"{item['title']}\n{item['content']}"
        return sum(1 for pattern in patterns if pattern.search(text))

    return run


def matching(matcher: Matcher) -> Callable[[Item], int]:
    """The matcher as a function of an item: how many watchlists fire."""

    def run(item: Item) -> int:
        return len(matcher.match(item))

    return run


def rate(function: Callable[[Item], int], items: list[Item]) -> tuple[float, int]:
    """(items per second, items with at least one watchlist firing)."""
    fired = 0
    start = time.perf_counter()
    for item in items:
        if function(item):
            fired += 1
    elapsed = time.perf_counter() - start
    return len(items) / elapsed, fired


def main(argv: Sequence[str] | None = None) -> int:
    """Build the data, time every configuration, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 items instead of 10,000")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--python", action="store_true", help="the matcher's loops in Python, not the C kernel"
    )
    args = parser.parse_args(argv)  # --python itself is read before the imports, above
    if not (args.corpus / "news-ar").is_dir():
        parser.error(f"corpus not found: {args.corpus} (set --corpus or AGGREGATOR_CORPUS)")
    item_count = 1_000 if args.quick else 10_000
    baseline_count = 200 if args.quick else 500
    rng = random.Random(SEED)

    arabic = load_texts(args.corpus / "news-ar", skip=("bbc-urdu.xml",))
    english = load_texts(args.corpus / "news-other" / "en")
    half = item_count // 2
    items = make_items(arabic, half, rng) + make_items(english, item_count - half, rng)
    rng.shuffle(items)
    sizes = sorted(len(f"{i['title']} {i['content']}".encode()) for i in items)
    print(
        f"{len(items):,} items from {len(arabic)} Arabic and {len(english)} English entries, "
        f"{sizes[0]:,}-{sizes[-1]:,} bytes (median {sizes[len(sizes) // 2]:,}); "
        f"matcher loops: {'C kernel' if KERNEL is not None else 'Python (no C kernel)'}"
    )

    def stories(
        arabic_count: int, english_count: int, per: int, limit: int | None
    ) -> list[WatchlistRules]:
        return story_watchlists(
            arabic, arabic_count, per, rng, "ar", max_entries=limit
        ) + story_watchlists(english, english_count, per, rng, "en", max_entries=limit)

    story = stories(120, 80, 50, 3)
    configs = {
        "10 terms": stories(1, 1, 5, 3),
        "10,000 terms": story,
        "10,000 terms, backwards": [backwards(w) for w in story],
        "10,000 terms, dense": stories(120, 80, 50, None),
    }
    header = (
        f"{'configuration':<42}{'terms':>7}{'lists':>6}{'items/s cold':>13}{'items/s warm':>13}"
        f"{'fired items':>14}{'lists/item':>11}{'hits/item':>10}"
    )
    print("\n" + header)
    warm_rates = {}
    for label, watchlists in configs.items():
        term_count = sum(
            len(w.any)
            + len(w.all)
            + len(w.none)
            + (len(list(leaves(parse_query(w.query)))) if w.query else 0)
            for w in watchlists
        )
        matcher = Matcher(watchlists)
        clear_cache()
        # As in the daemon: the heap is settled (long-lived objects frozen out of the cyclic
        # GC) once the matcher is built, and again at each compaction of the store, after
        # which the token caches are long-lived too. Without it, every full collection would
        # walk this benchmark's own corpus and every matcher built so far.
        settle_heap()
        cold, _ = rate(matching(matcher), items)
        settle_heap()
        # Warm: the best of three passes, so that another process's burst does not count.
        warm = max(rate(matching(matcher), items)[0] for _ in range(3))
        warm_rates[label] = warm
        results = [matcher.match(item) for item in items]
        fired = sum(1 for r in results if r)
        lists = sum(len(r) for r in results) / len(items)
        hits = sum(len(m.hits) for r in results for m in r) / len(items)
        print(
            f"{'matcher, ' + label:<42}{term_count:>7,}{len(watchlists):>6}"
            f"{cold:>13,.0f}{warm:>13,.0f}{fired:>8,}/{len(items):<5,}{lists:>11.1f}{hits:>10.1f}"
        )
        base_items = items[:baseline_count]
        speed, fired = rate(baseline(watchlists), base_items)
        print(
            f"{'regex baseline, ' + label:<42}{term_count:>7,}{len(watchlists):>6}{speed:>13,.0f}"
            f"{speed:>13,.0f}{fired:>8,}/{len(base_items):<5,}"
        )
    small, large = warm_rates["10 terms"], warm_rates["10,000 terms"]
    print(
        f"\n10,000 vs 10 terms (warm): {small / large:.2f}x slower (target <= 2x); "
        f"10,000 terms: {large:,.0f} items/s (target >= 5,000)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
