"""The end-to-end benchmark harness, run short: does it produce a well-formed report?

One run of every phase with tiny numbers (a few hundred orders per path, a 200-order kill
test, a two-step ramp, a short profile) on real processes. It checks that the report has its
fields, that the ratios were computed and that the files were written — never how fast
anything was: benchmarks report, tests assert.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import harness
from bench.profile import summarize_pyspy

ROOT = Path(__file__).resolve().parents[2]


def _engine() -> str:
    wanted = os.environ.get("FENGKONG_TEST_ENGINE", "cython")
    if wanted == "cython" and not list((ROOT / "cext").glob("engine*.so")):
        return "reference"  # not built in this checkout: the reference decides the same
    return wanted


@pytest.mark.timeout(120)
def test_short_run_writes_a_complete_report(tmp_path: Path) -> None:
    code = harness.main([
        "--engine", _engine(), "--out", str(tmp_path),
        "--placement", "free", "--quiet-pct", "100", "--retries", "0",
        "--rate", "300", "--duration", "0.8", "--warmup", "0.3", "--window", "32",
        "--kill-orders", "200", "--kill-rate", "2000",
        "--peak", "200", "--ramp-steps", "2", "--ramp-refine", "0", "--ramp-duration", "0.8",
        "--ramp-sessions", "2", "--profile-duration", "1", "--tls", "--front", "fix",
    ])
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1, runs
    run = runs[0]
    data = json.loads((run / "report.json").read_text())
    assert code == 0, data.get("error")

    trial = data["compare"]["trials"][0]
    for mode in ("fixed", "max"):
        summary = trial["summary"][mode]
        assert set(summary) == {"direct", "forwarder", "gateway", "gateway-tls", "gateway-fix"}
        for path in summary.values():
            assert path["throughput"] > 0
            assert set(path["latency_us"]) >= {"p50", "p90", "p99", "p99.9", "max"}
            assert path["rejected"] == 0 and path["lost"] == 0, path
        r = trial["ratios"][mode]
        assert isinstance(r["throughput_ratio"], float)
        for q in ("p50", "p99"):
            assert isinstance(r[f"gateway_added_{q}_us"], (int, float))
            assert f"added_{q}_ratio" in r  # None only when the forwarder adds nothing
        fix = trial["ratios_fix"][mode]  # the FIX front vs the native one, same run
        assert {"cpu_ratio", "fix_added_p50_us", "native_added_p99_us"} <= set(fix)
        tls = trial["tls"][mode]  # TLS on vs off, same run
        assert isinstance(tls["tls_extra_p50_us"], (int, float))
        assert tls["tls_cpu_us_per_order"] is None or tls["tls_cpu_us_per_order"] > 0

    kill = data["kill"]
    assert kill["orders"] == 200 and kill["cancels_sent"] == 200
    assert kill["canceled"] == 200 and kill["accepted_after_kill"] == 0
    assert kill["reject_reason"] != 0 and not kill["errors"]

    ramp = data["ramp"]
    assert ramp["steps"] and ramp["peak"] == 200
    assert ramp["multiple"] is not None or ramp["capacity"] == 0

    assert "areas" in data["profile"] and "self" in data["profile"]
    assert data["journal_bytes"] and all(b > 0 for b in data["journal_bytes"])

    md = (run / "report.md").read_text()
    assert "FIX 4.4 front vs native front" in md
    for heading in ("## Setup", "## Gateway vs bare forwarder vs direct", "## Kill switch",
                    "## Capacity (stress test)", "## Profile of the gateway under max load",
                    "TLS on the client port and the exchange link"):
        assert heading in md
    assert (run / "latency.png").stat().st_size > 0
    assert not (run / "work").exists()  # scratch files and journals are cleaned up


def test_pyspy_summary_charges_samples_to_lines_and_areas() -> None:
    raw = "\n".join([
        "main (gateway/cli.py:37);run (uvloop/__init__.py:92);data_received (gateway/framed.py:55);"
        "feed (gateway/protocol.py:308) 30",
        "main (gateway/cli.py:37);run (uvloop/__init__.py:92);new_order (gateway/router.py:220) 70",
        "_bootstrap (threading.py:1002);scrypt (hashlib.py:1) 500",  # not the event loop: left out
    ])
    s = summarize_pyspy(raw)
    assert s["samples"] == 100
    assert s["self"][0] == {"where": "new_order (gateway/router.py:220)", "share": 70.0, "samples": 70}
    areas = {a["where"]: a["share"] for a in s["areas"]}
    assert areas["wire codec (decode/encode frames)"] == 30.0


def test_placement_parsing() -> None:
    p = harness.Placement.parse("loadgen=0,proxy=0,sim=0")
    assert p.loadgen == frozenset({0}) and "core 0" in p.describe()
    assert harness.Placement.parse("free").proxy is None
    with pytest.raises(Exception, match="expected loadgen=N"):
        harness.Placement.parse("gateway=1")

