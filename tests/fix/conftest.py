"""Fixtures for the FIX front: the sample gateway config with FIX sessions, and a gateway
(real process, journal on) with its FIX port open in front of a real exchange simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, Proc, start_exchange, start_gateway

# The backoffice user may not trade (no accounts): it only takes the drop copy.
# Secret "backoffice-secret" (scrypt N = 2**14 like the other demo users).
BACKOFFICE_HASH = ("scrypt$16384$8$1$66656e676b6f6e672d64656d6f2d3034$"
                   "579bc254202a94857ca78fa7ef174158d337f43704da11ea3775b4914c1a9988")
# A desk whose application is registered (穿透式监管): its FIX Logon must carry it.
APP_ID, AUTH_CODE = "hq-trader-4.2", "AUTH-7F3A-19C2"
APP_HASH = ("scrypt$16384$8$1$66656e676b6f6e672d64656d6f2d3035$"
            "0f564d500a2132087127cb18eeb20eade81c21bba502618d2e8665e645fa3d0f")
FIX_SECTION = f"""
[[users]]
name = "appdesk"
secret_hash = "{BACKOFFICE_HASH}"
accounts = ["A003"]
automated = false
apps = [{{ app_id = "{APP_ID}", auth_code_hash = "{APP_HASH}" }}]

[[users]]
name = "backoffice1"
secret_hash = "{BACKOFFICE_HASH}"
accounts = []
automated = false

[fix]
enabled = true
port = 0
garbled_limit = 20

[[fix.sessions]]
sender_comp_id = "FENGKONG"
target_comp_id = "ALGO1"
user = "algo1"

[[fix.sessions]]                # a second session of algo1 (sim --fix: ALGO1-2, ALGO1-3 ...)
sender_comp_id = "FENGKONG"
target_comp_id = "ALGO1-2"
user = "algo1"

[[fix.sessions]]
sender_comp_id = "FENGKONG"
target_comp_id = "ALGO1-3"
user = "algo1"

[[fix.sessions]]
sender_comp_id = "FENGKONG"
target_comp_id = "MANUAL1"
user = "manual1"

[[fix.sessions]]
sender_comp_id = "FENGKONG"
target_comp_id = "APPDESK"
user = "appdesk"

[[fix.sessions]]
sender_comp_id = "FENGKONG"
target_comp_id = "BACKOFFICE"
user = "backoffice1"
kind = "drop_copy"
accounts = ["*"]

[[fix.sessions]]                # a drop copy of one account only
sender_comp_id = "FENGKONG"
target_comp_id = "BACKOFFICE-A004"
user = "backoffice1"
kind = "drop_copy"
accounts = ["A004"]
"""


def fix_config(directory: Path, extra: str = "", keep_orders: bool = False) -> Path:
    """examples/gateway.toml plus FIX sessions (and ``extra`` TOML), written to ``directory``;
    ``keep_orders``: algo1's orders outlive its connections (no cancel-on-disconnect)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (EXAMPLES / "gateway.toml").read_text()
    if keep_orders:
        text = text.replace('automated = true\n', 'automated = true\ncancel_on_disconnect = false\n', 1)
    text = text.replace('risk_config = "risk.toml"',
                        f'risk_config = "{(EXAMPLES / "risk.toml").as_posix()}"')
    path = directory / "gateway.toml"
    path.write_text(text + FIX_SECTION + extra)
    return path


def start_fix_gateway(exchange_port: int, directory: Path, *extra: str,
                      config_extra: str = "", keep_orders: bool = False) -> tuple[Proc, int]:
    cfg = fix_config(directory, config_extra, keep_orders)
    gw = start_gateway(exchange_port, "--journal", str(directory / "journal"), *extra,
                       config=cfg)
    port = int(gw.wait_for(r"FIX on [\d.]+:(\d+)").group(1))
    gw.wait_for("exchange link up")
    return gw, port


@pytest.fixture
def fix_gateway(exchange_proc, tmp_path):
    gw, port = start_fix_gateway(int(exchange_proc.match.group(1)), tmp_path)
    gw.fix_port = port  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@contextmanager
def exchange_and_gateway(directory: Path, config_extra: str = "") -> Iterator[Proc]:
    """An exchange and a FIX gateway in front of it (``.fix_port``), both stopped after."""
    exchange = start_exchange()
    try:
        gw, port = start_fix_gateway(int(exchange.match.group(1)), directory,
                                     config_extra=config_extra)
        gw.fix_port = port  # type: ignore[attr-defined]
        try:
            yield gw
        finally:
            gw.stop()
    finally:
        exchange.stop()


@pytest.fixture(scope="module")
def shared_fix_gateway(tmp_path_factory):
    """One exchange and gateway for a module's tests that do not depend on sequence numbers
    carried between initiators (their initiators log on with ResetSeqNumFlag): starting the
    pair costs seconds on a loaded machine."""
    with exchange_and_gateway(tmp_path_factory.mktemp("fixgw")) as gw:
        yield gw
