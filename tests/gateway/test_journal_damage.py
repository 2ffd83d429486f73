"""Journal damage: a torn tail is cut and trading goes on; corruption is never cut, and the
gateway refuses to trade on it (safe mode) until a person repairs the journal.

The first half works on journal directories directly (which damage is which, what a reopen,
``verify`` and ``repair`` do); the second runs the real gateway and exchange processes on such
directories (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.enums import AlertLevel, OrdStatus, Side
from checks.reasons import Reason
from gateway import journal as jmod
from gateway.journal import (
    CORRUPTION_FILE,
    HEADER_SIZE,
    AdminAction,
    FsyncPolicy,
    Inbound,
    Journal,
    JournalReader,
    State,
    list_segments,
    map_segment,
    read_corruption,
)
from gateway.journal_tools import main, plan_repair, repair, verify
from gateway.protocol import NewOrder
from simulator.client import Client
from tests.conftest import ROOT, start_exchange, start_gateway

T0 = 1_748_914_200 * 10**9
T = 15.0  # generous timeouts for a loaded CI machine (waited on, never asserted)


def order(i: int) -> Inbound:
    return Inbound(T0 + i, 7, NewOrder(f"c{i}", "A1", "rb2510", 1, 1, 1, 1, 1, 3500.0, 1))


def records_at(path: Path) -> list[tuple[int, int, int]]:
    """(offset, length, seq) of every record of an intact segment file."""
    raw, out, pos = path.read_bytes(), [], 0
    while pos < len(raw):
        length, _, seq = jmod._HEADER.unpack_from(raw, pos)
        out.append((pos, length, seq))
        pos += HEADER_SIZE + length
    return out


def flip(path: Path, offset: int) -> bytes:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    path.write_bytes(raw)
    return bytes(raw)


def read_all(d: Path) -> tuple[list, jmod.JournalDamage | None]:
    reader = JournalReader(d)
    return list(reader), reader.damage


def one_segment(d: Path, n: int = 5) -> Path:
    with Journal.open(d, fsync=FsyncPolicy.never()) as j:
        j.append_many([order(i) for i in range(n)])
    [(_, path)] = list_segments(d)
    return path


# --- which damage is a torn tail ------------------------------------------------------------

TORN = {
    "a header cut short": lambda rec: rec[:7],
    "a body cut short": lambda rec: rec[:-3],
    "zero fill where the next record would be": lambda rec: bytes(4096),
    "a body whose end is zero fill": lambda rec: rec[: HEADER_SIZE + 5] + bytes(64),
}


@pytest.mark.parametrize("name", TORN)
def test_an_incomplete_last_record_is_a_torn_tail_cut_and_kept(tmp_path: Path, name: str) -> None:
    path = one_segment(tmp_path, 4)
    whole = path.read_bytes()
    extra = jmod.frame(order(99), 5)
    path.write_bytes(whole + TORN[name](extra))
    with Journal.open(tmp_path) as j:
        assert j.recovered is not None and j.recovered.seq == 5 and j.corruption == []
        assert j.quarantined is not None and j.quarantined.read_bytes() == TORN[name](extra)
        assert j.append(order(5)) == 5
    assert path.read_bytes()[: len(whole)] == whole
    assert not (tmp_path / CORRUPTION_FILE).exists()


CORRUPT = {
    # complete length, all bytes there, checksum wrong: bits changed after the write
    "a full-length last record with a bad checksum": lambda rec: rec[:-1] + bytes([rec[-1] ^ 0xFF]),
    # a valid record numbered as one before it: written twice, or by someone else
    "a last record with an old sequence number": lambda rec: jmod.frame(order(99), 3),
    # checksum right, body not a record: a newer version wrote it; cutting it would lose it
    "a last record that does not decode": lambda rec: _undecodable(5),
}


def _undecodable(seq: int) -> bytes:
    body = msgspec.msgpack.encode(["future", 1, 2])
    crc = jmod.zlib.crc32(body, jmod.zlib.crc32(jmod._LENGTH_SEQ.pack(len(body), seq)))
    return jmod._HEADER.pack(len(body), crc, seq) + body


@pytest.mark.parametrize("name", CORRUPT)
def test_a_complete_last_record_that_fails_is_corruption_not_cut(tmp_path: Path, name: str) -> None:
    path = one_segment(tmp_path, 4)
    bad = CORRUPT[name](jmod.frame(order(99), 5))
    damaged = path.read_bytes() + bad
    path.write_bytes(damaged)
    with Journal.open(tmp_path) as j:
        assert j.recovered is None
        [c] = j.corruption
        assert (c.damage.seq, c.damage.offset) == (5, len(damaged) - len(bad))
        assert c.resumed_at == 5 and c.intact_after == []
        assert j.append(order(5)) == 5
    assert path.read_bytes() == damaged  # not one byte cut
    assert [p.name for _, p in list_segments(tmp_path)] == [path.name, jmod.segment_name(5)]
    assert read_corruption(tmp_path) == [c]


def test_mid_segment_damage_keeps_every_intact_record_and_numbers_on_after_them(tmp_path: Path) -> None:
    path = one_segment(tmp_path, 50)
    offset, _, seq = records_at(path)[20]
    damaged = flip(path, offset + HEADER_SIZE + 3)
    with Journal.open(tmp_path) as j:
        [c] = j.corruption
        assert (c.damage.kind, c.damage.seq, c.damage.offset) == ("checksum", seq, offset)
        assert c.intact_after == [(22, 50)] and c.resumed_at == 51
        assert j.append(order(50)) == 51
    assert path.read_bytes() == damaged
    pieces = map_segment(damaged, 1)
    assert [(p.kind, p.first, p.last) for p in pieces] == [
        ("ok", 1, 20), ("checksum", 21, 21), ("ok", 22, 50)]
    got, damage = read_all(tmp_path)  # readers still stop at the damage and say where
    assert len(got) == 20 and damage is not None and damage.seq == 21


def test_reopening_before_anything_was_written_after_the_damage_finds_it_once(tmp_path: Path) -> None:
    path = one_segment(tmp_path, 10)
    flip(path, records_at(path)[4][0] + HEADER_SIZE)
    Journal.open(tmp_path).close()  # a fresh segment, still empty: dropped on the next open
    with Journal.open(tmp_path) as j:
        [c] = j.corruption
        assert c.damage.seq == 5 and c.resumed_at == 11 and j.next_seq == 11
    assert len(read_corruption(tmp_path)) == 1


def test_damage_in_an_older_segment_is_noted_by_the_reader_and_persists(tmp_path: Path) -> None:
    with Journal.open(tmp_path, fsync=FsyncPolicy.never(), segment_bytes=300) as j:
        j.append_many([order(i) for i in range(20)])
    segs = list_segments(tmp_path)
    assert len(segs) >= 4
    older = segs[1][1]
    offset, _, seq = records_at(older)[1]
    flip(older, offset + 5)
    with Journal.open(tmp_path, segment_bytes=300) as j:
        assert j.corruption == [] and j.recovered is None  # the tail is fine...
        for _ in j.read():
            pass
        assert j.damage_seen is not None and j.damage_seen.seq == seq  # ...a reader found it
        c = j.mark_corrupt(j.damage_seen)
        assert c.intact_after and c.intact_after[0][0] == seq + 1
        assert j.mark_corrupt(j.damage_seen) is c  # once
    with Journal.open(tmp_path, segment_bytes=300) as j:  # and it stays until a repair
        assert [x.damage for x in j.corruption] == [c.damage]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 40), segment_bytes=st.integers(150, 900), data=st.data())
def test_any_flipped_bits_anywhere_repair_to_every_intact_record(n: int, segment_bytes: int,
                                                                 data: st.DataObject) -> None:
    """Bits flipped in any segments: open (the gateway's), appends, a full read (recovery's),
    then repair. Every record not hit is still there under its own number; numbering is
    gap-free."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        recs = [order(i) for i in range(n)]
        with Journal.open(d, fsync=FsyncPolicy.never(), segment_bytes=segment_bytes) as j:
            j.append_many(recs)
        where = {}  # seq -> (path, offset, size) before any damage
        for _, path in list_segments(d):
            for offset, length, seq in records_at(path):
                where[seq] = (path, offset, HEADER_SIZE + length)
        flips = data.draw(st.sets(st.tuples(st.integers(1, n), st.integers(0, 10**6)),
                                  min_size=1, max_size=3), label="flips")
        hits = set()
        for seq, at in {(seq, at % where[seq][2]) for seq, at in flips}:
            path, offset, _ = where[seq]
            flip(path, offset + at)
            hits.add(seq)
        with Journal.open(d, segment_bytes=segment_bytes) as j:
            for _ in j.read():
                pass
            if j.damage_seen is not None:
                j.mark_corrupt(j.damage_seen)
            assert j.corruption or j.recovered is not None
            if j.recovered is not None:  # a torn tail: nothing after it was intact
                assert set(range(j.recovered.seq, n + 1)) <= hits
            extra = j.append(State(T0, "after"))
        plan, after = repair(d, "test")
        assert not plan.problems and after.ok, (plan, after)
        got, damage = read_all(d)
        assert damage is None
        assert [s for s, _ in got] == list(range(1, len(got) + 1))
        by_seq = dict(got)
        for i, r in enumerate(recs, start=1):
            if i not in hits:
                assert by_seq[i] == r
        # A damaged record's number holds a placeholder, or (at the very end) the next record.
        assert all(r.kind == "unreadable" for s, r in got
                   if isinstance(r, State) and s != extra)
        assert by_seq[extra] == State(T0, "after")


