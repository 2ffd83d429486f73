"""Runtime changes through the admin plane, with real processes (issue 10, item 3).

A body is decoded with the same types and ranges as the config file: NaN and Infinity (which
Python's ``json`` accepts), out-of-range numbers, negatives, wrong types and unknown fields get
a 400 naming the field, and nothing is applied, not even the valid half of a body. Loosening
while a session is open (the example config trades at any hour: always) needs an emergency and a
reason: a limit, returning an account to ACTIVE, confirming a programmatic registration. Every
applied change is journaled with its operator, reason and emergency flag, and a gateway killed
with SIGKILL and restarted on its journal has them all.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from gateway import journal as jr
from simulator.client import Client
from tests.conftest import Proc, start_exchange, start_gateway

T = 15.0
RISK, ADMIN, VIEWER = "demo-risk-token", "demo-admin-token", "demo-viewer-token"


def _call(gw: Proc, method: str, path: str, body: bytes | dict | None = None,
          token: str = ADMIN) -> tuple[int, Any]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(f"http://127.0.0.1:{gw.match.group(2)}{path}", method=method,
                                 data=data, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=T) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _account(gw: Proc, account: str) -> dict[str, Any]:
    code, view = _call(gw, "GET", f"/v1/accounts/{account}", token=VIEWER)
    assert code == 200, view
    return view


def _changes(gw: Proc) -> list[dict[str, Any]]:
    code, status = _call(gw, "GET", "/v1/status", token=VIEWER)
    assert code == 200
    return [h for h in status["history"] if h["action"].startswith("set_")]


EMERGENCY = b'"emergency": true, "reason": "desk call"'
BAD_LIMITS = [
    # (body of POST /v1/accounts/A001/limits, the field the 400 must name)
    (b'{"limits": {"max_notional": NaN}, ' + EMERGENCY + b'}', "limits.max_notional"),
    (b'{"limits": {"max_notional": Infinity}, ' + EMERGENCY + b'}', "limits.max_notional"),
    (b'{"limits": {"loss_limit": -Infinity}, ' + EMERGENCY + b'}', "limits.loss_limit"),
    (b'{"limits": {"max_notional": 1e999}, ' + EMERGENCY + b'}', "limits.max_notional"),
    (b'{"limits": {"max_notional": 1e300}, ' + EMERGENCY + b'}', "limits.max_notional"),
    (b'{"limits": {"max_order_qty": -5}, ' + EMERGENCY + b'}', "limits.max_order_qty"),
    (b'{"limits": {"loss_limit": -1000000.0}, ' + EMERGENCY + b'}', "limits.loss_limit"),
    (b'{"limits": {"max_order_qty": 9223372036854775808}, ' + EMERGENCY + b'}',
     "limits.max_order_qty"),
    (b'{"limits": {"max_order_qty": "900"}, ' + EMERGENCY + b'}', "limits.max_order_qty"),
    (b'{"limits": {"max_order_qty": 9.5}, ' + EMERGENCY + b'}', "limits.max_order_qty"),
    (b'{"limits": {"max_order_qty": true}, ' + EMERGENCY + b'}', "limits.max_order_qty"),
    (b'{"limits": {"warn_fraction": 1.5}, ' + EMERGENCY + b'}', "limits.warn_fraction"),
    (b'{"limits": {"max_wibble": 1}, ' + EMERGENCY + b'}', "limits.max_wibble"),
    (b'{"limits": {"max_order_qty": 900}, "emergancy": true, "reason": "typo"}', "emergancy"),
    (b'{"limits": {"max_order_qty": 900}, "emergency": "yes", "reason": "x"}', "emergency"),
    (b'{"limits": {}, ' + EMERGENCY + b'}', "limits"),
    (b'{' + EMERGENCY + b'}', "limits"),
    # half valid: the good half must not be applied either
    (b'{"limits": {"max_order_qty": 3, "loss_limit": -5}, ' + EMERGENCY + b'}',
     "limits.loss_limit"),
    (b'{"limits": {"max_order_qty": 3, "max_notional": NaN}, ' + EMERGENCY + b'}',
     "limits.max_notional"),
]


async def test_bad_limit_changes_are_refused_naming_the_field_and_change_nothing(gateway_proc):
    before = _account(gateway_proc, "A001")["limits"]
    for body, field in BAD_LIMITS:
        code, answer = _call(gateway_proc, "POST", "/v1/accounts/A001/limits", body)
        assert code == 400, (body, answer)
        assert answer["field"] == field and answer["error"].startswith(field), (body, answer)
    assert _account(gateway_proc, "A001")["limits"] == before
    assert _changes(gateway_proc) == []  # nothing journaled either
    # The limit in force is the old one: an order of 4 lots (above the refused 3) passes.
    c = await Client.connect("127.0.0.1", int(gateway_proc.match.group(1)), "algo1",
                             "algo-secret")
    h = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=4)
    assert (await h.acked(timeout=T)).status == OrdStatus.NEW
    await c.close()


@pytest.mark.parametrize("path, body, field", [
    ("/v1/kill", {"scope": "account", "key": "A001", "close_only": "no"}, "close_only"),
    ("/v1/kill", {"scope": "account", "key": "A001", "reason": "x" * 50_000}, "reason"),
    ("/v1/kill", {"scope": "account", "key": "A001", "note": "x"}, "note"),
    ("/v1/reset", {"key": "A001"}, "scope"),
    ("/v1/accounts/A002/status", {"status": "active"}, "status"),
    ("/v1/accounts/A002/status", {"status": "ACTIVE", "emergency": 1, "reason": "x"}, "emergency"),
    ("/v1/accounts/A003/programmatic", {"registration": "YES"}, "registration"),
    ("/v1/accounts/A003/programmatic", {"registration": "CONFIRMED", "by": "me"}, "by"),
])
async def test_every_change_route_checks_its_body(gateway_proc, path, body, field):
    code, answer = _call(gateway_proc, "POST", path, body)
    assert code == 400 and answer["field"] == field, answer
    _, status = _call(gateway_proc, "GET", "/v1/status", token=VIEWER)
    assert status["kills"] == [] and _changes(gateway_proc) == []
    assert _account(gateway_proc, "A002")["status"] == "CLOSE_ONLY"
    assert _account(gateway_proc, "A003")["programmatic"] == "NONE"


async def test_returning_to_active_and_confirming_a_registration_are_change_controlled(
        gateway_proc):
    # Tightening is always allowed; loosening while a session is open needs an emergency.
    code, answer = _call(gateway_proc, "POST", "/v1/accounts/A001/status",
                         {"status": "SUSPENDED", "reason": "loss review"}, token=RISK)
    assert code == 200 and answer["looser"] is False
    for path, body in (("/v1/accounts/A001/status", {"status": "ACTIVE"}),
                       ("/v1/accounts/A001/status", {"status": "CLOSE_ONLY", "reason": "x"}),
                       ("/v1/accounts/A002/status", {"status": "ACTIVE", "emergency": True}),
                       ("/v1/accounts/A003/programmatic", {"registration": "CONFIRMED"}),
                       ("/v1/accounts/A003/programmatic", {"registration": "REPORTED",
                                                           "reason": "filed"})):
        code, answer = _call(gateway_proc, "POST", path, body, token=RISK)
        assert code == 409 and "emergency" in answer["error"], (path, body, answer)
    assert _account(gateway_proc, "A001")["status"] == "SUSPENDED"
    assert _account(gateway_proc, "A002")["status"] == "CLOSE_ONLY"
    assert _account(gateway_proc, "A003")["programmatic"] == "NONE"
    code, answer = _call(gateway_proc, "POST", "/v1/accounts/A001/status",
                         {"status": "ACTIVE", "emergency": True, "reason": "review done"},
                         token=RISK)
    assert code == 200 and answer["looser"] is True
    code, answer = _call(gateway_proc, "POST", "/v1/accounts/A003/programmatic",
                         {"registration": "CONFIRMED", "emergency": True,
                          "reason": "exchange confirmed"}, token=RISK)
    assert code == 200 and answer["looser"] is True
    assert _account(gateway_proc, "A001")["status"] == "ACTIVE"
    assert _account(gateway_proc, "A003")["programmatic"] == "CONFIRMED"
    history = [(h["action"], h["key"], h["emergency"], h["reason"]) for h in _changes(gateway_proc)]
    assert history == [("set_status", "A001", False, "loss review"),
                       ("set_status", "A001", True, "review done"),
                       ("set_programmatic", "A003", True, "exchange confirmed")]


def _journaled_changes(journal_dir) -> list[jr.AdminAction]:
    first = jr.list_segments(journal_dir)[0][0]
    return [rec for _, rec in jr.JournalReader(journal_dir, first)
            if type(rec) is jr.AdminAction and rec.action.startswith("set_")]


async def test_an_emergency_change_is_journaled_as_one_and_survives_kill_9(tmp_path):
    journal = tmp_path / "journal"
    ex = start_exchange()
    ex_port = int(ex.match.group(1))
    gw = start_gateway(ex_port, "--journal", str(journal))
    try:
        gw.wait_for("exchange link up", T)
        code, answer = _call(gw, "POST", "/v1/accounts/A001/limits",
                             {"limits": {"max_orders_per_sec": 200, "max_order_qty": 300},
                              "emergency": True, "reason": "client block trade"})
        assert code == 200 and answer["looser"] == ["max_orders_per_sec"]
        code, _ = _call(gw, "POST", "/v1/accounts/A004/status",
                        {"status": "CLOSE_ONLY", "reason": "margin call"}, token=RISK)
        assert code == 200
        code, _ = _call(gw, "POST", "/v1/accounts/A002/status",
                        {"status": "ACTIVE", "emergency": True, "reason": "cleared"}, token=RISK)
        assert code == 200
        code, _ = _call(gw, "POST", "/v1/accounts/A003/programmatic",
                        {"registration": "REPORTED", "emergency": True, "reason": "filed"},
                        token=RISK)
        assert code == 200
        gw.kill9()
        recorded = [(r.operator, r.action, r.scope_value, r.reason, r.emergency, r.args)
                    for r in _journaled_changes(journal)]
        assert recorded == [
            ("admin-wang", "set_limits", "A001", "client block trade", True,
             {"changes": {"max_orders_per_sec": 200, "max_order_qty": 300},
              "looser": ["max_orders_per_sec"]}),
            ("risk-officer-li", "set_status", "A004", "margin call", False,
             {"status": "CLOSE_ONLY"}),
            ("risk-officer-li", "set_status", "A002", "cleared", True, {"status": "ACTIVE"}),
            ("risk-officer-li", "set_programmatic", "A003", "filed", True,
             {"registration": "REPORTED"}),
        ]
        gw = start_gateway(ex_port, "--journal", str(journal))
        gw.wait_for("exchange link up", T)
        a001 = _account(gw, "A001")
        assert (a001["limits"]["max_orders_per_sec"], a001["limits"]["max_order_qty"]) == \
            (200, 300)
        assert _account(gw, "A004")["status"] == "CLOSE_ONLY"
        assert _account(gw, "A002")["status"] == "ACTIVE"
        assert _account(gw, "A003")["programmatic"] == "REPORTED"
        # ... and the engine enforces what was replayed, not the configuration.
        c = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret")
        big = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0,
                                 qty=301)  # within the configured 500, above the new 300
        assert (await big.wait_done(timeout=T)).reason == Reason.QTY_ABOVE_ACCOUNT_MAX
        opening = await c.send_order(account="A004", symbol="rb2605", side=Side.BUY,
                                     price=3195.0, qty=1)
        assert (await opening.wait_done(timeout=T)).reason == Reason.ACCOUNT_CLOSE_ONLY
        await c.close()
    finally:
        gw.stop()
        ex.stop()
