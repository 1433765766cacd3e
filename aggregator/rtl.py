"""Right-to-left safety: where to put direction marks and isolates in one paragraph of text.

Telegram's apps give each paragraph the direction of its first strong character, as the Unicode
Bidirectional Algorithm does. An Arabic paragraph therefore displays right to left on its own,
but the pieces around a Latin word or a URL inside it (a trailing period, a number after the
word, parentheses, a leading `#`) get pulled to the wrong side. Wrapping each such run in an
isolate (FSI/LRI ... PDI) makes the run one neutral block for the paragraph, so that its
neighbours keep their logical order. The same holds the other way round for an Arabic run
inside an English paragraph.

Telegram decides a paragraph's direction from its first strong character, which is wrong for an
Arabic paragraph that opens with a Latin word ("CNN: قال مسؤول ..."); `paragraph_direction`
decides it from the paragraph's letters instead, and an RLM at the start makes Telegram agree.

A paragraph without any character of the other script gets no control at all, so English-only
text stays byte-for-byte as written.
"""

from __future__ import annotations

import re
import unicodedata

RLM = "\u200f"  # right-to-left mark: a strong R character of width zero
LRM = "\u200e"  # left-to-right mark: a strong L character of width zero
LRI = "\u2066"  # left-to-right isolate
FSI = "\u2068"  # first-strong isolate: the run takes the direction of its own first letter
PDI = "\u2069"  # pop directional isolate: closes LRI/RLI/FSI

# A URL ends at whitespace or at characters that never belong to one in running text; trailing
# sentence punctuation is trimmed off afterwards (see _url_spans).
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"«»]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\")]}،؛؟…"

# Characters a run may start with although they are not letters: hashtags and mentions.
_RUN_PREFIXES = "#@"
_BRACKETS = {"(": ")", "[": "]", "{": "}"}


def strong_direction(ch: str) -> str | None:
    """ "L" or "R" for a strong character (Arabic letters are "R"), None for anything else."""
    kind = unicodedata.bidirectional(ch)
    if kind == "L":
        return "L"
    if kind in ("R", "AL"):
        return "R"
    return None


def first_strong_direction(text: str) -> str | None:
    """The direction of the text's first strong character, or None when it has none."""
    for ch in text:
        found = strong_direction(ch)
        if found:
            return found
    return None


def paragraph_direction(text: str) -> str | None:
    """The direction a reader expects of the paragraph, or None when it has no letter.

    A paragraph that opens with an Arabic letter is right to left, however many Latin names it
    holds ("قال Antony Blinken إن Joe Biden ..."): counting letters there would turn it left to
    right. One that opens with a Latin letter is right to left when Arabic letters outnumber the
    Latin ones: Arabic headlines often open with a source, acronym or brand ("CNN: قال ...",
    "NATO يحذر ..."), while an English sentence that quotes an Arabic name stays mostly Latin.
    Letters inside URLs are not counted: a link says nothing of the language around it.
    """
    first = first_strong_direction(text)
    if first != "L":
        return first
    counts = {"L": 0, "R": 0}
    pos = 0
    # The empty span at the end counts the letters after the last URL.
    for url_start, url_end in [*_url_spans(text), (len(text), len(text))]:
        for ch in text[pos:url_start]:
            found = strong_direction(ch)
            if found:
                counts[found] += 1
        pos = url_end
    return "R" if counts["R"] > counts["L"] else "L"


def bidi_controls(line: str, direction: str | None = None) -> list[tuple[int, str]]:
    """Controls to insert into one paragraph (no newline in it), as (offset, control), sorted.

    `direction` ("L" or "R") overrides `paragraph_direction`, for a line whose language the
    caller knows (the alert's English labels). A right-to-left paragraph gets RLM at its start,
    each Latin run an FSI ... PDI pair and each URL an LRI ... PDI pair. A left-to-right
    paragraph gets FSI ... PDI around each Arabic run outside URLs, and LRM at its start only
    if its first letter is Arabic.
    """
    first = first_strong_direction(line)
    if first is None:
        return []
    direction = direction or paragraph_direction(line)
    other = "L" if direction == "R" else "R"
    controls: list[tuple[int, str]] = []
    # Telegram takes the direction from the first strong character: a mark of the right
    # direction at the start is one.
    if direction == "R":
        controls.append((0, RLM))
    elif first == "R":
        controls.append((0, LRM))
    lo = 0
    for url_start, url_end in _url_spans(line):
        controls.extend(_isolate_runs(line, lo, url_start, other))
        if direction == "R":
            # A URL reads left to right whatever letters its path holds.
            controls.extend([(url_start, LRI), (url_end, PDI)])
        lo = url_end
    controls.extend(_isolate_runs(line, lo, len(line), other))
    return controls


