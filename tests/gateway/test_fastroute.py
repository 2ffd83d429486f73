"""The compiled order path decides, sends and journals exactly like the reference router.

``gateway.router.Router`` (Python) is the reference; ``gateway.fast_router.FastRouter`` runs the
same order path compiled (``gateway/fastroute.pyx``). Hypothesis generates flows — orders (good
and bad), cancels, acks, partial and full fills (some repeated), cancels and rejects from the
exchange, cancel rejects, link drops and returns, sessions closing with and without
cancel-on-disconnect, reconciliations, reports for orders nobody knows — and drives each through
both, at the same instants, each with its own engine and journal. Everything observable must be
identical: the bytes each client session and the exchange link were sent, every journal record,
the engine's book, the router's counters and working orders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.calendar import ns_from_local
from checks.digest import digest
from checks.engine import Engine as ReferenceEngine
from checks.enums import ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from gateway import journal as jr
from gateway.audit import AuditLog
from gateway.config import load_gateway_config
from gateway.fast_router import FastRouter
from gateway.protocol import (
    CancelOrder,
    CancelReject,
    ExecReport,
    FrameDecoder,
    Logon,
    NewOrder,
    OrderStatusEnd,
    ProtocolError,
    encode,
    encode_into,
)
from gateway.router import Router
from gateway.server import Gateway
from gateway.session import State
from tests.conftest import EXAMPLES

pytestmark = pytest.mark.skipif(FastRouter is None, reason="gateway/fastroute.pyx is not built")

T0 = ns_from_local(2026, 11, 30, 10, 0)  # Monday, day session
MS = 1_000_000
USER = "algo1"
ACCOUNTS = ("A001", "A004")


class Connection:
    """A ``gateway.framed.FramedProtocol`` as the routers use it, without a socket: every frame
    sent — by ``send``, or encoded into ``frame_buffer`` by the compiled path, which then calls
    ``read_done`` — stays in the buffer, in the order a socket would carry it; reads come as bytes
    (``FastRouter.client_data`` / ``exchange_data``) through its own ``FrameDecoder``."""

    def __init__(self) -> None:
        self.closed = False
        self.decoder = FrameDecoder()
        self._out = self.frame_buffer = bytearray()
        self.messages_in = 0
        self.last_in = 0

    def frames(self) -> list[bytes]:
        out, frames, pos = bytes(self._out), [], 0
        while pos < len(out):
            end = pos + 4 + int.from_bytes(out[pos:pos + 4], "big")
            frames.append(out[pos:end])
            pos = end
        return frames

    def queued(self, start: int) -> None:
        assert start <= len(self._out)

    read_done = queued

    def on_message(self, msg: Any) -> None:
        raise AssertionError(f"the router passed back {msg!r}")

    def on_protocol_error(self, text: str) -> None:
        raise AssertionError(text)

    def on_internal_error(self, msg: Any, exc: Exception) -> None:
        raise exc


class Session(Connection):
    """A logged-on client session."""

    def __init__(self, sid: int) -> None:
        super().__init__()
        self.session_id = sid
        self.user = USER
        self.accounts = frozenset(ACCOUNTS)
        self.cancel_on_disconnect = False
        self.automated = True
        self.state = State.ACTIVE
        self._max_frame = 300  # a long text from the exchange takes the object path

    def send(self, msg: Any) -> None:
        encode_into(msg, self._out)


class Link(Connection):
    """The exchange link (its connection is itself); down, it sends nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.proto = self

    def send(self, msg: Any) -> bool:
        if not self.up:
            return False
        encode_into(msg, self._out)
        return True

    @property
    def sent(self) -> list[Any]:
        return FrameDecoder().feed(bytes(self._out))


