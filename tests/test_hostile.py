"""Hostile feeds against the real daemon (issue 8): `aggregator once` and `aggregator run`.

Every hostile feed sits on its own path of one local feed server, next to a healthy feed, in one
config; the daemon runs once per mode (`once`, then `run` on a fresh store) and each test below
checks one hostile feed in both runs: exactly one clear log line naming the feed, the healthy
feed still alerting, and nothing of the feed's payload where it must not be. The child's peak
memory is measured from outside: `os.wait4` gives the exited `once` child's own ``ru_maxrss``,
and `/proc/<pid>/status` gives the running daemon's ``VmHWM`` just before it is stopped.

Small limits keep it fast: bodies are capped at 4 MB and a fetch may take 10 s, so the 1 GB
body and the 1 GB gzip bomb are cut off after 4 MB.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest

from aggregator.parse import MAX_QUADRATIC_WORK, ParseError, parse_feed
from tests.conftest import DATA, TOKEN, write_config
from tests.daemon_process import AGGREGATOR, DaemonProcess, clean_env
from tests.servers.fake_telegram import FakeTelegram, parse_telegram_html, utf16_length
from tests.servers.feed_server import FeedServer

SAMPLE = DATA / "own" / "syria-sample.xml"
SAMPLE_TITLE = "وزير الخارجية يبحث مع نظيره الروسي الوضع في سوريا"
SECRET = "XXE-SECRET-5b1e0c7d"  # the content of a local file that hostile feeds try to read
GIB = 1 << 30
MAX_BODY = "4MB"  # written as operators write it; the log says "4 MB", not 4000000 bytes
MAX_RSS_MB = 300  # peak resident memory allowed for the daemon, all hostile feeds at once
MODES = ("once", "run")
RUN_WAIT_S = 30  # how long `run` may take to poll every feed and deliver every alert
ONCE_TIMEOUT_S = 60  # `once` is killed after this long (it takes about 4 s)


# --- the hostile feeds -------------------------------------------------------------------------


def _rss(items: str, doctype: str = "", encoding: str = "utf-8") -> bytes:
    return (
        f'<?xml version="1.0" encoding="{encoding}"?>\n{doctype}'
        '<rss version="2.0"><channel><title>Hostile</title><link>http://hostile.example/</link>'
        f"{items}</channel></rss>"
    ).encode()


def _billion_laughs() -> bytes:
    entities = "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10))
    return _rss(
        "<item><title>canary &lol9;</title><guid>laughs-1</guid>"
        "<description>&lol9;&lol9;&lol9;</description></item>",
        f'<!DOCTYPE rss [\n<!ENTITY lol0 "lol">\n{entities}]>\n',
    )


def _quadratic_entities() -> bytes:
    # One flat 20,000-character entity used 20,000 times: 80 KB that would expand to 400 MB.
    return _rss(
        f"<item><title>canary {'&a;' * 20_000}</title><guid>quadratic-1</guid></item>",
        f'<!DOCTYPE rss [\n<!ENTITY a "{"A" * 20_000}">\n]>\n',
    )


def _xxe(secret: Path) -> bytes:
    uses = "<title>canary &xxe;</title><description>x &xxe;</description>"
    return _rss(
        f"<item>{uses}<guid>&xxe;</guid><link>http://hostile.example/&xxe;</link>"
        "<category>&xxe;</category></item>",
        f'<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "file://{secret}">\n]>\n',
    )


def _xxe_parameter(secret: Path) -> bytes:
    # The parameter-entity form: the file is read into the DTD, then into a general entity.
    doctype = (
        f'<!DOCTYPE rss [\n<!ENTITY % file SYSTEM "file://{secret}">\n'
        "<!ENTITY % wrap \"<!ENTITY leak '%file;'>\">\n%wrap;\n]>\n"
    )
    return _rss(
        "<item><title>canary &leak;</title><description>&leak;</description></item>", doctype
    )


def _category_bomb() -> bytes:
    # 20,000 distinct keywords in one item: feedparser's tag dedupe is quadratic (5 s here, hours
    # for a 10 MB body).
    keywords = ",".join(f"k{i}" for i in range(20_000))
    return _rss(
        f"<item><title>canary</title><guid>tags-1</guid>"
        f"<itunes:keywords>{keywords}</itunes:keywords></item>"
    ).replace(b"<rss ", b'<rss xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" ')


def _attribute_bomb() -> bytes:
    # 20,000 attributes on one element: xml.sax looks each up by a linear scan (3 s here).
    attributes = " ".join(f'a{i}="1"' for i in range(20_000))
    return _rss(f"<item><title>canary</title><guid {attributes}>attrs-1</guid></item>")


def _damaged_arabic() -> bytes:
    # The sample Arabic UTF-8 feed with two broken sequences: a stray 0xFF, a cut-off letter.
    body = SAMPLE.read_bytes().replace(b"news.example", b"damaged.example")
    body = body.replace(b"sample-10", b"damaged-10")
    gold = "الذهب".encode()
    body = body.replace(gold, b"\xff" + gold, 1)
    return body.replace("المحلية".encode(), "المحلية".encode()[:-1] + b" ", 1)


def _latin1_declared_utf8() -> bytes:
    # A Latin-1 document that says it is UTF-8: feedparser's windows-1252 fallback is right here.
    return _rss("<item><title>canary au café</title><guid>latin-1</guid></item>").replace(
        "café".encode(), "café".encode("latin-1")
    )


def _many_items() -> bytes:
    items = "".join(
        f"<item><title>ordinary story {i}</title><guid>many-{i}</guid>"
        f"<link>http://hostile.example/many/{i}</link></item>"
        for i in range(9_999)
    )
    return _rss(items + "<item><title>canary at the end</title><guid>many-last</guid></item>")


def _huge_title() -> bytes:
    return _rss(f"<item><title>canary {'word ' * 200_000}</title><guid>huge-title</guid></item>")


def _dates() -> bytes:
    dated = [
        ("future", "Fri, 01 Jan 2999 00:00:00 GMT"),
        ("garbage", "not a date at all"),
        ("month13", "2024-13-45T99:99:99Z"),
        ("feb30", "2024-02-30T10:00:00Z"),
        ("year10000", "Sat, 01 Jan 10000 00:00:00 GMT"),
        ("badzone", "Fri, 10 May 2024 10:00:00 +9999"),
        ("fine", "Fri, 10 May 2024 10:00:00 +0300"),
    ]
    return _rss(
        "".join(
            f"<item><title>canary {name}</title><guid>date-{name}</guid>"
            f"<pubDate>{when}</pubDate></item>"
            for name, when in dated
        )
    )


@dataclass(frozen=True)
class Hostile:
    """One hostile feed: how the server serves it and the log line it must give."""

    name: str
    serve: Callable[[FeedServer, str, Path], None]
    kind: Literal["failed", "bozo", "polled"]  # refused; read with a warning; read as it is
    problem: str  # regex the reporting line must match (the error, the problem, or the counts)
    alerts: int = 0  # messages its own canary watchlist must produce

    @property
    def chat(self) -> str:
        """The channel its canary watchlist sends to."""
        return "@canary_" + self.name.replace("-", "_")


def _body(
    make: Callable[[], bytes], content_type: str = "application/rss+xml"
) -> Callable[[FeedServer, str, Path], None]:
    def serve(server: FeedServer, path: str, folder: Path) -> None:
        server.add(path, make(), content_type=content_type)

    return serve


def _secret_body(make: Callable[[Path], bytes]) -> Callable[[FeedServer, str, Path], None]:
    def serve(server: FeedServer, path: str, folder: Path) -> None:
        server.add(path, make(folder / "secret.txt"))

    return serve


def _fault(kind: str, **params: object) -> Callable[[FeedServer, str, Path], None]:
    def serve(server: FeedServer, path: str, folder: Path) -> None:
        server.add_fault(path, kind, **params)

    return serve


CAP = r"^body over 4 MB cap"
FEEDS = [
    Hostile("huge-body", _fault("huge", size=GIB), "failed", CAP + r" \(after decompression\)$"),
    Hostile("huge-declared", _fault("huge", size=GIB, declare_length=True), "failed", CAP),
    Hostile("gzip-bomb", _fault("gzip_bomb", size=GIB), "failed", CAP),
    Hostile("billion-laughs", _body(_billion_laughs), "bozo", r"undefined entity", alerts=1),
    Hostile("quadratic-entity", _body(_quadratic_entities), "failed", r"entity expansion too lar"),
    Hostile("category-bomb", _body(_category_bomb), "failed", r"^too many categories: up to 20000"),
    Hostile(
        "attribute-bomb", _body(_attribute_bomb), "failed", r"^too many attributes: up to 20000"
    ),
    Hostile("xxe", _secret_body(_xxe), "bozo", r"entity", alerts=1),
    Hostile("xxe-parameter", _secret_body(_xxe_parameter), "bozo", r"entity", alerts=1),
    Hostile("redirect-loop", _fault("redirect_loop"), "failed", r"^redirect loop"),
    Hostile(
        "html-page",
        _body(lambda: b"<!DOCTYPE html><html><body><p>canary</p></body></html>", "text/html"),
        "failed",
        r"^not a feed: looks like an HTML page$",
    ),
    Hostile("empty-body", _body(lambda: b""), "failed", r"^empty body$"),
    Hostile(
        "invalid-utf8",
        _body(_damaged_arabic),
        "bozo",
        r"^invalid UTF-8: 2 byte sequence\(s\) replaced$",
        alerts=1,
    ),
    Hostile(
        "latin1-as-utf8",
        _body(_latin1_declared_utf8),
        "bozo",
        r"declared as utf-8, but parsed as windows-1252",
        alerts=1,
    ),
    Hostile("many-items", _body(_many_items), "polled", r"items=10000 new=10000 alerts=1", 1),
    Hostile("huge-title", _body(_huge_title), "polled", r"items=1 new=1 alerts=1", alerts=1),
    Hostile("odd-dates", _body(_dates), "polled", r"items=7 new=7 alerts=7", alerts=7),
]
BY_NAME = {h.name: h for h in FEEDS}


# --- running the daemon ------------------------------------------------------------------------


@dataclass
class Run:
    """What one daemon run printed, sent and stored, and how much memory it took."""

    mode: str
    output: str
    messages: dict[str, list[tuple[str, str]]]  # chat -> [(html, plain)]
    failed_sends: int
    store: bytes  # every file of the state folder, concatenated
    peak_rss_mb: float
    elapsed_s: float
    exit_code: int
    lines: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.lines = self.output.splitlines()

    def about(self, feed: str) -> list[str]:
        """The log lines that name ``feed``."""
        pattern = re.compile(rf"\bfeed={re.escape(feed)}(?:\s|$)")
        return [line for line in self.lines if pattern.search(line)]


def _config(folder: Path, server: FeedServer, telegram: FakeTelegram) -> Path:
    folder.mkdir()
    feeds = [{"name": "healthy", "url": server.url_for("/healthy.xml")}]
    watchlists: list[dict[str, object]] = [
        {"name": "syria", "any": ["#سوريا"], "feeds": ["healthy"], "channels": ["@syria_alerts"]}
    ]
    for hostile in FEEDS:
        feeds.append({"name": hostile.name, "url": server.url_for(f"/{hostile.name}.xml")})
        watchlists.append(
            {
                "name": "canary_" + hostile.name.replace("-", "_"),
                "any": ["canary", "سوريا"],
                "feeds": [hostile.name],
                "channels": [hostile.chat],
            }
        )
    return write_config(
        folder,
        feeds=feeds,
        watchlists=watchlists,
        telegram={"api_url": telegram.api_url},
        polling={"max_body": MAX_BODY, "timeout": "10s", "connect_timeout": "5s"},
        token=TOKEN,
    )


def _store_bytes(folder: Path) -> bytes:
    state = folder / "state"
    return b"".join(p.read_bytes() for p in sorted(state.iterdir()) if p.is_file())


def _sent(telegram: FakeTelegram) -> dict[str, list[tuple[str, str]]]:
    sent: dict[str, list[tuple[str, str]]] = {}
    for message in telegram.messages:
        sent.setdefault(message.chat_id, []).append((message.text, message.plain_text))
    return sent


def _run_once(folder: Path, config: Path, telegram: FakeTelegram) -> Run:
    started = time.monotonic()
    with (folder / "out.txt").open("wb") as out:
        proc = subprocess.Popen(
            [AGGREGATOR, "once", "-c", str(config)],
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        # A guard, not a synchronization: a hung child is killed and the run's tests fail.
        guard = threading.Timer(ONCE_TIMEOUT_S, proc.kill)
        guard.start()
        try:
            # wait4 reports this child's own peak, unlike RUSAGE_CHILDREN (every child so far).
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            guard.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        mode="once",
        output=(folder / "out.txt").read_text(encoding="utf-8", errors="replace"),
        messages=_sent(telegram),
        failed_sends=sum(1 for a in telegram.attempts if a.status not in (200, None)),
        store=_store_bytes(folder),
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        elapsed_s=time.monotonic() - started,
        exit_code=proc.returncode,
    )


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _run_daemon(folder: Path, config: Path, telegram: FakeTelegram) -> Run:
    # Nothing is asserted here: a feed that never reports, or an alert that never comes, fails
    # its own test below with the output in hand, not every test of the module at once.
    started = time.monotonic()
    deadline = started + RUN_WAIT_S
    daemon = DaemonProcess(["run", "-c", str(config)])
    try:
        finals = [("feed failed" if h.kind == "failed" else "feed polled", h.name) for h in FEEDS]
        for final, name in [*finals, ("feed polled", "healthy")]:
            pattern = rf"{final}.*\bfeed={re.escape(name)}(?:\s|$)"
            daemon.wait_for(pattern, timeout=max(0.0, deadline - time.monotonic()))
        expected = {h.chat: h.alerts for h in FEEDS if h.alerts} | {"@syria_alerts": 1}
        telegram.wait_until(
            lambda: all(len(telegram.sent_to(c)) >= n for c, n in expected.items()),
            max(0.0, deadline - time.monotonic()),
        )
        running = daemon.proc.poll() is None
        peak = _vm_hwm_mb(daemon.proc.pid) if running else float("inf")
        code = daemon.terminate() if running else -1
    finally:
        daemon.close()
    return Run(
        mode="run",
        output=daemon.output(),
        messages=_sent(telegram),
        failed_sends=sum(1 for a in telegram.attempts if a.status not in (200, None)),
        store=_store_bytes(folder),
        peak_rss_mb=peak,
        elapsed_s=time.monotonic() - started,
        exit_code=code,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """The daemon run once per mode over every hostile feed; the server is shared."""
    base = tmp_path_factory.mktemp("hostile")
    results: dict[str, Run] = {}
    with FeedServer() as server:
        server.add("/healthy.xml", SAMPLE.read_bytes())
        for hostile in FEEDS:
            hostile.serve(server, f"/{hostile.name}.xml", base)
        (base / "secret.txt").write_text(SECRET + "\n", encoding="utf-8")
        for mode in MODES:
            with FakeTelegram(token=TOKEN) as telegram:
                folder = base / mode
                config = _config(folder, server, telegram)
                runner = _run_once if mode == "once" else _run_daemon
                results[mode] = runner(folder, config, telegram)
        yield results


# --- checks shared by every hostile feed --------------------------------------------------------


def _check_feed(run: Run, name: str) -> None:
    """One clear line about the feed, no traceback, its alerts and the healthy feed's alert."""
    hostile = BY_NAME[name]
    lines = run.about(name)
    context = f"{run.mode}: lines about {name}:\n" + "\n".join(lines)
    reports = [line for line in lines if "feed failed" in line or "not well-formed" in line]
    polled = [line for line in lines if '"feed polled"' in line]
    if hostile.kind == "polled":
        assert reports == [], context
        assert len(polled) == 1, context
        assert re.search(hostile.problem, polled[0]), context
    else:
        assert len(reports) == 1, context
        key = "error" if hostile.kind == "failed" else "problem"
        assert (hostile.kind == "failed") == ("feed failed" in reports[0]), context
        value = re.search(rf'\b{key}=("(?:[^"\\]|\\.)*"|\S+)', reports[0])
        assert value, context
        assert re.search(hostile.problem, value.group(1).strip('"')), context
        assert len(polled) == (0 if hostile.kind == "failed" else 1), context
    assert all(" ERROR " not in line for line in lines), context
    assert "Traceback" not in run.output, run.output
    assert len(run.messages.get(hostile.chat, [])) == hostile.alerts, context
    healthy = run.messages.get("@syria_alerts", [])
    assert len(healthy) == 1 and SAMPLE_TITLE in healthy[0][1], "the healthy feed must alert"


