"""One alert per story, end to end: the real ``aggregator once`` against the feed server and the
fake Bot API, run two or three times on feeds whose guids lie, and on the news-ar corpus whose
relations.json says which items are one story."""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aggregator import rtl
from aggregator.compose import MessageOptions
from aggregator.config import load_config
from aggregator.daemon import make_fetcher
from aggregator.matching import Matcher
from aggregator.pipeline import Runtime, poll_feed
from aggregator.store import Store
from tests.conftest import FEEDS, TOKEN, write_config
from tests.daemon_process import run_cli
from tests.servers.fake_telegram import FakeTelegram, SentMessage, parse_telegram_html
from tests.servers.feed_server import FeedServer

NEWS_AR = FEEDS / "news-ar"
SWITCH_LOG = "feed's guids do not identify its items"

# Distinct stories (no two are near-duplicates), each naming the watchlist's term.
STORIES = [
    "Flood waters rise in the river valley as villagers move their cattle to higher ground",
    "Parliament votes on the new budget after a long night of debate over school funding",
    "A comet visible with the naked eye will pass closest to Earth next Tuesday evening",
    "Dock workers strike for a second week and container ships wait outside the harbour",
    "The national museum reopens its ancient coins gallery after five years of repairs",
    "Farmers report an early harvest of dates thanks to a warm and dry spring season",
]


def _rss(items: list[dict[str, str]]) -> bytes:
    """An RSS 2.0 feed of these items (keys: title, link, guid, description)."""
    date = format_datetime(datetime(2024, 5, 10, 9, 0, tzinfo=UTC))
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        "<title>Test Wire</title><link>https://wire.example/</link>",
    ]
    for item in items:
        parts.append("<item>")
        parts.append(f"<title>{html.escape(item['title'])}</title>")
        if "link" in item:
            parts.append(f"<link>{html.escape(item['link'])}</link>")
        if "guid" in item:
            parts.append(f'<guid isPermaLink="false">{html.escape(item["guid"])}</guid>')
        parts.append(f"<description>{html.escape(item['description'])}</description>")
        parts.append(f"<pubDate>{date}</pubDate></item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def _item(n: int, **fields: str) -> dict[str, str]:
    text = STORIES[n]
    return {
        "title": f"Canary {n}: {text[:40]}",
        "link": f"https://wire.example/news/{n}.html",
        "description": text + ".",
        **fields,
    }


def _config(tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram, *paths: str) -> Path:
    return write_config(
        tmp_path,
        feeds=[{"name": f"wire{i}", "url": feed_server.url_for(p)} for i, p in enumerate(paths)],
        watchlists=[{"name": "canary", "any": ["canary"], "channels": ["@canary_news"]}],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )


def _once(config: Path) -> str:
    result = run_cli(["once", "-c", str(config)])
    assert result.returncode == 0, result.stderr
    return result.stderr


def _alerted(telegram: FakeTelegram) -> list[int]:
    """Which canary each sendMessage was about, in order."""
    found = []
    for message in telegram.messages:
        assert message.method == "sendMessage", message
        found += [int(n) for n in re.findall(r"Canary (\d+):", message.plain_text)]
    return found


def _feed_state(tmp_path: Path, feed: str) -> tuple[str, str | None]:
    with Store.open(tmp_path / "state" / "aggregator.json", readonly=True) as store:
        state = store.feed_state(feed)
    return state.identify_by, state.guid_problem


def test_one_guid_for_every_item_alerts_each_item_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/same.xml", _rss([_item(n, guid="42") for n in range(3)]))
    config = _config(tmp_path, feed_server, telegram, "/same.xml")
    first = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2]
    assert first.count(SWITCH_LOG) == 1 and "feed=wire0" in first, first
    assert "same guid '42'" in first, first
    assert _feed_state(tmp_path, "wire0")[0] == "link"

    feed_server.add("/same.xml", _rss([_item(n, guid="42") for n in range(5)]))
    second = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4]
    assert SWITCH_LOG not in second, "the switch is logged once"

    feed_server.add("/same.xml", _rss([_item(n, guid="42") for n in reversed(range(5))]))
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4]


