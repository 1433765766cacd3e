"""parse_feed: feed bytes and headers to items, on the copied corpus and on hostile input."""

from __future__ import annotations

import contextlib
import csv
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import AggregatorError
from aggregator.models import Item
from aggregator.parse import ParsedFeed, ParseError, parse_feed

FEEDS = Path(__file__).parent / "data" / "feeds"
NEWS_AR = FEEDS / "news-ar"
SHARED_SEED = (
    Path(__file__).resolve().parents[2] / "shared" / "corpus" / "seed" / "annahar-seed.xml"
)
_ARABIC = re.compile("[\u0600-\u06ff]")
_MOJIBAKE = re.compile("[\u00c0-\u00ff]{3,}|\ufffd")  # cp1256 read as Latin-1, or U+FFFD


def _parse(name: str, **kwargs: object) -> ParsedFeed:
    path = FEEDS / name
    return parse_feed(path.read_bytes(), feed_name=path.stem, **kwargs)  # type: ignore[arg-type]


def _rss(items: str, channel: str = "", *, encoding: str = "UTF-8") -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"><channel>'
        f"<title>Test feed</title><link>https://site.example/news/</link>{channel}"
        f"{items}</channel></rss>"
    ).encode()


def _manifest_rows() -> list[dict[str, str]]:
    with (FEEDS / "PROVENANCE.tsv").open(encoding="utf-8") as handle:
        return [row for row in csv.DictReader(handle, delimiter="\t") if row["fp_entries"]]


# --- the news-ar feeds: exact expectations ------------------------------------------------------


def test_rss_item_with_guid_and_categories() -> None:
    feed = _parse("news-ar/news-a-world.xml")
    assert (feed.title, feed.link, feed.bozo) == (
        "الأفق نيوز - أخبار العالم",
        "https://news-a.example/ar/world",
        None,
    )
    assert len(feed.items) == 45
    item = feed.items[0]
    assert item.feed == "news-a-world"
    assert item.title == "جواد ظريف يزور تونس ضمن جولة مغاربية"
    assert item.link == "https://news-a.example/ar/news/world/2017/06/08/87400.html"
    assert item.guid == "https://news-a.example/ar/news/world/2017/06/08/87400.html"
    assert item.published == datetime(2017, 6, 8, 17, 57, tzinfo=UTC)  # 18:57 +0100
    assert item.categories.split("\n") == ["دولية", "سوريا", "إيران"]
    # The lead paragraph only: the image is dropped and so is the "التفاصيل »" link paragraph.
    assert item.summary.startswith("قال الناطق باسم الخارجية الإيرانية، بهرام قاسمي")
    assert item.summary.endswith('تشمل الجزائر وموريتانيا وتونس".')
    assert "\n" not in item.summary
    assert item.content == ""


def test_rss_details_link_paragraph_dropped_everywhere() -> None:
    for name in ("news-a-world.xml", "news-a-politics.xml", "news-a-economy.xml"):
        for item in _parse(f"news-ar/{name}").items:
            assert "التفاصيل" not in item.summary.split("\n")[-1], item.link


def test_atom_entry_with_summary_and_content() -> None:
    feed = _parse("news-ar/news-b-arab-world-atom.xml")
    assert feed.link == "https://news-b.example/ar/arab-world/"
    assert (feed.ttl_s, feed.update_period_s) == (None, None)
    item = feed.items[0]
    assert item.title == "موعد عيد الفطر في 5 دول"
    assert item.link == (
        "https://news-b.example/ar/article/397029/%D9%85%D9%88%D8%B9%D8%AF-%D8%B9%D9%8A%D8%AF-"
        "%D8%A7%D9%84%D9%81%D8%B7%D8%B1-%D9%81%D9%8A-5-%D8%AF%D9%88%D9%84"
    )
    assert item.guid == "tag:news-b.example,2017:article-397029"
    assert item.published == datetime(2017, 6, 8, 16, 52, tzinfo=UTC)  # <published>, not <updated>
    # term, then the human label when it differs
    assert item.categories == "internationalNews\nدولية\nقطر\nمصر"
    assert item.summary == (
        "أعلنت المراصد الخاصة بمصر أن شهر رمضان 2017 من المتوقع أن يكون 29 وبذلك يكون موعد عيد "
        "الفطر في مصر هو يوم الأحد الموافق ل 25 جوان 2017 وذلك بحسب الحسابات الفلكية."
    )
    # The summary is the content's lead: both kept, the content has the whole article.
    assert item.content.startswith(item.summary + "\n")
    assert item.content.split("\n")[-1] == "#قطر #مصر"


