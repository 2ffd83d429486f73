"""Execution ids: on every trade, unique, and said again by a trade query exactly as first sent.

The engine-level tests use an injected clock, so a remembered execution must equal the live
report field for field; the exchange-level tests go over TCP with the client library and a raw
connection, as a member seat would.
"""

from __future__ import annotations

from sim_wire import RawConnection

from checks.enums import ExecType, OrdStatus, OrdType, Side, Tif
from checks.model import RiskConfig
from gateway.protocol import CancelOrder, ExecReport, NewOrder, OrderStatusEnd, OrderStatusRequest
from simulator.client import Client
from simulator.exchange import ExchangeServer
from simulator.matching import AckOnlyEngine, MatchingEngine

BUY, SELL = int(Side.BUY), int(Side.SELL)
T = 5.0  # seconds: generous timeouts, never asserted on


def order(cl: str, side: int, price: float, qty: int, *, account: str = "A001",
          tif: int = int(Tif.GFD), ord_type: int = int(OrdType.LIMIT)) -> NewOrder:
    return NewOrder(cl, account, "m2605", side, 1, 1, ord_type, tif, price, qty)


def trades(reports: list) -> list[ExecReport]:
    return [m for _, m in reports if isinstance(m, ExecReport) and m.exec_type == ExecType.TRADE]


def engine(risk: RiskConfig, **kw: object) -> MatchingEngine:
    return MatchingEngine(risk.instruments, risk.exchanges, clock=lambda: 42, **kw)  # type: ignore[arg-type]


def test_every_trade_report_has_an_exec_id_and_both_sides_differ(risk: RiskConfig) -> None:
    e = engine(risk)
    out = []
    out += e.submit("maker", order("s1", SELL, 2905, 2, account="H001"))
    out += e.submit("maker", order("s2", SELL, 2906, 3, account="H001"))
    out += e.submit("maker", order("s3", SELL, 2906, 1, account="A001"))  # a self-trade below
    out += e.submit("taker", order("b1", BUY, 2906, 6))  # three matches over two levels
    out += e.submit("taker", order("b2", BUY, 0.0, 1, tif=int(Tif.IOC), ord_type=int(OrdType.MARKET)))
    fills = trades(out)
    assert len(fills) == 6  # both sides of each of the three matches; the market order found nothing
    ids = [f.exec_id for f in fills]
    assert all(ids) and len(set(ids)) == len(ids)
    assert [f.self_trade for f in fills] == [False, False, False, False, True, True]
    # Non-trade reports carry no execution id.
    assert all(m.exec_id == "" for _, m in out if isinstance(m, ExecReport)
               and m.exec_type != ExecType.TRADE)


def test_a_restarted_or_second_engine_never_reuses_an_id(risk: RiskConfig) -> None:
    seen: set[str] = set()
    for _ in range(20):  # twenty engines started within the same few milliseconds
        e = engine(risk)
        e.submit("m", order("s", SELL, 2905, 1, account="H001"))
        [a, b] = trades(e.submit("t", order("b", BUY, 2905, 1)))
        assert not {a.exec_id, b.exec_id} & seen
        seen |= {a.exec_id, b.exec_id}


def test_the_ack_only_engine_fills_with_exec_ids(risk: RiskConfig) -> None:
    e = AckOnlyEngine(risk.instruments, risk.exchanges, fill=True)
    ids = [trades(e.submit("u", order(f"o{i}", BUY, 2901, 1)))[0].exec_id for i in range(50)]
    assert all(ids) and len(set(ids)) == 50


def test_trade_reports_repeat_each_execution_as_first_sent(risk: RiskConfig) -> None:
    e = engine(risk)
    live: list[ExecReport] = []
    live += trades(e.submit("maker", order("rest", SELL, 2905, 10, account="H001")))
    for n, qty in enumerate((3, 2, 4)):
        live += trades(e.submit("taker", order(f"hit{n}", BUY, 2905, qty)))
    live += trades(e.cancel("maker", CancelOrder("c", "rest", "H001")))
    [rest] = e.finished("maker")
    said = e.trade_reports(rest)
    assert said == [r for r in live if r.cl_ord_id == "rest"]
    # As after each execution: cum_qty, leaves and status step through what happened.
    assert [(r.last_qty, r.cum_qty, r.leaves_qty, r.status) for r in said] == [
        (3, 3, 7, OrdStatus.PARTIALLY_FILLED), (2, 5, 5, OrdStatus.PARTIALLY_FILLED),
        (4, 9, 1, OrdStatus.PARTIALLY_FILLED)]
    for taker in e.finished("taker"):
        assert e.trade_reports(taker) == [r for r in live if r.cl_ord_id == taker.cl_ord_id]


