"""One feed, one pass: fetch → parse → identify → match → cluster → compose → outbox.

The only await points are the fetch and the parse (off the event loop: in the daemon's parse
worker processes, or a thread with parse_workers = 0). The seen-check and
the store commit that marks items seen and queues their alerts run after the last await with no
await between them, so two feeds carrying the same link can never both alert it, and two
near-duplicates from two feeds can never both start a story.

Cluster: a new item that is a near-duplicate of a recent alert's story (aggregator.cluster) is
not alerted again in the chats that already have that story. Its outlet is added to the story's
sources instead, and each of those alerts gets an "also:" line listing the other outlets: the
text of an alert still pending is replaced, an alert already sent is edited (an EditEntry queued
in the same store write).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from . import poll_state
from .chats import Chats, follow
from .cluster import MAX_SOURCES, Fingerprint, Source, add_source, also_sources, find_story
from .cluster import fingerprint as story_fingerprint
from .compose import LINK_MAX, Message, MessageOptions, add_sources, compose_alert
from .config import FeedSettings, LoadedConfig, WatchlistSettings
from .errors import FetchError, StoreError
from .fetch import NO_VALIDATORS, Fetcher, FetchResult, Validators
from .identify import Identified, guid_problem, item_keys, shared_pages
from .logs import event
from .matching import Matcher
from .metrics import Metrics
from .models import Item, WatchlistMatch
from .parse import FeedParser, ParseError, parse_in_thread
from .segments import SOURCE_HEADERS, FeedItems, Read, read_body
from .store import (
    EditEntry,
    FeedState,
    OutboxEntry,
    SeenRecord,
    Store,
    Story,
    StoryMessage,
    outbox_id,
)

log = logging.getLogger("aggregator.pipeline")

# Characters of an outlet's name kept with a story (alerts show at most compose.NAME_MAX).
SOURCE_NAME_MAX = 200


@dataclass(frozen=True)
class Alert:
    """A watchlist that fired on a new item, with the message its channels get."""

    item: Item
    key: str
    match: WatchlistMatch
    channels: tuple[str, ...]
    message: Message
    source: str


@dataclass
class FeedOutcome:
    """What one pass over one feed did."""

    feed: str
    status: str  # "ok", "not_modified", "error"
    items: int = 0
    new_items: int = 0
    alerts: list[Alert] = field(default_factory=list)
    error: str | None = None
    joined: int = 0  # new items that joined a recent alert's story instead of alerting again
    next_poll_at: float | None = None  # epoch seconds (aggregator.polling); None: stop polling


@dataclass
class Runtime:
    """What the pipeline needs, built once per config load."""

    loaded: LoadedConfig
    matcher: Matcher
    store: Store
    fetcher: Fetcher
    message_options: MessageOptions
    on_alerts: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    # Off the event loop; the daemon sets its ParsePool here (parse_pool.py) unless
    # parse_workers is 0.
    parse: FeedParser = parse_in_thread
    # By feed name: what identifies the items of the last body processed, so that the next
    # body's unchanged items are not parsed again (segments.py). Memory only: a restart
    # parses each feed whole once.
    known_items: dict[str, FeedItems] = field(default_factory=dict)


async def poll_feed(rt: Runtime, feed: FeedSettings, *, dry_run: bool = False) -> FeedOutcome:
    """Fetch and process one feed; never raises for a bad feed, only logs and records it."""
    state = rt.store.feed_state(feed.name)
    if poll_state.is_gone(state, feed):
        return FeedOutcome(feed.name, "error", error=poll_state.GONE_ERROR)
    url = poll_state.feed_url(state, feed)
    now = rt.clock()
    state.last_attempt_at = now
    # None: kept by a version that did not record the URL; they are sent as before.
    same_url = state.validators_url in (None, url)
    validators = Validators(state.etag, state.last_modified) if same_url else NO_VALIDATORS
    try:
        result = await rt.fetcher.fetch(url, validators)
        read = None if result.not_modified else await _parse(rt, feed, result, state)
    except (FetchError, ParseError) as exc:
        rt.metrics.poll_done(feed.name, failed=True)
        return _failed(rt, feed, state, exc, dry_run)
    rt.metrics.poll_done(feed.name, failed=False)
    state.etag, state.last_modified = result.validators.etag, result.validators.last_modified
    state.validators_url = url
    notices = poll_state.on_fetched(
        state, feed, headers=result.headers, moved_to=result.permanent_redirect, now=now
    )
    state.consecutive_failures, state.last_error, state.last_success_at = 0, None, now
    if read is None:
        notices += poll_state.on_success(state, feed, rt.loaded.config, now=now)
        if not dry_run and (notices or not _note_poll(rt, feed, state, now)):
            _commit_with_notices(rt, feed, state, notices)
        return FeedOutcome(feed.name, "not_modified", next_poll_at=state.next_poll_at)
    return _process(rt, feed, state, read, dry_run, notices)


async def _parse(
    rt: Runtime, feed: FeedSettings, result: FetchResult, state: FeedState
) -> Read | None:
    """Parse off the event loop; None when the body is byte-identical to the last one."""
    assert result.body is not None
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == state.body_hash and state.initialized:
        return None
    read = await read_body(
        rt.parse,
        result.body,
        feed_name=feed.name,
        base_url=result.url,
        source=(feed.url, result.url, *(result.headers.get(h, "") for h in SOURCE_HEADERS)),
        headers=result.headers,
        known=rt.known_items.get(feed.name) if state.initialized else None,
        use_guid=state.identify_by == "guid",
        is_seen=rt.store.is_seen,
    )
    state.body_hash = body_hash
    if read.parsed.bozo:
        event(
            log,
            logging.INFO,
            "feed is not well-formed; using the items that could be read",
            feed=feed.name,
            problem=read.parsed.bozo,
            items=len(read.parsed.items),
        )
    return read


def _failed(
    rt: Runtime, feed: FeedSettings, state: FeedState, exc: FetchError | ParseError, dry_run: bool
) -> FeedOutcome:
    error = str(exc)
    state.consecutive_failures += 1
    state.last_error = error
    event(
        log,
        logging.WARNING,
        "feed failed",
        feed=feed.name,
        error=error,
        failures=state.consecutive_failures,
    )
    notices = poll_state.on_failure(state, feed, rt.loaded.config, error=exc, now=rt.clock())
    if not dry_run:
        _commit_with_notices(rt, feed, state, notices)
    return FeedOutcome(feed.name, "error", error=error, next_poll_at=state.next_poll_at)


def _commit_with_notices(
    rt: Runtime, feed: FeedSettings, state: FeedState, notices: list[poll_state.Notice]
) -> None:
    """Save the feed's state and queue its admin notices in one write (so each goes once)."""
    entries = poll_state.admin_entries(rt.loaded.config, notices, rt.clock())
    if _commit(rt, feed, state, alerts=entries) and entries:
        rt.metrics.alerts_queued(len(entries))
        rt.on_alerts()


