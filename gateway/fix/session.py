"""FIX 4.4 sessions: logon, sequence numbers, resend, heartbeats, and the message table.

Theory of operation
-------------------
Two halves. ``FixSession`` is the *session* in FIX's sense — one SenderCompID/TargetCompID
pair from ``[fix].sessions`` — and outlives connections and restarts: it owns the message
store (``gateway.fix.store``: both sequence numbers and every application message sent) and
``emit``s messages, numbered and stored before they leave. ``FixConnection`` is one TCP
connection (an ``asyncio.Protocol``); once logged on it is attached to its ``FixSession`` and,
for order entry, is a ``gateway.router.SessionPort`` like a native session: same session
numbering, same journal records, same cancel-on-disconnect, same kill-switch scopes.

States (``gateway.session.State``, so ``LogonGuard`` counts FIX connections with the native
ones)::

    AWAIT_LOGON --Logon (CompIDs known, secret right)--> ACTIVE --Logout/error/idle--> CLOSED
         \\--anything else, or refused--> CLOSED

Logon (35=A): the CompID pair names the session and its user; Username 553 must be that user
and Password 554 its secret, checked by ``LogonGuard.authenticate`` exactly as a native logon
(allow-list, lockout, hashing pool). ResetSeqNumFlag 141=Y starts both numbers at 1.
HeartBtInt 108 (1 .. ``[fix].max_heartbeat_s``) sets both sides' heartbeat.

Inbound sequence numbers (FIX session protocol, volume 2):

- = expected: processed; a well-framed but invalid message gets Reject (35=3) with
  SessionRejectReason 373 and is still counted as received;
- > expected: a gap — ResendRequest(7=expected, 16=0) once, and the message is not processed
  (it comes again); Logout, ResendRequest and SequenceReset-Reset are acted on anyway;
- < expected: with PossDupFlag 43=Y a repeat, ignored; without, Logout("MsgSeqNum too low")
  and the connection closes.

ResendRequest from the peer: each stored application message is sent again with
PossDupFlag=Y and OrigSendingTime 122; administrative messages (and any no longer stored)
become SequenceReset-GapFill. A NewOrderSingle with PossDupFlag=Y whose ClOrdID the user
already used is never a second order: a working order is answered with its status, a finished
one with nothing (its reports were sent then, and can be resent).

Garbled messages (``gateway.fix.codec.Garbled``) are ignored, counted and logged; the gap they
leave is recovered by resend. ``[fix].garbled_limit`` of them in a row ends the session with
Logout; so does a message over ``[fix].max_message`` bytes.

Heartbeats: a Heartbeat after HeartBtInt without sending; a TestRequest after HeartBtInt
(+20 %) without receiving; Logout if the TestRequest is not answered within another HeartBtInt.

Write-ahead: the journal (``router.before_write``) and the store are flushed before any byte
leaves for the peer.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from checks.enums import ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.fix import orders
from gateway.fix.codec import (
    R_COMPID,
    R_INVALID_MSGTYPE,
    R_REQUIRED_MISSING,
    FixDecoder,
    FixMessage,
    Garbled,
    Oversized,
    fields_bytes,
    frame,
    now_timestamp,
)
from gateway.fix.store import FixStore
from gateway.protocol import (
    Alert,
    CancelReject,
    ExecReport,
    Logon,
    Logout,
    NewOrder,
    TerminalData,
    terminal_problem,
)
from gateway.session import State, new_session_id
from gateway.terminal import check_application, journaled_logon

if TYPE_CHECKING:
    from gateway.config import FixSessionConfig, UserConfig
    from gateway.fix.acceptor import FixAcceptor

log = structlog.get_logger("fengkong.fix")
NS = 1_000_000_000

ADMIN_TYPES = frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"A"})
# Every MsgType FIX 4.4 defines: one of these we do not support gets BusinessMessageReject
# (380=3); anything else is not FIX 4.4 and gets Reject (373=11).
FIX44_TYPES = frozenset(t.encode() for t in (
    "0 1 2 3 4 5 6 7 8 9 A B C D E F G H J K L M N P Q R S T U V W X Y Z a b c d e f g h i j k "
    "l m n o p q r s t u v w x y z AA AB AC AD AE AF AG AH AI AJ AK AL AM AN AO AP AQ AR AS AT "
    "AU AV AW AX AY AZ BA BB BC BD BE BF BG BH").split())
ORDER_TYPES = frozenset({b"D", b"F", b"H", b"AF"})


class FixSession:
    """One configured CompID pair: its store, its numbering, its live connection if any."""

    def __init__(self, cfg: FixSessionConfig, store: FixStore, accounts: frozenset[str] | None,
                 acceptor: FixAcceptor) -> None:
        self.cfg = cfg
        self.store = store
        self.drop_copy = cfg.kind == "drop_copy"
        self.accounts = accounts  # drop copy: the accounts it sees (None: every account)
        self.acceptor = acceptor
        self.conn: FixConnection | None = None
        self.our = cfg.sender_comp_id.encode()
        self.their = cfg.target_comp_id.encode()
        self._fixed = b"49=" + self.our + b"\x0156=" + self.their + b"\x01"
        # (account, cl_ord_id) -> [cum qty, notional]: AvgPx of orders with fills, until final.
        self.fills: dict[tuple[str, str], list[float]] = {}

    @property
    def name(self) -> str:
        return f"{self.cfg.sender_comp_id}->{self.cfg.target_comp_id}"

    def emit(self, msg_type: bytes, body: bytes) -> None:
        """Number, store and (if connected) send one message."""
        store = self.store
        seq = store.next_out
        ts = now_timestamp()
        wire = frame(msg_type, self._fixed + b"34=%d\x0152=%s\x01" % (seq, ts), body)
        if msg_type in ADMIN_TYPES:
            store.sent_admin(seq)
        else:
            store.sent_app(seq, msg_type, ts, body)
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.write(wire)

    def resend(self, begin: int, end: int) -> None:
        """Answer a ResendRequest: application messages again (PossDupFlag, OrigSendingTime),
        gaps (administrative or no longer stored) as SequenceReset-GapFill."""
        conn = self.conn
        if conn is None:
            return
        last = self.store.next_out - 1
        end = last if end == 0 or end > last else end
        sent = self.store.sent
        gap_start = 0
        now = now_timestamp()
        for seq in range(max(begin, 1), end + 1):
            entry = sent.get(seq)
            if entry is None:
                if not gap_start:
                    gap_start = seq
                continue
            if gap_start:
                self._gap_fill(conn, gap_start, seq, now)
                gap_start = 0
            mt, orig, body = entry
            conn.write(frame(mt, self._fixed + b"34=%d\x0143=Y\x0152=%s\x01122=%s\x01"
                             % (seq, now, orig), body))
        if gap_start:
            self._gap_fill(conn, gap_start, end + 1, now)
        self.acceptor.stats["resent"] += 1

    def _gap_fill(self, conn: FixConnection, seq: int, new_seq: int, now: bytes) -> None:
        conn.write(frame(b"4", self._fixed + b"34=%d\x0143=Y\x0152=%s\x01122=%s\x01"
                         % (seq, now, now), b"123=Y\x0136=%d\x01" % new_seq))

    # ------------------------------------------------------------------ reports
    def exec_report(self, rep: ExecReport) -> None:
        key = (rep.account, rep.cl_ord_id)
        avg = 0.0
        if rep.exec_type == ExecType.TRADE and rep.last_qty > 0:
            acc = self.fills.get(key)
            if acc is None:
                acc = self.fills[key] = [0.0, 0.0]
            acc[0] += rep.last_qty
            acc[1] += rep.last_qty * rep.last_px
            avg = acc[1] / acc[0]
        elif rep.cum_qty:
            acc = self.fills.get(key)
            avg = acc[1] / acc[0] if acc else 0.0
        if rep.status in (OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED):
            self.fills.pop(key, None)
        self.emit(b"8", orders.exec_report(rep, self.acceptor.exec_id(rep), avg, now_timestamp()))


class FixConnection(asyncio.Protocol):
    """One TCP connection on the FIX port (see the module docstring)."""

    def __init__(self, acceptor: FixAcceptor) -> None:
        self.acceptor = acceptor
        self.router = acceptor.router
        self.guard = acceptor.guard
        self.decoder = FixDecoder(acceptor.cfg.max_message)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.state = State.AWAIT_LOGON
        self.closed = False
        self.session: FixSession | None = None
        # SessionPort
        self.session_id = new_session_id()
        self.user = ""
        self.accounts: frozenset[str] = frozenset()
        self.cancel_on_disconnect = True
        self.automated = False
        self.hb_ns = 30 * NS
        self.last_in = self.last_out = time.monotonic_ns()
        self.test_sent = 0  # monotonic time of an unanswered TestRequest (0: none)
        self.resend_until = 0  # a ResendRequest is out until this inbound seq arrives
        self.garbled = 0  # in a row
        self._out = bytearray()
        self._flush_scheduled = False
        self._logon_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._dup_probe = ""  # ClOrdID of a PossDup order being offered to the router
        self.dropped_reason = ""
        self.peer_user: str | None = None  # mutual TLS: the user its certificate stands for

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.acceptor.connections.add(self)
        if not self.guard.admit(self):
            log.warning("FIX connection refused: too many from this address not logged on",
                        peer=self.peer)
            self.abort()
            return
        self._logon_timer = asyncio.get_running_loop().call_later(
            self.guard.logon_timeout_s, self.logon_expired,
            f"no logon within {self.guard.logon_timeout_s:g} s")

    def logon_expired(self, text: str, timed_out: bool = True) -> None:
        """``LogonGuard`` closes a connection that has not logged on (timeout or eviction)."""
        if self.closed or self.state == State.ACTIVE:
            return
        self.guard.timed_out += timed_out
        log.info("FIX connection closed before logon", peer=self.peer, why=text)
        self.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            items = self.decoder.feed(data)
        except Oversized as err:
            self.acceptor.stats["oversized"] += 1
            self._fatal(str(err))
            return
        for item in items:
            if self.closed:
                break
            if type(item) is Garbled:
                self._garbled(item)
                continue
            self.garbled = 0
            try:
                self._message(item)  # type: ignore[arg-type]
            except Exception as exc:  # a bug with one message must not take the port down
                log.exception("FIX internal error; message dropped", session=self.session_id,
                              msg_type=item.msg_type, exc_info=exc)  # type: ignore[union-attr]

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        was_active = self.state == State.ACTIVE
        self.closed = True
        self.state = State.CLOSED
        self.transport = None
        self._out.clear()
        self.acceptor.connections.discard(self)
        self.guard.leave(self)
        for timer in (self._logon_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        s = self.session
        if s is not None and s.conn is self:
            s.conn = None
        if was_active:
            if s is not None and not s.drop_copy:
                cancelled = self.router.remove_session(self, self.cancel_on_disconnect)
            else:
                cancelled = 0
            log.info("FIX session closed", session=self.session_id, fix=s.name if s else "",
                     user=self.user, cancelled=cancelled,
                     reason=self.dropped_reason or str(exc or "closed"))

    # ------------------------------------------------------------------ output
    def write(self, wire: bytes) -> None:
        if self.closed:
            return
        self._out += wire
        self.last_out = time.monotonic_ns()
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write-ahead: journal and store on their way to disk before the bytes leave."""
        self._flush_scheduled = False
        if not self._out or self.transport is None or self.closed:
            return
        if self.router.before_write is not None:
            self.router.before_write()
        if self.session is not None:
            try:
                self.session.store.flush()
            except OSError as err:
                # The numbers could not be kept: sending would let a restart reuse them. Fail
                # closed; the client reconnects and resends, nothing it was told is lost.
                log.critical("FIX store write failed; connection dropped", fix=self.session.name,
                             error=str(err))
                self.dropped_reason = f"store write failed: {err.strerror}"
                self.abort()
                return
        self.transport.write(bytes(self._out))
        self._out.clear()
        if self.transport.get_write_buffer_size() > self.router.cfg.gateway.max_client_buffer:
            self.dropped_reason = "slow consumer"
            log.warning("FIX slow consumer dropped", session=self.session_id, user=self.user)
            self.abort()

    def close(self) -> None:
        """Flush what is queued, then close."""
        if self.closed:
            return
        self.flush()
        if self.session is not None:
            self.session.store.flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def send(self, msg: Any) -> None:
        """``SessionPort.send``: the router's messages, in FIX."""
        s = self.session
        if s is None or self.closed:
            return
        t = type(msg)
        if t is ExecReport:
            if self._dup_probe and msg.cl_ord_id == self._dup_probe \
                    and msg.reason == Reason.DUPLICATE_CL_ORD_ID:
                log.info("PossDup NewOrderSingle already received: not a second order",
                         session=self.session_id, cl_ord_id=msg.cl_ord_id)
                return
            s.exec_report(msg)
        elif t is CancelReject:
            self._cancel_reject(msg)
        elif t is Alert:
            # News (B): the alert's sentence, its code in Headline and in the reason tag.
            s.emit(b"B", b"148=%d %s\x0133=1\x0158=%s\x01%d=%d\x01" % (
                msg.code, Reason(msg.code).name.encode(), msg.text.encode().replace(b"\x01", b" "),
                orders.TAG_REASON, msg.code))
        elif t is Logout:
            self.logout(msg.text or "logout")

    def _cancel_reject(self, rej: CancelReject) -> None:
        status, order_id, account = b"8", "", ""
        for o in self.router.user_orders(self.user):
            if o.cl_ord_id == rej.orig_cl_ord_id:
                status = orders.ORD_STATUS.get(o.status, b"8")
                order_id, account = o.order_id, o.account
                break
        self.session.emit(b"9", orders.cancel_reject(rej, status, order_id, account))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ inbound
    def _garbled(self, g: Garbled) -> None:
        self.garbled += 1
        self.acceptor.stats["garbled"] += 1
        if self.garbled <= 3:
            log.warning("FIX garbled message ignored", session=self.session_id, peer=self.peer,
                        why=g.why, bytes=g.size)
        if self.garbled >= self.acceptor.cfg.garbled_limit:
            self._fatal(f"{self.garbled} garbled messages in a row")

    def _message(self, msg: FixMessage) -> None:
        self.last_in = time.monotonic_ns()
        if self.state != State.ACTIVE:
            if self.state == State.AWAIT_LOGON and msg.msg_type == b"A":
                self._logon(msg)
            elif self.state == State.LOGGING_ON:
                pass  # sent before our Logon answer: not processed, so resent after the gap
            else:
                # Nothing but a Logon before logon (FIX: disconnect without a reply).
                log.warning("FIX message before logon; closing", peer=self.peer,
                            msg_type=msg.msg_type.decode("latin-1"))
                self.abort()
            return
        s = self.session
        assert s is not None
        f = msg.fields
        if f.get(49) != s.their or f.get(56) != s.our:
            self._reject(msg, R_COMPID, 49 if f.get(49) != s.their else 56,
                         "SenderCompID/TargetCompID do not match this session")
            self.logout("CompID problem", wait=False)
            return
        seq = msg.seq
        if not seq:
            self.logout("MsgSeqNum (34) missing or not a number", wait=False)
            return
        store = s.store
        expected = store.next_in
        mt = msg.msg_type
        if mt == b"4" and f.get(123) != b"Y":  # SequenceReset-Reset: numbers do not apply
            self._sequence_reset(msg, gap_fill=False)
            return
        if seq > expected:
            if mt == b"5":
                self._peer_logout(msg)
                return
            if mt == b"2":
                self._resend_request(msg)
            if self.resend_until < expected:
                self.resend_until = seq
                s.emit(b"2", b"7=%d\x0116=0\x01" % expected)
                log.info("FIX sequence gap; resend requested", session=self.session_id,
                         expected=expected, received=seq)
            return
        if seq < expected:
            if f.get(43) == b"Y":
                return  # a repeat of what was processed
            self.logout(f"MsgSeqNum too low, expecting {expected} but received {seq}",
                        wait=False)
            return
        # In sequence.
        if msg.problem is not None:
            store.set_next_in(seq + 1)
            self._reject(msg, *msg.problem)
            return
        if mt == b"4":
            self._sequence_reset(msg, gap_fill=True)
            return
        store.set_next_in(seq + 1)
        if mt in ORDER_TYPES:
            if s.drop_copy:
                self._business_reject(msg, 3, "a drop-copy session is read-only")
            elif mt == b"D":
                self._new_order(msg)
            elif mt == b"F":
                self._cancel(msg)
            elif mt == b"H":
                self._status(msg)
            else:
                self._mass_status(msg)
        elif mt == b"0":
            if self.test_sent and f.get(112) is not None:
                self.test_sent = 0
        elif mt == b"1":
            tid = f.get(112)
            if tid is None:
                self._reject(msg, R_REQUIRED_MISSING, 112, "required tag 112 (TestReqID) missing")
            else:
                s.emit(b"0", b"112=" + tid + b"\x01")
        elif mt == b"2":
            self._resend_request(msg)
        elif mt == b"5":
            self._peer_logout(msg)
        elif mt == b"3":
            log.warning("FIX Reject from the peer", session=self.session_id,
                        ref_seq=msg.text(45), reason=msg.text(373), text=msg.text(58))
        elif mt == b"A":
            self.logout("Logon on a logged-on session", wait=False)
        elif mt in FIX44_TYPES:
            self._business_reject(msg, 3, f"MsgType {mt.decode()} is not supported here")
        else:
            self._reject(msg, R_INVALID_MSGTYPE, 35, f"MsgType {mt[:10].decode('latin-1')!r} is "
                         "not a FIX 4.4 message type")
        if self.resend_until and store.next_in > self.resend_until:
            self.resend_until = 0

    def _sequence_reset(self, msg: FixMessage, gap_fill: bool) -> None:
        s = self.session
        assert s is not None
        v = msg.fields.get(36)
        if v is None or not v.isdigit() or len(v) > 18:
            if gap_fill:
                s.store.set_next_in(msg.seq + 1)
            self._reject(msg, R_REQUIRED_MISSING if v is None else 5, 36,
                         "NewSeqNo (36) missing or not a number")
            return
        new = int(v)
        if new <= (msg.seq if gap_fill else s.store.next_in - 1):
            if gap_fill:
                s.store.set_next_in(msg.seq + 1)
            self._reject(msg, 5, 36, f"NewSeqNo {new} would move the sequence backwards")
            return
        s.store.set_next_in(new)
        if self.resend_until and new > self.resend_until:
            self.resend_until = 0

    def _resend_request(self, msg: FixMessage) -> None:
        b, e = msg.fields.get(7), msg.fields.get(16)
        if b is None or e is None or not b.isdigit() or not e.isdigit() or len(b) > 18 \
                or len(e) > 18:
            self._reject(msg, R_REQUIRED_MISSING, 7 if b is None or not b.isdigit() else 16,
                         "BeginSeqNo (7) and EndSeqNo (16) are required numbers")
            return
        log.info("FIX resend requested", session=self.session_id, begin=int(b), end=int(e))
        self.session.resend(int(b), int(e))  # type: ignore[union-attr]

    def _peer_logout(self, msg: FixMessage) -> None:
        if self.state == State.ACTIVE and not self._close_timer:
            self.session.emit(b"5", b"58=goodbye\x01")  # type: ignore[union-attr]
        self.dropped_reason = "logout"
        self.close()

    def _reject(self, msg: FixMessage, reason: int, tag: int, text: str) -> None:
        self.acceptor.stats["rejects"] += 1
        log.info("FIX message rejected", session=self.session_id, ref_seq=msg.seq,
                 msg_type=msg.msg_type[:10].decode("latin-1"), reason=reason, tag=tag, text=text)
        body = b"45=%d\x01" % msg.seq
        if tag:
            body += b"371=%d\x01" % tag
        body += b"372=%s\x01373=%d\x0158=%s\x01" % (msg.msg_type[:16], reason, text.encode())
        self.session.emit(b"3", body)  # type: ignore[union-attr]

    def _business_reject(self, msg: FixMessage, reason: int, text: str) -> None:
        self.acceptor.stats["business_rejects"] += 1
        ref = msg.fields.get(11) or msg.fields.get(584) or b""
        body = b"45=%d\x01372=%s\x01" % (msg.seq, msg.msg_type[:16])
        if ref:
            body += b"379=" + ref[:64] + b"\x01"
        self.session.emit(b"j", body + b"380=%d\x0158=%s\x01" % (reason, text.encode()))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ logon
    def _logon(self, msg: FixMessage) -> None:
        f = msg.fields
        if msg.problem is not None:
            log.warning("FIX Logon malformed; closing", peer=self.peer, problem=msg.problem[2])
            self.abort()
            return
        key = (f.get(56, b""), f.get(49, b""))
        s = self.acceptor.sessions.get(key)  # type: ignore[arg-type]
        if s is None:
            log.warning("FIX Logon for an unknown CompID pair; closing", peer=self.peer,
                        sender=f.get(49, b"").decode("latin-1")[:64],
                        target=f.get(56, b"").decode("latin-1")[:64])
            self.acceptor.stats["logons_refused"] += 1
            self.abort()
            return
        if s.conn is not None and not s.conn.closed:
            log.warning("FIX Logon for a session already logged on; closing the newcomer",
                        peer=self.peer, fix=s.name)
            self.acceptor.stats["logons_refused"] += 1
            self.abort()
            return
        hb = f.get(108)
        if hb is None or not hb.isdigit() or not 1 <= int(hb) <= self.acceptor.cfg.max_heartbeat_s:
            s.conn = self
            self.session = s
            self._logon_refused(f"HeartBtInt (108) must be 1 .. "
                                f"{self.acceptor.cfg.max_heartbeat_s} seconds")
            return
        s.conn = self  # reserved while the secret is checked
        self.session = s
        self.state = State.LOGGING_ON
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        asyncio.ensure_future(self._logon_checked(msg, s, int(hb)))

    async def _logon_checked(self, msg: FixMessage, s: FixSession, hb: int) -> None:
        name, secret = msg.text(553), msg.text(554)
        # The same Logon a native client sends, application and terminal fields from their
        # custom tags (穿透式监管, ``gateway.terminal``): checked, journaled and relayed alike.
        f = msg.fields
        terminal = TerminalData(*(msg.text(t) for t in orders.TAG_TERMINAL)) \
            if any(t in f for t in orders.TAG_TERMINAL) else None
        logon = Logon(name, secret, [], float(hb), True, msg.text(orders.TAG_APP_ID),
                      msg.text(orders.TAG_AUTH_CODE), terminal)
        problem = terminal_problem(logon)
        if problem is not None:
            self._logon_refused(f"{int(Reason.TERMINAL_INFO_INVALID)} "
                                f"{Reason.TERMINAL_INFO_INVALID.description} ({problem})")
            return
        user, refused = await self.guard.authenticate(name, secret, self.peer,
                                                      lambda: self.closed)
        if refused is None and user is not None and not await check_application(
                self.guard, user, logon):
            locked = self.guard.lockout.failed(name, time.time_ns(), self.peer)
            refused, user = (Reason.LOCKED_OUT if locked else Reason.APP_NOT_REGISTERED), None
        if refused is None and user is not None and self.peer_user is not None \
                and user.name != self.peer_user:
            log.warning("FIX logon refused: the client certificate belongs to another user",
                        user=name, certificate_user=self.peer_user)
            refused, user = Reason.AUTH_FAILED, None
        if refused is None and user is not None and user.name != s.cfg.user:
            refused, user = Reason.AUTH_FAILED, None
            self.guard.lockout.failed(name, time.time_ns(), self.peer)
        if refused is not None:
            self.acceptor.stats["logons_refused"] += 1
            log.warning("FIX logon refused", fix=s.name, user=name, peer=self.peer,
                        reason=refused.name)
            self._logon_refused(f"{int(refused)} {refused.description}")
            return
        if user is None or self.closed:
            if s.conn is self:
                s.conn = None
            return
        store = s.store
        seq = msg.seq
        reset = msg.fields.get(141) == b"Y"
        if reset:
            store.reset()
        if seq < store.next_in:
            self._logon_refused(f"MsgSeqNum too low, expecting {store.next_in} but received "
                                f"{seq}")
            return
        self._logon_ok(user, s, hb, reset, seq, logon)

    def _logon_ok(self, user: UserConfig, s: FixSession, hb: int, reset: bool, seq: int,
                  logon: Logon) -> None:
        now = time.time_ns()
        self.guard.lockout.succeeded(user.name, now, self.peer)
        self.user = user.name
        self.automated = user.automated
        self.cancel_on_disconnect = True if user.cancel_on_disconnect is None \
            else user.cancel_on_disconnect
        self.hb_ns = hb * NS
        self.state = State.ACTIVE
        self.guard.leave(self)
        store = s.store
        store.compact_if_large()
        expected = store.next_in
        if seq == expected:
            store.set_next_in(seq + 1)
        s.emit(b"A", b"98=0\x01108=%d\x01%s" % (hb, b"141=Y\x01" if reset else b""))
        if seq > expected:
            self.resend_until = seq
            s.emit(b"2", b"7=%d\x0116=0\x01" % expected)
        if not s.drop_copy:
            self.accounts = frozenset(user.accounts)
            router = self.router
            logon.accounts = sorted(self.accounts)
            logon.cancel_on_disconnect = self.cancel_on_disconnect
            # Journaled as a native logon (secret and auth code masked): recovery re-creates
            # the session.
            router.record(jr.Inbound(now, self.session_id, journaled_logon(logon)))
            router.engine.register_session(self.session_id, self.automated)
            router.add_session(self)
            if router.on_logon is not None:  # terminal information to the exchange
                router.on_logon(self, logon, now)
        self.acceptor.stats["logons"] += 1
        log.info("FIX logon", session=self.session_id, fix=s.name, user=self.user,
                 peer=self.peer, kind=s.cfg.kind, heartbeat_s=hb, reset=reset,
                 next_in=store.next_in, next_out=store.next_out)

    def _logon_refused(self, text: str) -> None:
        s = self.session
        if s is not None:
            s.emit(b"5", fields_bytes([(58, text)]))
        self.close()
        if s is not None and s.conn is self:
            s.conn = None

    # ------------------------------------------------------------------ orders
    def _new_order(self, msg: FixMessage) -> None:
        order = orders.new_order(msg)
        if type(order) is not NewOrder:
            self._reject(msg, *order)  # type: ignore[misc]
            return
        if msg.fields.get(43) == b"Y":
            for o in self.router.user_orders(self.user):
                if o.cl_ord_id == order.cl_ord_id:
                    log.info("PossDup NewOrderSingle of a working order: status sent",
                             session=self.session_id, cl_ord_id=o.cl_ord_id)
                    self._status_report(o)
                    return
            self._dup_probe = self.acceptor.dup_probe = order.cl_ord_id
            try:
                self.router.new_order(self, order)
            finally:
                self._dup_probe = self.acceptor.dup_probe = ""
            return
        self.router.new_order(self, order)

    def _cancel(self, msg: FixMessage) -> None:
        c = orders.cancel(msg)
        if type(c) is tuple:
            self._reject(msg, *c)
            return
        self.router.cancel(self, c)  # type: ignore[arg-type]

    def _status_report(self, o: Any, extra: bytes = b"") -> None:
        rep = ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, o.status, ExecType.STATUS,
                         0, "", 0, 0.0, o.cum, o.leaves, time.time_ns(), o.side, o.price, o.qty)
        s = self.session
        assert s is not None
        acc = s.fills.get((o.account, o.cl_ord_id))
        s.emit(b"8", orders.exec_report(rep, self.acceptor.exec_id(rep),
                                        acc[1] / acc[0] if acc else 0.0, now_timestamp(), extra))

    def _status(self, msg: FixMessage) -> None:
        """OrderStatusRequest (H): the state of one of the user's working orders."""
        clid = msg.text(11)
        if not clid:
            self._reject(msg, R_REQUIRED_MISSING, 11, "required tag 11 (ClOrdID) missing")
            return
        extra = b"790=" + msg.fields[790] + b"\x01" if 790 in msg.fields else b""
        for o in self.router.user_orders(self.user, msg.text(1)):
            if o.cl_ord_id == clid and o.account in self.accounts:
                self._status_report(o, extra)
                return
        rep = ExecReport(clid, "", msg.text(1), msg.text(55), OrdStatus.REJECTED, ExecType.STATUS,
                         int(Reason.UNKNOWN_ORDER), Reason.UNKNOWN_ORDER.description)
        self.session.emit(b"8", orders.exec_report(  # type: ignore[union-attr]
            rep, self.acceptor.exec_id(rep), 0.0, now_timestamp(), extra))

    def _mass_status(self, msg: FixMessage) -> None:
        """OrderMassStatusRequest (AF): every working order of the user (in Account 1, if
        given), the last marked LastRptRequested 912=Y."""
        req = msg.fields.get(584)
        if req is None:
            self._reject(msg, R_REQUIRED_MISSING, 584, "required tag 584 (MassStatusReqID) missing")
            return
        mine = [o for o in self.router.user_orders(self.user, msg.text(1))
                if o.account in self.accounts]
        tag = b"584=" + req[:64] + b"\x01"
        for n, o in enumerate(mine):
            self._status_report(o, tag + (b"912=Y\x01" if n == len(mine) - 1 else b""))
        if not mine:
            rep = ExecReport("NONE", "", msg.text(1), "", OrdStatus.REJECTED, ExecType.STATUS,
                             0, "no working orders")
            self.session.emit(b"8", orders.exec_report(  # type: ignore[union-attr]
                rep, self.acceptor.exec_id(rep), 0.0, now_timestamp(), tag + b"912=Y\x01"))

    # ------------------------------------------------------------------ ending
    def logout(self, text: str, wait: bool = True) -> None:
        """Send Logout; ``wait``: give the peer a moment to answer before closing."""
        if self.closed:
            return
        s = self.session
        if s is not None and self.state == State.ACTIVE:
            s.emit(b"5", fields_bytes([(58, text)]))
        self.dropped_reason = self.dropped_reason or text
        if wait and self.state == State.ACTIVE:
            self.flush()
            self._close_timer = asyncio.get_running_loop().call_later(2.0, self.close)
        else:
            self.close()

    def _fatal(self, text: str) -> None:
        log.warning("FIX session ended", session=self.session_id, peer=self.peer, why=text)
        if self.state == State.ACTIVE:
            self.logout(text, wait=False)
        else:
            self.abort()

    def tick(self, now_mono: int) -> None:
        """The server's one-second tick for router sessions: the acceptor keeps FIX timers
        itself (``timer``), for order-entry and drop-copy sessions alike."""

    def timer(self, now: int) -> None:
        if self.closed or self.state != State.ACTIVE:
            return
        hb = self.hb_ns
        if now - self.last_out >= hb:
            self.session.emit(b"0", b"")  # type: ignore[union-attr]
        if self.test_sent:
            if now - self.test_sent >= hb:
                self.dropped_reason = "no answer to TestRequest"
                self.logout("no answer to TestRequest", wait=False)
        elif now - self.last_in >= hb + hb // 5:
            self.test_sent = now
            self.session.emit(b"1", b"112=TEST-%d\x01" % (now // 1_000_000))  # type: ignore[union-attr]
