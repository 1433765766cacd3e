"""Logging: one line per event with key=value fields (or JSON), and no secret in any line.

Every record passes through ``_redact`` after formatting, exceptions included, because the bot
token travels inside Telegram API URLs ("/bot<token>/sendMessage") and those URLs show up in
library log lines and exception messages that this program does not write itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

_TOKEN_IN_URL = re.compile(r"bot\d{3,}:[A-Za-z0-9_-]{10,}")
_BARE_TOKEN = re.compile(r"\b\d{6,}:[A-Za-z0-9_-]{30,}\b")
_secrets: set[str] = set()


def register_secret(secret: str) -> None:
    """Make every later log line replace this exact string with <redacted>."""
    if secret:
        _secrets.add(secret)


def redact(text: str) -> str:
    """Remove registered secrets and anything shaped like a bot token from text."""
    for secret in _secrets:
        text = text.replace(secret, "<redacted>")
    text = _TOKEN_IN_URL.sub("bot<redacted>", text)
    return _BARE_TOKEN.sub("<redacted>", text)


def event(logger: logging.Logger, level: int, message: str, /, **fields: object) -> None:
    """Log one event with key=value fields (``feed="annahar"``, ``chat="@x"``)."""
    logger.log(level, message, extra={"fields": fields})


def _component(record: logging.LogRecord) -> str:
    name = record.name
    if name.startswith("aggregator."):
        return name.removeprefix("aggregator.")
    return name.split(".")[0]


def _quote(value: object) -> str:
    text = str(value)
    if text == "" or re.search(r"[\s\"=]", text):
        return json.dumps(text, ensure_ascii=False)
    return text


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-25T10:00:00Z INFO fetch feed=x msg="..."``: easy to grep and to ship."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        parts = [stamp, record.levelname, _component(record), _quote(record.getMessage())]
        parts += [f"{key}={_quote(value)}" for key, value in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " error=" + _quote(self.formatException(record.exc_info).splitlines()[-1])
        return redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname,
            "component": _component(record),
            "msg": record.getMessage(),
        }
        for key, value in _fields(record).items():
            data[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return redact(json.dumps(data, ensure_ascii=False))


def setup_logging(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record to stderr in the chosen format, redacted."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and Telegram URLs carry the token; PTB's rate
    # limiter logs a full traceback for each 429 that we already handle and log ourselves.
    for noisy in ("httpx", "httpcore", "apscheduler.executors", "telegram.ext.AIORateLimiter"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
