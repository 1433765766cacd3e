"""Config: types, defaults, key paths in errors, secrets never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import load_config, read_token, resolve_config_path, validate_config
from aggregator.durations import format_duration, parse_duration, parse_size
from aggregator.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def _problems(data: dict[str, object]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        validate_config(data)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("10m", 600),
        ("2h", 7200),
        ("1d", 86400),
        (90, 90),
        ("250ms", 0.25),
        ("0", 0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["often", "-5s", "10 minutes", True, None])
def test_bad_durations_say_what_is_expected(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_sizes_and_formatting() -> None:
    assert parse_size("10MB") == 10_000_000
    assert parse_size("1MiB") == 1024 * 1024
    assert format_duration(600) == "10m" and format_duration(90) == "90s"


def test_example_config_loads_with_its_defaults() -> None:
    loaded = load_config(REPO / "config.example.toml")
    config = loaded.config
    assert config.polling.interval == 600
    assert config.polling.backfill == 6 * 3600
    assert {f.name for f in config.feeds} >= {"bbc-arabic", "bbc-world"}
    assert config.watchlists[0].channels == ("@syria_alerts",)
    assert loaded.storage_path == (REPO / "data" / "aggregator.json").resolve()


def test_backfill_all_and_zero() -> None:
    base = {"feeds": [], "watchlists": []}
    all_config, _ = validate_config({**base, "polling": {"backfill": "all"}})
    assert all_config.polling.backfill is None
    zero, _ = validate_config({**base, "polling": {"backfill": "0"}})
    assert zero.polling.backfill == 0


def test_new_delivery_and_polling_keys_say_what_is_wrong() -> None:
    problems = dict(
        _problems(
            {
                "telegram": {"group_limit": "20 per minute", "paused_keep": -5},
                "polling": {"parse_workers": "many"},
                "feeds": [],
                "watchlists": [
                    {"name": "w", "any": ["x"], "channels": ["@chan_x"], "quiet_hours": "25:00-7"}
                ],
            }
        )
    )
    assert "messages per duration" in problems["telegram.group_limit"]
    assert "cannot be negative" in problems["telegram.paused_keep"]
    assert problems["polling.parse_workers"] == (
        "must be \"auto\" or a number of processes from 0 to 32 (0: parse in a thread), got 'many'"
    )
    assert "25:00-7" in problems["watchlists[0].quiet_hours"]
    assert validate_config({"polling": {"parse_workers": 0}, "feeds": [], "watchlists": []})


def test_durations_and_urls_that_would_break_the_daemon_are_config_errors() -> None:
    # Each of these passed check-config once, then crashed `run` with a traceback or made
    # every send fail.
    problems = dict(
        _problems(
            {
                "telegram": {"send_timeout": 0, "max_backoff": "0s"},
                "polling": {"interval": float("nan"), "timeout": 0, "connect_timeout": "0ms"},
                "storage": {"seen_ttl": float("inf"), "path": "a\x00b"},
                "feeds": [
                    {"name": "a", "url": "http://127.0.0.1:80800/feed.xml"},
                    {"name": "b", "url": "https://x.example/rss", "interval": 1e300},
                    {"name": "c", "url": "https://y.example/rss", "interval": "99999999999d"},
                    {
                        "name": "d",
                        "url": "https://z.example/rss",
                        "min_interval": "2h",
                        "max_interval": "1h",
                    },
                ],
                "watchlists": [],
            }
        )
    )
    for key in ("telegram.send_timeout", "telegram.max_backoff", "polling.timeout"):
        assert problems[key] == "must be longer than 0s", key
    assert problems["polling.connect_timeout"] == "must be longer than 0s"
    assert "expected a duration" in problems["polling.interval"]
    assert "at most 3650d" in problems["storage.seen_ttl"]
    assert problems["storage.path"] == "expected a file path, got 'a\\x00b'"
    assert "Port out of range" in problems["feeds[0].url"]
    assert "at most 3650d" in problems["feeds[1].interval"]
    assert "at most 3650d" in problems["feeds[2].interval"]
    assert "min_interval must not be longer than max_interval" in problems["feeds[3]"]


def test_every_problem_has_its_key_path() -> None:
    problems = dict(
        _problems(
            {
                "telegram": {"api_url": "api.telegram.org", "colour": "red"},
                "polling": {"interval": "5s"},
                "feeds": [
                    {"name": "a", "url": "https://x.example/rss"},
                    {"name": "a", "url": "https://y.example/rss"},
                    {"url": "https://z.example/rss"},
                ],
                "watchlists": [
                    {"name": "w", "any": ["x"], "channels": [-100123, "@ok_channel", "bad"]}
                ],
            }
        )
    )
    assert "telegram.api_url" in problems
    assert problems["telegram.colour"].startswith("unknown key")
    assert "at least 10s" in problems["polling.interval"]
    assert "already the name of feeds[0]" in problems["feeds[1].name"]
    assert problems["feeds[2].name"] == "required key is missing"
    assert "watchlists[0].channels[2]" in problems


def test_watchlist_feed_references_are_checked() -> None:
    problems = dict(
        _problems(
            {
                "feeds": [{"name": "a", "url": "https://x.example/rss", "tags": ["ar"]}],
                "watchlists": [
                    {
                        "name": "w",
                        "any": ["x"],
                        "channels": ["@chan_1"],
                        "feeds": ["a", "b", "tag:ar", "tag:en"],
                    }
                ],
            }
        )
    )
    assert problems == {
        "watchlists[0].feeds[1]": "no feed is named 'b'",
        "watchlists[0].feeds[3]": "no feed has the tag 'en'",
    }


def test_watchlist_rules_errors_carry_the_watchlist_path() -> None:
    problems = _problems(
        {
            "feeds": [],
            "watchlists": [{"name": "w", "query": "(سوريا OR", "channels": ["@chan_1"]}],
        }
    )
    assert any(path.startswith("watchlists[0].query") for path, _ in problems), problems


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[polling]\ninterval = 10m\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 2, column"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_config_path_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGGREGATOR_CONFIG", raising=False)
    assert resolve_config_path(None) == Path("config.toml")
    monkeypatch.setenv("AGGREGATOR_CONFIG", "/etc/aggregator/config.toml")
    assert resolve_config_path(None) == Path("/etc/aggregator/config.toml")
    assert resolve_config_path("x.toml") == Path("x.toml")


def test_token_sources_and_a_bad_token_is_never_echoed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "c.toml"
    path.write_text("", encoding="utf-8")
    loaded = load_config(path)
    assert read_token(loaded) is None
    good = "123456:" + "A" * 35
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", good)
    assert read_token(loaded) == good
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "telegram_token").write_text("999:" + "B" * 30 + "\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_token(loaded) == "999:" + "B" * 30
    bad = "secret-but-malformed"
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", bad)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError) as info:
        read_token(loaded)
    assert bad not in str(info.value)
