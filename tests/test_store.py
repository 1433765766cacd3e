"""Tests for the durable store: round trips, outbox, locking, recovery, failures, kills."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tinydb import TinyDB

from aggregator.cluster import Fingerprint, Source
from aggregator.errors import StoreError, StoreLockedError
from aggregator.storage import JournalStorage
from aggregator.store import (
    POLL_FLUSH_S,
    EditEntry,
    FeedState,
    OutboxEntry,
    SeenRecord,
    SplitProgress,
    Store,
    Story,
    StoryMessage,
)
from tests import store_writer

ROOT = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).resolve().parent / "store_writer.py"


def entry(
    entry_id: str, chat: str = "@news", *, created_at: float = 1.0, key: str = ""
) -> OutboxEntry:
    """An outbox entry with readable defaults."""
    return OutboxEntry(
        id=entry_id,
        chat=chat,
        text=f"<b>{entry_id}</b> خبر",
        plain=f"{entry_id} خبر",
        watchlist="w",
        item_key=key or f"key-{entry_id}",
        feed="f",
        created_at=created_at,
    )


def seen(*keys: str, feed: str = "f", at: float = 1.0) -> list[SeenRecord]:
    """Seen records for these keys."""
    return [SeenRecord(key=k, feed=feed, seen_at=at) for k in keys]


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet in a fresh interpreter with the project importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """Where a test's store lives (its folder does not exist yet)."""
    return tmp_path / "data" / "aggregator.json"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    """An open, empty, writable store."""
    with Store.open(path) as opened:
        yield opened


def test_open_creates_folder_and_empty_store(path: Path) -> None:
    with Store.open(path) as store:
        assert not store.is_seen("x")
        assert store.feed_state("f") == FeedState()
        assert store.pending() == []
        assert store.path == path and not store.readonly
    doc = json.loads(path.read_text("utf-8"))
    assert doc["_meta"] == {"1": {"schema": 1, "seq": 0}}
    assert path.with_name("aggregator.json.bak").exists()


def test_round_trip(path: Path) -> None:
    state = FeedState(
        etag='W/"abc"',
        last_modified="Wed, 01 May 2024 10:00:00 GMT",
        body_hash="h",
        initialized=True,
        last_attempt_at=100.5,
        last_success_at=100.5,
        consecutive_failures=2,
        last_error="timeout",
        url_override="https://example.org/new",
    )
    with Store.open(path) as store:
        store.commit(
            feed="f",
            state=state,
            seen=seen("k1", "k2"),
            alerts=[entry("a1"), entry("a2", "-1001234567890")],
            present_keys=["k1", "k2"],
        )
        store.set_meta("cursor", {"offset": 7, "names": ["\u0627", "b"]})
        store.mark_sent("a1", message_id=42, sent_at=200.0)
        state.etag = "changed after commit"  # the store keeps its own copy
    with Store.open(path) as store:
        assert store.is_seen("k1") and store.is_seen("k2") and not store.is_seen("k3")
        got = store.feed_state("f")
        assert got.etag == 'W/"abc"' and got.url_override == "https://example.org/new"
        assert got.consecutive_failures == 2 and got.initialized
        assert store.pending() == [entry("a2", "-1001234567890")]
        assert store.get_meta("cursor") == {"offset": 7, "names": ["\u0627", "b"]}
        assert store.sent_message_id("key-a1", "@news") == 42
        record = store.sent_record("a1")
        assert record is not None and record.message_id == 42 and record.sent_at == 200.0
        assert store.feed_states() == {"f": got}
        got.etag = "mutated copy"
        assert store.feed_state("f").etag == 'W/"abc"'


def test_commit_is_one_journal_line(store: Store) -> None:
    journal = store.path.with_name(store.path.name + ".journal")
    store.commit(
        feed="f",
        state=FeedState(etag="e"),
        seen=seen(*[f"k{i}" for i in range(50)]),
        alerts=[entry(f"a{i}") for i in range(5)],
        present_keys=[f"k{i}" for i in range(50)],
    )
    assert journal.read_bytes().count(b"\n") == 1


def test_idempotent_commits(store: Store) -> None:
    def commit_batch() -> None:
        store.commit(
            feed="f",
            state=FeedState(etag="e1"),
            seen=seen("k1", "k2"),
            alerts=[entry("a1"), entry("a2")],
            present_keys=["k1", "k2"],
        )

    commit_batch()
    size = store.stats().journal_bytes
    commit_batch()
    assert store.stats().journal_bytes == size  # nothing new: no write at all
    assert [e.id for e in store.pending()] == ["a1", "a2"]
    # A key seen again keeps its first record; an alert already sent is not queued again.
    store.mark_sent("a1", message_id=1, sent_at=5.0)
    store.commit(seen=seen("k1", at=99.0), alerts=[entry("a1"), entry("a3")])
    assert [e.id for e in store.pending()] == ["a2", "a3"]
    store.commit(seen=[*seen("dup"), *seen("dup", at=2.0)], alerts=[entry("d"), entry("d")])
    assert [e.id for e in store.pending()].count("d") == 1
    assert store.stats().seen == 3