@pytest.mark.parametrize(
    "name", ["news-c-latest-cp1256.xml", "news-c-local-cp1256.xml", "news-f-local-cp1256.xml"]
)
def test_windows_1256_arrives_intact(name: str) -> None:
    feed = _parse(f"news-ar/{name}")
    assert feed.items
    for item in feed.items:
        for text in (item.title, item.summary, feed.title):
            assert _ARABIC.search(text), text
            assert not _MOJIBAKE.search(text), text


def test_windows_1256_exact_item_and_charset_header() -> None:
    body = (NEWS_AR / "news-c-latest-cp1256.xml").read_bytes()
    for headers in (None, {"Content-Type": "application/rss+xml; charset=windows-1256"}):
        feed = parse_feed(body, feed_name="c", headers=headers)
        item = feed.items[0]
        assert item.title == "مفتي السعودية: مقاطعة قطر فيها مصلحة للمسلمين"
        assert item.link == (
            "https://news-c.example/index.php?option=com_content&view=article&id=86920&catid=2"
        )
        assert item.guid == "86920"  # a bare number: identify scopes it to the site
        assert item.published == datetime(2017, 6, 8, 15, 34, tzinfo=UTC)
        assert item.summary.startswith("قال مفتي عام المملكة العربية السعودية، الشيخ عبدالعزيز")
        assert "المزيد" not in item.summary  # the "more" link paragraph


def test_escaped_html_description_and_double_escaped_title() -> None:
    feed = _parse("news-ar/news-d-society-escaped.xml")
    item = feed.items[0]
    # The title is escaped twice in the file (&amp;quot;): it still comes out as quotes.
    assert item.title == 'بسبب "غرابيب سود" : الكويتيون يطالبون بغلق مكتب قناة إم بي سي'
    assert item.link == "https://news-d.example/society/94429.html?utm_source=rss&utm_medium=feed"
    assert item.summary.startswith('تصدّر هاشتاغ "إغلاق_مكتب_mbc_مطلب_شعبي" موقع تويتر')
    for each in feed.items:
        assert not re.search(r"<|&lt;|&gt;|&amp;|&quot;", each.title + each.summary), each.link
        assert "اقرأ أيضاً" not in each.summary


def test_feed_without_guids() -> None:
    feed = _parse("news-ar/news-d-sport-noguid.xml")
    assert len(feed.items) == 30
    assert all(item.guid is None for item in feed.items)
    item = feed.items[0]
    assert item.title == "بسبب تهديدات لعائلته : بن شيخة يغادر الرجاء البيضاوي"
    assert item.link == "https://news-d.example/sport/94314.html?utm_source=rss&utm_medium=feed"
    assert item.published == datetime(2017, 6, 8, 17, 58, tzinfo=UTC)


def test_raw_arabic_link_and_urdu_feed() -> None:
    item = _parse("news-ar/news-g-politics.xml").items[0]
    assert item.link == (
        "https://news-g.example/ar/article/21-منسقا-جهويا-للنداء-يرفضون-البيان-المشترك/92/86779"
    )
    assert item.guid == "https://news-g.example/?p=86779"
    urdu = _parse("news-ar/bbc-urdu.xml")
    assert urdu.ttl_s == 15 * 60
    assert urdu.items[0].title.startswith("امریکی عسکری امداد کی بندش کی وجوہات")


def test_every_news_ar_feed_parses_cleanly() -> None:
    expected = {row["path"]: int(row["fp_entries"]) for row in _manifest_rows()}
    for path in sorted(NEWS_AR.glob("*.xml")):
        feed = parse_feed(path.read_bytes(), feed_name=path.stem)
        assert len(feed.items) == expected[f"news-ar/{path.name}"]
        assert feed.bozo is None
        for item in feed.items:
            assert item.title and item.link and item.summary, item
            assert item.link.startswith("https://") or item.link.startswith("http://")
            assert item.published is not None and item.published.tzinfo is UTC
            assert "\n\n" not in item.summary + item.content


# --- seed: one paragraph printed twice with a small change ---------------------------------------

