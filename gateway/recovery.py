"""Crash recovery: rebuild the book by replaying the journal through the router.

Theory of operation
-------------------
The risk engine is deterministic in its inputs, and every input is journaled with the
timestamp the engine was given. Replaying those inputs through the *same* router handlers (with
``router.replaying`` set, so nothing is sent and nothing is journaled again) rebuilds positions,
frozen funds and positions, working orders, daily counters, kill and account states exactly.

Where it starts: at the newest trading-day checkpoint (``gateway.checkpoint``), found by reading
the segments from the newest backwards; the checkpoint restores what carries over from earlier
days, and only the records after it are replayed. A journal with no checkpoint is replayed from
its first record.

Which records are inputs:

- ``State``: ``checkpoint`` (restored), ``boot`` (the instance's exchange-id prefix, so working
  orders keep the ids the exchange knows them by), ``session_closed``;
- ``Inbound`` ``Logon``: re-creates the session (user, permitted accounts, automated or not,
  cancel-on-disconnect) — from any day: a session may span the day boundary;
- ``Inbound`` ``NewOrder``: decided again; a refused order's ``Decision`` follows it, an
  accepted order has none, and the replay must agree (a disagreement means the code changed
  what it decides, and is reported);
- ``Outbound`` ``CancelOrder`` to the exchange: every cancel the gateway requested, whoever
  caused it (client, kill switch, disconnect) — counted by the engine as it was then;
- ``Outbound`` ``OrderStatusRequest`` and ``Inbound`` ``OrderStatusEnd``: a reconciliation's
  start and end, so what it derived (orders closed, unknown orders cancelled or adopted) is
  derived again, never booked twice;
- ``Inbound`` ``MarketData`` and ``ExchangeEvent`` reports: settle the book (each execution
  once, by its id);
- ``AdminAction``: kills, resets, status, registration and limit changes, and the
  programmatic-trading registry's steps and findings (``registry_*``,
  ``gateway.compliance.registry``).

Start of day: positions and balances come from the configured snapshot (the broker's
settlement), so only *today's* trading records are replayed on top of it; admin actions,
logons and session ends are replayed from every day.

After the replay the sessions that were still logged on are gone: the orders of those that
asked for cancel-on-disconnect get cancels (held until the link is back), the rest wait for
their user. Then the exchange link reconciles working orders with the exchange (fills and
cancels that happened while the gateway was down) before trading resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from checks.calendar import trading_day_bounds, trading_day_number
from checks.config import merge_limits
from checks.digest import digest
from checks.enums import AccountStatus, KillScope, OrdStatus, ProgReg
from gateway import checkpoint
from gateway import journal as jr
from gateway.protocol import (
    CancelOrder,
    ExecReport,
    Logon,
    MarketData,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
)
from gateway.router import LIVE_ONLY_REFUSALS
from gateway.session import effective_cancel_on_disconnect

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
    from_seq: int = 0  # where the replay started (the newest checkpoint; 0: the beginning)
    checkpoint_day: int = -1  # its trading day (-1: none)
    open_sessions: list[int] = field(default_factory=list)  # logged on when it went down
    today_records: int = 0  # trading records of today replayed
    disagreements: list[str] = field(default_factory=list)
    damage: str = ""
    elapsed_s: float = 0.0


class ReplaySession:
    """A session as it was: enough for the router's checks; it sends nothing."""

    closed = False  # a live owner while replaying; closed when the replay ends

    def __init__(self, session_id: int, user: str, accounts: frozenset[str],
                 cancel_on_disconnect: bool, automated: bool = False) -> None:
        self.session_id = session_id
        self.user = user
        self.accounts = accounts
        self.cancel_on_disconnect = cancel_on_disconnect
        self.automated = automated

    def send(self, msg: Any) -> None:  # pragma: no cover - replay never sends
        pass


def find_checkpoint(journal: jr.Journal) -> tuple[int, jr.State | None]:
    """The newest checkpoint record (seq, record), reading segments newest first, so the
    cost is the records since it, not the whole retention; (0, None) if there is none."""
    segs = jr.list_segments(journal.directory)
    for i in range(len(segs) - 1, -1, -1):
        first = segs[i][0]
        end = segs[i + 1][0] if i + 1 < len(segs) else None
        found: tuple[int, jr.State | None] = (0, None)
        reader = jr.JournalReader(journal.directory, first)
        for seq, rec in reader:
            if end is not None and seq >= end:
                break
            if type(rec) is jr.State and rec.kind == checkpoint.KIND:
                found = (seq, rec)
        if found[1] is not None:
            return found
    return 0, None


