"""Property tests (hypothesis) for the invariants of spec/matching.md.

- normalization is idempotent;
- inserting tashkeel, tatweel or bidi/format controls into a text never changes which watchlists
  match (§1.3 deletes them, and they never split a token or hide a sentence end);
- every valid term matches a text that is exactly that term;
- a `none` term always vetoes.
"""

# Arabic letters and typographic quotes are the subject here, not look-alikes of ASCII ones.
# ruff: noqa: RUF001

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aggregator.matching import Matcher, WatchlistRules, check_rules, normalize
from aggregator.matching.tokens import CHUNK_SEPARATOR, CHUNK_TOKENS, TOKEN_RE

SETTINGS = settings(max_examples=200, deadline=None)

TASHKEEL = [chr(cp) for cp in range(0x064B, 0x0653)] + ["\u0670"]
TATWEEL = ["\u0640"]
CONTROLS = [
    "\u00ad",
    "\u200c",
    "\u200d",
    "\u200e",
    "\u200f",
    "\u061c",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2060",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\ufeff",
]
INSERTABLE = TASHKEEL + TATWEEL + CONTROLS

ARABIC_LETTERS = "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأإةىؤئ"
# Arabic-heavy text with the characters every rule touches.
ALPHABET = (
    ARABIC_LETTERS
    + "abcXYZ019٠٩ۍکیﻻﷺ \n.!?؟…،«»\"'’#_-*=()"
    + "".join(INSERTABLE)
    + "\xa0\u200b＃İıøæßŁ"
)


@SETTINGS
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_normalization_is_idempotent_on_arabic_text(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


@SETTINGS
@given(st.text(max_size=40))
def test_normalization_is_idempotent_on_any_text(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


# A config that exercises every rule: chain, ال-words, 3-letter words, phrases, names, `*`,
# `=`, capitals, acronyms, possessives, hashtags, none terms and a query.
WATCHLISTS = [
    WatchlistRules(name="syria", any=("#سوريا", "#التدخل_الروسي"), none=("كرة القدم",)),
    WatchlistRules(name="state", any=("الدولة الإسلامية", "اللجنة")),
    WatchlistRules(name="short", any=("صور", "=قطر", "إب")),
    WatchlistRules(name="names", any=("عبد الله", "أبو ظبي")),
    WatchlistRules(name="star", any=("سوري*", "Syria*")),
    WatchlistRules(name="caps", any=("US", "NATO", "WHO")),
    WatchlistRules(name="acronym", any=("US troops",)),
    WatchlistRules(name="possessive", any=("Assad's forces", "Carter")),
    WatchlistRules(name="phrase-en", any=("Beirut port", "F-16")),
    WatchlistRules(name="query", query='(دمشق OR Damascus) -"حزب الله"'),
    WatchlistRules(name="digits", any=("غزة 2023", "القرار 2254")),
]
MATCHER = Matcher(WATCHLISTS)

PIECES = [
    "سوريا",
    "وبسوريا",
    "#سوريا",
    "#التدخل_الروسي",
    "التدخل الروسي",
    "كرة القدم",
    "لكرة",
    "القدم",
    "للدولة الاسلامية",
    "الدولة",
    "الإسلامية",
    "للجنة",
    "بصور",
    "بالصور",
    "قطر",
    "وقطر",
    "إب",
    "عبدالله",
    "عبد",
    "الله",
    "أبوظبي",
    "والسوريين",
    "Syrians",
    "U.S.",
    "US",
    "us",
    "Nato",
    "WHO",
    "who",
    "Assad's",
    "forces",
    "Carter’s",
    "Beirut",
    "port",
    "F16",
    "دمشق",
    "حزب",
    "#غزة2023",
    "القرار ٢٢٥٤",
    "أكّد",
    "عسكرياً",
    "3.5",
    # Whole phrases, so that every example is likely to hold a rule that spans tokens.
    "Assad's forces",
    "Beirut port",
    "Beirut. Port",
    "U.S. troops",
    "الدولة. الإسلامية",
    "كرة القدم",
]
SEPARATORS = [" ", " ", " ", ". ", "، ", "\n", ": ", " «", "» ", "_", "#", "! ", "؟ "]


@st.composite
def texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=12))
    joins = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(words), max_size=len(words)))
    return "".join(word + join for word, join in zip(words, joins, strict=True))


