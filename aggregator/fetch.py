"""The fetch stage: one shared HTTP client that fetches feed bodies politely and safely.

Everything about HTTP policy lives here, so the stages after it only ever see bytes, headers and
:class:`~aggregator.errors.FetchError`:

- conditional GET with the validators (ETag / Last-Modified) stored from the last fetch;
- connect and read timeouts, plus an overall deadline per fetch that also stops slow drips;
- a body cap enforced while streaming and after decompression, so neither an endless body nor
  a gzip bomb is ever held in memory past the cap;
- redirects followed by hand, so a permanent move (301/308) can be reported to the caller;
- at most ``max_in_flight`` fetches at once and ``max_per_host`` to any one host.

Every httpx exception becomes a ``FetchError`` with a short message that says what went wrong
and nothing else (no headers, no body); the caller adds the feed's name when it logs.
"""

from __future__ import annotations

import asyncio
import math
import socket
import ssl
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from types import MappingProxyType, TracebackType

import httpx

from aggregator.errors import BodyTooLargeError, FetchError
from aggregator.host_pools import HostPools, proxy_mounts
from aggregator.httpdate import seconds_until

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, "
    "application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
)
# Only the encodings decoded below (with a bound on output); never br or zstd, whose
# decoders in httpx would inflate a whole network chunk at once.
ACCEPT_ENCODING = "gzip, deflate"

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_MIB = 1024 * 1024
# How long a host's connections outlive its last request (on top of the fetch deadline).
_POOL_IDLE_S = 60.0


