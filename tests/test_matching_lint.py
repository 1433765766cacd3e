"""check_rules errors and warnings, the Matcher's ConfigError, explanations and highlighting."""

# Arabic letters are the subject here, not look-alikes of ASCII ones.
# ruff: noqa: RUF001

from __future__ import annotations

import pytest

from aggregator.errors import ConfigError
from aggregator.matching import (
    Matcher,
    WatchlistRules,
    check_rules,
    format_explanations,
    highlight_spans,
)
from aggregator.models import Hit


def errors(**kwargs: object) -> list[tuple[str, str]]:
    return check_rules(WatchlistRules(name="w", **kwargs))[0]  # type: ignore[arg-type]


def warnings(**kwargs: object) -> list[tuple[str, str]]:
    return check_rules(WatchlistRules(name="w", **kwargs))[1]  # type: ignore[arg-type]


def test_a_clean_watchlist_has_no_errors_and_no_warnings() -> None:
    assert check_rules(WatchlistRules(name="w", any=("سوريا", "Syria"), none=("كرة القدم",))) == (
        [],
        [],
    )


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("سو*", "`*` needs at least 3 letters before it (found 2)"),
        ("Sy*", "`*` needs at least 3 letters before it (found 2)"),
        ("سو*ريا", "`*` is only allowed at the end of a term"),
        ("foo* bar", "`*` is only allowed at the end of a term"),
        ("سوريا *", "`*` must directly follow a word"),
        ("=سوريا*", "`*` cannot be combined with `=`"),
        ("", "empty term"),
        ("   ", "empty term"),
        ("=", "empty term after `=`"),
        ("#", "normalizes to nothing"),
        ("ـــ", "normalizes to nothing"),  # only tatweel
        ("«»", "normalizes to nothing"),
        ("Beirut. Port", "contains a sentence end"),
    ],
)
def test_term_errors(term: str, message: str) -> None:
    ((path, text),) = errors(any=(term,))
    assert path == "any[0]"
    assert message in text


def test_invisible_controls_around_a_term_are_ignored() -> None:
    # Spec silent. Arabic copied from a web page often carries RLM marks; an editor cannot see
    # them and expects "سوري*" to be the prefix term it looks like.
    assert errors(any=("\u200fسوري\u200f*\u200f", "\u200fسوريا\u200e")) == []
    assert fires_on("\u200fسوري\u200f*", "والسوريين")


def fires_on(term: str, text: str) -> bool:
    return bool(Matcher([WatchlistRules(name="w", any=(term,))]).match({"title": text}))


def test_errors_point_at_the_list_and_index() -> None:
    found = errors(any=("ok", "سو*"), all=("",), none=("#",))
    assert [path for path, _ in found] == ["any[1]", "all[0]", "none[0]"]


def test_watchlist_with_only_none_terms_or_nothing() -> None:
    assert errors(none=("x",)) == [
        ("", "has only `none` terms: it needs at least one `any` or `all` term, or a query")
    ]
    assert errors() == [("", "has no terms: it needs at least one `any` or `all` term, or a query")]


def test_fields_and_feeds_are_checked() -> None:
    found = errors(any=("x",), fields=("title", "body"), feeds=("bbc", "tag:", ""))
    assert found == [
        ("fields[1]", "unknown field 'body'; the fields are title, summary, content, categories"),
        ("feeds[1]", "`tag:` needs a tag name after it"),
        ("feeds[2]", "a feed entry must be a feed name or tag:NAME"),
    ]
    assert errors(any=("x",), fields=())[0][0] == "fields"


def test_a_string_where_a_list_belongs_is_an_error() -> None:
    # WatchlistRules(any="سوريا") would otherwise search for each letter.
    assert errors(any="سوريا") == [("any", "must be a list of terms, not str")]


def test_query_errors() -> None:
    ((path, message),) = errors(query="(a OR b))")
    assert path == "query"
    assert message == "watchlist 'w': unexpected ')' at position 9\n  (a OR b))\n          ^"
    assert errors(query="-a -b") == [
        ("query", "every operand is negated: the query needs at least one term that must match")
    ]


