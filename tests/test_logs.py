"""Logs: key=value and JSON lines, and the token never printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from aggregator.logs import event, redact, register_secret, setup_logging

TOKEN = "7654321:AAH-secret_token_value_0123456789abcdef"


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_key_value_line_and_token_redaction() -> None:
    register_secret(TOKEN)
    stream = io.StringIO()
    setup_logging("INFO", "text", stream)
    try:
        raise RuntimeError(f"POST https://api.telegram.org/bot{TOKEN}/sendMessage failed")
    except RuntimeError:
        logging.getLogger("aggregator.deliver").exception("boom", extra={"fields": {"chat": "@x"}})
    event(
        logging.getLogger("aggregator.fetch"),
        logging.WARNING,
        "feed failed",
        feed="annahar world",
        url=f"https://x/bot{TOKEN}/getMe",
    )
    out = stream.getvalue()
    assert TOKEN not in out and "AAH-secret" not in out
    assert "bot<redacted>" in out
    assert ' WARNING fetch "feed failed" feed="annahar world"' in out
    assert " ERROR deliver boom chat=@x error=" in out


def test_json_lines() -> None:
    stream = io.StringIO()
    setup_logging("INFO", "json", stream)
    event(logging.getLogger("aggregator.pipeline"), logging.INFO, "feed polled", feed="a", new=3)
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["component"] == "pipeline" and record["feed"] == "a" and record["new"] == 3


def test_unregistered_token_shapes_are_redacted_too() -> None:
    other = "1111111:" + "x" * 35
    assert other not in redact(f"token {other} and url /bot{other}/x")