def test_outbox_order_and_mark_sent(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(alerts=[entry("late", created_at=30.0), entry("early", created_at=10.0)])
        store.commit(alerts=[entry("middle", "12345", created_at=20.0)])
        store.commit(alerts=[entry("tie", created_at=30.0)])  # same time: commit order decides
        assert [e.id for e in store.pending()] == ["early", "middle", "late", "tie"]
        assert [e.id for e in store.pending("@news")] == ["early", "late", "tie"]
        assert [e.id for e in store.pending("12345")] == ["middle"]
        assert store.pending("@nobody") == []
        store.mark_sent("early", message_id=7, sent_at=40.0)
        store.mark_sent("unknown", message_id=8, sent_at=40.0)  # no-op
        store.mark_sent("early", message_id=9, sent_at=41.0)  # already sent: no-op
        store.mark_sent_many(["late", "tie"], message_id=11, sent_at=42.0)
        assert [e.id for e in store.pending()] == ["middle"]
        assert store.pending_count() == 1
    with Store.open(path) as store:
        assert [e.id for e in store.pending()] == ["middle"]
        assert store.sent_message_id("key-early", "@news") == 7
        assert store.sent_message_id("key-tie", "@news") == 11
        assert store.sent_message_id("key-middle", "12345") is None


def test_replace_chat(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(
            alerts=[
                entry("g1", "-100", key="k1"),
                entry("g2", "-100", key="k2"),
                entry("s1", "-1001", key="k1"),  # already queued for the new chat
                entry("other", "@x", key="k3"),
            ]
        )
        store.replace_chat("-100", "-1001")
        store.replace_chat("-404", "-1001")  # nothing pending there: no-op
    with Store.open(path) as store:
        assert store.pending("-100") == []
        assert [(e.id, e.item_key) for e in store.pending("-1001")] == [
            ("g2", "k2"),
            ("s1", "k1"),
        ]
        assert [e.id for e in store.pending("@x")] == ["other"]


def test_meta(store: Store) -> None:
    assert store.get_meta("missing") is None
    store.set_meta("n", 1)
    store.set_meta("n", 2)
    value = {"list": [1, 2]}
    store.set_meta("d", value)
    value["list"].append(3)  # the store kept its own copy
    got = store.get_meta("d")
    assert got == {"list": [1, 2]}
    assert isinstance(got, dict)
    got["list"].append(4)
    assert store.get_meta("d") == {"list": [1, 2]}
    store.set_meta("n", None)
    assert store.get_meta("n") is None
    size = store.stats().journal_bytes
    with pytest.raises(TypeError, match="'bad' is not JSON-compatible"):
        store.set_meta("bad", {1, 2})
    assert store.stats().journal_bytes == size


def test_commit_arguments_are_checked(store: Store) -> None:
    with pytest.raises(ValueError, match="need the feed"):
        store.commit(state=FeedState())
    with pytest.raises(ValueError, match=r"OutboxEntry\.chat must not be empty"):
        store.commit(seen=seen("k"), alerts=[entry("a", chat="")])
    assert not store.is_seen("k")


def test_lock_in_process(path: Path) -> None:
    with Store.open(path):
        with pytest.raises(StoreLockedError) as info:
            Store.open(path)
        message = str(info.value)
        assert f"store {path} is locked by another aggregator process (pid {os.getpid()})" in (
            message
        )
        assert "stop it first or point [storage].path elsewhere" in message
    with Store.open(path) as again:  # released on close
        assert not again.readonly


def test_lock_across_processes(path: Path) -> None:
    code = (
        "import sys\n"
        "from aggregator.errors import StoreLockedError\n"
        "from aggregator.store import Store\n"
        "try:\n"
        "    Store.open(sys.argv[1])\n"
        "except StoreLockedError as exc:\n"
        "    print('locked:', exc)\n"
        "else:\n"
        "    print('opened')\n"
    )
    with Store.open(path):
        result = run_python(code, str(path))
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("locked:"), result.stdout
        assert f"(pid {os.getpid()})" in result.stdout
    assert run_python(code, str(path)).stdout.strip() == "opened"


def test_lock_held_by_subprocess(path: Path) -> None:
    code = (
        "import sys\n"
        "from aggregator.store import Store\n"
        "store = Store.open(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError, match=f"pid {proc.pid}"):
            Store.open(path)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_readonly_opens_while_locked_and_never_writes(path: Path) -> None:
    with Store.open(path) as writer:
        writer.commit(feed="f", state=FeedState(etag="e"), seen=seen("k1"), alerts=[entry("a")])
        before = sorted(os.listdir(path.parent))
        with Store.open(path, readonly=True) as reader:
            assert reader.readonly
            assert reader.is_seen("k1") and reader.feed_state("f").etag == "e"
            assert [e.id for e in reader.pending()] == ["a"]
            with pytest.raises(StoreError, match="read-only"):
                reader.commit(seen=seen("k2"))
            with pytest.raises(StoreError, match="read-only"):
                reader.mark_sent("a", sent_at=1.0)
        assert sorted(os.listdir(path.parent)) == before
        writer.commit(seen=seen("k2"))  # the writer still holds its lock and writes
    missing = path.parent / "nothing-here" / "x.json"
    with Store.open(missing, readonly=True) as empty:
        assert empty.pending() == [] and not empty.is_seen("k1")
    assert not missing.parent.exists()


def test_closed_store_refuses_writes(path: Path) -> None:
    store = Store.open(path)
    store.close()
    store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        store.commit(seen=seen("k"))


def _store_with_history(path: Path) -> None:
    """Batches before and after a compaction, so .bak and both journals matter."""
    with Store.open(path) as store:
        store.commit(feed="f", state=FeedState(etag="e1"), seen=seen("old"), alerts=[entry("a1")])
        store.compact()
        store.commit(feed="f", state=FeedState(etag="e2"), seen=seen("mid"), alerts=[entry("a2")])
        store.compact()
        store.commit(feed="f", state=FeedState(etag="e3"), seen=seen("new"), alerts=[entry("a3")])
        store.mark_sent("a1", message_id=5, sent_at=9.0)


def _assert_history(store: Store) -> None:
    assert all(store.is_seen(k) for k in ("old", "mid", "new"))
    assert store.feed_state("f").etag == "e3"
    assert [e.id for e in store.pending()] == ["a2", "a3"]
    assert store.sent_message_id("key-a1", "@news") == 5


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], "invalid JSON"),
        (lambda data: b"\x00\x17garbage\xff" * 10, "invalid JSON"),
        (lambda data: b"", "empty file"),
        (lambda data: b'{"seen": {}}', "no valid _meta record"),
    ],
    ids=["truncated", "garbage", "empty", "no-schema"],
)
def test_corrupt_current_loads_backup(
    path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[bytes], bytes], reason: str
) -> None:
    _store_with_history(path)
    path.write_bytes(damage(path.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="aggregator.store"), Store.open(path) as store:
        _assert_history(store)  # the previous snapshot + both journals: nothing lost
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert (
        warnings[0].startswith(f"store {path} is unreadable ({reason}")
        and f"loaded previous good copy {path}.bak" in warnings[0]
    )
    aside = [p for p in path.parent.iterdir() if p.name.startswith("aggregator.json.corrupt-")]
    assert len(aside) == 1 and str(aside[0]) in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aggregator.store"), Store.open(path) as store:
        _assert_history(store)
    assert caplog.records == []  # repaired: the current file is good again


def test_corrupt_current_readonly_moves_nothing(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _store_with_history(path)
    path.write_bytes(b"{not json")
    before = sorted(os.listdir(path.parent))
    with (
        caplog.at_level(logging.WARNING, logger="aggregator.store"),
        Store.open(path, readonly=True) as store,
    ):
        _assert_history(store)
    assert "read-only: nothing moved" in caplog.text
    assert sorted(os.listdir(path.parent)) == before


def test_both_corrupt_is_a_clear_error(path: Path) -> None:
    _store_with_history(path)
    path.write_bytes(b"{truncated")
    path.with_name(path.name + ".bak").write_bytes(b"")
    with pytest.raises(StoreError) as info:
        Store.open(path)
    message = str(info.value)
    assert f"store {path} is unreadable (invalid JSON" in message
    assert f"previous good copy {path}.bak (empty file)" in message
    assert f"move {path}, {path}.bak, {path}.journal and {path}.journal.bak aside" in message
    assert "re-alert" in message
    with pytest.raises(StoreError, match="unreadable"):
        Store.open(path)  # the same error again: the failed attempt released its lock
    assert path.read_bytes() == b"{truncated"  # nothing was moved or rewritten


def test_malformed_document_is_a_clear_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    doc = {"_meta": {"1": {"schema": 1, "seq": 0}}, "seen": {"1": {"feed": "f"}}}
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"table 'seen' is malformed \(KeyError: 'key'\)"):
        Store.open(path)


def test_newer_schema_is_refused(path: Path) -> None:
    _store_with_history(path)
    doc = json.loads(path.read_text("utf-8"))
    doc["_meta"]["1"]["schema"] = 2
    path.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match="has schema version 2, newer than this aggregator"):
        Store.open(path)
    with pytest.raises(StoreError, match="schema version 2"):
        Store.open(path, readonly=True)
    assert json.loads(path.read_text("utf-8"))["_meta"]["1"]["schema"] == 2  # left alone


