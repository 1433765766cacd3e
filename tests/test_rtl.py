"""Which way a paragraph reads, and the marks that make Telegram lay it out that way.

Telegram gives a paragraph the direction of its first strong character; `rtl` decides it from
the paragraph's letters and puts RLM first when that is right to left. The headlines are
written for these tests, in the style of Arabic and English wire copy (MIT).
"""

from __future__ import annotations

import pytest

from aggregator import rtl

RLM, LRM, LRI, FSI, PDI = "\u200f", "\u200e", "\u2066", "\u2068", "\u2069"
NAMES = {RLM: "<RLM>", LRM: "<LRM>", LRI: "<LRI>", FSI: "<FSI>", PDI: "<PDI>"}


def visible(text: str) -> str:
    """Direction controls spelled out, so that a failing comparison shows where they differ."""
    return "".join(NAMES.get(ch, ch) for ch in text)


def shown(line: str) -> str:
    """The line as it is sent, with the controls that `rtl` decides for it."""
    return visible(rtl.apply_controls(line, rtl.bidi_controls(line)))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Arabic headlines that open with a Latin source, acronym, brand or link.
        (
            "CNN: مسؤول أمريكي يؤكد انسحاب القوات من شمال سوريا",
            "<RLM><FSI>CNN<PDI>: مسؤول أمريكي يؤكد انسحاب القوات من شمال سوريا",
        ),
        (
            "Reuters - أعلنت وزارة الدفاع التركية مقتل جنديين في إدلب",
            "<RLM><FSI>Reuters<PDI> - أعلنت وزارة الدفاع التركية مقتل جنديين في إدلب",
        ),
        (
            "BBC News عربي: مظاهرات في بغداد احتجاجاً على انقطاع الكهرباء",
            "<RLM><FSI>BBC News<PDI> عربي: مظاهرات في بغداد احتجاجاً على انقطاع الكهرباء",
        ),
        (
            "NATO يحذّر روسيا من التصعيد في البحر الأسود",
            "<RLM><FSI>NATO<PDI> يحذّر روسيا من التصعيد في البحر الأسود",
        ),
        (
            "COVID-19: ارتفاع عدد الإصابات في مصر إلى 500 حالة",
            "<RLM><FSI>COVID-19<PDI>: ارتفاع عدد الإصابات في مصر إلى 500 حالة",
        ),
        # The link's letters outnumber the Arabic ones, but a link is no language.
        (
            "https://www.aljazeera.net/news/2024/5/10/live عاجل: انفجار في مرفأ بيروت",
            "<RLM><LRI>https://www.aljazeera.net/news/2024/5/10/live<PDI>"
            " عاجل: انفجار في مرفأ بيروت",
        ),
    ],
)
def test_arabic_paragraph_opening_with_latin_reads_right_to_left(line: str, expected: str) -> None:
    assert rtl.paragraph_direction(line) == "R"
    assert shown(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Hezbollah chief حسن نصر الله vows to retaliate for Beirut strike",
            "Hezbollah chief <FSI>حسن نصر الله<PDI> vows to retaliate for Beirut strike",
        ),
        (
            "Protesters in Tahrir chant «الشعب يريد إسقاط النظام» as police look on",
            "Protesters in Tahrir chant «<FSI>الشعب يريد إسقاط النظام<PDI>» as police look on",
        ),
    ],
)
def test_english_paragraph_quoting_arabic_stays_left_to_right(line: str, expected: str) -> None:
    assert rtl.paragraph_direction(line) == "L"
    assert shown(line) == expected


def test_arabic_paragraph_rich_in_latin_names_stays_right_to_left() -> None:
    # More Latin letters than Arabic ones: a count would call it English, the first word does not.
    line = "قال Antony Blinken إن Joe Biden وEmmanuel Macron بحثا مع Olaf Scholz الوضع في Gaza"
    assert rtl.paragraph_direction(line) == "R"
    assert shown(line) == (
        "<RLM>قال <FSI>Antony Blinken<PDI> إن <FSI>Joe Biden<PDI> و<FSI>Emmanuel Macron<PDI>"
        " بحثا مع <FSI>Olaf Scholz<PDI> الوضع في <FSI>Gaza<PDI>"
    )


def test_english_only_text_gets_no_control() -> None:
    line = "U.S. says no military cooperation with Russia in Syria (Reuters) https://x.example/a"
    assert rtl.paragraph_direction(line) == "L"
    assert rtl.bidi_controls(line) == []


def test_a_label_line_keeps_the_direction_its_caller_gives() -> None:
    # The alert's "matched:" line: mostly Arabic letters, but an English label leads it.
    line = "matched: سوريا (title), #التدخل_الروسي (body)"
    assert rtl.paragraph_direction(line) == "R"
    controls = rtl.bidi_controls(line, "L")
    assert visible(rtl.apply_controls(line, controls)) == (
        "matched: <FSI>سوريا<PDI> (title), <FSI>#التدخل_الروسي<PDI> (body)"
    )
    # Given left to right but opening with an Arabic letter, the line needs LRM to say so.
    line = "سوريا (title)"
    controls = rtl.bidi_controls(line, "L")
    assert visible(rtl.apply_controls(line, controls)) == "<LRM><FSI>سوريا<PDI> (title)"
