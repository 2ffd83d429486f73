"""Unit tests of the matching engine: each order type, each reject reason, cancels, ack-only."""

from __future__ import annotations

import math

import pytest

from checks.enums import ExecType, OrdStatus, OrdType, Side, Tif
from checks.model import Instrument, RiskConfig
from checks.reasons import Reason
from gateway.protocol import CancelOrder, CancelReject, ExecReport, NewOrder
from simulator.matching import AckOnlyEngine, MatchingEngine, to_ticks

BUY, SELL = int(Side.BUY), int(Side.SELL)
GFD, IOC, FOK = int(Tif.GFD), int(Tif.IOC), int(Tif.FOK)
LIMIT, MARKET = int(OrdType.LIMIT), int(OrdType.MARKET)


def order(cl: str, side: int, price: float, qty: int | float, *, symbol: str = "m2605",
          account: str = "A001", tif: int = GFD, ord_type: int = LIMIT) -> NewOrder:
    return NewOrder(cl, account, symbol, side, 1, 1, ord_type, tif, price, qty)


@pytest.fixture
def engine(risk: RiskConfig) -> MatchingEngine:
    return MatchingEngine(risk.instruments, risk.exchanges, clock=lambda: 42, record_trades=True)


def msgs(reports: list) -> list:
    return [m for _, m in reports]


def only_reject(reports: list) -> ExecReport:
    assert len(reports) == 1
    rep = reports[0][1]
    assert rep.status == OrdStatus.REJECTED and rep.exec_type == ExecType.REJECTED
    assert rep.text.startswith("exchange: ")
    return rep


def test_to_ticks_rounds_half_up_once() -> None:
    assert to_ticks(640.02, 0.02) == 32001
    assert to_ticks(3900.2, 0.2) == 19501
    assert to_ticks(0.3, 0.1) == 3


def test_new_order_is_acknowledged_and_rests(engine: MatchingEngine) -> None:
    [(owner, ack)] = engine.submit("u1", order("a", BUY, 2899, 3))
    assert owner == "u1"
    assert (ack.status, ack.exec_type, ack.leaves_qty, ack.cum_qty) == (OrdStatus.NEW, ExecType.NEW, 3, 0)
    assert ack.order_id and ack.side == BUY and ack.price == 2899.0 and ack.qty == 3
    assert engine.book("m2605").best_bid() == 2899
    assert [o.cl_ord_id for o in engine.working("u1")] == ["a"]


def test_full_and_partial_fill_report_both_sides(engine: MatchingEngine) -> None:
    engine.submit("maker", order("s", SELL, 2905, 5, account="H001"))
    out = msgs(engine.submit("taker", order("b", BUY, 2910, 3)))
    assert [m.exec_type for m in out] == [ExecType.NEW, ExecType.TRADE, ExecType.TRADE]
    taker, maker = out[1], out[2]
    assert (taker.cl_ord_id, taker.status, taker.last_qty, taker.last_px, taker.leaves_qty) == \
        ("b", OrdStatus.FILLED, 3, 2905.0, 0)  # price improvement: the resting price
    assert (maker.cl_ord_id, maker.status, maker.cum_qty, maker.leaves_qty) == \
        ("s", OrdStatus.PARTIALLY_FILLED, 3, 2)
    assert not taker.self_trade
    assert engine.working("taker") == []
    assert engine.book("m2605").depth(SELL) == [(2905, 2)]


def test_reports_route_to_each_owner(engine: MatchingEngine) -> None:
    engine.submit("maker", order("s", SELL, 2905, 1, account="H001"))
    owners = [o for o, _ in engine.submit("taker", order("b", BUY, 2905, 1))]
    assert owners == ["taker", "taker", "maker"]


def test_price_then_time_priority(engine: MatchingEngine) -> None:
    engine.submit("m", order("late-better", SELL, 2904, 1))
    engine.submit("m", order("first", SELL, 2905, 1))
    engine.submit("m", order("second", SELL, 2905, 1))
    engine.submit("m", order("best", SELL, 2903, 1))
    out = msgs(engine.submit("t", order("sweep", BUY, 2905, 3, account="H001")))
    makers = [m.cl_ord_id for m in out if m.exec_type == ExecType.TRADE and m.cl_ord_id != "sweep"]
    assert makers == ["best", "late-better", "first"]
    assert [o.cl_ord_id for o in engine.book("m2605").orders_at(SELL, 2905)] == ["second"]