def test_write_failure_changes_nothing(path: Path) -> None:
    store = Store.open(path)
    store.commit(feed="f", state=FeedState(etag="e1"), seen=seen("k1"), alerts=[entry("a1")])
    before = (store.feed_state("f"), store.pending(), store.stats())
    # Running as root, chmod would not stop a write; a file where the folder was does.
    moved = path.parent.with_name("moved")
    path.parent.rename(moved)
    path.parent.write_text("not a folder")
    try:
        with pytest.raises(StoreError) as info:
            store.commit(
                feed="f", state=FeedState(etag="e2"), seen=seen("k2"), alerts=[entry("a2")]
            )
        assert f"cannot write store journal {path}.journal: Not a directory" in str(info.value)
        with pytest.raises(StoreError):
            store.mark_sent("a1", message_id=1, sent_at=1.0)
        with pytest.raises(StoreError):
            store.set_meta("x", 1)
        assert not store.is_seen("k2")
        assert (store.feed_state("f"), store.pending(), store.stats()) == before
        assert store.get_meta("x") is None
    finally:
        path.parent.unlink()
        moved.rename(path.parent)
    store.commit(feed="f", state=FeedState(etag="e3"), seen=seen("k3"), alerts=[entry("a3")])
    store.close()
    with Store.open(path) as reopened:
        assert reopened.is_seen("k1") and reopened.is_seen("k3") and not reopened.is_seen("k2")
        assert reopened.feed_state("f").etag == "e3"
        assert [e.id for e in reopened.pending()] == ["a1", "a3"]


