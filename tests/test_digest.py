"""Digests and quiet hours: packing, the short form, holding and the release digest."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.compose import brief, compose_alert
from aggregator.deliver import Deliverer
from aggregator.digest import Digest, pack
from aggregator.models import Item, WatchlistMatch
from aggregator.quiet import QuietHours, parse_quiet_hours
from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.servers.fake_telegram import FakeTelegram, parse_telegram_html


def _entry(
    n: int, chat: str, *, created_at: float, watchlist: str = "night", size: int = 3
) -> OutboxEntry:
    item = Item(
        feed="wire",
        title=f"وزير الخارجية يبحث الوضع في سوريا {n}",
        link=f"https://news.example/{n}",
        summary=" ".join(f"جملة رقم {k} عن سوريا والمنطقة." for k in range(size)),
        published=datetime(2024, 5, 10, 9, 15, tzinfo=UTC),
    )
    message = compose_alert(item, WatchlistMatch(watchlist), source="أخبار")
    return OutboxEntry(
        id=f"{chat}-{n}",
        chat=chat,
        text=message.html,
        plain=message.plain,
        watchlist=watchlist,
        item_key=f"k{n}",
        feed="wire",
        created_at=created_at,
    )


def test_quiet_hours_parse_and_wrap_midnight() -> None:
    quiet = parse_quiet_hours("22:00-07:00")
    assert quiet is not None and str(quiet) == "22:00-07:00"
    at = datetime(2024, 5, 10, 23, 30, tzinfo=UTC).timestamp()
    assert quiet.is_quiet(at, UTC)
    assert quiet.ends_after(at, UTC) == datetime(2024, 5, 11, 7, 0, tzinfo=UTC).timestamp()
    assert not quiet.is_quiet(datetime(2024, 5, 10, 12, 0, tzinfo=UTC).timestamp(), UTC)
    assert parse_quiet_hours("") is None
    for bad in ("22-07", "24:00-01:00", "07:00-07:00"):
        with pytest.raises(ValueError):
            parse_quiet_hours(bad)


def test_digest_is_valid_html_under_the_limit_and_short_when_needed() -> None:
    entries = [_entry(n, "@c_chan", created_at=0, size=40) for n in range(30)]
    whole = pack(entries, want=2)
    assert isinstance(whole, Digest) and 2 <= len(whole.ids) < 30
    short = pack(entries, want=30)
    assert isinstance(short, Digest) and len(short.ids) > len(whole.ids)
    for digest in (whole, short):
        shown = parse_telegram_html(digest.html)  # raises on markup Telegram would refuse
        assert len(shown.encode("utf-16-le")) // 2 <= 4096
        assert len(digest.plain.encode("utf-16-le")) // 2 <= 4096
    assert "matched" not in brief(entries[0].plain)
    assert "#night" in brief(entries[0].plain) and "news.example/0" in brief(entries[0].plain)


async def test_quiet_hours_hold_alerts_then_send_one_digest(
    tmp_path: Path, sender: TelegramSender, telegram: FakeTelegram
) -> None:
    now = datetime.now(UTC)
    # Quiet from one to two hours ago: alerts queued then were held, and are released now.
    start, end = now - timedelta(hours=2), now - timedelta(hours=1)
    quiet = QuietHours(
        start.time().replace(second=0, microsecond=0), end.time().replace(second=0, microsecond=0)
    )
    held_at = (now - timedelta(minutes=90)).timestamp()
    with Store.open(tmp_path / "state.json") as store:
        store.commit(alerts=[_entry(n, "@night_chan", created_at=held_at) for n in range(5)])
        store.commit(alerts=[_entry(9, "@night_chan", created_at=time.time(), watchlist="day")])
        deliverer = Deliverer(store, sender, quiet_hours={"night": quiet})
        # While quiet, nothing of the watchlist goes out and the worker waits for the end.
        assert isinstance(deliverer._plan("@night_chan", held_at), OutboxEntry)  # "day" only
        assert await deliverer.drain(10) == 0
    first, second = telegram.sent_to("@night_chan")
    assert first.plain_text.startswith("5 alerts from quiet hours")
    assert all(f"سوريا {n}" in first.plain_text for n in range(5))
    assert "سوريا 9" in second.plain_text