def _note_poll(rt: Runtime, feed: FeedSettings, state: FeedState, now: float) -> bool:
    """Keep an unchanged poll's times without a write of its own (Store.note_poll); False if
    the state changed more than that and must be committed."""
    try:
        return rt.store.note_poll(feed.name, state, now)
    except StoreError as exc:  # writing the times kept so far failed; they stay in memory
        event(log, logging.ERROR, "cannot save poll times; will retry", error=str(exc))
        return True


def _commit(rt: Runtime, feed: FeedSettings, state: FeedState, **batch: object) -> bool:
    try:
        rt.store.commit(feed=feed.name, state=state, **batch)  # type: ignore[arg-type]
    except StoreError as exc:
        event(
            log,
            logging.ERROR,
            "cannot save feed state; will retry next poll",
            feed=feed.name,
            error=str(exc),
        )
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Keyed:
    """An item of the body with its keys."""

    item: Item | None  # None: unchanged since the last body, not parsed again
    keys: tuple[str, ...]
    # In the poll that switches the feed to keys by link: the keys it was seen under before,
    # when it has no link (from now on it is keyed by its text) and a guid unrepeated here.
    former: tuple[str, ...] = ()


def _keyed_items(rt: Runtime, feed: FeedSettings, state: FeedState, read: Read) -> list[_Keyed]:
    """Each item of the body (unchanged ones first) with its keys; a feed whose guids prove
    unreliable is keyed by link for good."""
    items: list[Identified] = [*(known for _, known in read.unchanged), *read.parsed.items]
    shared = shared_pages(items)
    switched = False
    if state.identify_by == "guid":
        problem = guid_problem(
            items,
            feed_url=feed.url,
            seen_here=lambda key: rt.store.seen_by(key) == feed.name,
            shared=shared,
        )
        if problem is not None:
            switched = True
            state.identify_by, state.guid_problem = "link", problem
            event(
                log,
                logging.WARNING,
                "feed's guids do not identify its items; identifying them by link from now on",
                feed=feed.name,
                reason=problem,
            )
    use_guid = state.identify_by == "guid"
    # A guid reused for a new article is what makes the switch: an item with a link is judged
    # by its link alone, one without by its guid key only if no other item has its guid.
    uses = Counter(item.guid for item in items)

    def has_former(item: Identified) -> bool:
        return switched and not item.link and bool(item.guid) and uses[item.guid] == 1

    keyed = [
        _Keyed(None, known.keys_for(use_guid), known.keys if has_former(known) else ())
        for _, known in read.unchanged
    ]
    for item in read.parsed.items:
        # A page other items link to keys none of them: every post of a live blog after the
        # first would look already seen.
        keys = item_keys(item, feed_url=feed.url, use_guid=use_guid, shared=shared)
        former = item_keys(item, feed_url=feed.url) if has_former(item) else ()
        keyed.append(_Keyed(item, keys, former))
    return keyed