class Side_:
    """One router (reference or compiled) with its own engine, journal, sessions and link."""

    def __init__(self, router_cls: type, path: Path, engine_cls: Any) -> None:
        cfg = load_gateway_config(EXAMPLES / "gateway.toml")
        self.path = path
        self.gw = Gateway(cfg, engine_cls=engine_cls, router_cls=router_cls)
        self.audit = AuditLog(jr.Journal.open(path))
        r = self.router = self.gw.router
        assert type(r) is router_cls
        r.audit = self.audit
        r.prefix = "gw.t."  # the same exchange ids on both sides
        r.link = self.link = Link()
        self.now = T0
        r.clock = lambda: self.now
        r.record(jr.State(T0 - 1, "boot", r.prefix.encode()))
        self.sessions: dict[int, Session] = {}
        for sid in (1, 2):
            self.logon(sid, T0)

    def logon(self, sid: int, now: int) -> None:
        s = self.sessions[sid] = Session(sid)
        self.router.record(jr.Inbound(now, sid, Logon(USER, "***", list(ACCOUNTS), 5.0, False)))
        self.gw.engine.register_session(sid, True)
        self.router.add_session(s)

    def exch_orders(self) -> list[NewOrder]:
        return [m for m in self.link.sent if type(m) is NewOrder]

    def exch_cancels(self) -> list[CancelOrder]:
        return [m for m in self.link.sent if type(m) is CancelOrder]

    def observed(self) -> dict[str, Any]:
        self.audit.flush()
        journal = [rec for _, rec in jr.JournalReader(self.path)]  # the records so far
        r = self.router
        return {
            "sessions": {sid: s.frames() for sid, s in self.sessions.items()},
            "link": [encode(m) for m in self.link.sent],
            "journal": journal,
            "book": digest(self.gw.engine.snapshot()),
            "stats": dict(r.stats),
            "orders": sorted((v["exch_id"], v["status"], v["cum"], v["leaves"], v["cancel_id"],
                              v["session_id"]) for v in r.open_order_views()),
            "alerts": [(a.level, a.code, a.scope, a.text) for a in r.alerts],
            "pending": r.pending_cancels(),
        }


def _report(side: Side_, k: int, et: int, status: int, **kw: Any) -> ExecReport | None:
    orders = side.exch_orders()
    if not orders:
        return None
    o = orders[k % len(orders)]
    return ExecReport(o.cl_ord_id, f"X{k % len(orders)}", o.account, o.symbol, status, et, **kw)


def _from_client(side: Side_, s: Session, *msgs: Any) -> None:
    """Messages of one read from a client: the compiled router reads their bytes, the reference
    takes the decoded messages as ``FramedProtocol.data_received`` hands them over."""
    r = side.router
    if type(r) is FastRouter:
        r.client_data(s, b"".join(encode(m) for m in msgs))
        return
    for m in msgs:
        if type(m) is NewOrder:
            r.new_order(s, m, side.now)
        else:
            r.cancel(s, m, side.now)


def _from_exchange(side: Side_, rep: ExecReport | None) -> None:
    r = side.router
    if rep is None:
        return
    if type(r) is FastRouter:
        r.exchange_data(side.link, encode(rep))
    else:
        r.exchange_report(rep, side.now)


def _order(step: tuple) -> NewOrder:
    _, sid, clid, account, side_, offset, ticks, qty = step
    return NewOrder(clid if type(clid) is str else f"c{clid}", account, "rb2605", side_, offset,
                    Hedge.SPEC, OrdType.LIMIT, Tif.GFD, 3200.0 + ticks, qty)


