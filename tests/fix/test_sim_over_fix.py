"""``fengkong sim replay --fix`` and ``fengkong sim scenario --fix``: the same flows and
scenarios through the gateway's FIX port, with the simulator's own FIX initiator."""

from __future__ import annotations

import subprocess
import sys

from simulator.flow_file import load_flow
from simulator.replay import Login, replay
from tests.conftest import EXAMPLES, ROOT

ALGO = "algo1:algo-secret"
ROLES = ["seller", "buyer", "algo", "desk", "group"]


def fengkong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120)


def test_scenarios_over_fix(shared_fix_gateway):
    logins = [a for role in ROLES for a in ("--login", f"{role}={ALGO}")]
    for name in ("normal-trading", "self-trade", "disconnect-resting"):
        out = fengkong("sim", "scenario", name, "--fix", "--port", str(shared_fix_gateway.fix_port),
                       "--timeout", "10", *logins)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"{name}: PASSED" in out.stdout


async def test_replay_over_fix_decides_as_the_native_path(shared_fix_gateway):
    flow = load_flow(EXAMPLES / "flows" / "sample.csv")
    logins = {s: Login("algo1", "algo-secret") for s in {a.session for a in flow}}
    native_port = int(shared_fix_gateway.match.group(1))
    native = await replay(flow, "127.0.0.1", native_port, logins=logins, speed=0,
                          sync_sessions=True, id_prefix="n-")
    over_fix = await replay(flow, "127.0.0.1", shared_fix_gateway.fix_port, logins=logins, speed=0,
                            sync_sessions=True, id_prefix="f-", fix="FENGKONG")
    assert over_fix.orders_sent == native.orders_sent > 0
    assert over_fix.accepted + over_fix.rejected_total == over_fix.orders_sent
    assert not over_fix.errors and not over_fix.unanswered


def test_replay_command_over_fix(shared_fix_gateway):
    out = fengkong("sim", "replay", str(EXAMPLES / "flows" / "sample.csv"), "--fix",
                   "--port", str(shared_fix_gateway.fix_port), "--speed", "max",
                   "--user-prefix", "", "--login", f"desk1={ALGO}", "--login", f"desk2={ALGO}",
                   "--login", f"hft={ALGO}", "--sync-sessions")
    assert out.returncode == 0, out.stdout + out.stderr
