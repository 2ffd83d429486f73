"""Reference engine: positions (9xx), funds and loss (10xx, 1305), self-trade (1101).

docs/ARCHITECTURE.md §4.9-4.11: a close needs closable position net of pending closes (SHFE/INE draw on
today's and yesterday's separately, CLOSE meaning close-yesterday; elsewhere oldest first);
openings stay within the position limit counting pending opens; an opening needs available
funds >= margin + fees (+ the per-order fee), to the fen; the intraday loss limit stops
openings; an order that would cross a resting order of its own account group is refused.
"""

from __future__ import annotations

import pytest

from checks.calendar import ns_from_local
from checks.decision import TRIGGER_STATUS, Outcome
from checks.enums import AccountStatus, AlertLevel, Offset, OrdType, Side, Tif
from checks.reasons import Reason as R

SELL_CLOSE = {"side": Side.SELL, "offset": Offset.CLOSE}
IOC_MARKET = {"ord_type": OrdType.MARKET, "tif": Tif.IOC}


def long_yd(symbol: str, qty: int, px: float) -> dict:
    return {"positions": [{"symbol": symbol, "long": qty, "long_price": px}]}


# ---------------------------------------------------------------- 901 SHFE: today / yesterday
@pytest.fixture
def shfe(make_book):
    """A1 holds 5 rb long from yesterday and buys 2 more today."""
    book = make_book(account=long_yd("rb2605", 5, 3200.0))
    book.open_position(2, px=3190.0)
    return book


def test_shfe_close_today_draws_on_todays_position_only(shfe):
    d = shfe.reject(R.INSUFFICIENT_POSITION, side=Side.SELL, offset=Offset.CLOSE_TODAY, qty=3,
                    price=3201.0)
    assert "closable today 2, yesterday 5, asked 3" in d.text
    shfe.accept(side=Side.SELL, offset=Offset.CLOSE_TODAY, qty=2, price=3201.0)
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.SELL, offset=Offset.CLOSE_TODAY, qty=1,
                price=3202.0)


@pytest.mark.parametrize("offset", [Offset.CLOSE, Offset.CLOSE_YESTERDAY])
def test_shfe_close_and_close_yesterday_draw_on_yesterdays_position_only(shfe, offset):
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.SELL, offset=offset, qty=6, price=3201.0)
    ref = shfe.accept(side=Side.SELL, offset=offset, qty=5, price=3201.0)
    assert shfe.eng.orders[ref].close_yd == 5 and shfe.eng.orders[ref].close_td == 0
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.SELL, offset=Offset.CLOSE, qty=1, price=3202.0)
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.SELL, offset=Offset.CLOSE_YESTERDAY, qty=1,
                price=3202.0)
    shfe.accept(side=Side.SELL, offset=Offset.CLOSE_TODAY, qty=2, price=3202.0)


def test_pending_closes_freeze_the_position(shfe):
    first = shfe.accept(side=Side.SELL, offset=Offset.CLOSE_YESTERDAY, qty=3, price=3201.0)
    shfe.reject(R.INSUFFICIENT_POSITION, **SELL_CLOSE, qty=3, price=3202.0)
    shfe.accept(**SELL_CLOSE, qty=2, price=3202.0)
    shfe.eng.cancel_request(first, shfe.t0)
    shfe.eng.apply_canceled(first, shfe.t0)  # the cancel releases the frozen 3
    shfe.accept(**SELL_CLOSE, qty=3, price=3203.0)


def test_filled_close_reduces_the_position(shfe):
    ref = shfe.accept(**SELL_CLOSE, qty=2, price=3201.0)
    shfe.fill(ref, 2, 3201.0)
    pos = shfe.position()
    assert (pos.long_yd, pos.long_td, pos.long_yd_frozen) == (3, 2, 0)
    shfe.reject(R.INSUFFICIENT_POSITION, **SELL_CLOSE, qty=4, price=3202.0)
    shfe.accept(**SELL_CLOSE, qty=3, price=3202.0)


def test_closing_a_short_needs_a_short_position(shfe):
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.BUY, offset=Offset.CLOSE, qty=1, price=3199.0)
    shfe.open_position(1, side=Side.SELL, px=3210.0)
    shfe.accept(side=Side.BUY, offset=Offset.CLOSE_TODAY, qty=1, price=3180.0)
    shfe.reject(R.INSUFFICIENT_POSITION, side=Side.BUY, offset=Offset.CLOSE, qty=1, price=3180.0)


