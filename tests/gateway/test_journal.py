"""The audit journal: round trips, damage detection and recovery, fsync policies, retention, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import journal as jmod
from gateway.journal import (
    AdminAction,
    Decision,
    ExchangeEvent,
    FsyncPolicy,
    Inbound,
    Journal,
    JournalError,
    JournalReader,
    Outbound,
    State,
    list_segments,
    prune,
)
from gateway.journal_tools import main, repair, verify
from gateway.protocol import Alert, CancelOrder, ExecReport, Heartbeat, NewOrder

T0 = 1_748_914_200 * 10**9  # 2025-06-03 09:30:00 +08:00
DAY = 86_400 * 10**9

# --- strategies ------------------------------------------------------------------------------

text = st.text(max_size=12)
i64 = st.integers(-(2**63), 2**63 - 1)
ts = st.integers(0, 2**63 - 1)
px = st.floats(allow_nan=False, allow_infinity=False, width=64)
new_orders = st.builds(NewOrder, text, text, text, st.integers(0, 9), st.integers(0, 9),
                       st.integers(0, 9), st.integers(0, 9), st.integers(0, 9), px,
                       st.integers(0, 10**6) | px)
reports = st.builds(ExecReport, text, text, text, text, st.integers(0, 9), st.integers(0, 9),
                    st.integers(0, 2000), text, st.integers(0, 10**6), px)
messages = st.one_of(new_orders, reports, st.builds(CancelOrder, text, text, text),
                     st.builds(Alert, st.integers(1, 3), st.integers(0, 2000), text, text),
                     st.builds(Heartbeat, ts))
records = st.one_of(
    st.builds(Inbound, ts, i64, st.none() | messages, st.binary(max_size=40)),
    st.builds(Decision, ts, i64, text, text, text, st.integers(0, 2000), text, i64),
    st.builds(Outbound, ts, i64, messages),
    st.builds(ExchangeEvent, ts, reports, text),
    st.builds(AdminAction, ts, text, text, text, text,
              st.dictionaries(text, i64 | text | st.booleans(), max_size=3),
              text, st.booleans(), text),
    st.builds(State, ts, text, st.binary(max_size=200)),
)
record_lists = st.lists(records, min_size=1, max_size=30)
PROP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def order(i: int, account: str = "A1", ts_ns: int = T0) -> Inbound:
    return Inbound(ts_ns + i, 7, NewOrder(f"c{i}", account, "rb2510", 1, 1, 1, 1, 1, 3500.0, 1))


def write(d: Path, recs: list, segment_bytes: int = 1 << 20) -> list[int]:
    """Write ``recs`` and return the end offset of each record (single segment)."""
    ends = []
    with Journal.open(d, fsync=FsyncPolicy.never(), segment_bytes=segment_bytes) as j:
        for r in recs:
            j.append(r)
            ends.append(j._size)
    return ends


def read_all(d: Path, from_seq: int = 0) -> tuple[list, jmod.JournalDamage | None]:
    reader = JournalReader(d, from_seq)
    return list(reader), reader.damage


# --- round trips --------------------------------------------------------------------------


@PROP
@given(recs=record_lists, segment_bytes=st.integers(1, 1500), batch=st.integers(1, 7))
def test_round_trip_across_rotations(recs: list, segment_bytes: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        with Journal.open(d, fsync=FsyncPolicy.never(), segment_bytes=segment_bytes) as j:
            half = len(recs) // 2
            seqs = [j.append(r) for r in recs[:half]]
            for i in range(half, len(recs), batch):
                last = j.append_many(recs[i : i + batch])
                seqs.extend(range(seqs[-1] + 1 if seqs else 1, last + 1))
        assert seqs == list(range(1, len(recs) + 1))
        got, damage = read_all(d)
        assert damage is None
        assert got == list(enumerate(recs, start=1))
        for first, _ in list_segments(d):  # every segment is named for its first record
            assert next(iter(JournalReader(d, first)))[0] == first
        got_tail, _ = read_all(d, from_seq=len(recs) // 2 + 1)
        assert got_tail == list(enumerate(recs, start=1))[len(recs) // 2 :]
        with Journal.open(d, segment_bytes=segment_bytes) as j:
            assert j.recovered is None
            assert j.append(recs[0]) == len(recs) + 1


@PROP
@given(recs=record_lists, data=st.data())
def test_any_truncation_is_detected_and_recovered(recs: list, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ends = write(d, recs)
        [(_, path)] = list_segments(d)
        cut = data.draw(st.integers(0, ends[-1] - 1), label="cut")
        os.truncate(path, cut)
        whole = sum(1 for e in ends if e <= cut)
        got, damage = read_all(d)
        assert got == list(enumerate(recs[:whole], start=1))
        at_boundary = cut == (ends[whole - 1] if whole else 0)
        assert (damage is None) == at_boundary  # a cut between records is just a shorter journal
        if damage is not None:
            assert (damage.kind, damage.seq, damage.offset) == ("torn", whole + 1, ends[whole - 1] if whole else 0)
        with Journal.open(d) as j:
            assert (j.recovered is None) == at_boundary
            assert j.append(State(T0, "after")) == whole + 1
        got, damage = read_all(d)
        assert damage is None
        assert got == [*enumerate(recs[:whole], start=1), (whole + 1, State(T0, "after"))]


@PROP
@given(recs=record_lists, data=st.data())
def test_any_flipped_bit_is_found_and_no_intact_record_is_cut(recs: list, data: st.DataObject) -> None:
    """A flipped bit is never a torn tail unless it is in the last record: the segment is left
    byte for byte, appends go on in a fresh segment after the last intact record, and a repair
    makes the journal read through gap-free with one placeholder for the damaged record."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ends = write(d, recs)
        [(_, path)] = list_segments(d)
        pos = data.draw(st.integers(0, ends[-1] - 1), label="byte")
        bit = data.draw(st.integers(0, 7), label="bit")
        raw = bytearray(path.read_bytes())
        raw[pos] ^= 1 << bit
        path.write_bytes(raw)
        hit = next(i for i, e in enumerate(ends) if pos < e)  # index of the damaged record
        last = hit == len(recs) - 1
        got, damage = read_all(d)
        assert got == list(enumerate(recs[:hit], start=1))
        assert damage is not None and damage.seq == hit + 1
        assert damage.offset == (ends[hit - 1] if hit else 0)
        with Journal.open(d) as j:
            if j.recovered is not None:  # a torn tail: only ever the last record
                assert last and j.corruption == [] and j.recovered == damage
                assert j.quarantined is not None and j.quarantined.read_bytes() == bytes(raw[damage.offset :])
                assert j.append(State(T0, "after")) == hit + 1
                return
            [c] = j.corruption
            assert c.damage.seq == damage.seq and c.damage.offset == damage.offset
            assert c.intact_after == ([] if last else [(hit + 2, len(recs))])
            assert c.resumed_at == (hit + 1 if last else len(recs) + 1)
            assert j.append(State(T0, "after")) == c.resumed_at
        moved = path.with_name(path.name + ".0.damaged")  # when not one record in it was intact
        kept = moved if moved.exists() else path
        assert kept.read_bytes() == bytes(raw)  # not one byte cut or changed
        with Journal.open(d) as j:  # a restart: still corrupt, still appending after it
            assert [x.damage for x in j.corruption] == [c.damage]
            assert j.append(State(T0, "again")) == c.resumed_at + 1
        plan, after = repair(d, "test")
        assert after.ok and not plan.problems
        got, damage = read_all(d)
        assert damage is None
        seqs = [s for s, _ in got]
        assert seqs == list(range(1, len(seqs) + 1))  # gap-free
        by_seq = dict(got)
        for i, r in enumerate(recs):  # every intact record is still there, under its number
            if i != hit:
                assert by_seq[i + 1] == r
        if not last:
            assert isinstance(by_seq[hit + 1], State) and by_seq[hit + 1].kind == "unreadable"
        assert [r.kind for r in by_seq.values() if isinstance(r, State)][-2:] == ["after", "again"]
        assert isinstance(got[-1][1], AdminAction) and got[-1][1].action == "journal_repair"


