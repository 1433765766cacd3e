"""The query syntax of spec/matching.md §4: operators, precedence, quoting and parse errors."""

from __future__ import annotations

import pytest

from aggregator.errors import ConfigError
from aggregator.matching import Matcher, QueryError, WatchlistRules, parse_query
from aggregator.matching.query import And, Leaf, Not, Or


def holds(query: str, text: str) -> bool:
    return bool(Matcher([WatchlistRules(name="q", query=query)]).match({"title": text}))


def test_precedence_not_and_or() -> None:
    # a OR b c -d  is  a OR (b AND c AND NOT d)
    assert parse_query("a OR b c -d") == Or(
        (Leaf("a", 0), And((Leaf("b", 5), Leaf("c", 7), Not(Leaf("d", 10), 9))))
    )
    assert parse_query("NOT a AND b") == And((Not(Leaf("a", 4), 0), Leaf("b", 10)))


@pytest.mark.parametrize(
    ("query", "text", "expected"),
    [
        ("Hamas OR Fatah", "Fatah talks", True),
        ("Hamas AND Fatah", "Fatah talks", False),
        ("Hamas Fatah", "Hamas and Fatah", True),  # implicit AND
        ("Hamas Fatah", "Hamas", False),
        ("Hamas or Fatah", "Hamas and Fatah", False),  # lower-case `or` is a word to find
        ("Iraq AND oil OR gas", "gas deal", True),  # (Iraq AND oil) OR gas
        ("Iraq AND (oil OR gas)", "gas deal", False),
        ("NOT Sudan AND famine", "wheat prices", False),  # (NOT Sudan) AND famine
        ('Qatar -(football OR "World Cup")', "Qatar hosts the World Cup", False),
        ('Qatar -(football OR "World Cup")', "Qatar mediates", True),
        ("Qatar NOT NOT Doha", "Qatar and Doha", True),
        ('"Islamic State"', "Islamic State fighters", True),
        ('"Islamic State"', "State of Islamic art", False),
        ("Islamic State", "State of Islamic art", True),  # unquoted words are ANDed
        ("Islamic_State", "State of Islamic art", False),  # `_` joins a phrase
        ("al-Assad", "Bashar al-Assad said", True),  # `-` inside a word separates
        ("al-Assad", "Assad al", False),  # ... into the phrase "al assad"
        ("Syria -=IS", "Syria and IS", False),  # `-` before an `=` term
        ("Syria -#غزة", "Syria غزة", False),  # `-` before a `#` term
        ('"الحديدة" AND ميناء', "ميناء بالحديدة", True),  # a quoted word is the bare word
        ('="الأمن العام"', "للأمن العام", False),  # `=` before quotes: an exact phrase
        ('="الأمن العام"', "الأمن العام", True),
        ("(العراق OR بغداد) (الانتخابات OR البرلمان)", "بغداد: البرلمان", True),
        ("Syria*", "Syrians", True),
        ("Qatar(Doha)", "Qatar Doha", True),  # a parenthesis ends a word
        ("Qatar -x", "Qatar-x", False),  # `-x` is NOT x, and the text's Qatar-x holds the token x
    ],
)
def test_evaluation(query: str, text: str, expected: bool) -> None:
    assert holds(query, text) is expected


def test_smart_and_guillemet_quotes_quote_a_phrase() -> None:
    # Spec silent. Arabic keyboards type « » and word processors “ ”: an editor pasting a query
    # expects those to quote a phrase just like "...".
    for query in ("«كرة القدم» OR x", "“كرة القدم” OR x"):
        assert parse_query(query) == Or((Leaf("كرة القدم", 0), Leaf("x", 15)))
        assert holds(query, "مباراة كرة القدم")
        assert not holds(query, "القدم كرة")


def _error(query: str) -> QueryError:
    with pytest.raises(QueryError) as caught:
        parse_query(query)
    return caught.value