# --- one test per hostile feed -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_1gb_body_is_cut_off_at_the_cap(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "huge-body")


@pytest.mark.parametrize("mode", MODES)
def test_1gb_declared_length_is_refused_before_reading(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "huge-declared")


@pytest.mark.parametrize("mode", MODES)
def test_1gb_gzip_bomb_is_cut_off_at_the_cap(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "gzip-bomb")


@pytest.mark.parametrize("mode", MODES)
def test_billion_laughs_is_never_expanded(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "billion-laughs")
    run = runs[mode]
    ((_, plain),) = run.messages["@canary_billion_laughs"]
    assert "lollol" not in plain and "lollol" not in run.output
    assert b"lollol" not in run.store


@pytest.mark.parametrize("mode", MODES)
def test_quadratic_entity_expansion_is_refused(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "quadratic-entity")
    assert b"AAAAAAAAAA" not in runs[mode].store


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["category-bomb", "attribute-bomb"])
def test_quadratic_parser_work_is_refused(runs: dict[str, Run], mode: str, name: str) -> None:
    _check_feed(runs[mode], name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["xxe", "xxe-parameter"])
def test_xxe_never_reads_the_local_file(runs: dict[str, Run], mode: str, name: str) -> None:
    _check_feed(runs[mode], name)
    run = runs[mode]
    assert SECRET not in run.output
    assert all(SECRET not in html for sent in run.messages.values() for html, _ in sent)
    assert SECRET.encode() not in run.store