# --- damage cases by name -----------------------------------------------------------------


def test_zero_filled_tail_is_cut(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(3)])
    [(_, path)] = list_segments(tmp_path)
    with open(path, "ab") as f:
        f.write(bytes(4096))  # what some filesystems show after a crash
    assert read_all(tmp_path)[1].kind == "length"
    with Journal.open(tmp_path) as j:
        assert j.recovered is not None and j.next_seq == 4


def test_empty_newest_segment_is_dropped_and_predecessor_is_the_tail(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(3)])
    (tmp_path / jmod.segment_name(4)).touch()  # crash right after rotation
    with Journal.open(tmp_path, segment_bytes=1 << 20) as j:
        assert j.next_seq == 4 and j.recovered is None
        j.append(order(3))
    assert [s for s, _ in read_all(tmp_path)[0]] == [1, 2, 3, 4]


def test_damage_in_an_older_segment_is_reported_not_cut(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(12)], segment_bytes=200)
    segs = list_segments(tmp_path)
    assert len(segs) >= 3
    raw = bytearray(segs[1][1].read_bytes())
    raw[20] ^= 0x10
    segs[1][1].write_bytes(raw)
    report = verify(tmp_path)
    assert report.damage is not None and report.damage.kind == "checksum"
    assert report.damage.segment == str(segs[1][1]) and report.damage.seq == segs[1][0]
    assert report.records == segs[1][0] - 1
    with Journal.open(tmp_path, segment_bytes=200) as j:  # the tail is fine: appends go on
        assert j.recovered is None and j.next_seq == 13


