"""The store's file format: a TinyDB snapshot plus an append-only journal of committed batches.

Why not rewrite one JSON file per commit: with 100,000 seen keys the document is ~14 MB and
serializing it takes ~25 ms even with orjson (~160 ms with ``json``). So a commit
appends one line to a journal and fsyncs it (~1-2 ms); the full document is rewritten only when
the journal has grown as large as the snapshot (at 100k keys: an ~80 ms rewrite about once per
630 commits of 50 keys + 5 alerts, which the daemon runs between polls: ``maybe_compact``), or
to recover from a failed write. Measured numbers: README, "Performance" (bench/bench_store.py).

Files, for a store at ``P``:

``P``
    The snapshot: a TinyDB document (``{"table": {"doc id": {...}}}``), readable by plain
    ``TinyDB(P, encoding="utf-8")``. Table ``_meta`` holds ``{"schema": 1, "seq": N}``: the file
    format version and the number of the last journal batch it includes.
``P.journal``
    One committed batch per line: ``<crc32 of payload, 8 hex> <payload>\\n`` where payload is
    ``{"seq": N, "ops": [[table, doc_id, doc or null], ...]}``. A line counts only once it is
    complete and its checksum matches: a torn last line was never confirmed to its caller.
``P.bak``, ``P.journal.bak``
    The previous snapshot and the journal that leads from it to the current snapshot, so that
    ``P.bak`` + ``P.journal.bak`` + ``P.journal`` rebuilds everything if ``P`` is damaged.
``P.lock``
    ``fcntl.flock`` target; holds the owner's pid for the error message.

Writing a snapshot (compaction): write ``P.tmp`` and fsync; hard-link the current ``P`` to
``P.bak`` (via ``P.bak.tmp`` + rename, so ``P.bak`` is always whole); rename ``P.tmp`` over ``P``;
rename ``P.journal`` to ``P.journal.bak``; fsync the directory. At every instant ``P`` is a whole
good file (old or new), journal lines already inside the snapshot are skipped by their ``seq``,
and a crash between any two steps loses nothing.

Replay at open: snapshot (or ``P.bak`` when ``P`` is unreadable), then the lines of
``P.journal.bak`` and ``P.journal`` whose seq follows on without a gap.

If an append fails, the line may be half on disk (or whole, if only fsync failed), so the next
write first rewrites the snapshot with that batch's seq burned and starts a fresh journal: a
batch its caller was told failed is then never replayed after one that succeeded.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tinydb.storages import Storage

from .errors import StoreError, StoreLockedError

log = logging.getLogger("aggregator.store")

SCHEMA_VERSION = 1
META_TABLE = "_meta"
# Below this size the journal is never compacted: replaying 1 MiB takes ~10 ms.
DEFAULT_COMPACT_MIN_BYTES = 1 << 20

# orjson, not json: at 100,000 seen keys it writes the 14 MB snapshot in ~25 ms instead of
# ~160 ms, which is what keeps a compaction near the 50 ms flush budget. The passthrough options
# make it refuse datetimes and dataclasses as the json module does, instead of converting them.
_DUMPS_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: object) -> bytes:
    """Compact UTF-8 JSON; TypeError for anything JSON cannot represent."""
    return orjson.dumps(value, option=_DUMPS_OPTIONS)


Document = dict[str, dict[str, dict[str, Any]]]
# One change to one TinyDB document: (table, doc id, new document or None to delete it).
Op = tuple[str, str, dict[str, Any] | None]


class _Unreadable(Exception):
    """A snapshot file is missing or damaged (not a newer schema, not a permission problem)."""


@dataclass
class _Journal:
    """What one journal file holds: its good batches and where its clean part ends."""

    batches: list[tuple[int, list[Op]]] = field(default_factory=list)
    damaged_lines: list[int] = field(default_factory=list)
    clean_end: int = 0  # offset just past the last good line
    size: int = 0


@dataclass
class _Loaded:
    doc: Document
    seq: int  # last batch applied
    high_seq: int  # highest batch number found anywhere
    source: str  # "current", "backup" or "new"
    current_problem: str | None = None
    lost: str | None = None  # a gap in the journals, described


def apply_ops(doc: Document, ops: list[Op]) -> None:
    """Apply one batch of document changes in place."""
    for table, doc_id, value in ops:
        if value is None:
            doc.get(table, {}).pop(doc_id, None)
        else:
            doc.setdefault(table, {})[doc_id] = value


def _empty_document() -> Document:
    return {META_TABLE: {"1": {"schema": SCHEMA_VERSION, "seq": 0}}}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_file_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_as_backup(src: Path, dst: Path, data: bytes | None = None) -> None:
    """Make ``dst`` a whole copy of ``src`` (of ``data`` if given), replacing it atomically.

    A hard link is enough because ``src`` is never written in place, only replaced.
    """
    tmp = dst.with_name(dst.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    if data is None:
        with contextlib.suppress(OSError):
            if os.path.samefile(src, dst):  # rename() between two links to one file is a no-op
                return
        try:
            os.link(src, tmp)
        except OSError:  # a filesystem without hard links: copy instead
            data = src.read_bytes()
    if data is not None:
        _write_file_durably(tmp, data)
    os.replace(tmp, dst)


def _aside_name(path: Path, label: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.{label}-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{label}-{stamp}-{n}")
        n += 1
    return candidate


def _decode_line(raw: bytes) -> tuple[int, list[Op]] | None:
    """A journal line's batch, or None if the line is torn or damaged."""
    if len(raw) < 10 or raw[8:9] != b" ":
        return None
    payload = raw[9:]
    try:
        if int(raw[:8], 16) != zlib.crc32(payload):
            return None
        batch = orjson.loads(payload)
        seq, ops = batch["seq"], batch["ops"]
    except (ValueError, KeyError, TypeError):
        return None
    # The checksum matched, so this process wrote the line: its ops have the shape of Op.
    if not isinstance(seq, int) or not isinstance(ops, list):
        return None
    return seq, ops


