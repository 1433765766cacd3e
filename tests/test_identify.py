"""identify: link normalization and item keys, on plain values and on the news-ar relations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.identify import guid_problem, item_keys, normalize_link
from aggregator.models import Item
from aggregator.parse import parse_feed

NEWS_AR = Path(__file__).parent / "data" / "feeds" / "news-ar"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # tracking parameters, in any case and position
        (
            "https://news-d.example/society/94429.html?utm_source=rss&utm_medium=feed",
            "https://news-d.example/society/94429.html",
        ),
        (
            "https://site.example/a?id=5&utm_campaign=x&UTM_Content=y&fbclid=abc",
            "https://site.example/a?id=5",
        ),
        (
            "https://site.example/a?gclid=1&id=5&mc_cid=2&mc_eid=3&_ga=4&igshid=5&ref_src=6",
            "https://site.example/a?id=5",
        ),
        ("https://site.example/a?xtor=RSS-3208&at_medium=RSS", "https://site.example/a"),
        # http and https, case of scheme and host, default ports
        ("http://Site.Example/Path", "HTTPS://site.example/Path"),
        ("https://site.example:443/a", "https://site.example/a"),
        ("http://site.example:80/a", "https://site.example/a"),
        # fragment, empty path, trailing dot on the host
        ("https://site.example/a#comments", "https://site.example/a"),
        ("https://site.example", "https://site.example/"),
        ("https://site.example./a", "https://site.example/a"),
        # percent-encoding: unreserved decoded, hex upper-case, raw Arabic encoded
        ("https://site.example/%7Euser/%61b%2fc", "https://site.example/~user/ab%2Fc"),
        (
            "https://news-g.example/ar/article/سامح-الدربالي/96/86197",
            "https://news-g.example/ar/article/%D8%B3%D8%A7%D9%85%D8%AD-%D8%A7%D9%84%D8%AF%D8%B1"
            "%D8%A8%D8%A7%D9%84%D9%8A/96/86197",
        ),
        ("https://site.example/a/./b/../c", "https://site.example/a/c"),
        # empty query parameters
        ("https://site.example/a?&id=5&&", "https://site.example/a?id=5"),
    ],
)
def test_equal_links(a: str, b: str) -> None:
    assert normalize_link(a) == normalize_link(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://site.example/a?id=5", "https://site.example/a?id=6"),
        ("https://site.example/a?id=5&page=2", "https://site.example/a?page=2&id=5"),  # order kept
        ("https://site.example/Path", "https://site.example/path"),  # paths are case-sensitive
        ("https://site.example:8080/a", "https://site.example/a"),
        ("https://www.site.example/a", "https://site.example/a"),
        ("https://site.example/#!/story/1", "https://site.example/#!/story/2"),  # hash-bang routes
        ("https://site.example/a%2Fb", "https://site.example/a/b"),
    ],
)
def test_different_links(a: str, b: str) -> None:
    assert normalize_link(a) != normalize_link(b)


def test_normalized_form() -> None:
    assert normalize_link(
        "HTTPS://News-C.Example:443/index.php?option=com_content&utm_source=rss&id=86920#top"
    ) == ("//news-c.example/index.php?option=com_content&id=86920")


def test_bad_links_do_not_raise() -> None:
    assert normalize_link("http://[::1/") == "http://[::1/"
    assert normalize_link("https://site.example:99999/") == "https://site.example:99999/"
    assert normalize_link("  /relative/only  ") == "///relative/only"


def _item(**fields: str | None) -> Item:
    return Item(feed="f", title=fields.pop("title", None) or "t", **fields)  # type: ignore[arg-type]


def test_guid_key_is_scoped_to_the_site_of_the_link() -> None:
    a = _item(guid="12345", link="https://www.news-c.example/index.php?id=12345")
    b = _item(guid="12345", link="https://news-f.example/local/12345")
    ka = item_keys(a, feed_url="https://news-c.example/rss/latest.xml")
    kb = item_keys(b, feed_url="https://news-f.example/rss/local.xml")
    assert ka[0] == "guid:news-c.example:12345"
    assert kb[0] == "guid:news-f.example:12345"
    assert not set(ka) & set(kb)


def test_guid_key_is_shared_by_two_section_feeds_of_one_site() -> None:
    one = _item(guid="86920", link="https://news-c.example/index.php?id=86920&catid=2")
    two = _item(guid="86920", link="https://news-c.example/index.php?id=86920&catid=2")
    assert item_keys(one, feed_url="https://news-c.example/rss/latest.xml") == item_keys(
        two, feed_url="https://news-c.example/rss/local.xml"
    )


def test_guid_without_link_uses_the_feed_host() -> None:
    keys = item_keys(_item(guid=" abc "), feed_url="https://WWW.Site.Example/rss")
    assert keys == ("guid:site.example: abc ",)  # parse strips guids; identify keeps them as is


def test_permalink_guid_is_normalized() -> None:
    item = _item(
        guid="https://news-d.example/society/1.html?utm_source=rss",
        link="https://news-d.example/society/1.html?utm_source=rss&utm_medium=feed",
    )
    assert item_keys(item, feed_url="https://news-d.example/rss") == (
        "guid:news-d.example://news-d.example/society/1.html",
        "link://news-d.example/society/1.html",
    )


def test_link_key_when_no_guid() -> None:
    item = _item(link="http://news-d.example/sport/94314.html?utm_source=rss&utm_medium=feed")
    assert item_keys(item, feed_url="https://news-d.example/rss/sport.xml") == (
        "link://news-d.example/sport/94314.html",
    )


def test_hash_key_when_no_guid_and_no_link() -> None:
    a = _item(title="Breaking:  Something", summary="Body text")
    b = _item(title="breaking: something", summary="Body   text")
    c = _item(title="Breaking: Something", summary="Other body")
    d = _item(title="Breaking: Something", summary="Lead", content="Body text")
    key = item_keys(a, feed_url="https://x.example/rss")
    assert len(key) == 1 and key[0].startswith("hash:") and len(key[0]) == len("hash:") + 32
    assert key == item_keys(b, feed_url="https://y.example/rss")
    assert key != item_keys(c, feed_url="https://x.example/rss")
    assert key == item_keys(d, feed_url="https://x.example/rss")  # content preferred to summary


def _news_ar_items() -> dict[tuple[str, str], tuple[str, ...]]:
    """(feed file, relations key) -> item keys, for every item of every news-ar feed."""
    keys: dict[tuple[str, str], tuple[str, ...]] = {}
    for path in sorted(NEWS_AR.glob("news-*.xml")):
        site = path.name.split("-")[1]
        feed_url = f"https://{site}.example/rss/{path.stem}.xml"
        for item in parse_feed(path.read_bytes(), feed_name=path.stem).items:
            relation_key = item.guid or item.link
            assert relation_key is not None
            keys[(path.name, relation_key)] = item_keys(item, feed_url=feed_url)
    return keys


def test_news_ar_relations() -> None:
    keys = _news_ar_items()
    relations = json.loads((NEWS_AR / "relations.json").read_text(encoding="utf-8"))["relations"]
    shared = {"same-url": 0, "same-story": 0, "different-story-same-topic": 0}
    for relation in relations:
        a = keys[(relation["a"]["feed"], relation["a"]["key"])]
        b = keys[(relation["b"]["feed"], relation["b"]["key"])]
        if set(a) & set(b):
            shared[relation["relation"]] += 1
    # One article in two section feeds is one item; a story retold elsewhere is the cluster
    # stage's business, never identify's.
    assert shared == {"same-url": 11, "same-story": 0, "different-story-same-topic": 0}


def test_news_ar_primary_keys_only_collide_for_the_same_article() -> None:
    by_primary: dict[str, set[str]] = {}
    for (feed, _), keys in _news_ar_items().items():
        by_primary.setdefault(keys[0], set()).add(feed)
    repeated = {key for key, feeds in by_primary.items() if len(feeds) > 1}
    assert len(repeated) == 11  # the same-url pairs, each in two feeds


_URLS = st.builds(
    lambda scheme, host, path, query, fragment: f"{scheme}://{host}/{path}{query}{fragment}",
    st.sampled_from(["http", "https", "HTTP"]),
    st.from_regex(r"[A-Za-z0-9-]{1,10}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(
        lambda s: s.replace("?", "").replace("#", "")
    ),
    st.sampled_from(["", "?a=1", "?utm_source=x&b=2", "?b=%7e&fbclid=z"]),
    st.sampled_from(["", "#frag"]),
)


@settings(max_examples=300, deadline=None)
@given(_URLS)
def test_normalize_link_is_idempotent(url: str) -> None:
    once = normalize_link(url)
    assert normalize_link("https:" + once) == once
    assert "utm_source" not in once and "fbclid" not in once and "#" not in once


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_normalize_link_never_raises(text: str) -> None:
    normalize_link(text)


# -- unreliable guids --------------------------------------------------------------------------


def _items(*specs: tuple[str | None, str | None]) -> list[Item]:
    return [Item(feed="f", title=f"t{n}", guid=g, link=link) for n, (g, link) in enumerate(specs)]


def _problem(items: list[Item], seen: frozenset[str] | set[str] = frozenset()) -> str | None:
    return guid_problem(items, feed_url="https://site.example/rss", seen_here=seen.__contains__)


def test_good_guids_and_no_guids_are_no_problem() -> None:
    good = _items(("a", "https://site.example/1"), ("b", "https://site.example/2"))
    assert _problem(good) is None
    assert _problem(_items((None, "https://site.example/1"), (None, None))) is None
    assert _problem([]) is None


def test_some_items_without_guid() -> None:
    items = _items(("a", "https://site.example/1"), (None, "https://site.example/2"))
    assert _problem(items) == "1 of 2 items have no guid or an empty one"


def test_one_guid_on_several_items() -> None:
    items = _items(*(("same", f"https://site.example/{n}") for n in range(3)))
    assert _problem(items) == "3 of 3 items have the same guid 'same'"


def test_an_item_listed_twice_is_no_reused_guid() -> None:
    # A CMS that lists one item twice: switching the feed to link keys for good would make a
    # link-less item new again after a restart.
    twice = _items(("a", "https://site.example/1"), ("b", None), ("b", None))
    assert _problem(twice) is None
    reused = _items(("b", "https://site.example/1"), ("b", "https://site.example/2"))
    assert _problem(reused) == "2 of 2 items have the same guid 'b'"


def test_new_guids_for_links_listed_before() -> None:
    old = _items(("a", "https://site.example/1"), ("b", "https://site.example/2"))
    seen = {k for item in old for k in item_keys(item, feed_url="https://site.example/rss")}
    assert _problem(old, seen) is None
    renamed = _items(("a2", "https://site.example/1"), ("b2", "https://site.example/2?utm_x=1"))
    assert (
        _problem(renamed, seen) == "2 items that the feed listed before came back with a new guid"
    )
    one_renamed = _items(("a2", "https://site.example/1"), ("b", "https://site.example/2"))
    assert _problem(one_renamed, seen) is None, "one item re-filed is not a pattern"
    assert _problem(_items(("a2", "https://site.example/1")), seen) is not None, "the only item"


def test_known_guid_with_a_new_link_is_what_guids_are_for() -> None:
    old = _items(("a", "https://site.example/1"), ("b", "https://site.example/2"))
    seen = {k for item in old for k in item_keys(item, feed_url="https://site.example/rss")}
    moved = _items(("a", "https://new.example/1"), ("b", "https://new.example/2"))
    assert _problem(moved, seen) is None


def test_keys_without_guid() -> None:
    item = Item(feed="f", title="t", guid="g", link="https://site.example/1?utm_source=x")
    assert item_keys(item, feed_url="https://site.example/rss", use_guid=False) == (
        "link://site.example/1",
    )
    bare = Item(feed="f", title="t", guid="g")
    assert item_keys(bare, feed_url="https://site.example/rss", use_guid=False)[0].startswith(
        "hash:"
    )


def test_long_guids_and_links_are_kept_as_a_hash() -> None:
    from aggregator.identify import item_keys
    from aggregator.models import Item

    huge = Item(feed="f", title="t", guid="g" * 100_000, link="https://x.example/" + "a" * 100_000)
    keys = item_keys(huge, feed_url="https://x.example/rss")
    assert [k.split(":")[0] for k in keys] == ["guid", "link"]
    assert all(len(k) < 100 for k in keys)
    assert keys == item_keys(huge, feed_url="https://x.example/rss"), "stable"
