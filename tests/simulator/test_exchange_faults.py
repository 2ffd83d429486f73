"""Fault injection and the latency model, over real TCP: reject, delay, drop, stop acknowledging."""

from __future__ import annotations

import random

import pytest
from sim_wire import RawConnection

from checks.enums import ExecType, OrdStatus, Side, Tif
from checks.model import RiskConfig
from checks.reasons import Reason
from gateway.protocol import ExecReport, Heartbeat, NewOrder
from simulator.client import Client, ConnectionClosed, OrderHandle
from simulator.config import FaultPlan, LatencyModel
from simulator.exchange import ExchangeServer, serve_exchange

BUY = Side.BUY


async def connect(server: ExchangeServer, user: str) -> Client:
    return await Client.connect("127.0.0.1", server.port, user, "")


def buy(client: Client, i: int) -> OrderHandle:
    return client.send_order_nowait(account="A001", symbol="m2605", side=BUY, price=2800 + i % 50, qty=1)


async def test_reject_fraction_is_seeded_and_reproducible(risk: RiskConfig) -> None:
    server = await serve_exchange(risk, md_interval_s=0, faults=FaultPlan(reject_fraction=0.3, seed=7))
    try:
        client = await connect(server, "u")
        handles = [buy(client, i) for i in range(200)]
        for h in handles:
            await h.acked(5)
        rng = random.Random(7)
        expected = [rng.random() < 0.3 for _ in handles]
        got = [h.status == OrdStatus.REJECTED for h in handles]
        assert got == expected
        rejected = [h for h in handles if h.status == OrdStatus.REJECTED]
        assert all(h.reason == Reason.EXCHANGE_REJECT and "fault injection" in h.last.text
                   for h in rejected)
        assert server.stats.injected_rejects == sum(expected)
    finally:
        await server.close()


async def test_faults_change_at_run_time_and_can_target_one_seat(exchange: ExchangeServer) -> None:
    a, b = await connect(exchange, "a"), await connect(exchange, "b")
    assert (await buy(a, 0).acked(5)).status == OrdStatus.NEW
    exchange.set_faults(FaultPlan(reject_fraction=1.0, users=["a"]))
    assert (await buy(a, 1).acked(5)).status == OrdStatus.REJECTED
    assert (await buy(b, 1).acked(5)).status == OrdStatus.NEW  # not a target of the plan
    exchange.set_faults(FaultPlan())
    assert (await buy(a, 2).acked(5)).status == OrdStatus.NEW


async def test_silent_exchange_swallows_orders_and_cancels_but_answers_heartbeats(
        exchange: ExchangeServer) -> None:
    raw = await RawConnection.open(exchange.port, "quiet")
    raw.send(NewOrder("before", "A001", "m2605", 1, 1, 1, 1, 1, 2800.0, 1))
    assert (await raw.recv()).status == OrdStatus.NEW
    exchange.set_faults(FaultPlan(silent=True))
    raw.send(NewOrder("swallowed", "A001", "m2605", 1, 1, 1, 1, 1, 2800.0, 1))
    raw.send(Heartbeat(5))
    # Messages are handled in order, so the heartbeat answer proves the order was swallowed.
    assert isinstance(await raw.recv(), Heartbeat)
    assert exchange.stats.swallowed == 1
    exchange.set_faults(FaultPlan())
    raw.send(NewOrder("after", "A001", "m2605", 1, 1, 1, 1, 1, 2800.0, 1))
    rep = await raw.recv()
    assert isinstance(rep, ExecReport) and rep.cl_ord_id == "after"


async def test_drop_after_n_messages(exchange: ExchangeServer) -> None:
    exchange.set_faults(FaultPlan(drop_after=3))
    client = await connect(exchange, "fragile")
    handles = [buy(client, i) for i in range(5)]
    err = await client.wait_closed(5)
    assert isinstance(err, ConnectionClosed)
    assert [h.status for h in handles[3:]] == [OrdStatus.PENDING_NEW] * 2
    exchange.set_faults(FaultPlan())
    again = await connect(exchange, "fragile")
    working = await again.request_status()
    assert len(working) == 3  # the first three reached the book before the drop


async def test_drop_on_demand(exchange: ExchangeServer) -> None:
    victim, bystander = await connect(exchange, "victim"), await connect(exchange, "bystander")
    assert exchange.drop("victim") == 1
    await victim.wait_closed(5)
    assert (await buy(bystander, 0).acked(5)).status == OrdStatus.NEW
    assert exchange.logged_on() == ["bystander"]


async def test_latency_model_keeps_report_order(risk: RiskConfig) -> None:
    latency = LatencyModel(entry_ms=1.0, ack_ms=3.0, fill_ms=0.0, cancel_ms=2.0)
    server = await serve_exchange(risk, md_interval_s=0, latency=latency)
    try:
        maker, taker = await connect(server, "maker"), await connect(server, "taker")
        asks = [maker.send_order_nowait(account="A001", symbol="m2605", side=Side.SELL,
                                        price=2901 + i, qty=1) for i in range(5)]
        for h in asks:
            await h.acked(5)
        sweep = taker.send_order_nowait(account="H001", symbol="m2605", side=BUY, price=2910, qty=6,
                                        tif=Tif.IOC)
        await sweep.wait_done(5)
        seen = []
        while True:
            try:
                seen.append(await taker.next_report(0))
            except TimeoutError:
                break
        # The fill leg is faster than the ack leg, yet NEW still comes first.
        assert [r.exec_type for r in seen] == [ExecType.NEW] + [ExecType.TRADE] * 5 + [ExecType.CANCELED]
        assert [r.cum_qty for r in seen[1:6]] == [1, 2, 3, 4, 5]
    finally:
        await server.close()


async def test_extra_latency_fault_and_set_latency(exchange: ExchangeServer) -> None:
    exchange.set_latency(LatencyModel(ack_ms=1.0))
    exchange.set_faults(FaultPlan(extra_latency_ms=1.0))
    client = await connect(exchange, "slow")
    handles = [buy(client, i) for i in range(20)]
    for h in handles:
        assert (await h.acked(5)).status == OrdStatus.NEW
    status = await client.request_status()
    assert [s.cl_ord_id for s in status] == [h.cl_ord_id for h in handles]


def test_fault_plan_validation(risk: RiskConfig) -> None:
    from checks.config import ConfigError
    from simulator.config import SimConfig, check_sim_config

    with pytest.raises(ConfigError, match="reject_fraction"):
        check_sim_config(SimConfig(faults=FaultPlan(reject_fraction=1.5)))
    with pytest.raises(ConfigError, match="latency.ack_ms"):
        check_sim_config(SimConfig(latency=LatencyModel(ack_ms=-1)))