def _read_journal(path: Path, after_seq: int = -1) -> _Journal:
    """The batches of a journal file numbered above ``after_seq``.

    Read from the end, because batch numbers grow along the file: a journal whose batches are
    all inside the snapshot costs one line to rule out.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Journal()
    except OSError as exc:
        raise StoreError(f"cannot read store journal {path}: {exc.strerror or exc}") from exc
    journal = _Journal(size=len(data))
    lines = data.split(b"\n")
    lines.pop()  # bytes after the last newline: a torn write, never confirmed
    ends = list(itertools.accumulate(len(raw) + 1 for raw in lines))
    for index in range(len(lines) - 1, -1, -1):
        batch = _decode_line(lines[index])
        if batch is None:
            # Damaged lines after the last good one are a torn tail too (a crash can leave
            # garbage in a file's new last block); only those before a good one are damage.
            if journal.clean_end:
                journal.damaged_lines.append(index + 1)
            continue
        if not journal.clean_end:
            journal.clean_end = ends[index]
        if batch[0] <= after_seq:
            break
        journal.batches.append(batch)
    journal.batches.reverse()
    journal.damaged_lines.reverse()
    return journal


class JournalStorage(Storage):
    """A TinyDB storage that keeps the whole document in memory, journals batches durably,
    and rewrites the snapshot atomically; holds an exclusive lock unless read-only.

    ``TinyDB(path, storage=JournalStorage, readonly=True)`` gives a TinyDB view of a store.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        readonly: bool = False,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.compact_min_bytes = compact_min_bytes
        self.backup_path = self._sibling(".bak")
        self.journal_path = self._sibling(".journal")
        self.journal_backup_path = self._sibling(".journal.bak")
        self.lock_path = self._sibling(".lock")
        self.seq = 0
        self.journal_bytes = 0
        self.snapshot_bytes = 0
        self._high_seq = 0
        self._must_compact = False
        self._compact_retry_at = 0
        self._doc: Document | None = None
        self._main_journal = _Journal()
        self._lock_fd: int | None = None
        if not readonly:
            self._lock()

    def _sibling(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    # -- lock ---------------------------------------------------------------------------------

    def _lock(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store's folder or lock file {self.lock_path}: "
                f"{exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"store {self.path} is locked by another aggregator process (pid {owner}); "
                "stop it first or point [storage].path elsewhere"
            ) from None
        try:
            with contextlib.suppress(OSError):  # the pid is only for the message above
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock; the in-memory document stays readable."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the flock
            self._lock_fd = None

    # -- tinydb.Storage -----------------------------------------------------------------------

    def read(self) -> Document:
        """The whole document (snapshot + journal), loaded from disk on the first call."""
        if self._doc is None:
            self._doc = self._load()
        return self._doc

    def write(self, data: Document) -> None:
        """Replace the whole document and write it as a new snapshot (TinyDB's write path)."""
        self._check_writable()
        self._doc = data
        self.compact()

    # -- writes -------------------------------------------------------------------------------

    def append(self, ops: list[Op]) -> None:
        """Durably journal one batch; the caller applies it to the document after this returns.

        Raises StoreError when the batch could not be made durable; TypeError when a document
        holds a value JSON cannot represent (nothing is written then).
        """
        self._check_writable()
        if self._must_compact:
            self.compact()
        seq = self.seq + 1
        try:
            payload = dumps({"seq": seq, "ops": ops})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"store batch cannot be saved as JSON: {exc}") from exc
        line = b"%08x %s\n" % (zlib.crc32(payload), payload)
        self._high_seq = max(self._high_seq, seq)
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.journal_bytes == 0:  # the journal may be new: make its name durable
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self._must_compact = True
            raise StoreError(
                f"cannot write store journal {self.journal_path}: {exc.strerror or exc}"
            ) from exc
        self.seq = seq
        self.journal_bytes += len(line)

    def maybe_compact(self) -> bool:
        """Rewrite the snapshot once the journal is as big as it (True if it did); a failure
        is only logged."""
        limit = max(self.compact_min_bytes, self.snapshot_bytes, self._compact_retry_at)
        if self.journal_bytes <= limit:
            return False
        try:
            self.compact()
        except StoreError as exc:
            # Not retried on every call: a full disk would make each one slow for nothing.
            self._compact_retry_at = self.journal_bytes + self.compact_min_bytes
            log.warning("%s; will retry later (the journal keeps every change safe)", exc)
            return False
        return True

    def compact(self) -> None:
        """Write the in-memory document as the new snapshot and start an empty journal."""
        self._check_writable()
        doc = self.read()
        seq = max(self.seq, self._high_seq)
        doc[META_TABLE] = {"1": {"schema": SCHEMA_VERSION, "seq": seq}}
        data = dumps(doc)
        tmp = self._sibling(".tmp")
        directory = self.path.parent
        try:
            _write_file_durably(tmp, data)
            if self.path.exists():
                _keep_as_backup(self.path, self.backup_path)
            else:  # a new or recovered store: its backup is a separate copy of the new one
                _keep_as_backup(tmp, self.backup_path, data)
            os.replace(tmp, self.path)
            # From here the snapshot on disk may already include batch `seq`.
            self.seq = seq
            _fsync_dir(directory)
            if self.journal_path.exists():
                os.replace(self.journal_path, self.journal_backup_path)
            _fsync_dir(directory)
        except OSError as exc:
            raise StoreError(
                f"cannot write store snapshot {self.path}: {exc.strerror or exc}"
            ) from exc
        self.journal_bytes = 0
        self.snapshot_bytes = len(data)
        self._must_compact = False
        self._compact_retry_at = 0

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"store {self.path} is open read-only")
        if self._lock_fd is None:
            raise StoreError(f"store {self.path} is closed")

    # -- load ---------------------------------------------------------------------------------

    def _load(self) -> Document:
        # A read-only reader can race a writer's compaction (snapshot and journal renamed
        # between our reads); that shows up as a gap, so read again.
        for _ in range(5 if self.readonly else 1):
            loaded = self._load_once()
            if loaded.lost is None:
                break
        self.seq = loaded.seq
        self._high_seq = loaded.high_seq
        if loaded.source == "backup":
            self._recover_from_backup(loaded)
        if loaded.lost is not None:
            self._set_journals_aside(loaded.lost)
        if not self.readonly and (loaded.source != "current" or loaded.lost is not None):
            if loaded.source == "new":  # an empty file must not become the backup
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            self._doc = loaded.doc
            self.compact()
        return loaded.doc

    def _load_once(self) -> _Loaded:
        try:
            doc, seq, size = self._read_snapshot(self.path)
            loaded = _Loaded(doc, seq, seq, "current")
        except _Unreadable as problem:
            if str(problem) == "missing" and not self.backup_path.exists():
                return self._new_store()
            if str(problem) == "empty file" and self._nothing_else_exists():
                return self._new_store()  # e.g. created by `touch` or by plain TinyDB
            try:
                doc, seq, size = self._read_snapshot(self.backup_path)
            except _Unreadable as backup_problem:
                raise StoreError(
                    f"store {self.path} is unreadable ({problem}) and so is its previous good "
                    f"copy {self.backup_path} ({backup_problem}). To start with an empty store, "
                    f"move {self.path}, {self.backup_path}, {self.journal_path} and "
                    f"{self.journal_backup_path} aside; note that an empty store has forgotten "
                    "every item already seen, so each feed's first poll is a backfill again and "
                    "may re-alert recent items"
                ) from None
            loaded = _Loaded(doc, seq, seq, "backup", current_problem=str(problem))
        self.snapshot_bytes = size
        self._replay(loaded)
        return loaded

    def _new_store(self) -> _Loaded:
        for path in (self.journal_path, self.journal_backup_path):
            if _read_journal(path).batches:
                raise StoreError(
                    f"store {self.path} and its copy {self.backup_path} are missing but journal "
                    f"{path} is not; restore the store file, or move the journals aside to "
                    "start with an empty store (which re-alerts each feed's backfill)"
                )
        return _Loaded(_empty_document(), 0, 0, "new")

    def _nothing_else_exists(self) -> bool:
        return not any(
            p.exists() for p in (self.backup_path, self.journal_path, self.journal_backup_path)
        )

    def _read_snapshot(self, path: Path) -> tuple[Document, int, int]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _Unreadable("missing") from None
        except OSError as exc:
            raise StoreError(f"cannot read store {path}: {exc.strerror or exc}") from exc
        if not data:
            raise _Unreadable("empty file")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:  # also for bytes that are not UTF-8
            raise _Unreadable(f"invalid JSON: {exc}") from None
        if not isinstance(doc, dict) or not all(
            isinstance(t, dict) and all(isinstance(d, dict) for d in t.values())
            for t in doc.values()
        ):
            raise _Unreadable("not a TinyDB document of tables")
        meta = doc.get(META_TABLE, {}).get("1")
        schema = meta.get("schema") if meta else None
        seq = meta.get("seq", 0) if meta else 0
        if not isinstance(schema, int) or schema < 1 or not isinstance(seq, int) or seq < 0:
            raise _Unreadable(f'no valid {META_TABLE} record {{"schema": N, "seq": N}}')
        if schema > SCHEMA_VERSION:
            raise StoreError(
                f"store {path} has schema version {schema}, newer than this aggregator "
                f"understands ({SCHEMA_VERSION}); run a newer aggregator, or point "
                "[storage].path elsewhere"
            )
        return doc, seq, len(data)

    def _replay(self, loaded: _Loaded) -> None:
        for path in (self.journal_backup_path, self.journal_path):
            journal = _read_journal(path, after_seq=loaded.seq)
            if path == self.journal_path:
                self._main_journal = journal
            if journal.damaged_lines:
                log.warning(
                    "store journal %s has damaged lines %s; skipped them",
                    path,
                    ", ".join(map(str, journal.damaged_lines[:10])),
                )
            for seq, ops in journal.batches:
                loaded.high_seq = max(loaded.high_seq, seq)
                if seq <= loaded.seq:
                    continue
                if seq != loaded.seq + 1 and loaded.lost is None:
                    loaded.lost = (
                        f"journal {path} jumps from batch {loaded.seq} to {seq}; batches "
                        f"after {loaded.seq} could not be recovered"
                    )
                if loaded.lost is None:
                    apply_ops(loaded.doc, ops)
                    loaded.seq = seq
        journal = self._main_journal
        self.journal_bytes = journal.clean_end
        if not self.readonly and journal.size > journal.clean_end and loaded.lost is None:
            self._truncate_torn_tail(journal)

    def _truncate_torn_tail(self, journal: _Journal) -> None:
        # A later append must start on a fresh line, or it would be read as part of the torn one.
        log.info(
            "store journal %s ends with an unfinished write (%d bytes, never confirmed); "
            "dropped it",
            self.journal_path,
            journal.size - journal.clean_end,
        )
        try:
            fd = os.open(self.journal_path, os.O_WRONLY)
            try:
                os.ftruncate(fd, journal.clean_end)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StoreError(
                f"cannot repair store journal {self.journal_path}: {exc.strerror or exc}"
            ) from exc

    def _recover_from_backup(self, loaded: _Loaded) -> None:
        if self.readonly:
            log.warning(
                "store %s is unreadable (%s); loaded previous good copy %s (read-only: "
                "nothing moved)",
                self.path,
                loaded.current_problem,
                self.backup_path,
            )
            return
        kept = "(it was missing)"
        if self.path.exists():
            aside = _aside_name(self.path, "corrupt")
            try:
                os.replace(self.path, aside)
            except OSError as exc:
                raise StoreError(
                    f"cannot move unreadable store {self.path} aside: {exc.strerror or exc}"
                ) from exc
            kept = str(aside)
        log.warning(
            "store %s is unreadable (%s); loaded previous good copy %s and its journals "
            "(up to batch %d); kept the unreadable file as %s",
            self.path,
            loaded.current_problem,
            self.backup_path,
            loaded.seq,
            kept,
        )

    def _set_journals_aside(self, lost: str) -> None:
        if self.readonly:
            log.warning("store %s: %s", self.path, lost)
            return
        kept = []
        for path in (self.journal_backup_path, self.journal_path):
            if path.exists():
                aside = _aside_name(path, "corrupt")
                try:
                    os.replace(path, aside)
                except OSError as exc:
                    raise StoreError(f"cannot move damaged journal {path} aside: {exc}") from exc
                kept.append(str(aside))
        log.warning("store %s: %s; kept the journals as %s", self.path, lost, ", ".join(kept))
