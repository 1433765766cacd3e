"""Watchlist matching (spec/matching.md): Arabic- and English-aware terms, lists and queries.

Pure: values in, values out. Build a ``Matcher`` once per config load and call ``match`` per
item; ``check_rules`` lists errors and warnings for check-config; ``explain`` and
``format_explanations`` serve ``aggregator match``; ``highlight_spans`` serves the composer.
"""

from aggregator.matching.explain import Explanation, format_explanations, highlight_spans
from aggregator.matching.lint import check_rules
from aggregator.matching.matcher import Matcher
from aggregator.matching.normalize import normalize
from aggregator.matching.query import QueryError, parse_query
from aggregator.matching.rules import WatchlistRules
from aggregator.matching.terms import TermError, compile_term
from aggregator.matching.tokens import Token, tokenize

__all__ = [
    "Explanation",
    "Matcher",
    "QueryError",
    "TermError",
    "Token",
    "WatchlistRules",
    "check_rules",
    "compile_term",
    "format_explanations",
    "highlight_spans",
    "normalize",
    "parse_query",
    "tokenize",
]
