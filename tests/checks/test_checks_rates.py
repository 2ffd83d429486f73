"""Reference engine: rates and counts (7xx), docs/ARCHITECTURE.md §4.7.

For each threshold: the Nth event inside the limit is accepted, the one past it refused, and a
warning alert (1301, naming the limit) fires when the count reaches the configured fraction.
Rolling windows are exact: an event leaves the window exactly one second (or the configured
window) after it happened. Cancels are never refused; reaching a cancel limit refuses the new
orders that would need one.
"""

from __future__ import annotations

import pytest

from checks import state as engine_state
from checks.decision import TRIGGER_STATUS
from checks.enums import AccountStatus, AlertLevel, Hedge, Offset, OrdType, Side, Tif
from checks.reasons import Reason as R
from checks.state import NS_PER_MS, NS_PER_S

S = NS_PER_S


def warnings_for(x, code: R) -> list:
    """The 1301 warnings in a decision/outcome that are about limit ``code``."""
    return [a for a in x.alerts or () if a.code == R.THRESHOLD_WARNING and code.name in a.text]


def criticals_for(x, code: R) -> list:
    return [a for a in x.alerts or () if a.code == code and a.level == AlertLevel.CRITICAL]


def place_and_cancel(book, n: int, now: int, **fields) -> list:
    """``n`` orders, each cancelled by the client and confirmed; returns the cancels' outcomes."""
    inst = book.eng.instruments[book.eng.inst_ids[fields.get("symbol", "rb2605")]]
    outs = []
    for k in range(n):
        ref = book.accept(now=now, price=inst.ref_price - k * inst.tick, **fields)
        outs.append(book.cancel(ref, now))
    return outs


# ---------------------------------------------------------------- 701 order rate
def test_order_rate_accepts_the_nth_in_a_rolling_second_and_refuses_the_next(make_book):
    book = make_book(account={"limits": {"max_orders_per_sec": 4}})
    t = book.t0
    for k in range(4):
        book.accept(now=t + k, price=3200.0 - k)
    d = book.reject(R.ORDER_RATE, now=t + 4)
    assert "4/s" in d.text
    book.reject(R.ORDER_RATE, now=t + S - 1)  # the first order is still inside (t+S-1-S, t+S-1]
    book.accept(now=t + S)  # ... and leaves the window exactly one second after it
    book.reject(R.ORDER_RATE, now=t + S)  # the window is full again
    book.accept(now=t + S + 1, price=3190.0)


def test_order_rate_warning_at_the_configured_fraction(make_book):
    book = make_book(account={"limits": {"max_orders_per_sec": 4, "warn_fraction": 0.5}})
    t = book.t0
    decisions = [book.decide(now=t + k, price=3200.0 - k) for k in range(4)]
    assert [bool(warnings_for(d, R.ORDER_RATE)) for d in decisions] == [False, True, False, False]
    (w,) = warnings_for(decisions[1], R.ORDER_RATE)
    assert w.level == AlertLevel.WARNING and w.scope == "account:A1" and "2 of limit 4" in w.text
    # It fires again once the window has fallen below the warning level and reaches it again.
    book.accept(now=t + 3 * S)
    again = book.decide(now=t + 3 * S + 1, price=3199.0)
    assert warnings_for(again, R.ORDER_RATE)


def test_order_rate_is_per_account(make_book):
    book = make_book(account={"limits": {"max_orders_per_sec": 1}}, accounts=[{"id": "A2"}])
    book.accept()
    book.reject(R.ORDER_RATE, price=3199.0)
    book.accept(account="A2", price=3199.0)


def test_rejected_orders_do_not_count_towards_the_order_rate(make_book):
    book = make_book(account={"limits": {"max_orders_per_sec": 2}})
    for _ in range(5):
        book.reject(R.INVALID_QTY, qty=0)
    book.accept()
    book.accept(price=3199.0)
    book.reject(R.ORDER_RATE, price=3198.0)


def test_order_rate_limit_of_zero_allows_nothing(make_book):
    book = make_book(account={"limits": {"max_orders_per_sec": 0}})
    book.reject(R.ORDER_RATE)


