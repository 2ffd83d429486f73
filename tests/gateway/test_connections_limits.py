"""Connections that never log on (issue 10, item 1), over real sockets with an in-process
gateway: every connection is closed at the logon timeout whatever it sends meanwhile, and
connections not logged on are capped per source address and in total, so a flood neither holds
file descriptors nor keeps a real client from logging on."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import threading

import msgspec
import pytest

from checks.config import ConfigError
from checks.reasons import Reason
from gateway import session as session_mod
from gateway.config import load_gateway_config
from gateway.protocol import FrameDecoder, Heartbeat, Logon, LogonAck, Logout, encode
from gateway.server import Gateway
from gateway.session import State
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


_FLOOD = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for n in range(count):
    s = socket.socket()
    s.bind((f"127.0.4.{n % 50 + 1}", 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
print("connected", flush=True)
sys.stdin.read()  # hold them until told to go
"""


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
async def test_a_flood_from_many_addresses_holds_at_most_the_cap_of_descriptors(make_gateway):
    """400 idle connections from 50 addresses (another process): the gateway holds at most
    max_unauthenticated of them, so descriptors stay for the exchange link's reconnect and the
    journal's next segment; a real client still logs on. The process may open only 100 files
    more than it has: without the cap the flood would take them all."""
    gw = await make_gateway(max_unauthenticated=32, max_unauthenticated_per_source=8)
    before = _open_fds()
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FLOOD, str(gw.port), "400",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + 100, limits[1]))
    try:
        assert await asyncio.wait_for(flood.stdout.readline(), T) == b"connected\n"
        async with asyncio.timeout(T):  # every one accepted, the excess closed
            while gw.logons.connections < 400 or _open_fds() > before + 32 + 4:
                await asyncio.sleep(0.01)  # (+ 4: the flood process's pipes, a spare)
        assert len(gw.logons.pending) == 32
        c = await Client.connect("127.0.0.1", gw.port, "algo1", "algo-secret", timeout=T)
        await c.close()
        with open(os.devnull, "rb"):  # a file can still be opened (the journal's next segment)
            pass
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
        flood.stdin.close()
        await asyncio.wait_for(flood.wait(), T)


@pytest.mark.parametrize(("where", "text", "field"), [
    ("reject_storm = 200", "logon_timeout_s = 0", "gateway.logon_timeout_s"),
    ("reject_storm = 200", "max_unauthenticated = 8\nmax_unauthenticated_per_source = 9",
     "gateway.max_unauthenticated_per_source"),
    ("lockout_s = 300", "max_concurrent_hashes = 0", "auth.max_concurrent_hashes"),
    ("lockout_s = 300", "firm_max_failures = 0", "auth.firm_max_failures"),
    ("lockout_s = 300", "lockout_s = nan", "auth.lockout_s"),
])
def test_connection_and_logon_limits_are_validated(where, text, field):
    path = EXAMPLES / "gateway.toml"
    data = path.read_text()
    if text.startswith("lockout_s"):
        data = data.replace(where, text, 1)
    else:
        data = data.replace(where, f"{where}\n{text}", 1)
    with pytest.raises(ConfigError) as err:
        load_gateway_config(path, data.encode())
    assert err.value.path == field


async def test_connections_logging_on_are_neither_evicted_nor_timed_out(make_gateway, monkeypatch):
    """While every connection not logged on is waiting for its secret to be hashed, a new one
    is refused (none is evicted), and the wait does not count against the logon timeout."""
    release = threading.Event()
    started = []

    def verify(stored: str, secret: str) -> bool:
        started.append(secret)
        release.wait(T)
        return secret == "algo-secret"

    monkeypatch.setattr(session_mod, "verify_secret", verify)
    logging_on: list = []
    both_logging_on = asyncio.Event()
    real_logon = session_mod._TABLE[(State.AWAIT_LOGON, Logon)]

    def logon(session, msg) -> None:  # noqa: ANN001 - the session's own handler, then told
        real_logon(session, msg)
        logging_on.append(session)
        if len(logging_on) == 2:
            both_logging_on.set()

    monkeypatch.setitem(session_mod._TABLE, (State.AWAIT_LOGON, Logon), logon)
    gw = await make_gateway(max_unauthenticated=2, max_unauthenticated_per_source=2,
                            logon_timeout_s=0.3)
    waiting = []
    for n in range(2):
        reader, writer = await _bare(gw.port, local=f"127.0.5.{n + 1}")
        writer.write(encode(Logon("algo1", "algo-secret", [], 5.0, True)))
        waiting.append((reader, writer))
    await asyncio.wait_for(both_logging_on.wait(), T)  # one hashing, one queued behind it
    assert all(s.state == State.LOGGING_ON for s in logging_on)
    reader, writer = await _bare(gw.port, local="127.0.5.9")
    assert await _until_closed(reader) == []  # refused at once, without a word
    writer.close()
    assert len(gw.logons.pending) == 2
    assert all(s._logon_timer.cancelled() for s in gw.logons.pending)  # the pool's wait is ours
    release.set()
    for reader, writer in waiting:
        decoder = FrameDecoder()
        msgs: list = []
        while not msgs:
            msgs = decoder.feed(await asyncio.wait_for(reader.read(4096), T))
        assert isinstance(msgs[0], LogonAck)
        writer.close()
