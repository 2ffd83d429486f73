"""Replay recorded order flow through the gateway (or the simulated exchange) and summarise it.

The file format (CSV / JSON lines / msgpack, one row per action) is described and parsed in
``simulator.flow_file``.

Running
-------
``replay()`` opens one ``simulator.client.Client`` per session (user/secret per session from
``logins``, else ``user_prefix + session`` and ``default_secret``; the session's accounts are
the ones it uses in the file), sends every action at its original time divided by ``speed``
(``speed=0``: as fast as the sockets take them), then waits until every order has its first
report and every cancel its answer, and returns a ``ReplaySummary``: sent, accepted, rejected
by reason, fills, cancels, cancel rejects and the latency (p50 / p99 / max) from sending an
order to its first report.

Sessions are independent connections, so at high speed two sessions' orders may reach the
server in either order. ``sync_sessions=True`` keeps the file's order across sessions (before
a session sends, every earlier action of the other sessions has been answered), which makes
a replay exactly reproducible at any speed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from checks.enums import ExecType, OrdStatus
from checks.reasons import Reason
from gateway.protocol import CancelReject, ExecReport
from simulator.client import Client, ClientError
from simulator.flow_file import FlowAction, ReplayFormatError, load_flow

__all__ = ["FlowAction", "Login", "ReplayFormatError", "ReplaySummary", "load_flow", "main",
           "parse_login", "replay"]

_X_TRADE, _X_CANCELED = int(ExecType.TRADE), int(ExecType.CANCELED)
_REJECTED = int(OrdStatus.REJECTED)


@dataclass
class Login:
    user: str
    secret: str = ""
    accounts: list[str] = field(default_factory=list)


@dataclass
class ReplaySummary:
    sessions: int = 0
    orders_sent: int = 0
    cancels_sent: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # reason name -> count
    fills: int = 0  # TRADE reports received (both sides when both are replayed)
    filled_qty: int = 0
    canceled: int = 0  # CANCELED reports (explicit cancels and IOC/FOK remainders)
    cancel_rejects: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0  # orders without any report, cancels without an answer, at the end
    errors: list[str] = field(default_factory=list)
    latencies_us: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def latency_us(self, q: float) -> float:
        """Nearest-rank percentile of order -> first report, microseconds (0 with no data)."""
        data = sorted(self.latencies_us)
        if not data:
            return 0.0
        return data[min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))]

    def lines(self) -> list[tuple[str, str]]:
        rows = [
            ("sessions", str(self.sessions)),
            ("orders sent", str(self.orders_sent)),
            ("cancels sent", str(self.cancels_sent)),
            ("accepted", str(self.accepted)),
            ("rejected", str(self.rejected_total)),
        ]
        rows += [(f"  {name}", str(n)) for name, n in sorted(self.rejected.items())]
        rows += [("fills", f"{self.fills} ({self.filled_qty} lots)"),
                 ("canceled", str(self.canceled)),
                 ("cancel rejects", str(sum(self.cancel_rejects.values())))]
        rows += [(f"  {name}", str(n)) for name, n in sorted(self.cancel_rejects.items())]
        rows += [("unanswered", str(self.unanswered)),
                 ("latency p50 / p99 / max (us)",
                  f"{self.latency_us(0.5):.0f} / {self.latency_us(0.99):.0f} / {self.latency_us(1.0):.0f}"),
                 ("elapsed (s)", f"{self.elapsed_s:.3f}")]
        rows += [("error", e) for e in self.errors]
        return rows


def reason_name(code: int) -> str:
    try:
        return f"{code} {Reason(code).name}"
    except ValueError:
        return f"{code} UNKNOWN"


class _Replayer:
    """Sends the actions and keeps the books of what came back (see the module docstring)."""

    def __init__(self, summary: ReplaySummary, id_prefix: str, sync_sessions: bool,
                 answer_timeout: float) -> None:
        self.s = summary
        self.answer_timeout = answer_timeout
        self.prefix = id_prefix
        self.sync = sync_sessions
        self.clients: dict[str, Client] = {}
        self.first: dict[tuple[str, str], int] = {}  # (session, cl_ord_id) -> sent perf ns
        self.cancels: dict[tuple[str, str], str] = {}  # (session, orig id) -> cancel id
        self.cancel_ids: dict[tuple[str, str], str] = {}  # (session, cancel id) -> orig id
        self.outstanding: Counter[str] = Counter()  # session -> unanswered actions
        self.accounts: dict[tuple[str, str], str] = {}  # (session, cl_ord_id) -> account
        self.progress = asyncio.Event()

    def on_report(self, session: str, rep: ExecReport | CancelReject) -> None:
        s = self.s
        if rep.__class__ is CancelReject:
            key = (session, rep.cl_ord_id)
            orig = self.cancel_ids.pop(key, None)
            if orig is not None:
                self.cancels.pop((session, orig), None)
                self._answered(session)
            s.cancel_rejects[reason_name(rep.reason)] += 1
            return
        key = (session, rep.cl_ord_id)
        if rep.exec_type == _X_CANCELED and key in self.cancel_ids:
            key = (session, self.cancel_ids[key])  # a server that reports by the cancel's id
        sent = self.first.pop(key, None)
        if sent is not None:
            s.latencies_us.append((time.perf_counter_ns() - sent) / 1000.0)
            if rep.status == _REJECTED:
                s.rejected[reason_name(rep.reason)] += 1
            else:
                s.accepted += 1
            self._answered(session)
        x = rep.exec_type
        if x == _X_TRADE:
            s.fills += 1
            s.filled_qty += rep.last_qty
        elif x == _X_CANCELED:
            s.canceled += 1
            cancel_id = self.cancels.pop(key, None)
            if cancel_id is not None:
                self.cancel_ids.pop((session, cancel_id), None)
                self._answered(session)

    def _answered(self, session: str) -> None:
        self.outstanding[session] -= 1
        self.progress.set()

    async def wait_others(self, session: str) -> None:
        """Until every earlier action of the other sessions is answered (or none comes)."""
        while any(n > 0 for name, n in self.outstanding.items() if name != session):
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.answer_timeout)
            except TimeoutError:
                self.s.errors.append(f"no answer within {self.answer_timeout:g} s; "
                                     "carrying on without --sync-sessions order")
                self.sync = False
                return

    async def send(self, act: FlowAction) -> None:
        client = self.clients[act.session]
        if self.sync:
            await self.wait_others(act.session)
        await client.drain()
        if act.action == "new":
            self.accounts[(act.session, act.cl_ord_id)] = act.account
            cl = self.prefix + act.cl_ord_id
            self.first[(act.session, cl)] = time.perf_counter_ns()
            self.outstanding[act.session] += 1
            self.s.orders_sent += 1
            client.send_order_nowait(account=act.account, symbol=act.symbol, side=act.side,
                                     qty=act.qty, price=act.price, offset=act.offset,
                                     hedge=act.hedge, ord_type=act.ord_type, tif=act.tif,
                                     cl_ord_id=cl)
        else:
            orig = self.prefix + act.orig_cl_ord_id
            account = act.account or self.accounts.get((act.session, act.orig_cl_ord_id), "")
            cancel_id = self.prefix + act.cl_ord_id if act.cl_ord_id else client.new_cl_ord_id()
            self.cancels[(act.session, orig)] = cancel_id
            self.cancel_ids[(act.session, cancel_id)] = orig
            self.outstanding[act.session] += 1
            self.s.cancels_sent += 1
            client.cancel_nowait(orig, account=account, cl_ord_id=cancel_id)

    def pending(self) -> int:
        return sum(n for n in self.outstanding.values() if n > 0)


async def replay(actions: list[FlowAction], host: str, port: int, *,
                 logins: Mapping[str, Login] | None = None, user_prefix: str = "",
                 default_secret: str = "", speed: float = 1.0, id_prefix: str = "",
                 sync_sessions: bool = False, drain_timeout: float = 5.0,
                 progress: bool = False, heartbeat_s: float = 5.0,
                 cancel_on_disconnect: bool = True, fix: str | None = None) -> ReplaySummary:
    """Replay ``actions`` against ``host:port``; ``speed=0`` means as fast as possible.
    ``fix``: ``host:port`` is the gateway's FIX port and this its CompID (TargetCompID); each
    session's SenderCompID is its user in upper case (``simulator.fix_client``)."""
    summary = ReplaySummary()
    r = _Replayer(summary, id_prefix, sync_sessions, drain_timeout)
    sessions: dict[str, set[str]] = {}
    for act in actions:
        accs = sessions.setdefault(act.session, set())
        if act.account:
            accs.add(act.account)
    logins = dict(logins or {})
    connect = connector(fix)
    try:
        for name, accs in sessions.items():
            login = logins.get(name) or Login(user_prefix + name, default_secret)
            r.clients[name] = await connect(
                host, port, login.user, login.secret, login.accounts or sorted(accs),
                heartbeat_s, cancel_on_disconnect, report_queue=0,
                on_report=lambda rep, n=name: r.on_report(n, rep))
        summary.sessions = len(r.clients)
        started = time.perf_counter()
        await _send_all(r, actions, speed, progress)
        try:
            while r.pending():
                r.progress.clear()
                await asyncio.wait_for(r.progress.wait(), drain_timeout)
        except TimeoutError:
            pass
        summary.unanswered = r.pending()
        summary.elapsed_s = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in r.clients.values()), return_exceptions=True)
    return summary


