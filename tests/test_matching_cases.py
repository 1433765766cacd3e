"""Every case of tests/data/matching.jsonl (copied unchanged from shared/cases) is a test.

Each case is one watchlist (any/all/none/query), an item (title, summary) and whether the
watchlist fires; the case id is the test id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregator.matching import Matcher, WatchlistRules

CASES_FILE = Path(__file__).parent / "data" / "matching.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text(encoding="utf-8").splitlines() if line]


def test_the_case_file_is_complete() -> None:
    assert len(CASES) >= 170
    assert len({case["id"] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_case(case: dict[str, Any]) -> None:
    spec = case["watchlist"]
    rules = WatchlistRules(
        name=case["id"],
        any=tuple(spec.get("any", ())),
        all=tuple(spec.get("all", ())),
        none=tuple(spec.get("none", ())),
        query=spec.get("query"),
    )
    matcher = Matcher([rules])
    fields = {"title": case["title"], "summary": case["summary"]}
    fired = bool(matcher.match(fields))
    explanation = matcher.explain(fields)[0]
    assert fired is case["expect"], f"{case['rule']}: {case['note']}"
    assert explanation.matched is fired
