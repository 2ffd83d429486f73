"""Order-flow replay: file formats, their errors, timing modes and the summary's numbers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import msgspec
import pytest

from checks.enums import OrdType, Side, Tif
from simulator.exchange import ExchangeServer
from simulator.replay import (
    FlowAction,
    Login,
    ReplayFormatError,
    ReplaySummary,
    load_flow,
    parse_login,
    replay,
)

ROOT = Path(__file__).resolve().parents[2]
CSV = ROOT / "examples" / "flows" / "sample.csv"
JSONL = ROOT / "examples" / "flows" / "sample.jsonl"


def strip_lines(actions: list[FlowAction]) -> list[dict]:
    return [msgspec.structs.asdict(a) | {"line": 0} for a in actions]


def assert_sample_outcome(s: ReplaySummary) -> None:
    """What the sample flow must produce when replayed in order (worked out by hand)."""
    assert (s.sessions, s.orders_sent, s.cancels_sent) == (3, 21, 8)
    assert s.accepted == 18
    assert dict(s.rejected) == {"306 ORD_TYPE_NOT_ALLOWED_EXCHANGE": 1, "407 PRICE_NOT_ON_TICK": 1,
                                "501 PRICE_ABOVE_UPPER_LIMIT": 1}
    # Five matches (two reports each): 4 rb2605, 4 m2605, 2 IF2612, 3 SR605, 1 sc2603 lots.
    assert (s.fills, s.filled_qty) == (10, 28)
    # Seven explicit cancels, a market order with nothing to hit and an unfillable FOK.
    assert s.canceled == 9
    assert dict(s.cancel_rejects) == {"1204 ORDER_FINISHED": 1}
    assert s.unanswered == 0 and not s.errors
    assert len(s.latencies_us) == 21
    assert 0 < s.latency_us(0.5) <= s.latency_us(0.99) <= s.latency_us(1.0)


def test_csv_and_jsonl_samples_hold_the_same_flow() -> None:
    csv_flow, jsonl_flow = load_flow(CSV), load_flow(JSONL)
    assert len(csv_flow) == 29
    assert strip_lines(csv_flow) == strip_lines(jsonl_flow)
    first = csv_flow[0]
    assert (first.session, first.action, first.side, first.offset, first.price, first.qty) == \
        ("desk1", "new", Side.SELL, 2, 3205.0, 5)
    market = next(a for a in csv_flow if a.cl_ord_id == "h-3")
    assert (market.ord_type, market.tif, market.price) == (OrdType.MARKET, Tif.IOC, 0.0)
    assert [a.t_ms for a in csv_flow] == sorted(a.t_ms for a in csv_flow)


def test_msgpack_flow_files(tmp_path: Path) -> None:
    rows = [{k: v for k, v in msgspec.structs.asdict(a).items() if k != "line"} for a in load_flow(CSV)]
    path = tmp_path / "flow.msgpack"
    path.write_bytes(msgspec.msgpack.encode(rows))
    assert strip_lines(load_flow(path)) == strip_lines(load_flow(CSV))


HEADER = "t_ms,session,action,cl_ord_id,account,symbol,side,price,qty,orig_cl_ord_id\n"


@pytest.mark.parametrize(("body", "where"), [
    ("0,s,new,a,A001,m2605,UP,2900,1,\n", "flow.csv:2: side: 'UP' is not one of BUY, SELL"),
    (",s,new,a,A001,m2605,BUY,2900,1,\n", "flow.csv:2: t_ms: missing"),
    ("0,s,new,a,A001,m2605,BUY,cheap,1,\n", "flow.csv:2: price: Expected `float`"),
    ("0,s,new,a,,m2605,BUY,2900,1,\n", "flow.csv:2: account: required"),
    ("0,s,amend,a,A001,m2605,BUY,2900,1,\n", "flow.csv:2: action: expected 'new' or 'cancel'"),
    ("0,s,cancel,c,A001,,,,,\n", "flow.csv:2: orig_cl_ord_id: required"),
    ("0,s,new,a,A001,m2605,BUY,2900,1,\n1,s,new,a,A001,m2605,BUY,2900,1,\n",
     "flow.csv:3: cl_ord_id: 'a' already used in session 's' at line 2"),
    ("-5,s,new,a,A001,m2605,BUY,2900,1,\n", "flow.csv:2: t_ms: expected a time offset >= 0"),
])
def test_csv_mistakes_name_the_line_and_field(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "flow.csv"
    path.write_text(HEADER + body)
    with pytest.raises(ReplayFormatError) as info:
        load_flow(path)
    assert str(info.value).startswith(str(tmp_path)) and where in str(info.value)


def test_jsonl_mistakes_and_unknown_formats(tmp_path: Path) -> None:
    path = tmp_path / "flow.jsonl"
    path.write_text('{"t_ms": 0, "session": "s", "action": "new", "cl_ord_id": "a", "account": "A001",'
                    ' "symbol": "m2605", "side": "BUY", "price": 1, "qty": 1}\n{"t_ms": 1,\n')
    with pytest.raises(ReplayFormatError, match="flow.jsonl:2: not valid JSON"):
        load_flow(path)
    path.write_text('{"t_ms": 0, "session": "s", "action": "new", "colour": "red"}\n')
    with pytest.raises(ReplayFormatError, match="flow.jsonl:1: colour: unknown column"):
        load_flow(path)
    with pytest.raises(ReplayFormatError, match="unknown flow format '.xlsx'"):
        load_flow(tmp_path / "flow.xlsx")


def test_parse_login() -> None:
    assert parse_login("desk1=u1:pw:A001,A004") == ("desk1", Login("u1", "pw", ["A001", "A004"]))
    assert parse_login("hft=u2:") == ("hft", Login("u2", "", []))


@pytest.mark.parametrize("path", [CSV, JSONL])
async def test_as_fast_as_possible_in_file_order(exchange: ExchangeServer, path: Path) -> None:
    summary = await replay(load_flow(path), "127.0.0.1", exchange.port, speed=0, sync_sessions=True)
    assert_sample_outcome(summary)


@pytest.mark.parametrize("speed", [1.0, 20.0])
async def test_original_and_scaled_timing(exchange: ExchangeServer, speed: float) -> None:
    summary = await replay(load_flow(CSV), "127.0.0.1", exchange.port, speed=speed,
                           sync_sessions=True, id_prefix=f"x{speed:g}-")
    assert_sample_outcome(summary)


async def test_unsynchronised_sessions_still_account_for_everything(exchange: ExchangeServer) -> None:
    s = await replay(load_flow(CSV), "127.0.0.1", exchange.port, speed=0, progress=True)
    assert (s.orders_sent, s.cancels_sent, s.rejected_total, s.unanswered) == (21, 8, 3, 0)
    assert s.accepted + s.rejected_total == s.orders_sent
    assert s.fills % 2 == 0  # both sides of every match are replayed sessions


async def test_replay_command_prints_the_summary(exchange: ExchangeServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "replay", str(CSV), "--port", str(exchange.port),
        "--speed", "max", "--sync-sessions", "--no-progress", "--login", "hft=hft-seat:pw",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "replay summary" in text and "407 PRICE_NOT_ON_TICK" in text
    assert "1204 ORDER_FINISHED" in text
    assert exchange.stats.logons == 3


async def test_replay_command_reports_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "0,s,new,a,A001,m2605,UP,2900,1,\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "replay", str(bad), "--port", "1",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"bad.csv:2: side" in out