class _StoryBatch:
    """The stories one pass starts or joins, and the alert texts and edits that follow."""

    def __init__(self, rt: Runtime, now: float, entries: dict[str, OutboxEntry]) -> None:
        dedup = rt.loaded.config.dedup
        self.enabled = dedup.window > 0
        self._window = dedup.window
        self._threshold = dedup.threshold
        self._store = rt.store
        self._now = now
        self._entries = entries  # this pass's new alerts, by entry id
        self._live = (
            {s.id: s for s in rt.store.stories() if s.expires_at > now} if self.enabled else {}
        )
        self.changed: dict[str, Story] = {}
        self.edits: dict[str, EditEntry] = {}
        self.retexts: dict[str, tuple[str, str]] = {}

    def find(self, item: Fingerprint) -> Story | None:
        """The recent story this item is a near-duplicate of, if any."""
        if not self.enabled:
            return None
        candidates = ((story_id, story.fingerprint) for story_id, story in self._live.items())
        story_id = find_story(item, candidates, threshold=self._threshold)
        return None if story_id is None else self._live[story_id]

    def join(self, story: Story, source: Source) -> Story:
        """Add an outlet to a story; its alerts get the new "also:" line."""
        sources = add_source(story.sources, source, limit=MAX_SOURCES + 1)
        if sources == story.sources:
            return story
        story = dataclasses.replace(story, sources=sources)
        for message in story.messages.values():
            self._retext(message, sources)
        self._save(story)
        return story

    def add(
        self,
        story: Story | None,
        *,
        key: str,
        item: Fingerprint,
        source: Source,
        messages: dict[str, StoryMessage],
    ) -> None:
        """Record an item's new alerts as a new story, or as more chats of ``story``."""
        if not self.enabled or not messages:
            return
        if story is None:
            story = Story(
                id=key,
                created_at=self._now,
                expires_at=self._now + self._window,
                fingerprint=item,
                sources=(source,),
                messages=messages,
            )
        else:
            story = dataclasses.replace(story, messages={**story.messages, **messages})
        self._save(story)

    def _retext(self, message: StoryMessage, sources: tuple[Source, ...]) -> None:
        also = [(s.name, s.link) for s in also_sources(sources, message.source)]
        html, plain = add_sources(message.html, message.plain, also)
        entry = self._entries.get(message.entry)
        if entry is not None:  # queued by this same pass
            self._entries[message.entry] = dataclasses.replace(entry, text=html, plain=plain)
        elif self._store.is_pending(message.entry):
            self.retexts[message.entry] = (html, plain)
        else:
            record = self._store.sent_record(message.entry)
            if record is not None and record.message_id is not None:
                self.edits[message.entry] = EditEntry(
                    target=message.entry,
                    chat=record.chat,
                    text=html,
                    plain=plain,
                    disable_preview=message.disable_preview,
                    created_at=self._now,
                )

    def _save(self, story: Story) -> None:
        self.changed[story.id] = story
        self._live[story.id] = story