# ---------------------------------------------------------------- 702 cancel rate
def test_cancels_are_never_refused_and_new_orders_wait_for_the_cancel_rate(make_book):
    book = make_book(account={"limits": {"max_cancels_per_sec": 3}})
    t = book.t0
    refs = [book.accept(now=t, price=3200.0 - k) for k in range(5)]
    outs = [book.eng.cancel_request(ref, t + 10) for ref in refs[:3]]
    assert all(o.known for o in outs)
    assert [bool(criticals_for(o, R.CANCEL_RATE)) for o in outs] == [False, False, True]
    d = book.reject(R.CANCEL_RATE, now=t + 11)
    assert "3/s" in d.text
    # Over the limit, a cancel is still taken and counted - and raises no further alert (a
    # kill switch cancelling thousands of orders must not raise thousands of alerts).
    past = [book.eng.cancel_request(refs[k], t + 12) for k in (3, 4)]
    assert all(o.known for o in past)
    assert not any(criticals_for(o, R.CANCEL_RATE) for o in past)
    # Exact window: three cancels lie in (now - 1 s, now] until the one at t+10 leaves it.
    book.reject(R.CANCEL_RATE, now=t + 10 + S - 1)
    book.accept(now=t + 10 + S)


def test_cancel_rate_warning_at_the_configured_fraction(make_book):
    book = make_book(account={"limits": {"max_cancels_per_sec": 4, "warn_fraction": 0.5}})
    refs = [book.accept(price=3200.0 - k) for k in range(3)]
    outs = [book.eng.cancel_request(ref, book.t0) for ref in refs]
    assert [bool(warnings_for(o, R.CANCEL_RATE)) for o in outs] == [False, True, False]


def test_cancel_of_an_unknown_or_finished_order_is_not_known(book):
    ref = book.accept()
    book.cancel(ref)
    assert not book.eng.cancel_request(ref, book.t0).known
    assert not book.eng.cancel_request(12345, book.t0).known


# ---------------------------------------------------------------- 703 cancels per contract
def test_contract_cancel_limit_refuses_new_orders_on_that_contract_only(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 4}}, account={"limits": {"warn_fraction": 0.5}})
    outs = place_and_cancel(book, 4, book.t0)
    assert [bool(warnings_for(o, R.CONTRACT_CANCEL_LIMIT)) for o in outs] == [False, True, False, False]
    assert [bool(criticals_for(o, R.CONTRACT_CANCEL_LIMIT)) for o in outs] == [False] * 3 + [True]
    assert criticals_for(outs[3], R.CONTRACT_CANCEL_LIMIT)[0].scope == "account:A1/rb2605"
    d = book.reject(R.CONTRACT_CANCEL_LIMIT, now=book.t0 + 1)
    assert "4 cancels on rb2605" in d.text
    book.reject(R.CONTRACT_CANCEL_LIMIT, now=book.t0 + 1, side=Side.SELL)
    book.accept(symbol="au2606")  # another contract is unaffected


def test_contract_cancel_limit_is_per_account(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 1}}, accounts=[{"id": "A2"}])
    place_and_cancel(book, 1, book.t0)
    book.reject(R.CONTRACT_CANCEL_LIMIT)
    book.accept(account="A2")


def test_contract_cancel_limit_comes_from_the_exchange_rule(make_book):
    book = make_book(exchanges={"DCE": {"cancel_limit_per_contract": 2}})
    place_and_cancel(book, 2, book.t0, symbol="m2605")
    book.reject(R.CONTRACT_CANCEL_LIMIT, symbol="m2605")
    book.accept(symbol="m2609")  # the limit is per contract, not per product


def test_instrument_cancel_limit_overrides_the_exchange_rule(make_book):
    book = make_book(exchanges={"DCE": {"cancel_limit_per_contract": 2}},
                     inst={"m2605": {"cancel_limit": 3}})
    place_and_cancel(book, 2, book.t0, symbol="m2605")
    book.accept(symbol="m2605")


@pytest.mark.parametrize("tif", [Tif.IOC, Tif.FOK])
def test_fak_fok_auto_cancel_counts_as_a_cancel_by_default(make_book, tif):
    book = make_book(inst={"rb2605": {"cancel_limit": 2}})
    for k in range(2):
        ref = book.accept(tif=tif, price=3200.0 - k)
        assert book.eng.apply_canceled(ref, book.t0).finished  # the exchange's automatic cancel
    book.reject(R.CONTRACT_CANCEL_LIMIT)