_SEED_LIKE = _rss(
    """<item><title>عنوان تجريبي عن سوريا</title>
    <link>https://www.site.example/news/1-test</link><guid isPermaLink="false">site-1</guid>
    <pubDate>Wed, 07 Oct 2015 14:32:00 +0300</pubDate>
    <category>عربي ودولي</category><category>سوريا</category>
    <description><![CDATA[<p>قال الوزير #كارتر ان بلاده لا تنسق مع موسكو في #سوريا، واصفاً
    #التدخل_الروسي بانه "خطأ".</p>]]></description>
    <content:encoded><![CDATA[<p>المصدر: "وكالات"</p><p>قال الوزير #كارتر ان بلاده لا تنسق مع
    موسكو في #سوريا، واصفاً #التدخل_الروسي بانه "خطأ".</p><p>وقال المتحدث باسم الوزارة ان
    "الوزارة درست الاقتراحات حول تنسيق العمليات في اطار مكافحة تنظيم الدولة الاسلامية على
    الاراضي السورية".</p><p>وقال المتحدث باسم الوزارة ان "الوزارة درست الاقتراحات حول تنسيق
    العمليات في إطار مكافحة تنظيم "داعش" على الاراضي السورية".</p><p>وختم بالقول.</p>]]>
    </content:encoded></item>"""
)


def test_seed_like_item() -> None:
    feed = parse_feed(_SEED_LIKE, feed_name="seed")
    (item,) = feed.items
    assert item.title == "عنوان تجريبي عن سوريا"
    assert item.guid == "site-1"
    assert item.published == datetime(2015, 10, 7, 11, 32, tzinfo=UTC)
    assert item.categories.split("\n") == ["عربي ودولي", "سوريا"]
    assert item.summary == (
        'قال الوزير #كارتر ان بلاده لا تنسق مع موسكو في #سوريا، واصفاً #التدخل_الروسي بانه "خطأ".'
    )
    paragraphs = item.content.split("\n")
    assert paragraphs[0] == 'المصدر: "وكالات"'
    assert paragraphs[1] == item.summary
    assert len([p for p in paragraphs if p.startswith("وقال المتحدث باسم الوزارة")]) == 1
    assert "في اطار مكافحة تنظيم الدولة الاسلامية" in item.content  # the first printing is kept
    assert paragraphs[-1] == "وختم بالقول."


@pytest.mark.skipif(not SHARED_SEED.exists(), reason="shared corpus seed not present")
def test_real_seed_repeated_paragraph_once() -> None:
    # The seed has no license of its own, so it is read in place rather than copied.
    (item,) = parse_feed(SHARED_SEED.read_bytes(), feed_name="annahar").items
    assert item.title == "أميركا لم توافق على التعاون عسكرياً مع روسيا في سوريا"
    assert item.guid == "annahar-273045"
    assert item.link == "https://www.annahar.com/arabic/article/273045-amerika-lam-towafek"
    assert item.published == datetime(2015, 10, 7, 11, 32, tzinfo=UTC)
    assert item.categories.split("\n") == ["عربي ودولي", "سوريا"]
    assert item.content.count("وقال المتحدث باسم الوزارة الجنرال ايغور كوناشنكوف") == 1
    assert item.content.count("#التدخل_الروسي") == 1
    assert item.summary in item.content.split("\n")


# --- fields -------------------------------------------------------------------------------------


def test_content_equal_to_summary_is_emptied() -> None:
    body = _rss(
        "<item><title>t</title><link>https://site.example/a</link>"
        "<description>&lt;p&gt;Same text.&lt;/p&gt;</description>"
        "<content:encoded><![CDATA[<div><p>Same   text</p></div>]]></content:encoded></item>"
    )
    (item,) = parse_feed(body, feed_name="f").items
    assert (item.summary, item.content) == ("Same text.", "")


def test_relative_links_are_resolved() -> None:
    body = _rss(
        "<item><title>a</title><link>/news/1.html</link></item>"
        "<item><title>b</title><link>2.html?x=1</link></item>"
        "<item><title>c</title><link>javascript:alert(1)</link></item>"
        "<item><title>d</title><link>https://other.example/abs</link></item>"
        "<item><title>e</title></item>"
    )
    items = parse_feed(body, feed_name="f", base_url="https://feeds.site.example/rss.xml").items
    assert [item.link for item in items] == [
        "https://site.example/news/1.html",
        "https://site.example/news/2.html?x=1",
        None,
        "https://other.example/abs",
        None,
    ]