def test_three_letter_arabic_word_warns_and_suggests_exact() -> None:
    ((path, message),) = warnings(any=("زير",))
    assert path == "any[0]"
    assert "3 letters" in message
    assert "'=زير'" in message
    assert warnings(any=("=زير",)) == []  # written exact: nothing to warn about
    assert warnings(any=("زير*",)) == []  # a prefix term, not a 3-letter word
    assert warnings(any=("وزير",)) == []  # 4 letters
    assert warnings(any=("زير الدفاع",)) == []  # a phrase gives context
    assert warnings(any=("Tom",)) == []  # Latin words take no prefix chain


def test_function_word_collision_warns_with_a_suggestion() -> None:
    found = warnings(any=("علي",))
    assert any("'على'" in message and "phrase" in message for _, message in found)
    for term in ("على", "إلى", "في", "من", "عن", "أن", "مع"):
        assert any("common word" in m for _, m in warnings(any=(term,))), term
    assert not any("common word" in m for _, m in warnings(any=("علي خامنئي",)))


def test_query_warnings() -> None:
    found = warnings(query="Hamas or Fatah")
    assert found == [
        (
            "query",
            "'or' is searched as a word (only upper-case OR is an operator) at position 7\n"
            "  Hamas or Fatah\n"
            "        ^",
        )
    ]
    ((_, message),) = warnings(query="Syria OR NOT football")
    assert "none of its terms" in message
    assert any("3 letters" in m for _, m in warnings(query="زير OR وزير"))


def test_matcher_lists_every_problem_of_every_watchlist() -> None:
    rules = [
        WatchlistRules(name="ok", any=("سوريا",)),
        WatchlistRules(name="bad", any=("سو*",), query="a OR"),
        WatchlistRules(name="only-none", none=("x",)),
        WatchlistRules(name="ok", any=("x",), fields=("body",)),
    ]
    with pytest.raises(ConfigError) as caught:
        Matcher(rules)
    paths = [path for path, _ in caught.value.problems]
    assert paths == [
        "watchlists[1].any[0]",
        "watchlists[1].query",
        "watchlists[2]",
        "watchlists[3].fields[0]",
        "watchlists[3].name",
    ]
    assert "duplicate name 'ok'" in caught.value.problems[-1][1]
    assert "watchlists[1].any[0]: 'سو*': `*` needs at least 3 letters" in str(caught.value)


def test_warnings_do_not_stop_the_matcher() -> None:
    assert Matcher([WatchlistRules(name="w", any=("زير", "علي"))]).match({"title": "وزير"})


# Explanations ---------------------------------------------------------------------------

SENTENCE = "أكّد وزير الدفاع الاميركي ان #التدخل_الروسي في سوريا خطأ"


def _explain_matcher() -> Matcher:
    return Matcher(
        [
            WatchlistRules(name="syria", any=("#سوريا", "#التدخل_الروسي", "داعش")),
            WatchlistRules(name="defence", any=("أكد",), all=("وزير الدفاع",)),
            WatchlistRules(name="no-errors", any=("سوريا",), none=("خطأ",)),
            WatchlistRules(name="oil", any=("النفط",), all=("أوبك",)),
            WatchlistRules(name="query", query='سوريا -"التدخل الروسي"'),
            WatchlistRules(name="tagged", any=("سوريا",), feeds=("tag:levant",)),
        ]
    )


def test_explain_gives_one_verdict_per_watchlist_in_order() -> None:
    found = _explain_matcher().explain({"title": SENTENCE}, feed="annahar")
    assert [(e.watchlist, e.matched) for e in found] == [
        ("syria", True),
        ("defence", True),
        ("no-errors", False),
        ("oil", False),
        ("query", False),
        ("tagged", False),
    ]
    syria, defence, vetoed, oil, query, tagged = found
    assert [(h.term, h.field, h.text) for h in syria.hits] == [
        ("#التدخل_الروسي", "title", "#التدخل_الروسي"),
        ("#سوريا", "title", "سوريا"),
    ]
    assert [h.text for h in defence.hits] == ["أكّد", "وزير الدفاع"]
    assert [(h.term, h.text) for h in vetoed.vetoed_by] == [("خطأ", "خطأ")]
    assert [h.text for h in vetoed.hits] == ["سوريا"]
    assert oil.missing == ("أوبك",)
    assert oil.reason == "no `any` term found; `all` terms missing"
    assert [h.term for h in query.vetoed_by] == ["التدخل الروسي"]
    assert tagged.skipped == "feed 'annahar' is not in its feeds: tag:levant"