def apply(side: Side_, step: tuple, now: int) -> None:
    r = side.router
    side.now = now
    kind = step[0]
    if kind == "order":
        s = side.sessions.get(step[1])
        if s is not None and not s.closed:
            _from_client(side, s, _order(step))
    elif kind == "burst":  # several orders in one read
        s = side.sessions.get(step[1])
        if s is not None and not s.closed:
            _from_client(side, s, *(_order(o) for o in step[2]))
    elif kind == "cancel":
        _, sid, clid, account = step
        s = side.sessions.get(sid)
        if s is not None and not s.closed:
            _from_client(side, s, CancelOrder(f"x{now}", f"c{clid}", account))
    elif kind == "ack":
        _from_exchange(side, _report(side, step[1], ExecType.NEW, OrdStatus.NEW,
                                     text=step[2] if len(step) > 2 else ""))
    elif kind == "fill":
        _, k, qty, exec_n = step
        _from_exchange(side, _report(side, k, ExecType.TRADE, OrdStatus.PARTIALLY_FILLED,
                                     last_qty=qty, last_px=3200.0, exec_id=f"E{exec_n}"))
    elif kind == "canceled":
        _from_exchange(side, _report(side, step[1], ExecType.CANCELED, OrdStatus.CANCELED))
    elif kind == "reject":
        _from_exchange(side, _report(side, step[1], ExecType.REJECTED, OrdStatus.REJECTED,
                                     reason=step[2], text="exchange says no"))
    elif kind == "cxl_reject":
        cancels = side.exch_cancels()
        if cancels:
            c = cancels[step[1] % len(cancels)]
            r.cancel_reject(CancelReject(c.cl_ord_id, c.orig_cl_ord_id, 1204, "too late"), now)
    elif kind == "unknown":
        r.exchange_report(ExecReport("nobody", "X", "A001", "rb2605", OrdStatus.NEW, ExecType.NEW),
                          now)
    elif kind == "link":
        up = step[1]
        if up and not side.link.up:
            side.link.up = True
            req = r.recon_request("r")
            r.recon_begin(req, now)
            for i, o in enumerate(sorted(r.orders.values(), key=lambda o: o.exch_id)):
                if i % 3 != 2:  # one in three the exchange no longer has
                    r.exchange_report(ExecReport(o.exch_id, "X", o.account, o.symbol,
                                                 OrdStatus.NEW, ExecType.STATUS,
                                                 cum_qty=o.cum, leaves_qty=o.leaves), now)
            r.reconciled(OrderStatusEnd("r", len(r.orders)), now)
            r.link_restored()
        else:
            side.link.up = up
    elif kind == "close":
        _, sid, cod = step
        s = side.sessions.get(sid)
        if s is not None and not s.closed:
            s.closed = True
            r.remove_session(s, cod, now)
    elif kind == "logon":
        s = side.sessions.get(step[1])
        if s is not None and s.closed:
            side.logon(step[1], now)
    elif kind == "cancel_all":
        r.cancel_refs(sorted(r.orders), "test: cancel all", now)


clids = st.integers(0, 12)
steps = st.one_of(
    st.tuples(st.just("order"), st.sampled_from((1, 2)), clids,
              st.sampled_from(("A001", "A004", "A001", "X999")),
              st.sampled_from((Side.BUY, Side.SELL)), st.sampled_from((Offset.OPEN, Offset.CLOSE)),
              st.integers(-3, 3), st.integers(0, 6)),
    st.tuples(st.just("order"), st.sampled_from((1, 2)), st.just(99), st.just("A001"),
              st.just(Side.BUY), st.just(Offset.OPEN), st.just(0),
              st.sampled_from((1, 2.5, 10**9))),  # whole, fractional, absurd quantities
    # identifiers the compiled reader leaves to msgspec (not ASCII) or refuses (too long)
    st.tuples(st.just("order"), st.sampled_from((1, 2)), st.sampled_from(("单1", "c" * 65, "")),
              st.just("A001"), st.just(Side.BUY), st.just(Offset.OPEN), st.just(0), st.just(1)),
    st.tuples(st.just("burst"), st.sampled_from((1, 2)), st.lists(
        st.tuples(st.just("order"), st.just(0), clids, st.sampled_from(("A001", "A004")),
                  st.sampled_from((Side.BUY, Side.SELL)), st.just(Offset.OPEN),
                  st.integers(-3, 3), st.integers(1, 3)), min_size=2, max_size=5)),
    st.tuples(st.just("cancel"), st.sampled_from((1, 2)), clids,
              st.sampled_from(("A001", "A004"))),
    st.tuples(st.just("ack"), st.integers(0, 20)),
    st.tuples(st.just("ack"), st.integers(0, 20), st.sampled_from(("ok", "好", "t" * 300))),
    st.tuples(st.just("fill"), st.integers(0, 20), st.integers(0, 4), st.integers(0, 15)),
    st.tuples(st.just("canceled"), st.integers(0, 20)),
    st.tuples(st.just("reject"), st.integers(0, 20), st.sampled_from((0, 1202))),
    st.tuples(st.just("cxl_reject"), st.integers(0, 20)),
    st.tuples(st.just("unknown")),
    st.tuples(st.just("link"), st.booleans()),
    st.tuples(st.just("close"), st.sampled_from((1, 2)), st.booleans()),
    st.tuples(st.just("logon"), st.sampled_from((1, 2))),
    st.tuples(st.just("cancel_all")),
)


