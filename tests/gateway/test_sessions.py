"""Session behaviour over real sockets, with an in-process gateway (no exchange needed):
heartbeat timeout, slow consumers, logon rules."""

from __future__ import annotations

import asyncio
import socket
import struct

import msgspec
import pytest
from structlog.testing import capture_logs

from checks.reasons import Reason
from gateway.config import load_gateway_config
from gateway.protocol import FrameDecoder, Logon, LogonAck, Logout, NewOrder, encode
from gateway.server import Gateway
from simulator.client import Client, ConnectionClosed, LogonRejected
from tests.conftest import EXAMPLES

T = 10.0


@pytest.fixture
async def gateway():
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    r = msgspec.structs.replace
    cfg = r(cfg, gateway=r(cfg.gateway, port=0, heartbeat_s=0.3, max_client_buffer=64 * 1024,
                           reject_storm=1_000_000),
            admin=r(cfg.admin, port=0),
            exchange=r(cfg.exchange, port=1, reconnect_min_s=5.0))  # no exchange: link stays down
    gw = Gateway(cfg)
    await gw.start()
    yield gw
    await gw.stop()


async def test_a_silent_client_is_logged_out_after_the_heartbeat_timeout(gateway):
    c = await Client.connect("127.0.0.1", gateway.port, "algo1", "algo-secret", heartbeat_s=0.3)
    c._hb_task.cancel()  # the client goes quiet (a hung strategy host)
    closed = await c.wait_closed(timeout=T)
    assert isinstance(closed, ConnectionClosed) and "heartbeat" in str(closed)
    assert not gateway.router.sessions


async def test_a_slow_consumer_is_dropped_and_others_keep_trading(gateway):
    with capture_logs() as logs:
        await _flood_without_reading(gateway)
    assert any(e["event"] == "slow consumer dropped" for e in logs)
    good = await Client.connect("127.0.0.1", gateway.port, "manual1", "manual-secret")
    h = await good.send_order(account="A003", symbol="rb2605", side=1, price=3200.0, qty=1)
    assert (await h.wait_done(timeout=T)).reason == Reason.EXCHANGE_UNAVAILABLE
    await good.close()


async def _flood_without_reading(gateway: Gateway) -> None:
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(encode(Logon("algo1", "algo-secret", ["A001"], 5.0, True)))
    first = FrameDecoder()
    msgs: list = []
    while not msgs:
        msgs = first.feed(await asyncio.wait_for(reader.read(4096), T))
    assert isinstance(msgs[0], LogonAck)
    # Send thousands of orders and never read the rejects (the exchange link is down).
    for n in range(20_000):
        body = msgspec.msgpack.encode(["NewOrder", f"o{n}", "A001", "rb2605", 1, 1, 1, 1, 1, 3200.0, 1])
        writer.write(struct.pack(">I", len(body)) + body)
    session_id = msgs[0].session_id
    try:
        await asyncio.wait_for(writer.drain(), T)
        async with asyncio.timeout(T):  # read what was queued until the gateway drops us
            while await reader.read(1 << 16):
                pass
    except ConnectionError:
        pass  # reset by the gateway: the drop itself
    writer.close()
    assert session_id not in gateway.router.sessions


async def test_logon_rules(gateway):
    with pytest.raises(LogonRejected) as err:  # asks for an account the user may not trade
        await Client.connect("127.0.0.1", gateway.port, "manual1", "manual-secret", ["A001"])
    assert err.value.reason == Reason.ACCOUNT_NOT_PERMITTED
    # orders before logon are refused with NOT_LOGGED_ON, and unknown messages end the session
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(encode(NewOrder("early", "A001", "rb2605", 1, 1, 1, 1, 1, 3200.0, 1)))
    writer.write(encode(LogonAck(1, 2, 3)))
    data = await asyncio.wait_for(reader.read(), T)
    msgs = FrameDecoder().feed(data)
    assert msgs[0].reason == Reason.NOT_LOGGED_ON
    assert isinstance(msgs[-1], Logout) and "LogonAck" in msgs[-1].text
    writer.close()
