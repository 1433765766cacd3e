"""A real HTTP/1.1 feed server on a loopback address, for tests and benchmarks.

It serves bodies registered with :meth:`FeedServer.add` (with ETag / Last-Modified and answers
conditional requests with 304) and misbehaves on demand with :meth:`FeedServer.add_fault`:
error statuses, redirects and redirect loops, delays, byte-by-byte drips, endless bodies, gzip
bombs, dropped connections. It records every request and how many were in flight at once, so a
test can check the client's limits from the server's side.

It listens on a real socket (stdlib ``ThreadingHTTPServer`` in daemon threads), so a daemon
running as a subprocess can use it too. Several servers on 127.0.0.1, 127.0.0.2, ... stand in
for several hosts.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import gzip as gzip_module
import hashlib
import math
import socket
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

RSS_CONTENT_TYPE = "application/rss+xml; charset=utf-8"

# Each fault kind with the parameters it accepts; the required ones are listed separately.
FAULT_PARAMS: Mapping[str, frozenset[str]] = {
    "status": frozenset({"code", "headers", "body"}),
    "redirect": frozenset({"to", "code"}),
    "redirect_loop": frozenset({"code"}),
    "delay": frozenset({"seconds"}),
    "hold": frozenset(),
    "drip": frozenset({"interval", "content_type"}),
    "huge": frozenset({"size", "declare_length"}),
    "gzip_bomb": frozenset({"size"}),
    "close": frozenset(),
    "ignore_validators": frozenset(),
}
_REQUIRED_PARAMS: Mapping[str, frozenset[str]] = {
    "status": frozenset({"code"}),
    "redirect": frozenset({"to"}),
    "delay": frozenset({"seconds"}),
}
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})

# What the endless bodies ("huge", "drip", "gzip_bomb") start with, so that they look like a
# feed to anything that sniffs the first bytes; the rest is whitespace, which is valid XML.
_XML_PREFIX = b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>\n'
_CHUNK = 64 * 1024
_JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str  # without the query string
    query: str
    headers: Mapping[str, str]  # lower-case names
    time: datetime  # when it arrived, UTC
    monotonic: float  # time.monotonic() when it arrived, for measuring intervals


@dataclass(frozen=True)
class _Content:
    body: bytes
    gzipped_body: bytes | None
    content_type: str
    status: int
    headers: Mapping[str, str]
    etag: str | None
    last_modified: datetime | None


@dataclass(frozen=True)
class _Fault:
    kind: str
    params: Mapping[str, object]


@dataclass
class _Interval:
    """When a request was in flight, in the server's own event order (not wall time)."""

    path: str
    start_seq: int
    end_seq: float = math.inf