def replay_journal(gw: Gateway, journal: jr.Journal, now_ns: int | None = None) -> RecoveryReport:
    started = time.perf_counter()
    boundary = gw.cfg.risk.day_boundary_s
    today = trading_day_number(time.time_ns() if now_ns is None else now_ns, boundary)
    day_start = trading_day_bounds(today, boundary)[0]
    report = RecoveryReport()
    router, engine = gw.router, gw.engine
    sessions: dict[int, ReplaySession] = {}
    pending_decision: tuple[str, int] | None = None
    live_prefix = router.prefix
    start_seq, _ = find_checkpoint(journal)
    report.from_seq = start_seq
    router.replaying = True
    reader = journal.read(start_seq)
    records = iter(reader)
    held: tuple[int, jr.JournalRecord] | None = None  # read ahead, not yet handled
    try:
        while True:
            if held is not None:
                (seq, rec), held = held, None
            else:
                item = next(records, None)
                if item is None:
                    break
                seq, rec = item
            report.records += 1
            report.last_seq = seq
            t = type(rec)
            if t is jr.State:
                if rec.kind == checkpoint.KIND:
                    try:
                        cp = checkpoint.decode(rec)
                    except ValueError as err:
                        report.disagreements.append(f"record {seq}: {err}")
                        continue
                    checkpoint.restore(gw, cp, sessions)
                    report.checkpoint_day = cp.trading_day
                    report.max_session = max(report.max_session, cp.max_session)
                    report.command_ids.extend(cp.command_ids)
                elif rec.kind == "boot":
                    router.prefix = rec.data.decode()
                    router.order_seq = 0
                elif rec.kind == "session_closed":
                    s = sessions.pop(int(rec.data or 0), None)
                    if s is not None:
                        s.closed = True
                        router.remove_session(s, False, rec.ts_ns)  # its cancels are journaled
                continue
            if t is jr.AdminAction:
                _apply_admin(gw, rec)
                if rec.command_id:
                    report.command_ids.append(rec.command_id)
                continue
            if t is jr.Inbound and type(rec.msg) is Logon:
                report.max_session = max(report.max_session, rec.session)
                _replay_logon(gw, rec, sessions)
                continue
            if rec.ts_ns < day_start:
                continue  # an earlier day's trading: settled into the start-of-day snapshot
            report.today_records += 1
            if t is jr.Inbound:
                report.max_session = max(report.max_session, rec.session)
                msg = rec.msg
                mt = type(msg)
                if mt is NewOrder:
                    s = sessions.get(rec.session)
                    if s is None:
                        report.disagreements.append(
                            f"record {seq}: order {msg.cl_ord_id} from session {rec.session}, "
                            "which has no logon in the journal")
                        continue
                    report.orders += 1
                    # A refused order has its ``Decision`` right behind it; an accepted one has
                    # none (older versions journaled ``Decision`` 0). One refused before the
                    # engine saw it (link down, journal failing, safe mode; by the oldest
                    # versions journaled as just the reject sent to the client) is refused
                    # again, never decided on a book that cannot know the link was down.
                    held = next(records, None)
                    nxt = held[1] if held is not None else None
                    decided = type(nxt) is jr.Decision and nxt.cl_ord_id == msg.cl_ord_id
                    live_only = (decided and nxt.reason in LIVE_ONLY_REFUSALS) \
                        or _old_live_refusal(nxt, rec.session, msg.cl_ord_id)
                    before = router.stats["accepted"]
                    router.new_order(s, msg, rec.ts_ns, engine_saw=not live_only)
                    if live_only and decided:  # handled: not compared, it was not the engine's
                        report.records += 1
                        report.last_seq = held[0]  # type: ignore[index]
                        held = None
                        continue
                    accepted = router.stats["accepted"] > before
                    if decided:
                        pending_decision = (msg.cl_ord_id, 0 if accepted else -1)
                    elif not live_only and not accepted:
                        report.disagreements.append(
                            f"record {seq}: {msg.cl_ord_id} was accepted then (no refusal "
                            "follows it), rejected on replay")
                elif mt is MarketData:
                    router.market_data(msg, rec.ts_ns)
                elif mt is OrderStatusEnd and rec.session == jr.EXCHANGE_LINK:
                    router.reconciled(msg, rec.ts_ns)
            elif t is jr.Decision:
                if pending_decision is not None and pending_decision[0] == rec.cl_ord_id:
                    replayed_ok = pending_decision[1] == 0
                    if replayed_ok != (rec.reason == 0):
                        report.disagreements.append(
                            f"record {seq}: {rec.cl_ord_id} was {'accepted' if rec.reason == 0 else rec.reason}"
                            f" then, {'accepted' if replayed_ok else 'rejected'} on replay")
                pending_decision = None
            elif t is jr.Outbound:
                if rec.session == jr.EXCHANGE_LINK:
                    mt = type(rec.msg)
                    if mt is CancelOrder:
                        router.replay_cancel(rec.msg, rec.ts_ns)
                    elif mt is OrderStatusRequest:
                        router.recon_begin(rec.msg, rec.ts_ns)
            elif t is jr.ExchangeEvent:
                router.exchange_report(rec.report, rec.ts_ns)
    finally:
        router.replaying = False
        router.recon_seen = None  # a reconciliation cut short by the crash is done again
        router.prefix = live_prefix
        router.order_seq = 0
    if reader.damage is not None:
        report.damage = str(reader.damage)
    report.open_sessions = sorted(sessions)
    report.working_orders = len(router.orders)
    report.digest = digest(engine.snapshot())
    report.elapsed_s = time.perf_counter() - started
    log.info("journal replayed", records=report.records, from_seq=start_seq,
             last_seq=report.last_seq, orders=report.orders, working=report.working_orders,
             disagreements=len(report.disagreements), seconds=round(report.elapsed_s, 3))
    for d in report.disagreements[:20]:
        log.error("replay disagreement", detail=d)
    return report


