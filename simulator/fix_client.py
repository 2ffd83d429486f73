"""The client library over FIX 4.4: the same ``Client`` API, spoken to the gateway's FIX port.

``fengkong sim replay --fix`` and ``fengkong sim scenario --fix`` drive the gateway through its
FIX front with this, so an algo team runs the same flows and scenarios through the FIX path
that its own engine will use. ``FixClient`` is a ``simulator.client.Client`` whose wire is FIX:
``_write`` turns the native messages into FIX (``gateway.fix.orders`` is the one home of the
tag mapping, read both ways) and a small protocol turns FIX answers back into native
``ExecReport`` / ``CancelReject`` / ``Alert`` / ``Logout``, so order handles, callbacks, the
report queue and every caller work unchanged.

Why our own initiator and not QuickFIX: the simulator is part of the runtime package and must
not need a C++ engine with its own threads (QuickFIX is a test dependency here, used to prove
interop); this one is ~200 lines on asyncio, on the same event loop as the rest of a replay.

It is a test client, deliberately small: each connection logs on with ResetSeqNumFlag=Y, keeps
no message store, and answers a ResendRequest with a SequenceReset-GapFill (what it sent is
not sent again). Username 553 / Password 554 are the user and secret; the SenderCompID defaults
to the user name in upper case, the TargetCompID to ``FENGKONG`` (README, "FIX").
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

from checks.enums import AlertLevel, ExecType, OrdStatus
from checks.reasons import Reason
from gateway.fix import orders
from gateway.fix.codec import FixDecoder, FixMessage, Garbled, fields_bytes, frame, now_timestamp
from gateway.protocol import (
    DEFAULT_MAX_FRAME,
    Alert,
    CancelOrder,
    CancelReject,
    ExecReport,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    MarketData,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
    TerminalData,
)
from simulator.client import Client, ClientProtocol, ConnectionClosed

__all__ = ["FixClient"]
DEFAULT_TARGET = "FENGKONG"
_SENT_MEMORY = 100_000  # MsgSeqNum -> ClOrdID of recent orders, to place a session Reject


def _reason_of(text: str) -> int:
    head = text.split(" ", 1)[0]
    return int(head) if head.isdigit() else 0


class _FixProtocol(ClientProtocol):
    """The client protocol with a FIX decoder: FIX messages go to ``FixClient._on_fix``."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_MAX_FRAME)
        self.fix_decoder = FixDecoder(1 << 20)

    def data_received(self, data: bytes) -> None:
        try:
            items = self.fix_decoder.feed(data)
        except Exception as err:  # Oversized: the server sent something we cannot frame
            if self.client is not None:
                self.client._on_lost(ConnectionClosed(f"bad FIX from the server: {err}"))
            if self.transport is not None:
                self.transport.abort()
            return
        messages = [m for m in items if type(m) is not Garbled]
        if self.client is None:
            self.early.extend(messages)
            return
        self.client._on_fix(messages)  # type: ignore[attr-defined]