def test_self_trade_is_matched_and_flagged(engine: MatchingEngine) -> None:
    engine.submit("u", order("s", SELL, 2905, 1))
    trades = [m for m in msgs(engine.submit("u", order("b", BUY, 2905, 1)))
              if m.exec_type == ExecType.TRADE]
    assert len(trades) == 2 and all(t.self_trade for t in trades)


def test_ioc_fills_what_it_can_and_cancels_the_rest(engine: MatchingEngine) -> None:
    engine.submit("m", order("s", SELL, 2905, 2, account="H001"))
    out = msgs(engine.submit("t", order("b", BUY, 2906, 5, tif=IOC)))
    assert [m.exec_type for m in out] == [ExecType.NEW, ExecType.TRADE, ExecType.TRADE, ExecType.CANCELED]
    assert (out[-1].status, out[-1].cum_qty, out[-1].leaves_qty) == (OrdStatus.CANCELED, 2, 0)
    assert engine.book("m2605").best_bid() is None  # never rests


def test_ioc_with_nothing_to_hit(engine: MatchingEngine) -> None:
    out = msgs(engine.submit("t", order("b", BUY, 2900, 5, tif=IOC)))
    assert [m.status for m in out] == [OrdStatus.NEW, OrdStatus.CANCELED]


def test_fok_fills_across_levels_or_not_at_all(engine: MatchingEngine) -> None:
    engine.submit("m", order("s1", SELL, 2905, 2, account="H001"))
    engine.submit("m", order("s2", SELL, 2906, 2, account="H001"))
    out = msgs(engine.submit("t", order("too-big", BUY, 2906, 5, tif=FOK)))
    assert [m.status for m in out] == [OrdStatus.NEW, OrdStatus.CANCELED]
    assert "FOK" in out[-1].text
    assert engine.book("m2605").depth(SELL) == [(2905, 2), (2906, 2)]  # untouched
    out = msgs(engine.submit("t", order("exact", BUY, 2906, 4, tif=FOK)))
    assert out[-2].status == OrdStatus.FILLED or out[-1].status == OrdStatus.FILLED
    assert engine.book("m2605").depth(SELL) == []


def test_fok_ignores_levels_beyond_its_limit(engine: MatchingEngine) -> None:
    engine.submit("m", order("s1", SELL, 2905, 2, account="H001"))
    engine.submit("m", order("s2", SELL, 2907, 5, account="H001"))
    out = msgs(engine.submit("t", order("b", BUY, 2906, 3, tif=FOK)))
    assert out[-1].status == OrdStatus.CANCELED and engine.trades == []


def test_market_order_fills_inside_the_band_and_cancels_the_rest(engine: MatchingEngine) -> None:
    engine.submit("m", order("s1", SELL, 2905, 2, account="H001"))
    engine.submit("m", order("s2", SELL, 3103, 1, account="H001"))  # at the upper limit
    out = msgs(engine.submit("t", order("mkt", BUY, 0.0, 5, ord_type=MARKET, tif=IOC)))
    fills = [m for m in out if m.cl_ord_id == "mkt" and m.exec_type == ExecType.TRADE]
    assert [(f.last_qty, f.last_px) for f in fills] == [(2, 2905.0), (1, 3103.0)]
    assert (out[-1].status, out[-1].cum_qty) == (OrdStatus.CANCELED, 3)


def test_market_gfd_never_rests(engine: MatchingEngine) -> None:
    out = msgs(engine.submit("t", order("mkt", SELL, 0.0, 5, ord_type=MARKET, tif=GFD)))
    assert out[-1].status == OrdStatus.CANCELED
    assert engine.book("m2605").best_ask() is None


@pytest.mark.parametrize("symbol", ["rb2605", "sc2603"])
def test_shfe_and_ine_take_no_market_orders(engine: MatchingEngine, symbol: str) -> None:
    rep = only_reject(engine.submit("t", order("mkt", BUY, 0.0, 1, symbol=symbol, ord_type=MARKET)))
    assert rep.reason == Reason.ORD_TYPE_NOT_ALLOWED_EXCHANGE and "market" in rep.text


