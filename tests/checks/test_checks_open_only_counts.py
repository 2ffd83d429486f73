"""Reference engine: the daily count limits restrict opening only (限制开仓).

The exchanges' measure for too many cancels (703), large cancels (704), self-trades (705),
messages (707) and a high order-to-trade ratio (708) is to restrict *opening*: once a limit is
reached, new opening orders are refused, but a closing order always passes, so a client is never
stuck in a position for the rest of the day.
"""

from __future__ import annotations

from checks.enums import Offset, Side
from checks.reasons import Reason as R

LONG_5 = {"positions": [{"symbol": "rb2605", "long": 5, "long_price": 3200.0}]}


def _with(account: dict, limits: dict | None = None) -> dict:
    out = dict(account)
    if limits:
        out["limits"] = limits
    return out


def _close(book, **fields):
    return book.accept(side=Side.SELL, offset=Offset.CLOSE, **fields)


def test_contract_cancel_limit_refuses_openings_but_lets_a_close_out(make_book):
    book = make_book(inst={"rb2605": {"cancel_limit": 2}}, account=LONG_5)
    for k in range(2):
        book.cancel(book.accept(price=3200.0 - k), book.t0)
    book.reject(R.CONTRACT_CANCEL_LIMIT)
    book.reject(R.CONTRACT_CANCEL_LIMIT, side=Side.SELL)  # a short opening is an opening too
    _close(book, qty=2)


def test_large_cancel_limit_refuses_large_openings_but_not_a_large_close(make_book):
    book = make_book(inst={"rb2605": {"large_order_qty": 3}},
                     exchanges={"SHFE": {"large_cancel_limit": 1}}, account=LONG_5)
    book.cancel(book.accept(qty=3), book.t0)
    book.reject(R.LARGE_CANCEL_LIMIT, qty=3)
    _close(book, qty=4)


def test_self_trade_limit_refuses_openings_but_lets_a_close_out(make_book):
    book = make_book(exchanges={"SHFE": {"self_trade_limit": 1}}, account=LONG_5)
    book.fill(book.accept(), 1, 3200.0, self_trade=True)
    book.reject(R.SELF_TRADE_LIMIT, price=3199.0)
    _close(book, qty=5, price=3201.0)


def test_message_cap_refuses_openings_but_lets_a_close_out(make_book):
    book = make_book(account=_with(LONG_5, {"max_messages_per_product": 2}))
    book.eng.cancel_request(book.accept(), book.t0)  # messages 1 and 2
    book.reject(R.MESSAGE_LIMIT, price=3199.0)
    _close(book, qty=5, price=3201.0)


def test_otr_cap_refuses_openings_but_lets_a_close_out(make_book):
    book = make_book(account=_with(LONG_5, {"max_otr": 1.0, "otr_min_messages": 1}))
    book.eng.cancel_request(book.accept(), book.t0)  # 2 / 1 - 1 = 1: at the cap
    book.reject(R.OTR_LIMIT, price=3199.0)
    _close(book, qty=5, price=3201.0)
