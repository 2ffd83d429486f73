"""Issue 14, parts 1 and 4, over real processes: simulator exchange + gateway + client library.

- Terminal information (穿透式监管): an application not registered for the user is refused
  (110), an oversized terminal field too (111); a registered one logs on, its terminal
  information is journaled (never the auth code) and the simulator sees it for each session,
  and again for the live sessions after the exchange link reconnects.
- The registry through the command line: a confirmed HFT report's figures are the limits the
  gateway enforces; an unregistered account that trades programmatically is alerted (1314)
  and goes close-only when the grace period ends — and stays so after a restart.
"""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from checks.enums import Side
from checks.reasons import Reason
from gateway import journal as jr
from gateway.auth import hash_secret
from gateway.protocol import Logon, TerminalData
from simulator.client import Client, LogonRejected
from tests.conftest import EXAMPLES, ROOT, Proc, start_exchange, start_gateway

T = 10.0  # generous timeouts for a loaded machine (never asserted on)
RISK = "demo-risk-token"
AUTH_CODE = "AUTH-7F3A-19C2"


def write_config(tmp_path, grace_s: float = 60.0) -> object:
    text = (EXAMPLES / "gateway.toml").read_text().replace(
        'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"')
    algo1 = "[[users]]                       # an algo team: secret \"algo-secret\""
    assert algo1 in text
    # algo1's application is registered (穿透式监管): it must log on with it
    code_hash = hash_secret(AUTH_CODE, n=2**14)
    text = text.replace('ip_allow = ["127.0.0.0/8"]\n',
                        'ip_allow = ["127.0.0.0/8"]\n'
                        f'apps = [{{ app_id = "hq-trader-4.2", auth_code_hash = "{code_hash}" }}]\n',
                        1)
    text += (f"\n[compliance]\ncorrection_grace_s = {grace_s}\nprogrammatic_per_sec = 3\n"
             "programmatic_occasions = 2\n")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def ports(gw: Proc) -> tuple[int, int]:
    return int(gw.match.group(1)), int(gw.match.group(2))


TERMINAL = TerminalData(ip="10.8.0.21", mac="52:54:00:12:34:56", device_name="quant-host-07",
                        device_id="cpu:BFEBFBFF000906EA disk:S4EVNF0M", os="Linux-6.1-x86_64")


async def app_client(gw: Proc, **kw) -> Client:
    kw.setdefault("app_id", "hq-trader-4.2")
    kw.setdefault("auth_code", AUTH_CODE)
    return await Client.connect("127.0.0.1", ports(gw)[0], "algo1", "algo-secret", **kw)


def registry_args(gw: Proc, *args: str) -> list[str]:
    # `fengkong registry` takes --admin/--token before its command
    return ["registry", "--admin", f"http://127.0.0.1:{ports(gw)[1]}", "--token", RISK, *args]


async def registry(gw: Proc, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *registry_args(gw, *args), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={"PYTHONPATH": str(ROOT)})
    out, _ = await asyncio.wait_for(proc.communicate(), T * 3)
    return proc.returncode or 0, out.decode()


@pytest.fixture
def procs(tmp_path):
    ex = start_exchange()
    gw = start_gateway(int(ex.match.group(1)), "--journal", str(tmp_path / "journal"),
                       config=write_config(tmp_path, grace_s=1.0))
    gw.wait_for("exchange link up")
    yield ex, gw
    gw.stop()
    ex.stop()


