"""Crash soak: the crash-recovery property over many crash points, with restart timings.

The same harness as ``tests/gateway/test_crash_property.py`` (``tests/gateway/crash_harness.py``):
one simulated exchange, a link proxy that cuts, holds and freezes the gateway's exchange link,
and one gateway process killed with SIGKILL at every crash point and restarted on its journal;
after every restart its book is compared with the exchange's (positions, frozen funds, working
orders, every execution once) and with a reference-engine replay of its journal.

    .venv/bin/python bench/crash_soak.py --points 300 --seed 7
    .venv/bin/python bench/crash_soak.py --points 100 --seeds 1,2,3 --engine reference

It stops at the first crash point whose restart does not match, prints why (seed, crash point
and what differs) and exits 1; otherwise it prints, per crash-point kind, how many ran, and
how restart time grew with the journal: records replayed, replay seconds and the time from
process start to "exchange link up" (replay, reconciliation) — first, median and last.
Gateway logs and journals stay in ``--workdir`` (a fresh temporary directory by default).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import structlog  # noqa: E402

from tests.gateway.crash_harness import CrashRun, DayChanged, PointResult  # noqa: E402


def _summary(results: list[PointResult], seconds: float) -> str:
    kinds = Counter(r.kind for r in results)
    lines = [f"{len(results)} crash points in {seconds:.1f} s ({seconds / max(1, len(results)):.2f} s each): "
             + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))]
    if results:
        def row(name: str, values: list[float], fmt: str) -> str:
            return (f"  {name:<28} first {fmt.format(values[0])}, median "
                    f"{fmt.format(statistics.median(values))}, max {fmt.format(max(values))}, "
                    f"last {fmt.format(values[-1])}")
        lines.append(row("journal records replayed", [float(r.replayed_records) for r in results],
                         "{:.0f}"))
        lines.append(row("replay seconds", [r.replay_s for r in results], "{:.3f}"))
        lines.append(row("start to link up, seconds", [r.link_up_s for r in results], "{:.2f}"))
        lines.append(f"  executions at the exchange at the end: {results[-1].executions}, "
                     f"working orders: {results[-1].working}")
    return "\n".join(lines)


async def _soak(args: argparse.Namespace, workdir: Path) -> int:
    failed = 0
    for seed in args.seeds:
        d = workdir / f"seed-{seed}"
        d.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        log = print if args.verbose else (lambda s: None)
        run = CrashRun(d, seed, args.points, log=log)
        run.reproduce = (f"\n  reproduce: .venv/bin/python bench/crash_soak.py --seeds {seed} "
                         f"--points {args.points}")
        results: list[PointResult] = []
        try:
            async with run:
                for i in range(1, args.points + 1):
                    await run.cycle(i)
                    if not args.verbose and i % 10 == 0:
                        print(f"seed {seed}: {i}/{args.points} crash points ok", flush=True)
                results = run.results
        except AssertionError as err:
            print(f"FAILED: {err}", flush=True)
            failed += 1
            results = run.results
        except DayChanged as err:
            print(f"stopped: {err}", flush=True)
            results = run.results
        print(f"seed {seed}: " + _summary(results, time.perf_counter() - started), flush=True)
    print(f"logs and journals: {workdir}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="crash_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=200, help="crash points per seed")
    p.add_argument("--seeds", default="1", help="comma-separated seeds (one run each)")
    p.add_argument("--seed", type=int, help="one seed (overrides --seeds)")
    p.add_argument("--engine", choices=("cython", "reference"), default="cython",
                   help="the gateway's risk engine")
    p.add_argument("--workdir", type=Path, help="where journals and logs go (default: a new "
                                                "temporary directory)")
    p.add_argument("-v", "--verbose", action="store_true", help="one line per crash point")
    args = p.parse_args(argv)
    args.seeds = [args.seed] if args.seed is not None else \
        [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.points < 1:
        p.error("--points must be at least 1")
    os.environ["FENGKONG_TEST_ENGINE"] = args.engine
    # SIGTERM (timeout, CI) stops it like Ctrl-C: the run's clean-up kills its gateways.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # The offline reference replays log through structlog: keep only warnings and errors.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crash-soak-"))
    try:
        return asyncio.run(_soak(args, workdir))
    except KeyboardInterrupt:
        print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
