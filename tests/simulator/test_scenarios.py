"""Every scenario passes against the bare exchange (``--target exchange``); the CLI's exit codes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from checks.model import RiskConfig
from simulator.exchange import ExchangeServer, serve_exchange
from simulator.scenarios import list_scenarios, run_scenario

ROOT = Path(__file__).resolve().parents[2]
NAMES = [s.name for s in list_scenarios()]


def test_the_library_covers_the_issue() -> None:
    assert NAMES == ["normal-trading", "runaway-algo", "fat-finger", "self-trade", "cancel-storm",
                     "margin-exhaustion", "close-without-position", "disconnect-resting",
                     "unregistered-programmatic"]
    for spec in list_scenarios():
        assert spec.expect_exchange and spec.expect_gateway and spec.roles


@pytest.mark.parametrize("name", NAMES)
async def test_scenario_passes_against_the_exchange(exchange: ExchangeServer, name: str) -> None:
    result = await run_scenario(name, "127.0.0.1", exchange.port, "exchange", seed=1)
    assert result.passed, (result.error, [c for c in result.checks if not c.passed])
    assert exchange.engine.working_count() == 0  # each scenario cleans up after itself


async def test_all_scenarios_back_to_back_on_one_exchange(exchange: ExchangeServer) -> None:
    for name in NAMES:
        result = await run_scenario(name, "127.0.0.1", exchange.port, "exchange", seed=5)
        assert result.passed, (name, result.error, [c for c in result.checks if not c.passed])


async def test_same_seed_same_flow(risk: RiskConfig) -> None:
    details = []
    for _ in range(2):
        server = await serve_exchange(risk, md_interval_s=0)
        try:
            result = await run_scenario("normal-trading", "127.0.0.1", server.port, "exchange", seed=9)
            details.append([(c.name, c.detail) for c in result.checks])
        finally:
            await server.close()
    assert details[0] == details[1]


async def test_gateway_expectations_fail_against_a_bare_exchange(exchange: ExchangeServer) -> None:
    # The exchange does not enforce the collar: the gateway's expectations must notice.
    result = await run_scenario("fat-finger", "127.0.0.1", exchange.port, "gateway", seed=1)
    assert not result.passed
    failed = {c.name for c in result.checks if not c.passed}
    assert {"outside the % collar refused", "outside the tick collar refused"} <= failed


async def test_unreachable_target_is_a_failed_scenario_not_a_crash() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    result = await run_scenario("self-trade", "127.0.0.1", port, "exchange", seed=1)
    assert not result.passed
    assert result.error is not None and "ConnectionRefusedError" in result.error


async def run_cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "scenario", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_scenario_command_exit_codes(exchange: ExchangeServer) -> None:
    port = str(exchange.port)
    code, out = await run_cli("self-trade", "--target", "exchange", "--port", port, "--seed", "3")
    assert code == 0, out
    assert "self-trade: PASSED" in out
    code, out = await run_cli("fat-finger", "--target", "gateway", "--port", port)
    assert code == 1 and "FAIL" in out and "fat-finger: FAILED" in out
    code, out = await run_cli("no-such-thing", "--port", port)
    assert code == 2 and "unknown scenario" in out
    code, out = await run_cli("--list")
    assert code == 0 and all(name in out for name in NAMES)