def test_ine_keeps_today_and_yesterday_apart_too(make_book):
    book = make_book(inst={"au2606": {"exchange": "INE"}}, account=long_yd("au2606", 1, 640.0))
    book.reject(R.INSUFFICIENT_POSITION, symbol="au2606", side=Side.SELL,
                offset=Offset.CLOSE_TODAY, price=640.0)
    book.accept(symbol="au2606", price=640.0, **SELL_CLOSE)


# ---------------------------------------------------------------- 901 elsewhere: oldest first
@pytest.mark.parametrize("offset", [Offset.CLOSE, Offset.CLOSE_TODAY, Offset.CLOSE_YESTERDAY])
def test_dce_closes_take_the_oldest_position_first(make_book, offset):
    book = make_book(account=long_yd("m2605", 5, 2900.0))
    book.open_position(2, symbol="m2605", px=2890.0)
    book.reject(R.INSUFFICIENT_POSITION, symbol="m2605", side=Side.SELL, offset=offset, qty=8,
                price=2901.0)
    ref = book.accept(symbol="m2605", side=Side.SELL, offset=offset, qty=6, price=2901.0)
    o = book.eng.orders[ref]
    assert (o.close_yd, o.close_td) == (5, 1)
    book.accept(symbol="m2605", side=Side.SELL, offset=offset, qty=1, price=2902.0)
    book.reject(R.INSUFFICIENT_POSITION, symbol="m2605", side=Side.SELL, offset=offset, qty=1,
                price=2903.0)


def test_dce_filled_close_draws_on_yesterday_then_today(make_book):
    book = make_book(account=long_yd("m2605", 2, 2900.0))
    book.open_position(3, symbol="m2605", px=2890.0)
    ref = book.accept(symbol="m2605", qty=4, price=2901.0, **SELL_CLOSE)
    book.fill(ref, 3, 2901.0)
    pos = book.position(symbol="m2605")
    assert (pos.long_yd, pos.long_td, pos.long_yd_frozen, pos.long_td_frozen) == (0, 2, 0, 1)


# ---------------------------------------------------------------- 902
def test_position_limit_counts_pending_opens(make_book):
    book = make_book(inst={"rb2605": {"position_limit": 10}},
                     account={**long_yd("rb2605", 4, 3200.0), "limits": {"warn_fraction": 0.8}})
    book.accept(qty=3)  # pending, not filled: 4 + 3
    d = book.decide(qty=3, price=3199.0)  # 4 + 3 + 3 = 10: exactly at the limit
    assert d.accepted
    assert any(a.code == R.THRESHOLD_WARNING and "POSITION_LIMIT" in a.text for a in d.alerts)
    d = book.reject(R.POSITION_LIMIT, qty=1, price=3198.0)
    assert "10 + 1 > 10" in d.text
    book.accept(side=Side.SELL, qty=10, price=3300.0)  # the short side has its own limit
    book.reject(R.POSITION_LIMIT, side=Side.SELL, qty=1, price=3301.0)


def test_position_limit_counts_the_account_groups_combined_position(make_book):
    """实际控制关系: accounts under common control share the per-contract position limit. With a
    limit of 30, two accounts of one group were each accepted for 30."""
    book = make_book(inst={"rb2605": {"position_limit": 30}},
                     account={"group": "G"}, accounts=[{"id": "A2", "group": "G"}, {"id": "A3"}])
    book.open_position(30)  # A1: 30 long, filled
    d = book.reject(R.POSITION_LIMIT, account="A2", qty=30, price=3199.0)
    assert "30 + 30 > 30" in d.text
    book.reject(R.POSITION_LIMIT, account="A2", qty=1, price=3199.0)
    book.accept(account="A2", side=Side.SELL, qty=30, price=3300.0)  # the short side: its own
    book.accept(account="A3", qty=30, price=3199.0)  # another group