def test_execution_memory_is_bounded_by_orders_and_by_executions(risk: RiskConfig) -> None:
    e = engine(risk, finished_memory=1000, trade_memory=100)
    e.submit("maker", order("big", SELL, 2905, 500, account="H001"))
    for i in range(400):  # 400 one-lot fills of one resting order, plus 400 finished takers
        e.submit("taker", order(f"t{i}", BUY, 2905, 1))
        assert e.remembered_executions() <= 100 + len(e.working("maker")[0].execs)
    assert len(e.finished("taker")) == 100  # each finished taker holds one execution
    assert e.trade_reports(e.finished("taker")[0])[0].cl_ord_id == "t300"  # the newest kept
    # The resting order's own executions stay while it works, and are counted once it ends.
    assert len(e.trade_reports(e.working("maker")[0])) == 400
    e.cancel("maker", CancelOrder("c", "big", "H001"))
    assert e.remembered_executions() <= 100
    e = engine(risk, finished_memory=10)
    for i in range(50):
        e.submit("m", order(f"s{i}", SELL, 2905, 1, account="H001"))
        e.submit("t", order(f"b{i}", BUY, 2905, 1))
    assert len(e.finished("m")) + len(e.finished("t")) == 10
    assert e.remembered_executions() == 10


def test_a_reused_cl_ord_id_replaces_the_finished_order_in_memory(risk: RiskConfig) -> None:
    e = engine(risk)
    for _ in range(3):
        e.submit("m", order("s", SELL, 2905, 1, account="H001"))
        e.submit("t", order("b", BUY, 2905, 1))
    assert e.remembered_executions() == 2
    [b] = e.finished("t")
    assert len(e.trade_reports(b)) == 1


# -- over TCP -------------------------------------------------------------------------------

async def connect(server: ExchangeServer, user: str) -> Client:
    return await Client.connect("127.0.0.1", server.port, user, "pw")


async def test_a_trade_query_sends_each_execution_once_with_the_ids_seen_live(
        exchange: ExchangeServer) -> None:
    maker, taker = await connect(exchange, "maker"), await connect(exchange, "taker")
    live: list[ExecReport] = []
    maker.on_report = lambda r: live.append(r) if isinstance(r, ExecReport) else None
    rest = await maker.send_order(account="H001", symbol="m2605", side=SELL, price=2905, qty=6)
    done = await maker.send_order(account="H001", symbol="m2605", side=SELL, price=2906, qty=1)
    await rest.acked(T)
    await done.acked(T)
    for qty in (2, 3):
        await (await taker.send_order(account="A001", symbol="m2605", side=BUY, price=2905,
                                      qty=qty)).wait_done(T)
    await rest.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=T)
    await (await taker.send_order(account="A001", symbol="m2605", side=BUY, price=2906,
                                  qty=2)).wait_done(T)
    await done.wait_done(T)
    await rest.wait_status(OrdStatus.FILLED, timeout=T)
    live_ids = {r.cl_ord_id: [x.exec_id for x in live if x.cl_ord_id == r.cl_ord_id
                              and x.exec_type == ExecType.TRADE] for r in (rest, done)}
    assert len(live_ids[rest.cl_ord_id]) == 3 and len(live_ids[done.cl_ord_id]) == 1
    assert rest.exec_ids == live_ids[rest.cl_ord_id]  # the handle surfaces the ids it saw

    # Over a raw connection, the exact wire order: each order's trades, then its status.
    raw = await RawConnection.open(exchange.port, "maker")  # takes the maker's seat over
    raw.send(OrderStatusRequest("q", "", False, True))
    got = [await raw.recv()]
    while not isinstance(got[-1], OrderStatusEnd):
        got.append(await raw.recv())
    assert got[-1] == OrderStatusEnd("q", 2)
    kinds = [(m.cl_ord_id, m.exec_type, m.exec_id) for m in got[:-1]]
    assert kinds == [(rest.cl_ord_id, ExecType.TRADE, x) for x in live_ids[rest.cl_ord_id]] + \
        [(rest.cl_ord_id, ExecType.STATUS, "")] + \
        [(done.cl_ord_id, ExecType.TRADE, x) for x in live_ids[done.cl_ord_id]] + \
        [(done.cl_ord_id, ExecType.STATUS, "")]
    # Field for field the report first sent: same time, lots, price, cum_qty, leaves, status.
    assert [m for m in got[:-1] if m.exec_type == ExecType.TRADE] == \
        [x for x in live if x.exec_type == ExecType.TRADE]
    raw.close()
    await taker.close()