@dataclass
class _State:
    """Everything the handler threads share; guarded by ``cond``."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    contents: dict[str, _Content] = field(default_factory=dict)
    faults: dict[str, _Fault] = field(default_factory=dict)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    intervals: list[_Interval] = field(default_factory=list)
    seq: int = 0
    last_modified_clock: datetime | None = None
    connections: set[socket.socket] = field(default_factory=set)
    connections_opened: int = 0
    threads: set[threading.Thread] = field(default_factory=set)


class FeedServer:
    """A real HTTP/1.1 server on a loopback address serving feed bodies and faults on demand."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._state = _State()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FeedServer:
        """Bind and start serving in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError("FeedServer already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.feed = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"feed-server-{self.host}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and wake any delayed or held request."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._state.cond:
            for gate in self._state.gates.values():
                gate.set()
            connections = list(self._state.connections)
            threads = list(self._state.threads)
        server.shutdown()
        server.server_close()
        # Keep-alive connections park their handler thread in a blocking read; shutting the
        # socket down wakes it so the thread can end before the test moves on.
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(_JOIN_TIMEOUT_S)
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            self._thread = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("FeedServer is not running; call start() first")
        return f"http://{self.host}:{self.port}"

    def url_for(self, path: str) -> str:
        """The absolute URL of ``path`` (which must start with ``/``) on this server."""
        _check_path(path)
        return self.url + path

    # -- content and faults --------------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = RSS_CONTENT_TYPE,
        status: int = 200,
        headers: dict[str, str] | None = None,
        etag: bool = True,
        last_modified: bool | datetime = True,
        gzip: bool = False,
    ) -> None:
        """Serve ``body`` at ``path``, replacing what was there (a new ETag and a later date).

        ``last_modified`` may be a timezone-aware datetime to serve that exact date. With
        ``gzip`` the body is sent gzip-compressed to clients that accept it.
        """
        _check_path(path)
        if not isinstance(body, bytes):
            raise TypeError(f"body for {path} must be bytes, not {type(body).__name__}")
        if isinstance(last_modified, datetime) and last_modified.tzinfo is None:
            raise ValueError("last_modified must be a timezone-aware datetime")
        with self._state.cond:
            modified_at: datetime | None = None
            if isinstance(last_modified, datetime):
                modified_at = last_modified.astimezone(UTC).replace(microsecond=0)
            elif last_modified:
                # HTTP dates have one-second precision: keep them strictly increasing so a
                # replaced body is never mistaken for the old one by If-Modified-Since.
                modified_at = datetime.now(UTC).replace(microsecond=0)
                previous = self._state.last_modified_clock
                if previous is not None and modified_at <= previous:
                    modified_at = previous + timedelta(seconds=1)
                self._state.last_modified_clock = modified_at
            self._state.contents[path] = _Content(
                body=body,
                gzipped_body=gzip_module.compress(body, mtime=0) if gzip else None,
                content_type=content_type,
                status=status,
                headers=dict(headers or {}),
                etag=f'"{hashlib.sha256(body).hexdigest()[:16]}"' if etag else None,
                last_modified=modified_at,
            )

    def remove(self, path: str) -> None:
        """Stop serving ``path`` (it answers 404 again)."""
        with self._state.cond:
            self._state.contents.pop(path, None)

    def add_fault(self, path: str, kind: str, **params: object) -> None:
        """Make ``path`` misbehave; see ``FAULT_PARAMS`` for kinds and their parameters.

        - ``status``: answer ``code`` with optional ``headers`` (e.g. Retry-After) and ``body``.
        - ``redirect``: answer ``code`` (default 302) with ``Location: to``.
        - ``redirect_loop``: redirect to itself, forever.
        - ``delay``: wait ``seconds`` before the headers, then serve the content as usual.
        - ``hold``: wait until :meth:`release` (or stop), then serve the content as usual.
        - ``drip``: send headers, then one byte every ``interval`` seconds until disconnected.
        - ``huge``: stream ``size`` bytes (default 1 GiB) of XML-looking padding, chunked
          (or with Content-Length if ``declare_length``), never holding it in memory.
        - ``gzip_bomb``: a small gzip body inflating to ``size`` bytes (default 1 GiB).
        - ``close``: read the request and close the connection without answering.
        - ``ignore_validators``: always 200 with the content, ignoring conditional headers.
        """
        _check_path(path)
        allowed = FAULT_PARAMS.get(kind)
        if allowed is None:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_PARAMS)}")
        unknown = set(params) - allowed
        if unknown:
            raise ValueError(
                f"fault {kind!r} does not take {sorted(unknown)}; it takes {sorted(allowed)}"
            )
        missing = _REQUIRED_PARAMS.get(kind, frozenset()) - set(params)
        if missing:
            raise ValueError(f"fault {kind!r} needs {sorted(missing)}")
        if kind in ("redirect", "redirect_loop"):
            code = params.get("code", 302)
            if code not in _REDIRECT_CODES:
                raise ValueError(f"redirect code must be one of {sorted(_REDIRECT_CODES)}")
        if kind == "gzip_bomb":
            # Build (and cache) the bomb now so the first request is not slowed by it.
            _gzip_bomb(_int_param(params, "size", 1 << 30))
        with self._state.cond:
            self._state.faults[path] = _Fault(kind, dict(params))
            if kind == "hold":
                self._state.gates[path] = threading.Event()

    def clear_fault(self, path: str) -> None:
        """Remove the fault on ``path`` (held requests are released)."""
        with self._state.cond:
            self._state.faults.pop(path, None)
            gate = self._state.gates.pop(path, None)
        if gate is not None:
            gate.set()

    def release(self, path: str) -> None:
        """Let requests held by a ``hold`` fault on ``path`` (and later ones) through."""
        with self._state.cond:
            gate = self._state.gates.get(path)
        if gate is None:
            raise ValueError(f"no hold fault on {path}")
        gate.set()

    # -- what happened -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, in arrival order."""
        with self._state.cond:
            return list(self._state.requests)

    def request_count(self, path: str) -> int:
        """How many requests arrived for ``path`` (query string ignored)."""
        with self._state.cond:
            return sum(1 for r in self._state.requests if r.path == path)

    def max_in_flight(self, prefix: str | None = None) -> int:
        """The most requests in flight at once, over all paths or those starting with ``prefix``."""
        with self._state.cond:
            intervals = [
                iv for iv in self._state.intervals if prefix is None or iv.path.startswith(prefix)
            ]
        # Starts and ends carry unique sequence numbers from one counter, so sorting them
        # replays the exact order in which the server saw them.
        events = sorted(
            [(float(iv.start_seq), 1) for iv in intervals] + [(iv.end_seq, -1) for iv in intervals]
        )
        current = highest = 0
        for _, delta in events:
            current += delta
            highest = max(highest, current)
        return highest

    def connections_opened(self) -> int:
        """How many TCP connections clients have opened so far."""
        with self._state.cond:
            return self._state.connections_opened

    def in_flight(self) -> int:
        """How many requests are being answered right now."""
        with self._state.cond:
            return sum(1 for iv in self._state.intervals if iv.end_seq == math.inf)

    def wait_for_requests(self, path: str, n: int, timeout: float) -> bool:
        """Block until ``path`` has received at least ``n`` requests; False on timeout."""
        with self._state.cond:
            return self._state.cond.wait_for(
                lambda: sum(1 for r in self._state.requests if r.path == path) >= n, timeout
            )

    # -- request handling (runs in handler threads) ---------------------------------------------

    def _track(self, conn: socket.socket, *, opened: bool) -> None:
        with self._state.cond:
            if opened:
                self._state.connections_opened += 1
                self._state.connections.add(conn)
                self._state.threads.add(threading.current_thread())
            else:
                self._state.connections.discard(conn)
                self._state.threads.discard(threading.current_thread())

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        path = parts.path or "/"
        with self._state.cond:
            self._state.seq += 1
            interval = _Interval(path=path, start_seq=self._state.seq)
            self._state.intervals.append(interval)
            self._state.requests.append(
                RecordedRequest(
                    method=handler.command,
                    path=path,
                    query=parts.query,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    time=datetime.now(UTC),
                    monotonic=time.monotonic(),
                )
            )
            fault = self._state.faults.get(path)
            gate = self._state.gates.get(path)
            self._state.cond.notify_all()
        try:
            self._answer(handler, path, fault, gate)
        finally:
            with self._state.cond:
                self._state.seq += 1
                interval.end_seq = self._state.seq
                self._state.cond.notify_all()

    def _answer(
        self, handler: _Handler, path: str, fault: _Fault | None, gate: threading.Event | None
    ) -> None:
        if fault is None:
            self._serve_content(handler, path, conditional=True)
            return
        params = fault.params
        kind = fault.kind
        if kind == "status":
            headers = cast(Mapping[str, str], params.get("headers", {}))
            body = cast(bytes, params.get("body", b""))
            _send(handler, _int_param(params, "code", 500), headers, body)
        elif kind == "redirect":
            location = str(params["to"])
            _send(handler, _int_param(params, "code", 302), {"Location": location}, b"")
        elif kind == "redirect_loop":
            _send(handler, _int_param(params, "code", 302), {"Location": handler.path}, b"")
        elif kind == "delay":
            if self._stopping.wait(_float_param(params, "seconds", 0.0)):
                handler.close_connection = True
                return
            self._serve_content(handler, path, conditional=True)
        elif kind == "hold":
            assert gate is not None
            gate.wait()
            if self._stopping.is_set():
                handler.close_connection = True
                return
            self._serve_content(handler, path, conditional=True)
        elif kind == "drip":
            self._drip(handler, params)
        elif kind == "huge":
            self._huge(handler, params)
        elif kind == "gzip_bomb":
            bomb = _gzip_bomb(_int_param(params, "size", 1 << 30))
            headers = {"Content-Type": RSS_CONTENT_TYPE, "Content-Encoding": "gzip"}
            _send(handler, 200, headers, bomb)
        elif kind == "close":
            handler.close_connection = True
        elif kind == "ignore_validators":
            self._serve_content(handler, path, conditional=False)
        else:  # pragma: no cover - add_fault validates kinds
            raise AssertionError(kind)

    def _serve_content(self, handler: _Handler, path: str, *, conditional: bool) -> None:
        with self._state.cond:
            content = self._state.contents.get(path)
        if content is None:
            _send(handler, 404, {"Content-Type": "text/plain"}, b"not found\n")
            return
        validators: dict[str, str] = {}
        if content.etag is not None:
            validators["ETag"] = content.etag
        if content.last_modified is not None:
            validators["Last-Modified"] = email.utils.format_datetime(
                content.last_modified, usegmt=True
            )
        if conditional and content.status == 200 and _not_modified(handler, content):
            _send(handler, 304, {**validators, **content.headers}, None)
            return
        headers = {"Content-Type": content.content_type, **validators, **content.headers}
        body = content.body
        accepts_gzip = "gzip" in handler.headers.get("Accept-Encoding", "")
        if content.gzipped_body is not None:
            headers["Vary"] = "Accept-Encoding"
            if accepts_gzip:
                headers["Content-Encoding"] = "gzip"
                body = content.gzipped_body
        _send(handler, content.status, headers, body)

    def _drip(self, handler: _Handler, params: Mapping[str, object]) -> None:
        interval = _float_param(params, "interval", 1.0)
        content_type = str(params.get("content_type", RSS_CONTENT_TYPE))
        # No length and no chunking: the body ends when the connection does, which is never.
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Connection", "close")
        handler.end_headers()
        position = 0
        while not self._stopping.is_set():
            byte = _XML_PREFIX[position : position + 1] or b" "
            position += 1
            try:
                handler.wfile.write(byte)
                handler.wfile.flush()
            except OSError:
                return  # the client gave up, which is the point
            self._stopping.wait(interval)

    def _huge(self, handler: _Handler, params: Mapping[str, object]) -> None:
        size = _int_param(params, "size", 1 << 30)
        declare_length = bool(params.get("declare_length", False))
        handler.send_response(200)
        handler.send_header("Content-Type", RSS_CONTENT_TYPE)
        if declare_length:
            handler.send_header("Content-Length", str(size))
        else:
            handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        padding = b" " * _CHUNK
        sent = 0
        try:
            while sent < size and not self._stopping.is_set():
                piece = (_XML_PREFIX + padding)[:_CHUNK] if sent == 0 else padding
                piece = piece[: size - sent]
                sent += len(piece)
                if declare_length:
                    handler.wfile.write(piece)
                else:
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if not declare_length:
                handler.wfile.write(b"0\r\n\r\n")
        except OSError:
            handler.close_connection = True  # the client hung up part way, as it should


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    feed: FeedServer

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Stay quiet about clients that hang up; those are the tests' point, not a failure."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FeedServer/1.0"

    @property
    def feed(self) -> FeedServer:
        return cast(_Server, self.server).feed

    def setup(self) -> None:
        super().setup()
        self.feed._track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.feed._track(self.connection, opened=False)

    def do_GET(self) -> None:
        self.feed._handle(self)

    def do_HEAD(self) -> None:
        self.feed._handle(self)

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests read server.requests instead of a log


