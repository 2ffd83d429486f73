"""Memory and frame bounds (issue 10, item 5): what a client sends cannot grow the gateway.

Identifiers past their caps are refused with 408 before anything remembers them; every
per-order, per-day and per-session structure has a documented cap (``gateway.router``'s memory
caps, ``gateway.killswitch.HISTORY_KEPT``); no frame the gateway writes exceeds its own limit.
Sans-IO like test_router_faults.py: the real router, reference engine and journal, fake peers.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from checks.enums import ExecType, Hedge, KillScope, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason
from gateway import killswitch as ks
from gateway import router as rt
from gateway.protocol import (
    DEFAULT_MAX_FRAME,
    CancelOrder,
    CancelReject,
    ExecReport,
    FrameDecoder,
    NewOrder,
    encode_into,
    fit_frame,
)
from gateway.session import ClientSession
from tests.gateway.test_router_faults import MON_10, MS, Live

HUGE = "x" * 40_000


def _order(clid: str, account: str = "A001", symbol: str = "rb2605") -> NewOrder:
    return NewOrder(clid, account, symbol, Side.BUY, Offset.OPEN, Hedge.SPEC, OrdType.LIMIT,
                    Tif.GFD, 3200.0, 1)


def _frame_body(msg: Any) -> int:
    out = bytearray()
    encode_into(msg, out)
    return len(out) - 4


# ------------------------------------------------------------------ identifiers
def test_an_over_long_cl_ord_id_is_refused_408_and_never_remembered(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    for i in range(2):  # twice: the second must not be a duplicate echoing 80 KB
        live.router.new_order(s, _order(HUGE), MON_10 + (1 + i) * MS)
    reps = s.reports()
    assert [r.reason for r in reps] == [Reason.INVALID_FIELD] * 2
    for r in reps:
        assert "40000 bytes; at most 64" in r.text and len(r.text) < 200
        assert r.cl_ord_id == "x" * 64 + "\u2026"  # longer than any valid id: no false match
        assert _frame_body(r) < 1_000
    assert live.link.sent == []
    assert all(len(c) <= rt.MAX_ID_BYTES for ids in live.router.used_clids.values() for c in ids)


def test_many_rejected_huge_ids_hold_no_memory(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    for i in range(200):
        live.router.new_order(s, _order(f"{i}-" + "y" * 50_000), MON_10 + (1 + i) * MS)
    held = sum(len(c) for ids in live.router.used_clids.values() for c in ids)
    assert held == 0
    assert all(r.reason == Reason.INVALID_FIELD for r in s.reports())


@pytest.mark.parametrize("clid,account,symbol,field", [
    ("", "A001", "rb2605", "cl_ord_id is empty"),
    ("é" * 33, "A001", "rb2605", "cl_ord_id is 66 bytes"),  # 33 characters, 66 UTF-8 bytes
    ("o1", "A" * 33, "rb2605", "account is 33 bytes"),
    ("o1", "A001", "s" * 33, "symbol is 33 bytes"),
])
def test_identifier_bounds_on_new_orders(tmp_path, clid, account, symbol, field):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    live.router.new_order(s, _order(clid, account, symbol), MON_10 + MS)
    (r,) = s.reports()
    assert r.reason == Reason.INVALID_FIELD and field in r.text
    assert not live.router.used_clids.get(s.user)


def test_a_64_byte_id_is_accepted(tmp_path):
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    assert live.order(s, "z" * 64, MON_10 + MS)


def test_over_long_cancel_ids_are_refused_408_with_a_bounded_echo(tmp_path):
    live = Live(tmp_path)
    s, _ = live.working_order()
    live.router.cancel(s, CancelOrder("c1", HUGE, "A001"), MON_10 + 5 * MS)
    live.router.cancel(s, CancelOrder(HUGE, "o1", "A001"), MON_10 + 6 * MS)
    rejects = [m for m in s.sent if type(m) is CancelReject]
    assert [m.reason for m in rejects] == [Reason.INVALID_FIELD] * 2
    assert "orig_cl_ord_id is 40000 bytes" in rejects[0].text
    assert all(_frame_body(m) < 1_000 for m in rejects)
    assert live.router.cancels == {}


def test_the_users_daily_id_memory_is_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "MAX_CLIDS_PER_USER_DAY", 3)
    live = Live(tmp_path)
    s = live.logon(1, MON_10)
    for i in range(5):
        live.order(s, f"o{i}", MON_10 + (1 + i) * MS)
    assert [r.reason for r in s.reports() if r.exec_type == ExecType.REJECTED] == \
        [Reason.INVALID_FIELD] * 2
    assert len(live.router.used_clids[s.user]) == 3


# ------------------------------------------------------------------ per-order and per-day memory
def test_repeated_cancels_of_one_order_are_bounded_and_forgotten_with_it(tmp_path):
    live = Live(tmp_path)
    s, x = live.working_order()
    for i in range(100):
        live.router.cancel(s, CancelOrder(f"c{i}", "o1", "A001"), MON_10 + (5 + i) * MS)
    assert len(live.router.cancels) <= rt.MAX_CANCELS_PER_ORDER
    latest = live.link.sent[-1].cl_ord_id
    assert latest in live.router.cancels
    live.report(x, ExecType.CANCELED, MON_10 + 200 * MS, status=OrdStatus.CANCELED)
    assert live.router.cancels == {}


def test_applied_executions_are_remembered_up_to_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(rt, "EXEC_ID_MEMORY", 3)
    live = Live(tmp_path)
    s, x = live.working_order()
    for i in range(5):
        live.report(x, ExecType.TRADE, MON_10 + (5 + i) * MS, qty=1, exec_id=f"E{i}",
                    status=OrdStatus.PARTIALLY_FILLED if i < 4 else OrdStatus.FILLED)
    assert list(live.router.exec_ids) == ["E2", "E3", "E4"]


def test_the_kill_history_keeps_the_latest_actions(tmp_path, monkeypatch):
    monkeypatch.setattr(ks, "HISTORY_KEPT", 5)
    live = Live(tmp_path)
    for i in range(12):
        live.gw.killswitch.audit("risk", "note", KillScope.FIRM, "", f"r{i}", MON_10 + i * MS)
    assert [h["reason"] for h in live.gw.killswitch.history] == [f"r{i}" for i in range(7, 12)]


def test_the_router_memory_caps_are_documented_constants():
    for name in ("MAX_ID_BYTES", "MAX_ACCOUNT_BYTES", "MAX_SYMBOL_BYTES", "MAX_CLIDS_PER_USER_DAY",
                 "EXEC_ID_MEMORY", "MAX_CANCELS_PER_ORDER", "FINISHED_MEMORY", "UNKNOWN_MEMORY",
                 "ALERTS_KEPT"):
        assert isinstance(getattr(rt, name), int) and getattr(rt, name) > 0


# ------------------------------------------------------------------ outbound frames
def test_fit_frame_cuts_texts_to_the_limit():
    big = ExecReport(HUGE, "", "A001", "rb2605", OrdStatus.REJECTED, ExecType.REJECTED,
                     int(Reason.DUPLICATE_CL_ORD_ID), f"duplicate ({HUGE!r})")
    assert _frame_body(big) > DEFAULT_MAX_FRAME
    fitted = fit_frame(big, DEFAULT_MAX_FRAME)
    assert _frame_body(fitted) <= DEFAULT_MAX_FRAME
    assert fitted.reason == big.reason and fitted.account == "A001"
    small = ExecReport("o1", "", "A001", "rb2605", 0, 0)
    assert fit_frame(small, DEFAULT_MAX_FRAME) is small


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 5000) if name == "peername" else default

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_session_never_writes_a_frame_over_the_limit(tmp_path):
    live = Live(tmp_path)

    async def run() -> bytes:
        session = ClientSession(live.router, SimpleNamespace(lockout=None))  # type: ignore[arg-type]
        transport = _Transport()
        session.transport = transport  # connected; logon (and its guard) play no part here
        session.send(ExecReport(HUGE, "", HUGE, HUGE, OrdStatus.REJECTED, ExecType.REJECTED,
                                int(Reason.NOT_LOGGED_ON), "not logged on"))
        session.flush()
        return bytes(transport.data)

    data = asyncio.run(run())
    (msg,) = FrameDecoder(live.cfg.gateway.max_frame).feed(data)  # refuses an over-long frame
    assert type(msg) is ExecReport and msg.reason == Reason.NOT_LOGGED_ON
    assert msg.text == "not logged on"  # the short text survives; the huge echoes were cut