def test_missing_segment_is_a_gap(tmp_path: Path) -> None:
    write(tmp_path, [order(i) for i in range(12)], segment_bytes=200)
    segs = list_segments(tmp_path)
    segs[1][1].unlink()
    got, damage = read_all(tmp_path)
    assert damage is not None and damage.kind == "gap" and len(got) == segs[1][0] - 1


def test_valid_checksum_undecodable_body_is_damage(tmp_path: Path) -> None:
    body = msgspec.msgpack.encode(["nope", 1])
    header = jmod._HEADER.pack(len(body), 0, 1)
    crc = jmod.zlib.crc32(header[8:] + body, jmod.zlib.crc32(header[:4]))
    (tmp_path / jmod.segment_name(1)).write_bytes(jmod._HEADER.pack(len(body), crc, 1) + body)
    assert read_all(tmp_path)[1].kind == "decode"


# --- writer behaviour ---------------------------------------------------------------------


def test_second_writer_is_refused_and_closed_journal_refuses_appends(tmp_path: Path) -> None:
    j = Journal.open(tmp_path)
    with pytest.raises(JournalError, match="already open"):
        Journal.open(tmp_path)
    j.close()
    with pytest.raises(JournalError, match="closed"):
        j.append(order(1))
    Journal.open(tmp_path).close()  # the lock went with close()


def test_non_records_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with Journal.open(tmp_path) as j:
        with pytest.raises(TypeError, match="journal records are"):
            j.append(NewOrder("c", "A", "s", 1, 1, 1, 1, 1, 1.0, 1))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            j.append_many([order(1), "junk"])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="cannot be journaled"):
            j.append(AdminAction(T0, "ops", "set", args={"x": 2**64}))
        assert j.last_seq == 0
    assert read_all(tmp_path) == ([], None)