def test_torn_journal_write_is_never_replayed(path: Path) -> None:
    """A commit cut off mid-write (file size limit) fails, and its half line is dropped."""
    code = (
        "import os, resource, signal, sys\n"
        "from aggregator.errors import StoreError\n"
        "from aggregator.store import SeenRecord, Store\n"
        "store = Store.open(sys.argv[1])\n"
        "store.commit(seen=[SeenRecord('before', 'f', 1.0)])\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "size = os.path.getsize(sys.argv[1] + '.journal')\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))\n"
        "big = [SeenRecord(f'big{i}', 'f', 1.0) for i in range(100)]\n"
        "try:\n"
        "    store.commit(seen=big)\n"
        "except StoreError as exc:\n"
        "    print('failed:', exc)\n"
        "print('big seen in memory:', store.is_seen('big0'))\n"
        "os._exit(0)  # like a crash: no cleanup\n"
    )
    result = run_python(code, str(path))
    assert result.returncode == 0, result.stderr
    assert "failed: cannot write store journal" in result.stdout
    assert "File too large" in result.stdout
    assert "big seen in memory: False" in result.stdout
    journal = path.with_name(path.name + ".journal")
    assert not journal.read_bytes().endswith(b"\n")  # the torn half line is there
    with Store.open(path) as store:
        assert store.is_seen("before") and not store.is_seen("big0")
        store.commit(seen=seen("after"))
    with Store.open(path) as store:
        assert store.is_seen("before") and store.is_seen("after") and not store.is_seen("big0")