def _old_live_refusal(nxt: jr.JournalRecord | None, session: int, cl_ord_id: str) -> bool:
    """Journals of the oldest versions marked an order refused before the engine saw it only
    by the reject they sent: an ``Outbound`` REJECTED report for it, right behind it."""
    return (type(nxt) is jr.Outbound and nxt.session == session and type(nxt.msg) is ExecReport
            and nxt.msg.cl_ord_id == cl_ord_id and nxt.msg.status == OrdStatus.REJECTED)


def end_replayed_sessions(gw: Gateway) -> int:
    """After the replay (live again): the sessions that were logged on when the gateway went
    down are gone. Their end is journaled; the orders of those that asked for
    cancel-on-disconnect get cancels (sent once the link is back and reconciled), the others'
    wait for their user to log on again. Returns the cancels requested."""
    router = gw.router
    cancels = 0
    for s in [s for s in router.sessions.values() if isinstance(s, ReplaySession)]:
        s.closed = True
        cancels += router.remove_session(s, s.cancel_on_disconnect)
    return cancels


def _replay_logon(gw: Gateway, rec: jr.Inbound, sessions: dict[int, ReplaySession]) -> None:
    msg = rec.msg
    user = gw.cfg.users.get(msg.user)
    if user is None:
        return
    accounts = frozenset(msg.accounts or user.accounts) & frozenset(user.accounts)
    s = ReplaySession(rec.session, msg.user, accounts,
                      effective_cancel_on_disconnect(user, msg), user.automated)
    sessions[rec.session] = s
    gw.engine.register_session(rec.session, user.automated)
    gw.router.add_session(s)


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
            gw.conformance.refresh()  # as the admin plane did live
        elif rec.action.startswith("registry_"):
            gw.registry.apply(rec.action, rec.scope_value, rec.args, rec.operator, rec.reason,
                              rec.ts_ns)
        elif rec.action == "set_limits":
            # The same checks as the admin plane made before it journaled the change.
            limits = merge_limits(gw.limits[rec.scope_value], rec.args.get("changes", {}),
                                  "journal", "changes")
            engine.set_limits(rec.scope_value, limits)
            gw.limits[rec.scope_value] = limits
    except (KeyError, ValueError, msgspec.ValidationError) as err:
        log.error("journaled admin action could not be applied", action=rec.action,
                  scope=rec.scope_kind, key=rec.scope_value, error=str(err))
