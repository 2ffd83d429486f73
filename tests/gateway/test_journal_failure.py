"""The journal cannot be written (disk full, I/O error): nothing is lost, the gateway fails
closed — new orders refused with JOURNAL_UNAVAILABLE (1208), cancels still go, a CRITICAL
alert — and it recovers by itself when the disk does, with gap-free sequence numbers and no
record written twice.

The disk is made to fail by replacing ``os.write`` (or ``os.fdatasync``, ``os.open``,
``os.ftruncate``) with a wrapper that raises for journal segment files only; every other file
descriptor in the process writes as usual.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from checks.enums import AlertLevel, OrdStatus, Side
from checks.reasons import Reason
from gateway import journal as jmod
from gateway.audit import AuditLog
from gateway.config import load_gateway_config
from gateway.journal import (
    EXCHANGE_LINK,
    Decision,
    FsyncPolicy,
    Inbound,
    Journal,
    JournalIOError,
    JournalReader,
    Outbound,
    State,
    list_segments,
)
from gateway.protocol import Alert, CancelOrder, ExecReport, NewOrder
from simulator.client import Client
from tests.conftest import EXAMPLES, start_exchange

T = 15.0  # generous timeouts for a loaded CI machine (waited on, never asserted)
T0 = 1_748_914_200 * 10**9


def is_segment(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(jmod.SUFFIX)
    except OSError:
        return False


class Disk:
    """Journal segment writes fail with ``err`` while ``failing``; ``partial`` writes that many
    bytes of the next failing write first (a short write, then the error)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC) -> None:
        self.failing = False
        self.err = err
        self.partial = 0
        self.failed_writes = 0
        real = os.write

        def write(fd: int, data) -> int:  # noqa: ANN001
            if self.failing and is_segment(fd):
                if self.partial:
                    n, self.partial = self.partial, 0
                    return real(fd, bytes(data[:n]))
                self.failed_writes += 1
                raise OSError(self.err, os.strerror(self.err))
            return real(fd, data)

        monkeypatch.setattr(jmod.os, "write", write)


def order(i: int) -> Inbound:
    return Inbound(T0 + i, 7, NewOrder(f"c{i}", "A1", "rb2510", 1, 1, 1, 1, 1, 3500.0, 1))


def read_all(d: Path) -> list:
    reader = JournalReader(d)
    got = list(reader)
    assert reader.damage is None
    return got


# --- the journal itself ---------------------------------------------------------------------


def test_a_short_write_then_enospc_is_cut_back_and_numbering_goes_on(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch)
    with Journal.open(tmp_path, fsync=FsyncPolicy.never()) as j:
        j.append_many([order(0), order(1)])
        size = j.segment.stat().st_size
        disk.failing, disk.partial = True, 30
        with pytest.raises(JournalIOError) as err:
            j.append_many([order(2), order(3)])
        assert err.value.op == "write" and err.value.seq == 3 and "No space left" in str(err.value)
        assert j.segment.stat().st_size == size and j.next_seq == 3  # no partial record left
        disk.failing = False
        assert j.append_many([order(2), order(3)]) == 4
    assert [s for s, _ in read_all(tmp_path)] == [1, 2, 3, 4]


def test_a_cut_that_fails_is_done_before_the_next_write(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch, errno.EIO)
    real_ftruncate = os.ftruncate
    truncating = {"fail": True}

    def ftruncate(fd: int, length: int) -> None:
        if truncating["fail"] and is_segment(fd):
            raise OSError(errno.EIO, "Input/output error")
        real_ftruncate(fd, length)

    monkeypatch.setattr(jmod.os, "ftruncate", ftruncate)
    with Journal.open(tmp_path, fsync=FsyncPolicy.never()) as j:
        j.append(order(0))
        disk.failing, disk.partial = True, 25
        with pytest.raises(JournalIOError):
            j.append(order(1))  # 25 bytes landed and could not be cut
        disk.failing = False
        with pytest.raises(JournalIOError) as err:
            j.append(order(1))  # the cut still fails: nothing is written after the partial bytes
        assert err.value.op == "cut"
        truncating["fail"] = False
        assert j.append(order(1)) == 2
    assert [r for _, r in read_all(tmp_path)] == [order(0), order(1)]


