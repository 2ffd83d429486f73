"""Link loss and restarts with real processes (issue 9, items 1, 4 and 5).

A gateway process reaches the simulator through ``LinkProxy``, which the test cuts and
restores; a counterparty member connects to the simulator directly, so the gateway's resting
orders fill *while its link is down*. Then the gateway may be killed with SIGKILL and
restarted on its journal. What must hold: fills learnt at reconciliation are booked once
(also after the restart), cancels requested during the outage reach the exchange once it is
back, and a user's orders stay manageable from its next connection and after a restart.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from checks.config import load_risk_config
from checks.enums import OrdStatus, Side
from simulator.client import Client
from tests.conftest import EXAMPLES, start_exchange, start_gateway
from tests.gateway.link_proxy import LinkProxy

T = 15.0
RISK_TOKEN = "demo-risk-token"
VIEWER_TOKEN = "demo-viewer-token"


def _admin(port: int, method: str, path: str, body: dict | None = None,
           token: str = VIEWER_TOKEN) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=T) as resp:
        return json.loads(resp.read())


def _long(admin_port: int, account: str = "A001", symbol: str = "rb2605") -> int:
    pos = _admin(admin_port, "GET", f"/v1/accounts/{account}")["positions"].get(symbol, {})
    return pos.get("long_td", 0) + pos.get("long_yd", 0)


def _initial_long(account: str = "A001", symbol: str = "rb2605") -> int:
    risk = load_risk_config(EXAMPLES / "risk.toml")
    return next((p.long for a in risk.accounts if a.id == account for p in a.positions
                 if p.symbol == symbol), 0)


class Rig:
    """Simulator, proxy, gateway (journaled) and a counterparty on the simulator."""

    async def start(self, journal_dir) -> Rig:
        self.journal_dir = journal_dir
        self.ex = start_exchange()
        self.ex_port = int(self.ex.match.group(1))
        self.proxy = LinkProxy(self.ex_port)
        await self.proxy.start()
        self.gw = None
        await self.start_gateway()
        self.cp = await Client.connect("127.0.0.1", self.ex_port, "CP", "cp", heartbeat_s=0)
        return self

    async def start_gateway(self, link_up: bool = True) -> None:
        # In a thread: waiting for its output must not stop this loop, where the proxy runs.
        def start():
            gw = start_gateway(self.proxy.port, "--journal", str(self.journal_dir))
            if link_up:
                gw.wait_for("exchange link up", T)
            return gw

        self.gw = await asyncio.to_thread(start)
        self.client_port, self.admin_port = int(self.gw.match.group(1)), int(self.gw.match.group(2))

    async def client(self, **kw: Any) -> Client:
        return await Client.connect("127.0.0.1", self.client_port, "algo1", "algo-secret", **kw)

    async def outage(self) -> None:
        await self.proxy.cut()
        await self.link("down")

    async def back(self) -> None:
        await self.proxy.restore()
        await self.link("up")

    async def link(self, state: str) -> None:
        """Until the gateway's link is ``state``: the admin plane answers when it changes."""
        answer = await asyncio.to_thread(
            _admin, self.admin_port, "GET", f"/v1/link?wait={state}&timeout_s={T - 5}")
        assert answer["exchange_link"] == state

    async def stop(self) -> None:
        await self.cp.close()
        if self.gw is not None:
            await asyncio.to_thread(self.gw.stop)
        await self.proxy.close()
        self.ex.stop()


async def test_fills_during_an_outage_are_booked_once_even_after_kill_9(tmp_path):
    rig = await Rig().start(tmp_path / "journal")
    try:
        before = _long(rig.admin_port)
        algo = await rig.client(cancel_on_disconnect=False)
        h = await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0,
                                  qty=5)
        await h.acked(timeout=T)
        await rig.outage()
        sell = await rig.cp.send_order(account="A003", symbol="rb2605", side=Side.SELL,
                                       price=3200.0, qty=2)
        await sell.wait_status(OrdStatus.FILLED, timeout=T)  # traded against ours, link down
        await rig.back()
        report = await h.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=T)
        assert (report.cum_qty, report.leaves_qty) == (2, 3) and report.exec_id
        assert _long(rig.admin_port) == before + 2
        rig.gw.kill9()
        algo.abort()
        await rig.start_gateway()  # the same journal, the same seat
        assert _long(rig.admin_port) == before + 2 == _initial_long() + 2
        [order] = _admin(rig.admin_port, "GET", "/v1/orders")
        assert (order["cum"], order["leaves"]) == (2, 3)
        # A second reconnect says the same executions again: still booked once.
        await rig.outage()
        await rig.back()
        assert _long(rig.admin_port) == before + 2
    finally:
        await rig.stop()


