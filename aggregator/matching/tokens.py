"""Tokens of spec/matching.md §2: words, dotted acronyms, possessives and sentence ends.

One regular expression finds every token of a text (run over the text itself or, when the text
is not in NFKC, over its NFKC form with a map back to the original: ``prepare``). The matcher
runs it once per distinct space-separated chunk and caches the answer (``CHUNK_TOKENS``).
The rest of §1 never changes where a token is, only what it means: characters that §1 deletes
are allowed inside a token, so ``أكّد``, ``الـسـعـوديـة`` and ``Damas\\u00adcus`` each stay one
token whose span indexes the original text. Each distinct raw token is then folded once and
cached (``token_info``).

A sentence end (§2) is itself returned as a one-character token whose key is ``""``; a phrase
can never match across it because its words must be adjacent in the token list.
"""

# Arabic letters and typographic quotes are the subject here, not look-alikes of ASCII ones.
# ruff: noqa: RUF003

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final

from aggregator.matching.normalize import (
    DELETED_CONTROLS,
    DELETED_MARKS,
    fold,
    fold_keep_case,
    nfkc_chunks,
)

# Case classes of a token (§3.4).
OTHER: Final = 0  # no capitals rule applies (lower case, mixed case, no case at all)
UPPER: Final = 1  # every cased letter is a capital
TITLE: Final = 2  # a capital initial and the rest lower case

SENTENCE_END_CHARS: Final = ".!?\u061f\u06d4\u2026"
LINE_BREAKS: Final = "\n\r\u2028\u2029\x0b\x0c\x85"


def _ranges(chars: list[str]) -> str:
    """A regex character-class body for a sorted list of characters."""
    out: list[str] = []
    index = 0
    while index < len(chars):
        low = high = ord(chars[index])
        while index + 1 < len(chars) and ord(chars[index + 1]) == high + 1:
            index += 1
            high += 1
        out.append(
            re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        )
        index += 1
    return "".join(out)


def _letters(blocks: tuple[tuple[int, int], ...], script: str) -> str:
    chars = []
    for low, high in blocks:
        for cp in range(low, high + 1):
            ch = chr(cp)
            if unicodedata.category(ch)[0] == "L" and unicodedata.name(ch, "").startswith(script):
                chars.append(ch)
    return _ranges(sorted(set(chars) - set(DELETED_CONTROLS + DELETED_MARKS)))


def _kept_marks() -> str:
    deleted = set(DELETED_MARKS)
    chars = [
        chr(cp)
        for cp in range(0x10000)
        if unicodedata.category(chr(cp))[0] == "M" and chr(cp) not in deleted
    ]
    return _ranges(chars)


_LATIN = _letters(
    ((0x41, 0x24F), (0x250, 0x2AF), (0x1D00, 0x1DBF), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F),
     (0xA720, 0xA7FF), (0xAB30, 0xAB6F)),
    "LATIN",
)  # fmt: skip
_ARABIC = _letters(
    ((0x600, 0x6FF), (0x750, 0x77F), (0x870, 0x89F), (0x8A0, 0x8FF)),
    "ARABIC",
)
_MARKS = _kept_marks()
_DM = _ranges(sorted(DELETED_MARKS))
_DC = _ranges(sorted(DELETED_CONTROLS))
_DELETED = _DM + _DC
# A letter of any other script: a word character that is no digit, no `_`, not Latin, not Arabic
# and not deleted by §1 (a negated class subtracts, which Python's re cannot do otherwise).
_OTHER = rf"[^\W\d_{_LATIN}{_ARABIC}{_DELETED}]"
# Any letter, and any letter or digit, that §1 does not delete (tatweel is a word character).
_LETTER = rf"[^\W\d_{_DELETED}]"
_ALNUM = rf"[^\W_{_DELETED}]"
_ACRONYM = rf"[{_DELETED}]*\.(?:[{_DELETED}]*{_LETTER}[{_DELETED}]*\.)*"
_POSSESSIVE = rf"(?:[{_DELETED}]*['\u2019][{_DELETED}]*[sS](?![{_DELETED}]*{_ALNUM}))?"


