"""``fengkong``: the one command line for brokers, algo teams and risk officers.

    fengkong serve --config gateway.toml        run the gateway
    fengkong sim exchange|replay|scenario ...   the exchange simulator and its tools
    fengkong demo                               simulator + gateway + replay on loopback
    fengkong kill --account A [--close-only]    stop a scope and cancel what rests in it
    fengkong reset --account A                  put it back
    fengkong unlock USER --reason TEXT          lift a user's failed-logon lockout
    fengkong status [--account A]               live status as tables
    fengkong journal verify|dump|prune DIR      inspect the audit journal
    fengkong report daily --date D              the day's surveillance report (CSV + HTML)
    fengkong certify run|verify|cases ...       certify a client's system; check the records
    fengkong hash-secret / hash-token           make config entries for users and operators
    fengkong --version                          the installed version

The admin commands (kill, reset, status) talk to a running gateway's admin plane over HTTP;
the operator token comes from ``--token`` or ``$FENGKONG_TOKEN``.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from checks.config import ConfigError
from gateway.admin_client import AdminCallError, admin_call

SCOPES = ("firm", "account", "group", "session", "instrument", "product")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Top-level modules of the bench extra (and the bench package itself, which a wheel install
# of the runtime does not carry): missing one means "install the bench extra", not a bug.
_BENCH_MODULES = {"bench", "hdrh", "matplotlib", "pytest_benchmark"}


def version() -> str:
    """The installed distribution's version, else the one pyproject.toml declares."""
    from importlib import metadata

    try:
        return metadata.version("fengkong")
    except metadata.PackageNotFoundError:
        import tomllib
        from pathlib import Path

        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


