"""OPML import and export: a reader's nested export round-trips, the config keeps its layout."""

from __future__ import annotations

import difflib
import shutil
import tomllib
from pathlib import Path
from xml.etree import ElementTree

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config import FeedSettings, load_config
from aggregator.opml import (
    OpmlError,
    OpmlFeed,
    add_feeds,
    import_opml,
    parse_opml,
    plan_import,
    slug,
    url_key,
)
from tests.daemon_process import run_cli

REPO = Path(__file__).resolve().parent.parent
EXPORT = REPO / "tests" / "data" / "opml" / "inoreader-export.opml"
NETNEWSWIRE = REPO / "tests" / "data" / "opml" / "netnewswire-subs.opml"
EXAMPLE = REPO / "config.example.toml"

# A config with comments, no feeds yet, and a watchlist after where the feeds will go.
EMPTY_CONFIG = """\
# My aggregator.
[telegram]
timezone = "Asia/Beirut"  # where the readers are

[storage]
path = "state/aggregator.json"

# Feeds come here.

# Watchlists.
[[watchlists]]
name = "syria"
any = ["سوريا"]
channels = ["@syria_alerts"]
"""


def _only_insertions(before: str, after: str) -> list[str]:
    """The lines added; fails if any line of ``before`` was changed or removed."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    added = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        assert op in ("equal", "insert"), (op, before.splitlines()[i1:i2])
        if op == "insert":
            added += after.splitlines()[j1:j2]
    return added


def _feeds(path: Path) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(f.name, f.url, f.tags) for f in load_config(path).config.feeds]


def test_parse_reads_titles_urls_and_nested_folders() -> None:
    feeds = parse_opml(EXPORT.read_bytes(), source="export")
    assert len(feeds) == 13
    by_url = {f.url: f for f in feeds}
    mee = by_url["https://www.middleeasteye.net/rss"]
    assert mee == OpmlFeed("Middle East Eye", mee.url, folders=("World", "Middle East"))
    assert by_url["https://rss.dw.com/rdf/rss-ar-all"].folders == ("أخبار عربية",)
    un = next(f for f in feeds if f.title == "UN News: Middle East")
    assert un.url.endswith("feed/rss.xml?format=rss&lang=en"), "&amp; decoded"
    assert un.folders == ("English & Wires",)
    assert by_url["https://news.ycombinator.com/rss"].folders == ()


def test_import_into_a_config_adds_every_feed_with_tags_and_unique_names(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EMPTY_CONFIG, encoding="utf-8")
    result = run_cli(["feeds", "import", str(EXPORT), "-c", str(config)])
    assert result.returncode == 0, result.stderr
    assert "12 feeds added" in result.stderr and "1 skipped" in result.stderr
    feeds = {name: (url, tags) for name, url, tags in _feeds(config)}
    assert feeds["bbc-arabic"] == ("https://feeds.bbci.co.uk/arabic/rss.xml", ("أخبار-عربية",))
    assert feeds["dw-عربية"][1] == ("أخبار-عربية",)
    assert feeds["middle-east-eye"][1] == ("world", "middle-east")
    # Two feeds titled "World news": the second takes its site's name.
    assert feeds["world-news"][0] == "https://www.theguardian.com/world/rss"
    assert feeds["world-news-arabnews-com"][0] == "https://www.arabnews.com/cat/3/rss.xml"
    # Filed in two folders (once as http://...rss.xml/): one feed, both folders as tags.
    assert feeds["bbc-news-world"] == (
        "https://feeds.bbci.co.uk/news/world/rss.xml",
        ("world", "english-wires"),
    )
    assert "skipped BBC News - World http://feeds.bbci.co.uk/news/world/rss.xml/: listed " in (
        result.stdout
    )
    assert feeds["hacker-news"][1] == ()
    # Every name is one a watchlist can use, and the config is valid as a whole.
    assert run_cli(["check-config", "-c", str(config)]).returncode == 0


def test_import_keeps_comments_and_layout_and_puts_feeds_after_the_last_one(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, config)
    before = config.read_text(encoding="utf-8")
    result = run_cli(["feeds", "import", str(EXPORT), "-c", str(config)])
    assert result.returncode == 0, result.stderr
    after = config.read_text(encoding="utf-8")
    added = _only_insertions(before, after)
    assert added[0] == "[[feeds]]" and added[-1] == ""
    # Right after the last existing feed, before the comment that opens the watchlists.
    assert after.index('name = "guardian-world"') < after.index(added[1])
    assert after.index(added[1]) < after.index("# One [[watchlists]] table per watchlist.")
    # Feeds already there (by URL: http/https, a final '/', are the same) are skipped.
    assert "already in the config as 'bbc-arabic'" in result.stdout
    assert "already in the config as 'bbc-world'" in result.stdout
    assert "7 skipped" in result.stderr
    assert [n for n, _, _ in _feeds(config)][:6] == [n for n, _, _ in _feeds(EXAMPLE)], (
        "existing feeds untouched, in order"
    )


def test_importing_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EMPTY_CONFIG, encoding="utf-8")
    assert run_cli(["feeds", "import", str(EXPORT), "-c", str(config)]).returncode == 0
    once = config.read_bytes()
    again = run_cli(["feeds", "import", str(EXPORT), "-c", str(config)])
    assert again.returncode == 0
    assert "nothing to add" in again.stderr
    assert config.read_bytes() == once


def test_export_round_trips_through_import(tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    first.write_text(EMPTY_CONFIG, encoding="utf-8")
    assert run_cli(["feeds", "import", str(EXPORT), "-c", str(first)]).returncode == 0
    exported = run_cli(["feeds", "export", "-c", str(first)])
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">'
    )

    # Nesting by tags: World ▸ Middle East comes back as nested outlines.
    root = ElementTree.fromstring(exported.stdout)
    world = next(o for o in root.iter("outline") if o.get("text") == "world")
    middle_east = next(o for o in world if o.get("text") == "middle-east")
    assert {o.get("xmlUrl") for o in middle_east} == {
        "https://www.aljazeera.com/xml/rss/all.xml",
        "https://www.middleeasteye.net/rss",
        "https://www.arabnews.com/cat/3/rss.xml",
    }
    # Every subscription of the original export is in it once.
    original = {url_key(f.url) for f in parse_opml(EXPORT.read_bytes())}
    urls = [url_key(f.url) for f in parse_opml(exported.stdout.encode())]
    assert sorted(urls) == sorted(original)

    second = tmp_path / "second.toml"
    second.write_text(EMPTY_CONFIG, encoding="utf-8")
    opml = tmp_path / "exported.opml"
    opml.write_text(exported.stdout, encoding="utf-8")
    assert run_cli(["feeds", "import", str(opml), "-c", str(second)]).returncode == 0
    assert _feeds(second) == _feeds(first), "same names, URLs and tags"
    again = run_cli(["feeds", "export", "-c", str(second)]).stdout
    assert again.split("<body>")[1] == exported.stdout.split("<body>")[1]


def test_a_real_reader_export_round_trips(tmp_path: Path) -> None:
    # NetNewsWire's own test export (see tests/data/opml/README.md): 207 outlines with an
    # xmlUrl, 69 at the top, the rest in four folders; "Katie Floyd" is listed twice, once
    # with a final '/', which is the only outline the import leaves out.
    original = parse_opml(NETNEWSWIRE.read_bytes(), source="netnewswire")
    assert len(original) == 207
    keys = {url_key(f.url) for f in original}
    assert len(keys) == 206

    first = tmp_path / "first.toml"
    first.write_text(EMPTY_CONFIG, encoding="utf-8")
    result = run_cli(["feeds", "import", str(NETNEWSWIRE), "-c", str(first)])
    assert result.returncode == 0, result.stderr
    assert "207 feeds in" in result.stderr
    assert "206 feeds added" in result.stderr and "1 skipped" in result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert skipped == [
        "skipped Katie Floyd http://feed.katiefloyd.com/: listed twice; same feed as 'katie-floyd'"
    ]
    feeds = {name: (url, tags) for name, url, tags in _feeds(first)}
    assert {url_key(url) for url, _ in feeds.values()} == keys
    # Folders become tags; top-level feeds have none.
    in_programming = {url_key(f.url) for f in original if f.folders == ("Programming",)}
    assert len(in_programming) == 33
    assert {url_key(u) for u, tags in feeds.values() if tags == ("programming",)} == in_programming
    assert feeds["nshipster"] == ("http://nshipster.com/feed.xml", ("programming",))
    assert feeds["nshipster-feeds-feedburner-com"] == (
        "http://feeds.feedburner.com/NSHipster",
        ("weblogs",),
    )
    assert feeds["katie-floyd"] == ("http://feed.katiefloyd.com", ())
    # Same title, another URL: the second takes its site's name.
    assert feeds["daring-fireball"][0] == "http://daringfireball.net/feeds/main"
    assert feeds["daring-fireball-daringfireball-net"][0] == "http://daringfireball.net/index.xml"
    # "&amp;" is decoded, then left out of the name; non-ASCII letters stay, symbols go.
    assert feeds["chat-code"][0] == "http://corinnekrych.blogspot.com/feeds/posts/default"
    assert feeds["stratēchery"] == ("http://stratechery.com/feed/", ("weblogs",))
    assert feeds["we-swift"][0] == "http://www.weheartswift.com/feed/"
    assert run_cli(["check-config", "-c", str(first)]).returncode == 0

    exported = run_cli(["feeds", "export", "-c", str(first)])
    assert exported.returncode == 0, exported.stderr
    root = ElementTree.fromstring(exported.stdout)
    body = root.find("body")
    assert body is not None
    folders = {o.get("text"): o for o in body if o.get("xmlUrl") is None}
    assert {name: len(folder) for name, folder in folders.items()} == {
        "programming": 33,
        "macintosh": 5,
        "weblogs": 97,
        "writers": 3,
    }
    assert {url_key(o.get("xmlUrl", "")) for o in folders["programming"]} == in_programming
    assert sum(1 for o in body if o.get("xmlUrl")) == 68
    urls = [url_key(f.url) for f in parse_opml(exported.stdout.encode())]
    assert sorted(urls) == sorted(keys), "every subscription once"

    second = tmp_path / "second.toml"
    second.write_text(EMPTY_CONFIG, encoding="utf-8")
    opml = tmp_path / "exported.opml"
    opml.write_text(exported.stdout, encoding="utf-8")
    again = run_cli(["feeds", "import", str(opml), "-c", str(second)])
    assert again.returncode == 0, again.stderr
    assert "206 feeds added" in again.stderr and "0 skipped" in again.stderr
    assert _feeds(second) == _feeds(first), "same names, URLs and tags"


BAD_OPML = [
    (b"", "is empty"),
    (b"<opml><body><outline xmlUrl='https://a.example/rss'></body></opml>", "line 1, column"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel/></rss>', "its root element is <rss>"),
    (b'<opml version="2.0"><head><title>x</title></head></opml>', "it has no <body>"),
    (b'<opml version="2.0"><body><outline text="Empty folder"/></body></opml>', "lists no feeds"),
    (
        b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<opml><body><outline text="&b;" xmlUrl="https://a.example/rss"/></body></opml>',
        "declares XML entities",
    ),
    (
        b'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<opml><body><outline text="&x;" xmlUrl="https://a.example/rss"/></body></opml>',
        "declares XML entities",
    ),
]


@pytest.mark.parametrize(("content", "problem"), BAD_OPML)
def test_bad_opml_is_refused_with_its_problem(content: bytes, problem: str) -> None:
    with pytest.raises(OpmlError, match=problem):
        parse_opml(content, source="subs.opml")


def test_bad_opml_leaves_the_config_untouched(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    shutil.copy(EXAMPLE, config)
    before = config.read_bytes()
    bad = tmp_path / "subs.opml"
    bad.write_bytes(b"<opml><body><outline text='a' xmlUrl='https://a.example/rss'></body>")
    result = run_cli(["feeds", "import", str(bad), "-c", str(config)])
    assert result.returncode == 2
    assert f"{bad} is not well-formed XML: line 1, column" in result.stderr
    assert f"{config} is unchanged" in result.stderr
    missing = run_cli(["feeds", "import", str(tmp_path / "nope.opml"), "-c", str(config)])
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "No such file" in missing.stderr
    assert config.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "subs.opml"], (
        "no temp file left behind"
    )


def test_an_invalid_config_is_refused_before_any_import(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[polling]\ninterval = "often"\n', encoding="utf-8")
    result = run_cli(["feeds", "import", str(EXPORT), "-c", str(config)])
    assert result.returncode == 2
    assert "polling.interval" in result.stderr
    assert config.read_text(encoding="utf-8") == '[polling]\ninterval = "often"\n'
    # A config that is not UTF-8 (saved as cp1256 by an Arabic Windows editor) is refused
    # the same way, not with a traceback.
    config.write_bytes('[[watchlists]]\nname = "سوريا"\n'.encode("cp1256"))
    result = run_cli(["feeds", "import", str(EXPORT), "-c", str(config)])
    assert result.returncode == 2, result.stderr
    assert "not UTF-8 text (byte 23)" in result.stderr


def test_dry_run_shows_what_would_be_added_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EMPTY_CONFIG, encoding="utf-8")
    result = run_cli(["feeds", "import", "--dry-run", str(EXPORT), "-c", str(config)])
    assert result.returncode == 0, result.stderr
    assert "would add middle-east-eye https://www.middleeasteye.net/rss" in result.stdout
    assert "12 feeds would be added (dry run" in result.stderr
    assert config.read_text(encoding="utf-8") == EMPTY_CONFIG


def test_unusable_urls_and_taken_names_are_skipped_with_a_reason() -> None:
    existing = [FeedSettings(name="world", url="https://old.example/world.xml")]
    plan = plan_import(
        [
            OpmlFeed("Podcast", "feed://pods.example/rss"),
            OpmlFeed("FTP", "ftp://files.example/rss"),
            OpmlFeed("World", "https://new.example/world.xml"),
            OpmlFeed("", "https://www.untitled.example/rss"),
            *parse_opml(
                b'<opml version="2.0"><body><outline text="A folder"><outline text="Tagged" '
                b'xmlUrl="https://t.example/rss" category="/news/Mid East,x"/></outline></body>'
                b"</opml>"
            ),
        ],
        existing,
    )
    reasons = {feed.title: reason for feed, reason in plan.skipped}
    assert reasons["Podcast"].startswith("expected an http:// or https:// URL")
    assert reasons["FTP"].startswith("expected an http:// or https:// URL")
    assert reasons["World"] == (
        "a feed named 'world' is already in the config (https://old.example/world.xml)"
    )
    assert plan.added == [
        {"name": "untitled-example", "url": "https://www.untitled.example/rss"},
        {
            "name": "tagged",
            "url": "https://t.example/rss",
            "tags": ["a-folder", "news", "mid-east", "x"],
        },
    ]


def test_feeds_written_inline_are_extended_inline() -> None:
    text = '# inline feeds\nfeeds = [{name = "a", url = "https://a.example/rss"}]\n'
    after = add_feeds(text, [{"name": "b", "url": "https://b.example/rss", "tags": ["x"]}])
    assert after.startswith("# inline feeds\n")
    assert tomllib.loads(after)["feeds"] == [
        {"name": "a", "url": "https://a.example/rss"},
        {"name": "b", "url": "https://b.example/rss", "tags": ["x"]},
    ]


def test_import_keeps_file_permissions(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(EMPTY_CONFIG, encoding="utf-8")
    config.chmod(0o640)
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    import_opml(link, parse_opml(EXPORT.read_bytes()), dry_run=False)
    assert link.is_symlink(), "the link still points at the real file"
    assert config.stat().st_mode & 0o777 == 0o640
    assert len(load_config(config).config.feeds) == 12


@given(st.text(max_size=80))
def test_slugs_are_valid_feed_names_and_stable(text: str) -> None:
    name = slug(text)
    assert slug(name) == name
    assert len(name) <= 40
    if name:
        FeedSettings(name=name, url="https://a.example/rss")
