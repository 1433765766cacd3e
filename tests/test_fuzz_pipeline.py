"""Fuzzing parse → match → compose with hypothesis: arbitrary bytes, and feed-shaped documents.

The only exception allowed out of the three stages is ParseError from parse; every message that
compose builds must be HTML that Telegram's parser accepts, at most 4096 UTF-16 units once
parsed. The generated documents are RSS 2.0, Atom 1.0 or RDF, in UTF-8, UTF-16 or windows-1256,
with fields written escaped, as CDATA or raw (so also malformed), holding HTML, entities (good,
bad and double-escaped), Arabic with marks and prefixes, bidi and C0 controls, emoji, dates good
and bad, and the watchlists' own terms so that messages get composed. tests/fuzz/fuzz_feed.py runs
the same check (tests/fuzz/pipeline.py) under atheris, for long runs.
"""

from __future__ import annotations

from html import escape

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.pipeline import check_pipeline

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- text ---------------------------------------------------------------------------------------

_SNIPPETS = [
    # markup
    "<p>", "</p>", "<b>", "</b>", "<br/>", "<br>", "<div>", "</div>", "<li>", "<h1>", "</h1>",
    '<a href="http://x.example/?a=1&amp;b=2">', "</a>", "<script>alert(1)</script>",
    "<style>p{}</style>", "<img src=x onerror=alert(1)>", "<iframe>", "<", ">", "</",
    "<![CDATA[", "]]>", "<!--", "-->", "<?pi?>", "<a href='", "<table><tr><td>", "<tg-spoiler>",
    # entities, good, bad and double-escaped
    "&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&nbsp;", "&hellip;", "&#1587;", "&#x202E;",
    "&#0;", "&#xD800;", "&#1114112;", "&bogus;", "&", "&#", "&lt;p&gt;", "&amp;lt;b&amp;gt;",
    "&amp;amp;",
    # the watchlists' terms and their variants
    "canary", "Syria", "US", "U.S.", "us", "words", "#سوريا", "سوريا", "وبسوريا", "لسوريا",
    "السوريين", "التدخل_الروسي", "#التدخل_الروسي", "التدخل الروسي", "عبد الله", "عبدالله",
    "كرة القدم", "في", "من", "the", "news", "أخبار",
    # Arabic spelling, marks, tatweel, Persian letters, digits
    "أكّد", "إجراءات", "مسؤول", "مسئول", "ـــ", "\u064b\u0651", "یک", "کتاب", "١٢٣", "۴۵",
    # controls, bidi, odd spaces, emoji, combining marks
    "\x00", "\x01", "\x1b[31m", "\x7f", "\x85", "\u200e", "\u200f", "\u202e", "\u2066", "\u061c",
    "\u2028", "\u2029", "\ufeff", "\ufffd", "\u00a0", "\t", "\n", "\r\n", " ", "👍🏽", "🇸🇾",
    "e\u0301", "\u0301\u0301\u0301",
    # sentence ends
    ". ", "؟ ", "! ", "… ", "، ",
]  # fmt: skip
_WORD = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x0621, max_codepoint=0x0652),
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=12,
)
_SHORT = st.lists(st.one_of(st.sampled_from(_SNIPPETS), _WORD), max_size=25).map("".join)
# Now and then a long text, to reach the length limits.
TEXT = st.one_of(
    _SHORT,
    st.builds(lambda text, times: text * times, _SHORT, st.integers(min_value=1, max_value=400)),
)

# --- feed documents -----------------------------------------------------------------------------


def _xml_text(text: str, mode: str) -> str:
    if mode == "escaped":
        return escape(text, quote=False)
    if mode == "cdata":
        return f"<![CDATA[{text}]]>"
    return text  # raw: may well break the XML, which is the point


_DATES = st.sampled_from(
    [
        "Fri, 10 May 2024 09:15:00 +0300",
        "2024-05-10T09:15:00Z",
        "2024-13-45T99:99:99Z",
        "Fri, 01 Jan 2999 00:00:00 GMT",
        "Sat, 01 Jan 10000 00:00:00 GMT",
        "0000-00-00",
        "yesterday",
        "",
    ]
)
_LINKS = st.one_of(
    st.sampled_from(
        [
            "http://x.example/a?utm_source=rss&amp;id=1",
            "/relative/path",
            "javascript:alert(1)",
            'http://x.example/"><b>',
            "http://[::1",
            "",
        ]
    ),
    TEXT.map(lambda t: "http://x.example/" + escape(t)),
)


