"""Compiling one watchlist term (spec/matching.md §3) into the forms the matcher looks up.

A term becomes one or more *variants* (names written joined or apart give several), each a
sequence of words. The first word of a variant is expanded here, once, into every exact token it
may match (the Arabic prefix chain of §3.2), so that matching an item is a dictionary lookup per
token; later words of a phrase match one token each, exactly (or by prefix for a trailing ``*``).
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from aggregator.matching.normalize import DELETED_CONTROLS, DELETED_MARKS
from aggregator.matching.tokens import TITLE, TOKEN_RE, UPPER, prepare, token_info

# Case requirement of a term word (§3.4).
ANY_CASE: Final = 0
CAPITALS: Final = 1  # 2-3 capitals in the term: tokens in capitals only
CAPITALS_OR_TITLE: Final = 2  # 4+ capitals: tokens in capitals or with a capital initial

# §3.2 prefix chain: optional و/ف, then optional ب/ك/ل, then optional ال (ل + ال is written لل).
_CONJUNCTIONS: Final = ("", "و", "ف")
_PREPOSITIONS: Final = ("", "ب", "ك", "ل")
CHAIN_WITHOUT_AL: Final = tuple(c + p for c in _CONJUNCTIONS for p in _PREPOSITIONS)
CHAIN: Final = CHAIN_WITHOUT_AL + tuple(
    c + ("لل" if p == "ل" else p + "ال") for c in _CONJUNCTIONS for p in _PREPOSITIONS
)
# §3.2 names written joined or apart, after normalization (أبو is ابو).
NAME_WORDS: Final = ("عبد", "ابو", "ابن", "بن")
_MAX_VARIANTS: Final = 32
_ARABIC_RANGE: Final = ("\u0600", "\u08ff")
_DELETED = str.maketrans(dict.fromkeys(DELETED_MARKS + DELETED_CONTROLS, None))
_OPERATOR_FORMS: Final = {
    cp: unicodedata.normalize("NFKC", chr(cp))
    for cp in range(0x10000)
    if chr(cp) not in "=*" and unicodedata.normalize("NFKC", chr(cp)) in ("=", "*")
}
_BLANK: Final = string.whitespace + "\xa0\u200b" + DELETED_CONTROLS


class TermError(ValueError):
    """Raised when a term cannot be used; ``message`` says why, ``offset`` where (0-based)."""

    def __init__(self, message: str, offset: int = 0) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a term after normalization."""

    key: str
    case: int  # ANY_CASE, CAPITALS or CAPITALS_OR_TITLE
    arabic: bool
    article: bool  # written with the article ال (not a hamza alef such as ألمانيا)
    star: bool  # prefix match (trailing `*`)


# A later word of a phrase: (key, prefix match?, case requirement).
LaterWord = tuple[str, bool, int]


@dataclass(frozen=True, slots=True)
class Variant:
    """One way a term can appear: the first token's forms and the words that must follow."""

    forms: frozenset[str]  # exact keys the first token may have (prefix chain included)
    stems: tuple[tuple[str, frozenset[str]], ...]  # first word with `*`: (stem, prefixes allowed)
    first_case: int
    later: tuple[LaterWord, ...]


@dataclass(frozen=True, slots=True)
class Term:
    """A compiled term: the text as the admin wrote it and every variant it matches as."""

    text: str
    words: tuple[Word, ...]
    exact: bool
    variants: tuple[Variant, ...]


def case_allows(required: int, case: int) -> bool:
    """Whether a token of case class ``case`` satisfies a term word's case requirement."""
    if required == ANY_CASE:
        return True
    if required == CAPITALS:
        return case == UPPER
    return case in (UPPER, TITLE)


def _is_arabic(key: str) -> bool:
    return _ARABIC_RANGE[0] <= key[0] <= _ARABIC_RANGE[1]


def _words(body: str, offset: int, star: bool) -> list[Word]:
    """Tokenize a term exactly like text (§2) and turn its tokens into words."""
    prepared = prepare(body)
    found: list[tuple[str, int, int, int, str]] = []  # key, case, letters, end, raw
    sentence_end_at: int | None = None
    for match in TOKEN_RE.finditer(prepared.text):
        key, case, letters = token_info(match.group())
        start, end = prepared.span(*match.span())
        if not key:  # a sentence end
            sentence_end_at = start
            continue
        if sentence_end_at is not None and found:
            raise TermError(
                "contains a sentence end, and a phrase never matches across one; "
                "write its parts as separate terms",
                offset + sentence_end_at,
            )
        sentence_end_at = None
        found.append((key, case, letters, end, match.group()))
    if not found:
        raise TermError("normalizes to nothing: it has no letters or digits", offset)
    if star:
        last_key, _, _, last_end, _ = found[-1]
        if body[last_end:].translate(_DELETED):  # only invisible controls may sit between
            raise TermError("`*` must directly follow a word", offset + len(body))
        letters = sum(1 for ch in last_key if ch.isalpha())
        if letters < 3:
            raise TermError(
                f"`*` needs at least 3 letters before it (found {letters})", offset + len(body)
            )
    words = []
    for index, (key, case, letters, _, raw) in enumerate(found):
        required = ANY_CASE
        if case == UPPER and letters >= 2:
            required = CAPITALS if letters <= 3 else CAPITALS_OR_TITLE
        bare = raw.translate(_DELETED)
        words.append(
            Word(
                key=key,
                case=required,
                arabic=_is_arabic(key),
                article=bare.startswith(("ال", "ٱل")),
                star=star and index == len(found) - 1,
            )
        )
    return words


