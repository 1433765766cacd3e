"""The boolean `query` of a watchlist (spec/matching.md §4): parsing and evaluation.

Syntax, as Google Alerts users know it: ``"quoted phrase"``, ``OR``, ``AND`` (also implied
between adjacent operands), ``NOT`` or a leading ``-``, parentheses; precedence NOT > AND > OR.
Only upper-case ``AND``/``OR``/``NOT`` outside quotes are operators. ``-`` is an operator only at
the start of an operand with no space after it; inside a word (``al-Assad``) it separates tokens.

Grammar::

    query   := or_expr
    or_expr := and_expr ("OR" and_expr)*
    and_expr:= not_expr (["AND"] not_expr)*
    not_expr:= ("NOT" | "-") not_expr | primary
    primary := "(" or_expr ")" | operand
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from typing import Final

from aggregator.matching.terms import TermError, compile_term

# Opening quote -> closing quote. Arabic keyboards type « » and word processors “ ”; an editor
# pasting a query expects those to quote a phrase too.
_QUOTES: Final = {'"': '"', "“": "”", "«": "»", "”": "”"}
_OPERATORS: Final = ("AND", "OR", "NOT")
_WORD_END: Final = frozenset('()"“”«»')
# Levels of parentheses and NOTs a query may nest: far beyond what a person writes, far below
# what would exhaust Python's recursion limit here and in every walk over the tree.
MAX_NESTING: Final = 50


class QueryError(ValueError):
    """Raised when a query does not parse; ``position`` is the 0-based character index."""

    def __init__(self, message: str, position: int, query: str) -> None:
        self.message = message
        self.position = position
        self.query = query
        super().__init__(describe_position(message, position, query))


def describe_position(message: str, position: int, query: str) -> str:
    """``message at position N`` (1-based) with the query and a caret line under that character."""
    shown = "".join(" " if ch in "\n\r\t" else ch for ch in query)
    return f"{message} at position {position + 1}\n  {shown}\n  {' ' * position}^"


@dataclass(frozen=True, slots=True)
class Leaf:
    """An operand: one term (word, phrase, `=`/`#`/`*` term) as written, and where it starts."""

    term: str
    position: int


@dataclass(frozen=True, slots=True)
class Not:
    """``NOT x`` or ``-x``."""

    child: Node
    position: int


@dataclass(frozen=True, slots=True)
class And:
    """Every child must hold."""

    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """At least one child must hold."""

    children: tuple[Node, ...]


Node = Leaf | Not | And | Or


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "(", ")", "AND", "OR", "NOT", "-", "TERM"
    text: str
    position: int


def _lex(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    length = len(query)
    while index < length:
        ch = query[index]
        if ch.isspace():
            index += 1
        elif ch in "()":
            tokens.append(_Token(ch, ch, index))
            index += 1
        elif ch == "-":  # at the start of an operand: inside a word the word branch eats it
            following = query[index + 1] if index + 1 < length else ""
            if not following or following.isspace() or following == ")":
                raise QueryError("'-' must be directly followed by a term or '('", index, query)
            tokens.append(_Token("-", ch, index))
            index += 1
        elif ch in _QUOTES or (ch == "=" and query[index + 1 : index + 2] in _QUOTES):
            exact = ch == "="
            opening = index + 1 if exact else index
            closing = query.find(_QUOTES[query[opening]], opening + 1)
            if closing < 0:
                raise QueryError("unterminated quote", opening, query)
            inner = query[opening + 1 : closing]
            if not inner.strip():
                raise QueryError("empty quotes", opening, query)
            tokens.append(_Token("TERM", ("=" if exact else "") + inner, index))
            index = closing + 1
        else:
            end = index
            while end < length and not query[end].isspace() and query[end] not in _WORD_END:
                end += 1
            if end == index:  # a closing quote with no opening one before it
                raise QueryError(f"{ch!r} closes a quote that was never opened", index, query)
            word = query[index:end]
            kind = word if word in _OPERATORS else "TERM"
            tokens.append(_Token(kind, word, index))
            index = end
    return tokens


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.tokens = _lex(query)
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def fail(self, message: str, token: _Token | None) -> QueryError:
        position = token.position if token is not None else len(self.query.rstrip())
        return QueryError(message, position, self.query)

    def parse(self) -> Node:
        if not self.tokens:
            raise QueryError("the query is empty", 0, self.query)
        node = self.or_expr()
        token = self.peek()
        if token is not None:
            raise self.fail(f"unexpected {_show(token)}", token)
        return node

    def or_expr(self) -> Node:
        children = [self.and_expr()]
        while (token := self.peek()) is not None and token.kind == "OR":
            self.index += 1
            children.append(self.and_expr())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_expr(self) -> Node:
        children = [self.not_expr()]
        while (token := self.peek()) is not None and token.kind in ("AND", "NOT", "-", "(", "TERM"):
            if token.kind == "AND":
                self.index += 1
            children.append(self.not_expr())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_expr(self) -> Node:
        token = self.peek()
        if token is not None and token.kind in ("NOT", "-"):
            self.index += 1
            with self.nested(token):
                return Not(self.not_expr(), token.position)
        return self.primary()

    @contextlib.contextmanager
    def nested(self, token: _Token) -> Iterator[None]:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.fail(f"nested too deeply (over {MAX_NESTING} levels of '(' and NOT)", token)
        try:
            yield
        finally:
            self.depth -= 1

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.fail("the query ends where a term or '(' was expected", None)
        if token.kind == "TERM":
            self.index += 1
            try:
                compile_term(token.text)
            except TermError as error:
                raise QueryError(
                    f"term {token.text!r}: {error.message}", token.position, self.query
                ) from None
            return Leaf(token.text, token.position)
        if token.kind == "(":
            self.index += 1
            with self.nested(token):
                node = self.or_expr()
            closing = self.peek()
            if closing is None or closing.kind != ")":
                raise self.fail("missing ')' to close this '('", token)
            self.index += 1
            return node
        raise self.fail(f"expected a term or '(' but found {_show(token)}", token)


def _show(token: _Token) -> str:
    return f"'{token.text}'" if token.kind != "TERM" else f"term {token.text!r}"


def parse_query(query: str) -> Node:
    """Parse a query; raises QueryError naming the problem and its character position."""
    return _Parser(query).parse()


def leaves(node: Node, negated: bool = False) -> Iterator[tuple[Leaf, bool]]:
    """Every operand with its polarity (True when it sits under an odd number of NOTs)."""
    if isinstance(node, Leaf):
        yield node, negated
    elif isinstance(node, Not):
        yield from leaves(node.child, not negated)
    else:
        for child in node.children:
            yield from leaves(child, negated)


def evaluate(node: Node, present: Callable[[str], bool]) -> bool:
    """Whether the query holds, given which terms (as written) are present."""
    if isinstance(node, Leaf):
        return present(node.term)
    if isinstance(node, Not):
        return not evaluate(node.child, present)
    if isinstance(node, And):
        return all(evaluate(child, present) for child in node.children)
    return any(evaluate(child, present) for child in node.children)


def unmet(node: Node, present: Callable[[str], bool]) -> Iterator[str]:
    """The positive operands whose absence keeps a false query false, as written: under an
    AND only those of its false parts, under an OR those of every part (any one would do).
    Nothing under a NOT: what keeps a NOT false is a term that is there."""
    if evaluate(node, present):
        return
    if isinstance(node, Leaf):
        yield node.term
    elif isinstance(node, And | Or):
        for child in node.children:
            yield from unmet(child, present)


Predicate = Callable[[Set[int]], bool]


def compile_query(node: Node, term_id: Callable[[str], int]) -> Predicate:
    """The query as a function of the set of term ids present (fast: set operations)."""
    if isinstance(node, Leaf):
        wanted = term_id(node.term)
        return lambda present: wanted in present
    if isinstance(node, Not):
        inner = compile_query(node.child, term_id)
        return lambda present: not inner(present)
    if all(isinstance(child, Leaf) for child in node.children):
        ids = frozenset(term_id(child.term) for child in node.children if isinstance(child, Leaf))
        if isinstance(node, And):
            return lambda present: ids <= present
        return lambda present: not ids.isdisjoint(present)
    parts = [compile_query(child, term_id) for child in node.children]
    if isinstance(node, And):
        return lambda present: all(part(present) for part in parts)
    return lambda present: any(part(present) for part in parts)


Witnesses = Callable[[Set[int]], Set[int]]


def compile_witnesses(node: Node, term_id: Callable[[str], int]) -> Witnesses:
    """The ids of the positive operands present in the parts of a true query that make it
    true, as a function of the set of term ids present."""
    if isinstance(node, Leaf):
        wanted = term_id(node.term)
        alone = frozenset((wanted,))
        return lambda present: alone if wanted in present else frozenset()
    if isinstance(node, Not):
        return lambda present: frozenset()
    if all(isinstance(child, Leaf) for child in node.children):
        ids = frozenset(term_id(child.term) for child in node.children if isinstance(child, Leaf))
        return lambda present: ids & present
    parts = [
        (compile_query(child, term_id), compile_witnesses(child, term_id))
        for child in node.children
    ]
    return lambda present: frozenset().union(
        *(found(present) for holds, found in parts if holds(present))
    )
