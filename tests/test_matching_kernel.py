"""The C kernel (aggregator/matching/_kernel.c) against its Python reference implementations.

The matcher runs the C versions of its per-item loops when pip could build them, and the Python
versions otherwise (aggregator/matching/native.py). Both must give the same answer on every
input: each property test runs the whole matcher both ways on generated texts and watchlists
and compares every result, hits and explanations included. The module is skipped where the
extension was not built (no C compiler at install).
"""

# Arabic letters are the subject here, not look-alikes of ASCII ones.
# ruff: noqa: RUF001

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.matching import Matcher, WatchlistRules, index, matcher, native
from aggregator.matching.tokens import CHUNK_TOKENS
from aggregator.models import Hit, WatchlistMatch
from tests.test_matching_props import PIECES, WATCHLISTS, _valid, texts

kernel = pytest.importorskip("aggregator.matching._kernel")

SETTINGS = settings(max_examples=300, deadline=None)


@pytest.fixture
def python_only() -> Iterator[None]:
    """The matcher with the Python loops, as where the extension was not built."""
    saved = _use(PYTHON)
    try:
        yield
    finally:
        _use(saved)


# Each loop the matcher runs: (module, name of the function it calls).
LOOPS = [
    (index, "_find"),
    (index, "_hits"),
    (index, "_add_ids"),
    (matcher, "_group"),
    (matcher, "_triage"),
]
PYTHON = [getattr(module, f"{name}_python") for module, name in LOOPS]


def _use(functions: list[Any]) -> list[Any]:
    """Make the matcher call these functions for its loops; returns those it called."""
    saved = [getattr(module, name) for module, name in LOOPS]
    for (module, name), function in zip(LOOPS, functions, strict=True):
        setattr(module, name, function)
    return saved


def test_the_matcher_uses_the_kernel_unless_told_not_to() -> None:
    for (module, name), python in zip(LOOPS, PYTHON, strict=True):
        in_c = getattr(kernel, name.lstrip("_"))
        assert getattr(module, name) is (python if native.KERNEL is None else in_c), name
    assert (native.KERNEL is None) == bool(os.environ.get("AGGREGATOR_PURE_PYTHON"))


def _both_ways(function: Any) -> tuple[Any, Any]:
    """``function()`` with the C loops, then with the Python ones."""
    with_c = function()
    saved = _use(PYTHON)
    try:
        return with_c, function()
    finally:
        _use(saved)


# Texts with what changes offsets: NFKC forms (ligatures, full-width, ﷺ), hashtags, marks.
EXTRA = ["ﻻجئ", "ﷺ", "＃سوريا", "Ｆ16", "اللّٰه", "سوريا#", "U.S.A.", "co-op", "‏سوريا‏"]


@st.composite
def items(draw: st.DrawFn) -> dict[str, str]:
    pieces = st.sampled_from(PIECES + EXTRA)
    text = draw(texts()) + " " + " ".join(draw(st.lists(pieces, max_size=6)))
    return {"title": text, "summary": draw(texts()), "content": text[::-1]}


@st.composite
def watchlists(draw: st.DrawFn) -> list[WatchlistRules]:
    """Watchlists of terms taken from the pieces of text (one word, phrases, `*`, `=`)."""
    made = []
    for number in range(draw(st.integers(1, 6))):
        terms = draw(st.lists(st.sampled_from(PIECES + EXTRA), min_size=1, max_size=6))
        terms = [t.strip("#＃‏") or "سوريا" for t in terms]
        decorated = [
            draw(st.sampled_from(["", "=", "#"])) + t
            if " " not in t
            else t.replace(" ", draw(st.sampled_from([" ", "_"])))
            for t in terms
        ]
        valid = list(dict.fromkeys(t for t in decorated if _valid(t)))
        if not valid:
            continue
        cut = draw(st.integers(1, len(valid)))
        fields = draw(st.sampled_from([(), ("title",), ("summary", "content")]))
        made.append(
            WatchlistRules(
                name=f"w{number}",
                any=tuple(valid[:cut]),
                none=tuple(valid[cut:]),
                **({"fields": fields} if fields else {}),
            )
        )
    return made or [WatchlistRules(name="w", any=("سوريا",))]