async def _send_all(r: _Replayer, actions: list[FlowAction], speed: float, progress: bool) -> None:
    loop = asyncio.get_running_loop()
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        bar = Progress("[progress.description]{task.description}", BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), transient=False)
        bar.start()
        task = bar.add_task("replaying", total=len(actions))
    try:
        start = loop.time()
        for i, act in enumerate(actions):
            if speed > 0:
                delay = start + act.t_ms / 1000.0 / speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 256 == 255:
                await asyncio.sleep(0)  # let reports in while blasting
            try:
                await r.send(act)
            except (ClientError, ValueError) as err:
                r.s.errors.append(f"line {act.line}: session {act.session!r}: {err}")
            if bar is not None and (i % 64 == 63 or i == len(actions) - 1):
                bar.update(task, completed=i + 1)
    finally:
        if bar is not None:
            bar.stop()


def print_summary(summary: ReplaySummary, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="replay summary", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in summary.lines():
        table.add_row(what, value)
    Console(file=file or sys.stdout).print(table)


def parse_login(text: str) -> tuple[str, Login]:
    """``SESSION=USER:SECRET[:ACC1,ACC2]`` -> (session, Login)."""
    session, sep, rest = text.partition("=")
    if not sep or not session:
        raise argparse.ArgumentTypeError(f"expected SESSION=USER:SECRET[:ACCOUNTS], got {text!r}")
    parts = rest.split(":")
    if len(parts) < 2 or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected SESSION=USER:SECRET[:ACCOUNTS], got {text!r}")
    accounts = [a for a in parts[2].split(",") if a] if len(parts) > 2 else []
    return session, Login(parts[0], parts[1], accounts)


def connector(fix: str | None, used: Counter[str] | None = None) -> Any:
    """``Client.connect``, or over FIX (``fix``: the gateway's CompID) ``FixClient.connect``.

    A FIX session is one CompID pair, so one user's connections in one run need a CompID each:
    the first is the user in upper case (``ALGO1``), the next ``ALGO1-2``, ``ALGO1-3``... (the
    gateway's ``[[fix.sessions]]`` must list them). ``used`` counts them across calls."""
    if fix is None:
        return Client.connect
    from simulator.fix_client import FixClient

    counts = used if used is not None else Counter()

    async def connect(host: str, port: int, user: str, *args: Any, **kw: Any) -> Any:
        counts[user] += 1
        n = counts[user]
        sender = user.upper() if n == 1 else f"{user.upper()}-{n}"
        return await FixClient.connect(host, port, user, *args, sender_comp_id=sender,
                                       target_comp_id=fix, **kw)

    return connect


def add_fix_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fix", nargs="?", const="FENGKONG", default=None, metavar="COMPID",
                   help="drive the gateway through its FIX 4.4 port (--port is the FIX port); "
                        "COMPID is the gateway's (default FENGKONG), each session's own is "
                        "its user in upper case (ALGO1, then ALGO1-2 ... for more sessions of "
                        "one user)")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="fengkong sim replay",
                                          description="Replay recorded order flow.")
    p.add_argument("file", help="flow file: .csv, .jsonl or .msgpack")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--speed", default="1",
                   help="time scale: 1 = original timing, 10 = ten times faster, max = as fast as possible")
    p.add_argument("--login", action="append", default=[], type=parse_login,
                   metavar="SESSION=USER:SECRET[:ACCOUNTS]", help="credentials of one session (repeatable)")
    p.add_argument("--user-prefix", default="", help="default user = prefix + session name")
    p.add_argument("--secret", default="", help="default secret of sessions without --login")
    p.add_argument("--id-prefix", default="auto",
                   help="prefix for every cl_ord_id ('auto': unique per run, '' = as in the file)")
    p.add_argument("--sync-sessions", action="store_true",
                   help="keep the file's order across sessions (reproducible at any speed)")
    p.add_argument("--drain-timeout", type=float, default=5.0,
                   help="seconds to wait for outstanding answers after the last action")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar (default: when stdout is a terminal)")
    add_fix_option(p)
    return p


def parse_speed(text: str) -> float:
    if text.lower() in ("max", "0", "inf"):
        return 0.0
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--speed must be > 0 or 'max', got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import uvloop

    try:
        actions = load_flow(args.file)
        speed = parse_speed(args.speed)
    except (ReplayFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    prefix = args.id_prefix
    if prefix == "auto":
        prefix = f"r{int(time.time()) % 100_000:05d}-"
    progress = sys.stdout.isatty() if args.progress is None else args.progress
    try:
        summary = uvloop.run(replay(
            actions, args.host, args.port, logins=dict(args.login), user_prefix=args.user_prefix,
            default_secret=args.secret, speed=speed, id_prefix=prefix,
            sync_sessions=args.sync_sessions, drain_timeout=args.drain_timeout, progress=progress,
            fix=args.fix))
    except (OSError, ClientError, TimeoutError) as err:
        print(f"error: cannot replay against {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0 if not summary.errors else 1


def main(argv: Iterable[str] | None = None) -> int:
    return run(build_parser().parse_args(None if argv is None else list(argv)))
