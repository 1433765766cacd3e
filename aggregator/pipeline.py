"""One feed, one pass: fetch → parse → identify → match → compose → outbox.

The only await points are the fetch and the parse (run in a worker thread). The seen-check and
the store commit that marks items seen and queues their alerts run after the last await with no
await between them, so two feeds carrying the same link can never both alert it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .compose import Message, MessageOptions, compose_alert
from .config import FeedSettings, LoadedConfig, WatchlistSettings
from .errors import FetchError, StoreError
from .fetch import Fetcher, FetchResult, Validators
from .identify import item_keys
from .logs import event
from .matching import Matcher
from .models import Item, WatchlistMatch
from .parse import ParsedFeed, ParseError, parse_feed
from .store import FeedState, OutboxEntry, SeenRecord, Store

log = logging.getLogger("aggregator.pipeline")


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


def outbox_id(key: str, chat: str) -> str:
    """One alert per story per chat, whichever watchlist found it first."""
    return hashlib.sha256(f"{key}\x00{chat}".encode()).hexdigest()[:24]


async def poll_feed(rt: Runtime, feed: FeedSettings, *, dry_run: bool = False) -> FeedOutcome:
    """Fetch and process one feed; never raises for a bad feed, only logs and records it."""
    state = rt.store.feed_state(feed.name)
    url = state.url_override or feed.url
    now = rt.clock()
    state.last_attempt_at = now
    try:
        result = await rt.fetcher.fetch(url, Validators(state.etag, state.last_modified))
        parsed = None if result.not_modified else await _parse(feed, result, state)
    except (FetchError, ParseError) as exc:
        return _failed(rt, feed, state, str(exc), dry_run)
    state.etag, state.last_modified = result.validators.etag, result.validators.last_modified
    if result.permanent_redirect:
        state.url_override = result.permanent_redirect
        event(
            log,
            logging.WARNING,
            "feed moved permanently; polling the new URL (update the config)",
            feed=feed.name,
            new_url=result.permanent_redirect,
        )
    state.consecutive_failures, state.last_error, state.last_success_at = 0, None, now
    if parsed is None:
        if not dry_run:
            _commit(rt, feed, state)
        return FeedOutcome(feed.name, "not_modified")
    return _process(rt, feed, state, parsed, dry_run)


async def _parse(feed: FeedSettings, result: FetchResult, state: FeedState) -> ParsedFeed | None:
    """Parse off the event loop; None when the body is byte-identical to the last one."""
    assert result.body is not None
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == state.body_hash and state.initialized:
        return None
    parsed = await asyncio.to_thread(
        parse_feed, result.body, feed_name=feed.name, headers=result.headers, base_url=result.url
    )
    state.body_hash = body_hash
    if parsed.bozo:
        event(
            log,
            logging.INFO,
            "feed is not well-formed; using the items that could be read",
            feed=feed.name,
            problem=parsed.bozo,
            items=len(parsed.items),
        )
    return parsed


def _failed(
    rt: Runtime, feed: FeedSettings, state: FeedState, error: str, dry_run: bool
) -> FeedOutcome:
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
    if not dry_run:
        _commit(rt, feed, state)
    return FeedOutcome(feed.name, "error", error=error)


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


def _keyed_items(parsed: ParsedFeed, feed_url: str) -> list[tuple[Item, tuple[str, ...]]]:
    """Each item with its keys; a guid repeated inside one fetch identifies nothing."""
    guid_counts = Counter(item.guid for item in parsed.items if item.guid)
    repeated = {guid for guid, n in guid_counts.items() if n > 1}
    keyed = []
    for item in parsed.items:
        if item.guid in repeated:
            item = dataclasses.replace(item, guid=None)
        keyed.append((item, item_keys(item, feed_url=feed_url)))
    return keyed


def _process(
    rt: Runtime, feed: FeedSettings, state: FeedState, parsed: ParsedFeed, dry_run: bool
) -> FeedOutcome:
    now = rt.clock()
    first_poll = not state.initialized
    backfill = rt.loaded.config.polling.backfill
    oldest = (
        None if backfill is None else datetime.fromtimestamp(now, UTC) - timedelta(seconds=backfill)
    )
    source = parsed.title or feed.name
    outcome = FeedOutcome(feed.name, "ok", items=len(parsed.items))
    seen: list[SeenRecord] = []
    entries: dict[str, OutboxEntry] = {}
    batch_keys: set[str] = set()
    present: list[str] = []
    for item, keys in _keyed_items(parsed, feed.url):
        present.extend(keys)
        if any(k in batch_keys or rt.store.is_seen(k) for k in keys):
            continue
        batch_keys.update(keys)
        seen.extend(SeenRecord(key=k, feed=feed.name, seen_at=now) for k in keys)
        outcome.new_items += 1
        if (
            first_poll
            and oldest is not None
            and (item.published is None or item.published < oldest)
        ):
            continue  # backfill: older or undated items on a feed's first poll are marked seen
        for alert in _alerts_for(rt, feed, item, keys[0], source):
            outcome.alerts.append(alert)
            for chat in alert.channels:
                entry_id = outbox_id(alert.key, chat)
                entries.setdefault(
                    entry_id,
                    OutboxEntry(
                        id=entry_id,
                        chat=chat,
                        text=alert.message.html,
                        plain=alert.message.plain,
                        watchlist=alert.match.watchlist,
                        item_key=alert.key,
                        feed=feed.name,
                        created_at=now,
                        disable_preview=alert.message.disable_preview,
                    ),
                )
    state.initialized = True
    if first_poll and backfill is not None:
        event(
            log,
            logging.INFO,
            "first poll of feed",
            feed=feed.name,
            items=len(parsed.items),
            alerted=len(outcome.alerts),
        )
    committed = not dry_run and _commit(
        rt, feed, state, seen=seen, alerts=list(entries.values()), present_keys=present
    )
    if committed and entries:
        rt.on_alerts()
    event(
        log,
        logging.INFO,
        "feed polled",
        feed=feed.name,
        items=outcome.items,
        new=outcome.new_items,
        alerts=len(entries),
    )
    return outcome


def _alerts_for(rt: Runtime, feed: FeedSettings, item: Item, key: str, source: str) -> list[Alert]:
    alerts = []
    by_name = {w.name: w for w in rt.loaded.config.watchlists}
    for match in rt.matcher.match(item.fields(), feed=feed.name, feed_tags=feed.tags):
        watchlist: WatchlistSettings = by_name[match.watchlist]
        options = dataclasses.replace(rt.message_options, link_preview=watchlist.link_preview)
        message = compose_alert(item, match, source=source, options=options)
        alerts.append(
            Alert(
                item=item,
                key=key,
                match=match,
                channels=watchlist.channels,
                message=message,
                source=source,
            )
        )
    return alerts
