"""``fengkong sim ...``: argparse wiring for the simulator's commands.

``gateway.cli`` calls ``add_sim_commands(subparsers)`` to register ``sim exchange``,
``sim replay`` and ``sim scenario`` under its ``fengkong`` console script; each registered
parser sets ``func``, so the caller dispatches with ``return args.func(args)``.
``python -m simulator ...`` uses the same wiring on its own parser (``main``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simulator import exchange_cli, replay, scenarios


def add_sim_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``sim {exchange,replay,scenario}``; returns the ``sim`` parser."""
    sim = subparsers.add_parser("sim", help="exchange simulator, order-flow replay, scenarios",
                                description="Exchange simulator, order-flow replay and scenarios.")
    add_commands(sim.add_subparsers(dest="sim_command", required=True, metavar="COMMAND"))
    return sim


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("exchange", help="run the simulated exchange",
                       description="Run the simulated exchange (matching engine on TCP).")
    exchange_cli.build_parser(p).set_defaults(func=exchange_cli.run)
    p = sub.add_parser("replay", help="replay recorded order flow",
                       description="Replay recorded order flow (CSV / JSON lines / msgpack).")
    replay.build_parser(p).set_defaults(func=replay.run)
    p = sub.add_parser("scenario", help="run a named scenario and check its expectations",
                       description="Run a named, seeded scenario against the exchange or the gateway.")
    scenarios.build_parser(p).set_defaults(func=scenarios.run)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description="fengkong exchange simulator tools.")
    add_commands(parser.add_subparsers(dest="sim_command", required=True, metavar="COMMAND"))
    args = parser.parse_args(None if argv is None else list(argv))
    return args.func(args)
