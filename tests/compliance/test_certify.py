"""Client certification (art. 16-17): the suite against sample client systems, tamper-evident
records, twenty-year retention.

Every run is real: the simulator and a gateway in certification mode as processes, the suite's
recording proxy and link relay on loopback, the sample client (examples/certify/sample_client.py,
on the client library) as a process taking instructions on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway import journal as jr
from gateway.compliance import certify_records as records
from gateway.compliance.certify import certify
from gateway.compliance.certify_cases import CASE_NAMES
from tests.conftest import ROOT

CLIENT = f"{sys.executable} examples/certify/sample_client.py"
# Each faulty sample client and exactly the cases it must fail.
FAULTY = {
    "resend": {"unknown_instrument", "off_tick", "volume_out_of_range", "insufficient_funds",
               "no_position", "non_trading_hours", "price_limit"},
    "no-backoff": {"order_count_threshold", "cancel_count_threshold", "kill_switch", "link_loss"},
    "sloppy-state": {"partial_fill", "disconnect_reconnect", "cancel_by_instrument",
                     "cancel_all"},
}
YEAR_NS = 365 * 86_400 * 10**9


def _results(bodies: list[dict]) -> dict[str, dict]:
    return {b["case"]: b for b in bodies if b["kind"] == "case"}


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    import asyncio

    out = tmp_path_factory.mktemp("cert-good")
    return asyncio.run(certify(CLIENT, out, "sample well-behaved client"))


def test_the_well_behaved_client_passes_every_case_with_evidence(good_run):
    path, bodies = good_run
    results = _results(bodies)
    assert list(results) == list(CASE_NAMES)
    assert {c: r["result"] for c, r in results.items()} == {c: "pass" for c in CASE_NAMES}
    assert bodies[0]["kind"] == "run" and bodies[-1]["kind"] == "summary"
    assert bodies[-1]["failed"] == [] and bodies[-1]["passed"] == len(CASE_NAMES)
    for r in results.values():  # the messages exchanged are the evidence
        assert any(e.get("type") == "NewOrder" or "note" in e for e in r["evidence"])
    # the refused order and its refusal are both in the evidence of a refusal case
    ev = results["off_tick"]["evidence"]
    assert [e["type"] for e in ev if "type" in e] == ["NewOrder", "ExecReport"]
    assert ev[[e.get("type") for e in ev].index("ExecReport")]["msg"]["reason"] == 407
    # secrets never reach the record
    assert "cert-secret" not in path.read_text()
    assert records.verify(path, path.parent / "journal").anchored


@pytest.mark.parametrize("fault", sorted(FAULTY))
async def test_each_faulty_client_fails_exactly_its_cases_with_evidence(fault, tmp_path):
    path, bodies = await certify(f"{CLIENT} --fault {fault}", tmp_path, f"sample {fault}")
    results = _results(bodies)
    failed = {c for c, r in results.items() if r["result"] != "pass"}
    assert failed == FAULTY[fault], {c: results[c]["findings"] for c in failed ^ FAULTY[fault]}
    for case in failed:
        assert results[case]["result"] == "fail" and results[case]["findings"]
        assert any(e.get("dir") == "client" for e in results[case]["evidence"])
    assert bodies[-1]["failed"] == [c for c in CASE_NAMES if c in FAULTY[fault]]
    assert records.verify(path, tmp_path / "journal").ok


def _verify_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "certify", "verify", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def _tampered(path: Path, tmp_path: Path, how: str) -> Path:
    lines = path.read_bytes().splitlines(keepends=True)
    if how == "byte":
        i = 5
        pos = lines[i].index(b'"result":"pass"') + len(b'"result":"')
        lines[i] = lines[i][:pos] + b"q" + lines[i][pos + 1:]  # "pass" -> "qass"
    elif how == "removed":
        del lines[5]
    elif how == "reordered":
        lines[5], lines[6] = lines[6], lines[5]
    elif how == "last_removed":
        del lines[-1]
    out = tmp_path / f"{how}.jsonl"
    out.write_bytes(b"".join(lines))
    return out


@pytest.mark.parametrize("how, says", [
    ("byte", "line 6: its content does not match its hash"),
    ("removed", "line 6: record 6 where record 5 belongs"),
    ("reordered", "line 6: record 6 where record 5 belongs"),
    ("last_removed", "the journal anchors 17 records"),
])
def test_certify_verify_detects_tampering(good_run, tmp_path, how, says):
    path, _ = good_run
    journal = path.parent / "journal"
    r = _verify_cli(str(path), "--journal", str(journal))
    assert r.returncode == 0 and "intact: 17 records" in r.stdout and "anchored" in r.stdout
    bad = _tampered(path, tmp_path, how)
    r = _verify_cli(str(bad), "--journal", str(journal))
    assert r.returncode == 1, r.stdout
    assert "TAMPERED" in r.stdout and says in r.stdout, r.stdout
    if how == "last_removed":  # the chain alone is consistent: only the anchor tells
        assert records.verify(bad).ok and not records.verify(bad, journal).ok


def test_one_changed_byte_anywhere_is_detected(good_run, tmp_path):
    path, _ = good_run
    data = bytearray(path.read_bytes())
    for n, pos in enumerate(range(7, len(data), len(data) // 23)):
        if data[pos:pos + 1] in (b"\n", b" "):
            continue
        copy = bytearray(data)
        copy[pos] = ord("0") if copy[pos] != ord("0") else ord("1")
        bad = tmp_path / f"b{n}.jsonl"
        bad.write_bytes(bytes(copy))
        assert not records.verify(bad).ok, pos


def test_prune_keeps_certification_records_and_anchors_for_twenty_years(tmp_path):
    now = time.time_ns()
    old = now - 6 * YEAR_NS  # past the 5-year business retention
    line = records.chain([{"kind": "run", "run": "r1"}])
    with jr.Journal.open(tmp_path) as j:
        j.append(jr.State(old, "boot", b"x."))  # segment 1: ordinary, prunable
        j.start_segment()
        j.append(jr.State(old, records.RECORD_KIND, line[0]))  # segment 2: a record
        j.start_segment()
        j.append(jr.AdminAction(old, "certify", records.ANCHOR_ACTION, "firm", "",
                                {"run": "r1", "head": records.head_of(line), "records": 1}))
        j.start_segment()
        j.append(jr.State(now, "boot", b"y."))  # the newest segment
    kept: list[Path] = []
    removed = jr.prune(tmp_path, now, jr.BUSINESS_RETENTION_DAYS, kept)
    assert [p.name for p in removed] == [jr.segment_name(1)]
    assert [p.name for p in kept] == [jr.segment_name(2)]
    assert records.find_anchor(tmp_path, "r1") is not None
    # twenty years after the run, they go like any other record
    later = old + 20 * YEAR_NS + 30 * 86_400 * 10**9
    assert [p.name for p in jr.prune(tmp_path, later)] == [jr.segment_name(2),
                                                          jr.segment_name(3)]
    # the CLI says why it kept them
    with jr.Journal.open(tmp_path / "cli") as j:
        j.append(jr.State(old, "boot", b"x."))
        j.start_segment()
        j.append(jr.State(old, records.RECORD_KIND, line[0]))
        j.start_segment()
        j.append(jr.State(now, "boot", b"y."))
    r = subprocess.run([sys.executable, "-m", "gateway", "journal", "prune", str(tmp_path / "cli")],
                       cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0
    assert "deleted" in r.stdout and "client certification records" in r.stdout


def test_certify_cli_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gateway", "certify", "run", "--client", "x",
                        "--cases", "nope"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and "unknown case(s) nope" in r.stderr and "Traceback" not in r.stderr
    missing = _verify_cli(str(tmp_path / "none.jsonl"))
    assert missing.returncode == 1 and "cannot read" in missing.stdout
    garbage = tmp_path / "g.jsonl"
    garbage.write_text(json.dumps({"hello": 1}) + "\n")
    r = _verify_cli(str(garbage))
    assert r.returncode == 1 and "not a certification record" in r.stdout