def test_partly_filled_fak_remainder_cancel_counts(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 1}})
    ref = book.accept(tif=Tif.IOC, qty=3)
    book.fill(ref, 1, 3200.0)
    out = book.eng.apply_canceled(ref, book.t0)
    assert criticals_for(out, R.CONTRACT_CANCEL_LIMIT)
    book.reject(R.CONTRACT_CANCEL_LIMIT)


def test_fak_auto_cancel_is_not_counted_when_the_exchange_rule_says_so(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 1}},
                     exchanges={"SHFE": {"fak_counts_as_cancel": False}})
    for k in range(3):
        ref = book.accept(tif=Tif.IOC, price=3200.0 - k)
        book.eng.apply_canceled(ref, book.t0)
    book.accept()
    # A cancel the client asked for still counts.
    place_and_cancel(book, 1, book.t0)
    book.reject(R.CONTRACT_CANCEL_LIMIT)


def test_gfd_order_cancelled_by_the_exchange_unasked_is_not_a_cancel(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 1}})
    ref = book.accept()
    book.eng.apply_canceled(ref, book.t0)
    book.accept()


def test_requested_cancel_of_a_fak_counts_once(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 2}})
    ref = book.accept(tif=Tif.IOC)
    book.cancel(ref)
    assert book.position().cancels == 1
    book.accept()


# ---------------------------------------------------------------- 704 large-order cancels
def test_large_cancel_limit_refuses_only_large_orders(make_book):
    book = make_book(inst={"rb2605": {"large_order_qty": 5}},
                     exchanges={"SHFE": {"large_cancel_limit": 2}},
                     account={"limits": {"warn_fraction": 0.5}})
    outs = place_and_cancel(book, 2, book.t0, qty=5)
    assert warnings_for(outs[0], R.LARGE_CANCEL_LIMIT)
    assert criticals_for(outs[1], R.LARGE_CANCEL_LIMIT)
    d = book.reject(R.LARGE_CANCEL_LIMIT, qty=5)
    assert "2 large cancels on rb2605" in d.text
    book.reject(R.LARGE_CANCEL_LIMIT, qty=6)
    book.accept(qty=4)  # below the large size: still accepted
    book.accept(symbol="au2606", qty=5)  # another contract


def test_cancels_of_small_orders_do_not_count_as_large(make_book):
    book = make_book(inst={"rb2605": {"large_order_qty": 5}},
                     exchanges={"SHFE": {"large_cancel_limit": 1}})
    place_and_cancel(book, 3, book.t0, qty=4)
    book.accept(qty=5)


def test_large_order_size_is_a_fraction_of_the_max_on_dce(make_book):
    # DCE: large = 80 % of the maximum limit-order volume (10 lots -> 8).
    book = make_book(inst={"m2605": {"max_limit_qty": 10}},
                     exchanges={"DCE": {"large_cancel_limit": 1}})
    place_and_cancel(book, 1, book.t0, symbol="m2605", qty=7)
    book.accept(symbol="m2605", qty=8)  # a 7-lot cancel was not large
    place_and_cancel(book, 1, book.t0, symbol="m2605", qty=8)
    book.reject(R.LARGE_CANCEL_LIMIT, symbol="m2605", qty=8)
    book.accept(symbol="m2605", qty=7)


def test_shfe_large_order_is_300_lots_by_default(make_book):
    book = make_book(exchanges={"SHFE": {"large_cancel_limit": 1}})
    place_and_cancel(book, 1, book.t0, qty=299)
    book.accept(qty=300)
    place_and_cancel(book, 1, book.t0, qty=300)
    book.reject(R.LARGE_CANCEL_LIMIT, qty=300)


# ---------------------------------------------------------------- 705 self-trades
def test_self_trade_limit_refuses_new_orders_on_the_contract(make_book):
    book = make_book(exchanges={"SHFE": {"self_trade_limit": 2}},
                     account={"limits": {"warn_fraction": 0.5}})
    first = book.fill(book.accept(), 1, 3200.0, self_trade=True)
    assert warnings_for(first, R.SELF_TRADE_LIMIT)
    book.accept(price=3199.0)
    second = book.fill(book.accept(price=3198.0), 1, 3198.0, self_trade=True)
    assert criticals_for(second, R.SELF_TRADE_LIMIT)
    d = book.reject(R.SELF_TRADE_LIMIT, price=3197.0)
    assert "2 self-trades on rb2605" in d.text
    book.accept(symbol="au2606")