def test_relative_channel_link_resolved_against_base_url() -> None:
    body = (
        b'<rss version="2.0"><channel><title>t</title><link>/</link>'
        b"<item><title>a</title><link>story/1</link></item></channel></rss>"
    )
    feed = parse_feed(body, feed_name="f", base_url="https://site.example/feeds/rss.xml")
    assert feed.link == "https://site.example/"
    assert feed.items[0].link == "https://site.example/story/1"


def test_atom_relative_links_resolve_against_the_document_url() -> None:
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b'<link rel="alternate" href="https://site.example/"/>'
        b'<entry><title>a</title><id>urn:x:1</id><link rel="alternate" href="2024/story"/></entry>'
        b'<entry xml:base="https://cdn.example/base/"><title>b</title><id>urn:x:2</id>'
        b'<link rel="alternate" href="story"/></entry></feed>'
    )
    items = parse_feed(body, feed_name="f", base_url="https://feeds.site.example/atom/all").items
    assert [item.link for item in items] == [
        "https://feeds.site.example/atom/2024/story",
        "https://cdn.example/base/story",
    ]


def test_dates() -> None:
    body = _rss(
        "<item><title>future</title><pubDate>Fri, 01 Jan 2100 00:00:00 +0000</pubDate></item>"
        "<item><title>bad</title><pubDate>not a date at all</pubDate></item>"
        "<item><title>none</title></item>"
        "<item><title>zone</title><pubDate>Sun, 31 Dec 2023 23:30:00 -0500</pubDate></item>"
    )
    dates = [item.published for item in parse_feed(body, feed_name="f").items]
    assert dates == [
        datetime(2100, 1, 1, tzinfo=UTC),
        None,
        None,
        datetime(2024, 1, 1, 4, 30, tzinfo=UTC),
    ]


def test_atom_updated_used_when_no_published() -> None:
    body = (
        b'<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>'
        b"<entry><title>a</title><id> urn:x:1 </id><updated>2024-02-03T04:05:06+02:00</updated>"
        b'<summary type="text">5 &lt; 6 &amp; &lt;b&gt; is literal</summary></entry></feed>'
    )
    (item,) = parse_feed(body, feed_name="f").items
    assert item.published == datetime(2024, 2, 3, 2, 5, 6, tzinfo=UTC)
    assert item.guid == "urn:x:1"
    assert item.summary == "5 < 6 & is literal"  # "<b>" in a text field is mislabelled HTML


def test_empty_guid_is_none_and_blank_titles() -> None:
    body = _rss("<item><guid>   </guid><description>d</description></item>")
    (item,) = parse_feed(body, feed_name="f").items
    assert (item.guid, item.title, item.summary) == (None, "", "d")


def test_ttl_and_syndication_period() -> None:
    hourly = _rss(
        "", "<ttl>30</ttl><sy:updatePeriod>hourly</sy:updatePeriod>"
        "<sy:updateFrequency>4</sy:updateFrequency>"
    )  # fmt: skip
    feed = parse_feed(hourly, feed_name="f")
    assert (feed.ttl_s, feed.update_period_s, feed.items) == (1800, 900, ())
    daily = _rss("", "<ttl>soon</ttl><sy:updatePeriod> Daily </sy:updatePeriod>")
    assert (
        parse_feed(daily, feed_name="f").ttl_s,
        parse_feed(daily, feed_name="f").update_period_s,
    ) == (
        None,
        86_400,
    )
    bad = _rss("", "<ttl>-5</ttl><sy:updatePeriod>fortnightly</sy:updatePeriod>")
    assert (
        parse_feed(bad, feed_name="f").ttl_s,
        parse_feed(bad, feed_name="f").update_period_s,
    ) == (
        None,
        None,
    )


def test_bozo_feed_yields_its_items() -> None:
    feed = _parse("illformed/real/hackernews-malformed-latin1.xml")
    assert feed.bozo is not None and "SAXParseException" in feed.bozo
    assert len(feed.items) == 18
    assert feed.items[0].title == "Gitea \u2013 Alternative to GitLab and GitHub"
    # Its links are broken on purpose ("htpt:/:s://gitea.io", "file:///..."): only http(s) stay.
    assert feed.items[0].link is None
    assert feed.items[6].link == "https://en.wikipedia.org/wiki/Seikilos_epitaph"
    assert all(item.link is None or item.link.startswith("http") for item in feed.items)


