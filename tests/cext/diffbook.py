"""Builders for the differential tests: a tight little book, and both engines driven in lockstep.

``config(trading_hours)`` builds, through the real path (``RiskConfigFile`` ->
``checks.config.resolve``), a book small enough to exhaust: six accounts (an ordinary client
with carried positions, two accounts of one group — one HFT-registered, one CLOSE_ONLY — an
unregistered manual trader who is stopped when he looks programmatic, a direct-access member
with little money, and a REPORTED-only one), five contracts on SHFE (close-today distinct),
DCE (two contracts of one product, market orders) and CFFEX (day session only), and limits so
tight that every check of docs/ARCHITECTURE.md §4 fires within a few dozen steps.

``Pair`` holds a ``checks.engine.Engine`` and a ``cext.engine.Engine`` built from the same
config, and a second ``cext.engine.Engine`` that takes orders, acks and fills through the entries
of the compiled order path (``decide_c``, ``ack_c``, ``fill_c``, reached from Python as
``decide_wire`` / ``ack_wire`` / ``fill_wire``) whenever the arguments are what the wire carries.
``Pair.call`` runs one method on all three and insists on the same answer — or the same
exception type — and ``Pair.check`` compares the snapshots and runs the book invariants
(``checks.invariants``) with the positions the test expects from the fills it applied.

``Driver`` holds the steps of a random history (a new order, a burst, a fill, a kill, time
passing, ...). It draws its choices through a ``Chooser``, so the same steps serve two masters:
hypothesis's state machine (``DrawChooser``: shrinkable, broad, short histories) and a seeded
random walk (``RandomChooser``: thousands of steps within one trading day, deep enough to
exhaust daily limits, and repeatable, so the test can demand that every check fired).
"""

from __future__ import annotations

import copy
import math
import random
import types
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol

import msgspec
from hypothesis import strategies as st

from cext.engine import Engine as CEngine
from checks.calendar import CST_OFFSET_S, DAY_S, NS, ns_from_local
from checks.config import resolve
from checks.decision import TRIGGER_STATUS
from checks.engine import Engine as RefEngine
from checks.enums import AccountStatus, KillScope, Offset, ProgReg, Side
from checks.invariants import book_violations
from checks.model import Limits, RiskConfig, RiskConfigFile
from checks.reasons import Reason
from gateway.protocol import NewOrder

# Tuesday 2026-03-10, 10:00 China time: inside every instrument's day session.
T0 = ns_from_local(2026, 3, 10, 10, 0)
MS = 1_000_000
S = 1_000_000_000

NIGHT_AND_DAY = [["21:00", "23:00"], ["09:00", "10:15"], ["10:30", "11:30"], ["13:30", "15:00"]]
LATE_NIGHT_AND_DAY = [["21:00", "02:30"], ["09:00", "10:15"], ["10:30", "11:30"],
                      ["13:30", "15:00"]]

INSTRUMENTS: list[dict[str, Any]] = [
    {"symbol": "rb2605", "exchange": "SHFE", "product": "rb", "multiplier": 10.0, "tick": 1.0,
     "reference_price": 3200.0, "upper_limit": 3300.0, "lower_limit": 3100.0,
     "collar_pct": 0.01, "margin_long": 0.1, "margin_short": 0.1,
     "fees": {"open_ratio": 0.0001, "close_ratio": 0.0001, "close_today_ratio": 0.0003,
              "per_order": 0.5},
     "max_limit_qty": 20, "large_order_qty": 6, "cancel_limit": 8, "position_limit": 30,
     "sessions": NIGHT_AND_DAY},
    {"symbol": "au2606", "exchange": "SHFE", "product": "au", "multiplier": 1000.0,
     "tick": 0.02, "reference_price": 640.0, "upper_limit": 660.0, "lower_limit": 620.0,
     "collar_pct": None, "collar_ticks": 150, "margin_long": 0.08, "margin_short": 0.09,
     "margin_per_lot": 100.0,
     "fees": {"open_per_lot": 10.0, "close_per_lot": 10.0, "close_today_per_lot": 0.0},
     "max_limit_qty": 10, "position_limit": 15, "sessions": LATE_NIGHT_AND_DAY},
    {"symbol": "m2605", "exchange": "DCE", "product": "m", "multiplier": 10.0, "tick": 1.0,
     "reference_price": 2900.0, "upper_limit": 3000.0, "lower_limit": 2800.0,
     "collar_pct": 0.02, "margin_long": 0.08, "margin_short": 0.08,
     "fees": {"open_per_lot": 1.5, "close_per_lot": 1.5, "close_today_per_lot": 1.5},
     "max_limit_qty": 12, "max_market_qty": 4, "cancel_limit": 6, "position_limit": 40,
     "sessions": NIGHT_AND_DAY},
    {"symbol": "m2609", "exchange": "DCE", "product": "m", "multiplier": 10.0, "tick": 1.0,
     "reference_price": 3000.0, "upper_limit": 3100.0, "lower_limit": 2900.0,
     "collar_pct": 0.0, "margin_long": 0.08, "margin_short": 0.08,  # (collar switched off)
     "min_limit_qty": 2, "max_limit_qty": 12, "max_market_qty": 4, "position_limit": 40,
     "sessions": NIGHT_AND_DAY},
    {"symbol": "IF2612", "exchange": "CFFEX", "product": "IF", "multiplier": 300.0, "tick": 0.2,
     "reference_price": 3500.0, "upper_limit": 3600.0, "lower_limit": 3400.0,
     "collar_pct": None, "collar_ticks": 100, "margin_long": 0.12, "margin_short": 0.12,
     "fees": {"open_ratio": 0.000023, "close_ratio": 0.000023, "close_today_ratio": 0.000345,
              "per_cancel": 1.0},
     "max_limit_qty": 5, "max_market_qty": 3, "position_limit": 10,
     "sessions": [["09:30", "11:30"], ["13:00", "15:00"]]},
]

