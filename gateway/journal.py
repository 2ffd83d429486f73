"""The audit journal: an append-only, checksummed, write-ahead log (DESIGN.md §6).

Theory of operation
-------------------
Every inbound message, decision, outbound message, exchange event and admin action is appended
here *before* its effect is visible to anyone. The gateway rebuilds its book on restart by
replaying the journal, and the Kafka outbox (``gateway.kafka_bus``) publishes from it.

On disk a journal is a directory of *segments* named for the sequence number of their first
record (``00000000000000000001.journal``, 20 digits so names sort numerically). A segment is a run
of records, each::

    length u32 BE | crc32 u32 BE | seq u64 BE | body (msgpack, ``length`` bytes)

``crc32`` (zlib's, stdlib) covers the length field, the sequence number and the body, so a flipped
bit anywhere in a record is caught. Sequence numbers start at 1 and are gap-free and monotonic
across segments: record *n* of a segment has sequence ``first + n``. The body is one of the
tagged ``JournalRecord`` structs below (``array_like``: new fields go at the end with defaults,
so old records keep decoding).

Writing (``Journal``) is synchronous, one ``os.write`` per ``append`` (or per ``append_many``
batch): when it returns the bytes are in the OS, and on disk if the ``FsyncPolicy`` says so:
``record`` fsyncs every append (group commit for ``append_many``), ``interval`` fsyncs when an
append finds the last fsync older than ``interval_ms`` and ``run_flusher()`` (an optional asyncio
task) covers the idle tail, ``os`` never fsyncs. No threads: the gateway is one asyncio loop and a
thread would race rotation and close. A segment is rotated when the next record would take it past
``segment_bytes``; the old one is fsynced first (except under ``os``) so a segment is complete
before the next exists. A lock file keeps a second writer out.

Reading (``JournalReader``) checks every header, checksum and sequence number. It never
misreads: at the first problem it stops and records a ``JournalDamage`` (file, offset, expected
sequence, what was wrong). In *follow* mode (the outbox tails a live journal) an incomplete record
at the end of the newest segment is "not written yet", and iterating again resumes there.

Opening a journal scans the newest segment; a damaged tail (torn write, flipped bit, zero fill)
is reported (``Journal.recovered``, and logged), its bytes are copied to
``<segment>.<offset>.damaged`` as evidence, and the segment is truncated so appends continue with
the next sequence number. Damage in an older segment is not a tail: ``verify`` finds it and a
person decides. ``prune`` deletes whole old segments past the retention period (business records:
5 years, rule 18 of the security rules). Inspection (``fengkong journal verify|dump|prune``) lives in ``gateway.journal_tools``.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from time import monotonic_ns
from typing import Any, Literal

import msgspec
import structlog

from gateway.protocol import ExecReport, Message

log = structlog.get_logger(__name__)

_HEADER = struct.Struct(">IIQ")  # length, crc32, seq
_LENGTH_SEQ = struct.Struct(">IQ")
HEADER_SIZE = _HEADER.size
MAX_RECORD = 16 << 20  # a larger length field is damage, not a record
SUFFIX = ".journal"
DEFAULT_SEGMENT_BYTES = 64 << 20
BUSINESS_RETENTION_DAYS = 1826  # >= 5 years (security rules, rule 18)
CHINA_TZ = timezone(timedelta(hours=8), "CST")  # naive CLI times are exchange time; no DST
_NS_PER_DAY = 86_400 * 10**9
_CHUNK = 256 << 10  # read size; a tailing reader re-reads at most this per batch

# Session numbers in records: > 0 a client session, 0 none (alerts for risk officers),
# < 0 an exchange link (-1 the default link).
NO_SESSION = 0
EXCHANGE_LINK = -1


class _Record(msgspec.Struct, array_like=True, tag=True, frozen=True, gc=False):
    ts_ns: int  # wall clock, ns since the epoch, when the gateway saw or did it


class Inbound(_Record, tag="in"):
    """A message received on a session; ``raw`` keeps the bytes of a frame that did not decode."""

    session: int
    msg: Message | None = None
    raw: bytes = b""


class Decision(_Record, tag="dec"):
    """The risk engine's verdict on an order: ``reason`` 0 (ACCEPTED) or a ``Reason`` code."""

    session: int
    cl_ord_id: str
    account: str
    symbol: str
    reason: int
    text: str = ""
    order_ref: int = 0  # the engine's order reference (0 when rejected)