# --- the audit log: hold, fail closed, retry --------------------------------------------------


class Health:
    def __init__(self) -> None:
        self.failures: list[tuple[JournalIOError, list[str]]] = []
        self.recoveries: list[str] = []
        self.recovered = asyncio.Event()

    def failed(self, err: JournalIOError, unjournaled: list[tuple[int, str]]) -> None:
        self.failures.append((err, unjournaled))

    def back(self, text: str) -> None:
        self.recoveries.append(text)
        self.recovered.set()


async def test_records_are_held_while_writes_fail_and_written_once_when_they_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = Disk(monkeypatch)
    health = Health()
    audit = AuditLog(Journal.open(tmp_path, fsync=FsyncPolicy.every_record()), health.failed, health.back)
    audit.append(order(0))
    audit.flush()
    disk.failing = True
    refused = Decision(T0, 7, "c1", "A1", "rb2510", 1208, "", 0)
    audit.append(order(1))
    audit.append(refused)
    audit.flush()  # fails: must not raise into the socket layer
    assert len(health.failures) == 1 and audit.pending == 2
    err, unjournaled = health.failures[0]
    # The orders in the failed write, as (session, cl_ord_id): the gateway cancels those it
    # accepted.
    assert err.op == "write" and err.seq == 2 and unjournaled == [(7, "c1")]
    for i in range(2, 6):  # records keep coming while the disk is failing, and are kept
        audit.append(order(i))
        audit.flush()
    assert len(health.failures) == 1 and audit.pending == 6
    assert disk.failed_writes >= 1
    disk.failing = False
    await asyncio.wait_for(health.recovered.wait(), T)
    assert audit.pending == 0 and "6 held record(s) written as 2..7" in health.recoveries[0]
    audit.append(order(6))
    audit.close()
    got = read_all(tmp_path)
    assert [s for s, _ in got] == list(range(1, 9))  # gap-free, nothing twice
    assert [r for _, r in got] == [order(0), order(1), refused,
                                   *(order(i) for i in range(2, 7))]


