"""The admin plane and the admin commands as a risk officer meets them: JSON answers with the
right status, one unit of money, and a CLI that says what happened (issue 10, item 11)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from gateway.admin import _POSITION_FIELDS, _position_view
from tests.conftest import ROOT

RISK = "demo-risk-token"


def call(port: int, method: str, path: str, body: dict[str, Any] | None = None,
         auth: str = f"Bearer {RISK}") -> tuple[int, str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": auth,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raw = err.read()
        ctype = err.headers.get("Content-Type", "")
        return err.code, ctype, json.loads(raw) if "json" in ctype else raw.decode()


def fengkong(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--admin",
                           f"http://127.0.0.1:{port}", "--token", RISK],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, text=True,
                          capture_output=True, timeout=60)


@pytest.fixture
def admin_port(gateway_proc) -> int:
    return int(gateway_proc.match.group(2))


def test_unknown_route_is_a_json_404_naming_the_path(admin_port: int) -> None:
    status, ctype, body = call(admin_port, "GET", "/v1/nothing-here")
    assert status == 404 and "application/json" in ctype
    assert body["path"] == "/v1/nothing-here" and body["error"]


def test_bad_scope_is_400_and_names_the_allowed_scopes(admin_port: int) -> None:
    status, _, body = call(admin_port, "POST", "/v1/kill", {"scope": "galaxy", "key": "x"})
    assert status == 400
    assert "galaxy" in body["error"] and "account" in body["error"] and "firm" in body["error"]
    status, _, body = call(admin_port, "POST", "/v1/reset", {"scope": "galaxy", "key": "x"})
    assert status == 400


def test_bearer_scheme_is_case_insensitive(admin_port: int) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        status, _, _ = call(admin_port, "GET", "/v1/status", auth=f"{scheme} {RISK}")
        assert status == 200, scheme
    status, _, _ = call(admin_port, "GET", "/v1/status", auth=f"Basic {RISK}")
    assert status == 401


def test_reset_of_a_scope_not_killed_changes_nothing_and_says_so(admin_port: int) -> None:
    status, _, body = call(admin_port, "POST", "/v1/reset", {"scope": "account", "key": "A001"})
    assert status == 409 and body["changed"] is False
    assert "was not killed; nothing changed" in body["error"]
    status, _, body = call(admin_port, "POST", "/v1/reset", {"scope": "account", "key": "NOPE"})
    assert status == 404
    out = fengkong(admin_port, "reset", "--account", "A001")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == "fengkong reset: account A001 was not killed; nothing changed"
    # A real kill is lifted, and says it changed something.
    assert fengkong(admin_port, "kill", "--account", "A001").returncode == 0
    status, _, body = call(admin_port, "POST", "/v1/reset", {"scope": "account", "key": "A001"})
    assert status == 200 and body["changed"] is True
    status, _, _ = call(admin_port, "POST", "/v1/reset", {"scope": "account", "key": "A001"})
    assert status == 409


def test_status_shows_a_killed_account_as_killed_untruncated_when_piped(admin_port: int) -> None:
    assert fengkong(admin_port, "kill", "--account", "A001", "--reason", "test").returncode == 0
    assert fengkong(admin_port, "kill", "--account", "A003", "--close-only").returncode == 0
    out = fengkong(admin_port, "status")  # stdout is a pipe here, not a terminal
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 2 and cells[1].startswith("A00"):
            rows[cells[1]] = cells
    assert rows["A001"][2] == "KILLED"
    assert rows["A003"][2] == "CLOSE_ONLY"
    assert rows["A004"][2] == "ACTIVE"
    assert "…" not in out.stdout  # nothing cut short, money least of all
    assert "{" not in out.stdout and "'" not in out.stdout  # no raw Python dicts or lists
    account = call(admin_port, "GET", "/v1/accounts/A001")[2]
    assert rows["A001"][3] == f"{account['available']:,.2f}"


def test_position_money_is_in_yuan_like_the_account_funds() -> None:
    fen = dict.fromkeys(_POSITION_FIELDS, 3)
    fen.update(long_cost=469_292_150, long_margin=56_315_058, unrealised=-12_345)
    view = _position_view(tuple(fen[f] for f in _POSITION_FIELDS))
    assert view["long_cost"] == 4_692_921.50
    assert view["long_margin"] == 563_150.58
    assert view["unrealised"] == -123.45
    assert view["long_td"] == 3  # quantities stay lots


def test_account_detail_shows_the_kill_not_the_configured_status(admin_port: int) -> None:
    assert fengkong(admin_port, "kill", "--account", "A001").returncode == 0
    out = fengkong(admin_port, "status", "--account", "A001")
    assert out.returncode == 0, out.stderr
    status_row = next(line for line in out.stdout.splitlines() if "│ status" in line)
    assert "KILLED" in status_row and "ACTIVE" not in status_row
    assert "…" not in out.stdout
