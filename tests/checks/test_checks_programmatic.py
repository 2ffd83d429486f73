"""Reference engine: programmatic and high-frequency trading (8xx, 1302, 1303), docs/ARCHITECTURE.md §4.8.

An unregistered account that shows programmatic behaviour (N occasions in a day with >= k
orders+cancels inside one second) is flagged with alert 1302 and, when configured, stopped
(trigger 801, then every order refused with 801). The HFT standard (orders+cancels per second
and per day, per exchange) classifies an account (1303); an unregistered account or a
direct-access member may not exceed it, a registered one may not exceed its reported maxima.
"""

from __future__ import annotations

import pytest

from checks.calendar import ns_from_local
from checks.decision import TRIGGER_STATUS
from checks.enums import AccountStatus, AlertLevel
from checks.reasons import Reason as R
from checks.state import NS_PER_S

S = NS_PER_S


def codes(x) -> list[int]:
    return [a.code for a in x.alerts or ()]


def burst(book, n: int, at: int, **fields) -> list:
    """``n`` accepted orders 1 ns apart from ``at``, each at its own price."""
    return [book.decide(now=at + k, price=3200.0 - k, **fields) for k in range(n)]


# ---------------------------------------------------------------- 801 / 1302
def unregistered(make_book, stop: bool):
    return make_book(account={"programmatic": "NONE", "limits": {
        "programmatic_per_sec": 3, "programmatic_occasions": 2,
        "stop_unregistered_programmatic": stop}})


def test_unregistered_programmatic_behaviour_is_flagged_then_stopped_801(make_book):
    book = unregistered(make_book, stop=True)
    t = book.t0
    first = burst(book, 3, t)
    assert all(d.accepted and d.trigger == 0 for d in first)
    assert book.account().occasions == 1 and R.PROGRAMMATIC_BEHAVIOUR not in codes(first[2])
    second = burst(book, 3, t + 2 * S)
    assert all(d.accepted for d in second)
    assert [R.PROGRAMMATIC_BEHAVIOUR in codes(d) for d in second] == [False, False, True]
    assert second[2].trigger == R.PROGRAMMATIC_UNREGISTERED  # accepted, and "stop the account"
    assert TRIGGER_STATUS[R.PROGRAMMATIC_UNREGISTERED] == AccountStatus.SUSPENDED
    (a,) = [a for a in second[2].alerts if a.code == R.PROGRAMMATIC_BEHAVIOUR]
    assert a.level == AlertLevel.CRITICAL and a.scope == "account:A1"
    d = book.reject(R.PROGRAMMATIC_UNREGISTERED, now=t + 10 * S)
    assert d.trigger == R.PROGRAMMATIC_UNREGISTERED


def test_unregistered_programmatic_behaviour_only_alerts_when_not_configured_to_stop(make_book):
    book = unregistered(make_book, stop=False)
    burst(book, 3, book.t0)
    second = burst(book, 3, book.t0 + 2 * S)
    assert R.PROGRAMMATIC_BEHAVIOUR in codes(second[2]) and second[2].trigger == 0
    third = burst(book, 3, book.t0 + 4 * S)  # flagged once a day: no second alert
    assert all(d.accepted and R.PROGRAMMATIC_BEHAVIOUR not in codes(d) for d in third)
    assert book.account().occasions == 3


def test_one_busy_second_is_one_occasion(make_book):
    book = unregistered(make_book, stop=True)
    burst(book, 8, book.t0)  # 8 orders in one second: the window stays at >= 3
    assert book.account().occasions == 1
    book.accept(now=book.t0 + 3 * S)


def test_cancels_count_towards_programmatic_behaviour(make_book):
    book = unregistered(make_book, stop=True)
    ref = book.accept()
    book.accept(now=book.t0 + 1, price=3199.0)
    book.eng.cancel_request(ref, book.t0 + 2)
    assert book.account().occasions == 1


@pytest.mark.parametrize("registration", ["REPORTED", "CONFIRMED"])
def test_registered_accounts_are_never_flagged(make_book, registration):
    book = make_book(account={"programmatic": registration, "limits": {
        "programmatic_per_sec": 3, "programmatic_occasions": 1,
        "stop_unregistered_programmatic": True}})
    decisions = burst(book, 5, book.t0) + burst(book, 5, book.t0 + 2 * S)
    assert all(d.accepted and d.trigger == 0 for d in decisions)
    assert book.account().occasions == 0


def test_programmatic_stop_is_lifted_by_the_next_trading_day(make_book):
    book = unregistered(make_book, stop=True)
    burst(book, 3, book.t0)
    burst(book, 3, book.t0 + 2 * S)
    book.reject(R.PROGRAMMATIC_UNREGISTERED, now=book.t0 + 3 * S)
    book.accept(now=ns_from_local(2026, 3, 11, 10, 0))  # counters reset on the daily roll
    assert book.account().occasions == 0


# ---------------------------------------------------------------- 802 / 1303
def test_unregistered_hft_per_second_standard_802(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 4}})
    ds = burst(book, 4, book.t0)
    assert all(d.accepted for d in ds)
    assert [R.HFT_CLASSIFIED in codes(d) for d in ds] == [False, False, False, True]
    d = book.reject(R.HFT_UNREGISTERED, now=book.t0 + 4)
    assert "4/s" in d.text
    book.reject(R.HFT_UNREGISTERED, now=book.t0 + S - 1)
    book.accept(now=book.t0 + S, price=3100.0)