# --- verify and repair ----------------------------------------------------------------------


def test_verify_names_the_damage_and_what_is_intact_after_it(tmp_path: Path, capsys) -> None:
    path = one_segment(tmp_path, 30)
    offset, _, _ = records_at(path)[10]
    flip(path, offset + HEADER_SIZE)
    Journal.open(tmp_path).close()  # the gateway's open: fresh segment, CORRUPTION
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED (checksum): {path} at byte {offset} (record 11)" in out
    assert "records 12..30 intact" in out and "CORRUPT since" in out
    assert "safe mode" in out and "fengkong journal repair" in out
    report = verify(tmp_path)
    assert not report.ok and not report.torn_tail_only


def test_repair_with_a_gap_needs_fill_gaps_and_overlaps_need_a_person(tmp_path: Path) -> None:
    with Journal.open(tmp_path, fsync=FsyncPolicy.never(), segment_bytes=300) as j:
        j.append_many([order(i) for i in range(20)])
    segs = list_segments(tmp_path)
    missing = segs[1]
    missing[1].unlink()
    plan = plan_repair(tmp_path)
    assert plan.problems and f"{missing[0]}..{segs[2][0] - 1}" in plan.problems[0]
    assert "--fill-gaps" in plan.problems[0]
    plan, after = repair(tmp_path, "segment lost with the old disk", fill_gaps=True, operator="ops.wu")
    assert after.ok and plan.steps[0].action == "fill_gap"
    got, damage = read_all(tmp_path)
    assert damage is None and [s for s, _ in got] == list(range(1, 22))
    kinds = {s: r.kind for s, r in got if isinstance(r, State)}
    assert set(kinds) == set(range(missing[0], segs[2][0])) and set(kinds.values()) == {"missing"}
    admin = got[-1][1]
    assert isinstance(admin, AdminAction) and admin.operator == "ops.wu"
    assert admin.action == "journal_repair" and admin.reason == "segment lost with the old disk"


