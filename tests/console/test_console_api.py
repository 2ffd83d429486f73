"""The console's read endpoints and its page, against a real gateway process (issue 13, item 1).

``/v1/whoami`` (role for the page), ``/v1/events`` (the live view: a snapshot, then changes,
authenticated by header only), ``/v1/accounts/{id}/usage`` (drill-down counters against
limits), ``/v1/audit`` (admin actions from the journal, newest first, paged) and the page
itself (no data in it, strict security headers).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from checks.enums import OrdStatus, Side
from gateway import journal as jr
from gateway.console import audit_view
from gateway.console.views import level
from simulator.client import Client
from tests.conftest import Proc, start_exchange, start_gateway

RISK, ADMIN, VIEWER = "demo-risk-token", "demo-admin-token", "demo-viewer-token"
T = 15.0


class Rig:
    def __init__(self, journal: Path) -> None:
        self.ex: Proc = start_exchange()
        try:
            self.gw: Proc = start_gateway(int(self.ex.match.group(1)), "--journal", str(journal))
            self.gw.wait_for("exchange link up")
        except BaseException:
            self.ex.stop()
            raise
        self.port, self.admin_port = int(self.gw.match.group(1)), int(self.gw.match.group(2))
        self.base = f"http://127.0.0.1:{self.admin_port}"

    async def call(self, method: str, path: str, body: dict | None = None,
                   token: str | None = VIEWER) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as s, s.request(
                method, self.base + path, json=body, headers=headers,
                allow_redirects=False) as resp:
            data = await resp.read()
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = data
            return resp.status, parsed, resp.headers

    def stop(self) -> None:
        self.gw.stop()
        self.ex.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("journal"))
    yield r
    r.stop()


class Events:
    """A reader of ``/v1/events`` as the page reads it: parsed SSE events."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.buf = b""

    async def next(self, timeout: float = T) -> tuple[str, dict[str, Any]]:
        while b"\n\n" not in self.buf:
            chunk = await asyncio.wait_for(self.resp.content.readany(), timeout)
            if not chunk:
                raise EOFError("the stream ended")
            self.buf += chunk
        block, self.buf = self.buf.split(b"\n\n", 1)
        event, data = "message", b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data += line[6:]
        if not data:  # a keepalive comment
            return await self.next(timeout)
        return event, json.loads(data)

    async def until(self, pred, timeout: float = T) -> dict[str, Any]:  # noqa: ANN001
        while True:
            event, data = await self.next(timeout)
            if event == "change" and pred(data):
                return data


