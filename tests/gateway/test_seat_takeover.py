"""Two gateways, one exchange seat; two gateways, one journal — real processes on loopback.

An exchange lets a second logon take a seat over and logs the first connection out
(ALREADY_LOGGED_ON). A gateway whose link answered that by reconnecting would take the seat
back, the other would do the same, and both would flap, refusing orders at every loss. The
first gateway must see the takeover, alert once, stay down ("taken over") without fighting,
and come back only when an operator says so (``POST /v1/link/reconnect``, audited).

Waiting is always on an event (a log line, an alert, a report), never on a clock.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request

from checks.enums import AlertLevel, OrdStatus, Side
from checks.reasons import Reason
from gateway.protocol import Alert
from simulator.client import Client
from tests.conftest import EXAMPLES, ROOT, Proc, start_exchange, start_gateway

RISK_TOKEN, VIEWER_TOKEN = "demo-risk-token", "demo-viewer-token"  # examples/gateway.toml
T = 10.0  # seconds: generous timeouts for a loaded 2-core CI machine (never asserted on)


async def connect(gw: Proc) -> Client:
    return await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret")


def admin(gw: Proc, method: str, path: str, body: dict | None = None,
          token: str = RISK_TOKEN) -> tuple[int, dict | list]:
    req = urllib.request.Request(f"http://127.0.0.1:{gw.match.group(2)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=T) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def wait_line(proc: Proc, pattern: str) -> None:
    await asyncio.to_thread(proc.wait_for, pattern, T)


async def next_alert(client: Client, code: int) -> Alert:
    """The next alert with this code on the client's session (others are skipped)."""
    async def first() -> Alert:
        while True:
            alert = await client.next_alert()
            if alert.code == code:
                return alert

    return await asyncio.wait_for(first(), T)


async def cross(client: Client, price: float) -> None:
    """A buy and a sell that trade with each other through the gateway, both filled."""
    buy = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=price, qty=1)
    assert (await buy.acked(timeout=T)).status == OrdStatus.NEW, buy.last
    sell = await client.send_order(account="A004", symbol="rb2605", side=Side.SELL, price=price, qty=1)
    assert (await sell.wait_done(timeout=T)).status == OrdStatus.FILLED, sell.last
    assert (await buy.wait_done(timeout=T)).status == OrdStatus.FILLED, buy.last


def alerts(gw: Proc, code: int) -> list[dict]:
    status, got = admin(gw, "GET", "/v1/alerts", token=VIEWER_TOKEN)
    assert status == 200
    return [a for a in got if a["code"] == code]  # type: ignore[union-attr]


def link_state(gw: Proc) -> str:
    status, view = admin(gw, "GET", "/v1/status", token=VIEWER_TOKEN)
    assert status == 200
    return view["exchange_link"]  # type: ignore[index]