def test_a_self_trade_is_counted_once_for_its_two_sides(make_book):
    book = make_book(exchanges={"DCE": {"self_trade_limit": 2}},
                     account={"positions": [{"symbol": "m2605", "long": 5, "long_price": 2900.0}]})
    buy = book.accept(symbol="m2605", price=2899.0)
    sell = book.accept(symbol="m2605", side=Side.SELL, offset=Offset.CLOSE, price=2900.0)
    book.fill(buy, 1, 2899.0, self_trade=True)
    book.fill(sell, 1, 2899.0, self_trade=True)
    assert book.position(symbol="m2605").self_trades == 1
    book.accept(symbol="m2605", price=2898.0)


def test_fills_not_flagged_as_self_trades_do_not_count(make_book):
    book = make_book(exchanges={"SHFE": {"self_trade_limit": 1}})
    book.fill(book.accept(), 1, 3200.0)
    book.accept(price=3199.0)


# ---------------------------------------------------------------- 706 group opening volume
@pytest.fixture
def group_book(make_book):
    return make_book(groups=[{"name": "G", "limits": {"max_open_volume_per_contract": 5,
                                                      "warn_fraction": 0.6}}],
                     account={"group": "G"}, accounts=[{"id": "A2", "group": "G"}, {"id": "A3"}])


def test_group_opening_volume_is_shared_by_its_accounts(group_book):
    d = group_book.decide(qty=3)
    assert d.accepted and warnings_for(d, R.OPEN_VOLUME_LIMIT)  # 3 = 60 % of 5
    group_book.accept(account="A2", qty=2, price=3199.0)  # exactly at the limit
    d = group_book.reject(R.OPEN_VOLUME_LIMIT, account="A2", qty=1, price=3198.0)
    assert "5 + 1 > 5" in d.text
    group_book.reject(R.OPEN_VOLUME_LIMIT, account="A1", side=Side.SELL, qty=1, price=3300.0)
    group_book.accept(account="A3", qty=5)  # another group
    group_book.accept(account="A2", symbol="au2606", qty=5)  # another contract


def test_hedging_is_exempt_from_the_opening_volume_limit(group_book):
    group_book.accept(qty=5)
    group_book.accept(account="A2", qty=3, hedge=Hedge.HEDGE, price=3199.0)
    group_book.reject(R.OPEN_VOLUME_LIMIT, account="A2", qty=1, hedge=Hedge.ARB, price=3198.0)


def test_cancel_releases_unfilled_opening_volume(group_book):
    ref = group_book.accept(qty=4)
    group_book.fill(ref, 1, 3200.0)
    group_book.reject(R.OPEN_VOLUME_LIMIT, account="A2", qty=2, price=3199.0)
    group_book.cancel(ref)  # releases the 3 unfilled lots; the filled lot stays counted
    group_book.accept(account="A2", qty=4, price=3199.0)
    group_book.reject(R.OPEN_VOLUME_LIMIT, account="A2", qty=1, price=3198.0)


def test_exchange_reject_releases_opening_volume(group_book):
    ref = group_book.accept(qty=5)
    group_book.eng.apply_reject(ref, group_book.t0)
    group_book.accept(account="A2", qty=5)


def test_closing_orders_do_not_use_opening_volume(make_book):
    book = make_book(account={"limits": {"max_open_volume_per_contract": 1},
                              "positions": [{"symbol": "rb2605", "long": 5, "long_price": 3200.0}]})
    book.accept(side=Side.SELL, offset=Offset.CLOSE, qty=5, price=3201.0)
    book.accept(qty=1)


# ---------------------------------------------------------------- 707 messages / 1308 fee
def test_message_cap_per_product_counts_orders_and_cancels(make_book):
    book = make_book(account={"limits": {"max_messages_per_product": 4, "warn_fraction": 0.5}})
    d1 = book.decide()
    d2 = book.decide(price=3199.0)
    assert not warnings_for(d1, R.MESSAGE_LIMIT) and warnings_for(d2, R.MESSAGE_LIMIT)
    assert warnings_for(d2, R.MESSAGE_LIMIT)[0].scope == "account:A1/rb"
    book.eng.cancel_request(d1.ref, book.t0)  # message 3
    book.accept(price=3198.0)  # message 4: exactly at the cap
    d = book.reject(R.MESSAGE_LIMIT, price=3197.0)
    assert "5 > 4 on rb" in d.text
    assert book.eng.cancel_request(d2.ref, book.t0).known  # cancels are never refused
    book.accept(symbol="au2606")  # another product


