"""The exchange over real TCP on 127.0.0.1: seats, routing, status, bad frames, market data."""

from __future__ import annotations

import asyncio
import struct

import msgspec
import pytest
from sim_wire import RawConnection

from checks.enums import ExecType, OrdStatus, Side, Tif
from checks.model import RiskConfig
from checks.reasons import Reason
from gateway.protocol import (
    ExecReport,
    Heartbeat,
    Logout,
    MarketData,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
    encode,
)
from simulator.client import Client, ConnectionClosed, LogonRejected
from simulator.config import Member
from simulator.exchange import ExchangeServer, serve_exchange

BUY, SELL = Side.BUY, Side.SELL


async def connect(server: ExchangeServer, user: str, **kw: object) -> Client:
    return await Client.connect("127.0.0.1", server.port, user, "pw", **kw)  # type: ignore[arg-type]


async def test_several_members_trade_and_reports_go_to_the_owner_only(exchange: ExchangeServer) -> None:
    a, b, c = [await connect(exchange, u) for u in ("seat-a", "seat-b", "seat-c")]
    sell = await a.send_order(account="A001", symbol="m2605", side=SELL, price=2905, qty=5)
    await sell.acked(5)
    buy = await b.send_order(account="H001", symbol="m2605", side=BUY, price=2905, qty=3)
    assert (await buy.wait_done(5)).status == OrdStatus.FILLED
    part = await sell.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=5)
    assert (part.last_qty, part.last_px, part.cum_qty) == (3, 2905.0, 3)
    # A status round trip is a barrier: whatever the server sent a seat before its answer
    # has arrived by then. Each seat holds exactly the reports of its own orders.
    for seat, mine, count in ((a, sell, 2), (b, buy, 2), (c, None, 0)):
        await seat.request_status()
        ids = [(await seat.next_report(0)).cl_ord_id for _ in range(count)]
        assert ids == ([mine.cl_ord_id] * count if mine else [])
        with pytest.raises(TimeoutError):
            await seat.next_report(0)
    for cl in (a, b, c):
        await cl.close()


async def test_market_data_on_logon_and_after_trades_to_every_seat(exchange: ExchangeServer) -> None:
    got: list[MarketData] = []
    watcher = await connect(exchange, "watcher", on_market_data=got.append)
    assert {m.symbol for m in got} >= {"rb2605", "m2605", "IF2612"}  # snapshot after LogonAck
    assert watcher.quotes["IF2612"].upper_limit == 4290.0
    traded = asyncio.Event()
    watcher.on_market_data = lambda md: traded.set() if md.last_px == 3899.8 else None
    a, b = await connect(exchange, "a"), await connect(exchange, "b")
    await (await a.send_order(account="A001", symbol="IF2612", side=SELL, price=3899.8, qty=1)).acked(5)
    await (await b.send_order(account="H001", symbol="IF2612", side=BUY, price=3900.0, qty=1)).wait_done(5)
    await asyncio.wait_for(traded.wait(), 5)
    assert watcher.quotes["IF2612"].last_px == 3899.8


async def test_periodic_market_data(risk: RiskConfig) -> None:
    server = await serve_exchange(risk, md_interval_s=0.01)
    try:
        ticks = asyncio.Event()
        seen: list[MarketData] = []

        def on_md(md: MarketData) -> None:
            seen.append(md)
            if len(seen) > 3 * len(risk.instruments):  # snapshot + at least two intervals
                ticks.set()

        client = await connect(server, "md", on_market_data=on_md)
        await asyncio.wait_for(ticks.wait(), 5)
        await client.close()
    finally:
        await server.close()


async def test_order_status_request_lists_working_orders(exchange: ExchangeServer) -> None:
    a, b = await connect(exchange, "a"), await connect(exchange, "b")
    r1 = await a.send_order(account="A001", symbol="m2605", side=BUY, price=2890, qty=4)
    r2 = await a.send_order(account="A004", symbol="rb2605", side=SELL, price=3210, qty=2)
    gone = await a.send_order(account="A001", symbol="m2605", side=BUY, price=2880, qty=1, tif=Tif.IOC)
    await gone.wait_done(5)
    await (await b.send_order(account="H001", symbol="m2605", side=SELL, price=2890, qty=1)).wait_done(5)
    await r1.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=5)
    status = await a.request_status()
    assert [s.cl_ord_id for s in status] == [r1.cl_ord_id, r2.cl_ord_id]
    s1 = status[0]
    assert (s1.exec_type, s1.status, s1.cum_qty, s1.leaves_qty, s1.side, s1.price, s1.qty) == \
        (ExecType.STATUS, OrdStatus.PARTIALLY_FILLED, 1, 3, BUY, 2890.0, 4)
    assert [s.cl_ord_id for s in await a.request_status("A004")] == [r2.cl_ord_id]
    assert await b.request_status() == []
    raw = await RawConnection.open(exchange.port, "b")  # takes b's seat over
    raw.send(OrderStatusRequest("q1"))
    assert await raw.recv() == OrderStatusEnd("q1", 0)


