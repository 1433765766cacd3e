"""A connection pool per host, for the fetcher's one httpx client.

httpcore's pool looks at each of its connections twice per request (whether it is closed,
expired, idle: a getpeername and a select call each), and at its idle ones in a loop that is
quadratic in their number. With one pool of 20 connections for every feed that was 0.2 ms of the
~0.9 ms of CPU that an unchanged feed costs (bench/bench_polling.py, 1,000 feeds on 8 hosts).
A pool per host (scheme, host and port) holds at most the per-host limit of connections, so that
work stays small however many hosts the feeds are on.

Pools are kept while they are in use: one unused for ``idle_s`` is closed, so that a daemon
polling hundreds of hosts does not keep their sockets open between polls.

httpx reads the proxy variables of the environment only for a client without a transport of
its own, so ``proxy_mounts`` reads them for this one, as httpx would.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
import urllib.request
from collections.abc import Callable

import httpx

from aggregator.errors import ConfigError

_Origin = tuple[str, str, int | None]


class HostPools(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request through its host's own pool."""

    def __init__(
        self,
        *,
        per_host: int,
        idle_s: float,
        ssl_context: ssl.SSLContext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = httpx.Limits(max_connections=per_host, max_keepalive_connections=per_host)
        self._idle_s = idle_s
        self._ssl_context = ssl_context  # one for all: building one reads the CA bundle (25 ms)
        self._clock = clock
        self._pools: dict[_Origin, tuple[httpx.AsyncHTTPTransport, float]] = {}
        self._next_sweep = clock() + idle_s

    @property
    def origins(self) -> list[_Origin]:
        """The hosts that have a pool now (for tests and diagnostics)."""
        return list(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        now = self._clock()
        if now >= self._next_sweep:
            await self._sweep(now)
        url = request.url
        origin = (url.scheme, url.host, url.port)
        entry = self._pools.get(origin)
        pool = entry[0] if entry else None
        if pool is None:
            pool = httpx.AsyncHTTPTransport(verify=self._ssl_context, limits=self._limits)
        self._pools[origin] = (pool, now)
        return await pool.handle_async_request(request)

    async def _sweep(self, now: float) -> None:
        """Close the pools not used for idle_s. ``idle_s`` must exceed the longest a request
        can take (the fetch deadline): a pool last used that long ago has nothing running."""
        self._next_sweep = now + self._idle_s
        # All out of the map before the first await: a request that starts meanwhile must open
        # a pool of its own, not one about to be closed under it.
        stale = [o for o, (_, used) in self._pools.items() if now - used >= self._idle_s]
        closing = [self._pools.pop(origin)[0] for origin in stale]
        for pool in closing:
            await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool, _ in pools.values():
            await pool.aclose()


def proxy_mounts(
    ssl_context: ssl.SSLContext, limits: httpx.Limits
) -> dict[str, httpx.AsyncBaseTransport | None]:
    """httpx mounts for the proxies the environment names (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and
    NO_PROXY, in either case), by httpx's own rules; None mounts are hosts to reach directly.
    Raises ConfigError naming the variable when a proxy cannot be used."""
    proxies = urllib.request.getproxies()
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    for scheme in ("http", "https", "all"):
        url = proxies.get(scheme)
        if url:
            url = url if "://" in url else f"http://{url}"
            try:
                mounts[f"{scheme}://"] = httpx.AsyncHTTPTransport(
                    proxy=url, verify=ssl_context, limits=limits
                )
            except (ValueError, ImportError) as exc:  # an unknown scheme; SOCKS without socksio
                variable = f"{scheme.upper()}_PROXY"
                reason = "SOCKS proxies are not supported" if "socks" in url.lower() else exc
                problem = (f"environment {variable}", f"cannot use it: {reason}")
                raise ConfigError([problem]) from None
    for host in (part.strip() for part in proxies.get("no", "").split(",")):
        if host == "*":
            return {}
        if not host:
            continue
        if "://" in host:
            mounts[host] = None
        elif _is_ip(host) or host.lower() == "localhost":
            mounts[f"all://[{host}]" if ":" in host else f"all://{host}"] = None
        else:
            mounts[f"all://*{host}"] = None  # the domain and every name under it
    return mounts


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