@pytest.mark.parametrize(
    ("query", "position", "message"),
    [
        ("(a OR b))", 8, "unexpected ')'"),
        ("(a OR b", 0, "missing ')' to close this '('"),
        ("a OR", 4, "the query ends where a term or '(' was expected"),
        ("OR a", 0, "expected a term or '(' but found 'OR'"),
        ("a AND OR b", 6, "expected a term or '(' but found 'OR'"),
        ("a ()", 3, "expected a term or '(' but found ')'"),
        ("a - b", 2, "'-' must be directly followed by a term or '('"),
        ('a "b c', 2, "unterminated quote"),
        ('a ""', 2, "empty quotes"),
        ("", 0, "the query is empty"),
        ("a سو*", 2, "term 'سو*': `*` needs at least 3 letters before it"),
        ("a =b*", 2, "term '=b*': `*` cannot be combined with `=`"),
        ("a ###", 2, "term '###': normalizes to nothing"),
        # Guillemets typed the wrong way round (easy in a right-to-left editor): this used to
        # loop for ever in the lexer, hanging check-config, start and reload.
        ("»التدخل الروسي« OR سوريا", 0, "'»' closes a quote that was never opened"),
        ("سوريا»", 5, "'»' closes a quote that was never opened"),
        ("a ”", 2, "unterminated quote"),
        ("(" * 60 + "a" + ")" * 60, 50, "nested too deeply (over 50 levels of '(' and NOT)"),
        ("NOT " * 60 + "a", 200, "nested too deeply (over 50 levels of '(' and NOT)"),
    ],
)
def test_parse_errors_name_the_position(query: str, position: int, message: str) -> None:
    error = _error(query)
    assert error.position == position
    assert error.message.startswith(message)


def test_parse_error_text_has_a_caret_under_the_position() -> None:
    error = _error("(a OR b))")
    assert str(error) == "unexpected ')' at position 9\n  (a OR b))\n          ^"


def test_config_error_names_the_watchlist_and_the_position() -> None:
    rules = [
        WatchlistRules(name="ok", any=("x",)),
        WatchlistRules(name="broken", query="(سوريا OR دمشق"),
    ]
    with pytest.raises(ConfigError) as caught:
        Matcher(rules)
    ((path, message),) = caught.value.problems
    assert path == "watchlists[1].query"
    assert message.startswith("watchlist 'broken': missing ')'")
    assert "at position 1\n  (سوريا OR دمشق\n  ^" in message


def test_every_operand_negated_is_a_config_error() -> None:
    for query in ("-a", "NOT a -b", "NOT (a OR b)", "-a -(b OR c)"):
        with pytest.raises(ConfigError, match="every operand is negated"):
            Matcher([WatchlistRules(name="q", query=query)])
    Matcher([WatchlistRules(name="q", query="NOT NOT a")])  # doubly negated is positive


def test_query_and_lists_together_must_all_hold() -> None:
    # Spec silent on a watchlist with both a query and lists: each is a condition, all must hold,
    # so a `none` list keeps vetoing alongside a query.
    rules = WatchlistRules(name="w", query="Syria OR Iraq", none=("football",))
    matcher = Matcher([rules])
    assert matcher.match({"title": "Iraq talks"})
    assert not matcher.match({"title": "Iraq football"})


def test_query_that_holds_without_its_terms_fires_on_other_items() -> None:
    # `a OR NOT b` is legal (check-config warns); it must behave as written.
    matcher = Matcher([WatchlistRules(name="q", query="Syria OR NOT football")])
    assert matcher.match({"title": "weather"})
    assert not matcher.match({"title": "football"})
    assert matcher.match({"title": "Syria football"})


def test_query_hits_are_the_positive_operands_that_made_it_true() -> None:
    matcher = Matcher([WatchlistRules(name="q", query="Hamas OR (Fatah AND Cairo) -Doha")])
    (found,) = matcher.match({"title": "Hamas and Fatah meet"})
    assert [hit.term for hit in found.hits] == ["Hamas"]  # Fatah did not make it true
    (found,) = matcher.match({"title": "Fatah in Cairo"})
    assert [hit.term for hit in found.hits] == ["Fatah", "Cairo"]
