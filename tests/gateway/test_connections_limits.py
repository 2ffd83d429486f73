"""Connections that never log on (issue 10, item 1), over real sockets with an in-process
gateway: every connection is closed at the logon timeout whatever it sends meanwhile, and
connections not logged on are capped per source address and in total, so a flood neither holds
file descriptors nor keeps a real client from logging on."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from checks.reasons import Reason
from gateway.config import load_gateway_config
from gateway.protocol import FrameDecoder, Heartbeat, Logout, encode
from gateway.server import Gateway
from simulator.client import Client
from tests.conftest import EXAMPLES

T = 10.0


def _config(**listener):
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    r = msgspec.structs.replace
    return r(cfg, gateway=r(cfg.gateway, port=0, **listener), admin=r(cfg.admin, port=0),
             exchange=r(cfg.exchange, port=1, reconnect_min_s=5.0))  # no exchange


@pytest.fixture
async def make_gateway():
    started: list[Gateway] = []

    async def make(**listener) -> Gateway:
        gw = Gateway(_config(**listener))
        await gw.start()
        started.append(gw)
        return gw

    yield make
    for gw in started:
        await gw.stop()


async def _bare(port: int, local: str = "127.0.0.1"):
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))


async def _until_closed(reader: asyncio.StreamReader) -> list:
    """Everything the gateway sends until it closes the connection."""
    decoder, msgs = FrameDecoder(), []
    try:
        while data := await asyncio.wait_for(reader.read(4096), T):
            msgs += decoder.feed(data)
    except ConnectionResetError:
        pass
    return msgs


async def test_200_bare_connections_are_closed_by_the_logon_timeout(make_gateway):
    gw = await make_gateway(logon_timeout_s=0.5, max_unauthenticated=1000,
                            max_unauthenticated_per_source=1000)
    conns = [await _bare(gw.port) for _ in range(200)]
    # Some of them chatter: a heartbeat does not stretch the logon timeout.
    for _, writer in conns[::10]:
        writer.write(encode(Heartbeat(0)))
    answers = await asyncio.gather(*(_until_closed(reader) for reader, _ in conns))
    for _, writer in conns:
        writer.close()
    for msgs in answers:
        assert len(msgs) == 1 and isinstance(msgs[0], Logout)
        assert msgs[0].reason == Reason.NOT_LOGGED_ON and "no logon within 0.5 s" in msgs[0].text
    assert not gw.logons.pending and not gw.logons.per_source
    assert gw.status()["logons"]["logon_timeouts"] == 200


async def test_a_flood_from_one_address_does_not_stop_a_logon_from_another(make_gateway):
    gw = await make_gateway(max_unauthenticated=64, max_unauthenticated_per_source=16)
    flood = [await _bare(gw.port, local="127.0.0.2") for _ in range(100)]
    closed = await asyncio.gather(*(_until_closed(reader) for reader, _ in flood[16:]))
    assert len(closed) == 84  # every one past the cap was closed by the gateway
    assert len(gw.logons.pending) == 16 and gw.logons.per_source["127.0.0.2"] == 16
    c = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret", timeout=T)
    await c.close()
    for _, writer in flood:
        writer.close()


async def test_a_flood_from_many_addresses_makes_room_for_a_real_client(make_gateway):
    gw = await make_gateway(max_unauthenticated=32, max_unauthenticated_per_source=16)
    flood = [await _bare(gw.port, local=f"127.0.2.{n % 4}") for n in range(64)]
    assert len(gw.logons.pending) <= 32
    c = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret", timeout=T)
    assert len(gw.logons.pending) <= 32
    await c.close()
    evicted = [msgs for msgs in await asyncio.gather(
        *(_until_closed(reader) for reader, _ in flood[:8]))]  # the oldest went first
    assert all(isinstance(m[0], Logout) and "too many connections" in m[0].text
               for m in evicted)
    for _, writer in flood:
        writer.close()


async def test_a_logged_on_session_is_not_closed_by_the_logon_timer(make_gateway):
    gw = await make_gateway(logon_timeout_s=0.3, heartbeat_s=0.2)
    c = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret", heartbeat_s=0.2)
    # Outlive the logon timeout by a bare connection's whole life: the session stays.
    reader, writer = await _bare(gw.port)
    await _until_closed(reader)
    writer.close()
    assert not c.closed
    assert len(gw.router.sessions) == 1
    await c.close()
