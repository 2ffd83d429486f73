"""A gateway's router, reference engine and journal driven in-process at explicit times.

The daily-report tests need exact timestamps (a rolling second either holds ten messages or it
does not), so they drive the real router as the recovery tests do (tests/gateway/
test_router_faults.py): fake sessions and a fake exchange link, a real journal on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from checks.engine import Engine as ReferenceEngine
from checks.enums import ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from gateway import journal as jr
from gateway.audit import AuditLog
from gateway.config import load_gateway_config
from gateway.protocol import CancelOrder, ExecReport, Logon, NewOrder, TerminalData
from gateway.server import Gateway
from tests.conftest import EXAMPLES

MS = 1_000_000


class FakeSession:
    def __init__(self, sid: int, user: str, accounts: tuple[str, ...]) -> None:
        self.session_id = sid
        self.user = user
        self.accounts = frozenset(accounts)
        self.cancel_on_disconnect = False
        self.automated = True
        self.closed = False
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


class FakeLink:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[Any] = []

    def send(self, msg: Any) -> bool:
        self.sent.append(msg)
        return True


class Live:
    def __init__(self, path: Path, start: int) -> None:
        self.path = path
        self.cfg = load_gateway_config(EXAMPLES / "gateway.toml")
        self.gw = Gateway(self.cfg, engine_cls=ReferenceEngine)
        journal = jr.Journal.open(path)
        self.gw.journal = journal  # so each trading day's checkpoint opens a segment, as live
        self.audit = AuditLog(journal)
        self.router = r = self.gw.router
        r.audit = self.audit
        r.on_day_start = self.gw.checkpoint_now
        r.link = self.link = FakeLink()
        r.record(jr.State(start, "boot", r.prefix.encode()))

    def logon(self, sid: int, now: int, accounts: tuple[str, ...], user: str = "algo1",
              app_id: str = "", terminal: TerminalData | None = None) -> FakeSession:
        s = FakeSession(sid, user, accounts)
        self.router.record(jr.Inbound(now, sid, Logon(user, "***", sorted(accounts), 5.0, False,
                                                      app_id, "", terminal)))
        self.gw.engine.register_session(sid, True)
        self.router.add_session(s)
        return s

    def order(self, s: FakeSession, clid: str, now: int, account: str, *, symbol: str = "rb2605",
              side: int = Side.BUY, offset: int = Offset.OPEN, price: float = 3200.0,
              qty: int = 1, tif: int = Tif.GFD) -> str:
        """Send an order; its exchange id, or "" if it was refused."""
        before = len(self.link.sent)
        self.router.new_order(s, NewOrder(clid, account, symbol, side, offset, Hedge.SPEC,
                                          OrdType.LIMIT, tif, price, qty), now)
        sent = self.link.sent[before:]
        return sent[0].cl_ord_id if sent else ""

    def cancel(self, s: FakeSession, clid: str, orig: str, account: str, now: int) -> None:
        self.router.cancel(s, CancelOrder(clid, orig, account), now)

    def report(self, exch_id: str, account: str, et: int, now: int, *, status: int,
               qty: int = 0, exec_id: str = "", self_trade: bool = False) -> None:
        self.router.exchange_report(ExecReport(exch_id, "X" + exch_id, account, "rb2605", status,
                                               et, last_qty=qty, last_px=3200.0,
                                               exec_id=exec_id, self_trade=self_trade), now)

    def fill(self, exch_id: str, account: str, now: int, qty: int, exec_id: str,
             final: bool, self_trade: bool = False) -> None:
        self.report(exch_id, account, ExecType.TRADE, now, qty=qty, exec_id=exec_id,
                    status=OrdStatus.FILLED if final else OrdStatus.PARTIALLY_FILLED,
                    self_trade=self_trade)

    def close(self) -> None:
        self.audit.close()
