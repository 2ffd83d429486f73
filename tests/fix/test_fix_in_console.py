"""The web console's live view shows FIX sessions beside native ones, with their message rate
(issue 13: "sessions (native and FIX when it exists) and their rates")."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from checks.enums import OrdStatus, Side
from simulator.client import Client
from simulator.fix_client import FixClient

T = 15.0
VIEWER = "demo-viewer-token"


async def _next_event(resp: aiohttp.ClientResponse, buf: bytearray) -> tuple[str, dict]:
    while b"\n\n" not in buf:
        chunk = await asyncio.wait_for(resp.content.readany(), T)
        assert chunk, "the stream ended"
        buf += chunk
    cut = buf.index(b"\n\n")
    block = bytes(buf[:cut])
    del buf[:cut + 2]
    event = next((ln[7:].decode() for ln in block.split(b"\n") if ln.startswith(b"event: ")), "")
    data = b"".join(ln[6:] for ln in block.split(b"\n") if ln.startswith(b"data: "))
    return event, json.loads(data) if data else {}


async def test_the_console_lists_fix_and_native_sessions_with_their_messages(shared_fix_gateway):
    gw = shared_fix_gateway
    fix = await FixClient.connect("127.0.0.1", gw.fix_port, "algo1", "algo-secret")
    native = await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret")
    h = await fix.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3190.0, qty=1)
    assert (await h.acked(timeout=T)).status == OrdStatus.NEW
    base = f"http://127.0.0.1:{gw.match.group(2)}"
    async with aiohttp.ClientSession() as s, s.get(
            base + "/v1/events", headers={"Authorization": f"Bearer {VIEWER}"}) as resp:
        buf = bytearray()
        sessions: list[dict] = []
        while not {"FIX", "native"} <= {x["front"] for x in sessions}:
            event, data = await _next_event(resp, buf)
            sessions = data.get("sessions", sessions)
    by_front = {x["front"]: x for x in sessions if x["user"] == "algo1"}
    assert by_front["FIX"]["session"] != native.session_id  # numbered like native sessions
    assert by_front["FIX"]["messages"] >= 2  # its Logon and the order, by MsgSeqNum
    assert by_front["native"]["session"] == native.session_id
    assert by_front["native"]["messages"] >= 1  # its Logon
    await h.cancel()
    await h.wait_done(timeout=T)
    await fix.close()
    await native.close()
