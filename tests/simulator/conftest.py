"""Fixtures for the simulator tests: the sample config, an in-process exchange, uvloop loops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import uvloop

from checks.config import load_risk_config
from checks.model import RiskConfig
from simulator.exchange import ExchangeServer, serve_exchange

ROOT = Path(__file__).resolve().parents[2]
RISK_TOML = ROOT / "examples" / "risk.toml"


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping:
    # The simulator runs on uvloop in production; test it on the same loop.
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def risk() -> RiskConfig:
    return load_risk_config(RISK_TOML)


@pytest.fixture
async def exchange(risk: RiskConfig) -> AsyncIterator[ExchangeServer]:
    # Periodic market data off: tests wait on their own events, not on a clock.
    server = await serve_exchange(risk, md_interval_s=0)
    yield server
    await server.close()