EXCHANGES: dict[str, dict[str, Any]] = {
    "SHFE": {"hft_per_sec": 12, "hft_per_day": 300, "self_trade_limit": 2,
             "large_cancel_limit": 2},
    "DCE": {"hft_per_sec": 8, "hft_per_day": 250, "self_trade_limit": 3,
            "large_cancel_limit": 3},
    "CFFEX": {"hft_per_sec": 15, "hft_per_day": 300, "large_cancel_limit": 2,
              "fak_counts_as_cancel": False},
}

LIMITS: dict[str, Any] = {
    "max_order_qty": 12, "max_notional": 4_000_000.0, "max_orders_per_sec": 8,
    "max_cancels_per_sec": 6, "max_open_orders": 10, "max_messages_per_product": 16,
    "max_otr": 10.0, "otr_min_messages": 12, "message_fee": 0.01, "message_fee_free": 12,
    "max_repeats": 3, "repeat_window_ms": 200, "max_executions": 5, "execution_window_ms": 100,
    "loss_limit": 3000.0, "programmatic_per_sec": 4, "programmatic_occasions": 2,
    "warn_fraction": 0.6,
}

ACCOUNTS: list[dict[str, Any]] = [
    {"id": "A1", "balance": 3_000_000.0, "programmatic": "CONFIRMED",
     "positions": [{"symbol": "rb2605", "long": 8, "long_price": 3180.0, "short": 3,
                    "short_price": 3210.0},
                   {"symbol": "au2606", "long": 2, "long_price": 645.0},
                   {"symbol": "m2605", "long": 5, "long_price": 2890.0, "short": 2,
                    "short_price": 2910.0},
                   {"symbol": "IF2612", "short": 2, "short_price": 3520.0}]},
    {"id": "A2", "group": "G1", "balance": 600_000.0, "programmatic": "CONFIRMED",
     "hft": {"max_per_sec": 6, "max_per_day": 20},
     "positions": [{"symbol": "rb2605", "short": 6, "short_price": 3205.0}]},
    {"id": "A3", "group": "G1", "balance": 400_000.0, "programmatic": "CONFIRMED",
     "status": "CLOSE_ONLY",
     "positions": [{"symbol": "m2605", "long": 4, "long_price": 2900.0},
                   {"symbol": "rb2605", "long": 3, "long_price": 3200.0}]},
    {"id": "U1", "balance": 800_000.0, "programmatic": "NONE", "products": ["rb", "m"],
     "order_types": ["LIMIT"], "limits": {"stop_unregistered_programmatic": True},
     "positions": [{"symbol": "m2609", "short": 3, "short_price": 3010.0}]},
    {"id": "D1", "balance": 150_000.0, "programmatic": "CONFIRMED", "direct_access": True,
     "limits": {"max_order_qty": 5}},
    {"id": "R1", "balance": 1_000_000.0, "programmatic": "REPORTED",
     "limits": {"loss_limit": 500.0, "max_open_orders": None, "max_orders_per_sec": None,
                "max_repeats": None, "max_executions": None, "max_otr": None}},
]

