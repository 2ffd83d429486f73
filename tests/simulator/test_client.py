"""The client library: handles, queues, bounds, heartbeats, alerts and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from checks.enums import AlertLevel, OrdStatus, Side, Tif
from checks.reasons import Reason
from gateway.protocol import (
    Alert,
    CancelReject,
    FrameDecoder,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    encode,
)
from simulator.client import Client, ConnectionClosed, LogonRejected
from simulator.exchange import ExchangeServer

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list], Awaitable[None]]
StartFake = Callable[[Script], Awaitable[tuple[int, list]]]


@pytest.fixture
async def fake_server() -> AsyncIterator[StartFake]:
    """A scripted peer: logs the client on, then runs ``script`` (records what it received)."""
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> tuple[int, list]:
        received: list = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder()
            while not received:
                received.extend(decoder.feed(await reader.read(4096)))
            assert isinstance(received[0], Logon)
            writer.write(encode(LogonAck(7, 20261130, 1)))

            async def pump() -> None:
                while data := await reader.read(4096):
                    received.extend(decoder.feed(data))

            task = asyncio.ensure_future(pump())
            try:
                await script(reader, writer, received)
            finally:
                task.cancel()
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], received

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


async def test_logon_reject_raises_with_the_reason_code() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(encode(LogonReject(int(Reason.LOCKED_OUT), "try again in 5 minutes")))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        with pytest.raises(LogonRejected) as info:
            await Client.connect("127.0.0.1", server.sockets[0].getsockname()[1], "u", "x", ["A001"])
        assert info.value.reason == Reason.LOCKED_OUT
        assert "103 LOCKED_OUT: try again in 5 minutes" in str(info.value)
    finally:
        server.close()


async def test_connection_refused_is_an_os_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await Client.connect("127.0.0.1", port, "u", "x")


async def test_logon_carries_the_session_parameters(fake_server: StartFake) -> None:
    done = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list) -> None:
        await done.wait()

    port, received = await fake_server(script)
    client = await Client.connect("127.0.0.1", port, "desk", "pw", ["A001", "A004"],
                                  heartbeat_s=2.5, cancel_on_disconnect=False)
    assert (client.session_id, client.trading_day) == (7, 20261130)
    assert received[0] == Logon("desk", "pw", ["A001", "A004"], 2.5, False)
    done.set()
    await client.wait_closed(5)


async def test_heartbeats_are_sent_and_a_silent_server_is_detected(fake_server: StartFake) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list) -> None:
        await asyncio.Event().wait()  # say nothing ever again

    port, received = await fake_server(script)
    client = await Client.connect("127.0.0.1", port, "u", "", heartbeat_s=0.02)
    err = await client.wait_closed(5)
    assert "no message from the server" in str(err)
    assert any(isinstance(m, Heartbeat) for m in received)


async def test_alerts_reach_the_queue_and_the_callback(fake_server: StartFake) -> None:
    alert = Alert(int(AlertLevel.WARNING), int(Reason.THRESHOLD_WARNING), "account:A001", "80 % of orders/s")

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list) -> None:
        writer.write(encode(alert))
        await asyncio.Event().wait()

    port, _ = await fake_server(script)
    seen: list[Alert] = []
    client = await Client.connect("127.0.0.1", port, "u", "", on_alert=seen.append)
    assert await client.next_alert(5) == alert
    assert seen == [alert]
    client.abort()


async def test_garbage_from_the_server_closes_with_protocol_error(fake_server: StartFake) -> None:
    logged_on = asyncio.Event()

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, received: list) -> None:
        await logged_on.wait()  # else the garbage may share a read with LogonAck
        writer.write(b"\x00\x00\x00\x03abc")
        await asyncio.Event().wait()

    port, _ = await fake_server(script)
    client = await Client.connect("127.0.0.1", port, "u", "")
    logged_on.set()
    err = await client.wait_closed(5)
    assert err.reason == Reason.PROTOCOL_ERROR and "protocol error from the server" in str(err)


async def test_cancel_reject_reaches_the_handle_and_the_queue(exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "")
    h = await client.send_order(account="A001", symbol="m2605", side=Side.BUY, price=2800, qty=1)
    await h.acked(5)
    await client.cancel(h.cl_ord_id, cl_ord_id="cxl-1")
    await client.cancel(h.cl_ord_id, cl_ord_id="cxl-2", account="A001")  # too late: finished
    assert (await h.wait_done(5)).status == OrdStatus.CANCELED
    reports = [await client.next_report(5) for _ in range(3)]
    reject = reports[-1]
    assert isinstance(reject, CancelReject)
    assert (reject.cl_ord_id, reject.orig_cl_ord_id, reject.reason) == ("cxl-2", h.cl_ord_id, Reason.ORDER_FINISHED)
    with pytest.raises(ValueError, match="pass account="):
        await client.cancel("never-sent")


async def test_wait_status_returns_the_final_report_when_the_order_ends_otherwise(
        exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "")
    h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.5, qty=1)
    rep = await h.wait_status(OrdStatus.FILLED, timeout=5)
    assert rep.status == OrdStatus.REJECTED and h.reason == Reason.PRICE_NOT_ON_TICK
    assert h.done and h.latency_ns is not None and h.latency_ns > 0


async def test_finished_orders_are_forgotten_and_queues_are_bounded(exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "", report_queue=5)
    handles = [client.send_order_nowait(account="A001", symbol="m2605", side=Side.BUY,
                                        price=2800, qty=1, tif=Tif.IOC) for _ in range(10)]
    for h in handles:
        await h.wait_done(5)
    assert client.working == [] and client.order(handles[0].cl_ord_id) is None
    assert client.dropped_reports == 15  # 20 reports (NEW + CANCELED each), 5 kept
    assert handles[0].status == OrdStatus.CANCELED  # the caller's handle keeps its final state


async def test_duplicate_working_cl_ord_id_is_refused_locally(exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "")
    await client.send_order(account="A001", symbol="m2605", side=Side.BUY, price=2800, qty=1, cl_ord_id="x")
    with pytest.raises(ValueError, match="already used"):
        await client.send_order(account="A001", symbol="m2605", side=Side.BUY, price=2800, qty=1, cl_ord_id="x")


async def test_reports_iterator_ends_when_the_session_closes(exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "")
    h = await client.send_order(account="A001", symbol="m2605", side=Side.BUY, price=2800, qty=1)
    await h.acked(5)
    exchange.drop("u")
    got = [r async for r in client.reports()]
    assert [r.cl_ord_id for r in got] == [h.cl_ord_id]
    with pytest.raises(ConnectionClosed):
        await h.wait_done(5)


async def test_batched_sends_a_basket_in_one_write(exchange: ExchangeServer) -> None:
    client = await Client.connect("127.0.0.1", exchange.port, "u", "")
    writes: list[int] = []
    real = client._transport

    class CountingTransport:  # uvloop transports cannot be patched: wrap one instead
        def write(self, data: bytes) -> None:
            writes.append(len(data))
            real.write(data)

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    client._transport = CountingTransport()  # type: ignore[assignment]
    with client.batched():
        handles = [client.send_order_nowait(account="A001", symbol="m2605", side=Side.BUY,
                                            price=2800 + i, qty=1) for i in range(10)]
        client.cancel_nowait(handles[0].cl_ord_id)
    assert len(writes) == 1
    for h in handles[1:]:
        assert (await h.acked(5)).status == OrdStatus.NEW
    assert (await handles[0].wait_done(5)).status == OrdStatus.CANCELED
