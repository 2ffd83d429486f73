"""The audit journal: an append-only, checksummed, write-ahead log (docs/ARCHITECTURE.md §6).

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

Damage: a torn tail, or corruption
----------------------------------
Opening a journal reads the newest segment. Where a record does not read back, the rest of the
segment is mapped (``map_segment``): after the damage it looks for the next whole record with a
valid checksum and a plausible sequence number (resync), so it knows which intact records follow.

* A **torn tail** is an incomplete last record of the newest segment and nothing intact after
  it: a header or body cut short by the end of the file, possibly followed by zero fill (what a
  crash leaves: we append with one ``write``; a file system that grew the file before the data
  landed shows zeros). It is copied to ``<segment>.<offset>.damaged`` as evidence and cut, and
  appends continue with the next sequence number (``Journal.recovered``).
* Anything else is **corruption**: a checksum, length, sequence or decode failure with more
  data after it, a whole record at the very end of the file whose checksum holds but whose
  number or body is wrong, a record of full length whose checksum fails at the very end (unless
  its last bytes are zeros: that is a page that never reached the disk), or any damage in an
  older segment. A torn write cannot produce a full-length record that fails its checksum and
  does not end in zero fill; that is bits changed after the write (media, memory, another
  writer), which could as well have hit any record, so a person looks. (The price of that
  choice is a manual repair after a rare fault; the price of the other would be a record
  dropped without a word while trading goes on.) Nothing is cut or
  rewritten: the damaged segment is left byte for byte, the writer opens a *fresh segment*
  named for the sequence number after the last intact record found in it, and the damage is
  written down in ``CORRUPTION`` (JSON) in the journal directory (``Journal.corruption``). The
  gateway then refuses to trade (safe mode, ``gateway.server``) for as long as that file
  exists, restart after restart. Readers still stop at the damage and say where
  (``JournalDamage``); ``fengkong journal verify`` also lists the intact records after it and
  the segments written since.
* Damage in an older segment is found by whoever reads it: recovery reads through
  ``Journal.read``, which notes it (``Journal.damage_seen``) so the gateway can record it with
  ``Journal.mark_corrupt``; ``verify``, the Kafka outbox and ``prune`` stop at it.

Repair is a person's decision (``fengkong journal repair DIR --apply``, ``gateway.journal_tools``,
with the gateway stopped): each damaged segment is rewritten with its intact records byte for
byte and one ``State(kind="unreadable")`` placeholder per sequence number the damaged bytes stood
for, so numbering stays gap-free; the original file is kept beside it as evidence, and
``CORRUPTION`` is removed. A write that fails (ENOSPC, EIO) is a different matter: the partial
record is cut back, ``JournalIOError`` says what failed where, and the caller (``gateway.audit``)
holds the records and retries.

``prune`` deletes whole old segments past the retention period (business records: 5 years,
rule 18 of the security rules). Inspection (``fengkong journal verify|dump|prune|repair``) lives
in ``gateway.journal_tools``.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import struct
import threading
import time
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
_SEQ = struct.Struct(">Q")
HEADER_SIZE = _HEADER.size
MAX_RECORD = 16 << 20  # a larger length field is damage, not a record
SUFFIX = ".journal"
DEFAULT_SEGMENT_BYTES = 64 << 20
BUSINESS_RETENTION_DAYS = 1826  # >= 5 years (security rules, rule 18)
# Client certification records (programmatic-trading rules art. 16-17): >= 20 years. ``prune``
# keeps every segment holding one of them, or the anchor of their chain, younger than this.
CERT_RETENTION_DAYS = 7305
CERT_RECORD_KIND = "cert_record"  # State(kind=...): one certification record (a JSON line)
CERT_ANCHOR_ACTION = "certify_anchor"  # AdminAction(action=...): the head of a record chain
CHINA_TZ = timezone(timedelta(hours=8), "CST")  # naive CLI times are exchange time; no DST
_NS_PER_DAY = 86_400 * 10**9
_CHUNK = 256 << 10  # read size; a tailing reader re-reads at most this per batch
CORRUPTION_FILE = "CORRUPTION"  # present while the journal holds unrepaired corruption

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
    """An execution report that came from the exchange; ``session`` and ``client_id`` say whose
    order it is (the session that owned it then and the client's cl_ord_id; 0 and "" for an
    order the gateway did not know): what the client was told is derived from this record, so
    the drop copy and the audit trail read it here."""

    report: ExecReport
    link: str = ""
    session: int = 0
    client_id: str = ""


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
    """Where reading stopped and why. ``kind``: torn | length | checksum | sequence | decode | gap
    (and "marker" for a ``CORRUPTION`` file that does not decode)."""

    segment: str
    offset: int
    seq: int  # the sequence number expected at that point
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.segment} at byte {self.offset} (record {self.seq}): {self.detail}"


class JournalError(Exception):
    """The journal cannot do what was asked; the text says what, where and what to do."""


class JournalIOError(JournalError):
    """The operating system refused a write, fsync, rotation or cut (ENOSPC, EIO, ...).

    Records from ``seq`` on are not journaled (``op`` "write", "rotate", "cut"), or are written
    but not known to be on disk (``op`` "fsync"): ``Journal.next_seq`` tells which. Appending
    again retries; the journal stays consistent (no partial record, no gap)."""

    def __init__(self, op: str, path: Path | None, seq: int, err: OSError) -> None:
        self.op = op
        self.path = path
        self.seq = seq
        self.err = err
        self.strerror = err.strerror or str(err)
        code = errno.errorcode.get(err.errno, str(err.errno)) if err.errno else "?"
        super().__init__(f"journal {op} failed at record {seq} in {path}: {self.strerror} ({code})")


class Corruption(msgspec.Struct, frozen=True):
    """Damage that is not a torn tail, as written down in ``CORRUPTION`` until a repair."""

    damage: JournalDamage
    found_ns: int  # when it was found (wall clock, ns)
    intact_after: list[tuple[int, int]] = []  # sequence runs read intact after it, same segment
    resumed_at: int = 0  # first sequence number written after it, in a fresh segment (0: none)

    def __str__(self) -> str:
        runs = ", ".join(f"{a}..{b}" for a, b in self.intact_after) or "none"
        return (f"{self.damage.kind} damage in {self.damage}; intact records after it: {runs}"
                + (f"; writing resumed at record {self.resumed_at} in a fresh segment"
                   if self.resumed_at else ""))


_corruption_list = msgspec.json.Decoder(list[Corruption])


def read_corruption(directory: str | os.PathLike[str]) -> list[Corruption]:
    """What ``CORRUPTION`` records (empty when the journal holds no unrepaired corruption)."""
    path = Path(directory) / CORRUPTION_FILE
    try:
        return _corruption_list.decode(path.read_bytes())
    except FileNotFoundError:
        return []
    except msgspec.DecodeError as err:
        # Unreadable, but present: still corrupt. Say so rather than trading on it.
        return [Corruption(JournalDamage(str(path), 0, 0, "marker", f"{CORRUPTION_FILE} does not "
                                         f"decode ({err}); run `fengkong journal verify`"), 0)]


def write_corruption(directory: str | os.PathLike[str], items: list[Corruption]) -> None:
    """Replace ``CORRUPTION`` atomically (removing it when ``items`` is empty), durably."""
    d = Path(directory)
    path = d / CORRUPTION_FILE
    if not items:
        path.unlink(missing_ok=True)
    else:
        tmp = d / (CORRUPTION_FILE + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.format(msgspec.json.encode(items)) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    _fsync_dir(d)


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
        on_damage: Callable[[JournalDamage], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.follow = follow
        self.damage: JournalDamage | None = None
        self._on_damage = on_damage
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
        if self._on_damage is not None:
            self._on_damage(self.damage)

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


class Piece(msgspec.Struct, frozen=True):
    """A stretch of one segment file, as ``map_segment`` found it.

    ``kind`` "ok": bytes ``start..end`` hold intact records ``first..last`` (written between
    ``first_ts`` and ``last_ts``). Otherwise a damage kind (as in ``JournalDamage``): the bytes
    do not read back; ``first`` is the sequence number expected at ``start`` and ``last`` the
    last one they stand for, known when an intact record follows (``first - 1`` when nothing
    intact follows in the segment: how many records they held is then unknown). ``start ==
    end`` is a jump in numbering with no bytes missing."""

    start: int
    end: int
    first: int
    last: int
    kind: str = "ok"
    detail: str = ""
    first_ts: int = 0
    last_ts: int = 0

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def _inspect(buf: bytes, pos: int, expect: int, decode: Callable[[Any], Any]
             ) -> tuple[str, str, int, int, Any]:
    """Check the record at ``pos`` as the reader does: (damage kind or "", detail, length, seq,
    record). The same rules, in the same order, as ``JournalReader._read_segment``."""
    n = len(buf)
    if n - pos < HEADER_SIZE:
        return "torn", f"incomplete record header ({n - pos} of {HEADER_SIZE} bytes)", 0, 0, None
    length, crc, seq = _HEADER.unpack_from(buf, pos)
    if length == 0 or length > MAX_RECORD:
        return "length", f"implausible record length {length}", length, seq, None
    end = pos + HEADER_SIZE + length
    if end > n:
        return ("torn", f"incomplete record ({n - pos - HEADER_SIZE} of {length} body bytes)",
                length, seq, None)
    with memoryview(buf) as mv:
        if zlib.crc32(mv[pos + 8 : end], zlib.crc32(mv[pos : pos + 4])) != crc:
            return "checksum", "checksum mismatch (corrupt bytes)", length, seq, None
        if seq != expect:
            return "sequence", f"sequence number {seq}, expected {expect}", length, seq, None
        try:
            record = decode(mv[pos + HEADER_SIZE : end])
        except msgspec.DecodeError as err:
            return ("decode", f"checksum is right but the body does not decode: {err}", length,
                    seq, None)
    return "", "", length, seq, record


def _resync(buf: bytes, start: int, expect: int) -> tuple[int, int] | None:
    """The first offset >= ``start`` where a whole record with a valid checksum and a sequence
    number from ``expect`` on begins, and that number; None if there is none.

    Candidates are found with ``bytes.find`` on the high bytes the plausible sequence numbers
    share, so a typical segment is searched at memory speed, not byte by byte in Python."""
    n = len(buf)
    hi = expect + (n - start) // (HEADER_SIZE + 1)  # no more records than that can follow
    lo_b, hi_b = _SEQ.pack(expect), _SEQ.pack(hi)
    k = 0
    while k < 8 and lo_b[k] == hi_b[k]:
        k += 1
    prefix = lo_b[:k]
    q = start
    with memoryview(buf) as mv:
        while q + HEADER_SIZE <= n:
            if k:
                j = buf.find(prefix, q + 8)  # the sequence number sits 8 bytes into a header
                if j < 0:
                    return None
                q = j - 8
                if q + HEADER_SIZE > n:
                    return None
            length, crc, seq = _HEADER.unpack_from(buf, q)
            end = q + HEADER_SIZE + length
            if (expect <= seq <= hi and 0 < length <= MAX_RECORD and end <= n
                    and zlib.crc32(mv[q + 8 : end], zlib.crc32(mv[q : q + 4])) == crc):
                return q, seq
            q += 1
    return None


def map_segment(buf: bytes, first_seq: int) -> list[Piece]:
    """Every stretch of a segment's bytes (``buf``, named for ``first_seq``): intact runs and
    damaged spans, resyncing after each damage. Costs a full decode: for damage, not for replay."""
    decode = msgspec.msgpack.Decoder(JournalRecord).decode
    pieces: list[Piece] = []
    n = len(buf)
    pos, expect = 0, first_seq
    run_start, run_first, run_ts, last_ts = -1, 0, 0, 0
    while pos < n:
        kind, detail, length, seq, record = _inspect(buf, pos, expect, decode)
        if not kind:
            if run_start < 0:
                run_start, run_first, run_ts = pos, expect, record.ts_ns
            last_ts = record.ts_ns
            pos += HEADER_SIZE + length
            expect += 1
            continue
        if run_start >= 0:
            pieces.append(Piece(run_start, pos, run_first, expect - 1, first_ts=run_ts,
                                last_ts=last_ts))
            run_start = -1
        if kind == "sequence" and expect < seq <= expect + n // (HEADER_SIZE + 1):
            # A whole, valid record numbered past what was expected: the ones between are
            # missing, though no bytes are. Read on from it.
            pieces.append(Piece(pos, pos, expect, seq - 1, kind,
                                f"records {expect} to {seq - 1} are missing: the next record is {seq}"))
            expect = seq
            continue
        found = _resync(buf, pos + 1, expect)
        if found is None:
            pieces.append(Piece(pos, n, expect, expect - 1, kind, detail))
            break
        q, seq = found
        pieces.append(Piece(pos, q, expect, seq - 1, kind, detail))
        pos, expect = q, seq
    if run_start >= 0:
        pieces.append(Piece(run_start, pos, run_first, expect - 1, first_ts=run_ts, last_ts=last_ts))
    return pieces


def torn_tail(buf: bytes, pieces: list[Piece]) -> Piece | None:
    """The damage of the newest segment (``buf``, mapped as ``pieces``) if it is a torn tail and
    nothing else: the only damage, running to the end of the file, nothing intact after it, and
    ``is_torn``. None when the segment is clean or the damage is corruption."""
    bad = [p for p in pieces if not p.ok]
    if len(bad) == 1 and bad[0] is pieces[-1] and bad[0].end == len(buf) and is_torn(buf, bad[0].start):
        return bad[0]
    return None


def is_torn(buf: bytes, start: int) -> bool:
    """Whether the bytes from ``start`` to the end are what a torn append leaves: less than one
    whole record once any zero fill at the end is discounted (a short header, a short body).

    A whole record whose checksum holds is never torn, whatever else is wrong with it (its
    number, its body): those bytes were written as they are. A whole record whose checksum
    fails and whose last bytes are zeros cannot be told from one whose last page never reached
    the disk; it is taken as torn (it is unreadable either way, and nothing after it is)."""
    if len(buf) - start >= HEADER_SIZE:
        length, crc, _ = _HEADER.unpack_from(buf, start)
        end = start + HEADER_SIZE + length
        if 0 < length <= MAX_RECORD and end <= len(buf):
            with memoryview(buf) as mv:
                if zlib.crc32(mv[start + 8 : end], zlib.crc32(mv[start : start + 4])) == crc:
                    return False
    rest = buf[start:].rstrip(b"\0")
    if len(rest) < HEADER_SIZE:
        return True
    length = _HEADER.unpack_from(rest)[0]
    return 0 < length <= MAX_RECORD and len(rest) < HEADER_SIZE + length


class Journal:
    """The writer. Use ``Journal.open``; one writer per directory (a lock file enforces it)."""

    def __init__(self, directory: Path, fsync: FsyncPolicy, segment_bytes: int, lock_fd: int) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.recovered: JournalDamage | None = None  # the torn tail found and cut on open
        self.quarantined: Path | None = None  # where the cut bytes were kept
        # Unrepaired corruption (``CORRUPTION``): non-empty means do not trade on this journal.
        self.corruption: list[Corruption] = []
        self.damage_seen: JournalDamage | None = None  # first damage a ``read()`` reader met
        # Told (on the event loop) when the background flusher's fsync fails: the records are
        # written but not known to be on disk. ``gateway.audit`` sets it.
        self.on_sync_failure: Callable[[JournalIOError], None] | None = None
        self.sync_failed: JournalIOError | None = None  # the last fsync failed (cleared by one that works)
        self._lock_fd = lock_fd
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._next = 1
        self._dirty = False  # written since the last fsync (the syncer's, while it runs)
        self._cut_pending = False  # a failed write left bytes past _size that could not be cut yet
        self._broken: str | None = None  # why appends are refused (closed)
        self._last_sync = 0
        self._interval_ns = fsync.interval_ms * 1_000_000
        self._background_sync = False  # run_flusher owns interval fsyncs (off the event loop)
        self._syncer: Any = None  # its ``journal_frame.Syncer`` while it runs
        # Operations: bytes written since the last fsync of this segment, and two optional
        # latency hooks (``gateway.metrics.Histogram``: ``observe(ns)``), read at scrape time.
        self._unflushed = 0
        self.write_latency: Any = None
        self.sync_latency: Any = None

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        *,
        fsync: FsyncPolicy | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> Journal:
        """Open (creating if needed) the journal in ``directory``: cut a torn tail, or, past
        corruption in the newest segment, go on in a fresh segment (see the module docstring)."""
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
            if j._fd >= 0:
                os.close(j._fd)
            os.close(lock_fd)
            raise
        return j

    def _recover(self) -> None:
        self.corruption = read_corruption(self.directory)
        segs = list_segments(self.directory)
        while segs:
            first, path = segs[-1]
            reader = JournalReader(self.directory, first)
            for _ in reader:
                pass
            end = reader._offset  # just past the last record that reads back
            size = path.stat().st_size
            if reader.damage is not None:
                buf = path.read_bytes()
                pieces = map_segment(buf, first)
                if torn_tail(buf, pieces) is None:
                    self._resume_after_corruption(reader.damage, path, first, pieces)
                    break
                self._cut_torn_tail(reader.damage, path, buf, end)
                size = end
            if size == 0 and len(segs) > 1:
                path.unlink()  # an empty newest segment: its predecessor is the real tail
                segs.pop()
                continue
            self._path, self._size, self._next = path, end, reader.next_seq
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            break
        _fsync_dir(self.directory)

    def _cut_torn_tail(self, damage: JournalDamage, path: Path, buf: bytes, end: int) -> None:
        quarantined = path.with_name(f"{path.name}.{end}.damaged")
        with open(quarantined, "wb") as dst:
            dst.write(buf[end:])
            os.fsync(dst.fileno())
        os.truncate(path, end)
        if self.recovered is None:
            self.recovered, self.quarantined = damage, quarantined
        log.warning("journal.damaged_tail_truncated", damage=str(damage),
                    cut_bytes=len(buf) - end, kept_in=str(quarantined))

    def _resume_after_corruption(self, damage: JournalDamage, path: Path, first: int,
                                 pieces: list[Piece]) -> None:
        """Corruption in the newest segment: leave it as it is and append to a fresh segment
        numbered after the last intact record in it, so nothing intact is touched and no
        number is used twice."""
        after = [(p.first, p.last) for p in pieces if p.ok and p.start > damage.offset]
        resume = max((p.last for p in pieces if p.ok), default=first - 1) + 1
        if resume == first:
            # Not one intact record in it: the fresh segment would take its very name. Keep the
            # whole file as evidence under another name (nothing intact moves).
            kept = path.with_name(f"{path.name}.0.damaged")
            os.rename(path, kept)
            damage = msgspec.structs.replace(damage, detail=f"{damage.detail} (the whole segment, "
                                             f"with no intact record, was moved to {kept.name})")
        fresh = self.directory / segment_name(resume)
        self._fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                           0o644)
        self._path, self._size, self._next = fresh, 0, resume
        found = Corruption(damage, time.time_ns(), after, resume)
        same = (damage.segment, damage.offset)  # found before (its fresh segment was empty)
        self.corruption = [*(c for c in self.corruption
                             if (c.damage.segment, c.damage.offset) != same), found]
        write_corruption(self.directory, self.corruption)
        log.error("journal.corrupt", segment=damage.segment, offset=damage.offset, seq=damage.seq,
                  kind=damage.kind, detail=damage.detail, intact_after=after, resumed_at=resume,
                  fresh_segment=fresh.name)

    def mark_corrupt(self, damage: JournalDamage) -> Corruption:
        """Write down damage found by a reader (an older segment), once: until a repair removes
        ``CORRUPTION``, every open of this journal reports it."""
        for c in self.corruption:
            if (c.damage.segment, c.damage.offset) == (damage.segment, damage.offset):
                return c
        after: list[tuple[int, int]] = []
        path = Path(damage.segment)
        if path.is_file() and path.name.endswith(SUFFIX):
            pieces = map_segment(path.read_bytes(), int(path.name[: -len(SUFFIX)]))
            after = [(p.first, p.last) for p in pieces if p.ok and p.start > damage.offset]
        found = Corruption(damage, time.time_ns(), after)
        self.corruption = [*self.corruption, found]
        write_corruption(self.directory, self.corruption)
        log.error("journal.corrupt", segment=damage.segment, offset=damage.offset, seq=damage.seq,
                  kind=damage.kind, detail=damage.detail, intact_after=after)
        return found

    @property
    def next_seq(self) -> int:
        return self._next

    @property
    def last_seq(self) -> int:
        """Sequence of the newest record (0 when the journal is empty)."""
        return self._next - 1

    @property
    def segment(self) -> Path | None:
        """The segment being written."""
        return self._path

    def append(self, record: JournalRecord) -> int:
        """Write one record (write-ahead) and return its sequence number."""
        if self._broken:
            raise JournalError(self._broken)
        out = bytearray()
        _frame(record, self._next, out)
        if self._fd < 0 or (self._size > 0 and self._size + len(out) > self.segment_bytes):
            self._rotate()
        self._write(out, 1)
        self._after_write()
        return self._next - 1

    def append_many(self, records: Iterable[JournalRecord]) -> int:
        """Write several records with one write and at most one fsync per segment (group commit);
        return the last sequence number.

        On ``JournalIOError`` a prefix of ``records`` may have been written (a batch that spans
        a rotation is two writes): ``next_seq`` says how many; the rest may be appended again."""
        if self._broken:
            raise JournalError(self._broken)
        records = list(records)
        if _frame_many is not None and self._fd >= 0:
            # The whole batch framed in one compiled call; a bad record raises before anything
            # is written. Written at once unless it would cross the segment's end.
            out = bytearray()
            count = _frame_many(records, self._next, out, _encode_into, _RECORD_TYPE_SET,
                                MAX_RECORD, _not_a_record)
            if self._size == 0 or self._size + len(out) <= self.segment_bytes:
                if count:
                    self._write(out, count)
                    self._after_write()
                return self._next - 1
        for record in records:  # refuse a bad batch before writing any of it
            if type(record) not in _RECORD_TYPE_SET and type(record) is not bytes:
                _frame(record, 0, bytearray())  # raises the TypeError with its explanation
        out = bytearray()
        count = 0
        for record in records:
            start = len(out)
            _frame(record, self._next + count, out)
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

    def _write(self, data: bytearray, count: int) -> None:
        if self._cut_pending:
            self._cut()
        done = 0
        timer = self.write_latency
        t0 = time.perf_counter_ns() if timer is not None else 0
        try:
            with memoryview(data) as mv:
                while done < len(data):
                    done += os.write(self._fd, mv[done:])
        except OSError as err:
            # Leave no partial record behind: cut back to the last whole one. If even that
            # fails, the next write tries the cut again first (O_APPEND would write after it).
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._cut_pending = True
            raise JournalIOError("write", self._path, self._next, err) from err
        if timer is not None:
            timer.observe(time.perf_counter_ns() - t0)
        self._size += len(data)
        self._next += count
        if self._syncer is not None:
            self._syncer.wrote(len(data))
        else:
            self._unflushed += len(data)
            self._dirty = True

    @property
    def dirty(self) -> bool:
        """Written since the last fsync."""
        return self._syncer.dirty if self._syncer is not None else self._dirty

    @property
    def unflushed_bytes(self) -> int:
        """Bytes written to this segment since its last fsync."""
        return self._syncer.unflushed if self._syncer is not None else self._unflushed

    def _synced(self) -> None:
        self._dirty = False
        self._unflushed = 0
        if self._syncer is not None:
            self._syncer.synced()

    def _cut(self) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as err:
            raise JournalIOError("cut", self._path, self._next, err) from err
        self._cut_pending = False

    def _after_write(self) -> None:
        syncer = self._syncer
        if syncer is not None:
            if syncer.pending_latencies and self.sync_latency is not None:
                syncer.drain_latencies(self.sync_latency.observe)
            return
        mode = self.fsync.mode
        if mode == "record":
            self.flush()
        elif (mode == "interval" and not self._background_sync
              and monotonic_ns() - self._last_sync >= self._interval_ns):
            self.flush()

    def _rotate(self) -> None:
        try:
            if self._fd >= 0:
                if self._cut_pending:
                    self._cut()
                if self.fsync.mode != "os":
                    os.fdatasync(self._fd)  # a segment is complete on disk before the next exists
                if self._syncer is not None:
                    self._syncer.set_fd(-1)  # (before the descriptor can be reused)
                os.close(self._fd)
                self._fd = -1
            path = self.directory / segment_name(self._next)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
                               0o644)
            self._path = path
            self._size = 0
            self._synced()
            if self._syncer is not None:
                self._syncer.set_fd(self._fd)
            if self.fsync.mode != "os":
                _fsync_dir(self.directory)
        except OSError as err:
            raise JournalIOError("rotate", self._path, self._next, err) from err

    def start_segment(self) -> None:
        """Let the next record begin a new segment (the gateway does this for each trading-day
        checkpoint, so recovery finds the newest checkpoint by reading one segment, not the
        retention behind it). Nothing is written; an empty current segment is kept."""
        if self._fd >= 0 and self._size > 0:
            self._rotate()

    def flush(self) -> None:
        """Force everything appended so far to disk (whatever the policy)."""
        if self.dirty and self._fd >= 0:
            t0 = time.perf_counter_ns()
            try:
                os.fdatasync(self._fd)
            except OSError as err:
                self.sync_failed = JournalIOError("fsync", self._path, self._next - 1, err)
                raise self.sync_failed from err
            if self.sync_latency is not None:
                self.sync_latency.observe(time.perf_counter_ns() - t0)
            self._synced()
        self.sync_failed = None
        self._last_sync = monotonic_ns()

    async def run_flusher(self) -> None:
        """For ``interval`` mode: fsync every ``interval_ms`` from a thread of its own, so a
        slow disk (an fdatasync can take hundreds of ms on shared storage) never stalls the
        event loop; while it runs, appends no longer fsync inline. The owner runs this as a
        task and cancels it before ``close()``; it returns at once in the other modes. A failed
        fsync is reported to ``on_sync_failure`` (on the loop) and tried again.

        The thread runs ``journal_frame.Syncer``, which never holds the GIL: a Python thread
        waking every interval took the GIL from the loop each time, and those hand-overs cost
        more CPU per order than the fsyncs. (A test that puts its own ``os.fdatasync`` in place
        has it called from the same thread.)"""
        if self.fsync.mode != "interval":
            return
        loop = asyncio.get_running_loop()
        if _Syncer is None:  # not built: a Python thread does the same
            stop = threading.Event()
            target: Callable[[], None] = lambda: self._sync_thread(loop, stop)  # noqa: E731
        else:
            hook = None if os.fdatasync is _SYSTEM_FDATASYNC else os.fdatasync
            syncer = _Syncer(self.fsync.interval_ms, hook,
                             lambda err: self._thread_sync_failed(loop, err))
            syncer.set_fd(self._fd)
            if self._dirty:
                syncer.wrote(self._unflushed)
            self._syncer = syncer
            target = syncer.run
        self._background_sync = True
        threading.Thread(target=target, name="journal-fsync", daemon=True).start()
        try:
            await loop.create_future()  # until cancelled
        finally:
            self._background_sync = False
            if _Syncer is None:
                stop.set()
            else:
                syncer.stop()
                self._syncer = None
                self._dirty, self._unflushed = syncer.dirty, syncer.unflushed
                if self.sync_latency is not None:
                    syncer.drain_latencies(self.sync_latency.observe)

    def _thread_sync_failed(self, loop: asyncio.AbstractEventLoop, err: int) -> None:
        """(On the syncer's thread, with the GIL.) Its fsync failed: hold new records."""
        failure = JournalIOError("fsync", self._path, self._next - 1,
                                 OSError(err, os.strerror(err)))
        self.sync_failed = failure
        try:
            loop.call_soon_threadsafe(self._sync_thread_failed, failure)
        except RuntimeError:  # the loop is closed: the owner is shutting down
            pass

    def _sync_thread(self, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        """The flusher's thread where ``journal_frame`` is not built (it holds the GIL when awake)."""
        interval = self.fsync.interval_ms / 1000
        while not stop.wait(interval):
            fd = self._fd
            if not self._dirty or fd < 0:
                continue
            self._dirty = False  # before the fsync: a write after this line is synced next time
            covered = self._unflushed
            t0 = time.perf_counter_ns()
            try:
                os.fdatasync(fd)
            except OSError as err:
                # EBADF, or another fd: rotated or closed meanwhile, and both fsync the segment
                # themselves. Anything else: the disk refused.
                if err.errno != errno.EBADF and fd == self._fd:
                    self._dirty = True
                    failure = JournalIOError("fsync", self._path, self._next - 1, err)
                    self.sync_failed = failure
                    try:
                        loop.call_soon_threadsafe(self._sync_thread_failed, failure)
                    except RuntimeError:  # the loop is closed: the owner is shutting down
                        return
                continue
            if self.sync_latency is not None:
                self.sync_latency.observe(time.perf_counter_ns() - t0)
            if fd == self._fd:  # what was written meanwhile is still to be synced
                self._unflushed = max(0, self._unflushed - covered)
            self.sync_failed = None
            self._last_sync = monotonic_ns()

    def _sync_thread_failed(self, failure: JournalIOError) -> None:
        if self.sync_failed is failure and self.on_sync_failure is not None:
            self.on_sync_failure(failure)

    def read(self, from_seq: int = 0) -> JournalReader:
        """A reader from ``from_seq``; damage it meets is noted in ``damage_seen``."""
        return JournalReader(self.directory, from_seq, on_damage=self._saw_damage)

    def _saw_damage(self, damage: JournalDamage) -> None:
        if self.damage_seen is None:
            self.damage_seen = damage

    def prune(self, now_ns: int, retention_days: int = BUSINESS_RETENTION_DAYS) -> list[Path]:
        return prune(self.directory, now_ns, retention_days)

    def close(self) -> None:
        self._broken = f"journal {self.directory} is closed"
        if self._fd >= 0:
            if self.fsync.mode != "os":
                try:
                    self.flush()
                except JournalIOError as err:
                    log.error("journal.close_fsync_failed", error=str(err))
            if self._syncer is not None:  # (closed before its flusher was stopped)
                self._syncer.set_fd(-1)
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_encoder = msgspec.msgpack.Encoder()
_encode = _encoder.encode
_encode_into = _encoder.encode_into

try:  # the compiled framing (gateway/journal_frame.pyx): the same bytes, a batch per call
    from gateway.journal_frame import Syncer as _Syncer
    from gateway.journal_frame import frame_many as _frame_many
except ImportError:
    _frame_many = _Syncer = None
_SYSTEM_FDATASYNC = os.fdatasync  # (a test that replaces it has the syncer call its own)


def _frame(record: JournalRecord | bytes, seq: int, out: bytearray) -> None:
    """Append one record, framed as it sits in a segment, to ``out``.

    ``record`` may be a record already encoded: ``bytes``, its msgpack body exactly as
    ``msgspec`` encodes the record (the compiled order path journals what it received that way,
    splicing the frame it read into the record; see ``gateway.fastroute``)."""
    if type(record) is bytes:
        body = record
    elif type(record) not in _RECORD_TYPE_SET:
        raise _not_a_record(record)
    else:
        try:
            body = _encode(record)
        except (TypeError, OverflowError) as err:
            raise TypeError(f"{type(record).__name__} cannot be journaled: {err}") from err
    length = len(body)
    if length > MAX_RECORD:
        raise ValueError(f"record {seq} is {length} bytes; the maximum is {MAX_RECORD}")
    # The CRC covers length, seq and body: the same bytes as in the file, minus the CRC.
    # (Encoding into ``out`` in place measured slower: the copies of ~150 bytes cost less
    # than the extra Python steps.)
    crc = zlib.crc32(body, zlib.crc32(_LENGTH_SEQ.pack(length, seq)))
    out += _HEADER.pack(length, crc, seq)
    out += body


def frame(record: JournalRecord, seq: int) -> bytes:
    """One record as it sits in a segment file (for tools that rewrite segments: repair)."""
    out = bytearray()
    _frame(record, seq, out)
    return bytes(out)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_certification(record: JournalRecord) -> bool:
    t = type(record)
    return (t is State and record.kind == CERT_RECORD_KIND) or \
        (t is AdminAction and record.action == CERT_ANCHOR_ACTION)


def prune(directory: str | os.PathLike[str], now_ns: int,
          retention_days: int = BUSINESS_RETENTION_DAYS,
          kept_for_certification: list[Path] | None = None) -> list[Path]:
    """Delete the oldest whole segments whose newest record is older than ``retention_days``.

    Only a prefix goes (the rest stays gap-free), never the newest segment (it is being written),
    never a segment that does not read cleanly (it would need a person first), and never one
    holding a client certification record or its anchor younger than ``CERT_RETENTION_DAYS``
    (20 years, whatever ``retention_days`` says).
    """
    cutoff = now_ns - retention_days * _NS_PER_DAY
    cert_cutoff = now_ns - CERT_RETENTION_DAYS * _NS_PER_DAY
    segs = list_segments(directory)
    removed = []
    for i, (first, path) in enumerate(segs[:-1]):
        reader = JournalReader(directory, first)
        newest = None
        certified = False  # holds a certification record or anchor under 20 years old
        for seq, record in reader:
            if seq >= segs[i + 1][0]:
                break
            newest = record.ts_ns
            if record.ts_ns >= cert_cutoff and _is_certification(record):
                certified = True
        if certified:
            if kept_for_certification is not None:
                kept_for_certification.append(path)
            log.warning("journal.prune_kept_certification", segment=str(path),
                        retention_days=CERT_RETENTION_DAYS)
            break
        if reader.damage is not None or newest is None or newest >= cutoff:
            break
        path.unlink()
        removed.append(path)
        log.info("journal.pruned", segment=str(path), newest_ns=newest, retention_days=retention_days)
    if removed:
        _fsync_dir(Path(directory))
    return removed


# --- inspection: what a record is about, verify, dump -------------------------------------------