ACCOUNT_IDS = [a["id"] for a in ACCOUNTS]
GROUPS = ["G1"] + [f"~{a['id']}" for a in ACCOUNTS if "group" not in a]
SYMBOLS = [i["symbol"] for i in INSTRUMENTS]
PRODUCTS = sorted({i["product"] for i in INSTRUMENTS})
AUTOMATED_SESSION = 1


def raw_config(trading_hours: str = "enforce") -> dict[str, Any]:
    """The config as written (a fresh copy: a test may change it before ``resolve``)."""
    return copy.deepcopy({
        "firm": {"trading_hours": trading_hours},
        "limits": LIMITS,
        "exchanges": EXCHANGES,
        "instruments": INSTRUMENTS,
        "groups": [{"name": "G1", "limits": {"max_open_volume_per_contract": 20}}],
        "accounts": ACCOUNTS,
    })


def config(trading_hours: str = "enforce") -> RiskConfig:
    return resolve(msgspec.convert(raw_config(trading_hours), RiskConfigFile), "<diffbook>")


def start_positions() -> dict[tuple[str, str], list[int]]:
    """(account, symbol) -> [long, short] lots at the start of the day."""
    out: dict[tuple[str, str], list[int]] = {}
    for acc in ACCOUNTS:
        for p in acc.get("positions", []):
            out[(acc["id"], p["symbol"])] = [p.get("long", 0), p.get("short", 0)]
    return out


I64 = 1 << 63


def _i64(v: Any) -> bool:
    return type(v) is int and -I64 <= v < I64