def _rest(letters: str) -> str:
    # The rest of a word after its first letter: letters, marks and deleted characters, ending
    # on a letter or a mark (a deleted control such as RLM or tatweel is never a word's edge).
    return rf"[{letters}{_MARKS}{_DELETED}]*(?<![{_DC}])"


# One character class opens every token, so that the regex engine skips separators in C; a
# lookbehind on that first character then picks the script. Order matters only for the first
# letter of an acronym (U.S.), which must not be read as a one-letter word.
_TOKEN_PATTERN = (
    rf"[\w{re.escape(SENTENCE_END_CHARS)}{re.escape(LINE_BREAKS)}]"
    rf"(?:(?<=[{_LATIN}])(?:{_ACRONYM}{_POSSESSIVE}|{_rest(_LATIN)}{_POSSESSIVE})"
    rf"|(?<=[{_ARABIC}])(?:{_ACRONYM}|{_rest(_ARABIC)})"
    rf"|(?<=\d){_rest(chr(92) + 'd')}"
    rf"|(?<={_OTHER})(?:{_ACRONYM}|(?:{_OTHER}|[{_MARKS}{_DELETED}])*(?<![{_DC}]))"
    # A sentence end: . ! ? ؟ ۔ … followed by a space or the end of the field, or a line break.
    rf"|(?<=[{re.escape(SENTENCE_END_CHARS)}])(?=[{_DELETED}]*(?:[\s\u200b]|\Z))"
    rf"|(?<=[{re.escape(LINE_BREAKS)}]))"
)
TOKEN_RE: Final = re.compile(_TOKEN_PATTERN)

# Where the text may be cut into chunks that tokenize on their own (``CHUNK_TOKENS``): no token
# contains a space, and no part of the pattern looks across one (a sentence end's lookahead
# sees a space or the end of the text alike, and so does the possessive's). So the tokens of a
# text are those of its space-separated chunks, in order; tests/test_matching_props.py checks
# that against the whole-text pattern on generated texts.
CHUNK_SEPARATOR: Final = " "

_STRIP_FOR_KEY = str.maketrans(dict.fromkeys(DELETED_MARKS + DELETED_CONTROLS + ".", None))
# Common characters that NFKC changes but whose change no token can see: spaces (NFKC makes them
# " "), the ellipsis (NFKC makes it "...", a sentence end exactly where "…" is one; ۔ is one too
# and is never part of an acronym) and the non-breaking hyphen. Replacing them one for one keeps
# offsets, so most texts need no offset map.
_NFKC_SPACES = "\xa0\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_HARMLESS = str.maketrans({**dict.fromkeys(_NFKC_SPACES, " "), "\u2026": "\u06d4", "\u2011": "-"})

# raw token -> (key, case class, number of cased letters). A sentence end has the key "", which
# no term word ever equals or starts with.
TokenInfo = tuple[str, int, int]
SENTENCE_END_KEY: Final = ""
_INFO: dict[str, TokenInfo] = {}
# raw token -> key alone, for fast bulk lookups (``list(map(KEYS.get, raws))``).
KEYS: dict[str, str] = {}
_CACHE_LIMIT: Final = 500_000
_SENTENCE_INFO: Final[TokenInfo] = (SENTENCE_END_KEY, OTHER, 0)


def _compute_info(raw: str) -> TokenInfo:
    if len(raw) == 1 and (raw in SENTENCE_END_CHARS or raw in LINE_BREAKS):
        return _SENTENCE_INFO
    for apostrophe in "'\u2019":
        cut = raw.find(apostrophe)
        if cut > 0:  # only the possessive branch lets an apostrophe into a token
            raw = raw[:cut]
    bare = raw.translate(_STRIP_FOR_KEY)
    cased = fold_keep_case(bare)
    letters = sum(1 for ch in cased if ch.isupper() or ch.islower())
    if cased.isupper():
        case = UPPER
    elif cased[:1].isupper() and cased[1:].islower():
        case = TITLE
    else:
        case = OTHER
    key = fold(bare)
    if not key.isascii() and any(ch.isdigit() for ch in key):
        key = "".join(str(unicodedata.decimal(ch, ch)) if ch.isdigit() else ch for ch in key)
    # Never "" (that is a sentence end), even for a token that folds to nothing.
    return (key or raw, case, letters)