async def test_terminal_information_unregistered_app_refused_registered_relayed(procs, tmp_path):
    ex, gw = procs
    for kw in ({"app_id": "", "auth_code": ""}, {"auth_code": "wrong"},
               {"app_id": "other-app"}):
        with pytest.raises(LogonRejected) as err:
            await app_client(gw, **kw)
        assert err.value.reason == Reason.APP_NOT_REGISTERED
    with pytest.raises(LogonRejected) as err:
        await app_client(gw, terminal=TerminalData(os="x" * 300))
    assert err.value.reason == Reason.TERMINAL_INFO_INVALID
    assert "terminal.os is 300 bytes" in str(err.value)
    # a user without registered applications is not asked for one
    manual = await Client.connect("127.0.0.1", ports(gw)[0], "manual1", "manual-secret")

    one = await app_client(gw, terminal=TERMINAL)
    two = await app_client(gw, terminal="collect")
    seen = {}
    for _ in range(3):  # manual1's session and both algo1 sessions, in logon order
        line = ex.wait_for(r"terminal-info (\{.*\})", T)
        info = json.loads(line.group(1))
        seen[info["session_id"]] = info
    assert set(seen) == {manual.session_id, one.session_id, two.session_id}
    assert seen[one.session_id]["terminal"] == {
        "ip": "10.8.0.21", "mac": "52:54:00:12:34:56", "device_name": "quant-host-07",
        "device_id": "cpu:BFEBFBFF000906EA disk:S4EVNF0M", "os": "Linux-6.1-x86_64", "extra": ""}
    assert seen[one.session_id]["app_id"] == "hq-trader-4.2"
    assert seen[one.session_id]["peer"] == "127.0.0.1" and seen[one.session_id]["seat"] == "GW1"
    assert seen[two.session_id]["terminal"]["ip"] == "127.0.0.1"  # collected by the client
    assert seen[two.session_id]["terminal"]["os"]
    assert "A001" in seen[one.session_id]["accounts"]

    # the link reconnects (the exchange restarts on its port): the live sessions again
    ex_port = int(ex.match.group(1))
    ex.stop()
    await two.close()
    ex2 = start_exchange(ex_port)
    try:
        again = {json.loads(ex2.wait_for(r"terminal-info (\{.*\})", T).group(1))["session_id"]
                 for _ in range(2)}
        assert again == {manual.session_id, one.session_id}
    finally:
        await one.close()
        await manual.close()
        gw.stop()
        ex2.stop()

    logons = [r for _, r in jr.JournalReader(tmp_path / "journal")
              if type(r) is jr.Inbound and type(r.msg) is Logon]
    by_session = {r.session: r.msg for r in logons}
    assert by_session[one.session_id].terminal == TERMINAL
    assert by_session[one.session_id].app_id == "hq-trader-4.2"
    assert all(m.auth_code in ("", "***") and m.secret == "***" for m in by_session.values())
    journal_text = b"".join(p.read_bytes() for p in (tmp_path / "journal").glob("*.journal"))
    assert AUTH_CODE.encode() not in journal_text and b"algo-secret" not in journal_text


HFT_REPORT = {
    "basics": {"trader_name": "Demo HFT client", "trading_codes": {"SHFE": "81000777"},
               "futures_company": "Demo Futures Co."},
    "software": {"execution_method": "fully automated", "software_name": "hq-trader",
                 "software_version": "4.2", "basic_functions": "market making",
                 "developer": "in house"},
    "hft": {"strategy_type": "market making", "max_per_sec": 4, "max_per_day": 1000,
            "server_location": "SHFE colocation", "test_report": "TR-1",
            "emergency_plan": "stop and flatten", "risk_measures": "throttle"},
}


async def test_registry_cli_hft_limits_then_correction_close_only_survives_restart(procs, tmp_path):
    ex, gw = procs
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(HFT_REPORT))
    code, out = await registry(gw, "draft", "A001", "--file", str(report_file), "--reason", "new")
    assert code == 0, out
    code, out = await registry(gw, "confirm", "A001", "--exchange-ref", "X", "--reason", "early")
    assert code == 1 and "cannot confirm it; allowed now: draft, submit" in out
    assert (await registry(gw, "submit", "A001", "--reason", "to SHFE"))[0] == 0
    code, out = await registry(gw, "confirm", "A001", "--exchange-ref", "SHFE-0007",
                               "--reason", "feedback")
    assert code == 1 and "emergency" in out  # HFT figures loosen the checks: change control
    code, out = await registry(gw, "confirm", "A001", "--exchange-ref", "SHFE-0007",
                               "--reason", "exchange feedback", "--emergency")
    assert code == 0 and "report CONFIRMED (version 1, confirmed 1)" in out, out
    code, out = await registry(gw, "export", "--exchange", "SHFE", "--which", "in_force")
    assert code == 0 and out.splitlines()[1].startswith("SHFE,81000777,A001,CONFIRMED,1,1,SHFE-0007")

    c = await app_client(gw)
    handles = [c.send_order_nowait(account="A001", symbol="rb2605", side=Side.BUY,
                                   price=3150.0 + i, qty=1) for i in range(6)]
    reasons = [(await h.wait_done(timeout=T) if i >= 4 else await h.acked(timeout=T)).reason
               for i, h in enumerate(handles)]
    assert reasons[:4] == [0, 0, 0, 0] and reasons[4] == Reason.HFT_LIMIT

    # A003 is not registered; manual1 trades it programmatically: 2 busy seconds of 3 orders
    m = await Client.connect("127.0.0.1", ports(gw)[0], "manual1", "manual-secret")
    for sec in range(2):
        burst = [m.send_order_nowait(account="A003", symbol="rb2605", side=Side.BUY,
                                     price=3100.0 + sec * 5 + i, qty=1) for i in range(3)]
        for h in burst:
            await h.acked(timeout=T)
        # The standard counts busy *seconds*: the next burst must start a new one (spacing
        # the flow as the rule defines it; nothing here waits for the gateway).
        await asyncio.sleep(1.05)
    codes = []
    while Reason.KILL_SWITCH not in codes:  # 1314 first, then close-only at the grace's end
        codes.append((await m.next_alert(timeout=T)).code)
    assert Reason.REPORT_NEEDS_CORRECTION in codes
    late = await m.send_order(account="A003", symbol="rb2605", side=Side.BUY, price=3100.0, qty=1)
    assert (await late.wait_done(timeout=T)).reason == Reason.ACCOUNT_CLOSE_ONLY
    await m.close()
    await c.close()
    code, out = await registry(gw, "show", "A003", "--json")
    view = json.loads(out)
    assert view["correction"]["close_only"] and view["enforced"]["status"] == "CLOSE_ONLY"

    gw.stop()  # a restart replays the journal
    gw2 = start_gateway(int(ex.match.group(1)), "--journal", str(tmp_path / "journal"),
                        config=tmp_path / "gateway.toml")
    try:
        gw2.wait_for("exchange link up")
        code, out = await registry(gw2, "show", "A003", "--json")
        assert json.loads(out) | {"history": []} == view | {"history": []}
        code, out = await registry(gw2, "show", "A001", "--json")
        assert json.loads(out)["enforced"]["hft"] == {"max_per_sec": 4, "max_per_day": 1000}
        code, out = await registry(gw2, "list")
        assert "A003" in out and "NEEDS CORRECTION (close-only)" in out
    finally:
        gw2.stop()