async def events(rig: Rig, session: aiohttp.ClientSession, token: str = VIEWER) -> Events:
    resp = await session.get(rig.base + "/v1/events",
                             headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    return Events(resp)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


# ---------------------------------------------------------------------- whoami and the page
async def test_whoami_names_the_operator_and_role_and_refuses_a_bad_token(rig: Rig) -> None:
    for token, name, role in ((VIEWER, "desk-viewer", "viewer"), (RISK, "risk-officer-li", "risk"),
                              (ADMIN, "admin-wang", "admin")):
        code, body, _ = await rig.call("GET", "/v1/whoami", token=token)
        assert (code, body["operator"], body["role"], body["gateway"]) == (200, name, role, "gw1")
    code, body, _ = await rig.call("GET", "/v1/whoami", token="wrong")
    assert code == 401 and "token" in body["error"]
    code, _, _ = await rig.call("GET", "/v1/whoami", token=None)
    assert code == 401


async def test_the_page_is_served_without_data_and_with_strict_security_headers(rig: Rig) -> None:
    code, _, headers = await rig.call("GET", "/", token=None)
    assert code == 302 and headers["Location"] == "/console/"
    code, page, headers = await rig.call("GET", "/console/", token=None)
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/console/app.js" in page and b"<script>" not in page  # no inline script
    csp = headers["Content-Security-Policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                 "form-action 'none'", "frame-ancestors 'none'"):
        assert rule in csp
    assert headers["Cache-Control"] == "no-store" and headers["X-Frame-Options"] == "DENY"
    for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css")):
        code, _, headers = await rig.call("GET", f"/console/{name}", token=None)
        assert code == 200 and headers["Content-Type"].startswith(ctype)
    code, body, _ = await rig.call("GET", "/console/..%2Fadmin.py", token=None)
    assert code == 404
    code, body, _ = await rig.call("GET", "/console/nothing.js", token=None)
    assert code == 404 and "error" in body


# ---------------------------------------------------------------------- the live view
async def test_events_sends_a_snapshot_then_the_changes_orders_make(rig: Rig,
                                                                    http: aiohttp.ClientSession) -> None:
    ev = await events(rig, http)
    kind, snap = await ev.next()
    assert kind == "snapshot"
    assert set(snap) == {"firm", "accounts", "sessions", "alerts"}
    assert snap["firm"]["exchange_link"] == "up" and snap["firm"]["journal"]["writable"]
    a001 = next(a for a in snap["accounts"] if a["account"] == "A001")
    assert a001["usage"]["open_orders"] == {"limit": "open_orders", "scope": "", "used": 0,
                                            "max": 400, "level": "ok"}
    algo = await Client.connect("127.0.0.1", rig.port, "algo1", "algo-secret")
    h = await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3191.0, qty=1)
    await h.acked(timeout=T)

    def a001_working(change: dict[str, Any]) -> bool:
        rows = change.get("accounts") or []
        return any(a["account"] == "A001" and a["open_orders"] == 1 for a in rows)

    change = await ev.until(a001_working)
    assert "alerts" not in change or isinstance(change["alerts"], list)
    # Its session, with the messages it sent (Logon and the order, through the order path).
    change = await ev.until(lambda c: any(s["user"] == "algo1" and s["front"] == "native"
                                          and s["messages"] >= 2 for s in c.get("sessions", [])))
    # A kill shows as a change of the firm section and a CRITICAL alert, by name.
    code, _, _ = await rig.call("POST", "/v1/kill", {"scope": "account", "key": "A001",
                                                      "reason": "stream test"}, token=RISK)
    assert code == 200
    change = await ev.until(lambda c: any(k["key"] == "A001" for k in
                                          (c.get("firm") or {}).get("kills", [])))
    alerts = change.get("alerts") or (await ev.until(lambda c: "alerts" in c))["alerts"]
    kill = next(a for a in alerts if "stream test" in a["text"])
    assert (kill["level_name"], kill["code_name"], kill["scope"]) == \
        ("CRITICAL", "KILL_SWITCH", "account:A001")
    assert (await h.wait_done(timeout=T)).status == OrdStatus.CANCELED
    code, _, _ = await rig.call("POST", "/v1/reset", {"scope": "account", "key": "A001",
                                                       "reason": "stream test over"}, token=RISK)
    assert code == 200
    # A second console starts from a snapshot as the first one last saw it: no kill, and the
    # kill's alert among the recent ones (not sent twice later).
    ev2 = await events(rig, http)
    await ev.until(lambda c: (c.get("firm") or {}).get("kills") == [])
    kind, snap2 = await ev2.next()
    assert kind == "snapshot" and any("stream test" in a["text"] for a in snap2["alerts"])
    await algo.close()
    ev.resp.close()
    ev2.resp.close()


async def test_events_take_a_bounded_number_of_consoles(gateway_proc: Proc) -> None:
    from gateway.console.live import MAX_LISTENERS

    base = f"http://127.0.0.1:{gateway_proc.match.group(2)}"
    auth = {"Authorization": f"Bearer {VIEWER}"}
    async with aiohttp.ClientSession() as s:
        open_ = [Events(await s.get(base + "/v1/events", headers=auth))
                 for _ in range(MAX_LISTENERS)]
        for ev in open_:
            assert (await ev.next())[0] == "snapshot"
        resp = await s.get(base + "/v1/events", headers=auth)
        assert resp.status == 503 and "consoles" in (await resp.json())["error"]
        for ev in open_:
            ev.resp.close()


async def test_events_need_the_token_in_the_header_never_in_the_url(rig: Rig) -> None:
    code, body, _ = await rig.call("GET", "/v1/events", token=None)
    assert code == 401 and "error" in body
    code, _, _ = await rig.call("GET", f"/v1/events?token={VIEWER}", token=None)
    assert code == 401
    code, _, _ = await rig.call("GET", f"/v1/events?access_token={VIEWER}", token=None)
    assert code == 401


# ---------------------------------------------------------------------- drill-down usage
async def test_usage_lists_counters_against_limits_and_positions_today_and_yesterday(
        rig: Rig) -> None:
    code, body, _ = await rig.call("GET", "/v1/accounts/A001/usage")
    assert code == 200 and body["account"] == "A001" and body["warn_fraction"] == 0.8
    names = {u["limit"] for u in body["usage"]}
    assert {"open_orders", "loss"} <= names
    rb = next(p for p in body["positions"] if p["symbol"] == "rb2605")
    assert (rb["long_yd"], rb["long_td"]) == (20, 0)  # carried from yesterday (risk.toml)
    code, body, _ = await rig.call("GET", "/v1/accounts/NOPE/usage")
    assert code == 404 and "NOPE" in body["error"]
    code, _, _ = await rig.call("GET", "/v1/accounts/A001/usage", token=None)
    assert code == 401


def test_usage_levels_warn_at_the_fraction_and_turn_red_at_the_limit() -> None:
    assert level(79, 100, 0.8) == "ok"
    assert level(80, 100, 0.8) == "warn"
    assert level(99, 100, 0.8) == "warn"
    assert level(100, 100, 0.8) == "limit"
    assert level(5, None, 0.8) == "ok"  # no limit
    assert level(0, 0, 0.8) == "ok" and level(1, 0, 0.8) == "limit"


# ---------------------------------------------------------------------- audit
async def test_audit_reads_admin_actions_from_the_journal_newest_first_paged(rig: Rig) -> None:
    for n in range(3):
        code, _, _ = await rig.call("POST", "/v1/kill", {"scope": "instrument", "key": "m2605",
                                                          "reason": f"audit {n}"}, token=RISK)
        assert code == 200
        code, _, _ = await rig.call("POST", "/v1/reset", {"scope": "instrument", "key": "m2605",
                                                           "reason": f"audit {n} over"},
                                    token=RISK)
        assert code == 200
    code, page, _ = await rig.call("GET", "/v1/audit?limit=4")
    assert code == 200 and page["source"] == "journal" and page["damage"] == ""
    got = [(e["action"], e["reason"]) for e in page["entries"]]
    assert got == [("reset", "audit 2 over"), ("kill", "audit 2"), ("reset", "audit 1 over"),
                   ("kill", "audit 1")]
    assert page["entries"][0]["operator"] == "risk-officer-li"
    seqs = [e["seq"] for e in page["entries"]]
    assert seqs == sorted(seqs, reverse=True)
    code, older, _ = await rig.call("GET", f"/v1/audit?limit=4&before={page['next_before']}")
    assert code == 200 and older["entries"][0]["reason"] == "audit 0 over"
    assert all(e["seq"] < seqs[-1] for e in older["entries"])
    for bad in ("limit=0", "limit=501", "limit=x", "before=-1", "before=1e3"):
        code, body, _ = await rig.call("GET", f"/v1/audit?{bad}")
        assert code == 400 and "error" in body, bad
    code, _, _ = await rig.call("GET", "/v1/audit", token=None)
    assert code == 401


def _admin_action(n: int) -> jr.AdminAction:
    return jr.AdminAction(1_000 + n, "op", "kill", "account", "A001", {"close_only": False},
                          f"reason {n}")


async def test_audit_pages_back_across_segments_and_follows_new_records(tmp_path: Path) -> None:
    j = jr.Journal.open(tmp_path, fsync=jr.FsyncPolicy.never(), segment_bytes=400)
    for n in range(30):
        j.append(_admin_action(n))
        j.append(jr.State(2_000 + n, "filler", b"x" * 40))
    assert len(jr.list_segments(tmp_path)) > 5
    audit = audit_view.JournalAudit(tmp_path)
    page = await audit.page(None, 7)
    assert [e["reason"] for e in page["entries"]] == [f"reason {n}" for n in range(29, 22, -1)]
    reasons = [e["reason"] for e in page["entries"]]
    while page["next_before"] is not None:
        page = await audit.page(page["next_before"], 7)
        reasons += [e["reason"] for e in page["entries"]]
    assert reasons == [f"reason {n}" for n in range(29, -1, -1)]
    j.append(_admin_action(30))  # appended since: the next first page has it
    page = await audit.page(None, 2)
    assert [e["reason"] for e in page["entries"]] == ["reason 30", "reason 29"]
    j.close()


def test_audit_without_a_journal_pages_the_in_memory_history() -> None:
    history = [{"ts_ns": n, "operator": "op", "action": "kill", "scope": "account",
                "key": "A001", "reason": f"r{n}", "emergency": False, "close_only": False}
               for n in range(5)]
    page = audit_view.memory_page(history, None, 3)
    assert page["source"] == "memory"
    assert [e["reason"] for e in page["entries"]] == ["r4", "r3", "r2"]
    assert page["entries"][0]["args"] == {"close_only": False}
    page = audit_view.memory_page(history, page["next_before"], 3)
    assert [e["reason"] for e in page["entries"]] == ["r1", "r0"] and page["next_before"] is None


# ---------------------------------------------------------------------- shutdown
async def test_a_gateway_with_a_console_listening_stops_at_once(gateway_proc: Proc) -> None:
    base = f"http://127.0.0.1:{gateway_proc.match.group(2)}"
    async with aiohttp.ClientSession() as s:
        resp = await s.get(base + "/v1/events", headers={"Authorization": f"Bearer {VIEWER}"})
        ev = Events(resp)
        assert (await ev.next())[0] == "snapshot"
        rc = await asyncio.to_thread(gateway_proc.stop)
        assert rc == 0, "the open stream held the admin plane's shutdown"
        kind, data = await ev.next()
        assert kind == "end" and "shutting down" in data["reason"]


async def test_a_console_that_does_not_read_is_ended_not_buffered_without_end() -> None:
    from gateway.console.live import QUEUE, Listener

    listener = Listener()
    for n in range(QUEUE):
        listener.push(b"event %d" % n)
    assert not listener.closed and len(listener.queue) == QUEUE
    listener.push(b"one too many")
    assert "too slow" in listener.closed and not listener.queue  # its memory goes with it
    listener.push(b"later")
    assert not listener.queue


async def test_audit_says_where_the_journal_is_damaged_and_keeps_what_it_read(
        tmp_path: Path) -> None:
    j = jr.Journal.open(tmp_path, fsync=jr.FsyncPolicy.never(), segment_bytes=400)
    for n in range(20):
        j.append(_admin_action(n))
        j.append(jr.State(2_000 + n, "filler", b"x" * 40))
    j.close()
    first = jr.list_segments(tmp_path)[0][1]
    data = bytearray(first.read_bytes())
    data[30] ^= 0xFF  # a flipped bit inside the oldest segment's first record
    first.write_bytes(bytes(data))
    audit = audit_view.JournalAudit(tmp_path)
    page = await audit.page(None, 100)
    assert "checksum" in page["damage"] and first.name in page["damage"]
    reasons = [e["reason"] for e in page["entries"]]
    assert reasons[0] == "reason 19" and "reason 0" not in reasons  # the damaged one is not made up