# A token of a chunk: (raw token, start, end), offsets within the chunk.
ChunkToken = tuple[str, int, int]


class _ChunkTokens(dict[str, tuple[ChunkToken, ...]]):
    """The tokens of each distinct space-separated chunk, found on first sight.

    News text repeats its words, so most chunks of a field are found here: a dictionary
    lookup per word instead of running the token pattern over every character again.
    """

    def __missing__(self, chunk: str) -> tuple[ChunkToken, ...]:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        found = self[chunk] = tuple(
            (match.group(), *match.span()) for match in TOKEN_RE.finditer(chunk)
        )
        return found


CHUNK_TOKENS: Final = _ChunkTokens()


def clear_cache() -> None:
    """Forget every cached token (benchmarks use it to measure a cold start)."""
    _INFO.clear()
    KEYS.clear()
    CHUNK_TOKENS.clear()


def token_info(raw: str) -> TokenInfo:
    """Key (normalized form), case class and cased-letter count of a raw token, cached."""
    info = _INFO.get(raw)
    if info is None:
        if len(_INFO) >= _CACHE_LIMIT:
            clear_cache()
        info = _INFO[raw] = _compute_info(raw)
        KEYS[raw] = info[0]
    return info


def keys_of(raws: list[str]) -> list[str]:
    """The keys of a list of raw tokens, in order."""
    keys = list(map(KEYS.get, raws))
    if None in keys:
        return [token_info(raw)[0] for raw in raws]
    return keys  # type: ignore[return-value]  # no None left


@dataclass(frozen=True, slots=True)
class Prepared:
    """A field's text made ready for the token pattern, with a map back to the original."""

    text: str  # NFKC text the pattern runs on (the original itself on the fast path)
    starts: list[int] | None  # original start offset of each character of ``text``, or None
    ends: list[int] | None  # original end offset of each character of ``text``, or None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Original offsets of ``text[start:end]``."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def prepare(text: str) -> Prepared:
    """NFKC the text (§1.1) when it needs it, keeping a map to original offsets."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return Prepared(text, None, None)
    spaced = text.translate(_HARMLESS)
    if unicodedata.is_normalized("NFKC", spaced):
        return Prepared(spaced, None, None)
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    done = 0
    for match in re.finditer(r"\S+", spaced):
        segment = match.group()
        if unicodedata.is_normalized("NFKC", segment):
            continue
        low, high = match.span()
        pieces.append(spaced[done:low])
        starts.extend(range(done, low))
        ends.extend(range(done + 1, low + 1))
        for start, end, piece in nfkc_chunks(segment):
            pieces.append(piece)
            starts.extend([low + start] * len(piece))
            ends.extend([low + end] * len(piece))
        done = high
    pieces.append(spaced[done:])
    starts.extend(range(done, len(spaced)))
    ends.extend(range(done + 1, len(spaced) + 1))
    return Prepared("".join(pieces), starts, ends)


@dataclass(frozen=True, slots=True)
class Token:
    """One word of a text: its normalized key and where it is in the original text."""

    key: str  # normalized form (spec §1), e.g. "us" for "U.S.", "carter" for "Carter's"
    start: int  # offset of its first character in the original text
    end: int  # offset one past its last character
    case: int  # OTHER, UPPER or TITLE (§3.4)
    sentence: int  # index of the sentence it is in; phrases never span two


def tokenize(text: str) -> list[Token]:
    """The tokens of a text, in order, as the matcher sees them (spec §2)."""
    prepared = prepare(text)
    tokens: list[Token] = []
    sentence = 0
    for match in TOKEN_RE.finditer(prepared.text):
        key, case, _ = token_info(match.group())
        if key == SENTENCE_END_KEY:
            sentence += 1
            continue
        start, end = prepared.span(*match.span())
        tokens.append(Token(key, start, end, case, sentence))
    return tokens
