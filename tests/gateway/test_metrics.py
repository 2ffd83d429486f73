"""``/metrics``, ``/healthz`` and ``/readyz`` on the admin port, with real processes.

The simulator, a ``LinkProxy`` the test can cut (the exchange link drops as if the exchange
dropped it), and a journaled gateway whose ``[metrics] max_accounts`` is 2 — so the per-account
series show their cardinality bound. Scrapes are parsed with Prometheus' own text parser.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from simulator.client import Client
from tests.conftest import EXAMPLES, start_exchange, start_gateway
from tests.gateway.link_proxy import LinkProxy

T = 15.0  # generous timeouts for a loaded machine (never asserted on)
VIEWER = "demo-viewer-token"


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=T) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` (a viewer's token), keyed by (name, sorted labels)."""
    status, text = _get(port, "/metrics", VIEWER)
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class Rig:
    async def start(self, tmp: Path) -> Rig:
        self.ex = start_exchange()
        self.proxy = LinkProxy(int(self.ex.match.group(1)))
        await self.proxy.start()
        config = tmp / "gateway.toml"
        config.write_text((EXAMPLES / "gateway.toml").read_text().replace(
            'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"')
            + "\n[metrics]\nmax_accounts = 2\n")

        def start() -> Any:  # in a thread: the proxy runs on this loop
            gw = start_gateway(self.proxy.port, "--journal", str(tmp / "journal"),
                               config=config)
            gw.wait_for("exchange link up", T)
            return gw

        self.gw = await asyncio.to_thread(start)
        self.port, self.admin = int(self.gw.match.group(1)), int(self.gw.match.group(2))
        return self

    async def link(self, state: str) -> None:
        """Until the link is ``state``: the admin plane answers when it changes (no polling)."""
        status, body = await asyncio.to_thread(
            _get, self.admin, f"/v1/link?wait={state}&timeout_s={T - 5}", VIEWER)
        assert status == 200 and json.loads(body)["exchange_link"] == state, body

    async def stop(self) -> None:
        await asyncio.to_thread(self.gw.stop)
        await self.proxy.close()
        self.ex.stop()


async def test_metrics_health_and_readiness_with_a_known_flow_and_a_link_drop(tmp_path):
    rig = await Rig().start(tmp_path)
    try:
        _health_endpoints_are_read_only(rig.admin)
        await _known_flow(rig)
        await _readiness_follows_the_link(rig)
    finally:
        await rig.stop()


async def _known_flow(rig: Rig) -> None:
    before = scrape(rig.admin)
    assert value(before, "fengkong_exchange_link_up") == 1
    c = await Client.connect("127.0.0.1", rig.port, "algo1", "algo-secret")
    # One resting order, cancelled; one refused (off the tick grid); a crossing pair that fills.
    rest = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    await rest.acked(timeout=T)
    bad = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.5, qty=1)
    assert (await bad.wait_done(timeout=T)).reason == Reason.PRICE_NOT_ON_TICK
    await c.cancel(rest.cl_ord_id)
    assert (await rest.wait_done(timeout=T)).status == OrdStatus.CANCELED
    buy = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0, qty=2)
    await buy.acked(timeout=T)
    sell = await c.send_order(account="A004", symbol="rb2605", side=Side.SELL, price=3200.0, qty=2)
    assert (await sell.wait_done(timeout=T)).status == OrdStatus.FILLED
    assert (await buy.wait_done(timeout=T)).status == OrdStatus.FILLED
    after = scrape(rig.admin)
    assert moved(before, after, "fengkong_orders_total") == 4
    assert moved(before, after, "fengkong_orders_accepted_total") == 3
    assert moved(before, after, "fengkong_orders_rejected_total") == 1
    assert moved(before, after, "fengkong_rejects_total", code=str(int(Reason.PRICE_NOT_ON_TICK)),
                 reason="PRICE_NOT_ON_TICK") == 1
    assert moved(before, after, "fengkong_cancels_total") == 1
    assert moved(before, after, "fengkong_fills_total") == 2
    assert value(after, "fengkong_working_orders") == 0
    assert value(after, "fengkong_sessions") == 1
    # Three acknowledgements, each with its round trip; journal writes timed.
    assert moved(before, after, "fengkong_order_ack_rtt_seconds_count") == 3
    assert value(after, "fengkong_order_ack_rtt_seconds_bucket", le="+Inf") == \
        value(after, "fengkong_order_ack_rtt_seconds_count")
    assert moved(before, after, "fengkong_journal_append_seconds_count") > 0
    assert value(after, "fengkong_journal_writable") == 1
    # Per-account series: at most max_accounts (2) named, the busiest first, the rest "other".
    accounts = {dict(k[1])["account"] for k in after if k[0] == "fengkong_account_open_orders"}
    assert accounts == {"A001", "A004", "other"}, accounts
    # A001: two orders that reached the exchange and one cancel (the refused order did not).
    assert value(after, "fengkong_account_messages_today", account="A001") == 3
    await c.close()


async def _readiness_follows_the_link(rig: Rig) -> None:
    status, body = _get(rig.admin, "/healthz")
    assert status == 200 and json.loads(body)["alive"] is True
    status, body = _get(rig.admin, "/readyz")
    assert (status, json.loads(body)["ready"]) == (200, True), body
    await rig.proxy.cut()  # the exchange side drops the link (and refuses reconnects)
    await rig.link("down")
    status, body = _get(rig.admin, "/readyz")
    ready = json.loads(body)
    assert status == 503 and ready["ready"] is False, body
    assert [r["check"] for r in ready["reasons"]] == ["exchange_link"]
    assert value(scrape(rig.admin), "fengkong_exchange_link_up") == 0
    await rig.proxy.restore()
    await rig.link("up")  # up only once logged on and reconciled
    status, body = _get(rig.admin, "/readyz")
    assert (status, json.loads(body)["ready"]) == (200, True), body
    samples = scrape(rig.admin)
    assert value(samples, "fengkong_exchange_link_connects_total") == 2
    assert value(samples, "fengkong_exchange_link_state", state="up") == 1


def _health_endpoints_are_read_only(admin: int) -> None:
    # /metrics names accounts and funds: an operator's token ([metrics] require_token).
    assert _get(admin, "/metrics")[0] == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _get(admin, path, VIEWER if path == "/metrics" else None)[0] == 200, path
        req = urllib.request.Request(f"http://127.0.0.1:{admin}{path}", method="POST", data=b"{}")
        try:
            urllib.request.urlopen(req, timeout=T)
            raise AssertionError(f"POST {path} was accepted")
        except urllib.error.HTTPError as err:
            assert err.code == 405, (path, err.code)
    assert _get(admin, "/v1/status")[0] == 401  # the rest of the admin plane, as ever
