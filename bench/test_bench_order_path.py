"""The gateway's own per-order work (router + engine + journal, no sockets), per router.

Run: ``.venv/bin/python -m pytest bench/test_bench_order_path.py --benchmark-only
--benchmark-columns=min,median,mean,ops,rounds``. One round is a read of 32 orders, a read of
their acks and one of their fills, each followed by the journal's write-ahead flush
(``bench.order_path``); divide by 32 for a figure per order. The compiled order path and the Python reference run in the same session, so
their ratio is the figure to quote.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.order_path import OrderPath

BATCH = 32


@pytest.mark.parametrize("journal", ["on", "off"])
@pytest.mark.parametrize("router", ["fast", "reference"])
def test_order_path(benchmark, tmp_path: Path, router: str, journal: str) -> None:
    benchmark.group = f"order + ack + fill, {BATCH} per round, journal {journal}"
    path = OrderPath(tmp_path / "journal" if journal == "on" else None, "cython", router)
    loop = asyncio.new_event_loop()  # the journal batches per loop turn, as in the gateway
    try:
        accepted = path.router.stats["accepted"]

        reads = iter([path.reads(BATCH) for _ in range(310)])
        ran = [0]

        def one_batch() -> None:
            path.run_batch(next(reads))
            ran[0] += 1

        loop.run_until_complete(_warm(path))
        benchmark.pedantic(lambda: loop.run_until_complete(_run(one_batch)), rounds=300,
                           warmup_rounds=10)
        # (every batch the benchmark ran: 310 when it measures, 1 under --benchmark-disable)
        assert path.router.stats["accepted"] - accepted == BATCH * ran[0] + BATCH * 20
    finally:
        path.close()
        loop.close()


async def _warm(path: OrderPath) -> None:
    for _ in range(20):
        path.run_batch(path.reads(BATCH))


async def _run(one_batch) -> None:  # noqa: ANN001
    one_batch()
