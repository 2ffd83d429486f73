"""``fengkong sim exchange``: command-line flags over the ``[sim]`` table, then serve until signalled.

Prints one line ``fengkong sim exchange listening on HOST:PORT (...)`` once it listens (with
``--port 0`` that is how a parent process learns the port), and a summary line when SIGINT or
SIGTERM stops it. A config mistake exits with status 2 and names the file and the field.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import msgspec
import uvloop

from checks.config import ConfigError
from simulator.config import SimConfig, check_sim_config, load_sim_config, tls_context
from simulator.exchange import serve_exchange


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="fengkong sim exchange",
                                          description="Run the simulated exchange.")
    p.add_argument("--config", default="examples/risk.toml",
                   help="TOML file with instruments (and an optional [sim] table)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7001, help="0 picks a free port (printed on start)")
    p.add_argument("--ack-only", action="store_true", help="acknowledge every order without a book")
    p.add_argument("--fill", action="store_true", help="with --ack-only: fill every order at once")
    p.add_argument("--reject-fraction", type=float, help="reject this fraction of orders (seeded)")
    p.add_argument("--seed", type=int, help="seed of the reject fraction")
    p.add_argument("--latency-ms", type=float, help="delay of every report leg (ack, fill, cancel)")
    p.add_argument("--entry-ms", type=float, help="delay before an order reaches the engine")
    p.add_argument("--drop-after", type=int, help="drop each connection after N messages")
    p.add_argument("--silent", action="store_true", help="stop acknowledging orders and cancels")
    p.add_argument("--md-interval", type=float, help="seconds between market data snapshots (0 = off)")
    p.add_argument("--tls-cert", help="TLS on the member port: PEM certificate (over [sim.tls])")
    p.add_argument("--tls-key", help="... and its PEM private key")
    p.add_argument("--tls-client-ca", help="... and require member certificates signed by this CA")
    return p


def sim_config_from_args(args: argparse.Namespace, sim: SimConfig) -> SimConfig:
    """Apply the command-line flags on top of the file's ``[sim]`` table."""
    lat = msgspec.structs.replace(sim.latency)
    if args.latency_ms is not None:
        lat = msgspec.structs.replace(lat, ack_ms=args.latency_ms, fill_ms=args.latency_ms,
                                      cancel_ms=args.latency_ms)
    if args.entry_ms is not None:
        lat = msgspec.structs.replace(lat, entry_ms=args.entry_ms)
    faults = sim.faults
    changes: dict[str, Any] = {}
    if args.reject_fraction is not None:
        changes["reject_fraction"] = args.reject_fraction
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.drop_after is not None:
        changes["drop_after"] = args.drop_after
    if args.silent:
        changes["silent"] = True
    faults = msgspec.structs.replace(faults, **changes)
    sim = msgspec.structs.replace(sim, latency=lat, faults=faults,
                                  ack_only=sim.ack_only or args.ack_only,
                                  fill_on_ack=sim.fill_on_ack or args.fill)
    if args.md_interval is not None:
        sim = msgspec.structs.replace(sim, md_interval_s=args.md_interval)
    tls = {f: getattr(args, f"tls_{f}") for f in ("cert", "key", "client_ca")
           if getattr(args, f"tls_{f}", None)}
    if tls:
        sim = msgspec.structs.replace(sim, tls=msgspec.structs.replace(sim.tls, **tls))
        tls_context(sim.tls, "command line")
    return check_sim_config(sim, "command line")


async def _serve_until_signalled(args: argparse.Namespace) -> None:
    risk, sim = load_sim_config(args.config)
    sim = sim_config_from_args(args, sim)
    server = await serve_exchange(risk, args.host, args.port, sim=sim)

    def terminal_info(seat: str, info: Any) -> None:  # the simulator's own log of 穿透式 data
        print("fengkong sim exchange terminal-info " + msgspec.json.encode(
            {"seat": seat, **_named(info)}).decode(), flush=True)

    server.on_terminal_info = terminal_info
    mode = ("ack-only" if sim.ack_only else "matching") + (", TLS" if sim.tls.cert else "")
    print(f"fengkong sim exchange listening on {args.host}:{server.port} "
          f"({len(risk.instruments)} instruments, {mode})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        s = server.stats
        print(f"fengkong sim exchange stopped: {s.logons} logons, {s.orders} orders, "
              f"{s.cancels} cancels, {s.protocol_errors} protocol errors", flush=True)


def _named(s: msgspec.Struct) -> dict[str, Any]:
    """A struct (wire structs are encoded as arrays) as a dict of its named fields."""
    return {f: _named(v) if isinstance(v, msgspec.Struct) else v
            for f in s.__struct_fields__ for v in (getattr(s, f),)}


def run(args: argparse.Namespace) -> int:
    try:
        uvloop.run(_serve_until_signalled(args))
    except ConfigError as err:
        print(f"error: {err}", flush=True)
        return 2
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}", flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