@SETTINGS
@given(watchlists(), st.lists(items(), min_size=1, max_size=3))
def test_the_kernel_and_python_give_the_same_matches(
    rules: list[WatchlistRules], texts_: list[dict[str, str]]
) -> None:
    built = Matcher(rules)
    with_c, with_python = _both_ways(lambda: [built.match(item) for item in texts_])
    assert with_c == with_python
    explained = _both_ways(lambda: [built.explain(item) for item in texts_])
    assert explained[0] == explained[1]


@SETTINGS
@given(items())
def test_the_kernel_and_python_agree_on_every_rule_of_the_spec(item: dict[str, str]) -> None:
    built = Matcher(WATCHLISTS)
    with_c, with_python = _both_ways(lambda: (built.match(item), built.explain(item)))
    assert with_c == with_python


def test_the_python_loops_alone_match_as_the_spec_says(python_only: None) -> None:
    """The fallback is a whole matcher: the spec's own example, matched without the kernel."""
    built = Matcher([WatchlistRules(name="syria", any=("#سوريا", "التدخل الروسي"))])
    found = built.match({"title": "أكّد الوزير ان #التدخل_الروسي في #سوريا خطأ"})
    assert [hit.text for match in found for hit in match.hits] == ["#التدخل_الروسي", "#سوريا"]


