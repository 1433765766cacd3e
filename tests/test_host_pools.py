"""A connection pool per host (aggregator/host_pools.py), against two real feed servers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

from aggregator.fetch import Fetcher
from aggregator.host_pools import HostPools
from tests.conftest import write_config
from tests.daemon_process import clean_env, run_cli
from tests.servers.feed_server import FeedServer

RSS = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers() -> Iterator[tuple[FeedServer, FeedServer]]:
    with FeedServer() as first, FeedServer(host="127.0.0.2") as second:
        first.add("/a.xml", RSS)
        second.add("/b.xml", RSS)
        yield first, second


async def test_each_host_has_a_pool_of_its_own_and_idle_ones_close(
    servers: tuple[FeedServer, FeedServer],
) -> None:
    first, second = servers
    clock = Clock()
    pools = HostPools(per_host=2, idle_s=120, ssl_context=ssl.create_default_context(), clock=clock)
    async with httpx.AsyncClient(transport=pools, trust_env=False) as client:
        for _ in range(3):
            for url in (first.url_for("/a.xml"), second.url_for("/b.xml")):
                assert (await client.get(url)).content == RSS
        assert sorted(host for _, host, _ in pools.origins) == ["127.0.0.1", "127.0.0.2"]
        # Connections are kept and reused within each pool.
        assert first.connections_opened() == second.connections_opened() == 1
        # The second host goes quiet; past idle_s its pool (and connection) is closed at the
        # next request anywhere, and a later request to it opens a new one.
        clock.now += 60
        await client.get(first.url_for("/a.xml"))
        clock.now += 90
        await client.get(first.url_for("/a.xml"))
        assert [host for _, host, _ in pools.origins] == ["127.0.0.1"]
        assert (await client.get(second.url_for("/b.xml"))).content == RSS
        assert second.connections_opened() == 2
        assert first.connections_opened() == 1


async def test_a_host_pool_holds_at_most_the_per_host_limit(
    servers: tuple[FeedServer, FeedServer],
) -> None:
    first, _ = servers
    first.add_fault("/slow.xml", "hold")
    first.add("/slow.xml", RSS)
    pools = HostPools(per_host=2, idle_s=120, ssl_context=ssl.create_default_context())
    async with httpx.AsyncClient(transport=pools, trust_env=False) as client:
        gets = [asyncio.create_task(client.get(first.url_for("/slow.xml"))) for _ in range(3)]
        assert await asyncio.to_thread(first.wait_for_requests, "/slow.xml", 2, 5)
        assert first.in_flight() == 2  # the third waits for a connection of the pool
        first.release("/slow.xml")
        assert [r.content for r in await asyncio.gather(*gets)] == [RSS] * 3
        assert first.max_in_flight() == 2


async def test_a_sweep_never_closes_a_pool_that_a_request_just_started_on() -> None:
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(FeedServer(host=f"127.0.0.{n}")) for n in range(2, 12)]
        for server in servers:
            server.add("/f.xml", RSS)
        late, sweeper = servers[-2], servers[-1]
        clock = Clock()
        pools = HostPools(
            per_host=2, idle_s=120, ssl_context=ssl.create_default_context(), clock=clock
        )
        async with httpx.AsyncClient(transport=pools, trust_env=False) as client:
            for server in servers[:-1]:
                await client.get(server.url_for("/f.xml"))
            clock.now += 200
            # The first request sweeps nine idle pools (an await each); the second starts on
            # the last of them meanwhile.
            sweeping = asyncio.create_task(client.get(sweeper.url_for("/f.xml")))
            starting = asyncio.create_task(client.get(late.url_for("/f.xml")))
            answers = await asyncio.gather(sweeping, starting)
            assert [a.content for a in answers] == [RSS, RSS]
            assert sorted(host for _, host, _ in pools.origins) == ["127.0.0.10", "127.0.0.11"]


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy that answers every GET itself and notes the URL asked for."""

    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(RSS)))
        self.end_headers()
        self.wfile.write(RSS)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_the_fetcher_goes_through_the_proxy_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, servers: tuple[FeedServer, FeedServer]
) -> None:
    _, direct = servers
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.2")
        async with Fetcher(user_agent="aggregator-test/0.1") as fetcher:
            assert (await fetcher.fetch("http://feeds.invalid/a.xml")).body == RSS
            assert (await fetcher.fetch(direct.url_for("/b.xml"))).body == RSS
        assert _Proxy.asked == ["http://feeds.invalid/a.xml"]  # 127.0.0.2 was reached directly
        assert direct.request_count("/b.xml") == 1
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("HTTP_PROXY", "ftp://proxy.example:21", "Unknown scheme"),
        ("HTTPS_PROXY", "socks5://127.0.0.1:1080", "SOCKS proxies are not supported"),
    ],
)
def test_a_proxy_variable_that_cannot_be_used_is_a_clear_error(
    tmp_path: Path, variable: str, value: str, why: str
) -> None:
    config = write_config(tmp_path, feeds=[], watchlists=[])
    env = clean_env(**{variable: value})
    env.pop("NO_PROXY", None)
    result = run_cli(["once", "-c", str(config)], env=env)
    assert result.returncode == 2, result.stderr
    assert f"environment {variable}: cannot use it: {why}" in result.stderr
    assert "Traceback" not in result.stderr