@pytest.mark.parametrize("mode", MODES)
def test_redirect_loop_is_refused(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "redirect-loop")


@pytest.mark.parametrize("mode", MODES)
def test_html_page_instead_of_a_feed(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "html-page")


@pytest.mark.parametrize("mode", MODES)
def test_empty_body(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "empty-body")


@pytest.mark.parametrize("mode", MODES)
def test_invalid_utf8_loses_only_the_bad_bytes(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "invalid-utf8")
    ((_, plain),) = runs[mode].messages["@canary_invalid_utf8"]
    assert SAMPLE_TITLE in plain, "the Arabic around the bad bytes must arrive intact"


@pytest.mark.parametrize("mode", MODES)
def test_latin1_declared_as_utf8_is_still_read_right(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "latin1-as-utf8")
    ((_, plain),) = runs[mode].messages["@canary_latin1_as_utf8"]
    assert "canary au café" in plain


@pytest.mark.parametrize("mode", MODES)
def test_10000_items(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "many-items")
    ((_, plain),) = runs[mode].messages["@canary_many_items"]
    assert "canary at the end" in plain


@pytest.mark.parametrize("mode", MODES)
def test_1mb_title_gives_a_valid_short_message(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "huge-title")
    ((html, plain),) = runs[mode].messages["@canary_huge_title"]
    assert parse_telegram_html(html) == plain
    assert utf16_length(plain) <= 1000
    assert "canary word word" in plain and "…" in plain