def test_repair_refuses_while_the_journal_is_open(tmp_path: Path, capsys) -> None:
    path = one_segment(tmp_path, 10)
    flip(path, records_at(path)[3][0] + HEADER_SIZE)
    with Journal.open(tmp_path):
        assert main(["repair", str(tmp_path), "--apply", "--reason", "x"]) == 2
        assert "stop the gateway first" in capsys.readouterr().err
    assert main(["repair", str(tmp_path)]) == 0  # dry run
    out = capsys.readouterr().out
    assert "placeholder(s) for 4..4" in out and "nothing changed" in out
    assert read_corruption(tmp_path)  # still corrupt
    assert main(["repair", str(tmp_path), "--apply"]) == 2
    assert "--reason" in capsys.readouterr().err
    assert main(["repair", str(tmp_path), "--apply", "--reason", "bit rot on disk 2"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK") and not read_corruption(tmp_path)
    assert list(tmp_path.glob(f"{path.name}.*.corrupt"))  # the original, kept as evidence


# --- the gateway on a damaged journal -------------------------------------------------------


def _get(port: int, path: str) -> dict | list:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": "Bearer demo-risk-token"})
    with urllib.request.urlopen(req, timeout=T) as resp:
        return json.loads(resp.read())


def _post(port: int, path: str, body: dict) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer demo-risk-token"}, method="POST")
    with urllib.request.urlopen(req, timeout=T) as resp:
        return json.loads(resp.read())


def _journal_cli(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "gateway", "journal", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT)})
    return proc.returncode, proc.stdout + proc.stderr