@dataclass(frozen=True)
class FetchLimits:
    """Timeouts, size cap and concurrency limits for all fetches."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    deadline_s: float = 60.0
    max_body_bytes: int = 10 * _MIB
    max_redirects: int = 5
    max_in_flight: int = 20
    max_per_host: int = 2

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("connect_timeout_s", "read_timeout_s", "deadline_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                problems.append(f"{name} must be a positive number of seconds, got {value!r}")
        for name, lowest in (
            ("max_body_bytes", 1),
            ("max_redirects", 0),
            ("max_in_flight", 1),
            ("max_per_host", 1),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                problems.append(f"{name} must be an integer >= {lowest}, got {value!r}")
        if problems:
            raise ValueError("invalid FetchLimits: " + "; ".join(problems))


@dataclass(frozen=True)
class Validators:
    """What a server gave us to ask "has it changed?" next time."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """The outcome of a successful fetch: a body (2xx) or "not modified" (304)."""

    status: int
    url: str  # final URL after redirects
    body: bytes | None  # decoded; None on 304
    # Response headers, lower-case names. Content-Encoding and Content-Length are dropped
    # because ``body`` is already decoded and they no longer describe it.
    headers: Mapping[str, str]
    validators: Validators  # what to send next time
    not_modified: bool
    # Where the feed now lives, when the chain of redirects began with permanent ones (301/308):
    # the URL reached by the last of those leading permanent hops.
    permanent_redirect: str | None
    elapsed_s: float  # from the first byte sent (not counting waits for a free slot)


class HTTPStatusError(FetchError):
    """Raised when the server answers with a status that is neither 2xx, 304 nor a redirect."""

    def __init__(self, status: int, *, retry_after_s: float | None = None, note: str = "") -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"HTTP {status} {_phrase(status)}".rstrip() + note, status=status)


@dataclass(frozen=True)
class _Hop:
    """A redirect answer."""

    status: int
    location: str | None


@dataclass(frozen=True)
class _Final:
    """A 2xx or 304 answer, body read."""

    status: int
    body: bytes | None
    headers: Mapping[str, str]


DEFAULT_LIMITS = FetchLimits()
NO_VALIDATORS = Validators()


# The most of an unneeded body read to keep its connection (see _drain).
_DRAIN_LIMIT = 64 * 1024
_DRAIN_S = 1.0


@dataclass
class _HostSlots:
    limit: int
    semaphores: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    def for_url(self, url: httpx.URL) -> asyncio.Semaphore:
        # Politeness is per host name, whatever the port or scheme.
        host = url.host.lower()
        semaphore = self.semaphores.get(host)
        if semaphore is None:
            semaphore = self.semaphores[host] = asyncio.Semaphore(self.limit)
        return semaphore


class Fetcher:
    """One shared HTTP client for all feeds; fetches bodies under the configured limits."""

    def __init__(
        self,
        limits: FetchLimits = DEFAULT_LIMITS,
        *,
        user_agent: str,
    ) -> None:
        if not user_agent.strip():
            raise ValueError("user_agent must name the product, e.g. 'aggregator/0.1 (+URL)'")
        self.limits = limits
        self._in_flight = asyncio.Semaphore(limits.max_in_flight)
        self._hosts = _HostSlots(limits.max_per_host)
        ssl_context = httpx.create_ssl_context(trust_env=True)  # SSL_CERT_FILE and _DIR too
        self._client = httpx.AsyncClient(
            headers={
                "User-Agent": user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            timeout=httpx.Timeout(
                connect=limits.connect_timeout_s,
                read=limits.read_timeout_s,
                write=limits.read_timeout_s,
                pool=limits.connect_timeout_s,
            ),
            follow_redirects=False,
            # Operators behind a proxy set HTTPS_PROXY / NO_PROXY as for any other tool (read
            # by proxy_mounts: with a transport of its own, httpx does not read them).
            trust_env=True,
            # At most max_in_flight requests at once (self._in_flight), each host's in a pool
            # of its own. A pool unused for longer than any request can take is closed.
            transport=HostPools(
                per_host=limits.max_per_host,
                idle_s=limits.deadline_s + _POOL_IDLE_S,
                ssl_context=ssl_context,
            ),
            mounts=proxy_mounts(
                ssl_context,
                httpx.Limits(
                    max_connections=limits.max_in_flight,
                    max_keepalive_connections=limits.max_in_flight,
                ),
            ),
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the shared client and its connections."""
        await self._client.aclose()

    async def fetch(self, url: str, validators: Validators = NO_VALIDATORS) -> FetchResult:
        """GET ``url`` (conditionally, with ``validators``) and return its body or "not modified".

        Raises ``FetchError`` (``HTTPStatusError`` for HTTP error statuses) or
        ``BodyTooLargeError``.
        """
        current = _parse_url(url)
        loop = asyncio.get_running_loop()
        permanent_redirect: str | None = None
        still_permanent = True
        seen = {str(current)}
        redirects = 0
        deadline: float | None = None
        started = 0.0
        while True:
            note = f" (after redirect to {current})" if redirects else ""
            # The host's slot first, then one of the overall ones: a feed waiting its turn at
            # a busy host must not hold an overall slot that a feed on another host could use.
            async with self._hosts.for_url(current), self._in_flight:
                # The deadline starts once the slots are ours: waiting behind other feeds is
                # not the server's fault.
                if deadline is None:
                    deadline = loop.time() + self.limits.deadline_s
                    started = time.monotonic()
                answer = await self._exchange_before(deadline, current, validators, note)
            if isinstance(answer, _Final):
                break
            target = _redirect_target(current, answer, note)
            if answer.status in _PERMANENT_REDIRECT_STATUSES and still_permanent:
                permanent_redirect = str(target)
            else:
                still_permanent = False
            if str(target) in seen:
                raise FetchError("redirect loop (a redirect led back to an earlier URL)")
            redirects += 1
            if redirects > self.limits.max_redirects:
                raise FetchError(f"too many redirects ({self.limits.max_redirects})")
            seen.add(str(target))
            current = target

        headers = answer.headers
        if answer.status == 304:
            new_validators = Validators(
                etag=headers.get("etag") or validators.etag,
                last_modified=headers.get("last-modified") or validators.last_modified,
            )
        else:
            new_validators = Validators(
                etag=headers.get("etag"), last_modified=headers.get("last-modified")
            )
        return FetchResult(
            status=answer.status,
            url=str(current),
            body=answer.body,
            headers=headers,
            validators=new_validators,
            not_modified=answer.status == 304,
            permanent_redirect=permanent_redirect,
            elapsed_s=time.monotonic() - started,
        )

    async def _exchange_before(
        self, deadline: float, url: httpx.URL, validators: Validators, note: str
    ) -> _Hop | _Final:
        """One request/response under the overall deadline, httpx errors mapped."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self._exchange(url, validators, note)
        except TimeoutError:
            raise FetchError(
                f"no response within {self.limits.deadline_s:g} s deadline{note}"
            ) from None
        except httpx.HTTPError as error:
            raise FetchError(_describe(error, self.limits) + note) from None
        except httpx.InvalidURL:
            raise FetchError(f"invalid URL{note}") from None
        except ExceptionGroup as group:
            # A port above 65535, which httpx lets through: the socket layer raises
            # OverflowError, grouped by anyio's connect. Anything else in a group is a bug.
            if group.split(OverflowError)[1] is not None:
                raise
            raise FetchError(f"cannot connect to port {url.port}: out of range{note}") from None

    async def _exchange(self, url: httpx.URL, validators: Validators, note: str) -> _Hop | _Final:
        request_headers: dict[str, str] = {}
        if validators.etag:
            request_headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            request_headers["If-Modified-Since"] = validators.last_modified
        request = self._client.build_request("GET", url, headers=request_headers)
        response = await self._client.send(request, stream=True)
        try:
            status = response.status_code
            if status in _REDIRECT_STATUSES:
                await _drain(response)
                return _Hop(status, response.headers.get("location"))
            if status == 304:
                await _drain(response)
                return _Final(status, None, _result_headers(response))
            if not 200 <= status < 300:
                await _drain(response)
                retry_after_s = None
                if status in _RETRY_AFTER_STATUSES:
                    retry_after_s = parse_retry_after(
                        response.headers.get("retry-after"),
                        datetime.now(UTC),
                        date_header=response.headers.get("date"),
                    )
                raise HTTPStatusError(status, retry_after_s=retry_after_s, note=note)
            body = await self._read_body(response, note)
            return _Final(status, body, _result_headers(response))
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response, note: str) -> bytes:
        """Read and decode the body, stopping as soon as it passes the cap."""
        cap = self.limits.max_body_bytes
        too_large = f"body over {_format_size(cap)} cap (after decompression){note}"
        decoder = _BoundedDecoder.for_encoding(response.headers.get("content-encoding", ""), note)
        declared = response.headers.get("content-length", "")
        if decoder is None and declared.isdigit() and int(declared) > cap:
            raise BodyTooLargeError(too_large)
        body = bytearray()
        async for raw in response.aiter_raw():
            if decoder is None:
                body += raw
            else:
                # Ask for one byte more than room is left: getting it proves the cap is passed
                # without inflating anything beyond it.
                decoder.feed(raw, body, cap + 1 - len(body))
            if len(body) > cap:
                raise BodyTooLargeError(too_large)
        if decoder is not None:
            decoder.end()
        return bytes(body)


async def _drain(response: httpx.Response) -> None:
    """Read a body we do not need (a 304's empty one, a redirect's or an error page) if it is
    small, so that the connection goes back to the pool: closed unread, httpcore drops it, and
    each poll of an unchanged feed paid for a new TCP connection (measured: 225 connects for
    300 polls of a 304-answering farm, about a third of their CPU)."""
    # Best effort: the answer (its status, its Retry-After) is already known, and a body that
    # breaks off or crawls must not turn it into a network error.
    read = 0
    try:
        async with asyncio.timeout(_DRAIN_S):
            async for raw in response.aiter_raw():
                read += len(raw)
                if read > _DRAIN_LIMIT:
                    return  # not worth reading on: aclose drops the connection instead
    except (TimeoutError, httpx.HTTPError):
        return


class _BoundedDecoder:
    """Inflates gzip or deflate without ever producing more output than asked for."""

    def __init__(self, name: str, wbits: int, note: str) -> None:
        self._name = name
        self._wbits = wbits
        self._note = note
        self._inflater = zlib.decompressobj(wbits)
        self._started = False
        self._finished = False
        self._between = False  # a gzip member ended; another may start in what comes next

    @classmethod
    def for_encoding(cls, header: str, note: str) -> _BoundedDecoder | None:
        """A decoder for a Content-Encoding header value; None when the body is not encoded."""
        codings = [c.strip().lower() for c in header.split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if not codings:
            return None
        if len(codings) == 1 and codings[0] in ("gzip", "x-gzip"):
            return cls("gzip", 16 + zlib.MAX_WBITS, note)
        if len(codings) == 1 and codings[0] == "deflate":
            return cls("deflate", zlib.MAX_WBITS, note)
        # Only the first 40 characters: the value came from the server.
        raise FetchError(f"unsupported Content-Encoding {header.strip()[:40]!r}{note}")

    def feed(self, data: bytes, out: bytearray, room: int) -> None:
        """Inflate ``data`` into ``out``, stopping once ``room`` bytes have been added."""
        added = 0
        while data and added < room and not self._finished:
            if self._between:
                if not data.startswith(b"\x1f\x8b"[: len(data)]):
                    self._finished = True  # no other member: anything after is padding
                    break
                self._between = False
            try:
                piece = self._inflater.decompress(data, room - added)
            except zlib.error:
                if self._name == "deflate" and not self._started:
                    # Many servers send raw deflate without the zlib wrapper the RFC asks for.
                    self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._started = True
                    continue
                raise FetchError(f"could not decode the {self._name} body{self._note}") from None
            self._started = True
            out += piece
            added += len(piece)
            data = self._inflater.unconsumed_tail
            if self._inflater.eof:
                rest = self._inflater.unused_data
                if self._name == "gzip":
                    # A gzip body may hold several members back to back, the next one in
                    # this piece of the body or in the next.
                    self._inflater = zlib.decompressobj(self._wbits)
                    self._between = True
                    data = rest
                else:
                    self._finished = True  # anything after the stream is padding

    def end(self) -> None:
        """The body is all there: raise FetchError if its stream stopped in the middle (a
        cut connection), rather than take the part read for the whole feed."""
        if self._started and not (self._finished or self._between or self._inflater.eof):
            raise FetchError(f"the {self._name} body is cut short{self._note}")


def parse_retry_after(
    value: str | None, now: datetime, *, date_header: str | None = None
) -> float | None:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP date); None if unusable.

    A date is measured against the response's Date header when there is one (ours may be off
    by more than the wait), else against ``now``."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() takes and int() refuses
        return float(int(value))
    wait = seconds_until(value, date_header, now.timestamp())
    return None if wait is None else max(0.0, wait)


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise FetchError("invalid URL") from None
    if not parsed.scheme:
        raise FetchError("invalid URL: no scheme (expected http:// or https://)")
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme {parsed.scheme!r} (expected http or https)")
    if not parsed.host:
        raise FetchError("invalid URL: no host")
    return parsed


def _redirect_target(current: httpx.URL, hop: _Hop, note: str) -> httpx.URL:
    if not hop.location:
        raise FetchError(f"HTTP {hop.status} redirect without a Location header{note}")
    try:
        target = current.join(hop.location)
    except httpx.InvalidURL:
        raise FetchError(f"redirect to an invalid URL{note}") from None
    if target.scheme not in ("http", "https") or not target.host:
        raise FetchError(f"redirect to a non-HTTP URL{note}")
    return target.copy_with(fragment=None)


def _result_headers(response: httpx.Response) -> Mapping[str, str]:
    """Lower-case response headers for the parser, minus those the decoding made untrue."""
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("content-encoding", "content-length", "transfer-encoding")
    }
    return MappingProxyType(headers)


def _describe(error: httpx.HTTPError, limits: FetchLimits) -> str:
    """A short, fixed message for an httpx error; never the library's own text."""
    if isinstance(error, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(error, httpx.ReadTimeout):
        return f"timed out waiting for data ({limits.read_timeout_s:g} s without a byte)"
    if isinstance(error, httpx.WriteTimeout):
        return "timed out sending the request"
    if isinstance(error, httpx.PoolTimeout):
        return "timed out waiting for a free connection"
    if isinstance(error, httpx.ConnectError):
        cause = _root_cause(error)
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "could not resolve host"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "TLS certificate verification failed"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed"
        return "could not connect"
    if isinstance(error, httpx.RemoteProtocolError):
        if "without sending" in str(error):
            return "server closed the connection without a response"
        return "server broke the HTTP protocol"
    if isinstance(error, httpx.ReadError):
        return "connection lost while reading the response"
    if isinstance(error, httpx.WriteError):
        return "connection lost while sending the request"
    if isinstance(error, httpx.UnsupportedProtocol):
        return "unsupported URL scheme"
    if isinstance(error, httpx.DecodingError):
        return "could not decode the body"
    if isinstance(error, httpx.ProtocolError):
        return "HTTP protocol error"
    return f"request failed ({type(error).__name__})"


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception httpx and httpcore wrapped (bounded, in case of cycles)."""
    current = error
    for _ in range(10):
        inner = current.__cause__ or current.__context__
        if inner is None:
            break
        current = inner
    return current


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _format_size(size: int) -> str:
    """The cap as the config most likely wrote it: "10MB" is 10,000,000 bytes, not 10 MiB."""
    if size % _MIB == 0:
        return f"{size // _MIB} MiB"
    if size % 1024 == 0:
        return f"{size // 1024} KiB"
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000} MB"
    return f"{size} bytes"