def _http(gw: Proc, method: str, path: str, body: bytes | dict | None = None,
          token: str = RISK) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(f"http://127.0.0.1:{ports(gw)[1]}{path}", method=method,
                                 data=data, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=T) as resp:
            raw = resp.read()
            return resp.status, raw.decode() if resp.headers.get_content_type() == "text/csv" \
                else json.loads(raw)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_registry_http_refusals_name_what_is_wrong(procs):
    _, gw = procs
    ok = {"report": HFT_REPORT, "reason": "new client"}
    code, out = _http(gw, "POST", "/v1/registry/A001/draft", ok, token="demo-viewer-token")
    assert code == 403 and "needs 'risk'" in out["error"]
    assert _http(gw, "POST", "/v1/registry/ZZ9/draft", ok)[0] == 404
    code, out = _http(gw, "POST", "/v1/registry/A001/approve", ok)
    assert code == 400 and "unknown step 'approve'" in out["error"]
    bad = json.loads(json.dumps(HFT_REPORT))
    bad["hft"]["max_per_sec"] = -3
    code, out = _http(gw, "POST", "/v1/registry/A001/draft", {"report": bad})
    assert code == 400 and out["field"] == "report.hft.max_per_sec", out
    code, out = _http(gw, "POST", "/v1/registry/A001/draft",
                      b'{"report": {"basics": {"trader_name": NaN}}}')
    assert code == 400 and "report.basics.trader_name" in out["error"], out
    code, out = _http(gw, "POST", "/v1/registry/A001/draft", {**ok, "colour": "red"})
    assert code == 400 and out["field"] == "colour"
    code, out = _http(gw, "POST", "/v1/registry/A001/submit", {"reason": "x"})
    assert code == 409 and "has no report yet: cannot submit it; allowed now: draft" in out["error"]
    code, out = _http(gw, "POST", "/v1/registry/A001/draft", {**ok, "exchange_ref": "x" * 201})
    assert code == 400 and out["field"] == "exchange_ref"
    # nothing above changed anything
    code, view = _http(gw, "GET", "/v1/registry/A001", token="demo-viewer-token")
    assert code == 200 and view["state"] is None and view["allowed"] == ["draft"]
    assert _http(gw, "POST", "/v1/registry/A001/draft", ok)[0] == 200
    code, out = _http(gw, "POST", "/v1/registry/A001/submit", {"report": HFT_REPORT})
    assert code == 400 and out["field"] == "report"  # a submit takes no report
    code, listing = _http(gw, "GET", "/v1/registry", token="demo-viewer-token")
    assert [v["account"] for v in listing if v["state"]] == ["A001"]
    code, csv_text = _http(gw, "GET", "/v1/registry/export?exchange=SHFE&format=csv",
                           token="demo-viewer-token")
    assert code == 200 and csv_text.splitlines()[1].startswith("SHFE,81000777,A001,DRAFT,0,0,,")
    code, out = _http(gw, "GET", "/v1/registry/export?exchange=SHFE&format=xml",
                      token="demo-viewer-token")
    assert code == 400 and out["field"] == "format"
