"""The daily surveillance report: figures from a scripted day, counted by hand, and reproducible.

The flow (Monday 2026-11-30, trading day 2026-11-30; user algo1 on session 1):

- A001 sends 12 resting buys of 1 lot (b0..b11, 3190 down to 3179) 50 ms apart: 12 messages in
  one rolling second, and the 10th makes a second reach the programmatic standard (occasion 1);
- five seconds later it cancels b0..b9 50 ms apart: 10 cancels in 450 ms (occasion 2);
- a 300-lot buy (SHFE's large-order size) and its cancel: one more cancel, a large one;
- an IOC (FAK) buy of 2 lots the exchange cancels unfilled: a FAK, not a client cancel;
- a sell of 1 lot at 3180 that would trade with its own resting b10: refused 1101;
- an order for an unknown instrument (401) and one reusing cl_ord_id b0 (refused by the router
  before the engine, with no decision record);
- A004 buys 5 lots to open: filled 3 + 2 (execution E1 arrives twice: counted once); A004 then
  cancels the filled order (answered 1204: not counted);
- A005 sells 4 lots to open, filled at once as a self-trade the exchange flagged;
- the risk desk kills and resets A005; the registry raises "report needs correction" for A004;
- Friday's order and Monday 17:30's (the next trading day's night session) do not count.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from checks.calendar import ns_from_local
from checks.enums import AlertLevel, ExecType, Offset, OrdStatus, Side, Tif
from checks.reasons import Reason
from gateway import journal as jr
from gateway.compliance.report import build, parse_date, sessions_per_second, start_seq
from gateway.compliance.report_csv import COLUMNS, to_csv, write_csv
from gateway.protocol import Alert, TerminalData
from gateway.server import Gateway
from tests.compliance.flows import MS, Live
from tests.conftest import ROOT

FRIDAY = ns_from_local(2026, 11, 27, 10, 0)
MON_10 = ns_from_local(2026, 11, 30, 10, 0)
MON_1730 = ns_from_local(2026, 11, 30, 17, 30)
S = 1_000_000_000
DAY = parse_date("2026-11-30")


def _scripted_day(path: Path) -> Live:
    live = Live(path, FRIDAY - 1)
    s = live.logon(1, FRIDAY, ("A001", "A004", "A005"), app_id="ALGO1-APP",
                   terminal=TerminalData("10.1.2.3", "00:16:3e:aa:bb:cc", "host1"))
    live.order(s, "y1", FRIDAY + MS, "A001", price=3100.0)  # Friday: another trading day
    t = MON_10
    for i in range(12):
        assert live.order(s, f"b{i}", t + i * 50 * MS, "A001", price=3190.0 - i)
    for i in range(10):
        live.cancel(s, f"c{i}", f"b{i}", "A001", t + 5 * S + i * 50 * MS)
    assert live.order(s, "L1", t + 60 * S, "A001", price=3150.0, qty=300)
    live.cancel(s, "cL1", "L1", "A001", t + 61 * S)
    fak = live.order(s, "F1", t + 120 * S, "A001", price=3200.0, qty=2, tif=Tif.IOC)
    live.report(fak, "A001", ExecType.CANCELED, t + 120 * S + MS, status=OrdStatus.CANCELED)
    assert not live.order(s, "S1", t + 130 * S, "A001", side=Side.SELL, offset=Offset.CLOSE,
                          price=3180.0)  # would trade with b10: 1101
    assert not live.order(s, "U1", t + 140 * S, "A001", symbol="xx999")
    assert not live.order(s, "b0", t + 150 * S, "A001", price=3000.0)  # cl_ord_id used today
    o1 = live.order(s, "o1", t + 180 * S, "A004", qty=5)
    live.report(o1, "A004", ExecType.NEW, t + 180 * S + MS, status=OrdStatus.NEW)
    live.fill(o1, "A004", t + 181 * S, 3, "E1", final=False)
    live.fill(o1, "A004", t + 181 * S + MS, 3, "E1", final=False)  # the same execution again
    live.fill(o1, "A004", t + 182 * S, 2, "E2", final=True)
    live.cancel(s, "co1", "o1", "A004", t + 183 * S)  # already filled: 1204, not counted
    o2 = live.order(s, "o2", t + 184 * S, "A005", side=Side.SELL, qty=4)
    live.fill(o2, "A005", t + 185 * S, 4, "E3", final=True, self_trade=True)
    live.gw.killswitch.kill("account", "A005", operator="risk-officer-li",
                            reason="self-trade review", now=t + 200 * S)
    live.gw.killswitch.reset("account", "A005", operator="risk-officer-li",
                             reason="reviewed", now=t + 300 * S)
    # The alert the programmatic-trading registry raises when an account's behaviour no
    # longer matches its report (reason 1314, REPORT_NEEDS_CORRECTION).
    live.router.alert(AlertLevel.CRITICAL, Reason.REPORT_NEEDS_CORRECTION, "account:A004",
                      "report needs correction", t + 400 * S)
    live.order(s, "n1", MON_1730, "A001", price=3100.0)  # Tuesday's trading day
    return live


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("journal")
    _scripted_day(path).close()
    return path


def _rows(report, table: str) -> dict[tuple[str, ...], dict[str, str]]:
    text = to_csv(report, table).decode().splitlines()
    head = text[0].split(",")
    out = {}
    for line in text[1:]:
        row = dict(zip(head, line.split(","), strict=True))
        out[(row[head[0]], row[head[1]])] = row
    return out


def test_figures_match_the_hand_count(journal):
    report = build(_cfg(), journal, DAY)
    c = _rows(report, "contracts")
    a001 = c[("A001", "rb2605")]
    assert {k: a001[k] for k in ("orders", "refused", "fak_fok", "cancels", "fak_cancels",
                                 "large_cancels",
                                 "fills", "self_trade_refusals", "max_per_sec", "busy_seconds",
                                 "cancel_limit", "large_order_qty", "large_cancel_limit")} == {
        "orders": "16",  # b0..b11, L1, F1, S1, the second b0 (y1 and n1 are other days)
        "refused": "2",  # S1 (1101) and the second b0
        "fak_fok": "1", "cancels": "11", "fak_cancels": "1", "large_cancels": "1", "fills": "0",
        "self_trade_refusals": "1", "max_per_sec": "12", "busy_seconds": "2",
        "cancel_limit": "500", "large_order_qty": "300", "large_cancel_limit": "50"}
    assert c[("A001", "xx999")]["orders"] == "1" and c[("A001", "xx999")]["refused"] == "1"
    a004 = c[("A004", "rb2605")]
    assert (a004["orders"], a004["cancels"], a004["fills"], a004["filled_lots"],
            a004["open_volume"], a004["group_open_volume"], a004["open_limit"]) == \
        ("1", "0", "2", "5", "5", "9", "300")  # G-HUANG: A004's 5 and A005's 4
    a005 = c[("A005", "rb2605")]
    assert (a005["fills"], a005["self_trades"], a005["self_trade_limit"], a005["open_volume"],
            a005["group_open_volume"]) == ("1", "1", "5", "4", "9")

    accounts = {r.account: r for r in report.accounts}
    assert (accounts["A001"].orders, accounts["A001"].refused, accounts["A001"].cancels,
            accounts["A001"].messages, accounts["A001"].max_per_sec,
            accounts["A001"].busy_seconds) == (17, 3, 11, 25, 12, 2)
    assert not accounts["A001"].programmatic_standard and not accounts["A001"].hft_standard
    assert accounts["A004"].needs_correction and not accounts["A001"].needs_correction
    assert accounts["A005"].stops == 2

    products = {(p.account, p.product): p for p in report.products}
    assert (products[("A001", "rb")].messages, products[("A001", "rb")].filled_orders,
            products[("A001", "rb")].otr) == (25, 0, 24.0)  # 25 / max(0, 1) - 1
    assert (products[("A004", "rb")].messages, products[("A004", "rb")].filled_orders,
            products[("A004", "rb")].otr) == (1, 1, 0.0)
    assert [(x.action, x.key, x.operator, x.reason) for x in report.actions] == [
        ("kill", "A005", "risk-officer-li", "self-trade review"),
        ("reset", "A005", "risk-officer-li", "reviewed")]
    assert [a for a, _, _ in report.corrections] == ["A004"]
    seats = {r.account: r for r in report.seats}
    assert (seats["A001"].users, seats["A001"].sessions, seats["A001"].seats, seats["A001"].apps,
            seats["A001"].terminals) == ("algo1", 1, "GW1", "ALGO1-APP",
                                         "10.1.2.3/00:16:3e:aa:bb:cc")
    firm = {r[2]: r[3] for r in (line.split(",") for line in
                                 to_csv(report, "firm").decode().splitlines()[1:])}
    assert (firm["orders"], firm["cancels"], firm["fills"], firm["filled_lots"],
            firm["self_trades"], firm["needs_correction"], firm["stops"]) == \
        ("19", "11", "3", "9", "1", "1", "2")


def _cfg():
    from gateway.config import load_gateway_config
    from tests.conftest import EXAMPLES

    return load_gateway_config(EXAMPLES / "gateway.toml")


def _csv_bytes(journal: Path, out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in write_csv(build(_cfg(), journal, DAY), out)}


def test_the_same_journal_gives_byte_identical_csv_twice_and_after_a_restart(journal, tmp_path):
    first = _csv_bytes(journal, tmp_path / "1")
    assert sorted(first) == sorted(f"daily-20261130-{t}.csv" for t in COLUMNS)
    assert _csv_bytes(journal, tmp_path / "2") == first
    # A restart of the gateway on this journal (replay, boot record, checkpoint) adds records
    # of its own day; the report of 2026-11-30 does not move.
    copy = tmp_path / "restarted"
    copy.mkdir()
    for seg in journal.iterdir():
        (copy / seg.name).write_bytes(seg.read_bytes())
    cfg = _cfg()
    cfg = msgspec.structs.replace(cfg, journal=msgspec.structs.replace(cfg.journal, dir=str(copy)))
    from checks.engine import Engine as ReferenceEngine

    gw = Gateway(cfg, engine_cls=ReferenceEngine)
    assert gw.recovery is not None and gw.recovery.records > 0
    gw.audit.close()
    assert jr.JournalReader(copy).__iter__() is not None
    assert sum(1 for _ in jr.JournalReader(copy)) > sum(1 for _ in jr.JournalReader(journal))
    assert _csv_bytes(copy, tmp_path / "3") == first
    # Reading starts at the segment the day's checkpoint opens, not at the journal's start.
    start = start_seq(copy, DAY)
    assert start > 1 and start == start_seq(journal, DAY)
    assert next(iter(jr.JournalReader(copy, start)))[1].ts_ns >= MON_10 - 17 * 3600 * S
    end = build(cfg, copy, DAY).end_ns
    assert build(cfg, copy, DAY).records == sum(
        1 for _, r in jr.JournalReader(copy, start) if r.ts_ns < end or type(r) is jr.State)
    assert build(cfg, copy, DAY).records < sum(1 for _ in jr.JournalReader(copy))
    assert start_seq(copy, parse_date("2026-11-26")) == 0  # no checkpoint that early


def test_the_report_needs_no_outbound_records_nor_accepted_decisions(journal, tmp_path):
    """The journal's contract: after the lead's slimming, only inputs, refusals and the risk
    desk's alerts stay. The same figures must come out of that journal."""
    slim = tmp_path / "slim"
    with jr.Journal.open(slim) as j:
        for _, rec in jr.JournalReader(journal):
            if type(rec) is jr.Outbound and not (rec.session == jr.NO_SESSION
                                                 and type(rec.msg) is Alert):
                continue
            if type(rec) is jr.Decision and rec.reason == 0:
                continue
            j.append(rec)
    assert _csv_bytes(slim, tmp_path / "s") == _csv_bytes(journal, tmp_path / "f")