def test_explain_agrees_with_match() -> None:
    matcher = _explain_matcher()
    fields = {"title": SENTENCE}
    matched = {m.watchlist: m.hits for m in matcher.match(fields)}
    for explanation in matcher.explain(fields):
        assert explanation.matched is (explanation.watchlist in matched)
        if explanation.matched:
            assert explanation.hits == matched[explanation.watchlist]


def test_format_explanations_shows_the_words_as_written() -> None:
    report = format_explanations(SENTENCE, _explain_matcher().explain({"title": SENTENCE}))
    lines = report.splitlines()
    assert lines[0] == f"Text: {SENTENCE}"
    assert "syria: MATCHED" in lines
    assert "  matched 'أكد' in title [0:4], written 'أكّد'" in lines
    assert "  matched '#التدخل_الروسي' in title [29:43], written '#التدخل_الروسي'" in lines
    assert "no-errors: not matched, vetoed by a `none` term" in lines
    assert "  vetoed by 'خطأ' in title [53:56], written 'خطأ'" in lines
    assert "  missing: 'أوبك'" in lines
    assert lines[-1] == "6 watchlists: 3 matched, 2 vetoed, 1 not matched, 0 skipped"


def test_a_none_term_vetoes_only_a_watchlist_that_would_have_fired() -> None:
    # Found with nothing positive, a `none` term or negated operand changed nothing: the
    # report says what is missing, not "vetoed".
    matcher = Matcher(
        [
            WatchlistRules(name="lists", any=("سوريا",), none=("كرة القدم",)),
            WatchlistRules(name="query", query='(سوريا OR دمشق) -"كرة القدم"'),
        ]
    )
    lists, query = matcher.explain({"title": "نتائج كرة القدم"})
    assert (lists.vetoed_by, lists.reason) == ((), "no `any` term found")
    assert (query.vetoed_by, query.reason) == ((), "the query does not hold")
    assert query.missing == ("سوريا", "دمشق")
    report = format_explanations("t", [lists, query])
    assert "vetoed" not in report.replace("0 vetoed", "")
    lists, query = matcher.explain({"title": "كرة القدم في سوريا"})
    assert lists.reason == query.reason == "vetoed"
    assert [h.term for h in lists.vetoed_by] == [h.term for h in query.vetoed_by] == ["كرة القدم"]


def test_a_query_misses_only_the_operands_that_would_make_it_hold() -> None:
    # The first group is met by Russia: its other operands are not what is missing.
    matcher = Matcher([WatchlistRules(name="q", query="(روسيا OR Russia) (سوريا OR Syria)")])
    (found,) = matcher.explain({"title": "Russia"})
    assert found.missing == ("سوريا", "Syria")
    (found,) = matcher.explain({"title": "nothing"})
    assert found.missing == ("روسيا", "Russia", "سوريا", "Syria")


def test_format_explanations_reports_skipped_watchlists() -> None:
    matcher = Matcher([WatchlistRules(name="local", any=("x",), feeds=("annahar",))])
    report = format_explanations("x", matcher.explain({"title": "x"}, feed="bbc"))
    assert "local: skipped (feed 'bbc' is not in its feeds: annahar)" in report


# Highlighting ---------------------------------------------------------------------------


def test_highlight_spans_are_sorted_and_merged_per_field() -> None:
    hits = [
        Hit("b", "summary", 10, 14, "xxxx"),
        Hit("a", "summary", 0, 5, "xxxxx"),
        Hit("c", "summary", 3, 8, "xxxxx"),
        Hit("d", "title", 0, 2, "xx"),
        Hit("e", "summary", 14, 16, "xx"),
    ]
    assert highlight_spans(hits, "summary") == [(0, 8), (10, 16)]
    assert highlight_spans(hits, "title") == [(0, 2)]
    assert highlight_spans(hits, "content") == []


def test_highlight_spans_from_a_real_match() -> None:
    summary = "قال إن التدخل الروسي في سوريا خطأ، وإن سوريا"
    matcher = Matcher([WatchlistRules(name="w", any=("سوريا", "التدخل الروسي", "الروسي في"))])
    (found,) = matcher.match({"summary": summary})
    spans = highlight_spans(found.hits, "summary")
    assert [summary[a:b] for a, b in spans] == ["التدخل الروسي في", "سوريا", "سوريا"]
