"""Crash recovery: rebuild the book by replaying the journal through the router.

Theory of operation
-------------------
The risk engine is deterministic in its inputs, and every input is journaled with the
timestamp the engine was given. Replaying those inputs through the *same* router handlers (with
``router.replaying`` set, so nothing is sent and nothing is journaled again) rebuilds positions,
frozen funds and positions, working orders, daily counters, kill and account states exactly.

Which records are inputs:

- ``State(kind="boot")``: the gateway instance's exchange-id prefix, so working orders keep
  the ids the exchange knows them by;
- ``Inbound`` ``Logon``: re-creates the session (user, permitted accounts, automated or not);
- ``Inbound`` ``NewOrder``: decided again; the journaled ``Decision`` that follows must agree
  (a disagreement means the code changed what it decides, and is reported);
- ``Outbound`` ``CancelOrder`` to the exchange: every cancel the gateway sent, whoever caused it
  (client, kill switch, disconnect) — counted by the engine as it was then;
- ``Inbound`` ``MarketData`` and ``ExchangeEvent`` reports: settle the book;
- ``AdminAction``: kills, resets, status, registration and limit changes.

Start of day: positions and balances come from the configured snapshot (the broker's
settlement), so only *today's* trading records are replayed on top of it; admin actions
(kills, account status, limits) are replayed from every day, because a stop stays in force
until a person lifts it.

Client ``CancelOrder`` messages are not inputs (their effect is the outbound cancel), nor are
decisions, outbound reports or alerts (outputs). Automatic triggers do not fire on replay: what
they did is in the journal as admin actions and cancels.

After the replay the gateway starts, the exchange link reconciles working orders with the
exchange (fills or cancels that happened while the gateway was down), and trading resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from checks.calendar import trading_day_bounds, trading_day_number
from checks.digest import digest
from checks.enums import AccountStatus, KillScope, ProgReg
from checks.model import Limits
from gateway import journal as jr
from gateway.protocol import CancelOrder, Logon, MarketData, NewOrder

if TYPE_CHECKING:
    from gateway.server import Gateway

log = structlog.get_logger("fengkong.recovery")


@dataclass
class RecoveryReport:
    records: int = 0
    last_seq: int = 0
    orders: int = 0
    working_orders: int = 0
    max_session: int = 0
    digest: str = ""  # checks.digest of the book right after the replay
    command_ids: list[str] = field(default_factory=list)  # Kafka control commands applied
    disagreements: list[str] = field(default_factory=list)
    damage: str = ""
    elapsed_s: float = 0.0


class _ReplaySession:
    """A session as it was: enough for the router's checks; it sends nothing."""

    closed = True  # never a live destination for reports

    def __init__(self, session_id: int, user: str, accounts: frozenset[str]) -> None:
        self.session_id = session_id
        self.user = user
        self.accounts = accounts
        self.by_clid: dict[str, int] = {}
        self.finished_clids: set[str] = set()

    def send(self, msg: Any) -> None:  # pragma: no cover - replay never sends
        pass