def _name_variants(words: list[Word]) -> list[tuple[Word, ...]]:
    """Every way of writing the term's names joined or apart (§3.2), the term itself first."""
    results: list[tuple[Word, ...]] = []

    def build(index: int, done: tuple[Word, ...]) -> None:
        if len(results) >= _MAX_VARIANTS:
            return
        if index == len(words):
            results.append(done)
            return
        word = words[index]
        build(index + 1, (*done, word))
        if not word.arabic:
            return
        following = words[index + 1] if index + 1 < len(words) else None
        if word.key in NAME_WORDS and following is not None and following.arabic:
            joined = Word(word.key + following.key, ANY_CASE, True, False, following.star)
            build(index + 2, (*done, joined))
        for name in NAME_WORDS:
            if word.key.startswith(name) and len(word.key) - len(name) >= 3:
                rest = word.key[len(name) :]
                first = Word(name, ANY_CASE, True, False, False)
                # A `*` stays on the end of the word: عبدالله* is عبد then الله*.
                second = Word(rest, ANY_CASE, True, rest.startswith("ال"), word.star)
                build(index + 1, (*done, first, second))
                break

    build(0, ())
    return results


def _first_word_prefixes(word: Word, word_count: int, exact: bool) -> tuple[str, ...]:
    if exact or not word.arabic:
        return ("",)
    if word_count == 1 and not word.star:
        if len(word.key) <= 2:
            return ("",)  # §3.2: a one-word term of 1-2 letters matches exactly
        if len(word.key) == 3:
            return CHAIN_WITHOUT_AL  # §3.2: a one-word 3-letter term takes no ال
    return CHAIN


def _article_forms(word: Word) -> tuple[str, tuple[str, ...]] | None:
    """§3.2: an ال-word also takes لل in place of its ال (ل when the next letter is ل)."""
    if not (word.arabic and word.article and word.key.startswith("ال") and len(word.key) > 2):
        return None
    rest = word.key[2:]
    lam = "ل" if rest.startswith("ل") else "لل"
    return rest, tuple(c + lam for c in _CONJUNCTIONS)


def _variant(words: tuple[Word, ...], exact: bool) -> Variant:
    first = words[0]
    prefixes = _first_word_prefixes(first, len(words), exact)
    article = None if exact else _article_forms(first)
    later = tuple((w.key, w.star, w.case) for w in words[1:])
    if first.star:
        stems: dict[str, set[str]] = {first.key: set(prefixes)}
        if article is not None:
            stems.setdefault(article[0], set()).update(article[1])
        frozen = tuple(sorted((stem, frozenset(p)) for stem, p in stems.items()))
        return Variant(frozenset(), frozen, first.case, later)
    forms = {p + first.key for p in prefixes}
    if article is not None:
        forms.update(p + article[0] for p in article[1])
    return Variant(frozenset(forms), (), first.case, later)


@lru_cache(maxsize=65536)
def compile_term(text: str) -> Term:
    """Compile a term as written in the config; raises TermError with a clear message."""
    # Invisible controls (RLM, ZWNJ, ...) around a term come with copy and paste: ignore them.
    # Full-width and other compatibility forms of = and * (U+FF1D, U+FF0A) mean them (NFKC).
    body = text.translate(_OPERATOR_FORMS).strip(_BLANK)
    offset = len(text) - len(text.lstrip(_BLANK))
    if not text.strip():
        raise TermError("empty term", 0)
    if not body:
        raise TermError("normalizes to nothing: it has no letters or digits", 0)
    exact = body.startswith("=")
    if exact:
        body = body[1:]
        offset += 1
        if not body.strip():
            raise TermError("empty term after `=`", offset)
    star_at = body.find("*")
    star = star_at >= 0
    if star:
        if exact:
            raise TermError("`*` cannot be combined with `=`", offset + star_at)
        if star_at != len(body) - 1:
            raise TermError(
                "`*` is only allowed at the end of a term, not inside a word or between words",
                offset + star_at,
            )
        body = body[:-1]
    words = _words(body, offset, star)
    variant_words = [tuple(words)] if exact else _name_variants(words)
    variants = tuple(dict.fromkeys(_variant(v, exact) for v in variant_words))
    return Term(text=text, words=tuple(words), exact=exact, variants=variants)
