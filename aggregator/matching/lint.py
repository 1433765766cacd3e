"""``check_rules``: every error and warning about one watchlist, for config load and check-config.

Errors make a watchlist unusable (the config is refused). Warnings are legal rules that an
Arabic-reading editor would probably not mean: short words that the prefix chain turns into other
words, names that normalize to a preposition, queries that fire on everything.
"""

from __future__ import annotations

from typing import Final

from aggregator.matching.query import (
    Leaf,
    QueryError,
    describe_position,
    evaluate,
    leaves,
    parse_query,
)
from aggregator.matching.rules import WatchlistRules
from aggregator.matching.terms import Term, TermError, compile_term
from aggregator.models import FIELDS

Problems = list[tuple[str, str]]

# Common Arabic function words, normalized (spec §1), with their usual spelling. A one-word term
# that normalizes to one of these (علي is على after ى→ي) matches most Arabic texts.
FUNCTION_WORDS: Final = {
    "في": "في",
    "من": "من",
    "علي": "على",
    "الي": "إلى",
    "عن": "عن",
    "ان": "أن/إن",
    "انه": "أنه/إنه",
    "مع": "مع",
    "ما": "ما",
    "لا": "لا",
    "لم": "لم",
    "لن": "لن",
    "قد": "قد",
    "او": "أو",
    "ام": "أم",
    "ثم": "ثم",
    "بل": "بل",
    "كل": "كل",
    "هذا": "هذا",
    "هذه": "هذه",
    "ذلك": "ذلك",
    "تلك": "تلك",
    "التي": "التي",
    "الذي": "الذي",
    "الذين": "الذين",
    "هو": "هو",
    "هي": "هي",
    "هم": "هم",
    "كان": "كان",
    "كانت": "كانت",
    "بين": "بين",
    "بعد": "بعد",
    "قبل": "قبل",
    "عند": "عند",
    "منذ": "منذ",
    "حتي": "حتى",
    "غير": "غير",
    "لكن": "لكن",
    "اذا": "إذا",
    "اذ": "إذ",
    "اي": "أي",
    "كما": "كما",
    "الا": "إلا",
    "لدي": "لدى",
    "متي": "متى",
    "مني": "مني",
    "لو": "لو",
    "يا": "يا",
}
_LIST_NAMES: Final = ("any", "all", "none")


def _term_warnings(term: Term) -> list[str]:
    """Warnings about one valid term (spec §3.2 note and §5 notes)."""
    warnings: list[str] = []
    if len(term.words) != 1:
        return warnings
    word = term.words[0]
    shown = term.text.strip()
    if word.key in FUNCTION_WORDS:
        common = FUNCTION_WORDS[word.key]
        example = shown.lstrip("=#") + " <next word of the name>"
        warnings.append(
            f"{shown!r} normalizes to {word.key!r}, the same as the common word {common!r}, "
            f"so it matches most Arabic texts; give it context with a phrase, e.g. {example!r}"
        )
    if word.arabic and not term.exact and not word.star and len(word.key) == 3:
        bare = shown.lstrip("#")
        examples = ", ".join(repr(p + bare) for p in ("و", "ب", "ل"))
        warnings.append(
            f"{shown!r} is a one-word Arabic term of 3 letters: the prefix chain also matches "
            f"{examples}, which can be other words (as وزير is و + زير); "
            f"write {'=' + bare!r} to match the word alone"
        )
    return warnings


def _check_list(name: str, value: object, errors: Problems, warnings: Problems) -> None:
    """Check one of any/all/none."""
    if isinstance(value, str) or not isinstance(value, tuple | list):
        errors.append((name, f"must be a list of terms, not {type(value).__name__}"))
        return
    for index, text in enumerate(value):
        path = f"{name}[{index}]"
        if not isinstance(text, str):
            errors.append((path, f"a term must be a string, not {type(text).__name__}"))
            continue
        try:
            term = compile_term(text)
        except TermError as error:
            errors.append((path, f"{text!r}: {error.message}"))
            continue
        warnings.extend((path, message) for message in _term_warnings(term))


def _check_query(query: str, watchlist: object, errors: Problems, warnings: Problems) -> None:
    """Check the query's syntax, its operands and its polarity."""
    try:
        node = parse_query(query)
    except QueryError as error:
        # Named as well as numbered: with many watchlists, the name is what the admin knows.
        named = f"watchlist {watchlist!r}: " if isinstance(watchlist, str) and watchlist else ""
        errors.append(("query", f"{named}{error}"))
        return
    operands = list(leaves(node))
    if all(negated for _, negated in operands):
        errors.append(
            ("query", "every operand is negated: the query needs at least one term that must match")
        )
        return
    for leaf, _ in operands:
        _leaf_warnings(query, leaf, warnings)
    if evaluate(node, lambda _term: False):
        warnings.append(
            (
                "query",
                "the query also holds for a text that contains none of its terms (a NOT inside "
                "an OR), so almost every item would fire",
            )
        )


def _leaf_warnings(query: str, leaf: Leaf, warnings: Problems) -> None:
    if leaf.term in ("or", "and", "not", "Or", "And", "Not"):
        message = (
            f"{leaf.term!r} is searched as a word (only upper-case {leaf.term.upper()} "
            "is an operator)"
        )
        warnings.append(("query", describe_position(message, leaf.position, query)))
    term = compile_term(leaf.term)
    warnings.extend(("query", message) for message in _term_warnings(term))


def check_rules(rules: WatchlistRules) -> tuple[Problems, Problems]:
    """(errors, warnings) for one watchlist; each is (path within the watchlist, message)."""
    errors: Problems = []
    warnings: Problems = []
    if not isinstance(rules.name, str) or not rules.name.strip():
        errors.append(("name", "a watchlist needs a non-empty name"))
    for name in _LIST_NAMES:
        _check_list(name, getattr(rules, name), errors, warnings)
    if rules.query is not None:
        if not isinstance(rules.query, str):
            errors.append(("query", f"must be a string, not {type(rules.query).__name__}"))
        else:
            _check_query(rules.query, rules.name, errors, warnings)
    if not (rules.any or rules.all or rules.query is not None):
        if rules.none:
            errors.append(
                ("", "has only `none` terms: it needs at least one `any` or `all` term, or a query")
            )
        else:
            errors.append(
                ("", "has no terms: it needs at least one `any` or `all` term, or a query")
            )
    _check_fields(rules.fields, errors)
    _check_feeds(rules.feeds, errors)
    return errors, warnings


def _check_fields(fields: object, errors: Problems) -> None:
    if isinstance(fields, str) or not isinstance(fields, tuple | list):
        errors.append(("fields", f"must be a list of field names, not {type(fields).__name__}"))
        return
    if not fields:
        errors.append(("fields", f"is empty: nothing would be searched (use some of {FIELDS})"))
    for index, name in enumerate(fields):
        if name not in FIELDS:
            errors.append(
                (f"fields[{index}]", f"unknown field {name!r}; the fields are {', '.join(FIELDS)}")
            )


def _check_feeds(feeds: object, errors: Problems) -> None:
    if isinstance(feeds, str) or not isinstance(feeds, tuple | list):
        errors.append(("feeds", f"must be a list of feed names, not {type(feeds).__name__}"))
        return
    for index, entry in enumerate(feeds):
        path = f"feeds[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            errors.append((path, "a feed entry must be a feed name or tag:NAME"))
        elif entry.startswith("tag:") and not entry[4:].strip():
            errors.append((path, "`tag:` needs a tag name after it"))