def test_guid_missing_on_some_items_alerts_each_item_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # The one guid the feed gives is the same on every new item, but never twice in one body.
    feed_server.add("/one.xml", _rss([_item(0, guid="only"), _item(1)]))
    config = _config(tmp_path, feed_server, telegram, "/one.xml")
    first = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1]
    assert "1 of 2 items have no guid" in first, first
    for n in (2, 3):
        feed_server.add("/one.xml", _rss([_item(n, guid="only"), _item(n - 1)]))
        _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3]


def test_feed_without_guids_alerts_each_item_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/noguid.xml", _rss([_item(n) for n in range(3)]))
    config = _config(tmp_path, feed_server, telegram, "/noguid.xml")
    first = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2]
    assert SWITCH_LOG not in first, "a feed without guids is keyed by link already"
    feed_server.add("/noguid.xml", _rss([_item(n) for n in range(1, 5)]))
    _once(config)
    feed_server.add("/noguid.xml", _rss([_item(n) for n in range(2, 6)]))
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4, 5]
    assert _feed_state(tmp_path, "wire0") == ("guid", None)


def test_guids_that_change_each_fetch_alert_each_item_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    def body(fetch: int, count: int) -> bytes:
        return _rss([_item(n, guid=f"session-{fetch}-{n}") for n in range(count)])

    feed_server.add("/changing.xml", body(1, 3))
    config = _config(tmp_path, feed_server, telegram, "/changing.xml")
    first = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2]
    assert SWITCH_LOG not in first
    feed_server.add("/changing.xml", body(2, 4))
    second = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3]
    assert second.count(SWITCH_LOG) == 1 and "feed=wire0" in second, second
    assert "3 items that the feed listed before came back with a new guid" in second
    feed_server.add("/changing.xml", body(3, 5))
    third = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4]
    assert SWITCH_LOG not in third
    assert _feed_state(tmp_path, "wire0")[0] == "link"


def test_posts_that_share_one_link_each_alert_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # A live blog: each post has its own guid and the page's link with its own fragment (which
    # normalization drops), so the link identifies none of them. It used to make every post
    # after the first look already seen, for as long as the link was remembered.
    def body(count: int) -> bytes:
        page = "https://wire.example/live"
        return _rss([_item(n, guid=f"post-{n}", link=f"{page}#post-{n}") for n in range(count)])

    feed_server.add("/live.xml", body(3))
    config = _config(tmp_path, feed_server, telegram, "/live.xml")
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2]
    feed_server.add("/live.xml", body(5))  # two new posts: new guids beside a known link
    second = _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4]
    assert SWITCH_LOG not in second, "new posts are not changed guids"
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4], "nothing alerted twice"


def test_an_article_first_seen_in_a_feed_a_watchlist_skips_still_reaches_it(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # The same article in a 'top' feed and a 'world' feed, and a watchlist for 'world' only.
    # Marked seen by whichever feed came first, it used to reach the watchlist only if that
    # was the world feed: no alert at all, depending on the order of polls.
    article = _item(0, guid="story-0")
    feed_server.add("/top.xml", _rss([{**article, "link": article["link"] + "?utm_source=top"}]))
    feed_server.add("/world.xml", _rss([article]))
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "top", "url": feed_server.url_for("/top.xml"), "tags": ["top"]},
            {"name": "world", "url": feed_server.url_for("/world.xml"), "tags": ["world"]},
        ],
        watchlists=[
            {
                "name": "canary",
                "any": ["canary"],
                "feeds": ["tag:world"],
                "channels": ["@world_news"],
            },
            {"name": "every", "any": ["canary"], "channels": ["@all_news"]},
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    for _ in range(3):  # and never again
        _once(config)
        assert sorted(str(m.chat_id) for m in telegram.messages) == ["@all_news", "@world_news"]


def test_one_article_in_two_feeds_with_utm_variants_alerts_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    def feed(campaign: str, count: int, guids: bool) -> bytes:
        items = []
        for n in range(count):
            link = f"https://wire.example/news/{n}.html?utm_source={campaign}&utm_medium=rss"
            extra = {"guid": f"{campaign}-{n}"} if guids else {}
            items.append(_item(n, link=link, **extra))
        return _rss(items)

    feed_server.add("/a.xml", feed("a", 3, guids=True))
    feed_server.add("/b.xml", feed("b", 3, guids=False))
    config = _config(tmp_path, feed_server, telegram, "/a.xml", "/b.xml")
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2]
    feed_server.add("/a.xml", feed("a2", 4, guids=True))
    feed_server.add("/b.xml", feed("b2", 4, guids=False))
    _once(config)
    feed_server.add("/a.xml", feed("a3", 5, guids=True))
    feed_server.add("/b.xml", feed("b3", 5, guids=True))
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 1, 2, 3, 4]