async def test_records_appended_already_encoded_are_held_and_named_like_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled order path appends its records encoded (``AuditLog.records``, then one
    ``appended``): a failed write names the orders in them as well, and they are written in
    their place once the disk works."""
    disk = Disk(monkeypatch)
    health = Health()
    audit = AuditLog(Journal.open(tmp_path, fsync=FsyncPolicy.every_record()), health.failed, health.back)
    disk.failing = True
    audit.records.append(msgspec.msgpack.encode(order(1)))
    audit.append(order(2))
    audit.records.append(msgspec.msgpack.encode(order(3)))
    audit.appended()
    audit.flush()
    [(err, unjournaled)] = health.failures
    assert err.op == "write" and unjournaled == [(7, "c1"), (7, "c2"), (7, "c3")]
    disk.failing = False
    await asyncio.wait_for(health.recovered.wait(), T)
    audit.close()
    assert [r for _, r in read_all(tmp_path)] == [order(1), order(2), order(3)]


def test_records_appended_after_close_are_dropped(tmp_path: Path) -> None:
    audit = AuditLog(Journal.open(tmp_path, fsync=FsyncPolicy.every_record()))
    audit.append(order(0))
    audit.close()
    audit.records.append(msgspec.msgpack.encode(order(1)))
    audit.appended()  # (logged as not journaled)
    assert audit.pending == 0
    assert [r for _, r in read_all(tmp_path)] == [order(0)]


async def test_a_batch_split_by_a_failed_rotation_is_written_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open
    refuse = {"on": False}

    def open_(path, flags, mode=0o777, **kw):  # noqa: ANN001
        if refuse["on"] and str(path).endswith(jmod.SUFFIX) and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(jmod.os, "open", open_)
    health = Health()
    audit = AuditLog(Journal.open(tmp_path, fsync=FsyncPolicy.never(), segment_bytes=400),
                     health.failed, health.back)
    audit.append(order(0))
    audit.flush()
    refuse["on"] = True
    for i in range(1, 8):  # ~100 bytes each: the batch fills the segment and needs another
        audit.append(order(i))
    audit.flush()
    [(err, _)] = health.failures
    assert err.op == "rotate" and 0 < audit.pending < 7  # a prefix went into the first segment
    written = 8 - audit.pending
    assert [s for s, _ in read_all(tmp_path)] == list(range(1, written + 1))
    refuse["on"] = False
    await asyncio.wait_for(health.recovered.wait(), T)
    audit.close()
    assert [r for _, r in read_all(tmp_path)] == [order(i) for i in range(8)]
    assert len(list_segments(tmp_path)) > 1


async def test_a_failed_fsync_holds_new_records_and_is_retried(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdatasync
    broken = {"on": True}

    def fdatasync(fd: int) -> None:
        if broken["on"] and is_segment(fd):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(jmod.os, "fdatasync", fdatasync)
    health = Health()
    audit = AuditLog(Journal.open(tmp_path, fsync=FsyncPolicy.every_record()), health.failed, health.back)
    audit.append(order(0))
    audit.flush()  # written, then the fsync fails: not written again later
    [(err, _)] = health.failures
    assert err.op == "fsync" and audit.pending == 0
    audit.append(order(1))
    audit.flush()
    assert audit.pending == 1  # held until the disk is known to work
    broken["on"] = False
    await asyncio.wait_for(health.recovered.wait(), T)
    assert "fsync failed" in health.recoveries[0] and "records up to 1" in health.recoveries[0]
    audit.close()
    assert [r for _, r in read_all(tmp_path)] == [order(0), order(1)]


async def test_the_background_flusher_reports_a_failed_fsync(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdatasync
    broken = {"on": False}

    def fdatasync(fd: int) -> None:
        if broken["on"] and is_segment(fd):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(jmod.os, "fdatasync", fdatasync)
    health = Health()
    failed = asyncio.Event()
    journal = Journal.open(tmp_path, fsync=FsyncPolicy.every(1))
    audit = AuditLog(journal, lambda e, u: (health.failed(e, u), failed.set()), health.back)
    flusher = asyncio.create_task(journal.run_flusher())
    try:
        audit.append(order(0))
        audit.flush()
        broken["on"] = True
        audit.append(order(1))
        audit.flush()
        await asyncio.wait_for(failed.wait(), T)
        assert health.failures[0][0].op == "fsync"
        broken["on"] = False
        await asyncio.wait_for(health.recovered.wait(), T)
    finally:
        flusher.cancel()
        await asyncio.gather(flusher, return_exceptions=True)
        audit.close()
    assert [s for s, _ in read_all(tmp_path)] == [1, 2]


# --- the gateway with a disk that fills up ----------------------------------------------------


@pytest.fixture
def exchange_port():
    ex = start_exchange()
    yield int(ex.match.group(1))
    ex.stop()


async def next_alert(client: Client, level: int, code: int) -> Alert:
    while True:
        a = await client.next_alert(timeout=T)
        if a.level == level and a.code == code:
            return a


async def next_report(client: Client, cl_ord_id: str) -> ExecReport:
    while True:
        rep = await client.next_report(timeout=T)
        if rep.cl_ord_id == cl_ord_id:
            return rep


async def test_disk_full_refuses_new_orders_still_cancels_and_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange_port: int) -> None:
    from gateway.server import Gateway

    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    r = msgspec.structs.replace
    cfg = r(cfg, gateway=r(cfg.gateway, port=0), admin=r(cfg.admin, port=0),
            exchange=r(cfg.exchange, port=exchange_port),
            journal=r(cfg.journal, dir=str(tmp_path / "journal")))
    disk = Disk(monkeypatch)
    gw = Gateway(cfg)
    await gw.start(wait_link=T)
    client = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret")
    try:
        resting = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                          price=3190.0, qty=1)
        await resting.acked(timeout=T)

        disk.failing = True
        # The order whose records the failing write carried: it is on its way out as the
        # failure is found, and gets a cancel right behind it.
        first = await client.send_order(account="A004", symbol="rb2605", side=Side.BUY,
                                        price=3191.0, qty=1)
        alert = await next_alert(client, AlertLevel.CRITICAL, Reason.JOURNAL_FAILURE)
        assert "1208" in alert.text and "No space" not in alert.text  # what, not where
        assert any("No space left on device" in a.text for a in gw.router.alerts)  # the desk's
        assert (await first.wait_done(timeout=T)).status == OrdStatus.CANCELED
        # From then on new orders are refused, saying why...
        refused = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                          price=3192.0, qty=1)
        rep = await refused.wait_done(timeout=T)
        assert rep.status == OrdStatus.REJECTED and rep.reason == Reason.JOURNAL_UNAVAILABLE
        assert "journal write failed" in rep.text and "No space left" in rep.text
        # ...and cancels still go to the exchange.
        await client.cancel(resting.cl_ord_id)
        assert (await resting.wait_done(timeout=T)).status == OrdStatus.CANCELED
        status = gw.status()
        assert status["halted"]["code"] == Reason.JOURNAL_UNAVAILABLE
        assert status["journal"]["writable"] is False and status["journal"]["held_records"] > 0
        # Operations see it too: /readyz names the journal, /metrics counts the failure.
        assert [r["check"] for r in gw.metrics.not_ready()] == ["journal"]
        assert _metric(gw, "fengkong_journal_writable") == 0
        assert _metric(gw, "fengkong_journal_write_failures_total") >= 1

        disk.failing = False  # space freed: the gateway notices by itself
        back = await next_alert(client, AlertLevel.WARNING, Reason.JOURNAL_FAILURE)
        assert "writable again" in back.text and "accepted again" in back.text
        assert gw.router.halted is None and gw.status()["journal"]["held_records"] == 0
        assert gw.metrics.not_ready() == [] and _metric(gw, "fengkong_journal_writable") == 1
        after = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                        price=3193.0, qty=1)
        assert (await after.acked(timeout=T)).status == OrdStatus.NEW
        await client.cancel(after.cl_ord_id)
        await after.wait_done(timeout=T)
    finally:
        await client.close()
        await gw.stop()

    got = read_all(tmp_path / "journal")
    assert [s for s, _ in got] == list(range(1, len(got) + 1))  # gap-free
    recs = [rec for _, rec in got]
    # Everything made while the disk was full is there, once.
    inbound = Counter(rec.msg.cl_ord_id for rec in recs
                      if type(rec) is Inbound and type(rec.msg) is NewOrder)
    for h in (resting, first, refused, after):
        assert inbound[h.cl_ord_id] == 1
    refusals = [rec for rec in recs if type(rec) is Decision
                and rec.cl_ord_id == refused.cl_ord_id]
    assert [d.reason for d in refusals] == [Reason.JOURNAL_UNAVAILABLE]
    cancels = Counter(rec.msg.orig_cl_ord_id for rec in recs if type(rec) is Outbound
                      and rec.session == EXCHANGE_LINK and type(rec.msg) is CancelOrder)
    assert sorted(cancels.values()) == [1, 1, 1]  # first (automatic), resting, after
    alerts = [rec.msg for rec in recs if type(rec) is Outbound and type(rec.msg) is Alert
              and rec.msg.code == Reason.JOURNAL_FAILURE and rec.session == jmod.NO_SESSION]
    assert [a.level for a in alerts] == [AlertLevel.CRITICAL, AlertLevel.WARNING]
    assert any(type(rec) is State and rec.kind == "boot" for rec in recs)


def _metric(gw, name: str) -> float:
    """One unlabelled sample of the gateway's /metrics, read in-process."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(gw.metrics.registry).decode()
    return next(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == name)