async def test_a_kill_during_an_outage_cancels_at_the_exchange_once_the_link_is_back(tmp_path):
    rig = await Rig().start(tmp_path / "journal")
    try:
        algo = await rig.client(cancel_on_disconnect=False)
        h = await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0,
                                  qty=3)
        await h.acked(timeout=T)
        await rig.outage()
        result = _admin(rig.admin_port, "POST", "/v1/kill",
                        {"scope": "account", "key": "A001", "reason": "runaway"}, RISK_TOKEN)
        assert (result["cancels_sent"], result["cancels_pending"]) == (0, 1)
        assert _admin(rig.admin_port, "GET", "/v1/status")["cancels_pending"] == 1
        # Killed -9 before the link is back: the held cancel must survive the restart.
        rig.gw.kill9()
        algo.abort()
        await rig.start_gateway(link_up=False)  # the outage goes on over the restart
        algo = await rig.client(cancel_on_disconnect=False)  # takes the recovered order over
        await rig.back()
        report = await algo.next_report(timeout=T)  # the exchange's answer to the held cancel
        assert (report.cl_ord_id, report.status) == (h.cl_ord_id, OrdStatus.CANCELED)
        assert _admin(rig.admin_port, "GET", "/v1/orders") == []
        # The exchange's truth: a crossing sell finds nothing of ours resting.
        sell = await rig.cp.send_order(account="A003", symbol="rb2605", side=Side.SELL,
                                       price=3200.0, qty=3)
        await sell.acked(timeout=T)
        assert sell.cum_qty == 0 and sell.status == OrdStatus.NEW
        await algo.close()
    finally:
        await rig.stop()


async def test_a_reconnected_client_manages_its_orders_before_and_after_a_restart(tmp_path):
    rig = await Rig().start(tmp_path / "journal")
    try:
        first = await rig.client(cancel_on_disconnect=False)
        a = await first.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0,
                                   qty=1)
        b = await first.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3199.0,
                                   qty=1)
        await a.acked(timeout=T)
        await b.acked(timeout=T)
        first.abort()
        second = await rig.client(cancel_on_disconnect=False)
        status = await second.request_status(timeout=T)
        assert {r.cl_ord_id for r in status} == {a.cl_ord_id, b.cl_ord_id}
        await second.cancel(a.cl_ord_id, account="A001")  # not 1203 UNKNOWN_ORDER
        assert (await second.order(a.cl_ord_id).wait_done(timeout=T)).status == OrdStatus.CANCELED
        # After a restart the user's next connection manages what is left, and its
        # cancel-on-disconnect covers it. (Had the connection open at the crash asked for
        # cancel-on-disconnect, the restart itself would have cancelled b: the crash
        # disconnected it — tests/gateway/test_router_faults.py pins that.)
        rig.gw.kill9()
        second.abort()
        await rig.start_gateway()
        third = await rig.client(cancel_on_disconnect=True)
        status = await third.request_status(timeout=T)
        assert [r.cl_ord_id for r in status] == [b.cl_ord_id]
        watcher = await rig.client(cancel_on_disconnect=False)  # the user's other session
        third.abort()  # drops: its cancel-on-disconnect cancels the adopted order
        report = await watcher.next_report(timeout=T)  # ...and the heir hears how it ended
        assert (report.cl_ord_id, report.status) == (b.cl_ord_id, OrdStatus.CANCELED)
        assert _admin(rig.admin_port, "GET", "/v1/orders") == []
        await watcher.close()
    finally:
        await rig.stop()