def test_group_position_limit_counts_pending_opens_and_frees_on_close(make_book):
    book = make_book(inst={"rb2605": {"position_limit": 10}},
                     account={"group": "G", **long_yd("rb2605", 4, 3200.0)},
                     accounts=[{"id": "A2", "group": "G"}])
    ref = book.accept(account="A2", qty=5, price=3199.0)  # pending: 4 + 5
    book.accept(account="A2", qty=1, price=3198.0)  # 10: exactly at the limit
    book.reject(R.POSITION_LIMIT, qty=1, price=3197.0)
    book.cancel(ref)  # frees A2's 5 pending
    book.accept(qty=5, price=3197.0)
    book.reject(R.POSITION_LIMIT, account="A2", qty=1, price=3196.0)
    close = book.accept(side=Side.SELL, offset=Offset.CLOSE, qty=4, price=3300.0)
    book.fill(close, 4, 3300.0)  # A1 closes yesterday's 4: room for 4 in the group
    book.accept(account="A2", qty=4, price=3196.0)
    book.reject(R.POSITION_LIMIT, account="A2", qty=1, price=3195.0)


def test_position_limit_counts_filled_opens_and_frees_on_cancel(make_book):
    book = make_book(inst={"rb2605": {"position_limit": 3}})
    ref = book.accept(qty=3)
    book.fill(ref, 2, 3200.0)
    book.reject(R.POSITION_LIMIT, price=3199.0)
    book.cancel(ref)
    book.accept(price=3199.0)
    book.reject(R.POSITION_LIMIT, price=3198.0)


def test_closing_orders_are_not_held_to_the_position_limit(make_book):
    book = make_book(inst={"rb2605": {"position_limit": 1}}, account=long_yd("rb2605", 5, 3200.0))
    book.accept(qty=5, price=3201.0, **SELL_CLOSE)


# ---------------------------------------------------------------- 1001 funds
FEES = {"margin_per_lot": 1000.0, "fees": {"open_per_lot": 5.0, "per_order": 1.0}}


@pytest.mark.parametrize("balance,ok", [(2011.00, True), (2010.99, False)])
def test_funds_by_volume_with_fees_exactly_at_available(make_book, balance, ok):
    # 2 lots: margin 2 x 1000 + fee 2 x 5 + per-order fee 1 = 2011.00
    book = make_book(inst={"rb2605": FEES}, account={"balance": balance})
    if ok:
        book.accept(qty=2)
        assert book.account().available() == 0
    else:
        d = book.reject(R.INSUFFICIENT_FUNDS, qty=2)
        assert "need 2011.00, available 2010.99" in d.text


@pytest.mark.parametrize("balance,ok", [(3200.00, True), (3199.99, False)])
def test_funds_by_money_exactly_at_available(make_book, balance, ok):
    book = make_book(inst={"rb2605": {"margin_long": 0.1}}, account={"balance": balance})
    if ok:
        book.accept()
    else:
        book.reject(R.INSUFFICIENT_FUNDS)


@pytest.mark.parametrize("side,margin,balance_ok", [(Side.BUY, "margin_long", 3103.0),
                                                    (Side.SELL, "margin_short", 2697.0)])
def test_market_orders_reserve_at_the_band(make_book, side, margin, balance_ok):
    for balance, ok in ((balance_ok, True), (balance_ok - 0.01, False)):
        book = make_book(inst={"m2605": {margin: 0.1}}, account={"balance": balance})
        d = book.decide(symbol="m2605", side=side, **IOC_MARKET)
        assert d.reason == (R.ACCEPTED if ok else R.INSUFFICIENT_FUNDS), (balance, d.text)


def test_turnover_fees_count_towards_funds(make_book):
    # 1 lot at 3200 x 10: fee ratio 0.001 -> 32.00
    for balance, ok in ((32.0, True), (31.99, False)):
        book = make_book(inst={"rb2605": {"fees": {"open_ratio": 0.001}}},
                         account={"balance": balance})
        assert book.decide().accepted is ok


def test_accepted_opening_freezes_and_the_next_one_sees_less(make_book):
    book = make_book(inst={"rb2605": FEES}, account={"balance": 2012.0})
    book.accept()  # 1006.00
    book.accept(price=3199.0)  # 1006.00: exactly the rest
    book.reject(R.INSUFFICIENT_FUNDS, price=3198.0)
    acct = book.account()
    assert (acct.frozen_margin, acct.frozen_fee, acct.paid_fee) == (200000, 1000, 200)


def test_closing_orders_need_no_funds(make_book):
    book = make_book(inst={"rb2605": {"margin_long": 0.1}},
                     account={**long_yd("rb2605", 1, 3200.0), "balance": 3200.0})
    assert book.account().available() == 0  # all of it is used margin
    book.reject(R.INSUFFICIENT_FUNDS)
    book.accept(price=3201.0, **SELL_CLOSE)


