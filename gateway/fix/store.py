"""The message store of one FIX session: sequence numbers and sent application messages, on disk.

Theory of operation
-------------------
A FIX session outlives its TCP connections and the gateway process: after a restart a client
resumes at the sequence numbers where it left, and may ask for any application message it
missed again (ResendRequest). So each session (one SenderCompID/TargetCompID pair) keeps a
store file, ``<our CompID>-<their CompID>.fixstore``, in ``[fix].store_dir`` (by default a
directory beside the journal's).

The file is append-only, a sequence of records ``length(4) | crc32(4) | kind(1) | seq(8) |
data``:

- ``O`` an application message we sent: ``seq`` its MsgSeqNum, ``data`` its MsgType, original
  SendingTime and body fields (what a resend needs to rebuild it with PossDupFlag);
- ``o`` an administrative message we sent (only its number is kept: a resend gap-fills it);
- ``I`` the next MsgSeqNum expected from the peer, after a message was processed;
- a reset (ResetSeqNumFlag, or a new day's logon) truncates the file: both sides start at 1.

Write-ahead, like the journal: records are buffered and written (``flush``) before the bytes
they describe leave for the peer, and before anything else a message caused becomes visible;
``fsync`` follows the journal's policy (``record``: at every flush; ``interval``: by the
acceptor's flusher; ``os``: left to the kernel). A killed process therefore never reuses a
sequence number it sent, and never forgets an inbound message it acted on.

Damage: an incomplete or failing record ends the file's useful part; it is cut there and the
cut is logged. Losing the tail of the *inbound* number is safe (the peer's messages are
requested again; a repeated order is recognised by its ClOrdID, ``gateway.fix.session``);
losing the *outbound* tail could reuse numbers the peer saw, which is why sent messages are
written before they are sent.

Bounds: at most ``MAX_STORED`` sent messages are kept in memory for resend (oldest first out;
older ones are gap-filled), far above a session's trading day. The file is compacted (rewritten
to a new file holding just the numbers and those messages, then renamed over the old one) when
it passes ``COMPACT_BYTES``, at open and at each logon, so a session never reset still has a
bounded file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import structlog

log = structlog.get_logger("fengkong.fix.store")
_REC = struct.Struct(">IIcQ")  # length of (kind + seq + data), crc32 of it, kind, seq
MAX_STORED = 250_000
COMPACT_BYTES = 64 * 1024 * 1024


class FixStore:
    """Sequence numbers and sent application messages of one session (see the module
    docstring). ``path=None``: in memory only (no journal configured: tests and demos)."""

    def __init__(self, path: Path | None, fsync: str = "interval") -> None:
        self.path = path
        self.fsync_mode = fsync
        self.next_out = 1  # MsgSeqNum of the next message we send
        self.next_in = 1  # MsgSeqNum we expect next from the peer
        # seq -> (MsgType, original SendingTime, body fields)
        self.sent: dict[int, tuple[bytes, bytes, bytes]] = {}
        self._buf = bytearray()
        self._in_dirty = False  # next_in changed since the last flush
        self.dirty = False  # written, not yet fsynced
        self._fd = -1
        self.cut: str = ""  # what a damaged tail was, if one was cut at open
        self.size = 0  # bytes in the file
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o640)
            self._load()
            self.compact_if_large()

    def _load(self) -> None:
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        pos, size = 0, len(data)
        while pos < size:
            if size - pos < 8:
                self.cut = f"torn record header at byte {pos}"
                break
            length, crc = struct.unpack_from(">II", data, pos)
            if length < 9 or pos + 8 + length > size:
                self.cut = f"torn record at byte {pos}"
                break
            payload = data[pos + 8:pos + 8 + length]
            if zlib.crc32(payload) != crc:
                self.cut = f"checksum mismatch at byte {pos}"
                break
            kind, seq = payload[:1], int.from_bytes(payload[1:9], "big")
            if kind == b"O":
                mt, _, rest = payload[9:].partition(b"\x00")
                st, _, body = rest.partition(b"\x00")
                self._remember(seq, (mt, st, body))
                self.next_out = max(self.next_out, seq + 1)
            elif kind == b"o":
                self.next_out = max(self.next_out, seq + 1)
            elif kind == b"I":
                self.next_in = seq
            pos += 8 + length
        if self.cut:
            log.warning("FIX store tail damaged; cut", path=str(self.path), damage=self.cut,
                        kept_bytes=pos)
            os.ftruncate(self._fd, pos)
        self.size = pos

    def _remember(self, seq: int, entry: tuple[bytes, bytes, bytes]) -> None:
        self.sent[seq] = entry
        if len(self.sent) > MAX_STORED:
            del self.sent[next(iter(self.sent))]

    def _append(self, kind: bytes, seq: int, data: bytes = b"") -> None:
        if self._fd < 0:
            return
        self._buf += _record(kind, seq, data)

    def compact_if_large(self) -> None:
        if self._fd >= 0 and self.size + len(self._buf) > COMPACT_BYTES:
            self.compact()

    def compact(self) -> None:
        """Rewrite the file as just its state (numbers, messages kept for resend): written to
        a new file, fsynced, renamed over the old one — a crash leaves one or the other."""
        assert self.path is not None
        self._buf.clear()
        self._in_dirty = False
        out = bytearray(_record(b"o", self.next_out - 1) if self.next_out > 1 else b"")
        for seq, (mt, st, body) in self.sent.items():
            out += _record(b"O", seq, mt + b"\x00" + st + b"\x00" + body)
        out += _record(b"I", self.next_in)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, out)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        log.info("FIX store compacted", path=str(self.path), before=self.size, after=len(out))
        self.size = len(out)
        self.dirty = False

    # ------------------------------------------------------------------ changes
    def sent_app(self, seq: int, msg_type: bytes, sending_time: bytes, body: bytes) -> None:
        self._remember(seq, (msg_type, sending_time, body))
        self.next_out = seq + 1
        self._append(b"O", seq, msg_type + b"\x00" + sending_time + b"\x00" + body)

    def sent_admin(self, seq: int) -> None:
        self.next_out = seq + 1
        self._append(b"o", seq)

    def set_next_in(self, seq: int) -> None:
        # Written once per flush (the latest number), not once per message: what matters is
        # that it is on its way to disk before anything the messages caused leaves.
        self.next_in = seq
        self._in_dirty = True

    def reset(self) -> None:
        """Both sides start again at 1 (ResetSeqNumFlag): nothing before can be resent."""
        self.next_out = self.next_in = 1
        self.sent.clear()
        self._buf.clear()
        self._in_dirty = False
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            self.size = 0
            self.dirty = True

    # ------------------------------------------------------------------ disk
    def flush(self) -> None:
        """Write what is buffered (before the bytes it describes leave)."""
        if self._in_dirty:
            self._in_dirty = False
            self._append(b"I", self.next_in)
        if self._buf and self._fd >= 0:
            os.write(self._fd, self._buf)
            self.size += len(self._buf)
            self._buf.clear()
            if self.fsync_mode == "record":
                os.fdatasync(self._fd)
            else:
                self.dirty = True

    def sync(self) -> None:
        """fsync now (the ``interval`` flusher)."""
        if self.dirty and self._fd >= 0:
            self.dirty = False
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            self.flush()
            if self.fsync_mode != "os":
                os.fdatasync(self._fd)
            os.close(self._fd)
            self._fd = -1


def _record(kind: bytes, seq: int, data: bytes = b"") -> bytes:
    payload = kind + seq.to_bytes(8, "big") + data
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload
