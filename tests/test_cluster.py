"""cluster: the near-duplicate decision on plain values and on the labelled news-ar pairs, and
the "also:" line that compose adds to an alert of a story several outlets carried."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import rtl
from aggregator.cluster import (
    DEFAULT_THRESHOLD,
    MAX_SOURCES,
    MIN_WORDS,
    Fingerprint,
    Source,
    add_source,
    also_sources,
    find_story,
    fingerprint,
    similarity,
    text_fingerprint,
)
from aggregator.compose import TELEGRAM_LIMIT, Message, add_sources, compose_alert
from aggregator.config import validate_config
from aggregator.errors import ConfigError
from aggregator.identify import normalize_link
from aggregator.models import Hit, Item, WatchlistMatch
from aggregator.parse import parse_feed
from tests.servers.fake_telegram import parse_telegram_html, utf16_length

NEWS_AR = Path(__file__).parent / "data" / "feeds" / "news-ar"

LEAD = (
    "أعلنت وزارة الدفاع الروسية توجيه ضربات صاروخية لمواقع تنظيم داعش في سوريا، وقالت إن "
    "صواريخ مجنحة من طراز كاليبر أطلقت على مواقع للتنظيم بالقرب من مدينة تدمر وسط البلاد."
)


def test_fingerprint_normalizes_drops_function_words_and_prefixes() -> None:
    plain = text_fingerprint("قصف روسي على مواقع داعش", "أعلنت الوزارة ان الضربات استهدفت المواقع")
    marked = text_fingerprint("قَصْف روسيّ على مواقعِ داعش", "اعلنت والوزارة أنّ بالضربات استهدفت")
    assert "علي" not in plain.words and "على" not in plain.words
    assert {"قصف", "روسي", "مواقع", "داعش", "اعلنت", "وزاره", "ضربات"} <= plain.words
    assert marked.words <= plain.words


def test_fingerprint_keeps_numbers_but_not_years() -> None:
    found = text_fingerprint("Storm kills 23 in 2017", "Officials said 05 roads and 1999 homes")
    assert found.numbers == {"23", "5"}
    assert "storm" in found.words and "said" not in found.words


def test_fingerprint_reads_the_first_lead_words_only() -> None:
    long_lead = " ".join(f"word{n}" for n in range(200)).replace("word", "kalima")
    found = text_fingerprint("", long_lead)
    assert len(found.words) == 40


def test_reworded_copy_is_the_same_story() -> None:
    a = text_fingerprint("روسيا تطلق صواريخ كاليبر على مواقع لداعش قرب تدمر", LEAD)
    b = text_fingerprint(
        "الدفاع الروسية: ضربات صاروخية على مواقع داعش بسوريا",
        "أعلنت وزارة الدفاع الروسية، اليوم، عن توجيه ضربات لمواقع تنظيم داعش الإرهابي في سوريا، "
        "وأطلقت صواريخ مجنحة من طراز كاليبر على مواقع لتنظيم داعش بالقرب من مدينة تدمر.",
    )
    assert similarity(a, b) >= DEFAULT_THRESHOLD
    assert find_story(b, [("other", text_fingerprint("x", "y z")), ("s1", a)]) == "s1"


def test_different_story_of_the_same_topic_is_not() -> None:
    a = text_fingerprint("روسيا تطلق صواريخ كاليبر على مواقع لداعش قرب تدمر", LEAD)
    b = text_fingerprint(
        "ايران تستخدم الصواريخ البالستية لضرب داعش في سوريا",
        "أطلقت ايران مجموعة من الصواريخ البالستية من غرب إيران على مواقع لتنظيم داعش في دير "
        "الزور شرق سوريا وهي المرة الأولى منذ ثلاثين عاما التي تطلق فيها صواريخ خارج حدودها.",
    )
    assert similarity(a, b) < DEFAULT_THRESHOLD
    assert find_story(b, [("s1", a)]) is None


def test_numbers_that_disagree_make_two_stories() -> None:
    words = "announced power cut in the city centre from eight in the morning until one"
    sunday_26 = text_fingerprint("Power cut on Sunday 26", words)
    sunday_19 = text_fingerprint("Power cut on Sunday 19", words)
    undated = text_fingerprint("Power cut on Sunday", words)
    assert similarity(sunday_26, sunday_19) == 0.0
    assert similarity(sunday_26, undated) == 1.0, "a number on one side only is no conflict"


def test_short_texts_are_never_joined() -> None:
    short = text_fingerprint("Breaking news", "update soon")
    assert len(short.words) < MIN_WORDS
    assert similarity(short, short) == 0.0
    assert find_story(short, [("s", short)]) is None


def test_find_story_prefers_the_closest_and_checks_the_threshold() -> None:
    probe = Fingerprint(frozenset(f"w{n}" for n in range(10)), frozenset())
    close = Fingerprint(frozenset(f"w{n}" for n in range(9)) | {"x", "y"}, frozenset())
    closer = Fingerprint(frozenset(f"w{n}" for n in range(10)) | {"z"}, frozenset())
    assert find_story(probe, [("close", close), ("closer", closer)]) == "closer"
    assert find_story(probe, [("close", close)], threshold=0.95) is None
    with pytest.raises(ValueError, match="threshold"):
        find_story(probe, [], threshold=0)


def test_sources_are_unique_by_name_and_capped() -> None:
    sources = (Source("A", "https://a.example/1"),)
    sources = add_source(sources, Source("B", "https://b.example/1"), limit=3)
    assert add_source(sources, Source("A", "https://a.example/2"), limit=3) == sources
    sources = add_source(sources, Source("C", None), limit=3)
    assert add_source(sources, Source("D", None), limit=3) == sources
    assert also_sources(sources, "B") == (Source("A", "https://a.example/1"), Source("C", None))
    many = tuple(Source(f"S{n}", None) for n in range(9))
    assert len(also_sources(many, "S0")) == MAX_SOURCES


# -- precision and recall on relations.json ----------------------------------------------------


def _corpus() -> tuple[dict[tuple[str, str], Item], list[tuple[tuple[str, str], ...]]]:
    items = {}
    for path in sorted(NEWS_AR.glob("news-*.xml")):
        for item in parse_feed(path.read_bytes(), feed_name=path.name).items:
            items[path.name, item.guid or item.link or ""] = item
    relations = json.loads((NEWS_AR / "relations.json").read_text(encoding="utf-8"))
    return items, [
        ((r["a"]["feed"], r["a"]["key"]), (r["b"]["feed"], r["b"]["key"]), (r["relation"],))
        for r in relations["relations"]
    ]


def test_precision_and_recall_on_news_ar_relations() -> None:
    items, labelled = _corpus()
    prints = {key: fingerprint(item) for key, item in items.items()}
    tp = fp = fn = tn = 0
    for a, b, (relation,) in labelled:
        same = similarity(prints[a], prints[b]) >= DEFAULT_THRESHOLD
        if relation in ("same-url", "same-story"):
            tp, fn = tp + same, fn + (not same)
        else:
            fp, tn = fp + same, tn + (not same)
    known = {frozenset((a, b)) for a, b, _ in labelled}
    links = {k: normalize_link(i.link) if i.link else k[1] for k, i in items.items()}
    flagged = [
        (a, b)
        for a, b in itertools.combinations(items, 2)
        if frozenset((a, b)) not in known
        and links[a] != links[b]
        and similarity(prints[a], prints[b]) >= DEFAULT_THRESHOLD
    ]
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    print(
        f"\nnear-duplicate decision on relations.json (threshold {DEFAULT_THRESHOLD}): "
        f"precision {precision:.3f}, recall {recall:.3f} (TP {tp}, FP {fp}, FN {fn}, TN {tn}); "
        f"unlabelled pairs flagged: {len(flagged)}"
    )
    assert (tp, fn) == (25, 0), "every same-url and same-story pair is found"
    assert (fp, tn) == (0, 9), "no different-story pair is joined"
    assert flagged == [], [(items[a].title, items[b].title) for a, b in flagged]


# -- the "also:" line --------------------------------------------------------------------------


def _message(
    title: str = "وزير الخارجية يبحث مع نظيره الروسي الوضع في سوريا", summary: str = LEAD
) -> Message:
    item = Item(
        feed="f",
        title=title,
        link="https://news.example/ar/1.html",
        summary=summary,
    )
    start = title.index("سوريا") if "سوريا" in title else 0
    match = WatchlistMatch("syria", (Hit("سوريا", "title", start, start + 5, title[start:][:5]),))
    return compose_alert(item, match, source="أخبار تجريبية")


def test_add_sources_appends_one_linked_isolated_line() -> None:
    message = _message()
    sources = [
        ("شبكة <الرافدين> & شركاؤها", "https://news-b.example/ar/article/1?a=1&b=2"),
        ("BBC News", "https://bbc.example/x"),
        ("بلا رابط", None),
        ("رابط سيء", "javascript:alert(1)"),
    ]
    html_text, plain = add_sources(message.html, message.plain, sources)
    assert html_text.startswith(message.html + "\n") and plain.startswith(message.plain + "\n")
    line = html_text.rsplit("\n", 1)[1]
    assert line.startswith("also: ")
    assert (
        f'{rtl.FSI}<a href="https://news-b.example/ar/article/1?a=1&amp;b=2">'
        f"شبكة &lt;الرافدين&gt; &amp; شركاؤها</a>{rtl.PDI}"
    ) in line
    assert f'{rtl.FSI}<a href="https://bbc.example/x">BBC News</a>{rtl.PDI}' in line
    assert f"{rtl.FSI}بلا رابط{rtl.PDI}" in line and f"{rtl.FSI}رابط سيء{rtl.PDI}" in line
    assert "javascript" not in html_text
    shown = parse_telegram_html(html_text)  # valid Telegram HTML
    assert shown.endswith(
        f"also: {rtl.FSI}شبكة <الرافدين> & شركاؤها{rtl.PDI}, {rtl.FSI}BBC News{rtl.PDI}, "
        f"{rtl.FSI}بلا رابط{rtl.PDI}, {rtl.FSI}رابط سيء{rtl.PDI}"
    )
    assert "https://bbc.example/x" in plain.rsplit("\n", 1)[1]


def test_add_sources_cleans_names_and_keeps_the_original_without_any() -> None:
    message = _message()
    html_text, _ = add_sources(
        message.html, message.plain, [("\u202eevil\u2066 name\x1b[31m", None), ("   ", None)]
    )
    line = html_text.rsplit("\n", 1)[1]
    assert line == f"also: {rtl.FSI}evil name[31m{rtl.PDI}"
    assert add_sources(message.html, message.plain, []) == (message.html, message.plain)


def test_add_sources_stays_within_telegrams_limit() -> None:
    message = _message(summary="كلمة " * 2000)
    long_link = "https://news.example/" + "a" * 1900
    sources = [(f"مصدر رقم {n} " + "x" * 80, long_link + str(n)) for n in range(5)]
    html_text, plain = add_sources(message.html, message.plain, sources)
    assert utf16_length(plain) <= TELEGRAM_LIMIT
    assert utf16_length(parse_telegram_html(html_text)) <= TELEGRAM_LIMIT
    assert "also: " in plain, "as many sources as fit are listed"
    listed = plain.rsplit("\n", 1)[1].count("https://")
    assert 1 <= listed < 5
    huge = [("x" * 60, "https://news.example/" + "b" * 2000)]
    full = _message(summary="كلمة " * 2000)
    squeezed_html, squeezed_plain = add_sources(full.html, full.plain + "y" * 3000, huge)
    assert squeezed_plain == full.plain + "y" * 3000, "nothing fits: unchanged"
    assert squeezed_html == full.html


def test_dedup_config_is_validated() -> None:
    config, _ = validate_config({"dedup": {"window": "2h", "threshold": 0.5}})
    assert (config.dedup.window, config.dedup.threshold) == (7200.0, 0.5)
    default, _ = validate_config({})
    assert (default.dedup.window, default.dedup.threshold) == (48 * 3600.0, DEFAULT_THRESHOLD)
    with pytest.raises(ConfigError) as problems:
        validate_config({"dedup": {"window": "soon", "threshold": 0, "windows": "1h"}})
    paths = [path for path, _ in problems.value.problems]
    assert paths == ["dedup.window", "dedup.threshold", "dedup.windows"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=3000))),
        max_size=7,
    ),
    st.integers(min_value=0, max_value=3000),
)
def test_add_sources_always_gives_valid_html_within_the_limit(
    sources: list[tuple[str, str | None]], summary_words: int
) -> None:
    message = _message(summary="كلمة " * summary_words)
    links = [
        (name, None if link is None else "https://x.example/" + link) for name, link in sources
    ]
    html_text, plain = add_sources(message.html, message.plain, links)
    assert utf16_length(plain) <= TELEGRAM_LIMIT
    assert utf16_length(parse_telegram_html(html_text)) <= TELEGRAM_LIMIT
    assert html_text.startswith(message.html) and plain.startswith(message.plain)
