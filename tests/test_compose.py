"""The compose stage: Telegram HTML and plain text for an alert, RTL-safe, within 4096 units.

Golden files in tests/data/compose/ hold the exact expected messages (with their invisible
direction controls; `_visible` shows them when a comparison fails). After a deliberate change
of layout, rewrite them with COMPOSE_UPDATE_GOLDEN=1 and read the diff before committing.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import rtl
from aggregator.compose import (
    TELEGRAM_LIMIT,
    Message,
    MessageOptions,
    compose_alert,
    render_console,
)
from aggregator.models import FIELDS, Hit, Item, WatchlistMatch
from aggregator.parse import parse_feed
from tests.servers.fake_telegram import parse_telegram_html

GOLDEN = Path(__file__).parent / "data" / "compose"
RLM, LRI, FSI, PDI = "\u200f", "\u2066", "\u2068", "\u2069"
CONTROLS = (RLM, LRI, FSI, PDI)
BEIRUT = timezone(timedelta(hours=3))


# ------------------------------------------------------------------ a Telegram HTML validator
# Stricter than Telegram (a bare ">" is refused too); check_message also asks the fake Bot API's
# parser, which follows tdlib, for the same text.

ALLOWED_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "blockquote",
    "span",
}
ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]+|#x[0-9a-fA-F]+);")
TAG = re.compile(r'<(/?)([a-z]+)((?:\s+[a-z-]+="[^"<>]*")*)\s*>')


class _TelegramHTML(HTMLParser):
    """Checks tag names, attributes and nesting; collects the text as Telegram would show it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED_TAGS, f"tag <{tag}> is not allowed by Telegram"
        names = [name for name, _ in attrs]
        if tag == "a":
            assert names == ["href"], f"<a> needs exactly one href, got {attrs}"
        elif tag == "span":
            assert attrs == [("class", "tg-spoiler")], f"bad <span> attributes {attrs}"
        else:
            assert not attrs, f"<{tag}> takes no attributes, got {attrs}"
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> does not close {self.stack}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        assert not set(data) & set("<>&"), f"bare <, > or & in text {data!r}"
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        assert name in ("lt", "gt", "amp", "quot"), f"entity &{name}; unknown to Telegram"
        self.text.append({"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[name])

    def handle_charref(self, name: str) -> None:
        code = int(name[1:], 16) if name[:1] in "xX" else int(name)
        self.text.append(chr(code))


def telegram_text(message_html: str) -> str:
    """The message text after Telegram's entity parsing; AssertionError if the HTML is invalid."""
    # Raw scan first: html.parser forgives bare & and < that Telegram refuses.
    pos = 0
    while pos < len(message_html):
        ch = message_html[pos]
        if ch == "&":
            entity = ENTITY.match(message_html, pos)
            assert entity, f"bare & at {pos}: {message_html[pos : pos + 20]!r}"
            pos = entity.end()
        elif ch == "<":
            tag = TAG.match(message_html, pos)
            assert tag, f"bare < at {pos}: {message_html[pos : pos + 20]!r}"
            for value in re.findall(r'"([^"]*)"', tag.group(3)):
                assert "&" not in ENTITY.sub("", value), f"bare & in attribute {value!r}"
            pos = tag.end()
        else:
            assert ch != ">", f"bare > at {pos}"
            pos += 1
    parser = _TelegramHTML()
    parser.feed(message_html)
    parser.close()
    assert not parser.stack, f"unclosed tags {parser.stack}"
    return "".join(parser.text)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def check_message(message: Message) -> str:
    """Everything that must hold for any message; returns its text after entity parsing."""
    text = telegram_text(message.html)
    assert parse_telegram_html(message.html) == text  # the fake Bot API's reading agrees
    assert 0 < utf16_len(text) <= TELEGRAM_LIMIT
    assert utf16_len(message.plain) <= TELEGRAM_LIMIT
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", message.html + message.plain)
    # `plain` is the HTML's text plus the link on its own line under the title.
    # Controls at the title's start (RLM, and FSI when it opens with a Latin word) stand
    # before its tags.
    href = re.match(f'[{"".join(CONTROLS)}]*<b><a href="([^"]*)">', message.html)
    plain_lines = message.plain.split("\n")
    if href:
        assert plain_lines.pop(1) == telegram_text(href.group(1))
    assert "\n".join(plain_lines) == text
    for line in text.split("\n"):
        depth = 0
        for ch in line:
            depth += ch in (LRI, FSI)
            depth -= ch == PDI
            assert depth >= 0, f"PDI without an isolate in {line!r}"
        assert depth == 0, f"isolate left open in {line!r}"
    return text


def test_validator_refuses_what_telegram_refuses() -> None:
    for bad in (
        "a & b",
        "a < b",
        "a > b",
        "<b>x",
        "<b><i>x</b></i>",
        "<div>x</div>",
        "<b class='x'>y</b>",
        "&nbsp;",
        '<a href="x&y">z</a>',
    ):
        with pytest.raises(AssertionError):
            telegram_text(bad)
    assert telegram_text('<b>a &amp; <a href="https://x/?a=1&amp;b">b</a></b>&#x27;') == "a & b'"


# -------------------------------------------------------------------------------- helpers


def hit_at(item: Item, field: str, words: str, term: str | None = None, nth: int = 0) -> Hit:
    """A Hit for the nth occurrence of `words` in the item's field, as the matcher reports it."""
    text = item.fields()[field]
    start = -1
    for _ in range(nth + 1):
        start = text.index(words, start + 1)
    return Hit(term=term or words, field=field, start=start, end=start + len(words), text=words)


def visible(text: str) -> str:
    """Direction controls spelled out, so that a failing comparison shows where they differ."""
    names = {RLM: "<RLM>", LRI: "<LRI>", FSI: "<FSI>", PDI: "<PDI>"}
    return "".join(names.get(ch, ch) for ch in text)


def assert_golden(name: str, message: Message) -> None:
    html_file, plain_file = GOLDEN / f"{name}.html", GOLDEN / f"{name}.txt"
    if os.environ.get("COMPOSE_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(parents=True, exist_ok=True)
        html_file.write_text(message.html, encoding="utf-8")
        plain_file.write_text(message.plain, encoding="utf-8")
    assert visible(message.html) == visible(html_file.read_text(encoding="utf-8"))
    assert visible(message.plain) == visible(plain_file.read_text(encoding="utf-8"))
    assert message.html == html_file.read_text(encoding="utf-8")  # byte for byte


# --------------------------------------------------------------------------- golden messages

# An Arabic item as the parse stage hands it over: one paragraph per line, entities decoded.
# Title, link, guid, date, category, the #سوريا sentence and the start of the #التدخل_الروسي
# sentence come from the project's own sample (tests/data/own/syria-sample.xml, MIT); the rest
# was written for this test (MIT). The summary is left empty so that the body is summarised.
ARABIC_TITLE = "وزير الخارجية يبحث مع نظيره الروسي الوضع في سوريا"
ARABIC_LINK = "https://news.example/ar/world/2024/05/10/1001.html?utm_source=rss"
ARABIC_CONTENT = "\n".join(
    [
        'المصدر: "وكالات"',
        "بحث وزير الخارجية مع نظيره الروسي في اتصال هاتفي تطورات الأوضاع في #سوريا، وأكّد"
        " الجانبان أهمية الحل السياسي.",
        # Two sentences: the lead stops after the first. "إن" and "ان" mix hamza spellings.
        'وقال بيان للوزارة إن الوزيرين تناولا "#التدخل_الروسي" وآثاره على المنطقة & سبل التهدئة،'
        " مؤكداً ان روسيا شريك أساسي في أي حل. وأضاف البيان ان الاتصالات ستتواصل مجدداً الأسبوع"
        " المقبل.",
        'وكان الوزيران قد ناقشا في وقت سابق الحرب على "الدولة الاسلامية" في المنطقة.',
    ]
)
ARABIC_PUBLISHED = datetime(2024, 5, 10, 6, 15, tzinfo=UTC)  # 09:15 +0300 in the sample
PUBLISHED = datetime(2015, 10, 7, 11, 32, tzinfo=UTC)


def arabic_item() -> Item:
    return Item(
        feed="sample-world",
        title=ARABIC_TITLE,
        link=ARABIC_LINK,
        guid="sample-1001",
        content=ARABIC_CONTENT,
        categories="\n".join(["عربي ودولي", "سوريا"]),
        published=ARABIC_PUBLISHED,
    )


def arabic_match(item: Item) -> WatchlistMatch:
    return WatchlistMatch(
        watchlist="syria",
        hits=(
            hit_at(item, "title", "سوريا", "#سوريا"),
            hit_at(item, "content", "#سوريا"),
            hit_at(item, "content", "#التدخل_الروسي", "التدخل الروسي"),
            hit_at(item, "content", "روسيا", "روسيا", nth=0),
            # In the fourth paragraph: outside the summary, so listed but not highlighted.
            hit_at(item, "content", "الدولة الاسلامية", "الدولة الإسلامية"),
            hit_at(item, "categories", "سوريا", "#سوريا"),
        ),
    )


def test_golden_arabic_item() -> None:
    item = arabic_item()
    message = compose_alert(
        item, arabic_match(item), source="sample-world", options=MessageOptions(timezone=BEIRUT)
    )
    assert_golden("arabic", message)
    text = check_message(message)
    # Every paragraph that reads right to left starts with RLM; the rest do not. The "matched:"
    # line is the bot's English label, left to right even when its terms are all Arabic.
    for line in text.split("\n"):
        direction = "L" if line.startswith("matched: ") else rtl.paragraph_direction(line)
        assert line.startswith(RLM) == (direction == "R"), line
    # Three lead sentences: the dateline, the lead, and the statement up to its first full stop.
    assert RLM + 'المصدر: "وكالات"' + "\n" in text
    assert "شريك أساسي في أي حل.\n\n" in text
    assert "وأضاف" not in text
    assert "في <b>#سوريا</b>، وأكّد" in message.html
    assert 'تناولا "<b>#التدخل_الروسي</b>" وآثاره على المنطقة &amp; سبل' in message.html
    assert "ان <b>روسيا</b> شريك" in message.html
    assert "الدولة الاسلامية" not in message.html.split("\n\n")[1]
    assert f"{FSI}الدولة الاسلامية{PDI} (body)" in text.split("\n\n")[2]
    assert message.disable_preview


SEED = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "seed" / "annahar-seed.xml"
# The seed article has no license, so none of its sentences is copied here: the test reads it
# where it lies. This name is in the paragraph that the site printed twice with a small change.
SEED_REPEATED = "ايغور كوناشنكوف"


@pytest.mark.skipif(not SEED.is_file(), reason=f"seed article not found at {SEED}")
def test_seed_article_read_in_place() -> None:
    body = SEED.read_bytes()
    assert body.decode("utf-8").count(SEED_REPEATED) == 2, "the seed holds the repeat"
    (item,) = parse_feed(body, feed_name="annahar-world").items
    match = WatchlistMatch(
        watchlist="syria",
        hits=(
            hit_at(item, "summary", "#سوريا"),
            hit_at(item, "content", "#التدخل_الروسي", "التدخل الروسي"),
        ),
    )
    message = compose_alert(item, match, source="annahar-world")
    text = check_message(message)
    assert text.split("\n")[0] == RLM + item.title
    assert "<b>#سوريا</b>" in message.html
    # The feed's description is the summary; shown from the body instead, with room for all
    # of it, the paragraph printed twice must appear once.
    body_only = Item(
        feed=item.feed, title=item.title, link=item.link, content=item.content, published=None
    )
    options = MessageOptions(max_summary_sentences=1000, max_summary_chars=TELEGRAM_LIMIT)
    message = compose_alert(body_only, WatchlistMatch("syria"), source="s", options=options)
    text = check_message(message)
    shown = re.sub(f"[{''.join(CONTROLS)}]", "", text.split("\n\n")[1])
    assert shown == item.content, "the whole body is shown, uncut"
    assert message.plain.count(SEED_REPEATED) == 1


def test_golden_english_item() -> None:
    summary = (
        "U.S. Defense Secretary Ashton Carter said on Wednesday that Washington was not"
        " cooperating with Moscow on air strikes in Syria. He called Russia's strategy in Syria"
        " a fundamental mistake! Officials spoke for 3.5 hours about pilot safety. Talks will"
        " continue next week."
    )
    item = Item(
        feed="wire-world",
        title="U.S. says no military cooperation with Russia in Syria",
        link="https://news.example.com/world/2015/10/07/carter-syria",
        summary=summary,
        content="A longer body that the summary stands in for.",
        published=PUBLISHED,
    )
    match = WatchlistMatch(
        watchlist="Syria news",
        hits=(
            hit_at(item, "title", "Syria"),
            hit_at(item, "summary", "Syria"),
            hit_at(item, "summary", "Syria", nth=1),
            hit_at(item, "summary", "Russia's strategy", "Russia strategy"),
            hit_at(item, "summary", "Moscow"),
        ),
    )
    message = compose_alert(item, match, source="wire-world")
    assert_golden("english", message)
    text = check_message(message)
    assert not set(text) & set(CONTROLS), "English-only items get no direction marks"
    # "U.S." is no sentence end, "3.5" neither: the three sentences end at ". He", "! Officials"
    # and ". Talks".
    assert "about pilot safety." in text
    assert "Talks will" not in text
    assert "#Syria_news" in text


def test_golden_mixed_item() -> None:
    content = "\n".join(
        [
            "NATO said its jets intercepted a Russian aircraft over Turkey (Reuters).",
            "قال الأمين العام لحلف NATO ينس ستولتنبرغ إن COVID-19 لم يؤثر على الجاهزية.",
            "التفاصيل على https://example.org/nato/2015/10/07?lang=ar كاملة.",
        ]
    )
    item = Item(
        feed="bbc-arabic",
        title="حلف NATO يحذّر روسيا: الانتهاكات «غير مقبولة»",
        link="https://www.bbc.com/arabic/world-34465440",
        content=content,
        published=None,
    )
    match = WatchlistMatch(
        watchlist="روسيا والناتو",
        hits=(
            hit_at(item, "title", "NATO"),
            hit_at(item, "content", "NATO"),
            hit_at(item, "content", "NATO", nth=1),
            hit_at(item, "content", "Russian", "Russia*"),
        ),
    )
    message = compose_alert(item, match, source="bbc-arabic")
    assert_golden("mixed", message)
    text = check_message(message)
    title, meta, _, english, arabic, url_line, _, matched, hashtag = text.split("\n")
    assert title == f"{RLM}حلف {FSI}NATO{PDI} يحذّر روسيا: الانتهاكات «غير مقبولة»"
    assert meta == "bbc-arabic"  # no time when the item has none
    assert not set(english) & set(CONTROLS)
    assert f"{FSI}COVID-19{PDI} لم" in arabic
    assert (
        url_line
        == f"{RLM}التفاصيل على {LRI}https://example.org/nato/2015/10/07?lang=ar{PDI} كاملة."
    )
    assert matched == "matched: NATO (title), NATO (body), Russian (body)"
    assert hashtag == f"{RLM}#روسيا_والناتو"


def test_arabic_item_opening_with_latin_names_reads_right_to_left() -> None:
    # Written for this test (MIT), in the style of Arabic wire copy that credits its source.
    item = Item(
        feed="wire-ar",
        title="CNN: مسؤول أمريكي يؤكد انسحاب القوات من شمال سوريا",
        link="https://wire.example/ar/1",
        summary="Reuters - أعلنت وزارة الدفاع أن القوات ستغادر سوريا خلال أسابيع.",
        published=PUBLISHED,
    )
    match = WatchlistMatch(
        watchlist="سوريا",
        hits=(
            hit_at(item, "title", "انسحاب القوات"),
            hit_at(item, "summary", "وزارة الدفاع"),
            hit_at(item, "summary", "سوريا"),
        ),
    )
    message = compose_alert(item, match, source="wire-ar")
    text = check_message(message)
    title, _, _, summary, _, matched, hashtag = text.split("\n")
    assert title == f"{RLM}{FSI}CNN{PDI}: مسؤول أمريكي يؤكد انسحاب القوات من شمال سوريا"
    assert (
        summary
        == f"{RLM}{FSI}Reuters{PDI} - أعلنت وزارة الدفاع أن القوات ستغادر سوريا خلال أسابيع."
    )
    assert message.html.startswith(f'{RLM}{FSI}<b><a href="https://wire.example/ar/1">CNN{PDI}:')
    assert "أعلنت <b>وزارة الدفاع</b> أن القوات ستغادر <b>سوريا</b> خلال" in message.html
    # The bot's own English label leads this line, although most of its letters are Arabic:
    # left to right, the Arabic terms isolated.
    assert matched == (
        f"matched: {FSI}انسحاب القوات{PDI} (title), {FSI}وزارة الدفاع{PDI} (body),"
        f" {FSI}سوريا{PDI} (body)"
    )
    assert hashtag == f"{RLM}#سوريا"


def test_golden_title_with_markup_characters() -> None:
    item = Item(
        feed="tech",
        title='Tom & Jerry: why <b> is not "bold" & 1 < 2 > 0, see https://example.com/?a=1&b=2',
        link="https://example.com/a?q=\"x\"&y=<1>&z='2'",
        summary="Use <script>alert('&amp;')</script> & enjoy.",
        published=PUBLISHED,
    )
    match = WatchlistMatch(watchlist="a&b <tags>", hits=(hit_at(item, "title", "Tom & Jerry"),))
    message = compose_alert(item, match, source="tech <feed>")
    assert_golden("markup", message)
    text = check_message(message)
    assert item.title in text
    assert "Use <script>alert('&amp;')</script> & enjoy." in text
    assert (
        '<a href="https://example.com/a?q=&quot;x&quot;&amp;y=&lt;1&gt;&amp;z=&#x27;2&#x27;">'
        in message.html
    )
    assert "#a_b_tags" in text


# ------------------------------------------------------------------------------ highlights


def _summary_html(message: Message) -> str:
    return message.html.split("\n\n")[1]


def test_highlights_multiple_and_overlapping_hits() -> None:
    summary = "Syrian troops and Russian air strikes hit Syria. More Syria news."
    item = Item(feed="f", title="t", summary=summary)
    hits = (
        hit_at(item, "summary", "Syria", "Syria"),  # inside "Syrian"
        hit_at(item, "summary", "Syrian", "Syrian"),  # overlaps the hit above
        hit_at(item, "summary", "Russian air", "Russian air"),
        hit_at(item, "summary", "air strikes", "air strikes"),  # overlaps "Russian air"
        hit_at(item, "summary", "strikes hit", "strikes hit"),  # overlaps, ends past it
        hit_at(item, "summary", "Syria", "Syria", nth=1),
        hit_at(item, "summary", "Syria", "Syria", nth=2),
        hit_at(item, "summary", "More", "More"),  # touches nothing: separate
    )
    message = compose_alert(item, WatchlistMatch("w", hits), source="s")
    check_message(message)
    assert _summary_html(message) == (
        "<b>Syrian</b> troops and <b>Russian air strikes hit</b> <b>Syria</b>."
        " <b>More</b> <b>Syria</b> news."
    )


def test_highlights_only_inside_the_excerpt_and_only_in_the_chosen_field() -> None:
    summary = "First Syria sentence. Second Syria sentence. Third one. Fourth Syria."
    item = Item(feed="f", title="Syria", summary=summary, content="Syria in the body")
    hits = (
        hit_at(item, "title", "Syria"),
        hit_at(item, "content", "Syria"),
        hit_at(item, "summary", "Syria"),
        hit_at(item, "summary", "Syria", nth=2),  # in the fourth sentence: not shown
    )
    message = compose_alert(item, WatchlistMatch("w", hits), source="s")
    check_message(message)
    assert (
        _summary_html(message) == "First <b>Syria</b> sentence. Second Syria sentence. Third one."
    )
    assert "<b>t" not in message.html
    assert "matched: Syria (title), Syria (body)\n#w" in message.html


def test_hit_cut_by_the_excerpt_is_highlighted_as_far_as_it_shows() -> None:
    summary = "alpha beta gamma delta epsilon zeta eta theta"
    item = Item(feed="f", title="t", summary=summary)
    hits = (hit_at(item, "summary", "beta"), hit_at(item, "summary", "delta epsilon"))
    options = MessageOptions(max_summary_chars=24)
    message = compose_alert(item, WatchlistMatch("w", hits), source="s", options=options)
    check_message(message)
    assert _summary_html(message) == "alpha <b>beta</b> gamma <b>delta</b>…"
    assert "matched: beta (body), delta epsilon (body)" in message.html


def test_arabic_phrase_cut_by_the_excerpt_is_highlighted_as_far_as_it_shows() -> None:
    # Written for this test (MIT). One long sentence, cut at a word inside the matched phrase.
    summary = (
        "انتقد وزير الخارجية في مؤتمر صحفي عقده في العاصمة اليوم التدخل العسكري الروسي"
        " المتواصل في سوريا منذ أشهر"
    )
    item = Item(feed="f", title="t", summary=summary)
    hits = (hit_at(item, "summary", "التدخل العسكري الروسي", "التدخل العسكري الروسي"),)
    # Room for the text up to the first letter of "الروسي", one unit being kept for the ellipsis.
    options = MessageOptions(max_summary_chars=summary.index(" الروسي") + 2)
    message = compose_alert(item, WatchlistMatch("w", hits), source="s", options=options)
    text = check_message(message)
    assert _summary_html(message).endswith("اليوم <b>التدخل العسكري</b>…")
    assert "الروسي" not in text.split("\n\n")[1]
    console = render_console(item, WatchlistMatch("w", hits), source="s", options=options)
    assert "اليوم «التدخل العسكري»…" in console


def test_highlight_offsets_survive_dropped_control_characters() -> None:
    # RLE, ESC, CR and RLI ... PDI are dropped before display; the offsets must follow.
    summary = "".join(
        ["\u202b", "كلمة", "\u202c \x1b[1mred\x1b[0m.\r\n\u2067", "سوريا", "\u2069 here"]
    )
    item = Item(feed="f", title="t", summary=summary)
    hits = (hit_at(item, "summary", "red"), hit_at(item, "summary", "سوريا"))
    message = compose_alert(item, WatchlistMatch("w", hits), source="s")
    check_message(message)
    lines = _summary_html(message).split("\n")
    assert lines[0].startswith(f"{RLM}كلمة ")
    assert "<b>red</b>" in lines[0]
    assert lines[1] == f"{RLM}<b>سوريا</b> {FSI}here{PDI}"


def test_hits_that_do_not_point_at_their_text_are_refused() -> None:
    item = Item(feed="f", title="Syria", summary="In Syria today")
    for hit, problem in (
        (Hit("Syria", "summary", 3, 99, "Syria"), "offsets 3..99 do not fit field 'summary'"),
        (Hit("Syria", "summary", 5, 5, ""), "offsets 5..5"),
        (Hit("Syria", "summary", 0, 5, "Syria"), "holds 'In Sy' at 0..5"),
        (Hit("Syria", "body", 0, 5, "Syria"), "unknown field 'body'"),
    ):
        with pytest.raises(ValueError, match=re.escape(problem)) as caught:
            compose_alert(item, WatchlistMatch("syria", (hit,)), source="s")
        assert "watchlist 'syria', term 'Syria'" in str(caught.value)
        with pytest.raises(ValueError, match=re.escape(problem)):
            render_console(item, WatchlistMatch("syria", (hit,)), source="s")


# ----------------------------------------------------------------------------- the other parts


def test_link_must_be_http_or_https() -> None:
    for link in (
        "javascript:alert(1)",
        "ftp://example.com/x",
        "/relative/path",
        "https://",
        "http://[::1",
        "https://exa mple.com/",
        None,
        "https://example.com/" + "a" * 3000,
    ):
        item = Item(feed="f", title="Title", link=link, summary="Body.")
        message = compose_alert(item, WatchlistMatch("w"), source="s")
        check_message(message)
        assert message.html.startswith("<b>Title</b>\ns\n"), link
        assert message.plain.startswith("Title\ns\n"), link
    item = Item(feed="f", title="Title", link="HTTP://Example.com/x", summary="Body.")
    message = compose_alert(item, WatchlistMatch("w"), source="s")
    assert message.html.startswith('<b><a href="HTTP://Example.com/x">Title</a></b>\n')
    assert message.plain.startswith("Title\nHTTP://Example.com/x\ns\n")


def test_hashtag_from_any_watchlist_name() -> None:
    for name, hashtag in (
        ("syria", "#syria"),
        ("Syria news-ar", "#Syria_news_ar"),
        ("  gulf -- states  ", "#gulf_states"),
        ("سوريّا", "#سوريا"),  # Telegram ends a hashtag at a mark: the shadda goes
        ("2024", "#watchlist_2024"),  # a hashtag of digits only is not linked
        ("--", "#watchlist"),
        ("x" * 100, "#" + "x" * 64),
    ):
        message = compose_alert(Item(feed="f", title="t"), WatchlistMatch(name), source="s")
        assert message.plain.split("\n")[-1].lstrip(RLM) == hashtag, name


def test_time_in_the_readers_timezone_and_naive_times_refused() -> None:
    item = arabic_item()
    message = compose_alert(item, WatchlistMatch("w"), source="src", options=MessageOptions())
    assert "\nsrc · 2024-05-10 06:15\n" in message.html
    message = compose_alert(
        item, WatchlistMatch("w"), source="src", options=MessageOptions(timezone=BEIRUT)
    )
    assert "\nsrc · 2024-05-10 09:15\n" in message.html
    naive = Item(feed="f", title="t", published=datetime(2015, 10, 7, 11, 32))  # noqa: DTZ001
    with pytest.raises(ValueError, match="timezone-aware"):
        compose_alert(naive, WatchlistMatch("w"), source="s")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_summary_sentences must be at least 1, got 0"):
        MessageOptions(max_summary_sentences=0)
    with pytest.raises(ValueError, match="max_summary_chars must be at least 1, got -5"):
        MessageOptions(max_summary_chars=-5)
    with pytest.raises(ValueError, match="timezone must be a tzinfo, not str"):
        MessageOptions(timezone="Asia/Beirut")  # type: ignore[arg-type]


def test_link_preview_option() -> None:
    item = arabic_item()
    assert compose_alert(item, WatchlistMatch("w"), source="s").disable_preview
    options = MessageOptions(link_preview=True)
    assert not compose_alert(item, WatchlistMatch("w"), source="s", options=options).disable_preview


def test_long_title_and_many_terms_are_capped() -> None:
    title = " ".join(["word"] * 200)  # 999 characters
    summary = " ".join(f"term{n}" for n in range(30)) + "."
    item = Item(feed="f", title=title, summary=summary)
    hits = tuple(hit_at(item, "summary", f"term{n} ") for n in range(12))
    message = compose_alert(item, WatchlistMatch("w", hits), source="s" * 500)
    text = check_message(message)
    shown_title, source = text.split("\n")[:2]
    assert len(shown_title) <= 300
    assert shown_title.endswith(" word…")
    assert source == "s" * 63 + "…"
    assert "term7 (body), +4 more\n" in text


def test_worst_case_parts_still_leave_room_for_a_summary() -> None:
    # Alternating scripts give the most direction controls; astral characters count twice.
    mixed = "aب" * 2000
    item = Item(
        feed="f",
        title=mixed,
        link="https://example.com/" + "\U0001f600" * 1010,  # 2040 units: kept
        summary="b" + mixed,
    )
    hits = tuple(
        Hit(term="t", field="title", start=n, end=n + 60, text=mixed[n : n + 60])
        for n in range(0, 40)
    )
    name = "\U0001d54f" * 100
    message = compose_alert(
        item,
        WatchlistMatch(name, hits),
        source=mixed,
        options=MessageOptions(max_summary_chars=10_000),
    )
    text = check_message(message)
    assert utf16_len(message.plain) > TELEGRAM_LIMIT - 10
    assert len(text.split("\n")[3]) > 100, "the summary keeps room"


def test_empty_item_still_makes_a_message() -> None:
    message = compose_alert(Item(feed="f", title="  \n "), WatchlistMatch("w"), source="")
    assert check_message(message) == "(untitled)\n\n#w"


# ------------------------------------------------------------------------------ cutting to fit


def test_lead_of_a_20kb_summary_by_default() -> None:
    sentence = "The ceasefire in Syria held for another day, officials said on Tuesday. "
    summary = sentence * (20_000 // len(sentence) + 1)
    assert len(summary.encode()) > 20_000
    item = Item(feed="f", title="t", summary=summary)
    message = compose_alert(item, WatchlistMatch("w"), source="s")
    assert _summary_html(message) == (sentence * 3).strip()


def test_20kb_summary_is_cut_under_the_limit_at_a_sentence() -> None:
    sentence = "أكّد الجانبان أهمية الحل السياسي وضرورة التهدئة في المنطقة خلال الأسابيع المقبلة. "
    summary = sentence * (20_000 // len(sentence.encode()) + 1)
    item = Item(feed="f", title="t", link="https://example.com/" + "x" * 500, summary=summary)
    options = MessageOptions(max_summary_sentences=10_000, max_summary_chars=100_000)
    message = compose_alert(item, WatchlistMatch("w"), source="s", options=options)
    text = check_message(message)
    assert utf16_len(message.plain) > TELEGRAM_LIMIT - len(sentence) - 2, "room left unused"
    shown = text.split("\n")[3]
    assert shown.startswith(RLM)
    assert shown.endswith("المقبلة.")  # a whole sentence, no ellipsis


def test_20kb_sentence_is_cut_under_the_limit_at_a_word() -> None:
    words = "Syria\U0001f1f8\U0001f1fe éi\u0301 <a&b> "  # astral flags, a combining accent
    summary = words * (20_000 // len(words.encode()) + 1)
    item = Item(feed="f", title="t", summary=summary)
    hits = tuple(hit_at(item, "summary", "Syria", nth=n) for n in range(0, 700, 7))
    options = MessageOptions(max_summary_sentences=10_000, max_summary_chars=100_000)
    message = compose_alert(item, WatchlistMatch("w", hits), source="s", options=options)
    text = check_message(message)
    assert utf16_len(message.plain) > TELEGRAM_LIMIT - 40
    shown = text.split("\n")[3]
    assert shown.endswith("…")
    assert (shown[:-1] + " ") in summary, "cut at a word boundary"
    assert "<b>Syria</b>" in message.html


def test_20kb_word_is_cut_without_splitting_a_character() -> None:
    summary = "\u0627\u0651" * 10_000  # alef + shadda, no space anywhere
    item = Item(feed="f", title="t", summary=summary)
    options = MessageOptions(max_summary_chars=100_000)
    message = compose_alert(item, WatchlistMatch("w"), source="s", options=options)
    text = check_message(message)
    shown = text.split("\n")[3]
    assert shown.startswith(RLM + "\u0627\u0651")
    assert shown.endswith("\u0627\u0651…")


# -------------------------------------------------------------------------------- console


def test_console_rendering() -> None:
    item = arabic_item()
    match = arabic_match(item)
    plain = render_console(item, match, source="sample-world", options=MessageOptions(BEIRUT))
    lines = plain.split("\n")
    assert lines[:4] == [
        "── syria · sample-world · 2024-05-10 09:15 ──",
        ARABIC_TITLE,
        ARABIC_LINK,
        "matched: سوريا (title), #سوريا (content), #التدخل_الروسي (content), روسيا (content),"
        " الدولة الاسلامية (content), سوريا (categories)",
    ]
    assert lines[4] == 'المصدر: "وكالات"'
    assert "في «#سوريا»، وأكّد" in lines[5]
    assert 'تناولا "«#التدخل_الروسي»" وآثاره' in lines[6]
    assert lines[6].endswith("في أي حل.")
    assert not set(plain) & {*CONTROLS, "\x1b"}
    colored = render_console(item, match, source="sample-world", color=True)
    assert f"\x1b[1m{ARABIC_TITLE}\x1b[22m" in colored
    assert "في \x1b[1m#سوريا\x1b[22m، وأكّد" in colored
    assert "«" not in colored


def test_console_drops_terminal_escapes_from_feed_text() -> None:
    item = Item(feed="f", title="evil\x1b]0;owned\x07 title\x9b2J", link="https://x.example/")
    plain = render_console(item, WatchlistMatch("w"), source="s\x1b[2J")
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", plain)
    assert plain.split("\n")[:2] == ["── w · s[2J ──", "evil]0;owned title2J"]


# ------------------------------------------------------------------------------ properties

INTERESTING = (
    list("<>&\"' \n\t.!?؟…#_-()[]«»:،")
    + list("سوريا الدولة")
    + list("abcXYZ 019")
    + ["\u0660", "\u0661"]  # Arabic-Indic digits
    + ["\u064b", "\u0651", "\u0301", "\U0001f600", "\U0001f1f8", "\u200d", "\ufe0f"]
    + [RLM, LRI, PDI, "\u202e", "\x1b", "\r", "\u2028", "\x00", "\U00010000", "&amp;", "<b>"]
    + ["https://example.com/a?b=1&c=2", " www.example.org/x.", "U.S.", "COVID-19", "3.5"]
)
text_strategy = st.lists(
    st.one_of(st.sampled_from(INTERESTING), st.characters(codec="utf-8")),
    max_size=120,
).map("".join)
links = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "https://example.com/x?a=1&b=<2>",
            'http://example.com/"q"',
            "javascript:alert(1)",
            "https://ex.com/" + "y" * 3000,
            "https://ex.com/" + "\U0001f600" * 1000,
        ]
    ),
    text_strategy,
)


@st.composite
def items_and_matches(draw: st.DrawFn) -> tuple[Item, WatchlistMatch, MessageOptions]:
    repeat = draw(st.sampled_from([1, 1, 1, 50, 400]))  # long fields now and then
    item = Item(
        feed="f",
        title=draw(text_strategy) * draw(st.sampled_from([1, 1, 20])),
        link=draw(links),
        summary=draw(text_strategy) * repeat,
        content=draw(text_strategy) * repeat,
        categories=draw(text_strategy),
        published=draw(st.none() | st.datetimes(timezones=st.just(UTC))),
    )
    hits = []
    for _ in range(draw(st.integers(0, 30))):
        field = draw(st.sampled_from(FIELDS))
        text = item.fields()[field]
        if not text:
            continue
        start = draw(st.integers(0, len(text) - 1))
        end = draw(st.integers(start + 1, min(len(text), start + 40)))
        hits.append(Hit(draw(text_strategy), field, start, end, text[start:end]))
    options = MessageOptions(
        timezone=draw(st.sampled_from([UTC, BEIRUT, timezone(timedelta(hours=-9, minutes=-30))])),
        max_summary_sentences=draw(st.integers(1, 500)),
        max_summary_chars=draw(st.sampled_from([1, 30, 600, 100_000])),
    )
    return item, WatchlistMatch(draw(text_strategy), tuple(hits)), options


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items_and_matches(), text_strategy)
def test_any_item_makes_valid_telegram_html_within_the_limit(
    case: tuple[Item, WatchlistMatch, MessageOptions], source: str
) -> None:
    item, match, options = case
    message = compose_alert(item, match, source=source, options=options)
    check_message(message)
    console = render_console(item, match, source=source, options=options)
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", console)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Plain English, no marks (none).", "Plain English, no marks (none)."),
        # Punctuation at a run's edge stays outside, with the paragraph.
        ("قال (Reuters) إن", "<RLM>قال (<FSI>Reuters<PDI>) إن"),
        # A bracket opened inside the run closes inside it; an abbreviation keeps its dot.
        ("قال Ashton Carter (U.S.) إن", "<RLM>قال <FSI>Ashton Carter (U.S.)<PDI> إن"),
        ("في U.S. قالت", "<RLM>في <FSI>U.S.<PDI> قالت"),
        # Digits and hashtags go with the word they are written in.
        ("إن COVID-19 و3D و#Syria.", "<RLM>إن <FSI>COVID-19<PDI> و<FSI>3D<PDI> و<FSI>#Syria<PDI>."),
        # An Arabic run in an English paragraph keeps its final mark (tanween).
        ("The word عسكرياً, here.", "The word <FSI>عسكرياً<PDI>, here."),
        ("Tag #سوريا trends", "Tag <FSI>#سوريا<PDI> trends"),
        # A URL is one left-to-right block in Arabic text, trailing dot outside.
        ("انظر https://x.org/a_(b)/ج.", "<RLM>انظر <LRI>https://x.org/a_(b)/ج<PDI>."),
        ("See https://x.org/سوريا now", "See https://x.org/سوريا now"),
        ("2015-10-07 14:32", "2015-10-07 14:32"),
    ],
)
def test_direction_controls(line: str, expected: str) -> None:
    assert visible(rtl.apply_controls(line, rtl.bidi_controls(line))) == expected


@settings(max_examples=300, deadline=None)
@given(text_strategy)
def test_direction_controls_only_where_needed(line: str) -> None:
    line = re.sub(f"[\n{''.join(CONTROLS)}]", " ", line)
    controls = rtl.bidi_controls(line)
    shown = rtl.apply_controls(line, controls)
    assert re.sub(f"[{''.join(CONTROLS)}]", "", shown) == line
    assert shown.startswith(RLM) == (rtl.paragraph_direction(line) == "R")
    if not any(rtl.strong_direction(ch) == "R" for ch in line):
        assert controls == [], "a paragraph without right-to-left letters gets no control"
    depth = 0
    for ch in shown:
        depth += ch in (LRI, FSI)
        depth -= ch == PDI
        assert depth in (0, 1), "isolates are neither nested nor unbalanced"
    assert depth == 0