def test_message_cap_is_per_product_not_per_contract(make_book):
    book = make_book(account={"limits": {"max_messages_per_product": 2}})
    book.accept(symbol="m2605")
    book.accept(symbol="m2609")
    book.reject(R.MESSAGE_LIMIT, symbol="m2605", price=2899.0)


def test_message_fee_alert_when_the_free_quota_is_used_up(make_book):
    book = make_book(account={"limits": {"message_fee": 0.01, "message_fee_free": 2}})
    alerts = [book.decide(price=3200.0 - k).alerts or [] for k in range(4)]
    fee = [[a for a in al if a.code == R.MESSAGE_FEE] for al in alerts]
    assert [len(f) for f in fee] == [0, 0, 1, 0]
    assert fee[2][0].scope == "account:A1/rb"


# ---------------------------------------------------------------- 708 order-to-trade ratio
def test_otr_cap_applies_from_the_minimum_message_count(make_book):
    book = make_book(account={"limits": {"max_otr": 3.0, "otr_min_messages": 4}})
    refs = [book.accept(price=3200.0 - k) for k in range(4)]  # 4th: 4/1 - 1 = 3, at the cap
    d = book.reject(R.OTR_LIMIT, price=3190.0)  # 5 / 1 - 1 = 4 > 3
    assert "4.00 > 3.00 on rb" in d.text
    book.fill(refs[0], 1, 3200.0)
    book.reject(R.OTR_LIMIT, price=3190.0)  # one filled order: still 5 / 1 - 1
    book.fill(refs[1], 1, 3199.0)
    book.accept(price=3190.0)  # 5 / 2 - 1 = 1.5
    book.accept(symbol="au2606")  # another product


def test_otr_counts_cancels_as_messages(make_book):
    book = make_book(account={"limits": {"max_otr": 2.0, "otr_min_messages": 1}})
    ref = book.accept()
    book.eng.cancel_request(ref, book.t0)
    book.accept(price=3199.0)  # 3 / 1 - 1 = 2
    book.reject(R.OTR_LIMIT, price=3198.0)


def test_otr_warning_at_the_configured_fraction(make_book):
    book = make_book(account={"limits": {"max_otr": 4.0, "otr_min_messages": 1,
                                         "warn_fraction": 0.5}})
    decisions = [book.decide(price=3200.0 - k) for k in range(5)]  # OTR 0, 1, 2, 3, 4
    assert all(d.accepted for d in decisions)
    assert [bool(warnings_for(d, R.OTR_LIMIT)) for d in decisions] == [0, 0, 1, 0, 0]
    (w,) = warnings_for(decisions[2], R.OTR_LIMIT)
    assert w.scope == "account:A1/rb" and "order-to-trade ratio at 2.00 of limit 4.00" in w.text


def test_otr_warning_fires_again_after_fills_bring_the_ratio_down(make_book):
    book = make_book(account={"limits": {"max_otr": 4.0, "otr_min_messages": 1,
                                         "warn_fraction": 0.5}})
    refs = [book.accept(price=3200.0 - k) for k in range(3)]  # OTR 2: warned
    book.fill(refs[0], 1, 3200.0)  # 3 messages / 1 filled order - 1 = 2
    book.fill(refs[1], 1, 3199.0)  # 3 / 2 - 1 = 0.5
    ds = [book.decide(price=3190.0 - k) for k in range(3)]  # 1.0, 1.5, 2.0
    assert [bool(warnings_for(d, R.OTR_LIMIT)) for d in ds] == [False, False, True]


def test_otr_warning_counts_cancels_and_waits_for_the_minimum(make_book):
    book = make_book(account={"limits": {"max_otr": 4.0, "otr_min_messages": 4,
                                         "warn_fraction": 0.5}})
    refs = [book.accept(price=3200.0 - k) for k in range(3)]  # 3 messages: below the minimum
    out = book.eng.cancel_request(refs[0], book.t0)  # the 4th message: OTR 3 >= 2
    assert warnings_for(out, R.OTR_LIMIT)
    assert not warnings_for(book.decide(price=3190.0), R.OTR_LIMIT)  # already above


