"""The fetch stage against a real feed server on 127.0.0.1 (and 127.0.0.2 as a second host)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from aggregator.errors import BodyTooLargeError, FetchError
from aggregator.fetch import (
    Fetcher,
    FetchLimits,
    FetchResult,
    HTTPStatusError,
    Validators,
    _BoundedDecoder,
    parse_retry_after,
)
from tests.servers.feed_server import FeedServer

UA = "aggregator/0.1 (+https://github.com/example/aggregator)"
RSS = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>T</title>'
    b"<item><title>Hello</title><link>https://example.org/1</link></item></channel></rss>\n"
)
RSS_V2 = RSS.replace(b"Hello", b"Hello again")
MIB = 1024 * 1024
# Short limits so that every limit test finishes in about a second.
FAST = FetchLimits(
    connect_timeout_s=2,
    read_timeout_s=2,
    deadline_s=1,
    max_body_bytes=1 * MIB,
    max_redirects=5,
    max_in_flight=20,
    max_per_host=2,
)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as feed_server:
        yield feed_server


@pytest.fixture
def other_host() -> Iterator[FeedServer]:
    with FeedServer(host="127.0.0.2") as feed_server:
        yield feed_server


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with Fetcher(FAST, user_agent=UA) as shared:
        yield shared


async def peak_memory(awaitable: Awaitable[object]) -> tuple[int, BaseException | None]:
    """Peak bytes Python allocated while awaiting, and the exception raised (if any)."""
    tracemalloc.start()
    try:
        await awaitable
    except Exception as error:
        return tracemalloc.get_traced_memory()[1], error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- plain fetches and conditional GET -------------------------------------------------------


async def test_200_returns_body_headers_and_validators(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add("/feed.xml", RSS, headers={"X-Extra": "yes"})

    result = await fetcher.fetch(server.url_for("/feed.xml"))

    assert result.status == 200
    assert result.body == RSS
    assert result.url == server.url_for("/feed.xml")
    assert not result.not_modified
    assert result.permanent_redirect is None
    assert result.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert result.headers["x-extra"] == "yes"
    assert result.validators.etag is not None
    assert result.validators.etag.startswith('"')
    assert result.validators.last_modified is not None
    assert result.validators.last_modified.endswith("GMT")
    assert 0 <= result.elapsed_s < 1
    sent = server.requests[-1]
    assert sent.headers["user-agent"] == UA
    assert sent.headers["accept-encoding"] == "gzip, deflate"
    assert "application/rss+xml" in sent.headers["accept"]
    assert "if-none-match" not in sent.headers


async def test_etag_gives_304_without_body(server: FeedServer, fetcher: Fetcher) -> None:
    server.add("/feed.xml", RSS, last_modified=False)
    first = await fetcher.fetch(server.url_for("/feed.xml"))

    second = await fetcher.fetch(server.url_for("/feed.xml"), first.validators)

    assert second.status == 304
    assert second.not_modified
    assert second.body is None
    assert second.validators == first.validators
    assert server.requests[-1].headers["if-none-match"] == first.validators.etag


async def test_unchanged_feed_polls_reuse_one_connection(
    server: FeedServer, fetcher: Fetcher
) -> None:
    # A 304 has no body, but unless it is read to its end the connection is dropped and the
    # next poll pays for a new one: most of the cost of an unchanged feed.
    server.add("/feed.xml", RSS)
    server.add("/gone.xml", b"<html>gone</html>", status=404)
    validators = (await fetcher.fetch(server.url_for("/feed.xml"))).validators
    for _ in range(5):
        assert (await fetcher.fetch(server.url_for("/feed.xml"), validators)).not_modified
        with pytest.raises(FetchError):
            await fetcher.fetch(server.url_for("/gone.xml"))
    assert server.connections_opened() == 1


async def test_last_modified_gives_304(server: FeedServer, fetcher: Fetcher) -> None:
    server.add("/feed.xml", RSS, etag=False)
    first = await fetcher.fetch(server.url_for("/feed.xml"))
    assert first.validators.etag is None

    second = await fetcher.fetch(server.url_for("/feed.xml"), first.validators)

    assert second.not_modified
    assert second.validators.last_modified == first.validators.last_modified
    assert server.requests[-1].headers["if-modified-since"] == first.validators.last_modified


async def test_changed_body_is_fetched_again_with_new_validators(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add("/feed.xml", RSS)
    first = await fetcher.fetch(server.url_for("/feed.xml"))
    server.add("/feed.xml", RSS_V2)

    second = await fetcher.fetch(server.url_for("/feed.xml"), first.validators)

    assert second.status == 200
    assert second.body == RSS_V2
    assert second.validators.etag != first.validators.etag
    assert second.validators.last_modified != first.validators.last_modified


async def test_stale_validators_get_the_body(server: FeedServer, fetcher: Fetcher) -> None:
    server.add("/feed.xml", RSS)
    stale = Validators(etag='"stale"', last_modified="Mon, 01 Jan 2001 00:00:00 GMT")

    result = await fetcher.fetch(server.url_for("/feed.xml"), stale)

    assert result.status == 200
    assert result.validators.etag != '"stale"'
    assert server.requests[-1].headers["if-modified-since"] == stale.last_modified


async def test_server_that_ignores_validators_still_gives_the_body(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add("/feed.xml", RSS)
    first = await fetcher.fetch(server.url_for("/feed.xml"))
    server.add_fault("/feed.xml", "ignore_validators")

    second = await fetcher.fetch(server.url_for("/feed.xml"), first.validators)

    assert second.status == 200
    assert second.body == RSS


async def test_gzip_body_is_decoded_and_headers_describe_the_decoded_body(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add("/feed.xml", RSS * 50, gzip=True)

    result = await fetcher.fetch(server.url_for("/feed.xml"))

    assert result.body == RSS * 50
    assert "content-encoding" not in result.headers
    assert "content-length" not in result.headers


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(zlib.compress, id="zlib-wrapped"),
        pytest.param(lambda data: zlib.compress(data, wbits=-15), id="raw"),
    ],
)
async def test_deflate_bodies_both_kinds(
    server: FeedServer, fetcher: Fetcher, encode: object
) -> None:
    assert callable(encode)
    headers = {"Content-Encoding": "deflate", "Content-Type": "application/rss+xml"}
    server.add_fault("/d.xml", "status", code=200, headers=headers, body=encode(RSS))

    result = await fetcher.fetch(server.url_for("/d.xml"))

    assert result.body == RSS


async def test_multi_member_gzip_is_decoded_whole(server: FeedServer, fetcher: Fetcher) -> None:
    body = gzip.compress(RSS[:40]) + gzip.compress(RSS[40:])
    server.add_fault("/m.xml", "status", code=200, headers={"Content-Encoding": "gzip"}, body=body)

    result = await fetcher.fetch(server.url_for("/m.xml"))

    assert result.body == RSS


def test_gzip_members_split_across_reads_and_a_cut_stream() -> None:
    # A member that ends exactly where a network read ends used to end the body: the members
    # after it were dropped without a word. And a stream cut short was taken as the whole
    # feed (and its ETag kept, so the rest was never read).
    decoder = _BoundedDecoder.for_encoding("gzip", "")
    assert decoder is not None
    out = bytearray()
    for member in (gzip.compress(RSS[:40]), gzip.compress(RSS[40:]), b"\0\0"):
        decoder.feed(member, out, 10**6)
    decoder.end()
    assert bytes(out) == RSS, "both members, and the padding after them ignored"
    cut = _BoundedDecoder.for_encoding("gzip", "")
    assert cut is not None
    whole = gzip.compress(RSS * 20)
    cut.feed(whole[: len(whole) * 2 // 3], bytearray(), 10**6)
    with pytest.raises(FetchError, match=r"^the gzip body is cut short$"):
        cut.end()


async def test_corrupt_gzip_and_unknown_encoding_are_clear_errors(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add_fault(
        "/bad.xml", "status", code=200, headers={"Content-Encoding": "gzip"}, body=b"not gzip"
    )
    server.add_fault("/br.xml", "status", code=200, headers={"Content-Encoding": "br"}, body=b"x")

    with pytest.raises(FetchError, match=r"^could not decode the gzip body$"):
        await fetcher.fetch(server.url_for("/bad.xml"))
    with pytest.raises(FetchError, match=r"^unsupported Content-Encoding 'br'$"):
        await fetcher.fetch(server.url_for("/br.xml"))


# -- HTTP errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "message"), [(404, "Not Found"), (500, "Internal Server Error")])
async def test_error_status_raises_with_status(
    server: FeedServer, fetcher: Fetcher, code: int, message: str
) -> None:
    server.add_fault("/feed.xml", "status", code=code, body=b"secret page content")

    with pytest.raises(HTTPStatusError) as caught:
        await fetcher.fetch(server.url_for("/feed.xml"))

    assert caught.value.status == code
    assert str(caught.value) == f"HTTP {code} {message}"
    assert caught.value.retry_after_s is None


async def test_unknown_path_is_404(server: FeedServer, fetcher: Fetcher) -> None:
    with pytest.raises(FetchError, match=r"^HTTP 404 Not Found$") as caught:
        await fetcher.fetch(server.url_for("/nothing-here"))
    assert caught.value.status == 404


async def test_429_carries_retry_after_seconds(server: FeedServer, fetcher: Fetcher) -> None:
    server.add_fault("/feed.xml", "status", code=429, headers={"Retry-After": "120"})

    with pytest.raises(HTTPStatusError) as caught:
        await fetcher.fetch(server.url_for("/feed.xml"))

    assert caught.value.status == 429
    assert caught.value.retry_after_s == 120.0
    assert str(caught.value) == "HTTP 429 Too Many Requests"


async def test_503_with_http_date_retry_after(server: FeedServer, fetcher: Fetcher) -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    retry_at = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    server.add_fault("/feed.xml", "status", code=503, headers={"Retry-After": retry_at})

    with pytest.raises(HTTPStatusError) as caught:
        await fetcher.fetch(server.url_for("/feed.xml"))

    assert caught.value.status == 503
    assert caught.value.retry_after_s is not None
    assert 80 <= caught.value.retry_after_s <= 90


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after(" 30 ", now) == 30.0
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:00 GMT", now) == 60.0
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", now) == 0.0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("\xb2", now) is None  # "²": isdigit() says yes, int() refuses
    assert parse_retry_after("1 Jan 10000000000000000000 00:00:00", now) is None
    assert parse_retry_after(None, now) is None
    # A date is measured against the server's clock when it says what that is.
    served = "Wed, 01 Jan 2025 11:59:30 GMT"  # the server is 30 s behind us
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:00 GMT", now, date_header=served) == 90.0


# -- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 308])
async def test_permanent_redirect_is_reported(
    server: FeedServer, fetcher: Fetcher, code: int
) -> None:
    server.add("/new.xml", RSS)
    server.add_fault("/old.xml", "redirect", to="/new.xml", code=code)

    result = await fetcher.fetch(server.url_for("/old.xml"))

    assert result.body == RSS
    assert result.url == server.url_for("/new.xml")
    assert result.permanent_redirect == server.url_for("/new.xml")


async def test_temporary_redirect_is_followed_but_not_reported(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add("/new.xml", RSS)
    server.add_fault("/old.xml", "redirect", to=server.url_for("/new.xml"), code=302)

    result = await fetcher.fetch(server.url_for("/old.xml"))

    assert result.url == server.url_for("/new.xml")
    assert result.permanent_redirect is None


async def test_permanent_redirect_only_counts_before_the_first_temporary_one(
    server: FeedServer, other_host: FeedServer, fetcher: Fetcher
) -> None:
    other_host.add("/final.xml", RSS)
    server.add_fault("/a", "redirect", to="/b", code=301)
    server.add_fault("/b", "redirect", to=other_host.url_for("/final.xml"), code=302)
    server.add_fault("/c", "redirect", to="/a", code=307)

    moved = await fetcher.fetch(server.url_for("/a"))
    not_moved = await fetcher.fetch(server.url_for("/c"))

    assert moved.permanent_redirect == server.url_for("/b")
    assert moved.url == other_host.url_for("/final.xml")
    assert not_moved.permanent_redirect is None


async def test_redirect_loop_is_a_clear_error(server: FeedServer, fetcher: Fetcher) -> None:
    server.add_fault("/loop.xml", "redirect_loop")

    with pytest.raises(FetchError, match=r"^redirect loop"):
        await fetcher.fetch(server.url_for("/loop.xml"))

    assert server.request_count("/loop.xml") == 1


async def test_too_many_redirects(server: FeedServer, fetcher: Fetcher) -> None:
    for hop in range(6):
        server.add_fault(f"/r{hop}", "redirect", to=f"/r{hop + 1}")
    server.add("/r6", RSS)

    with pytest.raises(FetchError, match=r"^too many redirects \(5\)$"):
        await fetcher.fetch(server.url_for("/r0"))
    assert server.request_count("/r6") == 0

    result = await fetcher.fetch(server.url_for("/r1"))  # five hops: allowed
    assert result.url == server.url_for("/r6")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("file:///etc/passwd", r"^redirect to a non-HTTP URL$"),
        ("", r"^HTTP 302 redirect without a Location header$"),
    ],
)
async def test_bad_redirect_targets(
    server: FeedServer, fetcher: Fetcher, location: str, message: str
) -> None:
    server.add_fault("/r", "redirect", to=location)

    with pytest.raises(FetchError, match=message):
        await fetcher.fetch(server.url_for("/r"))


async def test_error_after_a_redirect_names_where_it_happened(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add_fault("/old", "redirect", to="/gone", code=301)

    with pytest.raises(HTTPStatusError) as caught:
        await fetcher.fetch(server.url_for("/old"))

    assert str(caught.value) == f"HTTP 404 Not Found (after redirect to {server.url_for('/gone')})"


# -- hostile servers -----------------------------------------------------------------------------


async def test_huge_body_is_cut_off_quickly_in_small_memory(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add_fault("/huge.xml", "huge", size=1 << 30)
    started = time.monotonic()

    peak, error = await peak_memory(fetcher.fetch(server.url_for("/huge.xml")))

    assert isinstance(error, BodyTooLargeError)
    assert str(error) == "body over 1 MiB cap (after decompression)"
    assert time.monotonic() - started < 5
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


async def test_declared_huge_body_is_refused_before_reading(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.add_fault("/huge.xml", "huge", size=1 << 30, declare_length=True)

    peak, error = await peak_memory(fetcher.fetch(server.url_for("/huge.xml")))

    assert isinstance(error, BodyTooLargeError)
    assert peak < 1 * MIB, f"peak {peak / MIB:.1f} MiB"


async def test_body_exactly_at_the_cap_is_accepted(server: FeedServer) -> None:
    limits = FetchLimits(max_body_bytes=1000)
    server.add("/exact.xml", b"x" * 1000, gzip=True)
    server.add("/over.xml", b"x" * 1001, gzip=True)

    async with Fetcher(limits, user_agent=UA) as fetcher:
        result = await fetcher.fetch(server.url_for("/exact.xml"))
        with pytest.raises(BodyTooLargeError, match=r"^body over 1000 bytes cap"):
            await fetcher.fetch(server.url_for("/over.xml"))

    assert result.body == b"x" * 1000


async def test_gzip_bomb_is_cut_off_in_small_memory(server: FeedServer, fetcher: Fetcher) -> None:
    # 64 MiB inflated from about 64 KiB: a decoder that inflates whole network chunks would
    # allocate tens of MiB at once; a bounded one stays near the 1 MiB cap.
    server.add_fault("/bomb.xml", "gzip_bomb", size=64 * MIB)

    peak, error = await peak_memory(fetcher.fetch(server.url_for("/bomb.xml")))

    assert isinstance(error, BodyTooLargeError)
    assert str(error) == "body over 1 MiB cap (after decompression)"
    assert peak < 8 * MIB, f"peak {peak / MIB:.1f} MiB"


async def test_drip_is_cut_off_by_the_deadline(server: FeedServer, fetcher: Fetcher) -> None:
    server.add_fault("/drip.xml", "drip", interval=0.05)
    started = time.monotonic()

    with pytest.raises(FetchError, match=r"^no response within 1 s deadline$"):
        await fetcher.fetch(server.url_for("/drip.xml"))

    assert 0.9 < time.monotonic() - started < 3


async def test_silent_server_hits_the_read_timeout(server: FeedServer) -> None:
    server.add("/slow.xml", RSS)
    server.add_fault("/slow.xml", "delay", seconds=30)
    limits = FetchLimits(read_timeout_s=0.2, deadline_s=10)

    async with Fetcher(limits, user_agent=UA) as fetcher:
        with pytest.raises(FetchError, match=r"^timed out waiting for data \(0.2 s"):
            await fetcher.fetch(server.url_for("/slow.xml"))


async def test_connection_closed_without_response(server: FeedServer, fetcher: Fetcher) -> None:
    server.add_fault("/close.xml", "close")

    with pytest.raises(FetchError, match=r"^server closed the connection without a response$"):
        await fetcher.fetch(server.url_for("/close.xml"))


async def test_connection_refused(fetcher: Fetcher) -> None:
    with pytest.raises(FetchError, match=r"^connection refused$") as caught:
        await fetcher.fetch(f"http://127.0.0.1:{free_port()}/feed.xml")
    assert caught.value.status is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/feed.xml", r"^unsupported URL scheme 'ftp'"),
        ("not a url", r"^invalid URL: no scheme"),
        ("http://", r"^invalid URL"),
    ],
)
async def test_bad_urls_are_refused_without_a_request(
    fetcher: Fetcher, url: str, message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        await fetcher.fetch(url)


# -- concurrency limits --------------------------------------------------------------------------


async def test_per_host_limit_holds_and_other_hosts_are_not_blocked(
    server: FeedServer, other_host: FeedServer
) -> None:
    server.add("/slow.xml", RSS)
    server.add_fault("/slow.xml", "hold")
    other_host.add("/fast.xml", RSS)

    async with Fetcher(FetchLimits(max_per_host=2), user_agent=UA) as fetcher:
        url = server.url_for("/slow.xml")
        slow = [asyncio.create_task(fetcher.fetch(url)) for _ in range(10)]
        try:
            assert await asyncio.to_thread(server.wait_for_requests, "/slow.xml", 2, 5)
            async with asyncio.timeout(2):
                fast = await fetcher.fetch(other_host.url_for("/fast.xml"))
            assert fast.body == RSS
            # The other eight stay queued behind the two held ones: give them a fair chance
            # (0.3 s) to reach the server, which a broken limit lets them do in milliseconds.
            assert not await asyncio.to_thread(server.wait_for_requests, "/slow.xml", 3, 0.3)
            assert server.request_count("/slow.xml") == 2
            assert server.in_flight() == 2
        finally:
            server.release("/slow.xml")
            results = await asyncio.gather(*slow)

    assert [r.status for r in results] == [200] * 10
    assert server.request_count("/slow.xml") == 10
    assert server.max_in_flight() == 2


async def test_global_in_flight_limit_queues_outside_the_deadline(server: FeedServer) -> None:
    # Two waves of 0.5 s each: only a queue that waits outside the 0.8 s deadline (and outside
    # httpx's pool timeout) lets the second wave succeed.
    limits = FetchLimits(max_in_flight=2, max_per_host=10, deadline_s=0.8, connect_timeout_s=0.3)
    for n in range(4):
        server.add(f"/g/{n}.xml", RSS)
        server.add_fault(f"/g/{n}.xml", "delay", seconds=0.5)

    async with Fetcher(limits, user_agent=UA) as fetcher:
        results = await asyncio.gather(
            *(fetcher.fetch(server.url_for(f"/g/{n}.xml")) for n in range(4))
        )

    assert all(r.body == RSS for r in results)
    assert server.max_in_flight("/g/") == 2


async def test_feeds_queued_for_a_busy_host_leave_the_overall_slots_to_other_hosts(
    server: FeedServer,
) -> None:
    # Three feeds on a host that holds its answers, one slot per host, two overall: the two
    # waiting their turn at the busy host must not take the slot the other host's feed needs.
    limits = FetchLimits(max_in_flight=2, max_per_host=1, deadline_s=10)
    server.add("/held.xml", RSS)
    server.add_fault("/held.xml", "hold")
    server.add("/free.xml", RSS)
    other_host = server.url_for("/free.xml").replace("127.0.0.1", "localhost")
    async with Fetcher(limits, user_agent=UA) as fetcher:
        held = [asyncio.create_task(fetcher.fetch(server.url_for("/held.xml"))) for _ in "abc"]
        assert await asyncio.to_thread(server.wait_for_requests, "/held.xml", 1, 5)
        free = await asyncio.wait_for(fetcher.fetch(other_host), 5)
        assert free.body == RSS
        assert not any(task.done() for task in held), "the busy host is still answering"
        server.release("/held.xml")
        assert [r.status for r in await asyncio.gather(*held)] == [200, 200, 200]


async def test_deadline_does_not_count_time_queued_for_the_host(server: FeedServer) -> None:
    limits = FetchLimits(deadline_s=0.8, max_per_host=1)
    server.add("/slow.xml", RSS)
    server.add_fault("/slow.xml", "delay", seconds=0.5)

    async with Fetcher(limits, user_agent=UA) as fetcher:
        results = await asyncio.gather(*(fetcher.fetch(server.url_for("/slow.xml")) for _ in "ab"))

    assert [r.status for r in results] == [200, 200]
    assert all(r.elapsed_s < 0.8 for r in results)


async def test_failures_give_their_slots_back(server: FeedServer) -> None:
    limits = FetchLimits(deadline_s=0.3, max_per_host=1, max_in_flight=1)
    server.add_fault("/drip.xml", "drip", interval=0.05)
    server.add_fault("/close.xml", "close")
    server.add("/ok.xml", RSS)

    async with Fetcher(limits, user_agent=UA) as fetcher:
        for path in ("/drip.xml", "/close.xml", "/missing.xml"):
            with pytest.raises(FetchError):
                await fetcher.fetch(server.url_for(path))
        async with asyncio.timeout(2):
            result: FetchResult = await fetcher.fetch(server.url_for("/ok.xml"))

    assert result.body == RSS


# -- configuration -------------------------------------------------------------------------------


def test_limits_are_validated_with_every_problem_named() -> None:
    with pytest.raises(ValueError, match="invalid FetchLimits") as caught:
        FetchLimits(deadline_s=0, max_per_host=0, max_redirects=-1, read_timeout_s=float("nan"))
    message = str(caught.value)
    for name in ("deadline_s", "max_per_host", "max_redirects", "read_timeout_s"):
        assert name in message


async def test_user_agent_is_required() -> None:
    with pytest.raises(ValueError, match="user_agent"):
        Fetcher(user_agent=" ")


# -- the feed server's own HTTP behaviour --------------------------------------------------------


def test_server_conditional_requests(server: FeedServer) -> None:
    server.add("/feed.xml", RSS)
    with httpx.Client(base_url=server.url) as client:
        first = client.get("/feed.xml")
        etag = first.headers["etag"]
        last_modified = first.headers["last-modified"]
        earlier = "Mon, 01 Jan 2001 00:00:00 GMT"

        def status(**headers: str) -> int:
            return client.get("/feed.xml", headers=headers).status_code

        assert first.status_code == 200
        assert status(**{"If-None-Match": etag}) == 304
        assert status(**{"If-None-Match": f"W/{etag}"}) == 304
        assert status(**{"If-None-Match": f'"other", {etag}'}) == 304
        assert status(**{"If-None-Match": "*"}) == 304
        assert status(**{"If-None-Match": '"other"'}) == 200
        assert status(**{"If-Modified-Since": last_modified}) == 304
        assert status(**{"If-Modified-Since": earlier}) == 200
        assert status(**{"If-Modified-Since": "garbage"}) == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        assert status(**{"If-None-Match": '"other"', "If-Modified-Since": last_modified}) == 200
        not_modified = client.get("/feed.xml", headers={"If-None-Match": etag})
        assert not_modified.content == b""
        assert not_modified.headers["etag"] == etag


def test_server_records_requests_and_rejects_bad_faults(server: FeedServer) -> None:
    with pytest.raises(ValueError, match="unknown fault kind 'nope'"):
        server.add_fault("/x", "nope")
    with pytest.raises(ValueError, match=r"fault 'redirect' needs \['to'\]"):
        server.add_fault("/x", "redirect")
    with pytest.raises(ValueError, match="does not take"):
        server.add_fault("/x", "close", seconds=1)
    with pytest.raises(ValueError, match="must start with '/'"):
        server.add("x", RSS)

    server.add("/x", RSS)
    with httpx.Client(base_url=server.url) as client:
        client.get("/x?a=1", headers={"X-Test": "1"})
    assert server.wait_for_requests("/x", 1, timeout=1)
    assert not server.wait_for_requests("/x", 2, timeout=0.01)
    recorded = server.requests[0]
    assert (recorded.method, recorded.path, recorded.query) == ("GET", "/x", "a=1")
    assert recorded.headers["x-test"] == "1"
    assert recorded.time.tzinfo is UTC


def test_server_stop_interrupts_a_delay() -> None:
    with FeedServer() as slow_server:
        slow_server.add("/slow.xml", RSS)
        slow_server.add_fault("/slow.xml", "delay", seconds=60)
        with socket.create_connection(("127.0.0.1", slow_server.port)) as conn:
            conn.sendall(b"GET /slow.xml HTTP/1.1\r\nHost: x\r\n\r\n")
            assert slow_server.wait_for_requests("/slow.xml", 1, timeout=5)
            started = time.monotonic()
            slow_server.stop()
            assert time.monotonic() - started < 2
            assert conn.recv(100) == b""


def test_server_answers_another_process(server: FeedServer) -> None:
    server.add("/feed.xml", RSS)
    script = (
        "import sys, urllib.request\n"
        "sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, server.url_for("/feed.xml")],
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert completed.stdout == RSS


@pytest.mark.parametrize("port", ["80800", "0"])
async def test_redirect_to_an_impossible_port_is_a_fetch_error(
    server: FeedServer, fetcher: Fetcher, port: str
) -> None:
    # A hostile or broken feed must cost one feed error, not a crash of the poll.
    server.add_fault("/odd.xml", "redirect", to=f"http://127.0.0.1:{port}/feed.xml", code=302)
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(server.url_for("/odd.xml"))
    assert "port" in str(caught.value) or "connect" in str(caught.value)
