"""End to end, with real processes: simulator exchange + gateway + the client library.

Every test starts its own exchange and gateway (``tests/conftest.py``) on free loopback ports,
so no test sees another's orders, and tears both down afterwards.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import urllib.request

import msgspec
import pytest

from checks.enums import ExecType, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.protocol import FrameDecoder, Logout
from simulator.client import Client, LogonRejected
from tests.conftest import ROOT, Proc, start_exchange, start_gateway

RISK_TOKEN, ADMIN_TOKEN, VIEWER_TOKEN = "demo-risk-token", "demo-admin-token", "demo-viewer-token"
T = 10.0  # seconds: generous timeouts for a loaded 2-core CI machine (never asserted on)


def ports(gw: Proc) -> tuple[int, int]:
    return int(gw.match.group(1)), int(gw.match.group(2))


async def connect(gw: Proc, user: str = "algo1", secret: str = "algo-secret", **kw) -> Client:
    return await Client.connect("127.0.0.1", ports(gw)[0], user, secret, **kw)


def admin(gw: Proc, method: str, path: str, body: dict | None = None,
          token: str = RISK_TOKEN) -> tuple[int, dict | list]:
    req = urllib.request.Request(f"http://127.0.0.1:{ports(gw)[1]}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=T) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def fengkong(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={"PYTHONPATH": str(ROOT)})
    out, _ = await asyncio.wait_for(proc.communicate(), T * 3)
    return proc.returncode or 0, out.decode()


async def test_accept_path_to_a_fill(gateway_proc):
    c = await connect(gateway_proc)
    buy = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0, qty=2)
    assert (await buy.acked(timeout=T)).status == OrdStatus.NEW
    sell = await c.send_order(account="A004", symbol="rb2605", side=Side.SELL, price=3200.0, qty=2)
    done = await sell.wait_done(timeout=T)
    assert done.status == OrdStatus.FILLED and done.cum_qty == 2 and done.last_px == 3200.0
    assert (await buy.wait_done(timeout=T)).status == OrdStatus.FILLED
    status, view = admin(gateway_proc, "GET", "/v1/accounts/A001", token=VIEWER_TOKEN)
    assert status == 200
    assert view["positions"]["rb2605"]["long_td"] == 2
    assert view["frozen_margin"] == 0 and view["open_orders"] == 0
    await c.close()


REJECTIONS = [
    (dict(account="A001", symbol="rb2605", side=Side.BUY, price=3200.5, qty=1), Reason.PRICE_NOT_ON_TICK),
    (dict(account="A001", symbol="rb2605", side=Side.BUY, price=3380.0, qty=1), Reason.PRICE_OUTSIDE_COLLAR),
    (dict(account="A001", symbol="rb2605", side=Side.BUY, price=3430.0, qty=1), Reason.PRICE_ABOVE_UPPER_LIMIT),
    (dict(account="A001", symbol="rb2605", side=Side.BUY, qty=1, ord_type=OrdType.MARKET, tif=Tif.IOC),
     Reason.ORD_TYPE_NOT_ALLOWED_EXCHANGE),
    (dict(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0, qty=501), Reason.QTY_ABOVE_MAX),
    (dict(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0, qty=0), Reason.INVALID_QTY),
    (dict(account="A001", symbol="rb2605", side=9, price=3200.0, qty=1), Reason.INVALID_FIELD),
    (dict(account="A001", symbol="zz9999", side=Side.BUY, price=3200.0, qty=1), Reason.UNKNOWN_INSTRUMENT),
    (dict(account="A002", symbol="m2605", side=Side.BUY, price=2900.0, qty=1), Reason.ACCOUNT_CLOSE_ONLY),
    (dict(account="A004", symbol="rb2605", side=Side.SELL, offset=Offset.CLOSE, price=3200.0, qty=1),
     Reason.INSUFFICIENT_POSITION),
    (dict(account="A003", symbol="rb2605", side=Side.BUY, price=3200.0, qty=1), Reason.ACCOUNT_NOT_PERMITTED),
    (dict(account="A004", symbol="au2606", side=Side.BUY, price=640.0, qty=50), Reason.INSUFFICIENT_FUNDS),
]


async def test_every_class_of_rejection_reaches_the_client_with_its_reason(gateway_proc):
    c = await connect(gateway_proc)
    for kwargs, reason in REJECTIONS:
        report = await (await c.send_order(**kwargs)).wait_done(timeout=T)
        assert (report.status, report.reason) == (OrdStatus.REJECTED, reason), (kwargs, report.text)
        assert report.text.startswith(Reason(reason).description)
    # self-trade inside one account group, then a duplicate cl_ord_id
    rest = await c.send_order(account="A004", symbol="SR605", side=Side.SELL, price=5610.0, qty=3)
    await rest.acked(timeout=T)
    cross = await c.send_order(account="A005", symbol="SR605", side=Side.BUY, price=5612.0, qty=3)
    assert (await cross.wait_done(timeout=T)).reason == Reason.SELF_TRADE
    dup = c.send_order_nowait(account="A001", symbol="rb2605", side=Side.BUY, price=3199.0, qty=1,
                              cl_ord_id=cross.cl_ord_id)
    assert (await dup.wait_done(timeout=T)).reason == Reason.DUPLICATE_CL_ORD_ID
    # a manual (unregistered) user trading its own account is fine; the gateway stayed up
    m = await connect(gateway_proc, "manual1", "manual-secret")
    ok = await m.send_order(account="A003", symbol="rb2605", side=Side.BUY, price=3200.0, qty=1)
    assert (await ok.acked(timeout=T)).status == OrdStatus.NEW
    await m.close()
    await c.close()


async def test_kill_by_account_cancels_resting_orders_at_the_exchange_and_reset_restores(gateway_proc):
    c = await connect(gateway_proc)
    resting = [await c.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                  price=3190.0 + n, qty=1) for n in range(3)]
    other = await c.send_order(account="A004", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    for h in [*resting, other]:
        await h.acked(timeout=T)
    admin_url = f"http://127.0.0.1:{ports(gateway_proc)[1]}"
    code, out = await fengkong("kill", "--account", "A001", "--reason", "runaway algo",
                               "--admin", admin_url, "--token", RISK_TOKEN)
    assert code == 0, out
    assert "3 cancels sent" in out
    for h in resting:  # CANCELED reports come from the exchange: the cancels reached it
        assert (await h.wait_done(timeout=T)).status == OrdStatus.CANCELED
    blocked = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    assert (await blocked.wait_done(timeout=T)).reason == Reason.KILLED_ACCOUNT
    # cancels are never blocked by a kill; other accounts trade on
    await c.cancel(other.cl_ord_id)
    assert (await other.wait_done(timeout=T)).status == OrdStatus.CANCELED
    code, out = await fengkong("status", "--admin", admin_url, "--token", VIEWER_TOKEN)
    assert code == 0 and "account" in out and "A001" in out, out
    code, out = await fengkong("reset", "--account", "A001", "--reason", "fixed",
                               "--admin", admin_url, "--token", RISK_TOKEN)
    assert code == 0, out
    again = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    assert (await again.acked(timeout=T)).status == OrdStatus.NEW
    await c.close()


async def test_cancel_on_disconnect_cancels_the_dropped_sessions_orders(gateway_proc):
    watcher = await connect(gateway_proc)  # a second session of the same user
    dropped = await connect(gateway_proc, cancel_on_disconnect=True)
    h = await dropped.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
    await h.acked(timeout=T)
    dropped.abort()
    report = await watcher.next_report(timeout=T)  # the owner is gone: its user's session hears
    assert (report.cl_ord_id, report.status) == (h.cl_ord_id, OrdStatus.CANCELED)
    _, orders = admin(gateway_proc, "GET", "/v1/orders", token=VIEWER_TOKEN)
    assert orders == []
    await watcher.close()


async def test_orders_belong_to_the_user_not_the_connection(gateway_proc):
    a = await connect(gateway_proc)
    b = await connect(gateway_proc)  # the same user on another connection manages them
    other = await connect(gateway_proc, "manual1", "manual-secret")  # another user may not
    h = await a.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
    await h.acked(timeout=T)
    await other.cancel(h.cl_ord_id, account="A001")
    reject = await other.next_report(timeout=T)
    assert reject.reason == Reason.UNKNOWN_ORDER  # says nothing of another user's order
    assert h.status == OrdStatus.NEW  # untouched
    await b.cancel(h.cl_ord_id, account="A001")
    report = await h.wait_done(timeout=T)  # the placing session still hears its order
    assert report.status == OrdStatus.CANCELED
    await other.close()
    await a.close()
    await b.close()


async def test_auth_failure_then_lockout(gateway_proc):
    with pytest.raises(LogonRejected) as err:
        await connect(gateway_proc, secret="wrong")
    assert err.value.reason == Reason.AUTH_FAILED
    with pytest.raises(LogonRejected) as err:
        await connect(gateway_proc, user="nobody", secret="x")
    assert err.value.reason == Reason.AUTH_FAILED
    reasons = []
    for _ in range(4):
        with pytest.raises(LogonRejected) as err:
            await connect(gateway_proc, secret="wrong")
        reasons.append(err.value.reason)
    assert reasons[-1] == Reason.LOCKED_OUT
    with pytest.raises(LogonRejected) as err:  # even the right secret, while locked out
        await connect(gateway_proc)
    assert err.value.reason == Reason.LOCKED_OUT
    m = await connect(gateway_proc, "manual1", "manual-secret")  # other users are unaffected
    await m.close()


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x05hello",                        # not msgpack
    struct.pack(">I", 10_000_000),                    # oversize length
    struct.pack(">I", 7) + b"\x92\xa4Nope\x01",        # unknown tag
    bytes(range(256)) * 4,                           # random bytes
    struct.pack(">I", 11) + b"\x92\xa6Logout\xa2\xff\xfe",  # a string that is not UTF-8
])
async def test_garbage_closes_only_that_session(gateway_proc, garbage):
    good = await connect(gateway_proc)
    reader, writer = await asyncio.open_connection("127.0.0.1", ports(gateway_proc)[0])
    writer.write(garbage)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), T)  # the gateway answers, then closes
    msgs = FrameDecoder().feed(data)
    assert isinstance(msgs[-1], Logout) and msgs[-1].reason == Reason.PROTOCOL_ERROR
    assert msgs[-1].text
    writer.close()
    h = await good.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
    assert (await h.acked(timeout=T)).status == OrdStatus.NEW
    await good.close()


async def test_admin_plane_requires_tokens_and_roles(gateway_proc):
    assert admin(gateway_proc, "GET", "/v1/status", token="")[0] == 401
    assert admin(gateway_proc, "GET", "/v1/status", token="forged")[0] == 401
    code, body = admin(gateway_proc, "POST", "/v1/kill", {"scope": "firm"}, token=VIEWER_TOKEN)
    assert code == 403 and "risk" in body["error"]
    code, body = admin(gateway_proc, "GET", "/v1/status", token=VIEWER_TOKEN)
    assert code == 200 and body["exchange_link"] == "up"
    code, body = admin(gateway_proc, "POST", "/v1/kill", {"scope": "planet", "key": "x"})
    assert code == 400 or code == 404
    # loosening a limit needs the admin role, and (sessions always open here) an emergency
    code, body = admin(gateway_proc, "POST", "/v1/accounts/A001/limits",
                       {"limits": {"max_order_qty": 900}})
    assert code == 403
    code, body = admin(gateway_proc, "POST", "/v1/accounts/A001/limits",
                       {"limits": {"max_order_qty": 900}}, token=ADMIN_TOKEN)
    assert code == 409 and "emergency" in body["error"]
    code, body = admin(gateway_proc, "POST", "/v1/accounts/A001/limits",
                       {"limits": {"max_order_qty": 900}, "emergency": True, "reason": "client call"},
                       token=ADMIN_TOKEN)
    assert code == 200 and body["looser"] == ["max_order_qty"]
    code, body = admin(gateway_proc, "POST", "/v1/accounts/A001/limits",
                       {"limits": {"max_order_qty": 2}})  # tightening: risk role, any time
    assert code == 200 and body["looser"] == []
    c = await connect(gateway_proc)
    h = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=3)
    assert (await h.wait_done(timeout=T)).reason == Reason.QTY_ABOVE_ACCOUNT_MAX
    await c.close()


async def test_exchange_link_loss_and_reconnect_reconciles():
    from tests.conftest import free_port

    port = free_port()
    ex = start_exchange(port)
    gw = start_gateway(port)
    try:
        gw.wait_for("exchange link up")
        c = await connect(gw)
        h = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
        await h.acked(timeout=T)
        ex.kill9()  # the exchange dies with our order on its book
        alert = await c.next_alert(timeout=T)
        assert alert.code == Reason.LINK_STATUS and "lost" in alert.text
        refused = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3194.0, qty=1)
        assert (await refused.wait_done(timeout=T)).reason == Reason.EXCHANGE_UNAVAILABLE
        ex = start_exchange(port)  # a fresh exchange: it has never heard of our order
        gw.wait_for("exchange link back|exchange link up", T * 3)
        report = await h.wait_done(timeout=T)
        assert report.status == OrdStatus.CANCELED and "no record" in report.text
        _, view = admin(gw, "GET", "/v1/accounts/A001", token=VIEWER_TOKEN)
        assert view["frozen_margin"] == 0 and view["open_orders"] == 0
        again = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
        assert (await again.acked(timeout=T)).status == OrdStatus.NEW
        await c.close()
    finally:
        gw.stop()
        ex.stop()


def test_exec_type_and_reason_tables_are_stable():
    # Clients switch on these numbers: pin a few so a renumbering cannot slip through.
    assert (Reason.ORDER_RATE, Reason.SELF_TRADE, Reason.KILLED_ACCOUNT) == (701, 1101, 202)
    assert (ExecType.NEW, ExecType.TRADE, ExecType.CANCELED) == (2, 3, 4)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(int(Reason.EXCHANGE_UNAVAILABLE))) == 1201


async def test_sigterm_shuts_down_gracefully(exchange_proc):
    gw = start_gateway(int(exchange_proc.match.group(1)))
    gw.wait_for("exchange link up")
    c = await connect(gw)
    h = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3195.0, qty=1)
    await h.acked(timeout=T)
    assert gw.stop() == 0  # SIGTERM: stop accepting, log sessions out, flush, exit 0
    closed = await c.wait_closed(timeout=T)
    assert "shutting down" in str(closed)


def test_the_link_wait_answers_at_once_times_out_or_names_the_bad_argument(gateway_proc):
    assert admin(gateway_proc, "GET", "/v1/link?wait=up&timeout_s=5") == \
        (200, {"exchange_link": "up"})
    code, body = admin(gateway_proc, "GET", "/v1/link?wait=down&timeout_s=0.2")
    assert code == 408 and body["exchange_link"] == "up"
    for query, field in (("wait=sideways", "wait"), ("wait=up&timeout_s=nan", "timeout_s"),
                         ("wait=up&timeout_s=600", "timeout_s")):
        code, body = admin(gateway_proc, "GET", f"/v1/link?{query}")
        assert code == 400 and body["field"] == field