def run_both(tmp_path: Path, flow: list[tuple], engine_cls: Any = ReferenceEngine,
             index_slots: int | None = None) -> None:
    """``index_slots``: the compiled router's index of working orders made that small, so that
    newer orders take older ones' slots and reports find those by id."""
    ref = Side_(Router, tmp_path / "reference", engine_cls)
    fast = Side_(FastRouter, tmp_path / "fast", engine_cls)
    if index_slots is not None:
        fast.router.index_slots(index_slots)
    try:
        for i, step in enumerate(flow):
            now = T0 + (i + 1) * MS
            apply(ref, step, now)
            apply(fast, step, now)
            a, b = ref.observed(), fast.observed()
            for key in a:
                assert a[key] == b[key], f"step {i} {step}: {key} differs"
    finally:
        ref.audit.close()
        fast.audit.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flow=st.lists(steps, min_size=1, max_size=40), index_slots=st.sampled_from((None, 1, 2)))
def test_the_compiled_order_path_matches_the_reference(tmp_path_factory, flow, index_slots):
    run_both(tmp_path_factory.mktemp("flow"), flow, index_slots=index_slots)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flow=st.lists(steps, min_size=1, max_size=40), index_slots=st.sampled_from((None, 2)))
def test_the_compiled_order_path_matches_the_reference_with_the_cython_engine(
        tmp_path_factory, flow, index_slots):
    """With the Cython engine the compiled path calls its C entries (``decide_c``, ``ack_c``,
    ``fill_c``) where the reference router calls ``decide``/``apply_ack``/``apply_fill``: the
    same flows, the same bytes, journal and book."""
    from cext.engine import Engine as CythonEngine

    run_both(tmp_path_factory.mktemp("flow"), flow, CythonEngine, index_slots)


def test_a_typical_day_matches_with_the_cython_engine_too(tmp_path):
    """The same comparison over a fixed flow touching every handler, with the Cython engine."""
    from cext.engine import Engine as CythonEngine

    flow = [("order", 1, k, "A001", Side.BUY, Offset.OPEN, k % 3 - 1, 2) for k in range(6)]
    flow += [("ack", k) for k in range(5)] + [("fill", 0, 1, 1), ("fill", 0, 1, 1),
                                              ("fill", 1, 2, 2), ("cancel", 1, 2, "A001"),
                                              ("canceled", 2), ("reject", 3, 0), ("unknown",),
                                              ("link", False), ("cancel", 2, 4, "A001"),
                                              ("link", True), ("close", 1, True),
                                              ("cxl_reject", 0), ("order", 2, 3, "A001",
                                                                   Side.SELL, Offset.CLOSE, 2, 1)]
    run_both(tmp_path, flow, CythonEngine)


async def test_the_reference_engine_and_router_run_the_gateway_end_to_end():
    """``serve --engine reference --router reference``: the all-Python gateway still trades —
    an order to a fill, a resting order cancelled by a kill, the next order refused — between
    real processes (the rest of the suite runs the compiled ones)."""
    from tests.conftest import start_exchange, start_gateway
    from tests.gateway.test_e2e import T, admin, connect

    ex = start_exchange()
    gw = start_gateway(int(ex.match.group(1)), "--engine", "reference", "--router", "reference")
    try:
        gw.wait_for("exchange link up")
        started = json.loads(next(line for line in gw.output if "gateway started" in line))
        assert (started["engine"], started["router"]) == ("checks.engine", "Router")
        c = await connect(gw)
        buy = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0,
                                 qty=2)
        assert (await buy.acked(timeout=T)).status == OrdStatus.NEW
        sell = await c.send_order(account="A004", symbol="rb2605", side=Side.SELL, price=3200.0,
                                  qty=2)
        assert (await sell.wait_done(timeout=T)).status == OrdStatus.FILLED
        rest = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3190.0,
                                  qty=1)
        await rest.acked(timeout=T)
        status, answer = admin(gw, "POST", "/v1/kill", {"scope": "account", "key": "A001",
                                                        "reason": "test"})
        assert status == 200 and answer["cancels_sent"] == 1, answer
        assert (await rest.wait_done(timeout=T)).status == OrdStatus.CANCELED
        refused = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                     price=3190.0, qty=1)
        assert (await refused.wait_done(timeout=T)).reason == 202  # KILLED_ACCOUNT
        await c.close()
    finally:
        gw.stop()
        ex.stop()