class FixClient(Client):
    """A ``Client`` over FIX 4.4 (see the module docstring)."""

    def __init__(self, proto: Any, user: str, sender: str, target: str, **kw: Any) -> None:
        super().__init__(proto, user, **kw)
        self._fixed = f"49={sender}\x0156={target}\x01".encode()
        self._seq = 1
        self._logged_on = False
        self._sent: dict[int, tuple[bytes, str, str]] = {}  # seq -> (MsgType, ClOrdID, orig)
        self._status_counts: dict[str, int] = {}

    @classmethod
    async def connect(cls, host: str, port: int, user: str, secret: str,  # type: ignore[override]
                      accounts: Iterable[str] = (), heartbeat_s: float = 5.0,
                      cancel_on_disconnect: bool = True, *, timeout: float = 10.0,
                      report_queue: int = 10_000,
                      on_report: Callable[[ExecReport | CancelReject], None] | None = None,
                      on_alert: Callable[[Alert], None] | None = None,
                      on_market_data: Callable[[MarketData], None] | None = None,
                      id_prefix: str | None = None, tls: ssl.SSLContext | None = None,
                      server_hostname: str | None = None, app_id: str = "",
                      auth_code: str = "", terminal: TerminalData | None = None,
                      sender_comp_id: str | None = None,
                      target_comp_id: str = DEFAULT_TARGET, **_: Any) -> FixClient:
        """Connect to a FIX port and log on; ``LogonRejected`` names the reason code.
        ``accounts`` and ``cancel_on_disconnect`` are the user's configuration over FIX;
        ``app_id``, ``auth_code`` and ``terminal`` travel in the Logon's custom tags."""
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(_FixProtocol, host, port, ssl=tls,
                                   server_hostname=(server_hostname or host) if tls else None),
            timeout)
        client = cls(proto, user, sender_comp_id or user.upper(), target_comp_id,
                     report_queue=report_queue, on_report=on_report, on_alert=on_alert,
                     on_market_data=on_market_data, id_prefix=id_prefix)
        proto.client = client
        hb = max(1, round(heartbeat_s)) if heartbeat_s > 0 else 0
        await client._log_on(proto, Logon(user, secret, list(accounts), float(hb),
                                          cancel_on_disconnect, app_id, auth_code, terminal),
                             timeout)
        return client

    def _on_early(self, messages: list[Any]) -> None:
        self._on_fix(messages)

    # ------------------------------------------------------------------ out
    def _emit(self, msg_type: bytes, body: bytes, seq: int | None = None,
              poss_dup: bool = False) -> None:
        if seq is None:
            seq = self._seq
            self._seq += 1
        header = self._fixed + b"34=%d\x01" % seq + (b"43=Y\x01" if poss_dup else b"") + \
            b"52=%s\x01" % now_timestamp()
        data = frame(msg_type, header, body)
        if self._batch is not None:
            self._batch += data
        elif self._closed is None:
            self._transport.write(data)

    def _remember(self, mt: bytes, clid: str, orig: str = "") -> None:
        self._sent[self._seq] = (mt, clid, orig)
        if len(self._sent) > _SENT_MEMORY:
            del self._sent[next(iter(self._sent))]

    def _write(self, msg: Any) -> None:
        t = type(msg)
        if t is NewOrder:
            self._remember(b"D", msg.cl_ord_id)
            self._emit(b"D", orders.new_order_fields(msg, now_timestamp()))
        elif t is CancelOrder:
            self._remember(b"F", msg.cl_ord_id, msg.orig_cl_ord_id)
            self._emit(b"F", fields_bytes([(11, msg.cl_ord_id), (41, msg.orig_cl_ord_id),
                                                  (1, msg.account), (60, now_timestamp())]))
        elif t is OrderStatusRequest:
            req: list[tuple[int, object]] = [(584, msg.req_id), (585, 7)]
            if msg.account:
                req.append((1, msg.account))
            self._status_counts[msg.req_id] = 0
            self._emit(b"AF", fields_bytes(req))
        elif t is Heartbeat:
            self._emit(b"0", b"")
        elif t is Logout:
            self._emit(b"5", fields_bytes([(58, msg.text)]))
        elif t is Logon:
            fields: list[tuple[int, object]] = [
                (98, 0), (108, int(msg.heartbeat_s) or 30), (141, "Y"), (553, msg.user),
                (554, msg.secret)]
            if msg.app_id:
                fields += [(orders.TAG_APP_ID, msg.app_id), (orders.TAG_AUTH_CODE, msg.auth_code)]
            if msg.terminal is not None:
                values = [getattr(msg.terminal, f) for f in msg.terminal.__struct_fields__]
                fields += [(tag, v) for tag, v in zip(orders.TAG_TERMINAL, values, strict=True)
                           if v]
            self._emit(b"A", fields_bytes(fields))

    # ------------------------------------------------------------------ in
    def _on_fix(self, messages: list[FixMessage]) -> None:
        out: list[Any] = []
        for m in messages:
            mt = m.msg_type
            if mt == b"8":
                rep = orders.parse_exec_report(m)
                req = m.text(584)
                if req:
                    if rep.cl_ord_id != "NONE":
                        self._status_counts[req] = self._status_counts.get(req, 0) + 1
                        out.append(rep)
                    if m.fields.get(912) == b"Y":
                        out.append(OrderStatusEnd(req, self._status_counts.pop(req, 0)))
                else:
                    out.append(rep)
            elif mt == b"9":
                out.append(orders.parse_cancel_reject(m))
            elif mt == b"B":
                code = int(m.fields.get(orders.TAG_REASON, b"0") or 0)
                out.append(Alert(int(AlertLevel.WARNING), code, "", m.text(58), time.time_ns()))
            elif mt == b"A":
                self._logged_on = True
                out.append(LogonAck(0, 0, time.time_ns()))
            elif mt == b"5":
                text = m.text(58)
                out.append(Logout(text, _reason_of(text)) if self._logged_on else
                           LogonReject(_reason_of(text) or int(Reason.AUTH_FAILED), text))
            elif mt == b"1":
                self._emit(b"0", b"112=" + m.fields.get(112, b"") + b"\x01")
            elif mt == b"2":
                # No store: what it asks for again is skipped (a test client; see above).
                begin = m.fields.get(7, b"1")
                self._emit(b"4", b"123=Y\x0136=%d\x01" % self._seq,
                           seq=int(begin) if begin.isdigit() else 1, poss_dup=True)
            elif mt in (b"3", b"j"):
                out.extend(self._refused(m))
        if out or messages:
            self._on_messages(out)

    def _refused(self, m: FixMessage) -> list[Any]:
        """A session Reject or BusinessMessageReject of an order or cancel: told to the order's
        handle as the native protocol would (a bad enumeration is 408, anything else 108)."""
        ref = m.fields.get(45, b"")
        sent = self._sent.pop(int(ref), None) if ref.isdigit() else None
        if sent is None:
            return []
        mt, clid, orig = sent
        code = Reason.INVALID_FIELD if m.fields.get(373) in (b"5", b"6") else Reason.PROTOCOL_ERROR
        text = f"{code.description} ({m.text(58)})"
        if mt == b"D":
            return [ExecReport(clid, "", "", "", int(OrdStatus.REJECTED), int(ExecType.REJECTED),
                               int(code), text, ts_ns=time.time_ns())]
        return [CancelReject(clid, orig, int(code), text)]
