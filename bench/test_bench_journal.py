"""Journal append throughput per fsync policy, single appends and group commits; read throughput.

Run: ``.venv/bin/python -m pytest bench/test_bench_journal.py --benchmark-only
--benchmark-columns=min,median,mean,ops,rounds``. Figures go in ``bench/RESULTS-journal.md``.
The journal lives in pytest's tmp_path; say which filesystem that was when recording figures
(fsync on tmpfs is free and would flatter the ``record`` policy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.journal import Decision, FsyncPolicy, Inbound, Journal, JournalReader
from gateway.protocol import NewOrder

T0 = 1_748_914_200 * 10**9
ORDER = Inbound(T0, 7, NewOrder("c000123", "A10001", "rb2510", 1, 1, 1, 1, 1, 3512.0, 3))
DECISION = Decision(T0, 7, "c000123", "A10001", "rb2510", 0, "", 123)  # what an order costs: both
POLICIES = {
    "os": FsyncPolicy.never(),
    "interval-5ms": FsyncPolicy.every(5),
    "record": FsyncPolicy.every_record(),
}


@pytest.fixture(params=list(POLICIES))
def journal(request: pytest.FixtureRequest, tmp_path: Path):
    j = Journal.open(tmp_path / "j", fsync=POLICIES[request.param])
    yield j
    j.close()


def test_append_one(benchmark, journal: Journal) -> None:
    benchmark.group = "journal append (1 record per call)"
    benchmark(journal.append, ORDER)


def test_append_batch_64(benchmark, journal: Journal) -> None:
    """A socket read's worth of records in one write (and at most one fsync): group commit."""
    benchmark.group = "journal append_many (64 records per call)"
    batch = [ORDER, DECISION] * 32
    benchmark(journal.append_many, batch)


def test_read_10k(benchmark, tmp_path: Path) -> None:
    benchmark.group = "journal read (10,000 records per call)"
    with Journal.open(tmp_path / "j", fsync=FsyncPolicy.never()) as j:
        j.append_many([ORDER, DECISION] * 5000)

    def read_all() -> int:
        return sum(1 for _ in JournalReader(tmp_path / "j"))

    assert benchmark(read_all) == 10_000