async def test_orders_survive_a_disconnect_and_reach_the_reconnected_seat(exchange: ExchangeServer) -> None:
    a = await connect(exchange, "seat-a")
    resting = await a.send_order(account="A001", symbol="m2605", side=SELL, price=2910, qty=5,
                                 cl_ord_id="keep-1")
    await resting.acked(5)
    a.abort()
    b = await connect(exchange, "seat-b")
    await (await b.send_order(account="H001", symbol="m2605", side=BUY, price=2910, qty=2)).wait_done(5)
    again = await connect(exchange, "seat-a")
    [st] = await again.request_status()
    assert (st.cl_ord_id, st.status, st.cum_qty, st.leaves_qty) == ("keep-1", OrdStatus.PARTIALLY_FILLED, 2, 3)
    adopted = again.order("keep-1")
    assert adopted is not None  # the client adopts orders it learns about from a status answer
    await (await b.send_order(account="H001", symbol="m2605", side=BUY, price=2910, qty=3)).wait_done(5)
    final = await adopted.wait_done(5)
    assert (final.status, final.cum_qty) == (OrdStatus.FILLED, 5)


async def test_second_logon_of_a_seat_takes_it_over(exchange: ExchangeServer) -> None:
    first = await connect(exchange, "dup")
    second = await connect(exchange, "dup")
    err = await first.wait_closed(5)
    assert err.reason == Reason.ALREADY_LOGGED_ON
    assert first.logout is not None and "another connection" in first.logout.text
    h = await second.send_order(account="A001", symbol="m2605", side=BUY, price=2890, qty=1)
    assert (await h.acked(5)).status == OrdStatus.NEW


async def test_members_must_log_on_with_their_secret(risk: RiskConfig) -> None:
    server = await serve_exchange(risk, md_interval_s=0, members=[Member(user="GW1", secret="s3cret")])
    try:
        with pytest.raises(LogonRejected) as info:
            await Client.connect("127.0.0.1", server.port, "GW1", "wrong")
        assert info.value.reason == Reason.AUTH_FAILED and "AUTH_FAILED" in str(info.value)
        with pytest.raises(LogonRejected):
            await Client.connect("127.0.0.1", server.port, "nobody", "s3cret")
        ok = await Client.connect("127.0.0.1", server.port, "GW1", "s3cret")
        assert ok.session_id > 0 and ok.trading_day > 20000101
        await ok.close()
    finally:
        await server.close()


async def test_messages_before_logon_end_the_connection(exchange: ExchangeServer) -> None:
    raw = await RawConnection.open(exchange.port)
    raw.send(NewOrder("x", "A001", "m2605", 1, 1, 1, 1, 1, 2900.0, 1))
    [logout] = await raw.recv_until_eof()
    assert isinstance(logout, Logout) and logout.reason == Reason.NOT_LOGGED_ON


async def test_heartbeat_is_answered(exchange: ExchangeServer) -> None:
    raw = await RawConnection.open(exchange.port, "hb")
    raw.send(Heartbeat(1))
    reply = await raw.recv()
    assert isinstance(reply, Heartbeat) and reply.ts_ns > 1


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


BAD_FRAMES = {
    "random bytes": (_frame(b"\xc1\xff\x00garbage"), "msgpack"),
    "oversize length": (struct.pack(">I", 10_000_000) + b"xx", "exceeds the maximum"),
    "unknown tag": (_frame(msgspec.msgpack.encode(["Bogus", 1, 2])), "unknown message type"),
    "wrong field type": (_frame(msgspec.msgpack.encode(
        ["NewOrder", "x", "A001", "m2605", 1, 1, 1, 1, 1, "cheap", 1])), "NewOrder.price"),
    "message a member may not send": (encode(ExecReport("x", "1", "A001", "m2605", 2, 2)),
                                      "may not send ExecReport"),
}


@pytest.mark.parametrize("kind", list(BAD_FRAMES))
async def test_malformed_frame_closes_only_the_offending_connection(exchange: ExchangeServer,
                                                                    kind: str) -> None:
    good_a, good_b = await connect(exchange, "good-a"), await connect(exchange, "good-b")
    resting = await good_a.send_order(account="A001", symbol="m2605", side=SELL, price=2905, qty=2)
    await resting.acked(5)
    bad = await RawConnection.open(exchange.port, "bad")
    frame, words = BAD_FRAMES[kind]
    bad.send(frame)
    tail = [m for m in await bad.recv_until_eof() if not isinstance(m, MarketData)]
    assert len(tail) == 1 and isinstance(tail[0], Logout)
    assert tail[0].reason == Reason.PROTOCOL_ERROR
    assert words in tail[0].text, tail[0].text
    # Everyone else carries on trading.
    buy = await good_b.send_order(account="H001", symbol="m2605", side=BUY, price=2905, qty=2)
    assert (await buy.wait_done(5)).status == OrdStatus.FILLED
    assert (await resting.wait_done(5)).status == OrdStatus.FILLED
    assert not good_a.closed and not good_b.closed
    assert exchange.stats.protocol_errors == 1


async def test_client_logout_is_answered(exchange: ExchangeServer) -> None:
    client = await connect(exchange, "bye")
    await client.close()
    assert client.logout is not None and client.logout.text == "logged out"
    with pytest.raises(ConnectionClosed):
        await client.send_order(account="A001", symbol="m2605", side=BUY, price=2900, qty=1)
