"""Character normalization of spec/matching.md §1, shared by terms and item text.

Everything here works on characters; splitting into tokens is ``tokens.py``. The matcher never
normalizes a whole item: it normalizes each distinct token once (``fold``) and caches the result,
so the per-character tables below are built once, at import.
"""

# Arabic letters and typographic quotes are the subject here, not look-alikes of ASCII ones.
# ruff: noqa: RUF001

from __future__ import annotations

import unicodedata

# §1.3: letter variants that the admin and the writer use interchangeably.
_ARABIC_LETTERS = {
    "أ": "ا",
    "إ": "ا",
    "آ": "ا",
    "ٱ": "ا",
    "ٲ": "ا",
    "ٳ": "ا",
    "ى": "ي",
    "ة": "ه",
    "ۃ": "ه",
    "ؤ": "ء",
    "ئ": "ء",
    "ک": "ك",
    "ڪ": "ك",
    "ی": "ي",
    "ے": "ي",
    "ې": "ي",
    "ۍ": "ي",
    "ہ": "ه",
    "ۀ": "ه",
    "ھ": "ه",
    "ە": "ه",
}

# §1.4: Latin letters without a canonical decomposition, folded by hand.
_LATIN_LETTERS = {
    "ı": "i",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
}


def _chars(*ranges: tuple[int, int]) -> str:
    return "".join(chr(cp) for low, high in ranges for cp in range(low, high + 1))


# Marks deleted by §1.3 (harakat, tanween, shadda, sukun, dagger alef, Quranic marks) plus the
# generic combining diacritics, which §1.4 folds away from Latin letters. They belong to the word
# they sit on: a token's span includes a trailing mark.
DELETED_MARKS = _chars(
    (0x064B, 0x065F),
    (0x0670, 0x0670),
    (0x0610, 0x061A),
    (0x06D6, 0x06ED),
    (0x0300, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x20D0, 0x20FF),
    (0xFE20, 0xFE2F),
)
# Tatweel and the format/bidi controls of §1.3: deleted, so they join what is around them, but a
# token's span never starts or ends on one.
DELETED_CONTROLS = _chars(
    (0x0640, 0x0640),
    (0x00AD, 0x00AD),
    (0x200C, 0x200F),
    (0x061C, 0x061C),
    (0x202A, 0x202E),
    (0x2060, 0x2060),
    (0x2066, 0x2069),
    (0xFEFF, 0xFEFF),
)
# Characters that §1.3 turns into a word separator.
SEPARATORS = "_#\u200b"


def _build_table() -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for ch in DELETED_MARKS + DELETED_CONTROLS:
        table[ord(ch)] = None
    for ch in SEPARATORS:
        table[ord(ch)] = " "
    for src, dst in _ARABIC_LETTERS.items():
        table[ord(src)] = dst
    for cp in [*range(0x0660, 0x066A), *range(0x06F0, 0x06FA)]:
        table[cp] = str(unicodedata.decimal(chr(cp)))
    # Latin letters with a decomposition lose their accents (Erdoğan = Erdogan); case is kept
    # here because §3.4 needs it, and removed later by casefold.
    for low, high in ((0x00C0, 0x024F), (0x1E00, 0x1EFF)):
        for cp in range(low, high + 1):
            base = "".join(
                c for c in unicodedata.normalize("NFD", chr(cp)) if not unicodedata.combining(c)
            )
            if base and base != chr(cp):
                table[cp] = base
    for src, dst in _LATIN_LETTERS.items():
        table[ord(src)] = dst
    return table


_TABLE = _build_table()


def nfkc_chunks(text: str) -> list[tuple[int, int, str]]:
    """Split text into (start, end, NFKC form) chunks: a starter and the marks that follow it.

    Normalizing chunk by chunk gives the same result as normalizing the whole text (composition
    only happens inside such a chunk) and tells, for every output character, which input
    characters it came from.
    """
    chunks: list[tuple[int, int, str]] = []
    start = 0
    for index in range(1, len(text) + 1):
        if index == len(text) or not unicodedata.combining(text[index]):
            piece = text[start:index]
            chunks.append((start, index, unicodedata.normalize("NFKC", piece)))
            start = index
    return chunks


def nfkc(text: str) -> str:
    """NFKC (§1.1), computed chunk by chunk exactly as the matcher does it."""
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    return "".join(piece for _, _, piece in nfkc_chunks(text))


def fold_keep_case(text: str) -> str:
    """§1.3 and §1.4 without the case fold: the form whose capitals §3.4 looks at."""
    return text.translate(_TABLE)


def fold(text: str) -> str:
    """§1.2-§1.4 on text that is already NFKC: the character table, accents, then case fold."""
    folded = text.translate(_TABLE).casefold()
    if folded.isascii():
        return folded
    # casefold can produce decomposed or compatibility characters (İ gives i + U+0307); run the
    # tables again until nothing changes, so that folding is idempotent.
    while True:
        again = nfkc(folded).translate(_TABLE).casefold()
        if again == folded:
            return folded
        folded = again


def normalize(text: str) -> str:
    """The full normalization of spec §1 on a text: NFKC, case fold, character table, accents."""
    return fold(nfkc(text))