@pytest.mark.parametrize("mode", MODES)
def test_future_and_unparseable_dates(runs: dict[str, Run], mode: str) -> None:
    _check_feed(runs[mode], "odd-dates")
    shown = {
        plain.split("\n")[0].removeprefix("canary "): plain.split("\n")[1]
        for _, plain in runs[mode].messages["@canary_odd_dates"]
    }
    assert shown["fine"] == "Hostile · 2024-05-10 07:00"
    # A date in the future is shown as the feed gives it (tests/test_parse.py::test_dates).
    assert shown["future"] == "Hostile · 2999-01-01 00:00"
    # A date that is not one is shown as no date, never as another, made-up one.
    for name in ("garbage", "month13", "feb30", "year10000", "badzone"):
        assert shown[name] == "Hostile", name


# --- what holds for the whole run ----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_memory_stays_bounded(runs: dict[str, Run], mode: str) -> None:
    run = runs[mode]
    assert run.peak_rss_mb < MAX_RSS_MB, f"{mode}: peak RSS {run.peak_rss_mb:.0f} MB"


@pytest.mark.parametrize("mode", MODES)
def test_the_run_ends_cleanly_and_every_message_is_valid(runs: dict[str, Run], mode: str) -> None:
    run = runs[mode]
    assert run.exit_code == 0, run.output
    assert run.elapsed_s < 30, f"{mode} took {run.elapsed_s:.1f} s"
    assert run.failed_sends == 0, "Telegram refused a message"
    for sent in run.messages.values():
        for html, plain in sent:
            assert parse_telegram_html(html) == plain
            assert utf16_length(plain) <= 4096
    if mode == "once":
        failed = sum(1 for h in FEEDS if h.kind == "failed")
        assert f"polled {len(FEEDS) + 1} feeds ({failed} failed)" in run.output, run.output