def test_script_in_unsanitized_html_is_not_text() -> None:
    body = _rss(
        "<item><title>t</title><description><![CDATA[<p>safe</p>"
        "<script>document.cookie</script><p onclick='x()'>also safe</p>]]></description></item>"
    )
    assert parse_feed(body, feed_name="f").items[0].summary == "safe\nalso safe"


# --- not a feed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty body"),
        (b" \r\n\t ", "empty body"),
        (
            b"<!DOCTYPE html><html><head><title>Site</title></head><body><p>Hi</p></body></html>",
            "not a feed: looks like an HTML page",
        ),
        (b"<html><body>moved</body></html>", "not a feed: looks like an HTML page"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "items": []}', "looks like JSON"),
        (b'<?xml version="1.0"?>\n<!-- c --><catalog><book/></catalog>', "XML root <catalog>"),
        (b"just some text", "not a feed: no XML root element"),
    ],
)
def test_not_a_feed(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_feed(body, feed_name="f")


def test_not_a_feed_corpus_file() -> None:
    with pytest.raises(ParseError, match=re.escape("not a feed: XML root <catalog>")):
        _parse("notfeed/feed-rs/xml_sample_1.xml")


def test_parse_error_is_an_aggregator_error() -> None:
    assert issubclass(ParseError, AggregatorError)


def test_body_naming_a_local_file_is_not_opened(tmp_path: Path) -> None:
    # feedparser opens a path it is given as bytes; parse_feed must treat the body as data.
    local = tmp_path / "feed.xml"
    local.write_bytes(_rss("<item><title>from disk</title></item>"))
    with pytest.raises(ParseError):
        parse_feed(str(local).encode(), feed_name="f")


def test_every_copied_corpus_file_parses_or_raises_parse_error() -> None:
    rows = _manifest_rows()
    assert len(rows) > 400
    refused = []
    for row in rows:
        body = (FEEDS / row["path"]).read_bytes()
        try:
            feed = parse_feed(body, feed_name="corpus", headers={"Content-Type": "text/xml"})
        except ParseError:
            refused.append(row["path"])
            continue
        assert isinstance(feed, ParsedFeed)
        for item in feed.items:
            assert isinstance(item, Item)
            assert item.published is None or item.published.tzinfo is UTC
            assert item.link is None or item.link.startswith(("http://", "https://"))
    # Only documents with no entries at all are refused.
    assert {row["path"] for row in rows if row["fp_entries"] == "0"} >= set(refused)
    assert "json/feedparser-example.json" in refused


def test_item_counts_match_feedparser_on_the_corpus() -> None:
    for row in _manifest_rows():
        if row["fp_entries"] == "0":
            continue
        feed = _parse(row["path"])
        assert len(feed.items) == int(row["fp_entries"]), row["path"]


# --- hostile XML --------------------------------------------------------------------------------


def test_external_entity_does_not_leak_a_local_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-7f3a", encoding="utf-8")
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "file://{secret}">\n]>\n'
        '<rss version="2.0"><channel><title>t &xxe;</title><item><title>a &xxe;</title>'
        "<description>&xxe;</description><category>&xxe;</category><guid>&xxe;</guid>"
        "</item></channel></rss>"
    ).encode()
    try:
        feed = parse_feed(body, feed_name="f")
    except ParseError:
        return
    assert "TOP-SECRET" not in feed.title
    for item in feed.items:
        assert "TOP-SECRET" not in repr(item)


def test_billion_laughs_is_harmless_and_fast() -> None:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol0 "lol">\n{entities}]>\n'
        '<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title>'
        "<description>&lol9;&lol9;</description></item></channel></rss>"
    ).encode()
    started = time.monotonic()
    try:
        feed = parse_feed(body, feed_name="f")
    except ParseError:
        feed = None
    assert time.monotonic() - started < 2
    if feed is not None:
        assert all(len(item.title) + len(item.summary) < 1000 for item in feed.items)


def test_quadratic_entity_blowup_is_refused() -> None:
    # One flat 20 000-character entity referenced 20 000 times: 80 KB that feedparser's fallback
    # parser would expand to 400 MB.
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "{"A" * 20_000}">\n]>\n'
        f'<rss version="2.0"><channel><title>t</title><item><title>{"&a;" * 20_000}</title>'
        "</item></channel></rss>"
    ).encode()
    started = time.monotonic()
    with pytest.raises(ParseError, match="entity expansion too large"):
        parse_feed(body, feed_name="f")
    assert time.monotonic() - started < 1