class Outbound(_Record, tag="out"):
    """A message sent to a session (or, with a negative session, to an exchange link)."""

    session: int
    msg: Message


class ExchangeEvent(_Record, tag="exch"):
    """An execution report that came from the exchange."""

    report: ExecReport
    link: str = ""


class AdminAction(_Record, tag="admin"):
    """An operator's (or the engine's) kill, reset, limit or config change."""

    operator: str
    action: str
    scope_kind: str = "firm"  # firm | account | group | session | instrument | product
    scope_value: str = ""
    args: dict[str, Any] = {}
    reason: str = ""
    emergency: bool = False
    command_id: str = ""  # a Kafka control command's id, so replay knows it was applied


class State(_Record, tag="state"):
    """A snapshot, start of day or other state marker; ``data`` is its owner's encoding."""

    kind: str
    data: bytes = b""


JournalRecord = Inbound | Decision | Outbound | ExchangeEvent | AdminAction | State
RECORD_TYPES: tuple[type[_Record], ...] = JournalRecord.__args__  # type: ignore[attr-defined]
_RECORD_TYPE_SET = frozenset(RECORD_TYPES)  # exact types: a set lookup, cheaper than isinstance


def _not_a_record(record: object) -> TypeError:
    return TypeError(f"journal records are {', '.join(t.__name__ for t in RECORD_TYPES)}; "
                     f"got {type(record).__name__}")


class FsyncPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When appended bytes are forced to disk (a config Struct: ``[journal.fsync]``)."""

    mode: Literal["record", "interval", "os"] = "interval"
    interval_ms: int = 5

    @classmethod
    def every_record(cls) -> FsyncPolicy:
        return cls("record")

    @classmethod
    def every(cls, interval_ms: int) -> FsyncPolicy:
        return cls("interval", interval_ms)

    @classmethod
    def never(cls) -> FsyncPolicy:
        return cls("os")


class JournalDamage(msgspec.Struct, frozen=True):
    """Where reading stopped and why. ``kind``: torn | length | checksum | sequence | decode | gap."""

    segment: str
    offset: int
    seq: int  # the sequence number expected at that point
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.segment} at byte {self.offset} (record {self.seq}): {self.detail}"


class JournalError(Exception):
    """The journal cannot do what was asked; the text says what, where and what to do."""


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def list_segments(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(first sequence, path) of every segment, oldest first; other files are ignored."""
    out = []
    for p in Path(directory).iterdir():
        stem = p.name[: -len(SUFFIX)]
        if p.name.endswith(SUFFIX) and len(stem) == 20 and stem.isdigit():
            out.append((int(stem), p))
    out.sort()
    return out