# -- the news-ar corpus ----------------------------------------------------------------------

ItemId = tuple[str, str]  # (feed file, guid or link) as relations.json names an item
_BLOCK = re.compile(rb"<(item|entry)\b.*?</\1>", re.DOTALL)
_ID = re.compile(rb"<(guid|id)\b[^>]*>(.*?)</\1>", re.DOTALL)
_LINK = re.compile(rb"<link>(.*?)</link>", re.DOTALL)
_HREF = re.compile(r'<a href="([^"]+)">')
NEGATIVE = "different-story-same-topic"
PARTS = 4  # channels; each gets under 20 messages, Telegram's burst for one channel
WATCHLIST_TERMS = ["في", "من", "على", "الى", "عن", "مع", "مبارك", "مريم"]  # every item


@dataclass
class _Feed:
    head: bytes
    tail: bytes
    blocks: dict[str, bytes]  # item key -> its <item> or <entry>


def _split_feed(path: Path) -> _Feed:
    body = path.read_bytes()
    declared = re.search(rb'encoding="([^"]+)"', body[:200])
    encoding = declared.group(1).decode() if declared else "utf-8"
    found = list(_BLOCK.finditer(body))
    blocks = {}
    for match in found:
        block = match.group(0)
        key = _ID.search(block)
        raw = (key.group(2) if key else _LINK.search(block).group(1)).strip()  # type: ignore[union-attr]
        raw = raw.removeprefix(b"<![CDATA[").removesuffix(b"]]>")
        blocks[html.unescape(raw.decode(encoding)).strip()] = block
    return _Feed(body[: found[0].start()], body[found[-1].end() :], blocks)


def _relations() -> list[dict[str, Any]]:
    data = json.loads((NEWS_AR / "relations.json").read_text(encoding="utf-8"))
    return list(data["relations"])


def _groups(pairs: list[tuple[ItemId, ItemId]], members: set[ItemId]) -> dict[ItemId, ItemId]:
    """Union-find: each member's group representative."""
    parent = {m: m for m in members}

    def root(m: ItemId) -> ItemId:
        while parent[m] != m:
            m = parent[m]
        return m

    for a, b in pairs:
        parent[root(a)] = root(b)
    return {m: root(m) for m in members}