def replay_journal(gw: Gateway, journal: jr.Journal, now_ns: int | None = None) -> RecoveryReport:
    started = time.perf_counter()
    boundary = gw.cfg.risk.day_boundary_s
    today = trading_day_number(time.time_ns() if now_ns is None else now_ns, boundary)
    day_start = trading_day_bounds(today, boundary)[0]
    report = RecoveryReport()
    router, engine = gw.router, gw.engine
    sessions: dict[int, _ReplaySession] = {}
    pending_decision: tuple[str, int] | None = None
    live_prefix = router.prefix
    router.replaying = True
    reader = journal.read()
    try:
        for seq, rec in reader:
            report.records += 1
            report.last_seq = seq
            t = type(rec)
            if rec.ts_ns < day_start and t is not jr.AdminAction:
                continue  # settled into the start-of-day snapshot
            if t is jr.Inbound:
                report.max_session = max(report.max_session, rec.session)
                msg = rec.msg
                mt = type(msg)
                if mt is NewOrder:
                    s = sessions.get(rec.session)
                    if s is None:
                        continue
                    before = len(router.orders)
                    router.new_order(s, msg, rec.ts_ns)
                    report.orders += 1
                    accepted = len(router.orders) > before
                    pending_decision = (msg.cl_ord_id, 0 if accepted else -1)
                elif mt is MarketData:
                    router.market_data(msg, rec.ts_ns)
                elif mt is Logon:
                    user = gw.cfg.users.get(msg.user)
                    if user is not None:
                        accounts = frozenset(msg.accounts or user.accounts) & frozenset(user.accounts)
                        s = _ReplaySession(rec.session, msg.user, accounts)
                        sessions[rec.session] = s
                        engine.register_session(rec.session, user.automated)
                        router.sessions[rec.session] = s
            elif t is jr.Decision:
                if pending_decision is not None and pending_decision[0] == rec.cl_ord_id:
                    replayed_ok = pending_decision[1] == 0
                    if replayed_ok != (rec.reason == 0):
                        report.disagreements.append(
                            f"record {seq}: {rec.cl_ord_id} was {'accepted' if rec.reason == 0 else rec.reason}"
                            f" then, {'accepted' if replayed_ok else 'rejected'} on replay")
                pending_decision = None
            elif t is jr.Outbound:
                if rec.session == jr.EXCHANGE_LINK and type(rec.msg) is CancelOrder:
                    ref = router.by_exch.get(rec.msg.orig_cl_ord_id)
                    if ref is not None and ref in router.orders:
                        engine.cancel_request(ref, rec.ts_ns)
                        router.cancels[rec.msg.cl_ord_id] = (ref, "")
            elif t is jr.ExchangeEvent:
                router.exchange_report(rec.report, rec.ts_ns)
            elif t is jr.AdminAction:
                _apply_admin(gw, rec)
                if rec.command_id:
                    report.command_ids.append(rec.command_id)
            elif t is jr.State and rec.kind == "boot":
                router.prefix = rec.data.decode()
                router._seq = 0
    finally:
        router.replaying = False
        router.prefix = live_prefix
        for sid in sessions:
            router.sessions.pop(sid, None)
    if reader.damage is not None:
        report.damage = str(reader.damage)
    report.working_orders = len(router.orders)
    report.digest = digest(engine.snapshot())
    report.elapsed_s = time.perf_counter() - started
    log.info("journal replayed", records=report.records, last_seq=report.last_seq,
             orders=report.orders, working=report.working_orders,
             disagreements=len(report.disagreements), seconds=round(report.elapsed_s, 3))
    for d in report.disagreements[:20]:
        log.error("replay disagreement", detail=d)
    return report


def _apply_admin(gw: Gateway, rec: jr.AdminAction) -> None:
    engine = gw.engine
    scope = KillScope[rec.scope_kind.upper()] if rec.scope_kind.upper() in KillScope.__members__ \
        else KillScope.FIRM
    key: str | int = rec.scope_value
    if scope == KillScope.SESSION:
        key = int(rec.scope_value or 0)
    try:
        if rec.action == "kill":
            engine.kill(scope, key, bool(rec.args.get("close_only", False)))
        elif rec.action == "reset":
            engine.reset(scope, key)
        elif rec.action == "set_status":
            engine.set_status(rec.scope_value, AccountStatus[rec.args["status"]])
        elif rec.action == "set_programmatic":
            engine.set_programmatic(rec.scope_value, ProgReg[rec.args["registration"]])
        elif rec.action == "set_limits":
            merged = msgspec.structs.asdict(gw.limits[rec.scope_value])
            merged.update(rec.args.get("changes", {}))
            limits = msgspec.convert(merged, Limits)
            engine.set_limits(rec.scope_value, limits)
            gw.limits[rec.scope_value] = limits
    except (KeyError, ValueError, msgspec.ValidationError) as err:
        log.error("journaled admin action could not be applied", action=rec.action,
                  scope=rec.scope_kind, key=rec.scope_value, error=str(err))
