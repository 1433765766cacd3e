"""The TOML config: parsed once into frozen, validated settings; every error names its key path.

Validation is pydantic (types, defaults, unknown keys rejected) plus the cross-checks pydantic
cannot express: unique names, watchlists naming existing feeds and tags, and the watchlist rules
themselves (matching.check_rules). All problems are collected and raised together in one
ConfigError, so an admin fixes a config in one pass rather than one error per run.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .durations import parse_duration, parse_size
from .errors import ConfigError
from .matching import WatchlistRules, check_rules
from .metrics import parse_address
from .models import FIELDS
from .pacing import Limits, parse_rate
from .pacing import Rate as RateLimit
from .quiet import QuietHours, parse_quiet_hours

DEFAULT_CONFIG_PATH = "config.toml"
CONFIG_ENV = "AGGREGATOR_CONFIG"
TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
# systemd's LoadCredential= puts the token in this file under $CREDENTIALS_DIRECTORY.
CREDENTIAL_NAME = "telegram_token"

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than 0s")
    return value


# A timeout or a wait that 0 would turn into a failure every time, or a busy loop.
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


def _poll_interval(value: float) -> float:
    if value < 10:
        raise ValueError("must be at least 10s; publishers ban clients that poll faster")
    return value


# How often a feed is polled (or retried): never faster than every 10 s.
PollInterval = Annotated[Duration, AfterValidator(_poll_interval)]


def _check_interval_bounds(low: float | None, high: float | None) -> None:
    """min_interval and max_interval, of [polling] or of one feed, when both are set."""
    if low is not None and high is not None and low > high:
        raise ValueError("min_interval must not be longer than max_interval")


Size = Annotated[int, BeforeValidator(parse_size)]

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
_CHANNEL = re.compile(r"^@[A-Za-z][A-Za-z0-9_]{3,}$")
_NAME = re.compile(r"^[^\s/\\][^/\\]*$")


def _parse_backfill(value: object) -> float | None:
    """None means "all"; otherwise the window in seconds ("0" alerts nothing old)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return None
    return parse_duration(value)


def _parse_chat(value: object) -> str:
    """A chat is "@channelname" or a numeric id; kept as text, as Telegram accepts both."""
    if isinstance(value, bool):
        raise ValueError(f'expected "@channel" or a numeric chat id, got {value!r}')
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        if _CHANNEL.match(text) or re.fullmatch(r"-?\d+", text):
            return text
    raise ValueError(
        f'expected "@channel" (letters, digits, _; at least 5 characters) '
        f"or a numeric chat id, got {value!r}"
    )