def test_hft_standard_counts_cancels(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 3}})
    ref = book.accept()
    book.eng.cancel_request(ref, book.t0)
    book.accept(price=3199.0)
    book.reject(R.HFT_UNREGISTERED, price=3198.0)


def test_unregistered_hft_per_day_standard_802(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_day": 5}})
    ds = [book.decide(now=book.t0 + k * S, price=3200.0 - k) for k in range(5)]
    assert all(d.accepted for d in ds)
    assert R.HFT_CLASSIFIED in codes(ds[4])
    warn = [[a for a in d.alerts or () if a.code == R.THRESHOLD_WARNING] for d in ds]
    assert [bool(w) for w in warn] == [False, False, False, True, False]  # 80 % of 5
    assert warn[3][0].text == "HFT_UNREGISTERED: orders+cancels today at 4 of limit 5"
    book.reject(R.HFT_UNREGISTERED, now=book.t0 + 10 * S)
    book.accept(now=ns_from_local(2026, 3, 11, 10, 0))  # a new trading day


def test_hft_classified_alert_fires_once_a_day(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 2}},
                     account={"hft": {"max_per_sec": 100, "max_per_day": 1000}})
    ds = burst(book, 2, book.t0) + burst(book, 2, book.t0 + 2 * S)
    assert [R.HFT_CLASSIFIED in codes(d) for d in ds] == [False, True, False, False]
    ds = burst(book, 2, ns_from_local(2026, 3, 11, 10, 0))
    assert [R.HFT_CLASSIFIED in codes(d) for d in ds] == [False, True]


def test_hft_standard_is_per_exchange(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 2}})
    burst(book, 2, book.t0)
    book.reject(R.HFT_UNREGISTERED, now=book.t0 + 2)
    book.accept(now=book.t0 + 2, symbol="m2605")  # DCE keeps the default 300/s


# ---------------------------------------------------------------- 803
@pytest.mark.parametrize("hft", [None, {"max_per_sec": 100, "max_per_day": 1000}])
def test_direct_access_member_may_not_trade_at_high_frequency_803(make_book, hft):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 3}},
                     account={"direct_access": True, "hft": hft})
    burst(book, 3, book.t0)
    book.reject(R.HFT_DIRECT_ACCESS, now=book.t0 + 3)


def test_direct_access_per_day_803(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_day": 2}}, account={"direct_access": True})
    d = book.decide()
    assert [a.text for a in d.alerts if a.code == R.THRESHOLD_WARNING] == [
        "HFT_DIRECT_ACCESS: orders+cancels today at 1 of limit 2"]
    book.accept(now=book.t0 + S, price=3199.0)
    book.reject(R.HFT_DIRECT_ACCESS, now=book.t0 + 2 * S)


@pytest.mark.parametrize("hft", [None, {"max_per_sec": 100, "max_per_day": 1000}])
def test_direct_access_daily_warning_is_labelled_803_even_when_registered(make_book, hft):
    # A direct-access member is held to the exchange's standard, registered or not.
    book = make_book(exchanges={"SHFE": {"hft_per_day": 5}},
                     account={"direct_access": True, "hft": hft})
    ds = [book.decide(now=book.t0 + k * S, price=3200.0 - k) for k in range(4)]
    warned = [a.text for d in ds for a in d.alerts or () if a.code == R.THRESHOLD_WARNING]
    assert warned == ["HFT_DIRECT_ACCESS: orders+cancels today at 4 of limit 5"]


# ---------------------------------------------------------------- 804
def test_registered_hft_may_exceed_the_standard_up_to_its_reported_maximum_804(make_book):
    book = make_book(exchanges={"SHFE": {"hft_per_sec": 4}},
                     account={"hft": {"max_per_sec": 6, "max_per_day": 1000}})
    ds = burst(book, 6, book.t0)
    assert all(d.accepted for d in ds)
    assert R.HFT_CLASSIFIED in codes(ds[3])  # meets the standard: classified, not refused
    d = book.reject(R.HFT_LIMIT, now=book.t0 + 6)
    assert "reported 6/s" in d.text
    book.accept(now=book.t0 + S, price=3100.0)


def test_registered_hft_daily_maximum_804(make_book):
    book = make_book(account={"hft": {"max_per_sec": 100, "max_per_day": 5}})
    ds = [book.decide(now=book.t0 + k * S, price=3200.0 - k) for k in range(5)]
    assert all(d.accepted for d in ds)
    assert [a.text for a in ds[3].alerts or () if a.code == R.THRESHOLD_WARNING] == [
        "HFT_LIMIT: orders+cancels today at 4 of limit 5"]  # 80 % of the reported 5
    book.reject(R.HFT_LIMIT, now=book.t0 + 10 * S)


def test_registered_hft_below_the_standard_is_held_to_its_own_maximum(make_book):
    book = make_book(account={"hft": {"max_per_sec": 2, "max_per_day": 1000}})
    burst(book, 2, book.t0)
    book.reject(R.HFT_LIMIT, now=book.t0 + 2)