# Commands with parsers of their own: everything after the command name goes to them as is
# (argparse's REMAINDER would refuse a leading --option).
_DELEGATED = {
    "journal": ("gateway.journal_tools", "main"),
    "registry": ("gateway.compliance.registry_cli", "main"),
    "bench": ("bench.harness", "main"),
    "report": ("gateway.compliance.report_cli", "main"),
    "certify": ("gateway.compliance.certify", "main"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        import importlib

        module, func = _DELEGATED[argv[0]]
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        try:
            return int(getattr(importlib.import_module(module), func)(rest) or 0)
        except ModuleNotFoundError as err:
            if argv[0] != "bench" or (err.name or "").split(".")[0] not in _BENCH_MODULES:
                raise
            print(f"fengkong bench: {(err.name or '').split('.')[0]} is not installed: the benchmark needs the bench "
                  "extra (`make bench`, or `pip install -r requirements/test.lock` in a "
                  "source checkout)", file=sys.stderr)
            return 2
        except BrokenPipeError:
            return _broken_pipe()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"fengkong: config error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _broken_pipe()


def _broken_pipe() -> int:
    """The reader went away (``fengkong journal dump DIR | head``): stop quietly, as cat does.
    stdout is pointed at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fengkong", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fengkong {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True, help="gateway TOML file")
    p.add_argument("--port", type=int, help="client port (overrides [gateway].port; 0 = any free)")
    p.add_argument("--admin-port", type=int, help="admin port (overrides [admin].port)")
    p.add_argument("--fix-port", type=int,
                   help="FIX port: turns the FIX acceptor on (overrides [fix]; 0 = any free)")
    p.add_argument("--exchange", metavar="HOST:PORT", help="exchange address (overrides [exchange])")
    p.add_argument("--journal", metavar="DIR", help="journal directory (overrides [journal].dir)")
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="Kafka bootstrap (overrides [kafka])")
    p.add_argument("--kafka-idempotent", choices=("on", "off"),
                   help="producer idempotence (off for brokers without InitProducerId)")
    p.add_argument("--id", help="gateway instance id (overrides [gateway].id)")
    p.add_argument("--seat", help="exchange seat user (overrides [exchange].user)")
    p.add_argument("--engine", choices=("cython", "reference"), default="cython",
                   help="risk engine: the Cython hot path, or the Python reference (same decisions)")
    p.add_argument("--router", choices=("fast", "reference"), default="fast",
                   help="order path: compiled (gateway/fastroute.pyx), or the Python reference "
                        "(same decisions, sends and journal)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS, type=str.lower,
                   help="least severe log level written (default: info)")
    p.add_argument("--log-json", action="store_true", default=None,
                   help="JSON log lines even on a TTY")
    p.set_defaults(func=_serve)

    from simulator.cli import add_sim_commands

    add_sim_commands(sub)

    p = sub.add_parser("demo", help="run the demo on loopback and print what happened")
    p.add_argument("--engine-only", action="store_true",
                   help="just the risk-engine walk-through (no sockets)")
    p.set_defaults(func=_demo)

    for name, helptext in (("kill", "stop a scope and cancel its working orders"),
                           ("reset", "lift a kill")):
        p = sub.add_parser(name, help=helptext)
        _admin_args(p)
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--firm", action="store_true", help="the whole firm")
        for scope in SCOPES[1:]:
            group.add_argument(f"--{scope}", metavar="ID")
        p.add_argument("--reason", default="", help="why (audited)")
        p.add_argument("--fleet", metavar="BOOTSTRAP",
                       help="publish on the Kafka control topic instead: every gateway applies it")
        p.add_argument("--control-topic", default="fengkong.control")
        p.add_argument("--operator", default=os.environ.get("USER", "operator"),
                       help="who is acting (audited; with --fleet)")
        if name == "kill":
            p.add_argument("--close-only", action="store_true",
                           help="refuse openings only; closing orders still pass")
        p.set_defaults(func=_kill_reset, action=name)

    p = sub.add_parser("unlock", help="lift a client user's failed-logon lockout")
    _admin_args(p)
    p.add_argument("user", help="the client user (users[].name)")
    p.add_argument("--reason", required=True, help="why (audited)")
    p.set_defaults(func=_unlock)

    p = sub.add_parser("status", help="live status of a running gateway")
    _admin_args(p)
    p.add_argument("--account", help="one account in detail")
    p.add_argument("--json", action="store_true", help="raw JSON")
    p.set_defaults(func=_status)

    # journal and bench parse their own options (see _DELEGATED); listed here for --help.
    sub.add_parser("journal", help="verify, dump or prune an audit journal", add_help=False)
    sub.add_parser("report", help="daily surveillance report from the journal (CSV + HTML)",
                   add_help=False)
    sub.add_parser("certify", help="certify a client's system (art. 16); verify the records",
                   add_help=False)
    sub.add_parser("registry", help="the programmatic-trading registry (art. 10 reports)",
                   add_help=False)

    p = sub.add_parser("hash-secret", help="hash a client secret for users[].secret_hash")
    p.add_argument("--secret", help="the secret (prompted for when omitted)")
    p.set_defaults(func=_hash_secret)
    p = sub.add_parser("hash-token", help="make an operator token and its token_hash")
    p.add_argument("--token", help="use this token instead of a new random one")
    p.set_defaults(func=_hash_token)

    sub.add_parser("bench", help="end-to-end benchmark: gateway vs bare forwarder vs direct",
                   add_help=False)
    return parser


# ---------------------------------------------------------------------- serve and demo
def _serve(args: argparse.Namespace) -> int:
    import uvloop

    from gateway.config import load_gateway_config
    from gateway.logs import configure_logging
    from gateway.server import serve

    configure_logging(args.log_level, args.log_json)
    cfg = apply_overrides(load_gateway_config(args.config), port=args.port,
                          admin_port=args.admin_port, exchange=args.exchange, journal=args.journal,
                          kafka=args.kafka, gateway_id=args.id, seat=args.seat,
                          idempotent=None if args.kafka_idempotent is None
                          else args.kafka_idempotent == "on", fix_port=args.fix_port)
    engine_cls = None
    if args.engine == "reference":
        from checks.engine import Engine as engine_cls
    from gateway.fast_router import router_class
    from gateway.journal import JournalError

    try:
        uvloop.run(serve(cfg, engine_cls=engine_cls, router_cls=router_class(args.router)))
    except (JournalError, OSError) as err:
        # A second gateway on the same journal directory ("already open by another writer"),
        # a port already in use, a directory it may not write: one line naming it, no traceback.
        print(f"fengkong serve: {_listen_error(cfg, err)}", file=sys.stderr)
        return 1
    return 0


def _listen_error(cfg: Any, err: Exception) -> str:
    """Name the listener whose port is taken (client or admin), else the error as it is."""
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        for name, host, port in (("client", cfg.gateway.host, cfg.gateway.port),
                                 ("admin", cfg.admin.host, cfg.admin.port)):
            if port and f", {port})" in str(err):
                return (f"the {name} port {host}:{port} is already in use (another gateway "
                        f"running? choose another with --{'port' if name == 'client' else 'admin-port'})")
    return str(err)


def _demo(args: argparse.Namespace) -> int:
    if args.engine_only:
        from gateway import engine_demo

        engine_demo.run()
        return 0
    from gateway import demo

    return demo.main()


def apply_overrides(cfg: Any, *, port: int | None = None, admin_port: int | None = None,
                    exchange: str | None = None, journal: str | None = None,
                    kafka: str | None = None, gateway_id: str | None = None,
                    idempotent: bool | None = None, seat: str | None = None,
                    fix_port: int | None = None) -> Any:
    """Command-line overrides of a loaded ``GatewayConfig`` (ports, addresses, journal)."""
    from msgspec.structs import replace

    if port is not None:
        cfg = replace(cfg, gateway=replace(cfg.gateway, port=port))
    if admin_port is not None:
        cfg = replace(cfg, admin=replace(cfg.admin, port=admin_port))
    if exchange:
        host, _, p = exchange.rpartition(":")
        if not host or not p.isdigit():
            raise ConfigError("--exchange", "", f"expected HOST:PORT, got {exchange!r}")
        cfg = replace(cfg, exchange=replace(cfg.exchange, host=host, port=int(p)))
    if journal is not None:
        cfg = replace(cfg, journal=replace(cfg.journal, dir=journal))
    if kafka is not None:
        if not cfg.journal.dir:
            raise ConfigError("--kafka", "", "Kafka publishes from the journal: give --journal too")
        cfg = replace(cfg, kafka=replace(cfg.kafka, bootstrap=kafka))
    if idempotent is not None:
        cfg = replace(cfg, kafka=replace(cfg.kafka, idempotent=idempotent))
    if gateway_id:
        cfg = replace(cfg, gateway=replace(cfg.gateway, id=gateway_id))
    if seat:
        cfg = replace(cfg, exchange=replace(cfg.exchange, user=seat))
    if fix_port is not None:
        cfg = replace(cfg, fix=replace(cfg.fix, enabled=True, port=fix_port))
    return cfg


# ---------------------------------------------------------------------- admin client
def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--admin", default=os.environ.get("FENGKONG_ADMIN", "http://127.0.0.1:9300"),
                   help="admin plane URL (default $FENGKONG_ADMIN or http://127.0.0.1:9300)")
    p.add_argument("--token", default=os.environ.get("FENGKONG_TOKEN", ""),
                   help="operator token (default $FENGKONG_TOKEN)")


def _scope_of(args: argparse.Namespace) -> tuple[str, str]:
    if args.firm:
        return "firm", ""
    for scope in SCOPES[1:]:
        value = getattr(args, scope)
        if value:
            return scope, value
    raise SystemExit("fengkong: name a scope, e.g. --account A001")


def _kill_reset(args: argparse.Namespace) -> int:
    scope, key = _scope_of(args)
    if args.fleet:
        return _fleet(args, scope, key)
    body: dict[str, Any] = {"scope": scope, "key": key, "reason": args.reason}
    if args.action == "kill":
        body["close_only"] = args.close_only
    try:
        result = admin_call(args.admin, args.token, "POST", f"/v1/{args.action}", body)
    except AdminCallError as err:
        if args.action == "reset" and err.status == 409:
            # Nothing was killed there: not an error of the call, but not the success the
            # operator expected either (a typo in the key?), so say so and exit 1.
            print(f"fengkong reset: {err.detail}", file=sys.stderr)
            return 1
        print(f"fengkong {args.action}: {err}", file=sys.stderr)
        return 1
    target = "the firm" if scope == "firm" else f"{scope} {key}"
    if args.action == "kill":
        print(f"killed {target}{' (close-only)' if args.close_only else ''}: "
              f"{result['cancels_sent']} cancels sent in {result['elapsed_us'] / 1000:.2f} ms"
              + (f"; {result['cancels_pending']} held until the exchange link is back (sent "
                 "first when it is)" if result.get("cancels_pending") else ""))
    else:
        print(f"reset {target}: trading allowed again")
    return 0


def _unlock(args: argparse.Namespace) -> int:
    try:
        result = admin_call(args.admin, args.token, "POST", f"/v1/users/{args.user}/unlock",
                            {"reason": args.reason})
    except AdminCallError as err:
        print(f"fengkong unlock: {err}", file=sys.stderr)
        return 1
    where = ", ".join(result["unlocked"]) or "no address (it was not locked out)"
    print(f"unlocked {args.user}: lockout lifted from {where}")
    return 0


def _fleet(args: argparse.Namespace, scope: str, key: str) -> int:
    import asyncio
    import uuid

    from gateway.kafka_bus import ControlCommand, publish_control

    if args.action == "kill" and args.close_only:
        print("fengkong kill: --close-only is not carried by fleet commands", file=sys.stderr)
        return 2
    cmd = ControlCommand(command_id=str(uuid.uuid4()), action=args.action, scope_kind=scope,
                         scope_value=key, operator=args.operator, reason=args.reason,
                         ts_ns=__import__("time").time_ns())
    try:
        asyncio.run(publish_control(args.fleet, args.control_topic, cmd))
    except Exception as err:  # noqa: BLE001 - any Kafka failure: say it, exit non-zero
        print(f"fengkong {args.action}: could not publish to {args.fleet}: {err}", file=sys.stderr)
        return 1
    print(f"{args.action} {scope} {key} published to {args.control_topic} as {cmd.command_id}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    path = f"/v1/accounts/{args.account}" if args.account else "/v1/status"
    try:
        data = admin_call(args.admin, args.token, "GET", path)
    except AdminCallError as err:
        print(f"fengkong status: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    # Piped or redirected there is no terminal width to fit: rich would assume 80 columns and
    # cut numbers short ("4,692,9…"). Give it room, and fold rather than cut in any case.
    console = Console() if sys.stdout.isatty() else Console(width=400, no_color=True)
    if args.account:
        try:  # the kills decide what the account may do now, whatever its own status says
            kills = admin_call(args.admin, args.token, "GET", "/v1/status")["kills"]
        except AdminCallError:
            kills = []
        fields = {k: v for k, v in data.items() if k not in ("positions", "orders", "limits")}
        fields["status"] = account_state(data, kills)
        console.print(_kv_table(f"account {args.account} (money in yuan)", fields))
        t = Table(title="positions")
        for col in ("symbol", "long td/yd", "short td/yd", "frozen L/S", "pending L/S", "cancels"):
            t.add_column(col, overflow="fold")
        for sym, p in data["positions"].items():
            t.add_row(sym, f"{p['long_td']}/{p['long_yd']}", f"{p['short_td']}/{p['short_yd']}",
                      f"{p['long_td_frozen'] + p['long_yd_frozen']}/{p['short_td_frozen'] + p['short_yd_frozen']}",
                      f"{p['long_pending']}/{p['short_pending']}", str(p["cancels"]))
        console.print(t)
        console.print(f"{len(data['orders'])} working order(s)")
        return 0
    console.print(f"gateway [bold]{data['gateway']}[/], exchange link [bold]{data['exchange_link']}[/], "
                  f"uptime {data['uptime_s']} s, {data['working_orders']} working orders",
                  highlight=False)
    if data.get("stats"):
        console.print("counters: " + ", ".join(f"{k} {v:,}" for k, v in data["stats"].items()),
                      highlight=False)
    t = Table(title="accounts (money in yuan)")
    for col in ("account", "status", "available", "used margin", "frozen", "P&L", "working", "msgs"):
        t.add_column(col, justify="right", overflow="fold")
    for a in data["accounts"]:
        t.add_row(a["account"], account_state(a, data["kills"]), f"{a['available']:,.2f}",
                  f"{a['used_margin']:,.2f}",
                  f"{a['frozen_margin'] + a['frozen_fee']:,.2f}",
                  f"{a['realised_pnl'] + a['unrealised_pnl'] - a['paid_fee']:,.2f}",
                  str(a["open_orders"]), str(a["messages_today"]))
    console.print(t)
    if data["kills"]:
        kt = Table(title="kill switch")
        for col in ("scope", "key", "mode"):
            kt.add_column(col, overflow="fold")
        for k in data["kills"]:
            kt.add_row(k["scope"], k["key"], k["mode"])
        console.print(kt)
    else:
        console.print("kill switch: nothing killed")
    st = Table(title="sessions")
    for col in ("session", "user", "accounts", "working"):
        st.add_column(col)
    for s in data["sessions"]:
        st.add_row(str(s["session"]), s["user"], ",".join(s["accounts"]), str(s["working_orders"]))
    console.print(st)
    for a in data["alerts"][-5:]:
        console.print(f"alert {a['code']} {a['scope']}: {a['text']}")
    return 0


def account_state(account: dict[str, Any], kills: list[dict[str, Any]]) -> str:
    """What an account may do now: a kill of the firm or of the account itself outranks the
    account's own status (a killed account is KILLED, not ACTIVE); close-only says so."""
    modes = {k["mode"] for k in kills
             if k["scope"] == "firm" or (k["scope"] == "account" and k["key"] == account["account"])}
    if "block" in modes:
        return "KILLED"
    if "close_only" in modes and account["status"] == "ACTIVE":
        return "CLOSE_ONLY"
    return account["status"]


def _kv_table(title: str, data: dict[str, Any]):  # noqa: ANN202
    from rich.table import Table

    t = Table(title=title, show_header=False)
    t.add_column("field")
    t.add_column("value", justify="right", overflow="fold")
    for k, v in data.items():
        t.add_row(k, f"{v:,.2f}" if isinstance(v, float) else str(v))
    return t


def _hash_secret(args: argparse.Namespace) -> int:
    from gateway.auth import hash_secret

    secret = args.secret or getpass.getpass("client secret: ")
    print(hash_secret(secret))
    return 0


def _hash_token(args: argparse.Namespace) -> int:
    from gateway.auth import hash_token, new_token

    token = args.token or new_token()
    print(f"token:      {token}\ntoken_hash: {hash_token(token)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