class JournalReader:
    """Iterate ``(seq, record)`` from ``from_seq`` on; after iterating, ``damage`` says why it stopped
    early (None at a clean end). ``follow=True`` tails a live journal: iterate again for more."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        from_seq: int = 0,
        *,
        follow: bool = False,
        where: Callable[[JournalRecord], bool] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.follow = follow
        self.damage: JournalDamage | None = None
        self.next_seq = from_seq  # sequence of the next record in the file
        self._from = from_seq
        self._where = where
        self._first: int | None = None  # current segment
        self._path: Path | None = None
        self._offset = 0
        self._decode = msgspec.msgpack.Decoder(JournalRecord).decode

    def __iter__(self) -> Iterator[tuple[int, JournalRecord]]:
        while self.damage is None:
            if self._path is None and not self._locate():
                return
            status = yield from self._read_segment()
            if status == "damage":
                return
            later = [(f, p) for f, p in list_segments(self.directory) if f > self._first]
            if not later:
                if status == "torn" and not self.follow:
                    self._fail("torn", "the last record is incomplete (torn write)")
                return
            # A later segment exists, so this one is finished. Read it again once: records may
            # have landed between our end-of-file and the writer's rotation.
            if status == "torn" or later[0][0] != self.next_seq:
                status = yield from self._read_segment()
                if status == "damage":
                    return
                if status == "torn":
                    self._fail("torn", "incomplete record at the end of a segment that is not the newest")
                    return
                if later[0][0] != self.next_seq:
                    self._fail("gap", f"segment {later[0][1].name} starts at {later[0][0]}, expected {self.next_seq}")
                    return
            self._first, self._path = later[0]
            self._offset = 0

    def _locate(self) -> bool:
        segs = list_segments(self.directory)
        if not segs:
            return False
        if self.next_seq < segs[0][0]:
            if self._from > 0:
                log.warning("journal.start_pruned", directory=str(self.directory),
                            asked=self._from, first=segs[0][0])
            self._first, self._path = segs[0]
        else:
            self._first, self._path = [s for s in segs if s[0] <= self.next_seq][-1]
        self.next_seq = self._first
        self._offset = 0
        return True

    def _fail(self, kind: str, detail: str) -> None:
        self.damage = JournalDamage(str(self._path), self._offset, self.next_seq, kind, detail)

    def _read_segment(self) -> Iterator[tuple[int, JournalRecord]]:
        """Yield this segment's records from ``_offset``; return 'end', 'torn' or 'damage'."""
        assert self._path is not None
        try:
            f = open(self._path, "rb")  # noqa: SIM115 - closed in finally across yields
        except FileNotFoundError:
            self._fail("gap", "segment file vanished while reading (pruned?)")
            return "damage"
        try:
            f.seek(self._offset)
            buf = b""
            pos = 0
            while True:
                need = HEADER_SIZE
                if len(buf) - pos >= HEADER_SIZE:
                    length, crc, seq = _HEADER.unpack_from(buf, pos)
                    if length == 0 or length > MAX_RECORD:
                        self._fail("length", f"implausible record length {length}")
                        return "damage"
                    need = HEADER_SIZE + length
                if len(buf) - pos < need:
                    chunk = f.read(max(_CHUNK, need))
                    if not chunk:
                        return "end" if len(buf) == pos else "torn"
                    buf = buf[pos:] + chunk
                    pos = 0
                    continue
                end = pos + need
                with memoryview(buf) as mv:
                    if zlib.crc32(mv[pos + 8 : end], zlib.crc32(mv[pos : pos + 4])) != crc:
                        self._fail("checksum", "checksum mismatch (corrupt bytes)")
                        return "damage"
                    if seq != self.next_seq:
                        self._fail("sequence", f"sequence number {seq}, expected {self.next_seq}")
                        return "damage"
                    try:
                        record = self._decode(mv[pos + HEADER_SIZE : end])
                    except msgspec.DecodeError as err:
                        self._fail("decode", f"checksum is right but the body does not decode: {err}")
                        return "damage"
                pos = end
                self._offset += need
                self.next_seq += 1
                if seq >= self._from and (self._where is None or self._where(record)):
                    yield seq, record
        finally:
            f.close()