def test_funds_identity_holds(make_book):
    book = make_book(inst={"rb2605": {**FEES, "fees": {"open_per_lot": 5.0, "close_per_lot": 3.0,
                                                       "per_order": 1.0, "per_cancel": 0.5}}},
                     account={"balance": 100_000.0})
    a = book.accept(qty=4)
    book.fill(a, 3, 3200.0)
    c = book.accept(qty=2, price=3210.0, side=Side.SELL, offset=Offset.CLOSE_TODAY)
    book.fill(c, 2, 3210.0)
    book.cancel(a)
    acct = book.account()
    assert acct.frozen_margin == acct.frozen_fee == 0
    # 1 lot left: margin 1000; fees: open 3 x 5, close-today 0 (close_today_per_lot unset),
    # per-order 2 x 1, per-cancel 0.5; realised (3210 - 3200) x 2 x 10 = 200
    assert acct.used_margin == 100_000
    assert acct.paid_fee == 1500 + 200 + 50
    assert acct.realised == 20_000
    assert acct.available() == (acct.balance - acct.used_margin - acct.frozen_margin
                                - acct.frozen_fee - acct.paid_fee + acct.realised)


# ---------------------------------------------------------------- 1002 loss limit / 1305
@pytest.fixture
def loser(make_book):
    """A1 holds 1 rb long at 3200 (10 CNY a point); loss limit 1000 CNY, warning at 80 %."""
    return make_book(account={**long_yd("rb2605", 1, 3200.0),
                              "limits": {"loss_limit": 1000.0, "warn_fraction": 0.8}})


def test_loss_warning_when_marked_pnl_reaches_the_fraction_1305(loser):
    assert loser.eng.market_data("rb2605", 3121.0, 3424.0, 2976.0, loser.t0).alerts is None
    out = loser.eng.market_data("rb2605", 3120.0, 3424.0, 2976.0, loser.t0)
    (a,) = out.alerts
    assert (a.code, a.level, a.scope) == (R.LOSS_WARNING, AlertLevel.WARNING, "account:A1")
    assert "-800.00" in a.text and "-1000.00" in a.text
    assert loser.eng.market_data("rb2605", 3110.0, 3424.0, 2976.0, loser.t0).alerts is None


def test_loss_limit_refuses_openings_and_asks_for_close_only_1002(loser):
    loser.eng.market_data("rb2605", 3101.0, 3424.0, 2976.0, loser.t0)  # -990
    loser.passes()
    loser.eng.market_data("rb2605", 3100.0, 3424.0, 2976.0, loser.t0)  # -1000: reached
    d = loser.reject(R.LOSS_LIMIT)
    assert d.trigger == R.LOSS_LIMIT
    assert TRIGGER_STATUS[R.LOSS_LIMIT] == AccountStatus.CLOSE_ONLY
    loser.reject(R.LOSS_LIMIT, side=Side.SELL, price=3300.0)
    loser.accept(price=3100.0, **SELL_CLOSE)  # closing is still allowed
    loser.eng.market_data("rb2605", 3101.0, 3424.0, 2976.0, loser.t0)  # back above the limit
    loser.accept(price=3099.0)


def test_realised_losses_and_fees_count_towards_the_loss_limit(make_book):
    book = make_book(inst={"rb2605": {"fees": {"close_per_lot": 10.0}}},
                     account={**long_yd("rb2605", 1, 3200.0), "limits": {"loss_limit": 1000.0}})
    ref = book.accept(price=3101.0, **SELL_CLOSE)
    book.fill(ref, 1, 3101.0)  # realised -990, fee 10
    book.reject(R.LOSS_LIMIT)


