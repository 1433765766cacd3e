"""Cutting a feed body at its items (aggregator/segments.py).

The contract: parsing a document of the header, some of the items and the footer gives exactly
those items of a parse of the whole body. Checked on every feed of the corpus that can be cut,
and every real news feed must be one of those.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.parse import ParseError, parse_feed
from aggregator.segments import MAX_SPLIT_BYTES, split

FEEDS = Path(__file__).parent / "data" / "feeds"
NEWS = sorted(
    p for folder in ("news-ar", "news-other") for p in (FEEDS / folder).rglob("*") if p.is_file()
)
NEWS = [p for p in NEWS if p.suffix not in (".json", ".tsv")]
CORPUS = sorted(
    p
    for p in FEEDS.rglob("*")
    if p.is_file()
    and p.suffix not in (".json", ".tsv")
    # Not feeds: a document of none of their items is no feed either, and read_body then
    # parses the whole body (a ParseError of the smaller one is never final).
    and not {"json", "notfeed"} & set(p.parts)
)


def subsets(count: int) -> list[list[int]]:
    """Kinds of "which items are new": none, the first, the last, every other, all."""
    return [[], [0], [count - 1], list(range(0, count, 2)), list(range(count))]


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(FEEDS)))
def test_a_document_of_some_items_parses_to_exactly_those_items(path: Path) -> None:
    body = path.read_bytes()
    cut = split(body)
    if cut is None:
        return
    try:
        whole = parse_feed(body, feed_name="f")
    except ParseError:
        return
    if whole.bozo or len(whole.items) != len(cut.items):
        return  # the pipeline then parses whole bodies only (read_body)
    for kept in subsets(len(cut.items)):
        part = parse_feed(cut.document(kept), feed_name="f")
        assert part.bozo is None
        assert part.items == tuple(whole.items[i] for i in kept)
        assert (part.title, part.link, part.ttl_s) == (whole.title, whole.link, whole.ttl_s)


def test_every_real_news_feed_can_be_cut() -> None:
    assert len(NEWS) > 30
    assert [p.name for p in NEWS if split(p.read_bytes()) is None] == []


def rss(items: str, channel: str = "<title>T</title><link>https://a.example/</link>") -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"{channel}{items}</channel></rss>\n"
    ).encode()


ITEM = "<item><title>{n}</title><link>https://a.example/{n}</link><guid>g{n}</guid></item>"


def items(*numbers: int) -> str:
    return "\n".join(ITEM.format(n=n) for n in numbers)


def test_the_cut_is_at_the_items_and_the_digests_tell_them_apart() -> None:
    cut = split(rss(items(1, 2, 3)))
    assert cut is not None
    assert [item.decode() for item in cut.items] == [ITEM.format(n=n) for n in (1, 2, 3)]
    assert len(set(cut.digests)) == 3
    assert cut.footer == b"</channel></rss>\n"
    again = split(rss(items(0, 1, 2, 3)))
    assert again is not None and again.digests[1:] == cut.digests


def test_dates_of_the_feed_do_not_change_the_context_but_anything_else_does() -> None:
    def context(channel: str) -> bytes:
        cut = split(rss(items(1), channel))
        assert cut is not None
        return cut.context

    base = "<title>T</title><link>https://a.example/</link>"
    dated = base + "<lastBuildDate>Mon, 06 May 2024 10:00:00 GMT</lastBuildDate>"
    redated = base + "<lastBuildDate>Tue, 07 May 2024 11:30:00 GMT</lastBuildDate>"
    assert context(dated) == context(redated) == context(base)
    assert context(base + "<dc:date>2024-05-06</dc:date>") == context(base)
    # The channel link is the base of relative item links: a new one is a new context.
    assert context("<title>T</title><link>https://b.example/</link>") != context(base)
    assert context("<title>U</title><link>https://a.example/</link>") != context(base)


def test_the_item_list_of_an_rss_1_0_channel_is_not_context() -> None:
    def rdf(listed: str) -> bytes:
        return (
            '<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
            ' xmlns="http://purl.org/rss/1.0/"><channel rdf:about="https://a.example/">'
            "<title>T</title><link>https://a.example/</link>"
            f"<items><rdf:Seq>{listed}</rdf:Seq></items></channel>"
            '<item rdf:about="https://a.example/1"><title>1</title>'
            "<link>https://a.example/1</link></item></rdf:RDF>"
        ).encode()

    one = split(rdf('<rdf:li resource="https://a.example/1"/>'))
    two = split(rdf('<rdf:li resource="https://a.example/2"/><rdf:li resource="x"/>'))
    assert one is not None and two is not None
    assert one.context == two.context and len(one.items) == 1


def test_items_quoted_in_cdata_or_comments_are_not_items() -> None:
    quoted = (
        "<item><title>1</title><description><![CDATA[<p>an <item>x</item> and </item></p>"
        "<!-- wp:paragraph -->]]></description></item>"
        "<!-- <item><title>old</title></item> -->" + ITEM.format(n=2)
    )
    cut = split(rss(quoted))
    assert cut is not None
    assert len(cut.items) == 2
    assert cut.items[0].endswith(b"</description></item>")
    whole = parse_feed(rss(quoted), feed_name="f")
    assert [i.title for i in whole.items] == ["1", "2"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (
            b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "<item>">]>'
            + rss(items(1)).split(b"?>", 1)[1],
            "entities",
        ),
        (rss("<item><title>1</title><item><title>2</title></item></item>"), "nested"),
        (rss("<item/>" + items(1)), "empty item"),
        (rss(items(1) + "<title>between</title>" + items(2)), "text between items"),
        (rss(items(1) + "<![CDATA[" + items(2)), "unclosed CDATA"),
        (rss(items(1) + "<!-- " + items(2)), "unclosed comment"),
        (rss(items(1) + "</entry>"), "mismatched end"),
        (rss("<title>no items</title>"), "no items"),
        (
            b'<?xml version="1.0"?><entry xmlns="http://www.w3.org/2005/Atom">'
            b"<title>t</title></entry>",
            "an entry document",
        ),
        (rss(items(1)).replace(b"<title>1", b"<title>\xff\xfe1"), "not UTF-8"),
        (rss(items(1)).decode().encode("utf-16"), "UTF-16"),
        # Start tags that never close: each is read up to the next "<", not to the body's end.
        (rss("<item " * 5000), "unclosed start tags"),
    ],
)
def test_bodies_that_cannot_be_cut_safely_are_not(body: bytes, why: str) -> None:
    assert split(body) is None, why


def test_a_body_too_big_to_cut_on_the_event_loop_is_not() -> None:
    item = ITEM.format(n=1) + "\n"
    count = MAX_SPLIT_BYTES // len(item)
    assert split(rss(item * (count - 20))) is not None
    assert split(rss(item * (count + 20))) is None


def test_a_declared_single_byte_encoding_is_cut() -> None:
    body = (
        '<?xml version="1.0" encoding="windows-1256"?>\n<rss version="2.0"><channel><title>T'
        "</title><item><title>سوريا</title><guid>1</guid></item>"
        "<item><title>لبنان</title><guid>2</guid></item></channel></rss>"
    ).encode("cp1256")
    cut = split(body)
    assert cut is not None and len(cut.items) == 2
    part = parse_feed(cut.document([1]), feed_name="f")
    assert [i.title for i in part.items] == ["لبنان"]
