"""Named, seeded, reproducible scenarios with expected outcomes — and their runner.

How it fits
-----------
A scenario is an async flow written with ``simulator.client`` (the flows themselves live in
``simulator.scenario_flows``, one function each, registered with ``@scenario``). It runs
against one of two *targets*:

- ``exchange``: the bare simulated exchange. Only what an exchange does is expected (orders
  acknowledged, trades, exchange rejects such as the daily limit band, orders of a dropped seat
  surviving);
- ``gateway``: the risk gateway in front of the exchange. The flow is the same; the
  expectations are the risk checks' (rate limits, self-trade prevention, collars, funds,
  positions, cancel-on-disconnect, programmatic-behaviour alerts), written against the reason
  codes of ``checks.reasons``.

Every check is recorded as a ``Check`` (name, passed, detail) in a ``ScenarioResult``;
``fengkong sim scenario NAME --target exchange|gateway`` prints the table and exits non-zero
when any check fails. Randomness comes only from ``ctx.rng = random.Random(seed)``, so a
scenario's orders (prices, sizes, order of events) are the same for the same seed; only the
cl_ord_id prefix changes per run, because the gateway refuses a cl_ord_id reused on the same
trading day.

Sessions are named by *role* ("desk", "algo", ...): a role logs on as
``logins[role]`` if given, else as user ``user_prefix + role`` (default ``sim-desk``...)
with ``secret``; a gateway set up for scenarios permits those users the accounts each
scenario names (see the README section). Scenarios assume they are alone on the book and
cancel what they leave resting, so they can run back to back on one exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from checks.config import load_risk_config
from checks.enums import OrdStatus
from checks.model import Instrument, RiskConfig
from gateway.protocol import Alert, CancelReject, ExecReport
from simulator.client import Client, OrderHandle
from simulator.replay import Login, add_fix_option, connector, parse_login, reason_name

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "risk.toml"
TARGETS = ("exchange", "gateway")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class ScenarioResult:
    name: str
    target: str
    seed: int
    checks: list[Check] = field(default_factory=list)
    error: str | None = None  # the flow itself failed (timeout, connection lost, ...)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)


Flow = Callable[["ScenarioContext"], Awaitable[None]]


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    title: str
    expect_exchange: str
    expect_gateway: str
    roles: tuple[str, ...]
    flow: Flow


_REGISTRY: dict[str, ScenarioSpec] = {}


def scenario(name: str, title: str, *, exchange: str, gateway: str,
             roles: tuple[str, ...]) -> Callable[[Flow], Flow]:
    """Register a flow under ``name`` with its expectations for both targets (in words)."""
    def register(flow: Flow) -> Flow:
        _REGISTRY[name] = ScenarioSpec(name, title, exchange, gateway, roles, flow)
        return flow
    return register


def _registry() -> dict[str, ScenarioSpec]:
    import simulator.scenario_flows  # noqa: F401 - registers the library on first use

    return _REGISTRY


def list_scenarios() -> list[ScenarioSpec]:
    return list(_registry().values())


class ScenarioContext:
    """What a flow gets: connections by role, seeded randomness, instruments, checks."""

    def __init__(self, host: str, port: int, target: str, seed: int, config: RiskConfig,
                 logins: Mapping[str, Login], user_prefix: str, secret: str,
                 timeout: float, fix: str | None = None) -> None:
        self.host, self.port, self.target, self.seed = host, port, target, seed
        self.rng = random.Random(seed)
        self.config = config
        self.logins = logins
        self.user_prefix, self.secret = user_prefix, secret
        self.timeout = timeout
        self.fix = fix  # over the gateway's FIX port, with this as its CompID
        self._connect = connector(fix)
        self.run_id = f"s{seed}{secrets.token_hex(2)}"
        self.checks: list[Check] = []
        self.clients: list[Client] = []
        self.reports: dict[str, list[ExecReport | CancelReject]] = {}
        self.alerts: list[Alert] = []
        self._instruments = {i.symbol: i for i in config.instruments}

    @property
    def gateway(self) -> bool:
        return self.target == "gateway"

    def instrument(self, symbol: str) -> Instrument:
        return self._instruments[symbol]

    def px(self, symbol: str, ticks_from_ref: int) -> float:
        """A price ``ticks_from_ref`` ticks away from the reference price, on tick."""
        inst = self._instruments[symbol]
        ticks = round(inst.reference_price / inst.tick) + ticks_from_ref
        return round(ticks * inst.tick, 8)

    async def connect(self, role: str, accounts: list[str], *,
                      cancel_on_disconnect: bool = True) -> Client:
        login = self.logins.get(role) or Login(self.user_prefix + role, self.secret)
        log = self.reports.setdefault(role, [])
        client = await self._connect(
            self.host, self.port, login.user, login.secret, login.accounts or accounts,
            heartbeat_s=5.0, cancel_on_disconnect=cancel_on_disconnect, timeout=self.timeout,
            report_queue=0, on_report=log.append, on_alert=self.alerts.append,
            id_prefix=f"{self.run_id}-{len(self.clients)}-")
        self.clients.append(client)
        return client

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, bool(passed), detail))
        return bool(passed)

    async def order(self, client: Client, **kwargs: Any) -> OrderHandle:
        """Send one order and wait for its first report."""
        handle = await client.send_order(**kwargs)
        await handle.acked(self.timeout)
        return handle

    async def acked(self, handles: list[OrderHandle]) -> None:
        await asyncio.gather(*(h.acked(self.timeout) for h in handles))

    async def done(self, handles: list[OrderHandle]) -> None:
        await asyncio.gather(*(h.wait_done(self.timeout) for h in handles))

    async def cancel_all(self, client: Client) -> list[OrderHandle]:
        """Cancel every working order of ``client`` and wait until each is finished."""
        working = [h for h in client.working if not h.done]
        for h in working:
            await client.cancel(h.cl_ord_id, account=h.order.account)
        await self.done(working)
        return working

    async def finish(self) -> None:
        """Leave the book as found: cancel what is still working, log out every session."""
        for client in self.clients:
            if not client.closed:
                try:
                    await self.cancel_all(client)
                except Exception:  # cleanup must reach every client
                    pass
        await asyncio.gather(*(c.close() for c in self.clients if not c.closed),
                             return_exceptions=True)


def rejects(handles: list[OrderHandle]) -> dict[int, int]:
    """Reject reason code -> count among ``handles``."""
    out: dict[int, int] = {}
    for h in handles:
        if h.status == OrdStatus.REJECTED:
            out[h.reason] = out.get(h.reason, 0) + 1
    return out


def describe(codes: Mapping[int, int]) -> str:
    return ", ".join(f"{reason_name(c)} x{n}" for c, n in sorted(codes.items())) or "none"


async def run_scenario(name: str, host: str, port: int, target: str = "exchange", seed: int = 1,
                       *, config: RiskConfig | str | Path = DEFAULT_CONFIG,
                       logins: Mapping[str, Login] | None = None, user_prefix: str = "sim-",
                       secret: str = "", timeout: float = 5.0,
                       fix: str | None = None) -> ScenarioResult:
    """Run one scenario against ``host:port`` and return its checks (never raises for a failure)."""
    registry = _registry()
    if name not in registry:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(registry)}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    cfg = config if isinstance(config, RiskConfig) else load_risk_config(config)
    ctx = ScenarioContext(host, port, target, seed, cfg, logins or {}, user_prefix, secret, timeout,
                          fix)
    result = ScenarioResult(name, target, seed)
    started = time.perf_counter()
    try:
        await registry[name].flow(ctx)
    except Exception as err:  # a failing flow is a failed scenario, reported
        result.error = f"{type(err).__name__}: {err}"
    finally:
        await ctx.finish()
    result.checks = ctx.checks
    result.elapsed_s = time.perf_counter() - started
    return result


def print_result(result: ScenarioResult, spec: ScenarioSpec, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout)
    expect = spec.expect_gateway if result.target == "gateway" else spec.expect_exchange
    table = Table(title=f"{spec.name} ({result.target}, seed {result.seed}): {spec.title}",
                  caption=f"expected: {expect}")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in result.checks:
        table.add_row(c.name, "[green]PASS[/]" if c.passed else "[red]FAIL[/]", c.detail)
    if result.error:
        table.add_row("flow", "[red]ERROR[/]", result.error)
    console.print(table)
    verdict = "[green]PASSED[/]" if result.passed else "[red]FAILED[/]"
    console.print(f"{spec.name}: {verdict} in {result.elapsed_s:.2f} s")


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="fengkong sim scenario",
                                          description="Run a named scenario and check its expectations.")
    p.add_argument("name", nargs="?", help="scenario name, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="list the scenarios and their expectations")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7000)
    p.add_argument("--target", choices=TARGETS, default="gateway",
                   help="what listens on host:port: the risk gateway or the bare exchange")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="risk config with the instruments and accounts the scenarios use")
    p.add_argument("--login", action="append", default=[], type=parse_login,
                   metavar="ROLE=USER:SECRET[:ACCOUNTS]", help="credentials of one role (repeatable)")
    p.add_argument("--user-prefix", default="sim-", help="default user = prefix + role")
    p.add_argument("--secret", default="", help="default secret")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for any one answer")
    p.add_argument("--pause", type=float, default=1.1,
                   help="with 'all' against the gateway: seconds between scenarios (rate windows)")
    add_fix_option(p)
    return p


async def _run_many(names: list[str], args: argparse.Namespace) -> list[ScenarioResult]:
    results = []
    for i, name in enumerate(names):
        if i and args.target == "gateway":
            # Rate limits are per rolling second: let the previous scenario's window empty,
            # or its orders would count against the next one's.
            await asyncio.sleep(args.pause)
        results.append(await run_scenario(
            name, args.host, args.port, args.target, args.seed, config=args.config,
            logins=dict(args.login), user_prefix=args.user_prefix, secret=args.secret,
            timeout=args.timeout, fix=args.fix))
    return results


def run(args: argparse.Namespace) -> int:
    import uvloop

    registry = _registry()
    if args.list or not args.name:
        for spec in registry.values():
            print(f"{spec.name}: {spec.title} (roles: {', '.join(spec.roles)})\n"
                  f"    exchange: {spec.expect_exchange}\n    gateway:  {spec.expect_gateway}")
        return 0 if args.list else 2
    names = list(registry) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in registry]
    if unknown:
        print(f"error: unknown scenario {unknown[0]!r}; known: {', '.join(registry)}", file=sys.stderr)
        return 2
    try:
        results = uvloop.run(_run_many(names, args))
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for result in results:
        print_result(result, registry[result.name])
    failed = [r.name for r in results if not r.passed]
    if len(results) > 1:
        print(f"{len(results) - len(failed)}/{len(results)} scenarios passed"
              + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