def fired(text: str) -> list[str]:
    return [m.watchlist for m in MATCHER.match({"title": text, "summary": text[::-1]})]


@SETTINGS
@given(
    texts(), st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(INSERTABLE)), max_size=8)
)
def test_inserted_marks_and_controls_change_nothing(
    text: str, insertions: list[tuple[int, str]]
) -> None:
    changed = text
    for position, char in insertions:
        at = position % (len(changed) + 1)
        changed = changed[:at] + char + changed[at:]
    assert fired(changed) == fired(text)


@st.composite
def terms(draw: st.DrawFn) -> str:
    def word() -> str:
        kind = draw(st.sampled_from(["arabic", "arabic", "latin", "digits"]))
        if kind == "arabic":
            return draw(st.text(alphabet=ARABIC_LETTERS, min_size=1, max_size=7))
        if kind == "latin":
            return draw(st.text(alphabet="abcdefXYZ", min_size=1, max_size=7))
        return draw(st.text(alphabet="0123456789٠١٢", min_size=1, max_size=4))

    words = [word() for _ in range(draw(st.integers(1, 3)))]
    term = draw(st.sampled_from([" ", "_"])).join(words)
    if draw(st.booleans()):
        term = "#" + term
    prefix = draw(st.sampled_from(["", "", "="]))
    star = draw(st.sampled_from(["", "", "*"])) if not prefix else ""
    return prefix + term + star


def _valid(term: str) -> bool:
    return not check_rules(WatchlistRules(name="w", any=(term,)))[0]


@SETTINGS
@given(terms())
def test_every_term_matches_a_text_that_is_exactly_that_term(term: str) -> None:
    assume(_valid(term))
    matcher = Matcher([WatchlistRules(name="w", any=(term,))])
    assert matcher.match({"title": term}), term


@SETTINGS
@given(terms(), terms(), st.booleans())
def test_a_none_term_always_vetoes(wanted: str, unwanted: str, unwanted_first: bool) -> None:
    assume(_valid(wanted) and _valid(unwanted))
    matcher = Matcher([WatchlistRules(name="w", any=(wanted,), none=(unwanted,))])
    text = f"{unwanted} {wanted}" if unwanted_first else f"{wanted} {unwanted}"
    assert not matcher.match({"title": text})
    assert not matcher.match({"title": wanted, "content": unwanted})


@SETTINGS
@given(texts(), st.lists(st.sampled_from(INSERTABLE), min_size=1, max_size=5))
def test_marks_and_controls_between_every_two_characters_change_nothing(
    text: str, inserted: list[str]
) -> None:
    # Every boundary at once: inside words, around sentence ends, acronym dots, possessives.
    changed = "".join(char + inserted[index % len(inserted)] for index, char in enumerate(text))
    assert fired(changed) == fired(text)


def _whole_text_tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(), *m.span()) for m in TOKEN_RE.finditer(text)]


def _chunked_tokens(text: str) -> list[tuple[str, int, int]]:
    found: list[tuple[str, int, int]] = []
    offset = 0
    for chunk in text.split(CHUNK_SEPARATOR):
        found += [(raw, offset + start, offset + end) for raw, start, end in CHUNK_TOKENS[chunk]]
        offset += len(chunk) + len(CHUNK_SEPARATOR)
    return found


@SETTINGS
@given(st.text(alphabet=ALPHABET + "U.S.A. e.g. Carter's ٣٫٥ 3.5 ...", max_size=120))
def test_chunks_tokenize_like_the_whole_text(text: str) -> None:
    # The matcher tokenizes space-separated chunks and caches them; that is sound only if it
    # finds exactly the tokens, at exactly the offsets, of the pattern run over the whole text.
    assert _chunked_tokens(text) == _whole_text_tokens(text)


@SETTINGS
@given(st.text(max_size=80))
def test_chunks_tokenize_like_the_whole_text_on_any_text(text: str) -> None:
    assert _chunked_tokens(text) == _whole_text_tokens(text)