def apply_controls(text: str, controls: list[tuple[int, str]]) -> str:
    """The text with the controls from bidi_controls inserted."""
    parts: list[str] = []
    pos = 0
    for offset, control in controls:
        parts.append(text[pos:offset])
        parts.append(control)
        pos = offset
    parts.append(text[pos:])
    return "".join(parts)


def _url_spans(line: str) -> list[tuple[int, int]]:
    spans = []
    for found in _URL.finditer(line):
        end = found.end()
        while end > found.start() and line[end - 1] in _URL_TRAILING:
            # Keep a closing parenthesis that closes one opened inside the URL (Wikipedia).
            if line[end - 1] == ")" and line.count("(", found.start(), end) >= line.count(
                ")", found.start(), end
            ):
                break
            end -= 1
        if end > found.start():
            spans.append((found.start(), end))
    return spans


def _isolate_runs(line: str, lo: int, hi: int, other: str) -> list[tuple[int, str]]:
    """FSI/PDI pairs around every run of `other`-direction text within line[lo:hi]."""
    controls: list[tuple[int, str]] = []
    own = "R" if other == "L" else "L"
    i = lo
    while i < hi:
        if strong_direction(line[i]) != other:
            i += 1
            continue
        # The run goes on, across spaces and neutrals, until a letter of the paragraph's
        # own direction; it ends at its last letter of the other direction.
        last = i
        j = i + 1
        while j < hi:
            found = strong_direction(line[j])
            if found == own:
                break
            if found == other:
                last = j
            j += 1
        start, end = _widen(line, i, last + 1, lo, hi, own, other)
        controls.extend([(start, FSI), (end, PDI)])
        i = j
    return controls


def _widen(
    line: str, start: int, end: int, lo: int, hi: int, own: str, other: str
) -> tuple[int, int]:
    """Grow a run over the word it sits in: `#Syria`, `COVID-19`, `3D`, `U.S.`, `عسكرياً`.

    Punctuation at the word's edges stays outside, so that it follows the paragraph.
    """
    left = start
    while left > lo and not line[left - 1].isspace() and strong_direction(line[left - 1]) != own:
        left -= 1
    while left < start and not (
        line[left].isdigit() or line[left] in _RUN_PREFIXES or strong_direction(line[left]) == other
    ):
        left += 1
    right = end
    while right < hi and not line[right].isspace() and strong_direction(line[right]) != own:
        right += 1
    while right > end and not (
        line[right - 1].isdigit()
        or strong_direction(line[right - 1]) == other
        or unicodedata.category(line[right - 1]).startswith("M")
    ):
        right -= 1
    # The final dot of an abbreviation written with dots (U.S., D.C.) belongs to it.
    if right < hi and line[right] == "." and right - 2 >= left and line[right - 2] == ".":
        right += 1
    # A bracket opened inside the run is closed inside it too: a pair split by the isolate
    # would have its two halves laid out in different directions.
    unclosed = _unclosed_brackets(line, left, right)
    while unclosed and right < hi and line[right] == _BRACKETS[unclosed[-1]]:
        unclosed.pop()
        right += 1
    return left, right


def _unclosed_brackets(line: str, start: int, end: int) -> list[str]:
    stack: list[str] = []
    closers = {close: open_ for open_, close in _BRACKETS.items()}
    for ch in line[start:end]:
        if ch in _BRACKETS:
            stack.append(ch)
        elif ch in closers and stack and stack[-1] == closers[ch]:
            stack.pop()
    return stack