# --- the parse limits behind these runs, in process ---------------------------------------------


def test_quadratic_limits_leave_big_real_feeds_alone() -> None:
    # 300 items with 100 categories, 20 keywords and a 30-attribute element each: 3 MB, read.
    keywords = ",".join(f"kw{k}" for k in range(20))
    attributes = " ".join(f'a{k}="{k}"' for k in range(30))
    items = "".join(
        f"<item><title>story {i}</title><guid {attributes}>g{i}</guid>"
        f"<itunes:keywords>{keywords}</itunes:keywords>"
        + "".join(f"<category>topic {i}-{c}</category>" for c in range(100))
        + "</item>"
        for i in range(300)
    )
    body = _rss(items).replace(
        b"<rss ", b'<rss xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" '
    )
    feed = parse_feed(body, feed_name="big")
    assert len(feed.items) == 300
    assert len(feed.items[0].categories.split("\n")) == 120


_MANY = 8_000  # 8,000 squared is over MAX_QUADRATIC_WORK: one item like this is refused


@pytest.mark.parametrize(
    ("inner", "doctype", "message"),
    [
        ("".join(f"<category>c{i}</category>" for i in range(_MANY)), "", "categories"),
        ("".join(f"<dc:subject>s{i}</dc:subject>" for i in range(_MANY)), "", "categories"),
        ("".join(f'<category term="t{i}"/>' for i in range(_MANY)), "", "categories"),
        (f"<media:keywords>{','.join(f'k{i}' for i in range(_MANY))}</media:keywords>", "", "cat"),
        (f"<tags>{'&#44;'.join(f'k{i}' for i in range(_MANY))}</tags>", "", "categories"),
        # Distinct categories carried by entities: 200 declared, each used 40 times.
        (
            "".join(f"&c{i};" for i in range(200)) * 40,
            "<!DOCTYPE rss [\n"
            + "".join(f'<!ENTITY c{i} "<category>v{i}</category>">\n' for i in range(200))
            + "]>\n",
            "categories",
        ),
        # An element with 600 attributes, repeated 180 times by an entity (under 1 MB expanded).
        (
            "&g;" * 180,
            '<!DOCTYPE rss [\n<!ENTITY g "<x '
            + " ".join(f"a{i}='1'" for i in range(600))
            + '/>">\n]>\n',
            "attributes",
        ),
        # Malformed, so read by feedparser's loose parser, which has the same quadratic dedupe.
        ("".join(f"<category>c{i}</category>" for i in range(_MANY)) + "<oops", "", "categories"),
        ("<guid " + " ".join(f'a{i}="1"' for i in range(_MANY)) + ">g</guid>", "", "attributes"),
    ],
)
def test_quadratic_parser_work_is_refused_quickly(inner: str, doctype: str, message: str) -> None:
    assert _MANY * _MANY > MAX_QUADRATIC_WORK
    body = _rss(f"<item><title>t</title>{inner}</item>", doctype)
    started = time.monotonic()
    with pytest.raises(ParseError, match=rf"^too many {message}"):
        parse_feed(body, feed_name="bomb")
    assert time.monotonic() - started < 0.5


