"""Risk-decision micro-benchmarks: the Cython engine against the Python reference, same session.

Run (from the repo root, after ``make build``)::

    .venv/bin/python -m pytest bench/test_bench_decide.py --benchmark-only \\
        --benchmark-columns=min,median,mean,rounds

Figures go in ``bench/RESULTS-decide.md``. docs/ARCHITECTURE.md §9's target: ``decide`` with every check on,
on a realistic book, ≤ 0.5 µs per order (median) and ≥ 10× faster than the reference measured
in the same run.

What is measured
----------------
- **decide** (group ``decide``): the realistic book of ``bench.book`` (1,200 accounts, 276
  instruments on six exchanges, yesterday's positions for 70 % of the accounts, every limit on)
  and a mixed flow — about 92 % accepted: opens, closes against yesterday's positions, a few
  market orders; the rest refused for the usual reasons (off tick, outside the band, too big,
  nothing to close, market order on SHFE, unknown contract, close-only account, product not
  permitted). One round is ``BATCH`` orders, one per account in turn, with time advancing
  ``STEP_NS`` per order so that every account sees a realistic rate (about 8 orders a second)
  and the rolling windows behave as in production.
- **order life** (group ``order-life``): new -> ack -> fill for round trips (buy-open, then
  sell-close of the same lots), ``decide`` + ``apply_ack`` + ``apply_fill`` per order, so
  positions, margin and funds move and come back.

Each round's orders are decoded from msgpack in the round's setup — fresh objects, as the
gateway hands them over — and the previous round's working orders are cancelled there too, so
accepted orders never exhaust a limit; neither happens inside the timed region. The timed
region is the engine calls under one ``map`` (C-level iteration, so the loop costs little).
pytest-benchmark's figures are per round; ``extra_info`` has them per order, and on the Cython
benchmark the median ratio to the reference of the same run (when both ran).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from bench.book import (
    AUTOMATED_SESSION,
    N_ACCOUNTS,
    STEP_NS,
    T_OPEN,
    decide_flow,
    life_flow,
    realistic_config,
)
from cext.engine import Engine as CythonEngine
from checks.engine import Engine as ReferenceEngine
from checks.enums import KillScope
from gateway.protocol import NewOrder

BATCH = N_ACCOUNTS  # orders per round: every account once
N_BATCHES = 4  # distinct batches, cycled: an account's consecutive orders always differ
ENGINES: dict[str, Callable[[Any], Any]] = {"reference": ReferenceEngine,
                                            "cython": CythonEngine}
ROUNDS = {"reference": 40, "cython": 600}
MEDIANS: dict[tuple[str, str], float] = {}  # (group, engine) -> median seconds per order
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[NewOrder])


@pytest.fixture(scope="module")
def cfg():
    return realistic_config()


class Rounds:
    """Feeds an engine round after round: fresh orders, advancing time, released book."""

    def __init__(self, engine: Any, orders: list[NewOrder], sessions: list[int],
                 extra: list[Any] | None = None) -> None:
        self.engine = engine
        engine.register_session(AUTOMATED_SESSION, True)
        self.batches = [_ENCODER.encode(orders[k * BATCH:(k + 1) * BATCH])
                        for k in range(len(orders) // BATCH)]
        self.sessions = [sessions[k * BATCH:(k + 1) * BATCH] for k in range(len(self.batches))]
        self.extra = ([extra[k * BATCH:(k + 1) * BATCH] for k in range(len(self.batches))]
                      if extra is not None else None)
        self.now = T_OPEN
        self.k = 0

    def setup(self) -> tuple[tuple, dict]:
        for ref in self.engine.open_orders(KillScope.FIRM):  # what the last round left working
            self.engine.apply_canceled(ref, self.now)
        b = self.k % len(self.batches)
        self.k += 1
        times = list(range(self.now + STEP_NS, self.now + STEP_NS * (BATCH + 1), STEP_NS))
        self.now = times[-1]
        args = (_DECODER.decode(self.batches[b]), times, self.sessions[b])
        if self.extra is not None:
            args += (self.extra[b],)
        return args, {}


def _accepted_share(engine_cls: Callable[[Any], Any], cfg: Any, orders: list[NewOrder],
                    sessions: list[int]) -> float:
    """What share of one pass of the flow a fresh engine accepts (for the record)."""
    engine = engine_cls(cfg)
    engine.register_session(AUTOMATED_SESSION, True)
    now = T_OPEN
    accepted = 0
    for order, session in zip(orders, sessions, strict=True):
        now += STEP_NS
        accepted += engine.decide(order, now, session).reason == 0
    return accepted / len(orders)


def _report(benchmark, group: str, name: str) -> None:
    stats = benchmark.stats.stats
    per_order = stats.median / BATCH
    MEDIANS[(group, name)] = per_order
    benchmark.extra_info["orders_per_round"] = BATCH
    benchmark.extra_info["median_ns_per_order"] = round(per_order * 1e9, 1)
    benchmark.extra_info["min_ns_per_order"] = round(stats.min / BATCH * 1e9, 1)
    reference = MEDIANS.get((group, "reference"))
    if name == "cython" and reference:
        benchmark.extra_info["speedup_vs_reference"] = round(reference / per_order, 1)


@pytest.mark.parametrize("name", list(ENGINES))
def test_decide(benchmark, cfg, name: str) -> None:
    flow = decide_flow(cfg, BATCH * N_BATCHES)
    rounds = Rounds(ENGINES[name](cfg), flow.orders, flow.sessions)
    decide = rounds.engine.decide

    def run(orders: list[NewOrder], times: list[int], sessions: list[int]) -> None:
        collections.deque(map(decide, orders, times, sessions), maxlen=0)

    benchmark.group = "decide"
    benchmark.extra_info["accepted_share"] = round(
        _accepted_share(ENGINES[name], cfg, flow.orders, flow.sessions), 3)
    benchmark.pedantic(run, setup=rounds.setup, rounds=ROUNDS[name], warmup_rounds=8)
    _report(benchmark, "decide", name)


@pytest.mark.parametrize("name", list(ENGINES))
def test_order_life(benchmark, cfg, name: str) -> None:
    flow, prices = life_flow(cfg, BATCH * N_BATCHES)
    rounds = Rounds(ENGINES[name](cfg), flow.orders, flow.sessions, prices)
    engine = rounds.engine
    decide, ack, fill = engine.decide, engine.apply_ack, engine.apply_fill

    def run(orders: list[NewOrder], times: list[int], sessions: list[int],
            fill_prices: list[float]) -> None:
        for order, now, session, px in zip(orders, times, sessions, fill_prices, strict=True):
            ref = decide(order, now, session).ref
            ack(ref, now)
            fill(ref, order.qty, px, now)

    benchmark.group = "order-life"
    benchmark.pedantic(run, setup=rounds.setup, rounds=ROUNDS[name] // 2, warmup_rounds=4)
    _report(benchmark, "order-life", name)
