"""The daily surveillance report (programmatic-trading rules art. 20-21, 25): figures from the journal.

Theory of operation
-------------------
``fengkong report daily --date D`` rebuilds one trading day's figures from the audit journal,
never from the live counters, so any past day can be reported again and the same journal always
gives the same bytes. The trading day is ``checks.calendar``'s: from the day boundary
(``[firm].day_boundary``, 17:00 China time) of the previous trading day to this day's; the
night session belongs to the next day.

Only these journal records are read (the journal's contract, whatever else it holds):

- ``Inbound``: ``Logon`` (session -> user and accounts), ``NewOrder`` and ``CancelOrder``;
- ``Decision`` with ``reason != 0``: a refused order. An order is *accepted* iff it was not
  refused: no refusal ``Decision`` follows it, and the router's own checks in front of the
  engine (identifier fields, permitted account, cl_ord_id unused today; they refuse without a
  decision record) pass. Those checks are asked again here, with the router's own functions;
- ``ExchangeEvent``: execution reports (fills once per ``exec_id``, final states);
- ``State``: ``boot`` and ``checkpoint`` (the exchange-id prefix and order counter, as recovery
  uses them: the ``n``-th accepted order of an instance goes out as ``prefix + hex(n)``, which
  ties an exchange report to the client's order), ``session_closed``;
- ``AdminAction``: kills, resets, stops and status changes, with operator and reason;
- alerts as ``gateway.router.Router.alert`` journals them (a record carrying an ``Alert``
  with session 0, the risk desk's copy), and the registry's ``registry_flag`` admin action,
  for "report needs correction" (reason 1314).

Outbound messages and accepted decisions are never used: the figures must not depend on them.

What is counted, per account and contract (``ContractRow``):

- ``orders``: every ``NewOrder`` the client sent; ``refused``: of those, refused (by the engine
  or the router); ``fak_fok``: orders with time-in-force IOC (FAK) or FOK;
- ``cancels``: client cancel requests that reached a working order (what the engine counts; a
  cancel of an order already finished is answered 1204 and not counted); ``large_cancels``: of
  those, of orders of at least the exchange's large-order size. System cancels (kill switch,
  cancel-on-disconnect) are not client cancels and are not in these columns; ``fak_cancels``:
  FAK/FOK remainders the exchange cancelled (whether an exchange counts them as cancels is its
  ``fak_counts_as_cancel``);
- ``fills`` and ``filled_lots``: executions (each ``exec_id`` once); ``self_trades``: executions
  the exchange flagged as self-trades; ``self_trade_refusals``: orders the gateway refused with
  1101 because they would have traded with the account's own resting order;
- ``max_per_sec``: the most orders + cancels (accepted orders and counted cancels: the engine's
  messages) inside one rolling second; ``busy_seconds``: how many times a rolling second reached
  the programmatic standard (``[limits].programmatic_per_sec``, 10), counted as the engine
  counts its "occasions";
- ``open_volume``: filled opening lots that count against 交易限额 (hedging is exempt);
  ``group_open_volume`` the same summed over the account group (实际控制关系), which is what
  ``max_open_volume_per_contract`` (``open_limit``, blank: no limit) limits.

Per account (``AccountRow``): the same over all contracts, whether the programmatic standard
(≥ ``programmatic_occasions`` busy seconds) and the HFT standard (≥ ``hft_per_sec`` in a second
or ≥ ``hft_per_day`` a day, the strictest exchange traded) were met, and whether the account's
report needs correction. Per account and product (``ProductRow``): messages, orders with a fill,
OTR (messages ÷ orders with a fill − 1) and the estimated message fee
(``message_fee`` × messages above ``message_fee_free``). ``ActionRow``: kills, resets and stops.
``SeatRow``: per programmatic account, the sessions and seats it used (art. 20-21), with the
applications and terminals (IP/MAC) its sessions logged on from.

The rows are ``report_rows``'s dataclasses; ``report_csv`` writes them (its ``COLUMNS`` is the
documented layout, README "Compliance: the daily surveillance report"), ``report_html`` draws
them.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks.calendar import NS, trading_day_bounds, trading_day_number
from checks.enums import ExecType, Hedge, Offset, OrdStatus, Tif
from checks.model import UNLIMITED, RiskConfig
from checks.reasons import Reason
from checks.state import InstrumentState
from gateway import checkpoint
from gateway import journal as jr
from gateway.compliance.report_csv import cell as _cell
from gateway.compliance.report_rows import (
    AccountRow,
    ActionRow,
    ContractRow,
    DailyReport,
    ProductRow,
    SeatRow,
)
from gateway.config import GatewayConfig
from gateway.protocol import Alert, CancelOrder, Logon, NewOrder
from gateway.router import order_field_problem

REPORT_NEEDS_CORRECTION = int(Reason.REPORT_NEEDS_CORRECTION)
REGISTRY_FLAG = "registry_flag"  # the registry's AdminAction when it finds a report to correct
_FINAL = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED})
_STOP_ACTIONS = ("kill", "reset", "set_status", "set_programmatic", "set_limits")


class ReportError(Exception):
    """The report cannot be made (bad date, unreadable journal); the text says why."""


# ----------------------------------------------------------------------------- building
@dataclass
class _Order:
    account: str
    symbol: str
    qty: int
    offset: int
    hedge: int
    tif: int
    exch_id: str = ""
    accepted: bool = False
    finished: bool = False
    today: bool = False


@dataclass
class _Session:
    user: str
    accounts: frozenset[str]
    used: bool = False
    app_id: str = ""
    terminal: str = ""  # "ip/mac" as the client collected them (穿透式监管)


def parse_date(text: str) -> int:
    """'2026-11-30' -> days since the epoch (the trading day's number)."""
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        raise ReportError(f"--date: expected YYYY-MM-DD, got {text!r}") from None
    if d.weekday() >= 5:
        raise ReportError(f"--date: {text} is a {d.strftime('%A')}, not a trading day")
    return (d - dt.date(1970, 1, 1)).days


def sessions_per_second(times: list[int], k: int) -> tuple[int, int]:
    """(most messages in one rolling second, occasions a rolling second reached ``k``).

    The window is ``(t - 1 s, t]`` at each message, as ``checks.state.recent`` reads it; an
    occasion is a message that takes the window to ``k`` when it was below before, which is
    how the engine counts the programmatic standard's "occasions"."""
    window: deque[int] = deque()
    best = occasions = 0
    for t in sorted(times):
        while window and window[0] <= t - NS:
            window.popleft()
        before = len(window) >= k > 0
        window.append(t)
        best = max(best, len(window))
        if k > 0 and not before and len(window) >= k:
            occasions += 1
    return best, occasions


class _Builder:
    def __init__(self, cfg: GatewayConfig, day: int) -> None:
        self.cfg = cfg
        risk: RiskConfig = cfg.risk
        self.start, self.end = trading_day_bounds(day, risk.day_boundary_s)
        self.prev_start = trading_day_bounds(day - 3 if (day + 3) % 7 == 0 else day - 1,
                                             risk.day_boundary_s)[0]
        self.instruments = {i.symbol: InstrumentState(n, i, risk, 0)
                            for n, i in enumerate(risk.instruments)}
        self.inst_cfg = {i.symbol: i for i in risk.instruments}
        self.accounts = {a.id: a for a in risk.accounts}
        self.sessions: dict[int, _Session] = {}
        self.by_clid: dict[tuple[str, str], _Order] = {}
        self.by_exch: dict[str, _Order] = {}
        self.used: dict[str, set[str]] = defaultdict(set)  # user -> cl_ord_ids of its day
        self.used_day: dict[str, int] = {}
        self.prefix = ""
        self.order_seq = 0
        self.pending: tuple[jr.Inbound, _Order] | None = None
        self.rows: dict[tuple[str, str], ContractRow] = {}
        self.prod_msgs: dict[tuple[str, str], int] = defaultdict(int)
        self.prod_filled: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.exec_ids: set[str] = set()
        self.actions: list[ActionRow] = []
        self.corrections: dict[tuple[str, int], str] = {}  # (account, ts) -> what was found
        self.seat_sessions: dict[str, set[int]] = defaultdict(set)
        self.seat_users: dict[str, set[str]] = defaultdict(set)
        self.seat_links: dict[str, set[str]] = defaultdict(set)
        self.seat_apps: dict[str, set[str]] = defaultdict(set)
        self.seat_terminals: dict[str, set[str]] = defaultdict(set)
        self.records = 0

    def today(self, ts: int) -> bool:
        return self.start <= ts < self.end

    def row(self, account: str, symbol: str) -> ContractRow:
        r = self.rows.get((account, symbol))
        if r is None:
            inst = self.instruments.get(symbol)
            acct = self.accounts.get(account)
            r = ContractRow(account, symbol)
            if inst is not None:
                r.exchange = inst.exchange
                r.cancel_limit = _lim(inst.cancel_limit)
                r.large_order_qty = _lim(inst.large_qty)
                r.large_cancel_limit = inst.large_cancel_limit
                r.self_trade_limit = inst.self_trade_limit
            if acct is not None:
                r.open_limit = acct.limits.max_open_volume_per_contract
            self.rows[(account, symbol)] = r
        return r

    # -- records
    def feed(self, rec: jr.JournalRecord) -> None:
        self.records += 1
        t = type(rec)
        if self.pending is not None and not (t is jr.Decision and rec.reason != 0 and
                                             rec.cl_ord_id == self.pending[0].msg.cl_ord_id):
            self._settle_pending(refused=False)
        if t is jr.Inbound:
            msg = rec.msg
            mt = type(msg)
            if mt is Logon:
                self.logon(rec.session, msg)
            elif mt is NewOrder:
                self._new_order(rec, msg)
            elif mt is CancelOrder:
                self._cancel(rec, msg)
        elif t is jr.Decision:
            if self.pending is not None and rec.reason != 0:
                self._settle_pending(refused=True, reason=rec.reason)
        elif t is jr.ExchangeEvent:
            self._exchange(rec)
        elif t is jr.State:
            if rec.kind == "boot":
                self.prefix, self.order_seq = rec.data.decode(), 0
            elif rec.kind == checkpoint.KIND:
                try:
                    cp = checkpoint.decode(rec)
                except ValueError:
                    return
                self.prefix, self.order_seq = cp.prefix, cp.order_seq
                for m in cp.sessions:
                    self.sessions.setdefault(m.session, _Session(m.user, frozenset(m.accounts)))
            elif rec.kind == "session_closed" and self.today(rec.ts_ns):
                s = self.sessions.get(int(rec.data or 0))
                if s is not None:
                    s.used = True
        elif t is jr.AdminAction:
            if self.today(rec.ts_ns) and rec.action == REGISTRY_FLAG:
                # The registry's own record of the finding; its alert (below) says the same.
                self.corrections.setdefault((rec.scope_value, rec.ts_ns),
                                            f"report needs correction: {rec.reason}")
            if self.today(rec.ts_ns) and rec.action in _STOP_ACTIONS:
                detail = ";".join(f"{k}={_cell(v)}" for k, v in sorted(rec.args.items()))
                self.actions.append(ActionRow(rec.ts_ns, rec.operator, rec.action,
                                              rec.scope_kind, rec.scope_value, rec.reason,
                                              detail, rec.emergency))
        elif t is jr.Outbound and rec.session == jr.NO_SESSION and type(rec.msg) is Alert:
            # The risk desk's copy of an alert (``Router.alert``): not a message to anyone.
            a = rec.msg
            if a.code == REPORT_NEEDS_CORRECTION and self.today(rec.ts_ns):
                kind, _, target = a.scope.partition(":")
                if kind == "account":
                    self.corrections[(target.split("/", 1)[0], rec.ts_ns)] = a.text

    def logon(self, session: int, msg: Logon) -> None:
        user = self.cfg.users.get(msg.user)
        if user is not None:
            term = msg.terminal
            self.sessions[session] = _Session(
                msg.user, frozenset(msg.accounts or user.accounts) & frozenset(user.accounts),
                app_id=msg.app_id,
                terminal=f"{term.ip}/{term.mac}" if term is not None else "")

    def finish(self) -> None:
        if self.pending is not None:
            self._settle_pending(refused=False)

    def _new_order(self, rec: jr.Inbound, msg: NewOrder) -> None:
        qty = msg.qty if type(msg.qty) is int else 0
        o = _Order(msg.account, msg.symbol, qty, msg.offset, msg.hedge, msg.tif,
                   today=self.today(rec.ts_ns))
        if o.today:
            r = self.row(msg.account, msg.symbol)
            r.orders += 1
            if msg.tif in (Tif.IOC, Tif.FOK):
                r.fak_fok += 1
        s = self.sessions.get(rec.session)
        # The router's checks before the engine, which refuse without a decision record.
        if s is None or order_field_problem(msg) is not None or msg.account not in s.accounts:
            return self._refused(o)
        day = self._day_of(rec.ts_ns)
        if self.used_day.get(s.user) != day:
            self.used_day[s.user] = day
            self.used[s.user] = set()
        used = self.used[s.user]
        if msg.cl_ord_id in used:
            return self._refused(o)
        used.add(msg.cl_ord_id)
        if o.today:
            s.used = True
            self.seat_sessions[msg.account].add(rec.session)
            self.seat_users[msg.account].add(s.user)
            if s.app_id:
                self.seat_apps[msg.account].add(s.app_id)
            if s.terminal:
                self.seat_terminals[msg.account].add(s.terminal)
        self.pending = (rec, o)
        self.by_clid[(s.user, msg.cl_ord_id)] = o
        return None

    def _day_of(self, ts: int) -> int:
        return trading_day_number(ts, self.cfg.risk.day_boundary_s)

    def _refused(self, o: _Order, reason: int = 0) -> None:
        if o.today:
            r = self.row(o.account, o.symbol)
            r.refused += 1
            if reason == Reason.SELF_TRADE:
                r.self_trade_refusals += 1

    def _settle_pending(self, refused: bool, reason: int = 0) -> None:
        assert self.pending is not None
        rec, o = self.pending
        self.pending = None
        if refused:
            return self._refused(o, reason)
        o.accepted = True
        self.order_seq += 1
        o.exch_id = f"{self.prefix}{self.order_seq:x}"
        self.by_exch[o.exch_id] = o
        if o.today:
            self._message(o, rec.ts_ns)
            self.seat_links[o.account].add(self.cfg.exchange.user)  # the seat it went out on
        return None

    def _message(self, o: _Order, ts: int) -> None:
        self.row(o.account, o.symbol).times.append(ts)
        inst = self.instruments.get(o.symbol)
        self.prod_msgs[(o.account, inst.product if inst else o.symbol)] += 1

    def _cancel(self, rec: jr.Inbound, msg: CancelOrder) -> None:
        s = self.sessions.get(rec.session)
        if s is None or not self.today(rec.ts_ns):
            return
        o = self.by_clid.get((s.user, msg.orig_cl_ord_id))
        if o is None or not o.accepted or o.finished or o.account != msg.account \
                or o.account not in s.accounts:
            return  # answered with a cancel-reject; the engine counts nothing
        r = self.row(o.account, o.symbol)
        r.cancels += 1
        if o.qty >= r.large_order_qty:
            r.large_cancels += 1
        self._message(o, rec.ts_ns)

    def _exchange(self, rec: jr.ExchangeEvent) -> None:
        rep = rec.report
        o = self.by_exch.get(rep.cl_ord_id)
        if rep.exec_type == ExecType.TRADE:
            if rep.exec_id:
                if rep.exec_id in self.exec_ids:
                    return
                self.exec_ids.add(rep.exec_id)
            if self.today(rec.ts_ns) and rep.last_qty > 0:
                account = o.account if o is not None else rep.account
                symbol = o.symbol if o is not None else rep.symbol
                r = self.row(account, symbol)
                r.fills += 1
                r.filled_lots += rep.last_qty
                if rep.self_trade:
                    r.self_trades += 1
                if o is not None and o.offset == Offset.OPEN and o.hedge != Hedge.HEDGE:
                    r.open_volume += rep.last_qty
                inst = self.instruments.get(symbol)
                self.prod_filled[(account, inst.product if inst else symbol)].add(rep.cl_ord_id)
                self.seat_links[account].add(rec.link or self.cfg.exchange.user)
        if o is not None and (rep.status in _FINAL or rep.exec_type in
                              (ExecType.CANCELED, ExecType.REJECTED)):
            if rep.exec_type == ExecType.CANCELED and not o.finished and \
                    o.tif in (Tif.IOC, Tif.FOK) and self.today(rec.ts_ns):
                self.row(o.account, o.symbol).fak_cancels += 1
            o.finished = True

    # -- result
    def report(self, day: int, damage: str) -> DailyReport:
        risk = self.cfg.risk
        contracts = [self.rows[k] for k in sorted(self.rows)]
        group_volume: dict[tuple[str, str], int] = defaultdict(int)
        for r in contracts:
            group_volume[(self._group(r.account), r.symbol)] += r.open_volume
        for r in contracts:
            r.group_open_volume = group_volume[(self._group(r.account), r.symbol)]
        per_acct: dict[str, list[ContractRow]] = defaultdict(list)
        for r in contracts:
            k = self._limits(r.account).programmatic_per_sec
            r.max_per_sec, r.busy_seconds = sessions_per_second(r.times, k)
            per_acct[r.account].append(r)
        correction = {a for a, _ in self.corrections}
        stopped: dict[str, int] = defaultdict(int)
        for a in self.actions:
            if a.scope == "account":
                stopped[a.key] += 1
        accounts = []
        for name in sorted(set(per_acct) | correction | set(stopped)):
            rows = per_acct.get(name, [])
            acct = self.accounts.get(name)
            lim = self._limits(name)
            times = [t for r in rows for t in r.times]
            best, busy = sessions_per_second(times, lim.programmatic_per_sec)
            exchanges = [risk.exchanges[r.exchange] for r in rows if r.exchange in risk.exchanges]
            per_sec = min((e.hft_per_sec for e in exchanges), default=300)
            per_day = min((e.hft_per_day for e in exchanges), default=20_000)
            accounts.append(AccountRow(
                name, acct.group if acct else "", _registration(acct),
                sum(r.orders for r in rows), sum(r.refused for r in rows),
                sum(r.cancels for r in rows), len(times), sum(r.fills for r in rows), best, busy,
                busy >= lim.programmatic_occasions, best >= per_sec or len(times) >= per_day,
                name in correction, stopped.get(name, 0)))
        products = []
        for (account, product) in sorted(self.prod_msgs.keys() | self.prod_filled.keys()):
            lim = self._limits(account)
            msgs = self.prod_msgs.get((account, product), 0)
            filled = len(self.prod_filled.get((account, product), ()))
            fee = lim.message_fee * max(0, msgs - lim.message_fee_free)
            products.append(ProductRow(account, product, msgs, filled,
                                       msgs / max(filled, 1) - 1.0 if msgs else 0.0, round(fee, 2)))
        seats = []
        for name in sorted(self.seat_sessions):
            acct = self.accounts.get(name)
            if acct is None or (acct.programmatic == 0 and not acct.hft_registered
                                and not any(a.account == name and a.programmatic_standard
                                            for a in accounts)):
                continue
            seats.append(SeatRow(name, " ".join(sorted(self.seat_users[name])),
                                 len(self.seat_sessions[name]),
                                 " ".join(sorted(self.seat_links[name])),
                                 " ".join(sorted(self.seat_apps[name])),
                                 " ".join(sorted(self.seat_terminals[name]))))
        return DailyReport(risk.firm.name, _iso_day(day), self.start, self.end, contracts,
                           accounts, products, sorted(self.actions, key=_action_key), seats,
                           sorted((a, ts, text) for (a, ts), text in self.corrections.items()),
                           self.records, damage)

    def _group(self, account: str) -> str:
        acct = self.accounts.get(account)
        return acct.group if acct is not None else account

    def _limits(self, account: str) -> Any:
        acct = self.accounts.get(account)
        if acct is not None:
            return acct.limits
        from checks.model import Limits
        return Limits()


def _lim(value: int) -> int:
    return 0 if value >= UNLIMITED else int(value)


def _registration(acct: Any) -> str:
    if acct is None:
        return ""
    from checks.enums import ProgReg
    name = ProgReg(acct.programmatic).name
    return name + ("+HFT" if acct.hft_registered else "")


def _action_key(a: ActionRow) -> tuple:
    return (a.ts_ns, a.action, a.scope, a.key, a.operator)


def _iso_day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def start_seq(path: Path, day: int) -> int:
    """Where reading starts: the segment that opens with the newest trading-day checkpoint of
    ``day`` or before (the gateway starts a segment for each; it carries the sessions still
    logged on and the exchange-id counter), so a report does not read years of journal. A
    journal without one is read from its first record."""
    for first, _ in reversed(jr.list_segments(path)):
        for _, rec in jr.JournalReader(path, first):
            if type(rec) is jr.State and rec.kind == checkpoint.KIND:
                try:
                    if checkpoint.decode(rec).trading_day <= day:
                        return first
                except ValueError:
                    pass
            break  # only the segment's first record
    return 0


def earlier_logons(path: Path, start: int) -> tuple[dict[int, Logon], str]:
    """The Logons of the sessions the checkpoint at ``start`` carries over (it names them, not
    the application and terminal they logged on with), read back segment by segment until
    each is found: the report is the same wherever reading starts. Also: damage met on the
    way (a session's application and terminal may then be missing)."""
    first = next(iter(jr.JournalReader(path, start)))[1]
    try:
        wanted = {m.session for m in checkpoint.decode(first).sessions}
    except ValueError:
        return {}, ""
    found: dict[int, Logon] = {}
    segs = [f for f, _ in jr.list_segments(path) if f < start] + [start]
    for seg_start, seg_end in reversed(list(zip(segs, segs[1:], strict=False))):
        if not wanted - found.keys():
            break
        here: dict[int, Logon] = {}
        reader = jr.JournalReader(path, seg_start)
        for seq, rec in reader:
            if seq >= seg_end:  # one segment at a time, newest first
                break
            if type(rec) is jr.Inbound and type(rec.msg) is Logon and rec.session in wanted:
                here[rec.session] = rec.msg
        for session, logon in here.items():  # the newest Logon of a session id wins
            found.setdefault(session, logon)
        if reader.damage is not None:
            return found, str(reader.damage)
    return found, ""


def build(cfg: GatewayConfig, journal_dir: str | Path, day: int) -> DailyReport:
    """Read the journal and make trading day ``day``'s report (days since the epoch)."""
    path = Path(journal_dir)
    if not path.is_dir():
        raise ReportError(f"journal {path} is not a directory")
    if not jr.list_segments(path):
        raise ReportError(f"journal {path} holds no segments")
    b = _Builder(cfg, day)
    start = start_seq(path, day)
    damage = ""
    if start:
        logons, damage = earlier_logons(path, start)
        for session, logon in logons.items():
            b.logon(session, logon)
    reader = jr.JournalReader(path, start)
    for _, rec in reader:
        if rec.ts_ns >= b.end and type(rec) is not jr.State:
            continue  # a later day: nothing of it counts
        b.feed(rec)
    b.finish()
    return b.report(day, str(reader.damage) if reader.damage is not None else damage)
