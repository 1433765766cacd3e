"""html_to_text: markup to clean paragraphs, boilerplate and site repeats dropped."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.htmltext import fold_tokens, html_to_text, plain_to_text


@pytest.mark.parametrize(
    ("html", "text"),
    [
        (
            "<p>AT&amp;T &lt;3 caf&eacute; &#1587;&#x648;&#x631;&#x64A;&#x627;</p>",
            "AT&T <3 café سوريا",
        ),
        ("one<br>two<br/>three<BR >four", "one\ntwo\nthree\nfour"),
        ("<p>a</p><br><br><p>b</p>", "a\nb"),
        (
            "<div><div><p>inner</p>tail</div><ul><li>x</li><li>y</li></ul></div>",
            "inner\ntail\nx\ny",
        ),
        ("<p>  lots \n\t of   <b>white</b>\u00a0space </p>", "lots of white space"),
        ("<p>in<b>line</b> <i>tags</i> <span>join</span></p>", "inline tags join"),
        ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc"),
        ("plain text, no markup", "plain text, no markup"),
        ("", ""),
        ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
    ],
)
def test_markup_to_paragraphs(html: str, text: str) -> None:
    assert html_to_text(html) == text


@pytest.mark.parametrize(
    "html",
    [
        "<script>alert('x')</script><p>keep</p>",
        "<style>p { color: red }</style><p>keep</p>",
        '<iframe src="https://ads.example/">fallback</iframe><p>keep</p>',
        "<noscript>enable js</noscript><p>keep</p>",
        "<figure><img src=x alt='alt text'><figcaption>Photo: AFP</figcaption></figure><p>keep</p>",
        "<p>keep</p><script>never closed <p>swallowed",
        "<p>keep</p><svg><title>icon</title><text>svg text</text></svg>",
        "<video><source src=x>Your browser does not support video</video><p>keep</p>",
        "<script/><p>keep</p>",
    ],
)
def test_non_text_elements_dropped(html: str) -> None:
    assert html_to_text(html) == "keep"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("broken <b>bold <i>italic</p> text", "broken bold italic\ntext"),
        ("<p>unclosed <div>nested <p>rest", "unclosed\nnested\nrest"),
        ("<p>text</p></div></div></span>", "text"),
        ('<p title="a>b">quoted attr</p>', "quoted attr"),
        ("cut off at the end <a href=", "cut off at the end"),
        ("cut off <p", "cut off"),
        ("<p>a<!-- comment <p>hidden</p> -->b</p>", "ab"),
        ("<!-- unclosed comment", ""),
        ("<![CDATA[cdata text]]>", "cdata text"),
        ("<?xml version='1.0'?><!DOCTYPE html><p>t</p>", "t"),
        ("a\x00b\x07c", "a b c"),
    ],
)
def test_broken_markup(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_double_escaped_html_is_decoded_once_more() -> None:
    html = "&lt;p&gt;first&lt;/p&gt;&lt;p&gt;second &amp;amp; more&lt;/p&gt;"
    assert html_to_text(html) == "first\nsecond & more"


def test_arabic_and_latin_mixed() -> None:
    html = (
        '<div dir="rtl"><p>قال <b>#كارتر</b> إن <a href="/x">#التدخل_الروسي</a> في '
        "<em>Syria</em> (سوريا) «خطأ جوهري».</p><p>U.S. officials &amp; الأمم المتحدة</p></div>"
    )
    assert html_to_text(html) == (
        "قال #كارتر إن #التدخل_الروسي في Syria (سوريا) «خطأ جوهري».\nU.S. officials & الأمم المتحدة"
    )


@pytest.mark.parametrize(
    "boilerplate",
    [
        "<p>A+ A-</p>",
        "<p>A- A A+</p>",
        "<p>إعلان</p>",
        "<div>Advertisement</div>",
        "<p>ADVERTISEMENT</p>",
        '<p><a href="https://news-a.example/87268.html">التفاصيل&nbsp;&raquo;</a></p>',
        '<p><a href="https://news-c.example/?id=1" target="_blank">المزيد</a></p>',
        '<p><a href="https://news-d.example/1.html">اقرأ أيضاً&nbsp;&raquo;</a></p>',
        '<p>اقرأ أيضا: <a href="https://news-d.example/2.html">عنوان خبر آخر تماما</a></p>',
        '<p>Read more: <a href="https://example.com/other">Another story entirely</a></p>',
        '<p><a href="https://example.com/x">Read more »</a></p>',
        '<p><a href="https://example.com/x">Continue reading...</a></p>',
        '<p>The post <a href="https://e.com/p">A Title</a> appeared first on <a href="https://e.com">Site</a>.</p>',
    ],
)
def test_boilerplate_paragraphs_dropped(boilerplate: str) -> None:
    html = f"<p>أول فقرة من الخبر.</p>{boilerplate}<p>Second paragraph.</p>"
    assert html_to_text(html) == "أول فقرة من الخبر.\nSecond paragraph."


def test_boilerplate_words_inside_a_sentence_are_kept() -> None:
    html = (
        "<p>أعلن الإعلان عن المزيد من التفاصيل اليوم.</p>"
        '<p>Read the <a href="https://example.com">report</a> on advertisement spending.</p>'
        '<p><a href="https://example.com/2">A link that is the whole paragraph</a></p>'
    )
    assert html_to_text(html) == (
        "أعلن الإعلان عن المزيد من التفاصيل اليوم.\n"
        "Read the report on advertisement spending.\n"
        "A link that is the whole paragraph"
    )


# The seed article's repeat (shared/corpus/seed): printed twice, the second time with "إطار" for
# "اطار" and "داعش" in quotes for "الدولة الاسلامية". Text below written for this test.
_REPEATED = (
    'وقال المتحدث باسم الوزارة ان "الوزارة درست عن كثب الاقتراحات حول تنسيق العمليات '
    'في اطار مكافحة تنظيم الدولة الاسلامية على الاراضي السورية".'
)
_REPEATED_CHANGED = (
    'وقال المتحدث باسم الوزارة ان "الوزارة درست عن كثب الاقتراحات حول تنسيق العمليات '
    'في إطار مكافحة تنظيم "داعش" على الاراضي السورية".'
)


def test_near_identical_repeated_paragraph_kept_once() -> None:
    html = f"<p>المصدر: رويترز</p><p>{_REPEATED}</p><p>{_REPEATED_CHANGED}</p><p>وأضاف.</p>"
    assert html_to_text(html).split("\n") == ["المصدر: رويترز", _REPEATED, "وأضاف."]


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        # exact repeat
        (
            "Officials met on Monday to discuss the plan.",
            "Officials met on Monday to discuss the plan.",
            1,
        ),
        # same after whitespace and punctuation
        (
            "Officials met, on Monday, to discuss the plan.",
            "Officials met on Monday   to discuss the plan",
            1,
        ),
        # a truncated copy after the full paragraph
        (
            "The minister said the talks would resume next week in Geneva.",
            "The minister said the talks would resu",
            1,
        ),
        # short lines that recur are not merged unless identical
        ("Reuters:", "AFP:", 2),
        # different paragraphs that share some words stay
        (
            "The ministry said the strikes hit ten targets in the north of the country.",
            "The army said the strikes killed twenty fighters in the south on Friday night.",
            2,
        ),
    ],
)
def test_repeats(first: str, second: str, kept: int) -> None:
    assert len(html_to_text(f"<p>{first}</p><p>{second}</p>").split("\n")) == kept


def test_truncated_copy_before_the_full_paragraph_keeps_the_full_one_in_place() -> None:
    lead = "The minister said the talks would resu"
    full = "The minister said the talks would resume next week in Geneva."
    html = f"<p>{lead}</p><p>Other news.</p><p>{full}</p>"
    assert html_to_text(html) == f"{full}\nOther news."


def test_repeated_hashtag_lines_kept_once() -> None:
    html = "<p>#سوريا&nbsp;#روسيا</p><p>body text here</p><p>#سوريا #روسيا</p>"
    assert html_to_text(html) == "#سوريا #روسيا\nbody text here"


def test_plain_text_lines_are_paragraphs_and_tags_are_not_parsed() -> None:
    assert plain_to_text("a <y and more\n\n  second   line \nsecond line") == (
        "a <y and more\nsecond line"
    )


def test_plain_text_that_is_really_html_is_treated_as_html() -> None:
    assert plain_to_text("<p>Creating <a href='x'>ngClick</a> buttons</p>") == (
        "Creating ngClick buttons"
    )


def test_fold_tokens_ignores_spelling_variants() -> None:
    assert fold_tokens("أكّد «إطار» الدولة_الإسلامية، Syria!") == fold_tokens(
        "اكد اطار الدولة الاسلامية syria"
    )


def test_large_hostile_input_is_bounded() -> None:
    # 10 000 paragraphs made of the same 12 words: every pair looks alike to the cheap filter.
    words = [f"w{i}" for i in range(12)]
    html = "".join(
        "<p>" + " ".join(words[(i + j) % 12] for j in range(10)) + f" n{i}</p>"
        for i in range(10_000)
    )
    assert len(html_to_text(html).split("\n")) > 1


_TAG = st.sampled_from(
    ["<p>", "</p>", "<br>", "<br/>", "<div class='x'>", "</div>", "<a href='https://e.com/?a=1&b=2'>",
     "</a>", "<b>", "</b>", "<script>", "</script>", "<img src=x alt='y'>", "<!-- c -->",
     "<span style='a:b'>", "</span>", "<li>", "<h1>", "</h1>", "<figcaption>", "</figcaption>"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_never_raises_on_arbitrary_text(text: str) -> None:
    html_to_text(text)
    plain_to_text(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_TAG, st.text(st.characters(blacklist_characters="<&")))))
def test_tags_never_reach_the_output(pieces: list[str]) -> None:
    text = html_to_text("".join(pieces))
    assert "<" not in text
    assert "\n\n" not in text
    assert text == text.strip()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_output_is_stable(text: str) -> None:
    once = html_to_text(text)
    # Cleaning clean text changes nothing (apart from markup-looking text, which is re-read).
    if not re.search(r"[<&]", once):
        assert html_to_text(once) == once