@pytest.mark.parametrize(("kwargs", "reason", "words"), [
    ({"symbol": "xx9999"}, Reason.UNKNOWN_INSTRUMENT, "unknown instrument"),
    ({"qty": 0}, Reason.INVALID_QTY, "not positive"),
    ({"qty": -3}, Reason.INVALID_QTY, "not positive"),
    ({"qty": 1.5}, Reason.INVALID_QTY, "whole number"),
    ({"qty": math.inf}, Reason.INVALID_QTY, "whole number"),
    ({"qty": 1001}, Reason.QTY_ABOVE_MAX, "maximum 1000"),
    ({"price": math.nan}, Reason.INVALID_PRICE, "finite positive"),
    ({"price": -1.0}, Reason.INVALID_PRICE, "finite positive"),
    ({"price": 2900.5}, Reason.PRICE_NOT_ON_TICK, "tick 1.0"),
    ({"price": 3104.0}, Reason.PRICE_ABOVE_UPPER_LIMIT, "upper limit 3103.0"),
    ({"price": 2696.0}, Reason.PRICE_BELOW_LOWER_LIMIT, "lower limit 2697.0"),
    ({"symbol": "au2606", "price": 640.01}, Reason.PRICE_NOT_ON_TICK, "tick 0.02"),
    ({"symbol": "IF2612", "qty": 21}, Reason.QTY_ABOVE_MAX, "maximum 20"),
    ({"symbol": "IF2612", "ord_type": MARKET, "qty": 11}, Reason.QTY_ABOVE_MAX, "market order"),
])
def test_reject_reasons(engine: MatchingEngine, kwargs: dict, reason: Reason, words: str) -> None:
    args = {"symbol": "m2605", "price": 2900.0, "qty": 1} | kwargs
    m = NewOrder("x", "A001", args["symbol"], BUY, 1, 1, args.get("ord_type", LIMIT), GFD,
                 args["price"], args["qty"])
    rep = only_reject(engine.submit("u", m))
    assert rep.reason == reason
    assert words in rep.text
    assert engine.working("u") == []


@pytest.mark.parametrize("field", ["side", "offset", "hedge", "ord_type", "tif"])
def test_values_outside_an_enumeration_are_rejected(engine: MatchingEngine, field: str) -> None:
    values = {"side": BUY, "offset": 1, "hedge": 1, "ord_type": LIMIT, "tif": GFD} | {field: 9}
    m = NewOrder("x", "A001", "m2605", values["side"], values["offset"], values["hedge"],
                 values["ord_type"], values["tif"], 2900.0, 1)
    rep = only_reject(engine.submit("u", m))
    assert rep.reason == Reason.INVALID_FIELD and field in rep.text


def test_quantity_below_the_instrument_minimum(risk: RiskConfig) -> None:
    inst = Instrument(symbol="big", exchange="DCE", product="b", multiplier=10, tick=1.0,
                      upper_limit=110, lower_limit=90, reference_price=100, min_limit_qty=5)
    engine = MatchingEngine([inst], risk.exchanges)
    rep = only_reject(engine.submit("u", order("x", BUY, 100, 4, symbol="big")))
    assert rep.reason == Reason.QTY_BELOW_MIN


def test_on_tick_decimal_prices_and_limit_prices_are_accepted(engine: MatchingEngine) -> None:
    for cl, symbol, price in [("a", "au2606", 640.02), ("b", "IF2612", 3900.2),
                              ("c", "m2605", 3103.0), ("d", "m2605", 2697.0), ("e", "m2605", 2900)]:
        [(_, rep)] = engine.submit("u", order(cl, BUY, price, 1.0, symbol=symbol))
        assert rep.status == OrdStatus.NEW, rep.text
        assert rep.price == round(price, 2)


def test_duplicate_working_cl_ord_id_is_rejected_per_seat(engine: MatchingEngine) -> None:
    engine.submit("u", order("dup", BUY, 2900, 1))
    rep = only_reject(engine.submit("u", order("dup", BUY, 2901, 1)))
    assert rep.reason == Reason.EXCHANGE_REJECT and "already used" in rep.text
    [(_, other_seat)] = engine.submit("v", order("dup", BUY, 2901, 1))
    assert other_seat.status == OrdStatus.NEW