def test_invalid_utf8_is_repaired_only_in_documents_that_are_utf8() -> None:
    damaged = parse_feed(_damaged_arabic(), feed_name="damaged")
    assert damaged.bozo == "invalid UTF-8: 2 byte sequence(s) replaced"
    assert damaged.items[0].title == SAMPLE_TITLE
    bad_byte, gold = "\ufffd", "ارتفاع أسعار الذهب"
    assert damaged.items[1].title.startswith(gold.replace("الذهب", bad_byte + "الذهب"))
    # windows-1256 Arabic that claims to be UTF-8 is no damaged UTF-8: feedparser's own
    # fallback decides, as before.
    cp1256 = _rss("<item><title>canary سوريا والعراق</title></item>", encoding="utf-8")
    cp1256 = cp1256.decode().encode("cp1256")
    feed = parse_feed(cp1256, feed_name="cp1256")
    assert feed.bozo is not None and "declared as utf-8, but parsed as" in feed.bozo
    assert "\ufffd" not in feed.items[0].title
    latin = parse_feed(_latin1_declared_utf8(), feed_name="latin-1")
    assert latin.items[0].title == "canary au café"


@pytest.mark.parametrize(
    ("written", "published"),
    [
        ("2024-13-45T99:99:99Z", None),
        ("2024-02-30T10:00:00Z", None),
        ("2024-00-00", None),
        ("2024-131", None),  # feedparser reads month 13, not day 131, and rolls it to 2025
        ("2024-05-10T25:00:00Z", None),
        ("2024-05-10T10:61:00Z", None),
        ("2024-05-10T10:00:00+99:99", None),
        ("Fri, 10 May 2024 10:00:00 +2500", None),
        ("0000-01-01T00:00:00Z", None),
        ("2024-02-29T10:00:00Z", datetime(2024, 2, 29, 10, tzinfo=UTC)),
        ("2024-05-10T24:00:00Z", datetime(2024, 5, 11, tzinfo=UTC)),
        ("2024-05-10T10:00:00.5+05:30", datetime(2024, 5, 10, 4, 30, tzinfo=UTC)),
        ("2024-05-10", datetime(2024, 5, 10, tzinfo=UTC)),
        ("Fri, 10 May 2024 10:00:00 -0930", datetime(2024, 5, 10, 19, 30, tzinfo=UTC)),
    ],
)
def test_dates_with_out_of_range_fields_are_no_dates(
    written: str, published: datetime | None
) -> None:
    body = _rss(f"<item><title>t</title><pubDate>{written}</pubDate></item>")
    (item,) = parse_feed(body, feed_name="dates").items
    assert item.published == published


# --- defects outside the files this suite may change ------------------------------------------


def test_1mb_guid_and_link_do_not_bloat_the_store(
    tmp_path: Path, feed_server: FeedServer, telegram: FakeTelegram
) -> None:
    feed_server.add(
        "/keys.xml",
        _rss(
            f"<item><title>canary long keys</title><guid>{'g' * 1_000_000}</guid>"
            f"<link>http://hostile.example/{'l' * 1_000_000}</link></item>"
        ),
    )
    config = write_config(
        tmp_path,
        feeds=[{"name": "long-keys", "url": feed_server.url_for("/keys.xml")}],
        watchlists=[{"name": "canary", "any": ["canary"], "channels": ["@canary_keys"]}],
        telegram={"api_url": telegram.api_url},
        polling={"max_body": MAX_BODY},
        token=TOKEN,
    )
    run = _run_once(tmp_path, config, telegram)
    assert run.exit_code == 0, run.output
    assert len(run.messages["@canary_keys"]) == 1
    assert len(run.store) < 256 * 1024, f"the store holds {len(run.store) / 1e6:.1f} MB"
