"""Shared fixtures: the real local servers and config files for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from aggregator.store import OutboxEntry, Store
from aggregator.telegram_api import TelegramSender
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

DATA = Path(__file__).parent / "data"
FEEDS = DATA / "feeds"
TOKEN = "123456:TEST-token-abcdefghijklmnopqrstuvwxyz"


def queued_alert(n: int, chat: str, text: str | None = None) -> OutboxEntry:
    """An alert as the pipeline queues it, numbered ``n``, for ``chat``."""
    return OutboxEntry(
        id=f"id-{chat}-{n}",
        chat=chat,
        text=text or f"<b>alert {n}</b>",
        plain=f"alert {n}",
        watchlist="w",
        item_key=f"key-{n}",
        feed="f",
        created_at=time.time(),
    )


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A feed server on 127.0.0.1 serving what the test adds."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    """A fake Telegram Bot API on 127.0.0.1 that records what it received."""
    with FakeTelegram(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def sender(telegram: FakeTelegram) -> AsyncIterator[TelegramSender]:
    """The real Bot API client, talking to ``telegram``."""
    real = TelegramSender(api_url=telegram.api_url, token=TOKEN, timeout_s=5)
    yield real
    await real.aclose()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store in the test's folder."""
    with Store.open(tmp_path / "state.json") as opened:
        yield opened


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(value)


def write_config(
    folder: Path,
    *,
    feeds: Sequence[Mapping[str, object]],
    watchlists: Sequence[Mapping[str, object]],
    telegram: Mapping[str, object] | None = None,
    polling: Mapping[str, object] | None = None,
    token: str | None = None,
) -> Path:
    """Write a config.toml (and a token file when a token is given); return its path."""
    tg = dict(telegram or {})
    if token is not None:
        (folder / "token").write_text(token + "\n", encoding="utf-8")
        tg["token_file"] = "token"
    sections = [
        ("telegram", tg),
        ("storage", {"path": "state/aggregator.json"}),
        ("polling", {"backfill": "all", "jitter": 0, **(polling or {})}),
    ]
    lines: list[str] = []
    for name, table in sections:
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    for kind, entries in (("feeds", feeds), ("watchlists", watchlists)):
        for entry in entries:
            lines.append(f"[[{kind}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in entry.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def until(predicate: Callable[[], bool], within_s: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``within_s`` seconds pass (False)."""
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True