async def test_a_seat_taken_over_is_not_fought_for_until_an_operator_says_so() -> None:
    ex = start_exchange()
    procs = [ex]
    try:
        port = int(ex.match.group(1))
        gw1 = start_gateway(port)
        procs.append(gw1)
        await wait_line(gw1, "exchange link up")
        c1 = await connect(gw1)
        await cross(c1, 3200.0)

        gw2 = start_gateway(port, "--id", "gw2")  # same config: the same seat, GW1
        procs.append(gw2)
        await wait_line(gw2, "exchange link up")
        taken = await next_alert(c1, Reason.SEAT_TAKEN_OVER)
        assert taken.level == AlertLevel.CRITICAL and taken.scope == "firm"
        assert "taken over" in taken.text
        # The decision not to reconnect is made (and logged) once the connection is gone.
        await wait_line(gw1, "exchange link held down")
        assert link_state(gw1) == "taken over"
        refused = await c1.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                      price=3200.0, qty=1)
        assert (await refused.wait_done(timeout=T)).reason == Reason.EXCHANGE_UNAVAILABLE

        # The window: the second gateway trades, round trip after round trip, undisturbed.
        c2 = await connect(gw2)
        for n in range(5):
            await cross(c2, 3200.0 + n)
        assert link_state(gw1) == "taken over" and link_state(gw2) == "up"
        assert len(alerts(gw1, Reason.SEAT_TAKEN_OVER)) == 1  # alerted once
        assert alerts(gw1, Reason.LINK_STATUS) == []  # one event, one alert
        assert alerts(gw2, Reason.SEAT_TAKEN_OVER) == alerts(gw2, Reason.LINK_STATUS) == []
        assert not any("exchange link lost" in line for line in gw2.output)
        assert sum('"exchange link up"' in line for line in gw1.output) == 1  # never reconnected

        # Nothing to resume on a link that is up: said so, nothing changes.
        code, body = admin(gw2, "POST", "/v1/link/reconnect", {"reason": "just checking"})
        assert code == 409 and "up" in body["error"]  # type: ignore[index]
        # An operator sends the first gateway back: it takes the seat, the second stands down.
        code, body = admin(gw1, "POST", "/v1/link/reconnect", {"reason": "gw2 started by mistake"})
        assert code == 200 and body == {"ok": True, "exchange_link": "reconnecting"}
        back = await next_alert(c1, Reason.LINK_STATUS)
        assert "back" in back.text
        assert (await next_alert(c2, Reason.SEAT_TAKEN_OVER)).level == AlertLevel.CRITICAL
        await cross(c1, 3210.0)
        assert link_state(gw1) == "up"
        await wait_line(gw2, "exchange link held down")
        assert link_state(gw2) == "taken over"
        _, view = admin(gw1, "GET", "/v1/status", token=VIEWER_TOKEN)
        [audited] = [h for h in view["history"] if h["action"] == "link_reconnect"]  # type: ignore[index]
        assert (audited["operator"], audited["reason"], audited["seat"]) == \
            ("risk-officer-li", "gw2 started by mistake", "GW1")
        code, _ = admin(gw1, "POST", "/v1/link/reconnect", {}, token=VIEWER_TOKEN)
        assert code == 403  # a viewer may not move the seat
        await c1.close()
        await c2.close()
    finally:
        for p in reversed(procs):
            p.stop()


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``fengkong serve`` that is expected to stop by itself."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLES / "gateway.toml"),
         "--admin-port", "0", "--id", "gw2", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=3 * T, env={"PYTHONPATH": str(ROOT)})


def test_a_second_gateway_on_the_same_journal_exits_with_one_clear_line(tmp_path) -> None:
    ex = start_exchange()
    port = int(ex.match.group(1))
    journal = tmp_path / "journal"
    gw1 = start_gateway(port, "--journal", str(journal))
    try:
        second = serve("--port", "0", "--exchange", f"127.0.0.1:{port}", "--journal", str(journal))
        assert second.returncode != 0
        assert "Traceback" not in second.stderr + second.stdout
        assert second.stderr.strip().splitlines() == [
            f"fengkong serve: journal {journal} is already open by another writer (LOCK is held)"]
        # It never reached the exchange: the first gateway still holds the seat and trades.
        assert not any("taken over" in line for line in gw1.output)
        status, view = admin(gw1, "GET", "/v1/status", token=VIEWER_TOKEN)
        assert status == 200 and view["exchange_link"] == "up"  # type: ignore[index]
    finally:
        gw1.stop()
        ex.stop()


def test_a_client_port_in_use_exits_with_one_clear_line() -> None:
    ex = start_exchange()
    port = int(ex.match.group(1))
    gw1 = start_gateway(port)
    try:
        taken = gw1.match.group(1)
        second = serve("--port", taken, "--exchange", f"127.0.0.1:{port}")
        assert second.returncode != 0
        assert "Traceback" not in second.stderr + second.stdout
        [line] = second.stderr.strip().splitlines()
        assert line.startswith("fengkong serve: ") and taken in line and "in use" in line
    finally:
        gw1.stop()
        ex.stop()