def _process(
    rt: Runtime,
    feed: FeedSettings,
    state: FeedState,
    read: Read,
    dry_run: bool,
    notices: list[poll_state.Notice],
) -> FeedOutcome:
    parsed = read.parsed
    now = rt.clock()
    first_poll = not state.initialized
    backfill = rt.loaded.config.polling.backfill
    oldest = (
        None if backfill is None else datetime.fromtimestamp(now, UTC) - timedelta(seconds=backfill)
    )
    source = parsed.title or feed.name
    outcome = FeedOutcome(feed.name, "ok", items=read.item_count)
    seen: list[SeenRecord] = []
    entries: dict[str, OutboxEntry] = {}
    stories = _StoryBatch(rt, now, entries)
    routes = _Routes(rt)
    batch_keys: set[str] = set()
    present: list[str] = []
    new_times: list[float] = []
    keyed = _keyed_items(rt, feed, state, read)
    for entry in keyed:
        present.extend(entry.keys)
        seen_key = next((k for k in entry.keys if k in batch_keys or rt.store.is_seen(k)), None)
        if seen_key is not None:
            first_seen = entry.item
            if first_seen is not None and seen_key not in batch_keys:
                marker = _missed_by_first_feed(rt, feed, seen_key, entry.keys[0], batch_keys)
                if marker is not None and not (first_poll and _before_backfill(first_seen, oldest)):
                    # The item came first from a feed that some watchlist of this one does
                    # not cover: those watchlists see it here, once.
                    batch_keys.add(marker[0])
                    seen.append(SeenRecord(key=marker[0], feed=feed.name, seen_at=now))
                    _item_alerts(
                        rt, feed, first_seen, entry.keys[0], source, outcome, entries, stories,
                        routes, now, only=marker[1],
                    )  # fmt: skip
            continue
        batch_keys.update(entry.keys)
        seen.extend(SeenRecord(key=k, feed=feed.name, seen_at=now) for k in entry.keys)
        item = entry.item
        if item is None or any(map(rt.store.is_seen, entry.former)):
            # Unchanged (read_body found it seen; only a switch to keys by link can make its
            # keys new), or seen under its former keys: the same item, marked seen under its
            # new ones, not alerted again.
            continue
        keys = entry.keys
        outcome.new_items += 1
        appeared = poll_state.item_time(item.published, now, first_poll=first_poll)
        if appeared is not None:
            new_times.append(appeared)
        if first_poll and _before_backfill(item, oldest):
            continue  # backfill: older or undated items on a feed's first poll are marked seen
        _item_alerts(rt, feed, item, keys[0], source, outcome, entries, stories, routes, now)
    notices += poll_state.on_success(
        state,
        feed,
        rt.loaded.config,
        now=now,
        ttl_s=parsed.ttl_s,
        update_period_s=parsed.update_period_s,
        parsed=True,
        new_item_times=new_times,
        items=outcome.items,
        new_items=outcome.new_items,
        first_poll=first_poll,
    )
    outcome.next_poll_at = state.next_poll_at
    entries.update((e.id, e) for e in poll_state.admin_entries(rt.loaded.config, notices, now))
    state.initialized = True
    if first_poll and backfill is not None:
        event(
            log,
            logging.INFO,
            "first poll of feed",
            feed=feed.name,
            items=read.item_count,
            alerted=len(outcome.alerts),
        )
    committed = not dry_run and _commit(
        rt,
        feed,
        state,
        seen=seen,
        alerts=list(entries.values()),
        present_keys=present,
        stories=list(stories.changed.values()),
        edits=list(stories.edits.values()),
        retexts=stories.retexts,
    )
    if committed and (entries or stories.edits):
        rt.on_alerts()
    if committed:
        remembered = read.remembered(
            [(e.item, e.keys) for e in keyed if e.item is not None],
            state.identify_by == "guid",
            feed.url,
        )
        if remembered is None:
            rt.known_items.pop(feed.name, None)
        else:
            rt.known_items[feed.name] = remembered
    if committed:
        rt.metrics.items_seen(feed.name, outcome.new_items)
        rt.metrics.alerts_queued(len(entries))
        for watchlist, n in Counter(a.match.watchlist for a in outcome.alerts).items():
            rt.metrics.matched(watchlist, n)  # counted as the status file counts them
    event(
        log,
        logging.INFO,
        "feed polled",
        feed=feed.name,
        items=outcome.items,
        new=outcome.new_items,
        alerts=len(entries),
        joined=outcome.joined,
        edits=len(stories.edits),
    )
    return outcome