def test_follow_reader_tails_a_live_journal_across_rotation(tmp_path: Path) -> None:
    reader = JournalReader(tmp_path, 1, follow=True)
    assert list(reader) == []
    with Journal.open(tmp_path, fsync=FsyncPolicy.never(), segment_bytes=150) as j:
        j.append(order(0))
        assert [s for s, _ in reader] == [1]
        for i in range(1, 6):
            j.append(order(i))
        path = j._path
        with open(path, "ab") as f:  # a half-written record the writer has not finished
            f.write(b"\x00\x00\x00\x40abc")
        assert [s for s, _ in reader] == [2, 3, 4, 5, 6]
        assert reader.damage is None  # in follow mode an incomplete tail is "not yet written"
        os.truncate(path, j._size)
        j.append(order(6))
        assert [s for s, _ in reader] == [7] and len(list_segments(tmp_path)) > 1


class _Syncs:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fd: int) -> None:
        self.count += 1


@pytest.mark.parametrize(("policy", "expected"), [
    (FsyncPolicy.every_record(), 5 + 1),  # each append, and one for the batch
    (FsyncPolicy.never(), 0),
])
def test_fsync_per_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          policy: FsyncPolicy, expected: int) -> None:
    syncs = _Syncs()
    monkeypatch.setattr(jmod.os, "fdatasync", syncs)
    with Journal.open(tmp_path, fsync=policy) as j:
        for i in range(5):
            j.append(order(i))
        j.append_many([order(i) for i in range(5, 10)])
        assert syncs.count == expected
    assert syncs.count == expected  # nothing left dirty for close() to sync