Backfill = Annotated[float | None, BeforeValidator(_parse_backfill)]
Chat = Annotated[str, BeforeValidator(_parse_chat)]
Rate = Annotated[RateLimit, BeforeValidator(parse_rate)]
TELEGRAM_LIMITS = Limits()  # Telegram's published flood limits (aggregator.pacing)
QuietSpan = Annotated[QuietHours | None, BeforeValidator(parse_quiet_hours)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TelegramSettings(_Section):
    """[telegram]: where the Bot API is and who may run admin commands."""

    api_url: str = "https://api.telegram.org"
    token_file: str = ""
    admins: tuple[int, ...] = ()
    timezone: str = "UTC"
    send_timeout: PositiveDuration = 30.0
    # Longest wait between retries of a chat while Telegram fails (5xx, timeouts); a 429's
    # retry_after is always obeyed as given, whatever this says.
    max_backoff: PositiveDuration = 60.0
    # A chat's backlog that its flood limit cannot carry within this time goes out in digests.
    max_delay: Duration = 120.0
    # Telegram's flood limits, kept before sending (aggregator.pacing). Raise overall_limit for
    # paid broadcasts; lower them if Telegram answers 429 all the same.
    overall_limit: Rate = TELEGRAM_LIMITS.overall
    group_limit: Rate = TELEGRAM_LIMITS.group
    private_limit: Rate = TELEGRAM_LIMITS.private
    # A chat that refuses the bot (blocked, kicked) is retried this often; its alerts are kept
    # this long, then given up (each logged).
    paused_retry: Duration = 600.0
    paused_keep: Duration = 7 * 86400.0
    # Answer bot commands (/subscribe, /status...) by long polling getUpdates. Off when another
    # program reads this bot's updates (a webhook, or a second daemon with the same token).
    commands: bool = True

    @field_validator("max_delay", "paused_retry")
    @classmethod
    def _check_positive(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("max_backoff")
    @classmethod
    def _check_max_backoff(cls, value: float) -> float:
        if not 1.0 <= value <= 3600.0:
            raise ValueError(
                "must be between 1s and 1h: shorter hammers a Telegram that is down, longer "
                "leaves alerts waiting long after it is back"
            )
        return value

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(
                f"expected an http(s) URL such as https://api.telegram.org, got {value!r}"
            )
        if "/bot" in value:
            raise ValueError("give the server root only; the program appends /bot<token>/ itself")
        return value.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'unknown time zone {value!r}; use an IANA name such as "Asia/Beirut" or "UTC"'
            ) from None
        return value


class StorageSettings(_Section):
    """[storage]: the TinyDB state file and how long seen items are remembered."""

    path: str = "data/aggregator.json"
    seen_ttl: Duration = 30 * 86400.0

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError(f"expected a file path, got {value!r}")
        return value


class PollingSettings(_Section):
    """[polling]: default interval, first-poll backfill and fetch limits."""

    interval: PollInterval = 600.0
    backfill: Backfill = 6 * 3600.0
    jitter: float = Field(default=0.1, ge=0, le=0.5)
    timeout: PositiveDuration = 60.0
    connect_timeout: PositiveDuration = 10.0
    max_body: Size = 10 * 1024 * 1024
    max_redirects: int = Field(default=5, ge=0, le=20)
    max_in_flight: int = Field(default=20, ge=1, le=1000)
    max_per_host: int = Field(default=2, ge=1, le=100)
    # Adaptive polling (aggregator.polling): a feed's interval moves between these with its
    # pace. Unset, min_interval is 1m (or the interval, if shorter) and max_interval is the
    # interval, so a config from before adaptivity never polls a feed less often than it says.
    min_interval: PollInterval | None = None
    max_interval: PollInterval | None = None
    # Failures back off exponentially up to max_backoff; after suspend_after in a row the feed
    # is suspended (retried at max_backoff) and the admins are told, once.
    max_backoff: PollInterval = 3600.0
    suspend_after: int = Field(default=5, ge=1, le=1000)
    # Processes that parse feeds (aggregator.parse_pool); 0 parses in a thread of the daemon.
    parse_workers: int | Literal["auto"] = "auto"

    def parse_worker_count(self) -> int:
        """How many parse processes to run ("auto": 2 on a machine with 2 cores or more)."""
        if self.parse_workers == "auto":
            return 2 if (os.cpu_count() or 1) >= 2 else 0
        return self.parse_workers

    @field_validator("parse_workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> object:
        # Before pydantic's own checks, whose two errors for a union name neither problem.
        ok = value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 32
        )
        if not ok:
            raise ValueError(
                f'must be "auto" or a number of processes from 0 to 32 (0: parse in a thread), '
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> PollingSettings:
        _check_interval_bounds(self.min_interval, self.max_interval)
        return self


class DedupSettings(_Section):
    """[dedup]: one alert per story; a near-duplicate from another outlet edits the first one."""

    window: Duration = 48 * 3600.0  # how long a near-duplicate still joins an alert; 0: off
    threshold: float = Field(default=0.65, gt=0, le=1)  # word containment (aggregator/cluster)


class MetricsSettings(_Section):
    """[metrics]: where Prometheus can scrape /metrics; empty: not served."""

    address: str = ""

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        if value.strip():
            parse_address(value)
        return value.strip()


class FeedSettings(_Section):
    """One [[feeds]] entry."""

    name: str
    url: str
    interval: PollInterval | None = None
    min_interval: PollInterval | None = None  # this feed's own [polling] min_interval
    max_interval: PollInterval | None = None  # this feed's own [polling] max_interval
    tags: tuple[str, ...] = ()
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not value.strip() or not _NAME.match(value):
            raise ValueError(f"a feed name must be non-empty text without slashes, got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+\S*$", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a port that is no number or out of range
        except ValueError as exc:
            raise ValueError(f"{exc} in {value!r}") from None
        if not parts.hostname:
            raise ValueError(f"the URL has no host name: {value!r}")
        return value

    @model_validator(mode="after")
    def _check_bounds(self) -> FeedSettings:
        _check_interval_bounds(self.min_interval, self.max_interval)
        return self


class WatchlistSettings(_Section):
    """One [[watchlists]] entry: the terms (see spec/matching.md) and where alerts go."""

    name: str
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    query: str | None = None
    channels: tuple[Chat, ...] = ()
    feeds: tuple[str, ...] = ()
    fields: tuple[str, ...] = FIELDS
    link_preview: bool = False
    subscribable: bool = False
    # "22:00-07:00" in telegram.timezone: alerts held, then sent as one digest when it ends.
    quiet_hours: QuietSpan = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not re.fullmatch(r"[^\s#][^#]*", value.strip()):
            raise ValueError(f"a watchlist name must be non-empty text without '#', got {value!r}")
        return value.strip()

    def rules(self) -> WatchlistRules:
        """The matcher's view of this watchlist."""
        return WatchlistRules(
            name=self.name,
            any=self.any,
            all=self.all,
            none=self.none,
            query=self.query,
            fields=self.fields,
            feeds=self.feeds,
        )


class Config(_Section):
    """The whole validated config. Frozen: a reload builds a new one."""

    telegram: TelegramSettings = TelegramSettings()
    storage: StorageSettings = StorageSettings()
    polling: PollingSettings = PollingSettings()
    dedup: DedupSettings = DedupSettings()
    metrics: MetricsSettings = MetricsSettings()
    feeds: tuple[FeedSettings, ...] = ()
    watchlists: tuple[WatchlistSettings, ...] = ()

    def feed(self, name: str) -> FeedSettings | None:
        """The feed with this name, if any."""
        return next((f for f in self.feeds if f.name == name), None)


@dataclass(frozen=True)
class LoadedConfig:
    """A config with where it came from (relative paths in it are relative to its folder)."""

    config: Config
    path: Path
    warnings: tuple[tuple[str, str], ...] = ()

    @property
    def storage_path(self) -> Path:
        """The store file, relative paths resolved against the config file's folder."""
        return (self.path.parent / self.config.storage.path).resolve()


def resolve_config_path(cli_value: str | None) -> Path:
    """-c PATH, else $AGGREGATOR_CONFIG, else ./config.toml."""
    return Path(cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> LoadedConfig:
    """Read, parse and validate a config file; raise ConfigError listing every problem."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [
                (
                    "",
                    f"config file {path} not found (give one with -c PATH or "
                    f"${CONFIG_ENV}; config.example.toml is a starting point)",
                )
            ]
        ) from None
    except OSError as exc:
        raise ConfigError([("", f"cannot read config file {path}: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([("", f"{path}: not UTF-8 text (byte {exc.start})")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"{path}: TOML syntax error: {exc}")]) from None
    config, warnings = validate_config(data)
    return LoadedConfig(config=config, path=path, warnings=tuple(warnings))


def validate_config(data: Mapping[str, Any]) -> tuple[Config, list[tuple[str, str]]]:
    """Validate parsed TOML; return the config and its warnings, or raise ConfigError."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = [(_key_path(err["loc"]), _message(err)) for err in exc.errors()]
        # Cross-checks still run on what did parse, so one pass shows every problem.
        problems += _cross_check_raw(data)
        raise ConfigError(_dedupe(problems)) from None
    problems, warnings = _cross_check(config)
    if problems:
        raise ConfigError(problems)
    return config, warnings


def _cross_check(config: Config) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    warnings: list[tuple[str, str]] = []
    problems += _duplicates("feeds", [f.name for f in config.feeds])
    problems += _duplicates("watchlists", [w.name for w in config.watchlists])
    feed_names = {f.name for f in config.feeds}
    tags = {t for f in config.feeds for t in f.tags}
    for i, wl in enumerate(config.watchlists):
        base = f"watchlists[{i}]"
        errors, warns = check_rules(wl.rules())
        problems += [(f"{base}.{path}" if path else base, msg) for path, msg in errors]
        warnings += [(f"{base}.{path}" if path else base, msg) for path, msg in warns]
        for j, ref in enumerate(wl.feeds):
            if ref.startswith("tag:"):
                if ref[4:] not in tags:
                    problems.append((f"{base}.feeds[{j}]", f"no feed has the tag {ref[4:]!r}"))
            elif ref not in feed_names:
                problems.append((f"{base}.feeds[{j}]", f"no feed is named {ref!r}"))
        if not wl.channels and not wl.subscribable:
            warnings.append(
                (
                    f"{base}.channels",
                    "no channels and not subscribable: its "
                    "matches go nowhere (add channels or subscribable = true)",
                )
            )
    if not config.feeds:
        warnings.append(("feeds", "no feeds configured: nothing will be polled"))
    return problems, warnings


def _cross_check_raw(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Duplicate names, checked on the raw data when full validation already failed."""
    problems: list[tuple[str, str]] = []
    for section in ("feeds", "watchlists"):
        entries = data.get(section)
        if isinstance(entries, list):
            names = [e.get("name") for e in entries if isinstance(e, dict)]
            problems += _duplicates(section, [n for n in names if isinstance(n, str)])
    return problems


def _duplicates(section: str, names: list[str]) -> list[tuple[str, str]]:
    seen: dict[str, int] = {}
    problems = []
    for i, name in enumerate(names):
        if name in seen:
            problems.append(
                (f"{section}[{i}].name", f"{name!r} is already the name of {section}[{seen[name]}]")
            )
        else:
            seen[name] = i
    return problems


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in ("str", "int", "float", "tuple"):
            continue  # pydantic's internal validator names are not config keys
        else:
            path += f".{part}" if path else part
    return path


def _message(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling; see config.example.toml for every key)"
    if kind == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _dedupe(problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys(problems))


def read_token(loaded: LoadedConfig) -> str | None:
    """The bot token from token_file, $CREDENTIALS_DIRECTORY, or $TELEGRAM_BOT_TOKEN; None if none.

    Raises ConfigError (which never contains the token) when a configured source is unusable.
    """
    settings = loaded.config.telegram
    token: str | None = None
    source = ""
    if settings.token_file:
        token_path = loaded.path.parent / settings.token_file
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                [("telegram.token_file", f"cannot read {token_path}: {exc.strerror}")]
            ) from None
        source = f"telegram.token_file ({token_path})"
    elif (cred_dir := os.environ.get("CREDENTIALS_DIRECTORY")) and (
        Path(cred_dir) / CREDENTIAL_NAME
    ).is_file():
        token = (Path(cred_dir) / CREDENTIAL_NAME).read_text(encoding="utf-8").strip()
        source = f"systemd credential {CREDENTIAL_NAME}"
    elif os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
        source = f"${TOKEN_ENV}"
    if not token:
        return None
    if not _TOKEN.match(token):
        # Never echo the value: a mistyped token is still mostly a secret.
        raise ConfigError(
            [
                (
                    "telegram",
                    f"the bot token from {source} does not look like a "
                    "Telegram token (digits, ':', then 20+ letters, digits, _ or -)",
                )
            ]
        )
    return token


def feed_interval(config: Config, feed: FeedSettings) -> float:
    """The polling interval of a feed: its own, else [polling].interval."""
    return feed.interval if feed.interval is not None else config.polling.interval