class _Routes:
    """Where a watchlist's alerts go, read once per pass rather than per item: its channels,
    followed to the id a group moved to when it became a supergroup (the config may still
    name the old one), and the private chats that subscribed through the bot."""

    def __init__(self, rt: Runtime) -> None:
        chats = Chats(rt.store)
        self._moves = chats.moves()
        self._subscribers = chats.all_subscribers()
        self.watchlists = {w.name: w for w in rt.loaded.config.watchlists}

    def chats(self, watchlist: WatchlistSettings) -> tuple[str, ...]:
        subscribers = self._subscribers.get(watchlist.name, ()) if watchlist.subscribable else ()
        targets = (*watchlist.channels, *subscribers)
        return tuple(dict.fromkeys(follow(self._moves, chat) for chat in targets))


def _before_backfill(item: Item, oldest: datetime | None) -> bool:
    """Whether a first poll's backfill window leaves this item out (older, or undated)."""
    return oldest is not None and (item.published is None or item.published < oldest)


def _missed_by_first_feed(
    rt: Runtime, feed: FeedSettings, seen_key: str, key: str, batch_keys: set[str]
) -> tuple[str, frozenset[str]] | None:
    """For an item another feed saw first: a marker key, and the watchlists that cover this
    feed but not that one, which never saw the item; None when there are none, or when this
    feed already gave them the item (the marker is seen)."""
    matcher = rt.matcher
    if not matcher.feed_specific:
        return None  # every watchlist covers every feed: the first feed gave it to them all
    first_name = rt.store.seen_by(seen_key)
    if first_name is None or first_name == feed.name:
        return None
    first = rt.loaded.config.feed(first_name)
    if first is None:
        return None  # no longer configured: nothing to tell which watchlists it covered
    missed = matcher.watchlists_for(feed.name, feed.tags) - matcher.watchlists_for(
        first.name, first.tags
    )
    if not missed:
        return None
    digest = hashlib.sha256(f"{feed.name}\n{key}".encode()).hexdigest()[:32]
    marker = f"via:{digest}"
    if marker in batch_keys or rt.store.is_seen(marker):
        return None
    return marker, missed


def _item_alerts(
    rt: Runtime,
    feed: FeedSettings,
    item: Item,
    key: str,
    source: str,
    outcome: FeedOutcome,
    entries: dict[str, OutboxEntry],
    stories: _StoryBatch,
    routes: _Routes,
    now: float,
    *,
    only: frozenset[str] | None = None,
) -> None:
    """Match one new item, join it to its story, and queue its alerts in chats without it.

    ``only``: match these watchlists alone (an item another feed saw first)."""
    matches = rt.matcher.match(item.fields(), feed=feed.name, feed_tags=feed.tags)
    if only is not None:
        matches = [m for m in matches if m.watchlist in only]
        if not matches:
            return  # nothing for them: the story is left as the first feed made it
    item_print = (
        story_fingerprint(item) if stories.enabled else Fingerprint(frozenset(), frozenset())
    )
    story = stories.find(item_print)
    # Kept with the story for its window: a feed's outsized title or link is not kept whole.
    link = item.link if item.link and len(item.link) <= LINK_MAX else None
    outlet = Source(source[:SOURCE_NAME_MAX], link)
    if story is not None:
        story = stories.join(story, outlet)
        outcome.joined += 1
    messages: dict[str, StoryMessage] = {}
    for match in matches:
        watchlist = routes.watchlists[match.watchlist]
        targets = routes.chats(watchlist)
        chats = tuple(c for c in targets if story is None or c not in story.messages)
        if not chats and targets:
            continue  # every chat of this watchlist has the story already
        options = dataclasses.replace(rt.message_options, link_preview=watchlist.link_preview)
        original = compose_alert(item, match, source=source, options=options)
        message = original
        if story is not None:
            also = [(s.name, s.link) for s in also_sources(story.sources, outlet.name)]
            html, plain = add_sources(original.html, original.plain, also)
            message = dataclasses.replace(original, html=html, plain=plain)
        outcome.alerts.append(
            Alert(item=item, key=key, match=match, channels=chats, message=message, source=source)
        )
        for chat in chats:
            entry_id = outbox_id(key, chat)
            if entry_id in entries:
                continue  # one alert per story per chat, whichever watchlist found it first
            entries[entry_id] = OutboxEntry(
                id=entry_id,
                chat=chat,
                text=message.html,
                plain=message.plain,
                watchlist=match.watchlist,
                item_key=key,
                feed=feed.name,
                created_at=now,
                disable_preview=message.disable_preview,
            )
            messages[chat] = StoryMessage(
                entry=entry_id,
                html=original.html,
                plain=original.plain,
                disable_preview=original.disable_preview,
                source=outlet.name,
            )
    stories.add(story, key=key, item=item_print, source=outlet, messages=messages)