async def _first_report(gw, account: str = "A004", price: float = 3190.0):
    """Send one resting order; its first report (NEW, or REJECTED with the reason)."""
    client = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret",
                                  cancel_on_disconnect=False)
    try:
        h = await client.send_order(account=account, symbol="rb2605", side=Side.BUY, price=price,
                                    qty=1)
        rep = await client.next_report(timeout=T)
        assert rep.cl_ord_id == h.cl_ord_id
        return rep
    finally:
        await client.close()


@pytest.fixture
def exchange():
    ex = start_exchange()
    yield int(ex.match.group(1))
    ex.stop()


async def _journal_with_history(journal: Path, ex_port: int) -> None:
    """A gateway's journal: a resting order on A001, then a run of rejected orders."""
    gw = start_gateway(ex_port, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        client = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret",
                                      cancel_on_disconnect=False)
        rest = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                       price=3190.0, qty=1)
        await rest.acked(timeout=T)
        for _ in range(20):  # off tick: rejected by the engine, three records each
            h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                        price=3190.5, qty=1)
            assert (await h.wait_done(timeout=T)).reason == Reason.PRICE_NOT_ON_TICK
        await client.close()
    finally:
        gw.stop()


async def test_torn_tail_is_cut_kept_and_the_gateway_trades(tmp_path: Path, exchange: int) -> None:
    journal = tmp_path / "journal"
    await _journal_with_history(journal, exchange)
    segment = list_segments(journal)[-1][1]
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(jmod.frame(order(1), 10**6)[:-9])  # a crash in the middle of a write
    gw = start_gateway(exchange, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        rec = _get(int(gw.match.group(2)), "/v1/recovery")
        assert rec["safe_mode"] is False and rec["corruption"] == []
        assert rec["torn_tail"]["offset"] == size and rec["torn_tail"]["kind"] == "torn"
        assert Path(rec["torn_tail"]["kept_in"]).exists()
        assert rec["working_orders"] == 1
        assert (await _first_report(gw)).status == OrdStatus.NEW  # it trades
    finally:
        gw.stop()
    assert not (journal / CORRUPTION_FILE).exists()


async def test_mid_segment_corruption_means_safe_mode_until_a_repair(tmp_path: Path, exchange: int) -> None:
    journal = tmp_path / "journal"
    await _journal_with_history(journal, exchange)
    first, segment = list_segments(journal)[-1]
    recs = records_at(segment)
    offset, _, seq = recs[len(recs) // 2]  # one flipped byte in the middle of the newest segment
    damaged = flip(segment, offset + HEADER_SIZE + 4)

    gw = start_gateway(exchange, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        admin = int(gw.match.group(2))
        rep = await _first_report(gw)
        assert rep.status == OrdStatus.REJECTED and rep.reason == Reason.SAFE_MODE
        assert segment.name in rep.text and f"byte {offset}" in rep.text
        rec = _get(admin, "/v1/recovery")
        assert rec["safe_mode"] is True and "fengkong journal repair" in rec["repair"]
        [c] = rec["corruption"]
        assert c["damage"] == {"segment": str(segment), "offset": offset, "seq": seq,
                               "kind": "checksum", "detail": "checksum mismatch (corrupt bytes)"}
        assert c["intact_after"] == [[seq + 1, recs[-1][2]]] and c["resumed_at"] == recs[-1][2] + 1
        alerts = [a for a in _get(admin, "/v1/alerts")
                  if a["level"] == AlertLevel.CRITICAL and a["code"] == Reason.JOURNAL_FAILURE]
        assert alerts and str(segment) in alerts[0]["text"] and f"byte {offset}" in alerts[0]["text"]
        assert any("journal corrupt" in line and str(offset) in line for line in gw.output)
        status = _get(admin, "/v1/status")
        assert status["halted"]["code"] == Reason.SAFE_MODE
        # Safe mode still lets a person stop what rests: the order before the damage is known.
        kill = _post(admin, "/v1/kill", {"scope": "account", "key": "A001", "reason": "safe mode"})
        assert kill["cancels_sent"] == 1
    finally:
        gw.stop()
    assert segment.read_bytes() == damaged  # the intact records after the damage are all there
    pieces = map_segment(damaged, first)
    assert [(p.kind, p.first, p.last) for p in pieces] == [
        ("ok", first, seq - 1), ("checksum", seq, seq), ("ok", seq + 1, recs[-1][2])]

    gw = start_gateway(exchange, "--journal", str(journal))  # a restart changes nothing
    try:
        gw.wait_for("exchange link up", T)
        assert (await _first_report(gw)).reason == Reason.SAFE_MODE
    finally:
        gw.stop()

    code, out = _journal_cli("verify", str(journal))
    assert code == 1 and f"record {seq}" in out and f"records {seq + 1}..{recs[-1][2]} intact" in out
    code, out = _journal_cli("repair", str(journal), "--apply", "--reason", "disk bit rot, ticket 4711")
    assert code == 0 and out.rstrip().endswith("OK"), out
    gw = start_gateway(exchange, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        rec = _get(int(gw.match.group(2)), "/v1/recovery")
        assert rec["safe_mode"] is False and rec["damage"] == ""
        assert rec["last_seq"] > recs[-1][2]  # replayed through the placeholder and beyond
        assert (await _first_report(gw)).status == OrdStatus.NEW  # trading again
    finally:
        gw.stop()


async def test_damage_in_an_older_segment_means_safe_mode(tmp_path: Path, exchange: int) -> None:
    journal = tmp_path / "journal"
    with Journal.open(journal, fsync=FsyncPolicy.never(), segment_bytes=200) as j:
        for i in range(12):  # operator notes: records the replay reads and passes over
            j.append(State(T0 + i, "note", b"x" * 40))
    segs = list_segments(journal)
    assert len(segs) >= 3
    older = segs[1][1]
    flip(older, HEADER_SIZE + 10)
    gw = start_gateway(exchange, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        rec = _get(int(gw.match.group(2)), "/v1/recovery")
        assert rec["safe_mode"] is True
        [c] = rec["corruption"]
        assert c["damage"]["segment"] == str(older) and c["damage"]["seq"] == segs[1][0]
        assert c["damage"]["offset"] == 0 and c["resumed_at"] == 0  # the newest segment is fine
        assert (await _first_report(gw)).reason == Reason.SAFE_MODE
    finally:
        gw.stop()
    assert (journal / CORRUPTION_FILE).exists()