# ---------------------------------------------------------------- 709 working orders
def test_open_orders_limit_counts_working_orders(make_book):
    book = make_book(account={"limits": {"max_open_orders": 3, "warn_fraction": 0.67}})
    ds = [book.decide(price=3200.0 - k) for k in range(3)]
    assert [bool(warnings_for(d, R.OPEN_ORDERS_LIMIT)) for d in ds] == [False, True, False]
    d = book.reject(R.OPEN_ORDERS_LIMIT, price=3190.0)
    assert "3 working" in d.text
    book.fill(ds[0].ref, 1, 3200.0)  # filled: no longer working
    ref = book.accept(price=3190.0)
    book.reject(R.OPEN_ORDERS_LIMIT, price=3189.0)
    book.cancel(ref)
    ref = book.accept(price=3189.0)
    book.eng.apply_reject(ref, book.t0)
    book.accept(price=3188.0)


def test_partly_filled_order_is_still_working(make_book):
    book = make_book(account={"limits": {"max_open_orders": 1}})
    ref = book.accept(qty=2)
    book.fill(ref, 1, 3200.0)
    book.reject(R.OPEN_ORDERS_LIMIT, price=3199.0)


# ---------------------------------------------------------------- 710 repeated orders
def test_repeated_identical_orders_stop_the_account(make_book):
    book = make_book(account={"limits": {"max_repeats": 3, "repeat_window_ms": 1000}})
    t = book.t0
    for k in range(3):
        book.accept(now=t + k)
    d = book.reject(R.REPEATED_ORDERS, now=t + 3)
    assert d.trigger == R.REPEATED_ORDERS
    assert TRIGGER_STATUS[d.trigger] == AccountStatus.SUSPENDED
    book.reject(R.REPEATED_ORDERS, now=t + 1000 * NS_PER_MS - 1)
    book.accept(now=t + 1000 * NS_PER_MS)  # the first has left the window


@pytest.mark.parametrize("change", [{"price": 3199.0}, {"qty": 2}, {"side": Side.SELL, "price": 3300.0},
                                    {"symbol": "au2606"}, {"offset": Offset.CLOSE, "side": Side.SELL,
                                                           "price": 3300.0}])
def test_a_different_order_in_between_does_not_hide_the_repeats(make_book, change):
    """N identical orders within the window, not N in a row: what differs in any field is
    another order, counted apart, and it does not reset the count of the first."""
    book = make_book(account={"limits": {"max_repeats": 2},
                              "positions": [{"symbol": "rb2605", "long": 5, "long_price": 3200.0}]})
    book.accept()
    book.accept(**change)
    book.accept()
    book.accept(**change)
    book.reject(R.REPEATED_ORDERS)
    book.reject(R.REPEATED_ORDERS, **change)


def test_alternating_orders_are_caught_as_repeats(make_book):
    """40 alternating orders A/B/A/B in 0.8 s with a limit of 10 all passed (only the previous
    order was compared): the 11th A is refused."""
    book = make_book(account={"limits": {"max_repeats": 10, "repeat_window_ms": 1000}})
    t = book.t0
    for k in range(20):
        book.accept(now=t + k * 20 * NS_PER_MS, price=3200.0 - k % 2)
    d = book.reject(R.REPEATED_ORDERS, now=t + 20 * 20 * NS_PER_MS)
    assert d.trigger == R.REPEATED_ORDERS


def test_repeats_are_caught_among_as_many_distinct_orders_as_the_table_holds(make_book):
    """Cycling through REPEAT_KEYS distinct orders: every one is tracked, the repeats caught."""
    book = make_book(account={"limits": {"max_repeats": 3, "repeat_window_ms": 1000}})
    n = engine_state.REPEAT_KEYS
    for rnd in range(3):
        for k in range(n):
            book.accept(now=book.t0 + (rnd * n + k) * NS_PER_MS, price=3200.0 - k)
    for k in range(n):
        book.reject(R.REPEATED_ORDERS, now=book.t0 + 3 * n * NS_PER_MS, price=3200.0 - k)