class Journal:
    """The writer. Use ``Journal.open``; one writer per directory (a lock file enforces it)."""

    def __init__(self, directory: Path, fsync: FsyncPolicy, segment_bytes: int, lock_fd: int) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.recovered: JournalDamage | None = None  # the damaged tail found and cut on open
        self.quarantined: Path | None = None  # where the cut bytes were kept
        self._lock_fd = lock_fd
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._next = 1
        self._dirty = False
        self._broken: str | None = None  # why appends are refused (closed, failed write)
        self._last_sync = 0
        self._interval_ns = fsync.interval_ms * 1_000_000
        self._background_sync = False  # run_flusher owns interval fsyncs (off the event loop)
        self._encode = msgspec.msgpack.Encoder().encode

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> Journal:
        """Open (creating if needed) the journal in ``directory``, cutting away a damaged tail."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(d / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalError(f"journal {d} is already open by another writer (LOCK is held)") from None
        j = cls(d, fsync or FsyncPolicy(), max(1, segment_bytes), lock_fd)
        try:
            j._recover()
        except BaseException:
            os.close(lock_fd)
            raise
        return j

    def _recover(self) -> None:
        segs = list_segments(self.directory)
        while segs:
            first, path = segs[-1]
            reader = JournalReader(self.directory, first)
            for _ in reader:
                pass
            size = path.stat().st_size
            if reader.damage is not None and self.recovered is None:
                self.recovered = reader.damage
                self.quarantined = path.with_name(f"{path.name}.{reader._offset}.damaged")
                with open(path, "rb") as src, open(self.quarantined, "wb") as dst:
                    src.seek(reader._offset)
                    dst.write(src.read())
                    os.fsync(dst.fileno())
                log.warning("journal.damaged_tail_truncated", damage=str(reader.damage),
                            cut_bytes=size - reader._offset, kept_in=str(self.quarantined))
            if reader._offset < size:
                os.truncate(path, reader._offset)
            if reader._offset == 0 and len(segs) > 1:
                path.unlink()  # an empty newest segment: its predecessor is the real tail
                segs.pop()
                continue
            self._path, self._size, self._next = path, reader._offset, reader.next_seq
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            break
        _fsync_dir(self.directory)

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def last_seq(self) -> int:
        """Sequence of the newest record (0 when the journal is empty)."""
        return self._next - 1

    def append(self, record: JournalRecord) -> int:
        """Write one record (write-ahead) and return its sequence number."""
        if self._broken:
            raise JournalError(self._broken)
        out = bytearray()
        self._frame(record, self._next, out)
        if self._fd < 0 or (self._size > 0 and self._size + len(out) > self.segment_bytes):
            self._rotate()
        self._write(out, 1)
        self._after_write()
        return self._next - 1

    def append_many(self, records: Iterable[JournalRecord]) -> int:
        """Write several records with one write and at most one fsync per segment (group commit);
        return the last sequence number."""
        if self._broken:
            raise JournalError(self._broken)
        records = list(records)
        for record in records:  # refuse a bad batch before writing any of it
            if type(record) not in _RECORD_TYPE_SET:
                self._frame(record, 0, bytearray())  # raises the TypeError with its explanation
        out = bytearray()
        count = 0
        for record in records:
            start = len(out)
            self._frame(record, self._next + count, out)
            over = self._size + len(out) > self.segment_bytes and self._size + start > 0
            if self._fd < 0 or over:
                tail = out[start:]
                del out[start:]
                if out:
                    self._write(out, count)
                    count = 0
                self._rotate()
                out = tail
            count += 1
        if count:
            self._write(out, count)
            self._after_write()
        return self._next - 1

    def _frame(self, record: JournalRecord, seq: int, out: bytearray) -> None:
        if type(record) not in _RECORD_TYPE_SET:
            raise _not_a_record(record)
        try:
            body = self._encode(record)
        except (TypeError, OverflowError) as err:
            raise TypeError(f"{type(record).__name__} cannot be journaled: {err}") from err
        length = len(body)
        if length > MAX_RECORD:
            raise JournalError(f"record {seq} is {length} bytes; the maximum is {MAX_RECORD}")
        # The CRC covers length, seq and body: the same bytes as in the file, minus the CRC.
        # (Encoding into ``out`` in place measured slower: the copies of ~150 bytes cost less
        # than the extra Python steps.)
        crc = zlib.crc32(body, zlib.crc32(_LENGTH_SEQ.pack(length, seq)))
        out += _HEADER.pack(length, crc, seq)
        out += body

    def _write(self, data: bytearray, count: int) -> None:
        done = 0
        try:
            with memoryview(data) as mv:
                while done < len(data):
                    done += os.write(self._fd, mv[done:])
        except OSError as err:
            # Leave no partial record behind: cut back to the last whole one.
            text = (f"writing to {self._path} failed ({err}); records from {self._next} on were not "
                    "journaled: stop accepting orders")
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = text + " (and the partial record could not be cut; reopen to recover)"
            raise JournalError(text) from err
        self._size += len(data)
        self._next += count
        self._dirty = True

    def _after_write(self) -> None:
        mode = self.fsync.mode
        if mode == "record":
            self.flush()
        elif (mode == "interval" and not self._background_sync
              and monotonic_ns() - self._last_sync >= self._interval_ns):
            self.flush()

    def _rotate(self) -> None:
        if self._fd >= 0:
            if self.fsync.mode != "os":
                os.fdatasync(self._fd)  # a segment is complete on disk before the next exists
            os.close(self._fd)
            self._fd = -1
        self._path = self.directory / segment_name(self._next)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._size = 0
        self._dirty = False
        if self.fsync.mode != "os":
            _fsync_dir(self.directory)

    def flush(self) -> None:
        """Force everything appended so far to disk (whatever the policy)."""
        if self._dirty and self._fd >= 0:
            os.fdatasync(self._fd)
            self._dirty = False
        self._last_sync = monotonic_ns()

    async def run_flusher(self) -> None:
        """For ``interval`` mode: fsync every ``interval_ms`` in a worker thread, so a slow disk
        (an fdatasync can take hundreds of ms on shared storage) never stalls the event loop;
        while it runs, appends no longer fsync inline. The owner runs this as a task and
        cancels it before ``close()``; it returns at once in the other modes."""
        if self.fsync.mode != "interval":
            return
        self._background_sync = True
        try:
            while self._fd >= 0:
                await asyncio.sleep(self.fsync.interval_ms / 1000)
                if self._dirty and self._fd >= 0:
                    fd, self._dirty = self._fd, False
                    try:
                        await asyncio.to_thread(os.fdatasync, fd)
                    except OSError:
                        # The segment was rotated or closed meanwhile: both fsync it themselves.
                        pass
                    self._last_sync = monotonic_ns()
        finally:
            self._background_sync = False

    def read(self, from_seq: int = 0) -> JournalReader:
        return JournalReader(self.directory, from_seq)

    def prune(self, now_ns: int, retention_days: int = BUSINESS_RETENTION_DAYS) -> list[Path]:
        return prune(self.directory, now_ns, retention_days)

    def close(self) -> None:
        self._broken = f"journal {self.directory} is closed"
        if self._fd >= 0:
            if self.fsync.mode != "os":
                self.flush()
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune(directory: str | os.PathLike[str], now_ns: int,
          retention_days: int = BUSINESS_RETENTION_DAYS) -> list[Path]:
    """Delete the oldest whole segments whose newest record is older than ``retention_days``.

    Only a prefix goes (the rest stays gap-free), never the newest segment (it is being written),
    and never a segment that does not read cleanly (it would need a person first).
    """
    cutoff = now_ns - retention_days * _NS_PER_DAY
    segs = list_segments(directory)
    removed = []
    for i, (first, path) in enumerate(segs[:-1]):
        reader = JournalReader(directory, first)
        newest = None
        for seq, record in reader:
            if seq >= segs[i + 1][0]:
                break
            newest = record.ts_ns
        if reader.damage is not None or newest is None or newest >= cutoff:
            break
        path.unlink()
        removed.append(path)
        log.info("journal.pruned", segment=str(path), newest_ns=newest, retention_days=retention_days)
    if removed:
        _fsync_dir(Path(directory))
    return removed


# --- inspection: what a record is about, verify, dump -------------------------------------------