def test_market_data_reaching_the_loss_limit_triggers_the_stop(loser):
    out = loser.eng.market_data("rb2605", 3100.0, 3424.0, 2976.0, loser.t0)  # -1000: reached
    assert out.trigger == 0 and out.triggers == [("A1", R.LOSS_LIMIT)]
    assert TRIGGER_STATUS[R.LOSS_LIMIT] == AccountStatus.CLOSE_ONLY
    assert [(a.code, a.level) for a in out.alerts] == [
        (R.LOSS_WARNING, AlertLevel.WARNING), (R.LOSS_LIMIT, AlertLevel.CRITICAL)]
    assert out.alerts[1].scope == "account:A1"
    assert "-1000.00 reached the loss limit -1000.00" in out.alerts[1].text
    # once a day: further losses, or a recovery and a new fall, ask for nothing more
    assert loser.eng.market_data("rb2605", 3050.0, 3424.0, 2976.0, loser.t0) == Outcome()
    loser.eng.market_data("rb2605", 3200.0, 3424.0, 2976.0, loser.t0)
    assert loser.eng.market_data("rb2605", 3090.0, 3424.0, 2976.0, loser.t0).triggers is None


def test_market_data_names_every_account_that_reaches_its_loss_limit(make_book):
    book = make_book(account={**long_yd("rb2605", 1, 3200.0), "limits": {"loss_limit": 1000.0}},
                     accounts=[{"id": "A2", **long_yd("rb2605", 2, 3200.0),
                                "limits": {"loss_limit": 1000.0}},
                               {"id": "A3", **long_yd("rb2605", 1, 3200.0)}])  # no limit
    out = book.eng.market_data("rb2605", 3140.0, 3424.0, 2976.0, book.t0)  # -600 / -1200
    assert out.triggers == [("A2", R.LOSS_LIMIT)]
    out = book.eng.market_data("rb2605", 3100.0, 3424.0, 2976.0, book.t0)  # -1000 / -2000
    assert out.triggers == [("A1", R.LOSS_LIMIT)]


def test_a_fill_reaching_the_loss_limit_triggers_the_stop(make_book):
    book = make_book(inst={"rb2605": {"fees": {"close_per_lot": 10.0}}},
                     account={**long_yd("rb2605", 2, 3200.0), "limits": {"loss_limit": 1000.0}})
    ref = book.accept(price=3101.0, qty=2, **SELL_CLOSE)
    out = book.fill(ref, 1, 3101.0)  # realised -990, fee 10; the other lot still marked at 3200
    assert out.trigger == R.LOSS_LIMIT and out.triggers is None
    assert [a.code for a in out.alerts if a.level == AlertLevel.CRITICAL] == [R.LOSS_LIMIT]
    assert book.fill(ref, 1, 3101.0).trigger == 0  # once a day


def test_repeated_executions_win_over_the_loss_limit_on_one_fill(make_book):
    book = make_book(account={**long_yd("rb2605", 1, 3200.0),
                              "limits": {"loss_limit": 1000.0, "max_executions": 0}})
    ref = book.accept(price=3100.0, **SELL_CLOSE)
    out = book.fill(ref, 1, 3100.0)  # realised -1000, and an execution over a limit of 0
    assert out.trigger == R.REPEATED_EXECUTIONS  # suspends: stricter than close-only
    assert {a.code for a in out.alerts if a.level == AlertLevel.CRITICAL} == {
        R.REPEATED_EXECUTIONS, R.LOSS_LIMIT}


def test_a_suspended_account_reaching_the_loss_limit_is_alerted_not_lifted_to_close_only(loser):
    loser.eng.set_status("A1", AccountStatus.SUSPENDED)
    out = loser.eng.market_data("rb2605", 3100.0, 3424.0, 2976.0, loser.t0)
    assert out.triggers is None
    assert [a.code for a in out.alerts if a.level == AlertLevel.CRITICAL] == [R.LOSS_LIMIT]


def test_loss_limit_is_intraday(loser):
    loser.eng.market_data("rb2605", 3130.0, 3424.0, 2976.0, loser.t0)  # -700 on Tuesday
    wednesday = ns_from_local(2026, 3, 11, 10, 0)
    out = loser.eng.market_data("rb2605", 3100.0, 3424.0, 2976.0, wednesday)  # -300 on Wednesday
    assert out.triggers is None and out.alerts is None
    assert loser.account().pnl_base == -70_000  # Tuesday's close, saved at the roll
    assert loser.eng.snapshot()["accounts"]["A1"][-2:] == (-70_000, False)
    loser.accept(now=wednesday)
    out = loser.eng.market_data("rb2605", 3030.0, 3424.0, 2976.0, wednesday)  # -1000 today
    assert out.triggers == [("A1", R.LOSS_LIMIT)]
    loser.reject(R.LOSS_LIMIT, now=wednesday, price=3030.0)