def test_small_declared_entities_still_work() -> None:
    body = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY site "Site Name">\n]>\n'
        b'<rss version="2.0"><channel><title>&site;</title><item><title>News from &site;</title>'
        b"</item></channel></rss>"
    )
    feed = parse_feed(body, feed_name="f")
    assert feed.title == "Site Name"
    assert feed.items[0].title == "News from Site Name"


# --- fuzz ---------------------------------------------------------------------------------------

_FUZZ_SEEDS = [
    (NEWS_AR / "news-c-latest-cp1256.xml").read_bytes()[:6000],
    (NEWS_AR / "news-b-sports-atom.xml").read_bytes()[:6000],
]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_a_feed_or_parse_error(body: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_feed(body, feed_name="fuzz", headers={"Content-Type": "application/xml"})


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(_FUZZ_SEEDS),
    st.integers(min_value=0, max_value=5999),
    st.binary(min_size=0, max_size=8),
)
def test_damaged_real_feeds_give_a_feed_or_parse_error(seed: bytes, at: int, junk: bytes) -> None:
    body = seed[:at] + junk + seed[at + len(junk) :]
    try:
        feed = parse_feed(body, feed_name="fuzz")
    except ParseError:
        return
    for item in feed.items:
        assert item.published is None or item.published.tzinfo is UTC


def test_character_references_that_are_no_character_do_not_lose_the_feed() -> None:
    # Some CMSs write an emoji as two UTF-16 surrogate references; feedparser 6 raises on a
    # surrogate or a number past U+10FFFF, and the whole feed failed on every poll.
    body = _rss(
        "<item><title>smile &#55357;&#56832; lone &#xD800; big &#x110000; &#1587; &#128512;"
        "</title><guid>1</guid></item><item><title>the next one</title><guid>2</guid></item>"
    )
    feed = parse_feed(body, feed_name="refs")
    assert [item.title for item in feed.items] == [
        "smile \U0001f600 lone \ufffd big \ufffd \u0633 \U0001f600",
        "the next one",
    ]
    assert feed.bozo == "3 character reference(s) that are no character mended"
    plain = _rss("<item><title>&#1587;&#1608;&#1585;&#1610;&#1575; &#128512;</title></item>")
    assert parse_feed(plain, feed_name="refs").bozo is None


def test_one_malformed_item_does_not_change_the_other_items_guids() -> None:
    # One bare & sends the whole document to feedparser's fallback parser, which used to keep
    # "&amp;" in ids: every old item's guid key changed and the feed was switched to link
    # keys for good, as if it reused its guids.
    item = "<item><title>{}</title><guid>https://site.example/1.html?a=1&amp;b=2</guid></item>"
    strict = parse_feed(_rss(item.format("fine")), feed_name="f")
    loose = parse_feed(_rss(item.format("fine") + item.format("R&D budget")), feed_name="f")
    assert loose.bozo  # the fallback parser read it
    assert [i.guid for i in loose.items] == [strict.items[0].guid] * 2
    assert strict.items[0].guid == "https://site.example/1.html?a=1&b=2"


def test_arabic_in_windows_1256_declared_as_utf8_is_read_as_arabic() -> None:
    # Many Arabic sites still write windows-1256; declared as UTF-8 (or not at all), feedparser
    # read it as windows-1252, Latin mojibake that no watchlist could ever match.
    item = (
        "<item><title>الجيش السوري يتقدم في ريف دمشق</title>"
        "<description>قال مسؤولون إن القوات سيطرت على مواقع جديدة</description></item>"
    )
    for encoding in ("UTF-8", ""):
        body = _rss(item, encoding=encoding).replace(b' encoding=""', b"")
        feed = parse_feed(body.decode().encode("cp1256"), feed_name="f")
        assert feed.items[0].title == "الجيش السوري يتقدم في ريف دمشق", encoding
        assert feed.bozo == "not UTF-8 as declared: read as windows-1256 (Arabic)"
    # A Latin-script feed in windows-1252 mislabelled the same way is left to feedparser.
    latin = _rss("<item><title>Bürgermeister äußert sich über Straßenbau in Köln</title></item>")
    feed = parse_feed(latin.decode().encode("cp1252"), feed_name="f")
    assert feed.items[0].title == "Bürgermeister äußert sich über Straßenbau in Köln"
    assert "windows-1256" not in (feed.bozo or "")