async def test_a_seat_back_from_an_outage_learns_the_fills_it_missed_each_once(
        exchange: ExchangeServer) -> None:
    away = await connect(exchange, "seat")
    resting = await away.send_order(account="A001", symbol="m2605", side=SELL, price=2910,
                                    qty=5, cl_ord_id="keep")
    await resting.acked(T)
    away.abort()
    other = await connect(exchange, "other")
    for qty in (1, 2):  # two fills the seat never hears about live
        await (await other.send_order(account="H001", symbol="m2605", side=BUY, price=2910,
                                      qty=qty)).wait_done(T)
    back = await connect(exchange, "seat")
    answer = await back.request_status(trades=True)
    assert [(r.exec_type, r.last_qty, r.cum_qty) for r in answer] == [
        (ExecType.TRADE, 1, 1), (ExecType.TRADE, 2, 3), (ExecType.STATUS, 0, 3)]
    [working] = exchange.engine.working("seat")
    truth = [x.exec_id for x in working.execs]
    assert [r.exec_id for r in answer[:2]] == truth
    adopted = back.order("keep")
    assert adopted is not None and adopted.exec_ids == truth and adopted.fills == 2
    # Asking again changes nothing on the handle: each execution counts once.
    again = await back.request_status(trades=True)
    assert [r.exec_id for r in again if r.exec_type == ExecType.TRADE] == truth
    assert (adopted.fills, adopted.cum_qty, adopted.status) == (2, 3, OrdStatus.PARTIALLY_FILLED)
    # A new fill arrives live with a new id and moves the handle on.
    await (await other.send_order(account="H001", symbol="m2605", side=BUY, price=2910,
                                  qty=2)).wait_done(T)
    final = await adopted.wait_done(T)
    assert (final.status, final.cum_qty, adopted.fills) == (OrdStatus.FILLED, 5, 3)
    assert final.exec_id and final.exec_id not in truth
    await back.close()
    await other.close()


async def test_a_plain_status_request_sends_no_trades(exchange: ExchangeServer) -> None:
    a, b = await connect(exchange, "a"), await connect(exchange, "b")
    rest = await a.send_order(account="A001", symbol="m2605", side=SELL, price=2905, qty=3)
    await rest.acked(T)
    await (await b.send_order(account="H001", symbol="m2605", side=BUY, price=2905, qty=1)).wait_done(T)
    await rest.wait_status(OrdStatus.PARTIALLY_FILLED, timeout=T)
    assert [r.exec_type for r in await a.request_status(open_only=False)] == [ExecType.STATUS]
    await a.close()
    await b.close()


async def test_a_status_request_naming_orders_adds_only_those_finished(
        exchange: ExchangeServer) -> None:
    seat, other = await connect(exchange, "seat"), await connect(exchange, "other")
    ended = []
    for i in range(3):  # three orders that end, only one of which the seat will name
        h = await seat.send_order(account="A001", symbol="m2605", side=SELL, price=2905,
                                  qty=1, cl_ord_id=f"f{i}")
        await h.acked(T)
        await (await other.send_order(account="H001", symbol="m2605", side=BUY, price=2905,
                                      qty=1)).wait_done(T)
        ended.append(await h.wait_done(T))
    working = await seat.send_order(account="A001", symbol="m2605", side=SELL, price=2950,
                                    qty=1, cl_ord_id="w")
    await working.acked(T)
    raw = await RawConnection.open(exchange.port, "seat")  # takes the seat over
    raw.send(OrderStatusRequest("q", "", True, True, ["f1", "nobody"]))
    got = [await raw.recv()]
    while not isinstance(got[-1], OrderStatusEnd):
        got.append(await raw.recv())
    assert got[-1] == OrderStatusEnd("q", 2)  # f1 (how it ended) and w (working)
    assert [(m.cl_ord_id, m.exec_type) for m in got[:-1]] == [
        ("f1", ExecType.TRADE), ("f1", ExecType.STATUS), ("w", ExecType.STATUS)]
    assert got[0].exec_id == ended[1].exec_id
    raw.close()
    await other.close()