def test_cancel_working_unknown_finished_and_wrong_account(engine: MatchingEngine) -> None:
    engine.submit("u", order("a", BUY, 2900, 3))
    engine.submit("m", order("s", SELL, 2900, 1, account="H001"))  # partially fills "a"
    [(_, rep)] = engine.cancel("u", CancelOrder("c1", "a", "A001"))
    assert (rep.cl_ord_id, rep.status, rep.exec_type, rep.cum_qty, rep.leaves_qty) == \
        ("a", OrdStatus.CANCELED, ExecType.CANCELED, 1, 0)
    assert engine.book("m2605").best_bid() is None
    [(_, again)] = engine.cancel("u", CancelOrder("c2", "a", "A001"))
    assert isinstance(again, CancelReject) and again.reason == Reason.ORDER_FINISHED
    assert (again.cl_ord_id, again.orig_cl_ord_id) == ("c2", "a")
    [(_, unknown)] = engine.cancel("u", CancelOrder("c3", "nope", "A001"))
    assert unknown.reason == Reason.UNKNOWN_ORDER
    engine.submit("u", order("b", BUY, 2900, 1))
    [(_, wrong)] = engine.cancel("u", CancelOrder("c4", "b", "A999"))
    assert wrong.reason == Reason.UNKNOWN_ORDER
    [(_, other_seat)] = engine.cancel("v", CancelOrder("c5", "b", "A001"))
    assert other_seat.reason == Reason.UNKNOWN_ORDER  # seats cannot cancel each other's orders


def test_cancel_storm_behind_one_order_stays_bounded(engine: MatchingEngine) -> None:
    engine.submit("u", order("front", BUY, 2900, 1))
    for i in range(1000):
        engine.submit("u", order(f"o{i}", BUY, 2900, 1))
        engine.cancel("u", CancelOrder(f"c{i}", f"o{i}", "A001"))
    level = engine.book("m2605").bids.levels[2900]
    assert level.live == 1 and len(level.orders) <= 2 * level.live + 17
    out = msgs(engine.submit("t", order("hit", SELL, 2900, 5, account="H001", tif=IOC)))
    assert [m.cl_ord_id for m in out if m.exec_type == ExecType.TRADE] == ["hit", "front"]


def test_finished_memory_is_bounded(risk: RiskConfig) -> None:
    engine = MatchingEngine(risk.instruments, risk.exchanges, finished_memory=10)
    for i in range(50):
        engine.submit("u", order(f"o{i}", BUY, 2900, 1, tif=IOC))
    assert len(engine._finished) == 10
    assert engine.working_count() == 0


def test_market_data_and_status_report(engine: MatchingEngine) -> None:
    md = engine.market_data("IF2612")
    assert (md.last_px, md.bid_px, md.ask_px, md.upper_limit, md.lower_limit) == \
        (3900.0, 0.0, 0.0, 4290.0, 3510.0)
    engine.submit("u", order("b", BUY, 3899.8, 2, symbol="IF2612"))
    engine.submit("u", order("s", SELL, 3900.4, 3, symbol="IF2612"))
    engine.submit("v", order("t", SELL, 3899.8, 1, symbol="IF2612", account="H001"))
    md = engine.market_data("IF2612")
    assert (md.last_px, md.bid_px, md.ask_px) == (3899.8, 3899.8, 3900.4)
    [b] = engine.working("u", "A001")[:1]
    st = engine.status_report(b)
    assert (st.exec_type, st.status, st.cum_qty, st.leaves_qty, st.side, st.price, st.qty) == \
        (ExecType.STATUS, OrdStatus.PARTIALLY_FILLED, 1, 1, BUY, 3899.8, 2)


def test_ack_only_engine_acks_and_cancels(risk: RiskConfig) -> None:
    engine = AckOnlyEngine(risk.instruments, risk.exchanges)
    [(_, ack)] = engine.submit("u", order("a", BUY, 123.0, 1, symbol="anything"))
    assert ack.status == OrdStatus.NEW
    [(_, can)] = engine.cancel("u", CancelOrder("c", "a", "A001"))
    assert can.status == OrdStatus.CANCELED


def test_ack_only_engine_fills_at_the_order_price(risk: RiskConfig) -> None:
    engine = AckOnlyEngine(risk.instruments, risk.exchanges, fill=True)
    out = msgs(engine.submit("u", order("a", BUY, 2901.0, 4)))
    assert [(m.status, m.last_qty, m.last_px) for m in out] == \
        [(OrdStatus.NEW, 0, 0.0), (OrdStatus.FILLED, 4, 2901.0)]
    out = msgs(engine.submit("u", order("m", BUY, 0.0, 1, ord_type=MARKET)))
    assert out[-1].last_px == 2900.0  # the reference price
    assert engine.working_count() == 0