def test_sessions_per_second_counts_occasions_like_the_engine():
    # 10 in (t-1s, t]: one occasion; staying above does not count again; a new burst does.
    burst = [i * 10 * MS for i in range(15)]
    assert sessions_per_second(burst, 10) == (15, 1)
    assert sessions_per_second(burst + [5 * S + i * MS for i in range(10)], 10) == (15, 2)
    assert sessions_per_second([0, S], 2) == (1, 0)  # the window is (t - 1 s, t]
    assert sessions_per_second([], 10) == (0, 0)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "report", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_cli_writes_csv_and_html_and_says_when_matplotlib_is_missing(journal, tmp_path):
    out = tmp_path / "out"
    r = _cli("daily", "--date", "2026-11-30", "--journal", str(journal), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "sample configuration" in r.stderr  # no --config: it says whose limits it used
    html = (out / "daily-20261130.html").read_text()
    assert "data:image/png;base64," in html and "A004" in html
    # Without matplotlib: one clear line, the CSV still written, exit 0.
    fake = tmp_path / "nompl"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    out2 = tmp_path / "out2"
    r = _cli("daily", "--date", "2026-11-30", "--journal", str(journal), "--out", str(out2),
             env={"PYTHONPATH": f"{fake}{os.pathsep}{ROOT}"})
    assert r.returncode == 0, r.stderr
    assert "matplotlib is not installed" in r.stderr and "Traceback" not in r.stderr
    assert not (out2 / "daily-20261130.html").exists()
    assert (out2 / "daily-20261130-contracts.csv").read_bytes() == \
        (out / "daily-20261130-contracts.csv").read_bytes()


@pytest.mark.parametrize("args, says", [
    (["--date", "2026-11-28"], "Saturday"),
    (["--date", "30/11/2026"], "YYYY-MM-DD"),
    (["--date", "2026-11-30", "--journal", "/nonexistent/j"], "not a directory"),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, says):
    r = _cli("daily", *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr


def test_a_client_chosen_name_never_becomes_a_spreadsheet_formula():
    from gateway.compliance.report_rows import ContractRow, DailyReport, ProductRow

    rows = [ContractRow("=HYPERLINK(\"http://x\")", "@SUM(A1)", orders=1)]
    products = [ProductRow("+A1", "rb", 1, 2, -0.5, 0.0)]
    report = DailyReport("firm", "2026-11-30", 0, 1, rows, [], products, [], [], [], 1)
    contracts = to_csv(report, "contracts").decode().splitlines()[1]
    assert contracts.startswith('"\'=HYPERLINK(""http://x"")",\'@SUM(A1),')
    assert to_csv(report, "products").decode().splitlines()[1] == "'+A1,rb,1,2,-0.5000,0.00"


def test_a_damaged_journal_reports_up_to_the_damage_and_says_so(journal, tmp_path):
    copy = tmp_path / "damaged"
    copy.mkdir()
    for seg in sorted(journal.glob("*.journal")):
        (copy / seg.name).write_bytes(seg.read_bytes())
    first = jr.segment_name(start_seq(copy, DAY))  # the segment the day's report reads
    first = copy / first
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of it
    first.write_bytes(bytes(data))
    report = build(_cfg(), copy, DAY)
    assert report.damage and first.name in report.damage
    r = _cli("daily", "--date", "2026-11-30", "--journal", str(copy), "--out", str(tmp_path / "o"),
             "--no-html")
    assert r.returncode == 1 and "journal is damaged" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "o" / "daily-20261130-contracts.csv").exists()


async def test_a_day_through_real_gateway_and_simulator_processes(tmp_path):
    """The journal a real gateway writes (whatever it holds beyond the contract) gives the
    figures of a small flow: counts only, no timing."""
    import time

    from checks.calendar import trading_day_number
    from simulator.client import Client
    from tests.conftest import start_exchange, start_gateway

    ex = start_exchange()
    gw = start_gateway(int(ex.match.group(1)), "--journal", str(tmp_path / "j"))
    try:
        gw.wait_for("exchange link up")
        port = int(gw.match.group(1))
        c = await Client.connect("127.0.0.1", port, "algo1", "algo-secret",
                                 accounts=["A001", "H001"])
        buy = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=3200.0,
                                 qty=2)
        await buy.acked(timeout=10)
        sell = await c.send_order(account="H001", symbol="rb2605", side=Side.SELL, price=3200.0,
                                  qty=1)
        await sell.wait_done(timeout=10)
        await buy.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=10)
        await c.cancel(buy.cl_ord_id)
        await buy.wait_done(timeout=10)
        bad = await c.send_order(account="A001", symbol="nope", side=Side.BUY, price=1.0, qty=1)
        assert (await bad.acked(timeout=10)).reason == 401
        await c.close()
    finally:
        gw.stop()
        ex.stop()
    cfg = _cfg()
    day = trading_day_number(time.time_ns(), cfg.risk.day_boundary_s)
    report = build(cfg, tmp_path / "j", day)
    rows = {(r.account, r.symbol): r for r in report.contracts}
    a, h = rows[("A001", "rb2605")], rows[("H001", "rb2605")]
    assert (a.orders, a.refused, a.cancels, a.fills, a.filled_lots, a.open_volume) == \
        (1, 0, 1, 1, 1, 1)
    assert (h.orders, h.fills, h.filled_lots) == (1, 1, 1)
    assert (rows[("A001", "nope")].orders, rows[("A001", "nope")].refused) == (1, 1)