def wire_call(engine: CEngine, name: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    """``name(*args)`` on ``engine`` through the compiled order path's entry when the arguments
    are as the wire carries them (exact ints in int64, a float price, str names), else the
    method itself; what went through an entry is counted in ``SEEN`` ("wire <reason>", "wire
    ack", "wire fill")."""
    if name == "decide" and not kwargs:
        order, now, *rest = args
        session = rest[0] if rest else 0
        fields = [getattr(order, f, None) for f in ("side", "offset", "hedge", "ord_type", "tif",
                                                    "qty")]
        if (type(getattr(order, "account", None)) is str and type(getattr(order, "symbol", None))
                is str and all(map(_i64, fields)) and type(getattr(order, "price", None)) is float
                and _i64(now) and _i64(session)):
            out = outcome_of(engine.decide_wire, order.account, order.symbol, *fields[:5],
                             order.price, fields[5], now, session)
            if out[0] == "ok":
                SEEN[f"wire {Reason(out[1].reason).name}"] += 1
            return out
    elif name == "apply_ack" and not kwargs and _i64(args[0]):
        SEEN["wire ack"] += 1
        return outcome_of(engine.ack_wire, args[0])
    elif (name == "apply_fill" and not kwargs and _i64(args[0]) and _i64(args[1])
          and type(args[2]) is float and _i64(args[3]) and type(args[4]) is bool):
        SEEN["wire fill"] += 1
        return outcome_of(engine.fill_wire, *args)
    return outcome_of(getattr(engine, name), *args, **kwargs)


def outcome_of(fn, *args, **kwargs) -> tuple[str, Any]:  # noqa: ANN001
    try:
        return "ok", fn(*args, **kwargs)
    except Exception as err:  # the engines must fail alike, too
        return "raised", type(err)


class Pair:
    """Both engines from one config, called in lockstep (see the module docstring)."""

    def __init__(self, cfg: RiskConfig) -> None:
        self.ref = RefEngine(cfg)
        self.c = CEngine(cfg)
        self.wire = CEngine(cfg)  # driven through the compiled order path's entries
        self.groups = [a.group for a in self.ref.accounts]
        self.positions = start_positions()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        want = outcome_of(getattr(self.ref, name), *args, **kwargs)
        got = outcome_of(getattr(self.c, name), *args, **kwargs)
        assert got == want, f"{name}{args}: cext {got} != reference {want}"
        got = wire_call(self.wire, name, args, kwargs)
        assert got == want, f"{name}{args}: cext wire entry {got} != reference {want}"
        return want[1] if want[0] == "ok" else None

    def fill(self, ref: Any, qty: Any, px: Any, now: int, self_trade: bool) -> Any:
        """A fill through both engines, tracking the positions it should leave."""
        view = self.view(ref)
        out = self.call("apply_fill", ref, qty, px, now, self_trade)
        if out is not None and out.known:
            lots = self.positions.setdefault((ACCOUNT_IDS[view[1]], SYMBOLS[view[2]]), [0, 0])
            side, offset = view[3], view[4]
            if offset == Offset.OPEN:
                lots[0 if side == Side.BUY else 1] += qty
            else:  # a sell closes a long, a buy closes a short
                lots[0 if side == Side.SELL else 1] -= qty
        return out

    def view(self, ref: Any) -> tuple | None:
        """The reference's view of an order, or None (also for an unhashable reference)."""
        try:
            return self.ref.order_view(ref)
        except TypeError:
            return None

    def check(self) -> None:
        snap = self.ref.snapshot()
        assert self.c.snapshot() == snap
        assert self.wire.snapshot() == snap
        views = {}
        for account in ACCOUNT_IDS:
            views[account] = self.ref.account_view(account)
            assert self.c.account_view(account) == views[account]
            assert self.wire.account_view(account) == views[account]
        bad = book_violations(snap, self.groups,
                              {k: tuple(v) for k, v in self.positions.items()}, views)
        assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- random histories
class Chooser(Protocol):
    def choice(self, options: Sequence[Any]) -> Any: ...
    def integer(self, lo: int, hi: int) -> int: ...
    def any_number(self) -> Any: ...


class DrawChooser:
    """Choices drawn by hypothesis (``st.data()``), so failures shrink."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, options: Sequence[Any]) -> Any:
        return self.data.draw(st.sampled_from(options))

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def any_number(self) -> Any:
        return self.data.draw(st.floats() | st.integers())


class RandomChooser:
    """Choices from a seeded ``random.Random``: long, repeatable walks."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rng.randrange(len(options))]

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def any_number(self) -> Any:
        r = self.rng
        return r.choice([r.uniform(-1e4, 1e4), r.uniform(0, 1e300), r.randint(-(2**70), 2**70),
                         r.choice([math.nan, math.inf, -math.inf, 0.0, -0.0, 5e-324])])


BAD_ENUMS = [0, -1, 5, True, False, None, 1.0, "1", 2**70, -(2**70), Side.BUY]
BAD_QTYS = [0, -1, -3.0, 1.5, 0.999, math.nan, math.inf, -math.inf, None, "2", True, 2**63,
            -(2**63) - 1, 10**30, 2.0**62, 1e20, 21, 2.0, 7.0, Decimal(2)]
BAD_PRICES = [math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, None, "3200", True, 2**60, 3200,
              2**53, 1e300, 1.7e308, 10**20, -(2**70), Decimal("3200")]
BAD_REFS = [-1, 0, 1, 1 << 32, (1 << 32) | 1, 2**70, 3.0, 1.5, math.nan, None, "0", True]
TICKS = {i["symbol"]: i["tick"] for i in INSTRUMENTS}
SEEN: Counter[str] = Counter()  # reason / alert / warning / trigger names met


def note(answer: Any, seen: Counter[str] = SEEN) -> None:
    """Count what an answer shows, so a test can demand that every check was reached."""
    if answer is None:
        return
    reason = getattr(answer, "reason", None)
    if reason is not None:
        seen[Reason(reason).name] += 1
    for a in getattr(answer, "alerts", None) or ():
        seen[f"alert {Reason(a.code).name}"] += 1
        if a.code == Reason.THRESHOLD_WARNING:
            seen[f"warn {a.text.split(':')[0]}"] += 1
    if getattr(answer, "trigger", 0):
        seen[f"trigger {Reason(answer.trigger).name}"] += 1
    for _account, trigger in getattr(answer, "triggers", None) or ():
        seen[f"triggers {Reason(trigger).name}"] += 1


def _local(now: int) -> int:
    return (now // NS + CST_OFFSET_S) % DAY_S


def next_local(now: int, seconds_of_day: int) -> int:
    """The first instant after ``now`` whose local time of day is ``seconds_of_day``."""
    t = now - now % NS - _local(now) * NS + seconds_of_day * NS
    while t <= now:
        t += DAY_S * NS
    return t


class Driver:
    """The steps of a random history through a ``Pair`` (see the module docstring)."""

    def __init__(self, trading_hours: str) -> None:
        self.pair = Pair(config(trading_hours))
        self.now = T0
        self.refs: list[Any] = []
        self.pair.call("register_session", AUTOMATED_SESSION, True)

    def _ref(self, ch: Chooser) -> Any:
        if self.refs and ch.integer(0, 9):
            return ch.choice(self.refs[-12:])
        return ch.choice(BAD_REFS)

    def _usually(self, ch: Chooser, common: Sequence[Any], odd: Sequence[Any], one_in: int) -> Any:
        return ch.choice(odd if ch.integer(1, one_in) == 1 else common)

    def _decide(self, order: Any, session: int) -> Any:
        decision = self.pair.call("decide", order, self.now, session)
        note(decision)
        if decision is not None and decision.accepted:
            self.refs.append(decision.ref)
        self._act_on(decision, getattr(order, "account", None))
        return decision

    def _act_on(self, answer: Any, account: Any) -> None:
        """Do what the gateway does with a trigger: stop the account (docs/ARCHITECTURE.md §5)."""
        if answer is not None and answer.trigger and account in ACCOUNT_IDS:
            self.pair.call("set_status", account, TRIGGER_STATUS[answer.trigger])

    # ---------------------------------------------------------------- orders
    def new_order(self, ch: Chooser) -> None:
        account = self._usually(ch, ACCOUNT_IDS, ["ZZ", None, 7, "a1"], 25)
        symbol = self._usually(ch, SYMBOLS, ["xx9999", b"rb2605", None], 25)
        side = self._usually(ch, [1, 2], BAD_ENUMS, 60)
        offset = self._usually(ch, [1, 1, 1, 2, 3, 4], BAD_ENUMS, 60)
        hedge = self._usually(ch, [1, 1, 1, 2, 3], BAD_ENUMS, 60)
        ord_type = self._usually(ch, [1, 1, 1, 1, 2], BAD_ENUMS, 60)
        tif = self._usually(ch, [1, 1, 1, 2, 3], BAD_ENUMS, 60)
        kind = ch.integer(0, 19)
        price: Any
        if kind < 16 and symbol in TICKS:
            tick = TICKS[symbol]
            ref_px = self.pair.ref.instruments[self.pair.ref.inst_ids[symbol]].ref_price
            steps = ch.integer(-6, 6) if kind < 11 else ch.integer(-160, 160)
            price = round(ref_px / tick + steps) * tick
            if kind == 15:
                price = price + tick / 3  # off tick
            elif kind == 14:  # right at the band, as market data gave it (in floats, maybe off grid)
                inst = self.pair.ref.instruments[self.pair.ref.inst_ids[symbol]]
                price = ch.choice([inst.upper, inst.lower])
        elif kind < 18:
            price = ch.choice(BAD_PRICES)
        else:
            price = ch.any_number()
        qty = ch.integer(1, 8) if ch.integer(0, 9) else ch.choice(BAD_QTYS + [9, 12, 13, 30])
        if ch.integer(0, 25) == 0:  # anything with the fields will do
            order: Any = types.SimpleNamespace(cl_ord_id="x", account=account, symbol=symbol,
                                               side=side, offset=offset, hedge=hedge,
                                               ord_type=ord_type, tif=tif, price=price, qty=qty)
        else:
            order = NewOrder("x", account, symbol, side, offset, hedge, ord_type, tif, price, qty)
        self._decide(order, ch.choice([0, 0, 0, 0, 0, AUTOMATED_SESSION, 2]))

    def burst(self, ch: Chooser) -> None:
        """Near-identical orders within milliseconds: rates, repeats, HFT, programmatic."""
        account = ch.choice(ACCOUNT_IDS)
        symbol = ch.choice(["rb2605", "m2605"] if account == "U1"
                           else ["rb2605", "m2605", "IF2612", "au2606"])
        tick = TICKS[symbol]
        ref_px = self.pair.ref.instruments[self.pair.ref.inst_ids[symbol]].ref_price
        price = round(ref_px / tick + ch.integer(-3, 3)) * tick
        side, offset = ch.choice([(1, 1), (2, 1), (1, 1), (2, 1), (2, 2), (1, 3)])
        qty = ch.choice([1, 1, 2, 6])
        for _ in range(ch.integer(2, 12)):
            self.now += ch.integer(0, 30) * MS
            step = ch.integer(-2, 2) if ch.integer(0, 1) == 0 else 0  # not always identical
            order = NewOrder("b", account, symbol, side, offset, 1, 1, 1, price + step * tick, qty)
            decision = self._decide(order, 0)
            if decision is not None and decision.accepted and ch.integer(0, 1):
                note(self.pair.call("cancel_request", decision.ref, self.now))

    def flood(self, ch: Chooser) -> None:
        """Order, cancel, confirm — over and over on one contract: daily message and cancel
        counts, cancel rate, HFT standards, programmatic behaviour."""
        account = ch.choice(["A1", "A2", "A2", "U1", "U1", "D1", "D1", "R1", "R1"])
        symbol = ch.choice(["rb2605", "m2605"] if account == "U1" else SYMBOLS)
        tick = TICKS[symbol]
        ref_px = self.pair.ref.instruments[self.pair.ref.inst_ids[symbol]].ref_price
        qty = ch.choice([1, 2, 3, 6, 9])
        for k in range(ch.integer(5, 30)):
            self.now += ch.integer(0, 60) * MS
            price = round(ref_px / tick + k % 7 - 3) * tick  # no two alike in a row
            decision = self._decide(NewOrder("f", account, symbol, ch.choice([1, 2]), 1, 1, 1,
                                             ch.choice([1, 1, 2]), price, qty), 0)
            if decision is None or not decision.accepted:
                continue
            note(self.pair.call("cancel_request", decision.ref, self.now))
            if ch.integer(0, 3):
                note(self.pair.call("apply_canceled", decision.ref, self.now))

    def cross(self, ch: Chooser) -> None:
        """A resting order and one that would trade against it: self-trade prevention."""
        account = ch.choice(["A1", "A2", "D1", "R1"])
        symbol = ch.choice(["rb2605", "m2605", "m2609"])
        tick = TICKS[symbol]
        ref_px = self.pair.ref.instruments[self.pair.ref.inst_ids[symbol]].ref_price
        price = round(ref_px / tick + ch.integer(-2, 2)) * tick
        side = ch.choice([1, 2])
        self._decide(NewOrder("r", account, symbol, side, 1, 1, 1, 1, price, 1), 0)
        other = ch.choice(["A1", "A2", "A3", "D1"]) if ch.integer(0, 1) else account
        self.now += ch.integer(0, 5) * MS
        ord_type, tif = ch.choice([(1, 1), (1, 1), (2, 2)])
        self._decide(NewOrder("c", other, symbol, 3 - side, ch.choice([1, 2]), 1, ord_type, tif,
                              price + ch.integer(-1, 1) * tick, 1), 0)

    def cancel_request(self, ch: Chooser) -> None:
        ref = self._ref(ch)
        view = self.pair.view(ref)
        answer = self.pair.call("cancel_request", ref, self.now)
        note(answer)
        if view is not None:
            self._act_on(answer, ACCOUNT_IDS[view[1]])

    def cancel_and_confirm(self, ch: Chooser) -> None:
        """The usual life of a cancel: requested, then confirmed by the exchange."""
        ref = self._ref(ch)
        view = self.pair.view(ref)
        answer = self.pair.call("cancel_request", ref, self.now)
        note(answer)
        if view is not None:
            self._act_on(answer, ACCOUNT_IDS[view[1]])
        self.now += ch.integer(0, 3) * MS
        note(self.pair.call("apply_canceled", ref, self.now))

    def ack(self, ch: Chooser) -> None:
        self.pair.call("apply_ack", self._ref(ch), self.now)

    def exchange_reject(self, ch: Chooser) -> None:
        self.pair.call("apply_reject", self._ref(ch), self.now)

    def canceled(self, ch: Chooser) -> None:
        note(self.pair.call("apply_canceled", self._ref(ch), self.now))

    def fill(self, ch: Chooser) -> None:
        ref = self._ref(ch)
        view = self.pair.view(ref)
        qty: Any
        if view is None or not ch.integer(0, 15):
            qty = ch.choice([1, 0, -1, 1.0, True, 10**20, 2])
        else:
            qty = ch.choice([view[11], view[11], 1, ch.integer(1, view[11])])
        inst = self.pair.ref.instruments[view[2] if view else 0]
        px: Any
        if ch.integer(0, 15) < 13:
            steps = ch.integer(0, int(round((inst.upper - inst.lower) / inst.tick)))
            px = inst.lower + steps * inst.tick
        else:
            px = ch.choice([math.nan, math.inf, 0.0, -5.0, 2e9, 1e9, 1e300])
        self.now += ch.integer(0, 20) * MS
        answer = self.pair.fill(ref, qty, px, self.now, ch.integer(0, 4) == 0)
        note(answer)
        if view is not None:
            self._act_on(answer, ACCOUNT_IDS[view[1]])

    def fills(self, ch: Chooser) -> None:
        """One order filled lot by lot within milliseconds: repeated automated executions."""
        ref = self._ref(ch)
        view = self.pair.view(ref)
        if view is None:
            return
        inst = self.pair.ref.instruments[view[2]]
        for _ in range(view[11]):
            self.now += ch.integer(0, 12) * MS
            steps = ch.integer(0, int(round((inst.upper - inst.lower) / inst.tick)))
            answer = self.pair.fill(ref, 1, inst.lower + steps * inst.tick, self.now,
                                    ch.integer(0, 2) == 0)
            note(answer)
            self._act_on(answer, ACCOUNT_IDS[view[1]])

    def market_data(self, ch: Chooser) -> None:
        symbol = self._usually(ch, SYMBOLS, ["nope"], 20)
        i = self.pair.ref.inst_ids.get(symbol, 0)
        inst, spec = self.pair.ref.instruments[i], INSTRUMENTS[i]
        half = int((spec["upper_limit"] - spec["lower_limit"]) / 2 / spec["tick"])
        last: Any = spec["reference_price"] + ch.integer(-half, half) * spec["tick"]
        upper, lower = inst.upper, inst.lower
        kind = ch.integer(0, 9)
        if kind == 0:  # a new band around the last price
            upper, lower = last + half * spec["tick"], last - half * spec["tick"]
        elif kind == 1:
            last = ch.choice([math.nan, math.inf, 0.0, -1.0, 2e9])
        elif kind == 2:
            upper, lower = ch.choice([(math.nan, lower), (upper, math.inf), (lower, upper),
                                      (2e9, 1.0), (0.0, 0.0)])
        elif kind == 3:  # the band as last x (1 +/- pct) in floats: a hair off the tick grid
            pct = ch.choice([0.03, 0.05, 0.07, 0.1])
            upper, lower = last * (1 + pct), last * (1 - pct)
        answer = self.pair.call("market_data", symbol, last, upper, lower, self.now)
        note(answer)
        for account, trigger in getattr(answer, "triggers", None) or ():  # as the gateway does
            self.pair.call("set_status", account, TRIGGER_STATUS[trigger])

    # ---------------------------------------------------------------- admin
    def kill(self, ch: Chooser) -> None:
        scope = ch.choice(list(KillScope))
        key = ch.choice({
            KillScope.FIRM: [""],
            KillScope.ACCOUNT: ACCOUNT_IDS + ["ZZ"],
            KillScope.GROUP: GROUPS,
            KillScope.SESSION: [0, AUTOMATED_SESSION, "2", "x"],
            KillScope.INSTRUMENT: SYMBOLS,
            KillScope.PRODUCT: PRODUCTS,
        }[scope])
        self.pair.call("kill", scope, key, ch.integer(0, 1) == 1)

    def reset(self, ch: Chooser) -> None:
        if ch.integer(0, 1):  # everything that is killed (killed() names scopes by index)
            ref = self.pair.ref
            names = {KillScope.ACCOUNT: ACCOUNT_IDS, KillScope.GROUP: sorted(ref.group_ids),
                     KillScope.INSTRUMENT: SYMBOLS, KillScope.PRODUCT: PRODUCTS}
            for scope, k, _mode in self.pair.call("killed"):
                key = names[scope][k] if scope in names else k
                self.pair.call("reset", scope, key)
            return
        scope = ch.choice(list(KillScope))
        names = {KillScope.FIRM: [""], KillScope.ACCOUNT: ACCOUNT_IDS, KillScope.GROUP: GROUPS,
                 KillScope.SESSION: [0, AUTOMATED_SESSION], KillScope.INSTRUMENT: SYMBOLS,
                 KillScope.PRODUCT: PRODUCTS}[scope]
        for key in names if ch.integer(0, 1) else [ch.choice(names)]:
            self.pair.call("reset", scope, key)

    def open_orders(self, ch: Chooser) -> None:
        scope = ch.choice(list(KillScope))
        key = {KillScope.FIRM: "", KillScope.ACCOUNT: ch.choice(ACCOUNT_IDS),
               KillScope.GROUP: "G1", KillScope.SESSION: 0, KillScope.INSTRUMENT: "rb2605",
               KillScope.PRODUCT: "m"}[scope]
        self.pair.call("open_orders", scope, key, ch.integer(0, 1) == 1)
        self.pair.call("killed")

    def set_status(self, ch: Chooser) -> None:
        self.pair.call("set_status", ch.choice(ACCOUNT_IDS + ["ZZ"]),
                       ch.choice([1, 1, 1, 1, 2, 3, 0, AccountStatus.CLOSE_ONLY]))

    def reenable(self, ch: Chooser) -> None:
        """A person re-enables stopped accounts and puts registrations and limits back."""
        for a, account in enumerate(ACCOUNT_IDS):
            if self.pair.ref.account_view(account)["status"] != "ACTIVE" and ch.integer(0, 3):
                self.pair.call("set_status", account, AccountStatus.ACTIVE)
            configured = self.pair.ref.cfg.accounts[a]
            if ch.integer(0, 1):
                self.pair.call("set_programmatic", account, configured.programmatic)
            if ch.integer(0, 1):
                self.pair.call("set_limits", account, configured.limits)
            if ch.integer(0, 3) == 0:
                self.pair.call("set_hft", account, configured.hft_max_per_sec,
                               configured.hft_max_per_day)

    def set_programmatic(self, ch: Chooser) -> None:
        self.pair.call("set_programmatic", ch.choice(ACCOUNT_IDS),
                       ch.choice(list(ProgReg) + [7]))

    def set_hft(self, ch: Chooser) -> None:
        """A confirmed programmatic-trading report registers (or unregisters) HFT maxima; bad
        figures are refused alike by both engines."""
        per_sec, per_day = ch.choice([(0, 0), (1, 6), (3, 40), (8, 200), (40, 30_000),
                                      (2, 0), (-1, 5), (3, 2.5)])
        self.pair.call("set_hft", ch.choice(ACCOUNT_IDS + ["ZZ"]), per_sec, per_day)

    def set_limits(self, ch: Chooser) -> None:
        limits = msgspec.convert({
            "max_order_qty": ch.choice([None, 3, 12, 0]),
            "max_notional": ch.choice([None, 500_000.0, 4_000_000.0]),
            "max_orders_per_sec": ch.choice([None, 0, 2, 8, 30]),
            "max_cancels_per_sec": ch.choice([None, 1, 6]),
            "max_open_orders": ch.choice([None, 2, 10]),
            "max_open_volume_per_contract": ch.choice([None, 5, 20]),
            "max_messages_per_product": ch.choice([None, 20, 80]),
            "max_otr": ch.choice([None, 2.0, 6.0]),
            "otr_min_messages": ch.choice([0, 5, 15]),
            "message_fee": ch.choice([0.0, 0.01]),
            "message_fee_free": ch.choice([3, 40]),
            "max_repeats": ch.choice([None, 0, 1, 3]),
            "repeat_window_ms": ch.choice([50, 200, 2000]),
            "max_executions": ch.choice([None, 1, 5]),
            "execution_window_ms": ch.choice([100, 1000]),
            "loss_limit": ch.choice([None, 100.0, 3000.0]),
            "programmatic_per_sec": ch.choice([0, 2, 4]),
            "programmatic_occasions": ch.choice([1, 2]),
            "stop_unregistered_programmatic": ch.choice([True, False]),
            "warn_fraction": ch.choice([0.5, 0.6, 1.0]),
        }, Limits)
        self.pair.call("set_limits", ch.choice(ACCOUNT_IDS), limits)

    def register_session(self, ch: Chooser) -> None:
        self.pair.call("register_session", ch.choice([AUTOMATED_SESSION, 2]),
                       ch.integer(0, 1) == 1)

    # ---------------------------------------------------------------- time
    def tick(self, ch: Chooser) -> None:
        self.now += ch.integer(0, 40) * MS

    def second(self, ch: Chooser) -> None:
        self.now += ch.integer(300, 1500) * MS

    def jump(self, ch: Chooser) -> None:
        """Just before the 17:00 trading-day boundary or a session break, or to an opening."""
        target = ch.choice([17 * 3600, 21 * 3600, 9 * 3600 + 35 * 60, 9 * 3600 + 35 * 60,
                            11 * 3600 + 30 * 60, 13 * 3600 + 35 * 60, 13 * 3600 + 35 * 60,
                            21 * 3600 + 20])
        self.now = next_local(self.now, target) - 20 * MS  # the next steps cross it


# Relative frequencies of the steps in a seeded walk.
WEIGHTS: dict[str, int] = {
    "new_order": 90, "burst": 20, "flood": 6, "cross": 15, "cancel_request": 24, "cancel_and_confirm": 18,
    "ack": 20, "exchange_reject": 5, "canceled": 12, "fill": 40, "fills": 10, "market_data": 15,
    "kill": 2, "reset": 8, "open_orders": 4, "set_status": 2, "reenable": 6,
    "set_programmatic": 2, "set_limits": 2, "set_hft": 2, "register_session": 2, "tick": 45, "second": 12,
    "jump": 4,
}


def walk(seed: int, trading_hours: str, steps: int, check_every: int = 1) -> Driver:
    """A seeded random history of ``steps`` steps, both engines checked as it goes."""
    rng = random.Random(seed)
    driver = Driver(trading_hours)
    ch = RandomChooser(rng)
    names = list(WEIGHTS)
    weights = [WEIGHTS[n] for n in names]
    for n in range(steps):
        getattr(driver, rng.choices(names, weights)[0])(ch)
        if n % check_every == 0:
            driver.pair.check()
    driver.pair.check()
    return driver