def _send(handler: _Handler, status: int, headers: Mapping[str, str], body: bytes | None) -> None:
    """Write a complete response; ``body=None`` means a status that has none (304)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    handler.send_response(status, phrase)
    for name, value in headers.items():
        handler.send_header(name, value)
    if body is not None:
        handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body and handler.command != "HEAD":
        handler.wfile.write(body)


def _not_modified(handler: _Handler, content: _Content) -> bool:
    """RFC 9110 §13.2.2: If-None-Match wins; If-Modified-Since only when it is absent."""
    if_none_match = handler.headers.get("If-None-Match")
    if if_none_match is not None:
        return content.etag is not None and _etag_matches(if_none_match, content.etag)
    if_modified_since = handler.headers.get("If-Modified-Since")
    if if_modified_since is None or content.last_modified is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError):
        return False  # an unparsable date is ignored, as the RFC says
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return content.last_modified <= since


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison, as If-None-Match uses."""
    if header.strip() == "*":
        return True

    def opaque(tag: str) -> str:
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag

    return any(opaque(candidate) == opaque(etag) for candidate in header.split(","))


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    """A gzip member inflating to ``size`` bytes of XML-looking whitespace, built in pieces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(_XML_PREFIX[:size])]
    remaining = size - min(size, len(_XML_PREFIX))
    block = b" " * (1 << 20)
    while remaining > 0:
        piece = block if remaining >= len(block) else block[:remaining]
        parts.append(compressor.compress(piece))
        remaining -= len(piece)
    parts.append(compressor.flush())
    return b"".join(parts)


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")


def _int_param(params: Mapping[str, object], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"fault parameter {name!r} must be an int, not {value!r}")
    return value


def _float_param(params: Mapping[str, object], name: str, default: float) -> float:
    value = params.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"fault parameter {name!r} must be a number, not {value!r}")
    return float(value)


__all__ = ["FAULT_PARAMS", "RSS_CONTENT_TYPE", "FeedServer", "RecordedRequest"]
