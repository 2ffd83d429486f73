"""Restart time against journal age: one trading day of journal vs 250 (issue 9, item 3).

Run (from the repo root, after ``make build``)::

    .venv/bin/python -m pytest bench/test_bench_restart.py --benchmark-only \\
        --benchmark-columns=min,median,mean,rounds

Figures go in ``bench/RESULTS.md``. The target: restart after 250 trading days of journal takes
at most 1.5x the restart after one day, measured in the same run.

What is measured
----------------
A gateway start-up on an existing journal (``Gateway(cfg)``: open the journal, find the newest
trading-day checkpoint, restore it, replay the records after it with the Cython engine, write
the boot record). The journals are synthetic but shaped like production: each trading day
starts with a checkpoint in a new segment (as ``Gateway.checkpoint_now`` writes it), then a
logon and ``ORDERS_PER_DAY`` orders, each with its inbound message, decision, outbound order,
exchange ack and a fill with an execution id. The last day is "today": the one that is
replayed. Both journals end with the same day, so both replays do the same work; what differs
is the 249 days before it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import msgspec
import pytest

from checks.calendar import trading_day_bounds, trading_day_number
from checks.enums import ExecType, OrdStatus
from gateway import checkpoint
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.protocol import ExecReport, Logon, NewOrder
from gateway.server import Gateway

ROOT = Path(__file__).resolve().parents[1]
ORDERS_PER_DAY = 400
SYMBOL, PRICE = "m2605", 2900.0  # trades 00:00-24:00 in the bench config


def _cfg(journal_dir: Path):
    cfg = load_gateway_config(ROOT / "examples" / "bench-gateway.toml")
    return msgspec.structs.replace(cfg, journal=msgspec.structs.replace(
        cfg.journal, dir=str(journal_dir), fsync="os"))


def _day_starts(days: int, boundary_s: int) -> list[tuple[int, int]]:
    """(trading day, a time early in it) for the ``days`` trading days ending today: the
    restart happens now, so the last of them is the day it replays."""
    today = trading_day_number(time.time_ns(), boundary_s)
    out, day = [], today
    while len(out) < days:
        start = trading_day_bounds(day, boundary_s)[0]
        if trading_day_number(start, boundary_s) == day:  # a weekday (weekends roll forward)
            out.append((day, start + 10**9))
        day -= 1
    return out[::-1]


def _write_journal(directory: Path, days: int) -> None:
    cfg = _cfg(directory)
    template = Gateway(msgspec.structs.replace(cfg, journal=msgspec.structs.replace(
        cfg.journal, dir="")))
    prefix = "bench1.synthetic."
    with jr.Journal.open(directory, fsync=jr.FsyncPolicy.never()) as j:
        for d, (day, start) in enumerate(_day_starts(days, cfg.risk.day_boundary_s)):
            j.start_segment()  # as Gateway.checkpoint_now does
            records: list = [checkpoint.record(checkpoint.take(template, day, [], 1), start)]
            records.append(jr.State(start, "boot", prefix.encode()))
            records.append(jr.Inbound(start + 1, 1, Logon("bench", "***", ["B001"], 5.0, False)))
            t = start + 1_000_000
            for i in range(ORDERS_PER_DAY):
                side = 1 + i % 2  # buy, then sell what was bought: the book stays flat
                offset = 1 if side == 1 else 2
                clid = f"d{d}-{i}"
                exch = f"{prefix}{i + 1:x}"
                msg = NewOrder(clid, "B001", SYMBOL, side, offset, 1, 1, 1, PRICE, 1)
                records += [
                    jr.Inbound(t, 1, msg),
                    jr.Decision(t, 1, clid, "B001", SYMBOL, 0, "", i + 1),
                    jr.Outbound(t, jr.EXCHANGE_LINK, msgspec.structs.replace(msg, cl_ord_id=exch)),
                    jr.ExchangeEvent(t + 1000, ExecReport(exch, f"X{i}", "B001", SYMBOL,
                                                          OrdStatus.NEW, ExecType.NEW)),
                    jr.ExchangeEvent(t + 2000, ExecReport(exch, f"X{i}", "B001", SYMBOL,
                                                          OrdStatus.FILLED, ExecType.TRADE,
                                                          last_qty=1, last_px=PRICE,
                                                          cum_qty=1, exec_id=f"E{d}-{i}")),
                ]
                t += 5_000_000
            j.append_many(records)


@pytest.fixture(scope="module")
def journals(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    out = {}
    for days in (1, 250):
        d = tmp_path_factory.mktemp(f"journal-{days}d")
        _write_journal(d, days)
        out[days] = d
    return out


_results: dict[int, float] = {}


@pytest.mark.parametrize("days", [1, 250])
def test_restart(benchmark, journals: dict[int, Path], tmp_path: Path, days: int) -> None:
    src = journals[days]
    size = sum(p.stat().st_size for p in src.iterdir())
    copies = iter(range(1_000_000))

    def setup():
        # A fresh copy each round: a start-up appends its boot record to the journal.
        dst = tmp_path / f"run{next(copies)}"
        shutil.copytree(src, dst)
        return (dst,), {}

    def restart(dst: Path) -> Gateway:
        gw = Gateway(_cfg(dst))
        gw.journal.close()  # type: ignore[union-attr]
        return gw

    gw = benchmark.pedantic(restart, setup=setup, rounds=5, iterations=1)
    assert gw.recovery is not None and gw.recovery.disagreements == []
    assert gw.recovery.orders == ORDERS_PER_DAY  # only today was replayed
    benchmark.extra_info.update(days=days, journal_bytes=size,
                                replayed_records=gw.recovery.records)
    _results[days] = benchmark.stats.stats.median
    if len(_results) == 2:
        benchmark.extra_info["ratio_250_to_1"] = round(_results[250] / _results[1], 3)