def test_news_ar_relations_one_alert_per_story_and_edits_for_the_others(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    relations = _relations()
    pair = [((r["a"]["feed"], r["a"]["key"]), (r["b"]["feed"], r["b"]["key"])) for r in relations]
    members = {m for p in pair for m in p}
    links = {}
    for r in relations:
        for side in ("a", "b"):
            links[r[side]["feed"], r[side]["key"]] = r[side]["link"]
    # A story: items joined by same-url or same-story. A part: items joined by any relation, so
    # that both sides of a different-story pair land in one channel.
    story = _groups(
        [p for p, r in zip(pair, relations, strict=True) if r["relation"] != NEGATIVE], members
    )
    part_of_group = _groups(pair, members)
    roots = sorted(set(part_of_group.values()))
    part = {m: roots.index(part_of_group[m]) % PARTS for m in members}
    # The first item of each story is served on the first run, the others on the second.
    first = {min(m for m in members if story[m] == s) for s in set(story.values())}

    feeds = {name: _split_feed(NEWS_AR / name) for name in sorted({f for f, _ in members})}
    config_feeds = []
    for p in range(PARTS):
        for name in feeds:
            config_feeds.append(
                {
                    "name": f"p{p}-{name}",
                    "url": feed_server.url_for(f"/p{p}/{name}"),
                    "tags": [f"p{p}"],
                }
            )

    def serve(run: int) -> None:
        for p in range(PARTS):
            for name, feed in feeds.items():
                keep = [
                    feed.blocks[key]
                    for (f, key) in sorted(members)
                    if f == name and part[f, key] == p and (run == 2 or (f, key) in first)
                ]
                feed_server.add(f"/p{p}/{name}", feed.head + b"\n".join(keep) + feed.tail)

    config = write_config(
        tmp_path,
        feeds=config_feeds,
        watchlists=[
            {
                "name": f"part{p}",
                "any": WATCHLIST_TERMS,
                "feeds": [f"tag:p{p}"],
                "channels": [f"@dedup_part{p}"],
            }
            for p in range(PARTS)
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    serve(1)
    _once(config)
    assert all(m.method == "sendMessage" for m in telegram.messages)
    assert len(telegram.messages) == len(first), "each first item is its own story"
    serve(2)
    _once(config)

    # Which article each message is about: its first link (the title's); edits by message id.
    story_of_link = {links[m]: story[m] for m in members}
    sends: dict[str, list[SentMessage]] = defaultdict(list)
    last_edit: dict[tuple[str, int], SentMessage] = {}
    for message in telegram.messages:
        if message.method == "sendMessage":
            href = html.unescape(_HREF.search(message.text).group(1))  # type: ignore[union-attr]
            sends[href].append(message)
        else:
            assert message.method == "editMessageText"
            last_edit[message.chat_id, int(message.params["message_id"])] = message
    stories_sent = defaultdict(list)
    for link, messages in sends.items():
        assert len(messages) == 1, f"{link} alerted {len(messages)} times"
        stories_sent[story_of_link[link]].append(link)
    first_links = {links[m] for m in first}
    for sent in stories_sent.values():
        assert len(sent) == 1, f"one story alerted {len(sent)} times: {sent}"
        assert sent[0] in first_links, f"{sent[0]} is not its story's first item"
    assert set(stories_sent) == set(story.values()), "every story alerted"

    checked = {"same-url": 0, "same-story": 0, NEGATIVE: 0}
    for (a, b), r in zip(pair, relations, strict=True):
        checked[r["relation"]] += 1
        if r["relation"] == NEGATIVE:
            # Two stories, two alerts (each story's alert is checked above), and neither one
            # lists the other as a source.
            assert story[a] != story[b]
            for one, other in ((a, b), (b, a)):
                (message,) = sends[stories_sent[story[one]][0]]
                edit = last_edit.get((message.chat_id, message.message_id))
                assert edit is None or links[other] not in html.unescape(edit.text)
        elif r["relation"] == "same-url":
            assert links[a] == links[b] and len(sends[links[a]]) == 1
        else:
            (message,) = sends[stories_sent[story[a]][0]]
            edit = last_edit.get((message.chat_id, message.message_id))
            for later in (a, b):
                if later in first:
                    continue
                assert not sends[links[later]], f"{later} alerted again"
                assert edit is not None, f"{later} did not edit the alert of its story"
                assert f'href="{html.escape(links[later], quote=True)}"' in edit.text, edit.text
                assert "also: " in edit.plain_text
    assert checked == {"same-url": 11, "same-story": 14, NEGATIVE: 9}
    # Every edit is of a story's first alert.
    originals = {(m.chat_id, m.message_id) for ms in sends.values() for m in ms}
    assert set(last_edit) <= originals


# -- one story, several outlets ----------------------------------------------------------------

LEAD_TEXT = (
    "Rescue teams pulled twelve miners alive from the collapsed copper mine near the northern "
    "border town after three days underground, the regional governor told reporters"
)


def _outlet(name: str, slug: str, word: str) -> bytes:
    body = _rss(
        [
            {
                "title": f"Miners rescued from copper mine {word}",
                "link": f"https://{slug}.example/mine.html",
                "guid": f"{slug}-1",
                "description": f"{LEAD_TEXT} ({word}).",
            }
        ]
    )
    return body.replace(b"<title>Test Wire</title>", f"<title>{name}</title>".encode())


def _two_outlets(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram, **dedup: str
) -> Path:
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "outlet-a", "url": feed_server.url_for("/a.xml")},
            {"name": "outlet-b", "url": feed_server.url_for("/b.xml")},
        ],
        watchlists=[
            {"name": "alpha", "any": ["alpha"], "channels": ["@alpha_news"]},
            {"name": "beta", "any": ["beta"], "channels": ["@beta_news"]},
            {"name": "mines", "any": ["miners"], "channels": ["@mines_news"]},
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    if dedup:
        lines = "".join(f'{key} = "{value}"\n' for key, value in dedup.items())
        config.write_text(config.read_text(encoding="utf-8") + f"[dedup]\n{lines}")
    return config


def test_same_story_in_one_run_alerts_once_listing_both_outlets(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/a.xml", _outlet("Outlet A", "outlet-a", "alpha"))
    feed_server.add("/b.xml", _outlet("Outlet B", "outlet-b", "gamma"))
    _once(_two_outlets(tmp_path, feed_server, telegram))
    messages = telegram.sent_to("@mines_news")
    (sent,) = [m for m in messages if m.method == "sendMessage"]
    # The second outlet's commit finds the alert still queued (its text is replaced) or already
    # on its way (it is edited right after): either way the alert ends listing both outlets.
    assert all(m.message_id == sent.message_id for m in messages)
    other = "outlet-b" if "outlet-a.example" in sent.text.split("\n")[0] else "outlet-a"
    final = messages[-1].text
    assert f'<a href="https://{other}.example/mine.html">' in final.rsplit("\n", 1)[1]


def test_near_duplicate_edits_the_alert_and_alerts_chats_without_the_story(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/a.xml", _outlet("Outlet A", "outlet-a", "alpha"))
    feed_server.add("/b.xml", _rss([]))
    config = _two_outlets(tmp_path, feed_server, telegram)
    _once(config)
    (alpha,) = telegram.sent_to("@alpha_news")
    (mines,) = telegram.sent_to("@mines_news")
    feed_server.add("/b.xml", _outlet("Outlet B", "outlet-b", "beta"))
    _once(config)
    also_b = '<a href="https://outlet-b.example/mine.html">Outlet B</a>'
    for chat, original in (("@alpha_news", alpha), ("@mines_news", mines)):
        sent, edit = telegram.sent_to(chat)
        assert sent == original
        assert (edit.method, edit.message_id) == ("editMessageText", original.message_id)
        assert edit.text.startswith(original.text + "\nalso: ")
        assert also_b in edit.text
    (beta,) = telegram.sent_to("@beta_news")
    assert beta.method == "sendMessage", "a chat without the story gets its alert"
    assert "outlet-b.example" in beta.text.split("\n")[0]
    assert '<a href="https://outlet-a.example/mine.html">Outlet A</a>' in beta.text


def test_story_expires_after_the_window(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/a.xml", _outlet("Outlet A", "outlet-a", "alpha"))
    feed_server.add("/b.xml", _rss([]))
    config = _two_outlets(tmp_path, feed_server, telegram, window="1ms")
    _once(config)
    feed_server.add("/b.xml", _outlet("Outlet B", "outlet-b", "gamma"))
    _once(config)
    assert [m.method for m in telegram.sent_to("@mines_news")] == ["sendMessage"] * 2
    assert "also:" not in telegram.sent_to("@mines_news")[1].text


async def test_near_duplicate_of_a_queued_alert_rewrites_it_in_the_outbox(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # In process, with no deliverer: the first alert is surely still queued when the second
    # outlet is polled, so its text is replaced rather than edited.
    feed_server.add("/a.xml", _outlet("Outlet A", "outlet-a", "alpha"))
    feed_server.add("/b.xml", _outlet("Outlet B", "outlet-b", "gamma"))
    loaded = load_config(_two_outlets(tmp_path, feed_server, telegram))
    store = Store.open(loaded.storage_path)
    fetcher = make_fetcher(loaded)
    runtime = Runtime(
        loaded=loaded,
        matcher=Matcher([w.rules() for w in loaded.config.watchlists]),
        store=store,
        fetcher=fetcher,
        message_options=MessageOptions(),
    )
    try:
        first = await poll_feed(runtime, loaded.config.feeds[0])
        second = await poll_feed(runtime, loaded.config.feeds[1])
        queued = store.pending()
        (story,) = store.stories()
        edits = store.pending_edits()
    finally:
        await fetcher.aclose()
        store.close()
    assert [len(first.alerts), first.joined] == [2, 0]  # watchlists alpha and mines
    assert [len(second.alerts), second.joined, second.new_items] == [0, 1, 1]
    assert sorted(e.chat for e in queued) == ["@alpha_news", "@mines_news"] and edits == []
    for entry in queued:
        assert entry.text.startswith(story.messages[entry.chat].html + "\nalso: ")
        assert '<a href="https://outlet-b.example/mine.html">Outlet B</a>' in entry.text
        assert parse_telegram_html(entry.text).endswith(f"also: {rtl.FSI}Outlet B{rtl.PDI}")
    assert [s.name for s in story.sources] == ["Outlet A", "Outlet B"]


def _dated_rss(items: list[tuple[int, datetime | None]]) -> bytes:
    """An RSS feed of canaries, each with its own pubDate (None: undated)."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>']
    parts.append("<title>Test Wire</title><link>https://wire.example/</link>")
    for n, published in items:
        item = _item(n)
        date = "" if published is None else f"<pubDate>{format_datetime(published)}</pubDate>"
        parts.append(
            f"<item><title>{html.escape(item['title'])}</title><link>{item['link']}</link>"
            f"<description>{html.escape(item['description'])}</description>{date}</item>"
        )
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def test_first_poll_alerts_only_the_backfill_window_and_later_polls_every_new_item(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # Adding a feed must not flood channels with its archive: with backfill = "6h" the first
    # poll alerts the item of an hour ago, and marks the day-old and the undated ones seen.
    now = datetime.now(UTC)
    hours = [1, 30, None]
    feed_server.add(
        "/dated.xml",
        _dated_rss(
            [(n, None if h is None else now - timedelta(hours=h)) for n, h in enumerate(hours)]
        ),
    )
    config = write_config(
        tmp_path,
        feeds=[{"name": "wire0", "url": feed_server.url_for("/dated.xml")}],
        watchlists=[{"name": "canary", "any": ["canary"], "channels": ["@canary_news"]}],
        telegram={"api_url": telegram.api_url},
        polling={"backfill": "6h"},
        token=TOKEN,
    )
    _once(config)
    assert _alerted(telegram) == [0]

    # After the first poll, every new item alerts, however old its date (or if it has none).
    later = [(3, now - timedelta(days=3)), (4, None)]
    feed_server.add(
        "/dated.xml",
        _dated_rss(
            later
            + [(n, None if h is None else now - timedelta(hours=h)) for n, h in enumerate(hours)]
        ),
    )
    _once(config)
    assert sorted(_alerted(telegram)) == [0, 3, 4]