def test_a_cleared_chunk_cache_is_filled_again() -> None:
    """Another thread may empty the token caches between the scan and the hits."""
    built = Matcher([WatchlistRules(name="port", any=("Beirut port",))])
    field_scan = built._index.scan("Blast at the Beirut port today")
    CHUNK_TOKENS.clear()
    hits, _ = field_scan.hits({0}, "title", "Blast at the Beirut port today", ["Beirut port"])
    assert hits == [Hit("Beirut port", "title", 13, 24, "Beirut port")]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: kernel.find([1, 2], True, True), TypeError),
        (lambda: kernel.find((), True, True), TypeError),
        (lambda: kernel.find([("k",) * 9], True, True), TypeError),
        (lambda: kernel.find([], True), TypeError),
        (lambda: kernel.hits(*[[]] * 17), TypeError),
        (lambda: kernel.hits([0], [(0,)], [], [], [], {0}, ["a"], [()], {}, 1, "a", None, None,
                             "title", ["a"], Hit, tuple), IndexError),
        (lambda: kernel.hits([0], [(0,)], [], [], [], {0}, ["a"], [((),)], {"a": ()}, 1, "a",
                             None, None, "title", ["a"], dict, tuple), TypeError),
        (lambda: kernel.group([], [0], [], set(), {}, [], WatchlistMatch), TypeError),
        (lambda: kernel.group(["hit"], [5], [0], set(), {}, [], WatchlistMatch), IndexError),
        (lambda: kernel.group(["hit"], [0], [1], {0}, {0: 5}, ["w"], WatchlistMatch), TypeError),
        (lambda: kernel.group(["hit"], [0], [0], {0}, {}, ["w"], 5), TypeError),
        (lambda: kernel.group(["hit"], [0], [0], {0}, {}, [], WatchlistMatch), IndexError),
        (lambda: kernel.add_ids(set(), [], [(1,)], [1], []), TypeError),
        (lambda: kernel.add_ids(frozenset(), [], [], [], []), TypeError),
        (lambda: kernel.add_ids(set(), (), [], [], []), TypeError),
        (lambda: kernel.triage([3], [0], [0], [0], {}, (), 1), IndexError),
        (lambda: kernel.triage([0], [5], [0], [0], {}, (), 1), IndexError),
        (lambda: kernel.triage(["a"], [0], [0], [0], {}, (), 1), TypeError),
        (lambda: kernel.triage({0}, [0], [0], [0], {}, (), 1), TypeError),
        (lambda: kernel.triage([0], (0,), [0], [0], {}, (), 1), TypeError),
        (lambda: kernel.triage([0], [0], [0], [0], {0: (1,)}, (), 1), TypeError),
        (lambda: kernel.triage([0], [0], [0], [0], {0: ((), (), 5)}, (), 1), TypeError),
        (lambda: kernel.triage([], [0], [0], [0], {}, [1], 1), TypeError),
        (lambda: kernel.triage([], [0], [0], [0], {}, (), -1), TypeError),
    ],
)  # fmt: skip
def test_wrong_input_is_an_error_not_a_crash(call: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def test_python_code_run_by_a_lookup_cannot_pull_the_inputs_away() -> None:
    """A chunk cache whose __missing__ empties the scan's lists (as a cache clear in another
    thread might touch shared state): the hits keep the term ids they took."""
    single_ids = [(int("1000"),), (int("1000"),)]

    class Spans(dict[str, tuple[tuple[str, int, int], ...]]):
        def __missing__(self, chunk: str) -> tuple[tuple[str, int, int], ...]:
            single_ids.clear()
            return (("ab", 0, 2), ("cd", 3, 5))

    made, owners = kernel.hits(
        [0, 1], single_ids, [], [], [], {1000}, ["ab"], [(index._NOTHING,) * 2], Spans(), 1,
        "ab cd", None, None, "t", ["x"] * 1001, Hit, index.WholeChunk,
    )  # fmt: skip
    assert owners == [1000, 1000]
    assert [hit.text for hit in made] == ["ab", "cd"]


def test_ints_and_flags_of_other_types_are_refused_before_they_run_code() -> None:
    class Id(int):
        def __hash__(self) -> int:
            raise AssertionError("ran")

    class Flag:
        def __bool__(self) -> bool:
            raise AssertionError("ran")

    with pytest.raises(TypeError):
        kernel.triage([Id(0)], [0], [-1], [-1], {}, (), 1)
    with pytest.raises(TypeError):
        kernel.find([("k", (1,), {}, (), 0, 0, {}, 0, Flag())], True, True)
    with pytest.raises(TypeError):
        kernel.group(["hit"], [Id(0)], [0], {0}, {}, ["w"], WatchlistMatch)
    with pytest.raises(TypeError):
        kernel.group(["hit"], [0], [Id(0)], {0}, {}, ["w"], WatchlistMatch)
    with pytest.raises(TypeError):
        kernel.add_ids(set(), [], [(Id(0),)], [], [])
    with pytest.raises(TypeError):
        kernel.hits([0], [(Id(0),)], [], [], [], {0}, ["a"], [()], {}, 1, "a", None, None,
                    "t", ["x"], Hit, tuple)  # fmt: skip


@pytest.mark.parametrize("match_type", [BaseException, type, dict, Hit])
def test_group_makes_only_two_slot_classes(match_type: type) -> None:
    with pytest.raises(TypeError):
        kernel.group([], [], [], {0}, {}, ["w"], match_type)


def test_watchlist_match_has_the_fields_the_kernel_sets() -> None:
    """_kernel.group makes WatchlistMatch objects itself, setting these two fields as the
    dataclass's __init__ does: a field added to the class must be added there too."""
    assert [f.name for f in dataclasses.fields(WatchlistMatch)] == ["watchlist", "hits"]
    assert not hasattr(WatchlistMatch, "__post_init__")
    made = kernel.group([], [], [], {0}, {}, ["w"], WatchlistMatch)
    assert made == {0: WatchlistMatch("w", ())}
    with pytest.raises(dataclasses.FrozenInstanceError):
        made[0].hits = ()  # type: ignore[misc]