def test_failed_fsync_batch_is_never_replayed(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync can fail after the whole line reached the file: that batch was reported failed,
    so it must not come back at the next open, not even after later batches succeeded."""
    store = Store.open(path)
    store.commit(seen=seen("before"))
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        monkeypatch.setattr(os, "fsync", real_fsync)  # only this one call fails
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match="Input/output error"):
        store.commit(seen=seen("failed"))
    journal = path.with_name(path.name + ".journal")
    assert b'"failed"' in journal.read_bytes()  # the whole line is on disk
    assert not store.is_seen("failed")
    store.commit(seen=seen("after"))  # rewrites the snapshot first, past the failed batch
    store.close()
    with Store.open(path) as reopened:
        assert reopened.is_seen("before") and reopened.is_seen("after")
        assert not reopened.is_seen("failed")


def test_journal_cut_at_any_byte(path: Path) -> None:
    """Power loss can leave any prefix of the journal, or a prefix plus zeros: every such file
    opens, holding exactly the batches whose lines are complete."""
    with Store.open(path) as store:
        for n in range(4):
            store.commit(seen=seen(f"k{n}"), alerts=[entry(f"a{n}")])
    journal = path.with_name(path.name + ".journal")
    data = journal.read_bytes()
    line_ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    rng = random.Random(4)
    cuts = sorted(
        {0, len(data), *line_ends, *(e - 1 for e in line_ends), *rng.sample(range(len(data)), 60)}
    )
    for cut in cuts:
        for tail in (b"", b"\0" * 700):
            journal.write_bytes(data[:cut] + tail)
            complete = sum(1 for end in line_ends if end <= cut)
            with Store.open(path, readonly=True) as store:
                got = [n for n in range(4) if store.is_seen(f"k{n}")]
                assert got == list(range(complete)), (cut, tail[:1])
                assert [e.id for e in store.pending()] == [f"a{n}" for n in got]
    journal.write_bytes(data[: line_ends[1] + 5])
    with Store.open(path) as store:  # writable: the torn tail is cut off before appending
        store.commit(seen=seen("after"))
    with Store.open(path) as store:
        assert [store.is_seen(k) for k in ("k0", "k1", "k2", "after")] == [True, True, False, True]


def test_damaged_journal_line_in_the_middle(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Store.open(path) as store:
        for n in range(3):
            store.commit(seen=seen(f"k{n}"))
    journal = path.with_name(path.name + ".journal")
    lines = journal.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"k1", b"kX")  # checksum no longer matches
    journal.write_bytes(b"\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="aggregator.store"), Store.open(path) as store:
        assert store.is_seen("k0")
        assert not store.is_seen("k1") and not store.is_seen("k2")  # after the gap: unusable
        store.commit(seen=seen("k3"))
    assert "damaged lines 2" in caplog.text
    assert "jumps from batch 1 to 3" in caplog.text
    assert any(p.name.startswith("aggregator.json.journal.corrupt-") for p in path.parent.iterdir())
    with Store.open(path) as store:
        assert store.is_seen("k0") and store.is_seen("k3")


def test_retention(path: Path) -> None:
    day = 86400.0
    with Store.open(path) as store:
        store.commit(
            feed="a", seen=seen("a-old", "a-listed", feed="a", at=0.0), present_keys=["a-listed"]
        )
        store.commit(feed="b", seen=seen("b-old", feed="b", at=0.0), present_keys=["b-gone?"])
        store.commit(feed="b", seen=seen("b-new", feed="b", at=9 * day), present_keys=["b-new"])
        store.commit(alerts=[entry("x")])
        store.mark_sent("x", message_id=1, sent_at=0.0)
        assert store.prune(now=5 * day, seen_ttl_s=7 * day) == 0  # nothing old enough yet
        assert store.prune(now=10 * day, seen_ttl_s=7 * day, sent_ttl_s=30 * day) == 2
        assert store.is_seen("a-listed")  # old, but its feed still lists it
        assert not store.is_seen("a-old") and not store.is_seen("b-old")
        assert store.is_seen("b-new")
        assert store.sent_record("x") is not None
        # a feed removed from the config no longer keeps its keys alive
        assert store.prune(now=10 * day, seen_ttl_s=7 * day, active_feeds=["b"]) == 1
        assert not store.is_seen("a-listed")
        assert store.prune(now=10 * day, seen_ttl_s=7 * day) == 0
        assert store.sent_record("x") is None  # sent records default to the seen ttl
        with pytest.raises(ValueError, match="negative"):
            store.prune(now=0.0, seen_ttl_s=-1)
    with Store.open(path) as store:
        assert store.is_seen("b-new") and not store.is_seen("a-listed")
        assert store.stats().seen == 1


def test_tinydb_reads_the_files(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(seen=seen("k1"))
        store.compact()
        store.commit(seen=seen("k2"))  # only in the journal
    plain = TinyDB(path, encoding="utf-8")
    try:
        assert [d["key"] for d in plain.table("seen").all()] == ["k1"]
    finally:
        plain.close()
    view = TinyDB(path, storage=JournalStorage, readonly=True)
    try:
        assert sorted(d["key"] for d in view.table("seen").all()) == ["k1", "k2"]
        meta = view.table("_meta").get(doc_id=1)
        assert isinstance(meta, dict) and meta["schema"] == 1
    finally:
        view.close()


def test_journal_compacts_when_it_grows_but_never_inside_a_commit(path: Path) -> None:
    with Store.open(path, compact_min_bytes=4096) as store:
        assert not store.compact_if_due()  # nothing to do yet
        for n in range(100):
            store.commit(seen=seen(*[f"k{n}-{i}" for i in range(10)]))
        grown = store.stats()
        assert grown.journal_bytes > max(4096, grown.snapshot_bytes)  # commits only append
        assert store.compact_if_due()
        stats = store.stats()
        assert stats.journal_bytes == 0 and stats.snapshot_bytes > 0
        assert not store.compact_if_due()
    with Store.open(path) as store:
        assert store.stats().seen == 1000


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["seen", "alert", "sent", "meta", "state", "reopen", "compact"]),
            st.integers(0, 6),
        ),
        max_size=30,
    )
)
def test_matches_a_model_across_reopens(tmp_path: Path, steps: list[tuple[str, int]]) -> None:
    path = tmp_path / f"model-{random.getrandbits(64)}" / "s.json"
    model_seen: set[str] = set()
    model_pending: list[str] = []
    model_meta: dict[str, int] = {}
    model_etag: dict[str, str] = {}
    store = Store.open(path, compact_min_bytes=512)
    try:
        for i, (op, n) in enumerate(steps):
            if op == "seen":
                store.commit(seen=seen(f"k{n}"))
                model_seen.add(f"k{n}")
            elif op == "alert":
                store.commit(alerts=[entry(f"a{n}", created_at=float(i))])
                if f"a{n}" not in model_pending and store.sent_record(f"a{n}") is None:
                    model_pending.append(f"a{n}")
            elif op == "sent":
                store.mark_sent(f"a{n}", message_id=n, sent_at=float(i))
                if f"a{n}" in model_pending:
                    model_pending.remove(f"a{n}")
            elif op == "meta":
                store.set_meta(f"m{n % 3}", n)
                model_meta[f"m{n % 3}"] = n
            elif op == "state":
                store.commit(feed=f"f{n % 2}", state=FeedState(etag=f"e{i}"))
                model_etag[f"f{n % 2}"] = f"e{i}"
            elif op == "reopen":
                store.close()
                store = Store.open(path, compact_min_bytes=512)
            else:
                store.compact()
            assert [e.id for e in store.pending()] == model_pending
        store.close()
        store = Store.open(path)
        assert {k for k in (f"k{n}" for n in range(7)) if store.is_seen(k)} == model_seen
        assert [e.id for e in store.pending()] == model_pending
        assert {k: store.get_meta(k) for k in model_meta} == model_meta
        assert {f: store.feed_state(f).etag for f in model_etag} == model_etag
    finally:
        store.close()
        shutil.rmtree(path.parent)


class _Crash(BaseException):
    """Stands for the process dying: nothing in the store catches a BaseException."""


_FILE_CALLS = ("open", "write", "fsync", "replace", "link", "ftruncate", "unlink")


def _crash_scenario(path: Path, done: list[str]) -> None:
    """Open, commit, rewrite the snapshot, send, reopen: records each step once it returned."""
    store = Store.open(path)
    try:
        done.append("open")
        store.commit(feed="f", state=FeedState(etag="e1"), seen=seen("k1"), alerts=[entry("a1")])
        done.append("k1")
        store.compact()
        store.mark_sent("a0", message_id=1, sent_at=1.0)
        done.append("sent a0")
        store.compact()
        store.commit(feed="f", state=FeedState(etag="e2"), seen=seen("k2"), alerts=[entry("a2")])
        done.append("k2")
        store.set_meta("m", 2)
        done.append("meta")
    finally:
        store.close()


def test_crash_at_every_file_operation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Die before each file-system call in turn (open, commits, snapshot rewrites, sends):
    every resulting set of files opens, with every step that returned and no half batch."""
    real = {name: getattr(os, name) for name in _FILE_CALLS}
    for crash_at in range(1, 1000):
        path = tmp_path / str(crash_at) / "s.json"
        with Store.open(path) as store:
            store.commit(
                feed="f", state=FeedState(etag="e0"), seen=seen("k0"), alerts=[entry("a0")]
            )
        calls = 0

        def counted(func: Callable[..., Any], crash_at: int = crash_at) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                nonlocal calls
                calls += 1
                if calls == crash_at:
                    raise _Crash
                return func(*args, **kwargs)

            return call

        for name in _FILE_CALLS:
            monkeypatch.setattr(os, name, counted(real[name]))
        done: list[str] = []
        try:
            _crash_scenario(path, done)
        except _Crash:
            pass
        finally:
            monkeypatch.undo()
        if calls < crash_at:
            break  # the scenario ran to its end: every call has had its crash
        json.loads(path.read_bytes())
        json.loads(path.with_name(path.name + ".bak").read_bytes())
        with Store.open(path) as store:
            where = f"crash before file call {crash_at}, after {done}"
            assert store.is_seen("k0"), where
            for n in (1, 2):
                assert store.is_seen(f"k{n}") == any(e.id == f"a{n}" for e in store.pending())
                if f"k{n}" in done:
                    assert store.is_seen(f"k{n}"), where
            etag = store.feed_state("f").etag
            assert etag == ("e2" if store.is_seen("k2") else "e1" if store.is_seen("k1") else "e0")
            if "sent a0" in done:
                assert store.sent_message_id("key-a0", "@news") == 1, where
            if "meta" in done:
                assert store.get_meta("m") == 2, where
    assert crash_at > 40  # the scenario really made that many file calls


# -- the kill test (issue 4) ----------------------------------------------------------------


class _Confirmed:
    """What the writer reported as done, across all its runs."""

    def __init__(self) -> None:
        self.batches: set[int] = set()
        self.sent: set[str] = set()
        self.meta = -1

    def record(self, line: str) -> bool:
        """Take one output line; True if it was a commit."""
        word, _, value = line.strip().partition(" ")
        if word == "committed":
            self.batches.add(int(value))
            return True
        if word == "sent":
            self.sent.add(value)
        elif word == "meta":
            self.meta = max(self.meta, int(value))
        return False


def _check_store(store: Store, confirmed: _Confirmed) -> None:
    """Every confirmed write is there, and every batch is whole or absent."""
    end = store_writer.first_free_batch(store)
    assert end > max(confirmed.batches, default=-1), (end, max(confirmed.batches))
    pending = {e.id for e in store.pending()}
    for n in range(end + 3):
        keys = store_writer.batch_keys(n)
        present = [store.is_seen(k) for k in keys]
        assert all(present) or not any(present), f"batch {n} is half there"
        if n < end:
            for entry_id in store_writer.alert_ids(n):
                queued = entry_id in pending
                sent = store.sent_record(entry_id) is not None
                assert queued != sent, f"alert {entry_id}: queued={queued} sent={sent}"
    if end:
        last = end - 1
        assert store.feed_state(store_writer.feed_of(last)).etag == f"e{last}"
    for entry_id in confirmed.sent:
        assert store.sent_record(entry_id) is not None, f"confirmed sent {entry_id} is missing"
    meta = store.get_meta("last")
    assert confirmed.meta < 0 or (isinstance(meta, int) and meta >= confirmed.meta)


def _run_writer_until_killed(
    path: Path, rng: random.Random, confirmed: _Confirmed, where: str
) -> None:
    """Start the writer, SIGKILL it somewhere, and record what it confirmed before dying."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    self_kill = rng.random() < 0.5
    args = [sys.executable, str(WRITER), str(path)]
    if self_kill:
        # Mostly inside commits and snapshot rewrites, sometimes while opening (recovery).
        after_open = rng.random() < 0.7
        args.append(f"+{rng.randint(1, 60)}" if after_open else str(rng.randint(1, 30)))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    try:
        if not self_kill:
            assert proc.stdout.readline().strip() == "opened", where
            # Most kills after a few commits, some right after open (recovery work).
            commits = 0 if rng.random() < 0.15 else rng.randint(1, 30)
            while commits:
                line = proc.stdout.readline()
                assert line, f"writer ended early ({where})"
                commits -= confirmed.record(line)
            spin_until = time.perf_counter() + rng.uniform(0, 0.003)
            while time.perf_counter() < spin_until:
                pass  # a random offset into whatever the writer is doing; not synchronisation
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for line in proc.stdout:  # lines printed before the kill were confirmed too
            confirmed.record(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, where


def test_kill_at_random_points_loses_nothing_confirmed(path: Path) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    confirmed = _Confirmed()
    started = time.monotonic()
    for kill in range(24):
        where = f"seed {seed}, kill {kill}"
        _run_writer_until_killed(path, rng, confirmed, where)
        if not path.exists():
            assert not confirmed.batches, where  # killed before the store was first written
            continue
        json.loads(path.read_bytes())  # the snapshot is always a whole file
        json.loads(path.with_name(path.name + ".bak").read_bytes())
        with Store.open(path, readonly=True) as reader:
            _check_store(reader, confirmed)
        with Store.open(path) as store:
            _check_store(store, confirmed)
    assert len(confirmed.batches) >= 20
    assert time.monotonic() - started < 15, "the kill test got slow"


# -- stories and edits (one alert per story) ---------------------------------------------------


def story(story_id: str, *, expires_at: float = 100.0, **messages: str) -> Story:
    """A story with an alert (entry id) in each chat given as chat=entry id."""
    return Story(
        id=story_id,
        created_at=1.0,
        expires_at=expires_at,
        fingerprint=Fingerprint(frozenset({"قصف", "روسي", "داعش"}), frozenset({"4"})),
        sources=(Source("الأفق نيوز", "https://a.example/1"), Source("B", None)),
        messages={
            chat: StoryMessage(
                entry=entry_id, html="<b>t</b>", plain="t", disable_preview=True, source="B"
            )
            for chat, entry_id in messages.items()
        },
    )


def edit(target: str, text: str, chat: str = "@news", at: float = 5.0) -> EditEntry:
    """An edit of the alert ``target``."""
    return EditEntry(target, chat, text, text.upper(), disable_preview=False, created_at=at)


def test_stories_round_trip_and_replace(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(stories=[story("s1", news="e1"), story("s2")])
        store.commit(stories=[story("s1", news="e1", other="e2")])
        assert store.stats().stories == 2
    with Store.open(path) as store:
        (s1,) = [s for s in store.stories() if s.id == "s1"]
        assert s1 == story("s1", news="e1", other="e2")
        assert s1.fingerprint.words == {"قصف", "روسي", "داعش"}


def test_expired_stories_are_pruned(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(stories=[story("old", expires_at=50.0), story("new", expires_at=500.0)])
        store.prune(now=100.0, seen_ttl_s=1e9)
        assert [s.id for s in store.stories()] == ["new"]
    with Store.open(path) as store:
        assert [s.id for s in store.stories()] == ["new"]


def test_retexts_change_only_pending_alerts(store: Store) -> None:
    store.commit(alerts=[entry("p"), entry("s")])
    store.mark_sent("s", message_id=3, sent_at=2.0)
    store.commit(retexts={"p": ("<b>new</b>", "new"), "s": ("x", "x"), "gone": ("y", "y")})
    (pending,) = store.pending()
    assert (pending.id, pending.text, pending.plain) == ("p", "<b>new</b>", "new")
    assert store.is_pending("p") and not store.is_pending("s")


def test_edits_are_queued_replaced_and_done(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(edits=[edit("a", "one"), edit("b", "two", chat="123", at=4.0)])
        store.commit(edits=[edit("a", "one, then more")])
        assert [(e.target, e.text) for e in store.pending_edits()] == [
            ("b", "two"),
            ("a", "one, then more"),
        ]
        assert [e.target for e in store.pending_edits("123")] == ["b"]
        store.edit_done("a", sent_text="one")  # an older text was sent: the newer one stays
        assert [e.target for e in store.pending_edits("@news")] == ["a"]
    with Store.open(path) as store:
        assert store.stats().edits == 2
        store.edit_done("a", sent_text="one, then more")
        store.edit_done("b")
        store.edit_done("unknown")
        assert store.pending_edits() == []
    with Store.open(path) as store, pytest.raises(ValueError, match="target and a chat"):
        store.commit(edits=[edit("", "x")])


def test_text_changed_during_the_send_becomes_an_edit(store: Store) -> None:
    store.commit(alerts=[entry("a"), entry("b"), entry("c")])
    sent_text = store.pending()[0].text
    store.commit(retexts={"a": ("<b>a</b> also: X", "a also: X")})
    store.mark_sent("a", message_id=5, sent_at=3.0, sent_text=sent_text)
    store.mark_sent("b", message_id=6, sent_at=3.0, sent_text=store.pending()[0].text)
    store.commit(retexts={"c": ("<b>c</b> also: Y", "c also: Y")})
    store.mark_sent("c", message_id=None, sent_at=3.0, sent_text="old")  # no id, no edit
    assert [(e.target, e.chat, e.text, e.plain) for e in store.pending_edits()] == [
        ("a", "@news", "<b>a</b> also: X", "a also: X")
    ]


def test_replace_chat_drops_its_edits(store: Store) -> None:
    store.commit(edits=[edit("a", "x", chat="-100"), edit("b", "y", chat="@keep")])
    store.replace_chat("-100", "-1001")
    assert [e.target for e in store.pending_edits()] == ["b"]


def test_seen_by_names_the_feed(store: Store) -> None:
    store.commit(seen=seen("k", feed="wire"))
    assert store.seen_by("k") == "wire"
    assert store.seen_by("other") is None


def test_feed_state_without_the_new_fields_loads_with_defaults(path: Path) -> None:
    with Store.open(path) as store:
        store.commit(feed="f", state=FeedState(identify_by="link", guid_problem="why"))
    with Store.open(path) as store:
        assert store.feed_state("f").identify_by == "link"
        store.compact()
    document = json.loads(path.read_text(encoding="utf-8"))
    for value in document["feeds"].values():
        del value["identify_by"], value["guid_problem"]  # as an older version wrote it
    path.write_text(json.dumps(document), encoding="utf-8")
    with Store.open(path) as store:
        assert store.feed_state("f") == FeedState()


def test_a_split_alerts_progress_survives_reopens_and_its_parts_count_for_pacing(
    path: Path,
) -> None:
    # How far a split alert got is on its outbox entry, so that delivery goes on with the next
    # part after a restart. Entries never split are stored as before the field existed.
    text = entry("long").text
    progress = SplitProgress(
        message_id=5, html=True, left=("<b>2</b>", "<b>3</b>"), done=1, sent_at=(100.0,), text=text
    )
    with Store.open(path) as store:
        store.commit(alerts=[entry("long"), entry("short")])
        store.record_part("long", progress)
        store.record_part("unknown", progress)  # no-op
    with Store.open(path) as store:  # from the journal
        assert [e.split for e in store.pending()] == [progress, None]
        assert store.recent_sends(0.0) == {"@news": [100.0]}
        store.compact()
    document = json.loads(path.read_text(encoding="utf-8"))
    assert ["split" in doc for doc in document["outbox"].values()] == [True, False]
    with Store.open(path) as store:  # from the snapshot
        assert [e.split for e in store.pending()] == [progress, None]
        assert progress.advanced(None) == dataclasses.replace(progress, left=("<b>3</b>",), done=2)
        after = progress.advanced(110.0)
        assert after is not None and after.advanced(120.0) is None, "part 3 was the last"
        store.record_part("long", after)
        store.mark_sent("long", message_id=5, sent_at=120.0, sent_text=text)
        record = store.sent_record("long")
        assert record is not None and record.message_id == 5
        assert store.recent_sends(105.0) == {"@news": [110.0, 120.0]}
    with Store.open(path) as store:
        assert store.recent_sends(0.0) == {"@news": [100.0, 110.0, 120.0]}


def test_a_split_alert_moved_to_a_supergroup_forgets_its_first_parts_message(
    path: Path,
) -> None:
    # Its first part stayed in the old group: the id of that message means another message (or
    # none) in the new one, so neither an edit nor the sent record may point there.
    progress = SplitProgress(
        message_id=5, html=True, left=("<b>2</b>",), done=1, sent_at=(100.0,), text="t"
    )
    with Store.open(path) as store:
        store.commit(alerts=[entry("long", "-555")])
        store.record_part("long", progress)
        store.replace_chat("-555", "-1005550")
        (moved,) = store.pending()
    assert moved.chat == "-1005550"
    assert moved.split == dataclasses.replace(progress, message_id=None)


def test_poll_times_written_by_a_commit_start_their_wait_afresh(path: Path) -> None:
    with Store.open(path) as store:
        polled = FeedState(etag="e1", initialized=True, last_success_at=100.0, next_poll_at=700.0)
        store.commit(feed="f", state=polled)
        assert store.note_poll("f", dataclasses.replace(polled, next_poll_at=710.0), now=100.0)
        # A commit of the feed writes its waiting poll times with it...
        store.commit(feed="f", state=dataclasses.replace(polled, etag="e2"))
        size = store.stats().journal_bytes
        # ...so the next unchanged poll waits POLL_FLUSH_S from now, not from the first one.
        later = dataclasses.replace(polled, etag="e2", next_poll_at=800.0)
        assert store.note_poll("f", later, now=100.0 + POLL_FLUSH_S + 10)
        assert store.stats().journal_bytes == size


def test_a_poll_that_found_nothing_new_is_kept_in_memory_then_written_once(path: Path) -> None:
    # An unchanged feed must cost almost nothing: its poll times wait in memory (no fsync'd
    # write per poll) and go to disk together, POLL_FLUSH_S later or on close.
    with Store.open(path) as store:
        store.commit(feed="f", state=FeedState(etag="e1", initialized=True))
        size = store.stats().journal_bytes
        polled = FeedState(etag="e1", initialized=True, last_success_at=100.0, next_poll_at=700.0)
        assert store.note_poll("f", polled, now=100.0)
        assert store.stats().journal_bytes == size, "no write of its own"
        assert store.feed_state("f").next_poll_at == 700.0
        assert store.note_poll("f", dataclasses.replace(polled, next_poll_at=760.0), now=130.0)
        assert store.stats().journal_bytes == size
        # An Expires at a fixed time gives a floor that shrinks from one 304 to the next.
        shrinking = dataclasses.replace(polled, next_poll_at=760.0, http_floor_s=1200.0)
        assert store.note_poll("f", shrinking, now=135.0)
        assert store.stats().journal_bytes == size
        # Anything else changed (here the validator) is not a poll time: commit it.
        assert not store.note_poll("f", dataclasses.replace(polled, etag="e2"), now=140.0)
        assert not store.note_poll("unknown", polled, now=140.0)
        assert store.note_poll("f", dataclasses.replace(polled, next_poll_at=800.0), now=160.0)
        assert store.stats().journal_bytes > size, "written POLL_FLUSH_S after the first"
        size = store.stats().journal_bytes
        assert store.note_poll("f", dataclasses.replace(polled, next_poll_at=900.0), now=170.0)
        assert store.stats().journal_bytes == size
    with Store.open(path) as store:
        assert store.feed_state("f").next_poll_at == 900.0, "written on close"
        assert store.feed_state("f").etag == "e1"