def test_yesterdays_fees_and_realised_losses_do_not_count_today(make_book):
    book = make_book(inst={"rb2605": {"fees": {"close_per_lot": 10.0}}},
                     account={**long_yd("rb2605", 2, 3200.0), "limits": {"loss_limit": 1000.0}})
    ref = book.accept(price=3105.0, **SELL_CLOSE)
    book.fill(ref, 1, 3105.0)  # realised -950, fee 10: -960 on Tuesday
    book.eng.market_data("rb2605", 3200.0, 3424.0, 2976.0, book.t0)
    wednesday = ns_from_local(2026, 3, 11, 10, 0)
    book.accept(now=wednesday, price=3150.0)
    out = book.eng.market_data("rb2605", 3120.0, 3424.0, 2976.0, wednesday)  # -800 today
    assert [a.code for a in out.alerts] == [R.LOSS_WARNING] and "-800.00" in out.alerts[0].text


# ---------------------------------------------------------------- 1101 self-trade
@pytest.fixture
def group(make_book):
    """A1 and A2 under common control (G); A3 on its own. A1 rests a sell at 3200."""
    book = make_book(account={"group": "G"},
                     accounts=[{"id": "A2", "group": "G"}, {"id": "A3"}])
    book.resting_sell = book.accept(side=Side.SELL)
    return book


def test_buy_crossing_a_resting_sell_of_the_same_account_is_refused(group):
    d = group.reject(R.SELF_TRADE, price=3200.0)
    assert "crosses own sell at 3200" in d.text
    group.reject(R.SELF_TRADE, price=3201.0)
    group.accept(price=3199.0)


def test_buy_crossing_a_resting_sell_of_the_same_group_is_refused(group):
    group.reject(R.SELF_TRADE, account="A2", price=3200.0)
    group.reject(R.SELF_TRADE, account="A2", price=3250.0)
    group.accept(account="A2", price=3199.0)


def test_accounts_of_different_groups_may_trade_with_each_other(group):
    group.accept(account="A3", price=3200.0)
    group.accept(account="A3", price=3201.0)


def test_sell_crossing_a_resting_buy_of_the_group_is_refused(group):
    group.accept(account="A2", price=3190.0)
    d = group.reject(R.SELF_TRADE, side=Side.SELL, price=3190.0)
    assert "crosses own buy at 3190" in d.text
    group.reject(R.SELF_TRADE, side=Side.SELL, price=3150.0)
    group.accept(side=Side.SELL, price=3191.0)


def test_best_resting_price_decides(group):
    group.accept(side=Side.SELL, price=3195.0)
    group.reject(R.SELF_TRADE, price=3195.0)
    group.accept(price=3194.0)


def test_market_orders_cross_any_resting_order_of_the_group(make_book):
    book = make_book(account={"group": "G"}, accounts=[{"id": "A2", "group": "G"}, {"id": "A3"}])
    book.accept(symbol="m2605", side=Side.SELL, price=3000.0)
    book.reject(R.SELF_TRADE, account="A2", symbol="m2605", **IOC_MARKET)
    book.accept(account="A3", symbol="m2605", **IOC_MARKET)
    book.accept(account="A2", symbol="m2605", side=Side.SELL, **IOC_MARKET)  # no resting buy
    book.accept(account="A2", symbol="m2605", price=2800.0)
    book.reject(R.SELF_TRADE, symbol="m2605", side=Side.SELL, **IOC_MARKET)


def test_resting_market_orders_are_not_in_the_self_trade_index(make_book):
    book = make_book()
    book.accept(symbol="m2605", side=Side.SELL, **IOC_MARKET)
    book.accept(symbol="m2605", price=3100.0)


@pytest.mark.parametrize("finish", ["cancel", "fill", "reject"])
def test_finished_resting_order_no_longer_blocks(group, finish):
    ref = group.resting_sell
    if finish == "cancel":
        group.cancel(ref)
    elif finish == "fill":
        group.fill(ref, 1, 3200.0)
    else:
        group.eng.apply_reject(ref, group.t0)
    group.accept(account="A2", price=3200.0)


def test_partly_filled_resting_order_still_blocks(make_book):
    book = make_book()
    ref = book.accept(side=Side.SELL, qty=3)
    book.fill(ref, 1, 3200.0)
    book.reject(R.SELF_TRADE)