def test_fsync_every_interval_syncs_when_due(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = _Syncs()
    now = [10**12]
    monkeypatch.setattr(jmod.os, "fdatasync", syncs)
    monkeypatch.setattr(jmod, "monotonic_ns", lambda: now[0])
    with Journal.open(tmp_path, fsync=FsyncPolicy.every(5)) as j:
        j.append(order(0))
        assert syncs.count == 1  # the first append after a quiet spell is synced at once
        for i in range(1, 10):
            now[0] += 1_000_000  # 1 ms apart: synced on the 5th ms, not before
            j.append(order(i))
        assert syncs.count == 2
        assert j.dirty
    assert syncs.count == 3  # close() syncs what the interval had not yet covered


async def test_the_flusher_thread_syncs_without_the_gil_and_follows_rotations(
        tmp_path: Path) -> None:
    """The compiled syncer (the system's fdatasync, no Python on its thread): what is written is
    synced within an interval or two, across segment rotations, and its latencies reach the
    journal's histogram on the loop."""
    from gateway.metrics import Histogram

    pytest.importorskip("gateway.journal_frame")
    j = Journal.open(tmp_path, fsync=FsyncPolicy.every(1), segment_bytes=1024)
    j.sync_latency = Histogram()
    task = asyncio.create_task(j.run_flusher())
    try:
        for i in range(200):  # ~14 segments
            j.append(order(i))
            if i % 20 == 0:  # (dirty clears as a sync starts; the count once it is done)
                await _until(lambda: j.unflushed_bytes == 0)
                assert not j.dirty
        assert len(list(tmp_path.glob("*.journal"))) > 10
        await _until(lambda: j.unflushed_bytes == 0)
        j.append(order(200))  # the histogram is fed as appends go on
        assert sum(j.sync_latency.counts) > 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        j.close()
    assert [r for _, r in JournalReader(tmp_path)] == [order(i) for i in range(201)]


async def _until(done, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Wait for the flusher thread's work (a condition, not a duration, is what is tested)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "the flusher did not sync"
        await asyncio.sleep(0.001)


async def test_run_flusher_syncs_the_idle_tail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = asyncio.Event()
    real = os.fdatasync
    loop = asyncio.get_running_loop()

    def fake(fd: int) -> None:  # on the flusher's thread
        real(fd)
        loop.call_soon_threadsafe(synced.set)

    now = [10**12]
    monkeypatch.setattr(jmod, "monotonic_ns", lambda: now[0])
    j = Journal.open(tmp_path, fsync=FsyncPolicy.every(1))
    j.append(order(0))
    j.append(order(1))  # not due: left dirty for the flusher
    assert j.dirty
    monkeypatch.setattr(jmod.os, "fdatasync", fake)
    task = asyncio.create_task(j.run_flusher())
    try:
        await asyncio.wait_for(synced.wait(), timeout=5)
        assert not j.dirty
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        j.close()


def test_rotation_syncs_the_finished_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = _Syncs()
    monkeypatch.setattr(jmod.os, "fdatasync", syncs)
    now = [10**12]
    monkeypatch.setattr(jmod, "monotonic_ns", lambda: now[0])
    with Journal.open(tmp_path, fsync=FsyncPolicy.every(1000), segment_bytes=150) as j:
        j.append(order(0))
        before = syncs.count
        while len(list_segments(tmp_path)) < 2:
            j.append(order(1))
        assert syncs.count == before + 1


# --- retention ------------------------------------------------------------------------------


def test_prune_deletes_only_old_whole_segments(tmp_path: Path) -> None:
    now = T0 + 2000 * DAY
    ages = [1900, 1900, 1900, 1900, 1850, 1850, 10, 1900, 5, 5]  # a young record in the middle
    recs = [order(i, ts_ns=now - age * DAY) for i, age in enumerate(ages)]
    with Journal.open(tmp_path, fsync=FsyncPolicy.never(), segment_bytes=100) as j:
        for r in recs:
            j.append(r)
        segs = list_segments(tmp_path)
        assert len(segs) == len(recs)  # one record per segment at this size
        removed = j.prune(now, retention_days=1826)
        assert removed == [p for _, p in segs[:6]]
        got, damage = read_all(tmp_path)
        assert damage is None and [s for s, _ in got] == list(range(7, 11))
        assert j.append(order(99)) == 11
    # the newest segment is never pruned, however old
    before = list_segments(tmp_path)
    assert prune(tmp_path, now + 10**6 * DAY, 1) == [p for _, p in before[:-1]]
    assert len(list_segments(tmp_path)) == 1


# --- inspection CLI ---------------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    with Journal.open(tmp_path, segment_bytes=300) as j:
        for i in range(6):
            acct = "A1" if i % 2 == 0 else "B2"
            j.append(order(i, acct, ts_ns=T0 + i * 60 * 10**9))
            j.append(Decision(T0 + i * 60 * 10**9, 7, f"c{i}", acct, "rb2510", 1001 if i == 4 else 0,
                              "", 100 + i))
        rep = ExecReport("c0", "X9", "A1", "rb2510", 2, 2, ts_ns=T0 + 500 * 10**9)
        j.append(ExchangeEvent(T0 + 500 * 10**9, rep))
        j.append(AdminAction(T0 + 600 * 10**9, "risk.li", "kill", "account", "B2", reason="storm"))
    return tmp_path


def test_cli_verify_ok_and_damaged(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(sample)]) == 0
    out = capsys.readouterr().out
    assert "14 record(s)" in out and "records 1..14" in out and out.rstrip().endswith("OK")
    segs = list_segments(sample)
    with open(segs[-1][1], "ab") as f:
        f.write(b"\x00\x00\x00\x30torn")
    assert main(["verify", str(sample)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED (torn)" in out and segs[-1][1].name in out and "record 15" in out
    assert main(["verify", str(sample / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_cli_dump_filters(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dump", str(sample), "--account", "B2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all("B2" in line for line in lines)
    assert "admin" in lines[-1] and "operator=risk.li" in lines[-1]
    assert main(["dump", str(sample), "--order-id", "c4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "reason=1001:INSUFFICIENT_FUNDS" in lines[1]
    assert "side=1:BUY" in lines[0] and "2025-06-03 09:34:00" in lines[0]
    assert main(["dump", str(sample), "--order-id", "X9", "--json"]) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["seq"] == 13 and row["type"] == "exch" and row["report"]["order_id"] == "X9"
    assert main(["dump", str(sample), "--since", "2025-06-03T09:31:00", "--until", "2025-06-03T01:33:00+00:00"]) == 0
    seqs = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()]
    assert seqs == [3, 4, 5, 6]
    assert main(["dump", str(sample), "--since", "yesterday"]) == 2
    assert "ISO 8601" in capsys.readouterr().err
