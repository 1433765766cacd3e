"""End to end: the real ``aggregator`` command against a local feed server and a fake Bot API."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

from aggregator.matching.native import KERNEL
from tests.conftest import FEEDS, TOKEN, write_config
from tests.daemon_process import DaemonProcess, clean_env, run_cli
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

REPO = Path(__file__).resolve().parent.parent
# The seed article has no license of its own, so it is read from the shared corpus beside the
# checkout (where CI has it) rather than copied; SAMPLE is a feed of the same shape written for
# this project, so that the suite also stands on its own.
SHARED_SEED = REPO.parent / "shared" / "corpus" / "seed" / "annahar-seed.xml"
SEED_TITLE = "أميركا لم توافق على التعاون عسكرياً مع روسيا في سوريا"
SAMPLE = REPO / "tests" / "data" / "own" / "syria-sample.xml"
SAMPLE_TITLE = "وزير الخارجية يبحث مع نظيره الروسي الوضع في سوريا"


def _seed_config(
    tmp_path: Path,
    feed_server: FeedServer,
    telegram: FakeTelegram,
    feed: Path = SAMPLE,
    token: str | None = TOKEN,
) -> Path:
    feed_server.add("/annahar.xml", feed.read_bytes())
    return write_config(
        tmp_path,
        feeds=[{"name": "annahar-world", "url": feed_server.url_for("/annahar.xml")}],
        watchlists=[{"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]}],
        telegram={"api_url": telegram.api_url},
        token=token,
    )


@pytest.mark.skipif(not SHARED_SEED.exists(), reason=f"{SHARED_SEED} is not present")
def test_once_delivers_the_seed_article_exactly_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    _once_twice(tmp_path, feed_server, telegram, SHARED_SEED, SEED_TITLE)


def test_once_delivers_a_new_item_exactly_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    _once_twice(tmp_path, feed_server, telegram, SAMPLE, SAMPLE_TITLE)


def _once_twice(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram, feed: Path, title: str
) -> None:
    config = _seed_config(tmp_path, feed_server, telegram, feed)
    first = run_cli(["once", "-c", str(config)])
    assert first.returncode == 0, first.stderr
    assert len(telegram.messages) == 1
    message = telegram.messages[0]
    assert message.chat_id == "@syria_alerts"
    assert title in message.text
    assert message.parse_mode == "HTML"

    second = run_cli(["once", "-c", str(config)])
    assert second.returncode == 0, second.stderr
    assert len(telegram.messages) == 1, "a second run must not alert again"


def test_once_json_prints_the_documented_object(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    config = _seed_config(tmp_path, feed_server, telegram)
    result = run_cli(["once", "-c", str(config), "--json"])
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    alert = json.loads(line)
    assert set(alert) == {
        "watchlist",
        "channels",
        "feed",
        "title",
        "link",
        "published",
        "matched",
        "text",
    }
    assert alert["watchlist"] == "syria"
    assert alert["channels"] == ["@syria_alerts"]
    assert alert["feed"] == "annahar-world"
    assert alert["title"] == SAMPLE_TITLE
    assert alert["published"] == "2024-05-10T06:15:00+00:00"
    assert {"term": "#سوريا", "field": "title"} in alert["matched"]
    assert alert["text"] == telegram.messages[0].text, "text is the message exactly as sent"


def test_once_json_without_a_token_keeps_standard_output_to_json(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    # No token: alerts are printed for a person, on standard error, so that `| jq` still works.
    config = _seed_config(tmp_path, feed_server, telegram, token=None)
    result = run_cli(["once", "-c", str(config), "--json"])
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["title"] == SAMPLE_TITLE
    assert "alert for @syria_alerts" in result.stderr


def test_dry_run_sends_nothing_and_changes_nothing(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    config = _seed_config(tmp_path, feed_server, telegram)
    dry = run_cli(["once", "-c", str(config), "--dry-run", "--json"])
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout.splitlines()[0])["title"] == SAMPLE_TITLE
    assert telegram.messages == []
    assert (
        not (tmp_path / "state" / "aggregator.json").exists()
        or run_cli(["once", "-c", str(config), "--dry-run", "--json"]).stdout == dry.stdout
    )
    real = run_cli(["once", "-c", str(config)])
    assert real.returncode == 0, real.stderr
    assert len(telegram.messages) == 1, "the dry run must not have marked the item seen"


def test_windows_1256_feed_arrives_intact(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    body = (FEEDS / "news-ar" / "news-c-latest-cp1256.xml").read_bytes()
    feed_server.add("/c.xml", body, content_type="application/rss+xml")
    config = write_config(
        tmp_path,
        feeds=[{"name": "news-c", "url": feed_server.url_for("/c.xml")}],
        watchlists=[{"name": "qatar", "any": ["قطر"], "channels": ["-1001234567890"]}],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    result = run_cli(["once", "-c", str(config)])
    assert result.returncode == 0, result.stderr
    texts = [m.text for m in telegram.messages]
    assert any("مفتي السعودية: مقاطعة قطر فيها مصلحة للمسلمين" in t for t in texts), texts
    assert all("\ufffd" not in t and "Ø" not in t for t in texts)


def test_same_link_in_two_feeds_alerts_once(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    body = SAMPLE.read_bytes()
    feed_server.add("/a.xml", body)
    # Another feed, another guid, the same article with other tracking parameters.
    feed_server.add(
        "/b.xml",
        body.replace(b"sample-1001", b"other-guid-1").replace(b"utm_source=rss", b"utm_medium=x"),
    )
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "a", "url": feed_server.url_for("/a.xml")},
            {"name": "b", "url": feed_server.url_for("/b.xml")},
        ],
        watchlists=[{"name": "syria", "any": ["التدخل_الروسي"], "channels": ["@syria_alerts"]}],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    result = run_cli(["once", "-c", str(config)])
    assert result.returncode == 0, result.stderr
    assert len(telegram.messages) == 1


def test_once_leaves_alerts_queued_when_telegram_is_down(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    config = _seed_config(tmp_path, feed_server, telegram)
    telegram.set_down(True)
    result = run_cli(["once", "-c", str(config), "--timeout", "2"])
    assert result.returncode == 1
    assert "1 alerts could not be delivered" in result.stderr, result.stderr
    telegram.set_down(False)
    retry = run_cli(["once", "-c", str(config)])
    assert retry.returncode == 0, retry.stderr
    assert len(telegram.messages) == 1


def test_run_killed_during_outage_delivers_everything_after_restart(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    body = (FEEDS / "news-ar" / "news-a-world.xml").read_bytes()
    feed_server.add("/world.xml", body)
    config = write_config(
        tmp_path,
        feeds=[{"name": "world", "url": feed_server.url_for("/world.xml")}],
        watchlists=[
            {"name": "all-syria", "any": ["سوريا", "سوري*"], "channels": ["@alerts_a", "@alerts_b"]}
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    # What a full delivery looks like, from a dry run.
    dry = run_cli(["once", "-c", str(config), "--dry-run", "--json"])
    expected = {
        (chat, json.loads(line)["title"])
        for line in dry.stdout.splitlines()
        for chat in ("@alerts_a", "@alerts_b")
    }
    assert len(expected) >= 4, dry.stdout

    telegram.set_down(True)
    daemon = DaemonProcess(["run", "-c", str(config)], env=clean_env())
    try:
        assert daemon.wait_for(r"send failed, will retry", timeout=30), daemon.output()
        daemon.kill()
    finally:
        daemon.close()
    assert telegram.messages == []

    telegram.set_down(False)
    restarted = DaemonProcess(["run", "-c", str(config)], env=clean_env())
    try:
        assert telegram.wait_for_messages(len(expected), timeout=60), restarted.output()
        assert restarted.terminate() == 0
        # The start line says which matcher loops run (operators without a compiler at
        # install learn it there): the C kernel, where pip built it, as for this process.
        matcher = "python" if KERNEL is None else "c"
        assert re.search(rf'"daemon started" .* matcher={matcher}\b', restarted.output())
    finally:
        restarted.close()
    delivered = [(m.chat_id, m.text) for m in telegram.messages]
    assert len(delivered) == len(expected), "each alert exactly once"
    for chat, title in expected:
        assert sum(1 for c, text in delivered if c == chat and title in text) == 1, (chat, title)


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[polling]\ninterval = "often"\n\n'
        '[[feeds]]\nname = "a"\nurl = "ftp://example.com/feed"\n\n'
        '[[watchlists]]\nname = "w"\nany = ["x"]\nchannels = ["not a channel"]\n',
        encoding="utf-8",
    )
    result = run_cli(["check-config", "-c", str(config)])
    assert result.returncode == 2
    assert "polling.interval:" in result.stderr
    assert "feeds[0].url:" in result.stderr
    assert "watchlists[0].channels[0]:" in result.stderr
    assert "3 problem(s)" in result.stderr


def test_check_config_reports_toml_syntax_position(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[polling]\ninterval = "10m\n', encoding="utf-8")
    result = run_cli(["check-config", "-c", str(config)])
    assert result.returncode == 2
    assert "line 2" in result.stderr and "column" in result.stderr


def test_check_config_accepts_the_example() -> None:
    result = run_cli(["check-config", "-c", str(REPO / "config.example.toml")])
    assert result.returncode == 0, result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_example_config_without_network_or_token_keeps_running(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.example.toml", tmp_path / "config.toml")
    # Every request goes to a proxy that is not there: no network, on any machine.
    dead = f"http://127.0.0.1:{_closed_port()}"
    env = clean_env(HTTP_PROXY=dead, HTTPS_PROXY=dead, NO_PROXY="")
    daemon = DaemonProcess(["run", "-c", str(tmp_path / "config.toml")], env=env)
    try:
        names = [
            "bbc-arabic",
            "france24-arabic",
            "dw-arabic",
            "aljazeera-english",
            "bbc-world",
            "guardian-world",
        ]
        for name in names:
            assert daemon.wait_for(rf"feed failed.*feed={name}\b", timeout=30), daemon.output()
        assert daemon.proc.poll() is None, "the daemon must keep running"
        started = time.monotonic()
        assert daemon.terminate(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        daemon.close()


def test_match_shows_words_as_written() -> None:
    text = "أكّد وزير الدفاع الاميركي ان #التدخل_الروسي في سوريا خطأ"
    result = run_cli(["match", "-c", str(REPO / "config.example.toml"), text])
    assert result.returncode == 0, result.stderr
    assert "syria" in result.stdout
    assert "#التدخل_الروسي" in result.stdout

    as_json = run_cli(["match", "-c", str(REPO / "config.example.toml"), "--json", text])
    obj = json.loads(as_json.stdout)
    assert obj["text"] == text
    assert [m["watchlist"] for m in obj["matches"]] == ["syria"]
    assert "#التدخل_الروسي" in obj["matches"][0]["terms"]


def test_sighup_reloads_feeds_and_watchlists_and_refuses_a_bad_config(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    feed_server.add("/c.xml", (FEEDS / "news-ar" / "news-c-latest-cp1256.xml").read_bytes())
    sample_feed = {"name": "sample", "url": feed_server.url_for("/sample.xml")}
    syria = {"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]}
    admins = [4242, 4343]
    config = write_config(
        tmp_path,
        feeds=[sample_feed],
        watchlists=[syria],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        assert telegram.wait_for_messages(1, timeout=30), daemon.output()
        write_config(
            tmp_path,
            feeds=[sample_feed, {"name": "news-c", "url": feed_server.url_for("/c.xml")}],
            watchlists=[syria, {"name": "qatar", "any": ["قطر"], "channels": ["@qatar_alerts"]}],
            telegram={"api_url": telegram.api_url, "admins": admins, "send_timeout": "20s"},
            polling={"max_body": "5MB"},
            token=TOKEN,
        )
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for(r"config reloaded.*feeds_added=news-c", timeout=10), daemon.output()
        # Settings read once at start are not silently ignored.
        assert daemon.wait_for(
            r"changed settings take effect at the next restart.*"
            r"keys=polling.max_body,telegram.send_timeout",
            timeout=1,
        ), daemon.output()
        assert telegram.wait_until(lambda: len(telegram.sent_to("@qatar_alerts")) >= 1, 30)
        good = config.read_text(encoding="utf-8")
        config.write_text(good + "\n[oops\n", encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for(r"new config refused", timeout=10), daemon.output()
        # The refusal also goes to every admin, through the outbox like any alert.
        for admin in admins:
            assert telegram.wait_for_messages(1, timeout=30, chat_id=admin), daemon.output()
            (notice,) = telegram.sent_to(admin)
            assert notice.plain_text.startswith(
                "New config refused (config.toml); still running the old one\n"
            ), notice.plain_text
            assert "TOML syntax error" in notice.plain_text and "line" in notice.plain_text
        # A refused value that carries the token (pasted into a URL) is sent without it.
        config.write_text(
            good
            + f'[[feeds]]\nname = "leaky"\nurl = "ftp://example.com/bot{TOKEN}/x"\n'
            + '[metrics]\naddress = "9464"\n',
            encoding="utf-8",
        )
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for(r"new config refused", timeout=10, count=3), daemon.output()
        for admin in admins:
            assert telegram.wait_for_messages(2, timeout=30, chat_id=admin), daemon.output()
            second = telegram.sent_to(admin)[1].plain_text
            assert "feeds[2].url: expected an http:// or https:// URL" in second, second
            assert "metrics.address: " in second, second
            assert "ftp://example.com/bot<redacted>/x" in second, second
        assert daemon.proc.poll() is None
        assert daemon.terminate() == 0
    finally:
        daemon.close()
    sample_alerts = [m for m in telegram.sent_to("@syria_alerts") if SAMPLE_TITLE in m.text]
    assert len(sample_alerts) == 1, "no repeat of earlier alerts"
    secret = TOKEN.split(":", 1)[1]
    assert not [m.text for m in telegram.messages if secret in m.text]
    assert secret not in daemon.output()


GOLDEN = REPO / "tests" / "data" / "e2e" / "sample-alert.html"


def test_the_exact_message_telegram_receives(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    config = _seed_config(tmp_path, feed_server, telegram)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "[telegram]", '[telegram]\ntimezone = "Asia/Beirut"'
        ),
        encoding="utf-8",
    )
    result = run_cli(["once", "-c", str(config)])
    assert result.returncode == 0, result.stderr
    (message,) = telegram.messages
    assert message.link_preview_disabled is True
    assert message.text == GOLDEN.read_text(encoding="utf-8")


def test_a_slow_feed_never_delays_the_others(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/slow.xml", SAMPLE.read_bytes())
    feed_server.add_fault("/slow.xml", "hold")
    feed_server.add("/fast.xml", (FEEDS / "news-ar" / "news-c-latest-cp1256.xml").read_bytes())
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "slow", "url": feed_server.url_for("/slow.xml")},
            {"name": "fast", "url": feed_server.url_for("/fast.xml")},
        ],
        watchlists=[{"name": "qatar", "any": ["قطر"], "channels": ["@qatar_alerts"]}],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        assert feed_server.wait_for_requests("/slow.xml", 1, timeout=20)
        assert telegram.wait_for_messages(1, timeout=30), daemon.output()
        assert feed_server.in_flight() >= 1, "the slow feed is still being fetched"
        feed_server.release("/slow.xml")
        assert daemon.terminate() == 0
    finally:
        daemon.close()