def test_an_order_key_out_of_the_window_gives_its_slot_first(make_book):
    book = make_book(account={"limits": {"max_repeats": 1, "repeat_window_ms": 10}})
    n = engine_state.REPEAT_KEYS
    book.accept(price=3100.0)  # the oldest key, then out of the window
    for k in range(n - 1):
        book.accept(now=book.t0 + 20 * NS_PER_MS, price=3200.0 - k)
    book.accept(now=book.t0 + 21 * NS_PER_MS, price=3150.0)  # takes 3100's slot
    for k in range(n - 1):  # the live keys kept their slots
        book.reject(R.REPEATED_ORDERS, now=book.t0 + 22 * NS_PER_MS, price=3200.0 - k)
    book.reject(R.REPEATED_ORDERS, now=book.t0 + 22 * NS_PER_MS, price=3150.0)


def test_repeat_window_is_configurable(make_book):
    book = make_book(account={"limits": {"max_repeats": 1, "repeat_window_ms": 5}})
    book.accept()
    book.reject(R.REPEATED_ORDERS, now=book.t0 + 5 * NS_PER_MS - 1)
    book.accept(now=book.t0 + 5 * NS_PER_MS)


def test_repeated_market_orders_are_identical_too(make_book):
    book = make_book(account={"limits": {"max_repeats": 2}})
    market = {"symbol": "m2605", "ord_type": OrdType.MARKET, "tif": Tif.IOC}
    book.accept(**market)
    book.accept(**market)
    book.reject(R.REPEATED_ORDERS, **market)


# ---------------------------------------------------------------- 711 repeated executions
def test_repeated_executions_trigger_a_stop(make_book):
    book = make_book(account={"limits": {"max_executions": 2, "execution_window_ms": 1000}})
    t = book.t0
    ref = book.accept(qty=10)
    assert book.fill(ref, 1, 3200.0, now=t).trigger == 0
    assert book.fill(ref, 1, 3200.0, now=t + 1).trigger == 0
    out = book.fill(ref, 1, 3200.0, now=t + 2)
    assert out.trigger == R.REPEATED_EXECUTIONS
    assert TRIGGER_STATUS[out.trigger] == AccountStatus.SUSPENDED
    assert criticals_for(out, R.REPEATED_EXECUTIONS)[0].scope == "account:A1"


def test_executions_spread_beyond_the_window_do_not_trigger(make_book):
    book = make_book(account={"limits": {"max_executions": 2, "execution_window_ms": 1000}})
    ref = book.accept(qty=10)
    for k in range(6):
        out = book.fill(ref, 1, 3200.0, now=book.t0 + k * 500 * NS_PER_MS)
        assert out.trigger == 0, k


def test_repeated_orders_warning_at_the_configured_fraction(make_book):
    book = make_book(account={"limits": {"max_repeats": 4, "warn_fraction": 0.5}})
    decisions = [book.decide(now=book.t0 + k) for k in range(4)]
    assert all(d.accepted for d in decisions)
    assert [bool(warnings_for(d, R.REPEATED_ORDERS)) for d in decisions] == [0, 1, 0, 0]
    (w,) = warnings_for(decisions[1], R.REPEATED_ORDERS)
    assert w.scope == "account:A1" and "at 2 of limit 4" in w.text


def test_repeated_orders_warning_starts_over_with_a_different_order(make_book):
    book = make_book(account={"limits": {"max_repeats": 4, "warn_fraction": 0.5}})
    ds = [book.decide(now=book.t0 + k) for k in range(2)]
    ds += [book.decide(now=book.t0 + 2, price=3199.0)]  # a different order: a new run
    ds += [book.decide(now=book.t0 + 3, price=3199.0)]
    assert [bool(warnings_for(d, R.REPEATED_ORDERS)) for d in ds] == [0, 1, 0, 1]


def test_repeated_executions_warning_at_the_configured_fraction(make_book):
    book = make_book(account={"limits": {"max_executions": 4, "warn_fraction": 0.5}})
    ref = book.accept(qty=10)
    outs = [book.fill(ref, 1, 3200.0, now=book.t0 + k) for k in range(4)]
    assert all(o.trigger == 0 for o in outs)
    assert [bool(warnings_for(o, R.REPEATED_EXECUTIONS)) for o in outs] == [0, 1, 0, 0]
    (w,) = warnings_for(outs[1], R.REPEATED_EXECUTIONS)
    assert w.scope == "account:A1" and "at 2 of limit 4" in w.text
    assert book.fill(ref, 1, 3200.0, now=book.t0 + 4).trigger == R.REPEATED_EXECUTIONS