@st.composite
def _item(draw: st.DrawFn, kind: str) -> str:
    mode = draw(st.sampled_from(["escaped", "cdata", "raw"]))
    title = _xml_text(draw(TEXT), mode)
    body = _xml_text(draw(TEXT), mode)
    content = _xml_text(draw(TEXT), mode)
    link = draw(_LINKS)
    date = escape(draw(_DATES))
    categories = draw(st.lists(TEXT.map(lambda t: escape(t, quote=False)), max_size=3))
    guid = escape(draw(st.one_of(st.just(""), _WORD, TEXT)), quote=False)
    if kind == "atom":
        body_type = draw(st.sampled_from(["html", "text", "xhtml"]))
        cats = "".join(f'<category term="{escape(c)}"/>' for c in categories)
        return (
            f'<entry><title type="{body_type}">{title}</title><link href="{escape(link)}"/>'
            f"<id>{guid}</id><updated>{date}</updated>"
            f'<summary type="{body_type}">{body}</summary>'
            f'<content type="{body_type}">{content}</content>{cats}</entry>'
        )
    cats = "".join(f"<category>{c}</category>" for c in categories)
    tag = "dc:date" if kind == "rdf" else "pubDate"
    return (
        f"<item><title>{title}</title><link>{escape(link, quote=False)}</link>"
        f"<guid>{guid}</guid><{tag}>{date}</{tag}><description>{body}</description>"
        f"<content:encoded>{content}</content:encoded>{cats}</item>"
    )


@st.composite
def feed_documents(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """An RSS, Atom or RDF document with random items, encoded, and its response headers."""
    kind = draw(st.sampled_from(["rss", "atom", "rdf"]))
    title = escape(draw(TEXT), quote=False)
    items = "".join(draw(st.lists(_item(kind), max_size=4)))
    if kind == "atom":
        document = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>{title}</title>{items}</feed>'
    elif kind == "rdf":
        document = (
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/">'
            f"<channel><title>{title}</title></channel>{items}</rdf:RDF>"
        )
    else:
        document = (
            '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/">'
            f"<channel><title>{title}</title>{items}</channel></rss>"
        )
    encoding = draw(st.sampled_from(["utf-8", "utf-16", "windows-1256"]))
    declared = f'<?xml version="1.0" encoding="{encoding}"?>\n'
    body = (declared + document).encode(encoding, errors="xmlcharrefreplace")
    if encoding == "utf-8" and draw(st.booleans()):
        # A few broken bytes at random places.
        for at in draw(st.lists(st.integers(0, max(0, len(body) - 1)), max_size=3)):
            body = body[:at] + b"\xff" + body[at:]
    content_type = draw(
        st.sampled_from(
            [
                "application/rss+xml",
                "application/xml; charset=utf-8",
                "text/xml",
                "text/html; charset=windows-1256",
                "",
            ]
        )
    )
    return body, ({"Content-Type": content_type} if content_type else {})


# --- the properties -----------------------------------------------------------------------------


def test_feed_shaped_documents() -> None:
    lengths: list[int] = []

    # Derandomized: the checks below on how far the documents got depend on what was drawn,
    # and a suite must not fail by chance (it did once, in a parallel run). test_arbitrary_bytes
    # and tests/fuzz/fuzz_feed.py keep exploring new inputs.
    @settings(SETTINGS, derandomize=True)
    @given(feed_documents())
    def one_document(document: tuple[bytes, dict[str, str]]) -> None:
        lengths.extend(check_pipeline(*document))

    one_document()
    # The property means little if generated documents never get as far as compose: they
    # must give many messages, some of them long.
    assert len(lengths) >= 100, len(lengths)
    assert max(lengths) > 900, max(lengths)


@SETTINGS
@given(
    st.sampled_from([b"", b'<rss version="2.0"><channel><item><title>canary ', b"<feed><entry>"]),
    st.binary(max_size=3000),
)
def test_arbitrary_bytes(prefix: bytes, tail: bytes) -> None:
    check_pipeline(prefix + tail)
