"""Prometheus metrics: the real daemon scraped over HTTP during a run, the endpoint, the config."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator.config import validate_config
from aggregator.errors import ConfigError
from aggregator.metrics import Metrics, serve
from tests.conftest import TOKEN, write_config
from tests.daemon_process import DaemonProcess
from tests.servers.fake_telegram import FakeTelegram
from tests.servers.feed_server import FeedServer

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "own" / "syria-sample.xml"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(url: str) -> Samples:
    """Every sample of a /metrics page, by (name, sorted labels)."""
    with httpx.Client(trust_env=False, timeout=5) as client:
        response = client.get(url)
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _scrape_until(url: str, ready: Callable[[Samples], bool], timeout: float) -> Samples:
    """Scrape until ``ready`` holds (the daemon may still be starting); fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Samples | str = "nothing scraped"
    while time.monotonic() < deadline:
        try:
            samples = _scrape(url)
        except httpx.HTTPError as exc:
            last = repr(exc)
        else:
            if ready(samples):
                return samples
            last = samples
        time.sleep(0.2)  # polling interval of the deadline loop, not a synchronization
    raise AssertionError(f"metrics never became ready; last scrape: {last}")


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_scraped_during_a_run(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add("/sample.xml", SAMPLE.read_bytes())
    feed_server.add_fault("/broken.xml", "status", code=500)
    config = write_config(
        tmp_path,
        feeds=[
            {"name": "sample", "url": feed_server.url_for("/sample.xml")},
            {"name": "broken", "url": feed_server.url_for("/broken.xml")},
        ],
        watchlists=[
            {"name": "syria", "any": ["#سوريا"], "channels": ["@syria_alerts"]},
            {"name": "doomed", "any": ["#سوريا"], "channels": ["@doomed_alerts"]},
        ],
        telegram={"api_url": telegram.api_url},
        token=TOKEN,
    )
    address = f"127.0.0.1:{_free_port()}"
    config.write_text(
        config.read_text(encoding="utf-8") + f'[metrics]\naddress = "{address}"\n',
        encoding="utf-8",
    )
    url = f"http://{address}/metrics"
    # One 429 for the first chat; the second chat refuses its alert until it is given up on.
    telegram.retry_after_next("@syria_alerts", 1)
    telegram.fail_next(50, status=400, body="json", chat_id="@doomed_alerts")

    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        samples = _scrape_until(
            url,
            lambda s: (
                (_value(s, "aggregator_alerts_sent_total") or 0) >= 1
                and (_value(s, "aggregator_alerts_failed_total") or 0) >= 1
                and (_value(s, "aggregator_feed_poll_failures_total", feed="broken") or 0) >= 1
            ),
            timeout=60,
        )
        sent = [m for m in telegram.messages if m.method == "sendMessage"]
        assert [m.chat_id for m in sent] == ["@syria_alerts"], daemon.output()

        assert _value(samples, "aggregator_feed_polls_total", feed="sample") == 1
        assert _value(samples, "aggregator_feed_poll_failures_total", feed="sample") == 0
        broken_polls = _value(samples, "aggregator_feed_polls_total", feed="broken")
        assert broken_polls is not None and broken_polls >= 1
        assert _value(samples, "aggregator_feed_poll_failures_total", feed="broken") == broken_polls
        assert _value(samples, "aggregator_items_seen_total", feed="sample") == 2
        assert _value(samples, "aggregator_items_seen_total", feed="broken") is None
        assert _value(samples, "aggregator_watchlist_matches_total", watchlist="syria") == 1
        assert _value(samples, "aggregator_watchlist_matches_total", watchlist="doomed") == 1

        assert _value(samples, "aggregator_alerts_queued_total") == 2
        assert _value(samples, "aggregator_alerts_sent_total") == len(sent) == 1
        assert _value(samples, "aggregator_alerts_failed_total") == 1
        assert _value(samples, "aggregator_alerts_pending") == 0
        assert _value(samples, "aggregator_telegram_retry_after_total") == 1
        assert telegram.stats.retry_after_sent == 1

        # The 429 asked for a 1 s wait, so the one alert took at least that long.
        assert _value(samples, "aggregator_delivery_latency_seconds_count") == 1
        latency = _value(samples, "aggregator_delivery_latency_seconds_sum")
        assert latency is not None and 1.0 <= latency < 60, latency
        assert _value(samples, "aggregator_delivery_latency_seconds_bucket", le="0.5") == 0
        assert _value(samples, "aggregator_delivery_latency_seconds_bucket", le="+Inf") == 1

        age = _value(samples, "aggregator_feed_last_success_age_seconds", feed="sample")
        assert age is not None and 0 <= age < 60, age
        assert _value(samples, "aggregator_feed_last_success_age_seconds", feed="broken") is None
        # Computed at scrape time: the age grows between scrapes with no poll in between.
        deadline = time.monotonic() + 10
        later = age
        while later is not None and later <= age and time.monotonic() < deadline:
            time.sleep(0.2)  # polling interval of the deadline loop
            later = _value(_scrape(url), "aggregator_feed_last_success_age_seconds", feed="sample")
        assert later is not None and later > age

        # A reload cannot move the endpoint: it says so and keeps serving where it is.
        config.write_text(
            config.read_text(encoding="utf-8").replace(address, f"127.0.0.1:{_free_port()}"),
            encoding="utf-8",
        )
        daemon.proc.send_signal(signal.SIGHUP)
        assert daemon.wait_for(r"metrics\.address changed; restart", timeout=10), daemon.output()
        assert daemon.wait_for(r"config reloaded", timeout=10), daemon.output()
        assert _value(_scrape(url), "aggregator_alerts_sent_total") == 1

        started = time.monotonic()
        assert daemon.terminate() == 0, daemon.output()
        assert time.monotonic() - started < 5
    finally:
        daemon.close()
    with pytest.raises(httpx.ConnectError):
        _scrape(url)


async def test_the_endpoint_answers_only_get_metrics() -> None:
    metrics = Metrics()
    metrics.poll_done("a", failed=False)
    address = f"127.0.0.1:{_free_port()}"
    async with serve(metrics, address), httpx.AsyncClient(trust_env=False, timeout=5) as client:
        page = await client.get(f"http://{address}/metrics")
        assert page.status_code == 200
        assert 'aggregator_feed_polls_total{feed="a"} 1.0' in page.text
        assert 'aggregator_feed_poll_failures_total{feed="a"} 0.0' in page.text
        openmetrics = await client.get(
            f"http://{address}/metrics", headers={"Accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        assert (await client.get(f"http://{address}/other")).status_code == 404
        assert (await client.post(f"http://{address}/metrics")).status_code == 405
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            await client.get(f"http://{address}/metrics")


def test_two_daemons_in_one_process_have_their_own_registries() -> None:
    first, second = Metrics(), Metrics()
    first.alert_sent(time.time() - 3)
    assert first.registry.get_sample_value("aggregator_alerts_sent_total") == 1
    assert second.registry.get_sample_value("aggregator_alerts_sent_total") == 0


@pytest.mark.parametrize(
    "address", ["", "127.0.0.1:9464", "0.0.0.0:9464", "localhost:9464", "[::1]:9464"]
)
def test_metrics_address_accepted(address: str) -> None:
    config, _ = validate_config({"metrics": {"address": address}})
    assert config.metrics.address == address


@pytest.mark.parametrize(
    "address",
    ["9464", ":9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9464",
     "http://127.0.0.1:9464", "127.0.0.1:port"],
)  # fmt: skip
def test_a_bad_metrics_address_is_refused_with_its_key_path(address: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"metrics": {"address": address}})
    ((key, message),) = info.value.problems
    assert key == "metrics.address"
    assert 'expected "HOST:PORT" such as "127.0.0.1:9464"' in message
    assert repr(address) in message


def test_an_unknown_metrics_key_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"metrics": {"port": 9464}})
    assert [key for key, _ in info.value.problems] == ["metrics.port"]