def test_a_bad_frame_anywhere_in_a_read_refuses_the_whole_read_as_the_decoder_does(tmp_path):
    """``client_data`` splits the frames itself: a read with good orders and then a bad frame is
    the protocol error ``FrameDecoder.feed`` raises for it, before any order of the read is
    handled; a frame cut by the end of a read waits for the next read."""
    fast = Side_(FastRouter, tmp_path / "fast", ReferenceEngine)
    problems: list[str] = []
    s = fast.sessions[1]
    s.on_protocol_error = problems.append  # type: ignore[method-assign]
    good = encode(_order(("order", 1, 1, "A001", Side.BUY, Offset.OPEN, 0, 1)))
    bad = b"\x00\x00\x00\x03\x93\xa3Bad"
    try:
        fast.router.client_data(s, good + bad)
        with pytest.raises(ProtocolError) as expected:
            FrameDecoder().feed(good + bad)
        assert problems == [str(expected.value)]
        assert fast.exch_orders() == [] and s.frames() == []
        assert fast.router.stats["orders"] == 0

        other = fast.sessions[2]
        frame = encode(_order(("order", 2, 2, "A001", Side.BUY, Offset.OPEN, 0, 1)))
        fast.router.client_data(other, frame[:7])  # a frame cut by the end of the read
        assert fast.exch_orders() == []
        fast.router.client_data(other, frame[7:])
        assert [o.account for o in fast.exch_orders()] == ["A001"]
        assert other.messages_in == 1
    finally:
        fast.audit.close()


def test_a_read_is_journaled_then_written_to_each_peer_once_before_it_returns(tmp_path):
    """One journal append and one write per peer per read, in that order, when the read ends —
    not a loop turn later: ``read_done`` is called once per connection that got frames, with
    the read's records already in the journal on disk."""
    fast = Side_(FastRouter, tmp_path / "fast", ReferenceEngine)
    calls: list[tuple[str, int, int]] = []

    def spy(conn: Connection, name: str) -> None:
        def read_done(start: int) -> None:
            on_disk = [rec for _, rec in jr.JournalReader(fast.path)]
            calls.append((name, len(on_disk), len(conn.frames())))
        conn.read_done = read_done  # type: ignore[method-assign]

    s = fast.sessions[1]
    spy(fast.link, "link")
    spy(s, "session")
    try:
        before = len([rec for _, rec in jr.JournalReader(fast.path)]) + len(fast.audit.records)
        orders = [_order(("order", 1, k, "A001", Side.BUY, Offset.OPEN, 0, 1)) for k in (1, 2)]
        fast.router.client_data(s, b"".join(encode(o) for o in orders))
        assert calls == [("link", before + 2, 2)]  # both orders journaled, then one write
        acks = [ExecReport(f"gw.t.{k}", f"X{k}", "A001", orders[0].symbol, OrdStatus.NEW,
                           ExecType.NEW) for k in (1, 2)]
        fast.router.exchange_data(fast.link, b"".join(encode(a) for a in acks))
        assert calls[1:] == [("session", before + 4, 2)]
    finally:
        fast.audit.close()


def test_the_index_of_working_orders_takes_only_powers_of_two(tmp_path):
    fast = Side_(FastRouter, tmp_path / "fast", ReferenceEngine)
    try:
        for bad in (0, 3, -4):
            with pytest.raises(ValueError, match="power of two"):
                fast.router.index_slots(bad)
    finally:
        fast.audit.close()


def test_a_report_for_an_order_whose_index_slot_was_taken_finds_it_by_id(tmp_path):
    """With one slot, each new order takes the slot of the one before: the reports for the
    older orders are found by their ids, and each reaches its own order and session."""
    flow = [("order", 1, 0, "A001", Side.BUY, Offset.OPEN, 0, 1),
            ("order", 2, 1, "A001", Side.BUY, Offset.OPEN, 0, 2),
            ("ack", 0), ("ack", 1), ("fill", 0, 1, 1), ("fill", 1, 1, 2), ("fill", 1, 1, 3)]
    run_both(tmp_path, flow, index_slots=1)
