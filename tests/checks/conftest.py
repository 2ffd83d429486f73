"""Builders for the reference-engine tests: small, explicit configs and a book that checks itself.

Every test builds its own ``RiskConfig`` through the real path (``RiskConfigFile`` ->
``checks.config.resolve``) from a *loose* base: the firm limits that would otherwise fire by
default (order size, notional, rates, open orders, messages, repeats) are switched off, the
instruments have no collar, no margin and no fees. A test then turns on exactly the limit it
pins, with a tight number, so it reads as "limit N: the Nth passes, the N+1th is refused".

``Book`` wraps ``checks.engine.Engine`` and, on every ``decide`` that is rejected, asserts the
engine's promise that a rejection touches no state (``snapshot()`` equal before and after), that
the rejection carries no reference and that its text starts with the reason's description.
The lazy trading-day roll is done first (through ``cancel_request`` of an unknown reference,
which rolls the day and does nothing else), because the roll is the clock's doing, not the
order's.

The fixtures hand these builders to the test modules (``make_book``, ``book``) so the test files
import nothing from here.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

import msgspec
import pytest

from checks import engine as engine_module
from checks.calendar import ns_from_local
from checks.config import resolve
from checks.decision import Decision, Outcome
from checks.engine import Engine
from checks.enums import Hedge, Offset, OrdType, Side, Tif
from checks.model import RiskConfig, RiskConfigFile
from checks.reasons import Reason
from checks.state import NS_PER_S, AccountState, PositionState
from gateway.protocol import NewOrder

# Tuesday 2026-03-10, 10:00 China time: inside every day session below.
T0 = ns_from_local(2026, 3, 10, 10, 0)
S = NS_PER_S
MS = 1_000_000

# Firm limits with every default-on threshold switched off; tests switch one back on.
LOOSE_LIMITS: dict[str, Any] = {
    "max_order_qty": None,
    "max_notional": None,
    "max_orders_per_sec": None,
    "max_cancels_per_sec": None,
    "max_open_orders": None,
    "max_messages_per_product": None,
    "max_repeats": None,
}

NIGHT_AND_DAY = [["21:00", "23:00"], ["09:00", "10:15"], ["10:30", "11:30"], ["13:30", "15:00"]]

INSTRUMENTS: dict[str, dict[str, Any]] = {
    # SHFE: limit orders only, CLOSE_TODAY / CLOSE_YESTERDAY distinct, large order = 300 lots.
    "rb2605": {"symbol": "rb2605", "exchange": "SHFE", "product": "rb", "multiplier": 10.0,
               "tick": 1.0, "reference_price": 3200.0, "upper_limit": 3424.0,
               "lower_limit": 2976.0, "collar_pct": None, "sessions": NIGHT_AND_DAY},
    # SHFE gold: a 0.02 tick, where float arithmetic drifts; its night session crosses midnight.
    "au2606": {"symbol": "au2606", "exchange": "SHFE", "product": "au", "multiplier": 1000.0,
               "tick": 0.02, "reference_price": 640.0, "upper_limit": 691.2,
               "lower_limit": 588.8, "collar_pct": None,
               "sessions": [["21:00", "02:30"], ["09:00", "10:15"], ["10:30", "11:30"],
                            ["13:30", "15:00"]]},
    # DCE: market orders allowed, CLOSE takes the oldest position first.
    "m2605": {"symbol": "m2605", "exchange": "DCE", "product": "m", "multiplier": 10.0,
              "tick": 1.0, "reference_price": 2900.0, "upper_limit": 3103.0,
              "lower_limit": 2697.0, "collar_pct": None, "sessions": NIGHT_AND_DAY},
    "m2609": {"symbol": "m2609", "exchange": "DCE", "product": "m", "multiplier": 10.0,
              "tick": 1.0, "reference_price": 3000.0, "upper_limit": 3210.0,
              "lower_limit": 2790.0, "collar_pct": None, "sessions": NIGHT_AND_DAY},
    # CFFEX index future: a 0.2 tick, day session only.
    "IF2612": {"symbol": "IF2612", "exchange": "CFFEX", "product": "IF", "multiplier": 300.0,
               "tick": 0.2, "reference_price": 3500.0, "upper_limit": 3850.0,
               "lower_limit": 3150.0, "collar_pct": None,
               "sessions": [["09:30", "11:30"], ["13:00", "15:00"]]},
}

REF_PRICE: Any = object()  # "the instrument's reference price" (None is a value to test)

DEFAULT_ACCOUNT: dict[str, Any] = {"id": "A1", "balance": 1_000_000.0, "programmatic": "CONFIRMED"}


def _merged(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    out.update(overrides or {})
    return out


def config_file(
    *,
    inst: dict[str, dict[str, Any]] | None = None,
    account: dict[str, Any] | None = None,
    accounts: list[dict[str, Any]] | None = None,
    limits: dict[str, Any] | None = None,
    exchanges: dict[str, dict[str, Any]] | None = None,
    groups: list[dict[str, Any]] | None = None,
    firm: dict[str, Any] | None = None,
) -> RiskConfigFile:
    """The config as written: the standard instruments (``inst`` overrides fields by symbol),
    account ``A1`` (``account`` overrides its fields) plus ``accounts`` (each on top of A1's
    defaults), the loose firm limits plus ``limits``."""
    inst = inst or {}
    unknown = set(inst) - set(INSTRUMENTS)
    assert not unknown, f"no such test instrument: {unknown}"
    raw = {
        "firm": _merged({"name": "test"}, firm),
        "limits": _merged(LOOSE_LIMITS, limits),
        "exchanges": exchanges or {},
        "instruments": [_merged(spec, inst.get(sym)) for sym, spec in INSTRUMENTS.items()],
        "groups": groups or [],
        "accounts": [_merged(DEFAULT_ACCOUNT, account)]
        + [_merged(DEFAULT_ACCOUNT, extra) for extra in accounts or []],
    }
    return msgspec.convert(raw, RiskConfigFile)


def build_config(**kw: Any) -> RiskConfig:
    return resolve(config_file(**kw), "test.toml")


def new_order(
    *,
    account: Any = "A1",
    symbol: Any = "rb2605",
    side: Any = Side.BUY,
    offset: Any = Offset.OPEN,
    hedge: Any = Hedge.SPEC,
    ord_type: Any = OrdType.LIMIT,
    tif: Any = Tif.GFD,
    price: Any = REF_PRICE,
    qty: Any = 1,
    cl_ord_id: str = "c1",
) -> NewOrder:
    """A ``NewOrder``; the price defaults to the instrument's reference price (0 for market)."""
    if price is REF_PRICE:
        spec = INSTRUMENTS.get(symbol) if isinstance(symbol, str) else None
        price = 0.0 if ord_type == OrdType.MARKET or spec is None else spec["reference_price"]
    return NewOrder(cl_ord_id, account, symbol, side, offset, hedge, ord_type, tif, price, qty)


class Book:
    """An ``Engine`` plus the bookkeeping every test wants (see the module docstring)."""

    def __init__(self, cfg: RiskConfig, t0: int = T0) -> None:
        self.cfg = cfg
        self.eng = Engine(cfg)
        self.t0 = t0

    # -- new orders
    def decide(self, now: int | None = None, session: int = 0, **fields: Any) -> Decision:
        now = self.t0 if now is None else now
        if now >= self.eng.day_end:
            self.eng.cancel_request(-1, now)  # roll the trading day: the clock's doing
        before = self.eng.snapshot()
        deep_before = copy.deepcopy(book_state(self.eng))
        order = new_order(**fields)
        d = self.eng.decide(order, now, session)
        if not d.accepted:
            assert self.eng.snapshot() == before, f"rejection {d.reason} changed the snapshot"
            assert book_state(self.eng) == deep_before, f"rejection {d.reason} changed the book"
            assert d.ref == -1 and d.alerts is None
            assert d.text.startswith(Reason(d.reason).description), d.text
        return d

    def accept(self, now: int | None = None, session: int = 0, **fields: Any) -> int:
        d = self.decide(now, session, **fields)
        assert d.accepted, f"expected acceptance, got {d.reason} ({d.text})"
        return d.ref

    def passes(self, now: int | None = None, session: int = 0, **fields: Any) -> None:
        """Accepted, then refused by the exchange so that nothing rests (no self-trade later)."""
        ref = self.accept(now, session, **fields)
        assert self.eng.apply_reject(ref, self.t0 if now is None else now).finished

    def reject(self, reason: int, now: int | None = None, session: int = 0,
               **fields: Any) -> Decision:
        d = self.decide(now, session, **fields)
        assert d.reason == reason, (
            f"expected {Reason(reason).name}, got "
            f"{Reason(d.reason).name if d.reason else 'ACCEPTED'} ({d.text})")
        return d

    # -- what comes back from the exchange
    def fill(self, ref: int, qty: int, px: float, now: int | None = None,
             self_trade: bool = False) -> Outcome:
        out = self.eng.apply_fill(ref, qty, px, self.t0 if now is None else now, self_trade)
        assert out.known, f"fill of {qty} on ref {ref} was refused"
        return out

    def cancel(self, ref: int, now: int | None = None) -> Outcome:
        """A client cancel followed by the exchange's confirmation."""
        now = self.t0 if now is None else now
        requested = self.eng.cancel_request(ref, now)
        assert requested.known
        done = self.eng.apply_canceled(ref, now)
        assert done.known and done.finished
        return requested

    def open_position(self, qty: int, *, side: int = Side.BUY, symbol: str = "rb2605",
                      px: float | None = None, now: int | None = None, **fields: Any) -> int:
        """Open and fully fill ``qty`` lots (today's position); returns the order's ref."""
        px = INSTRUMENTS[symbol]["reference_price"] if px is None else px
        ref = self.accept(now, symbol=symbol, side=side, qty=qty, price=px, **fields)
        self.fill(ref, qty, px, now)
        return ref

    # -- views
    def account(self, account: str = "A1") -> AccountState:
        return self.eng.accounts[self.eng.acct_ids[account]]

    def position(self, account: str = "A1", symbol: str = "rb2605") -> PositionState:
        key = (self.eng.acct_ids[account], self.eng.inst_ids[symbol])
        return self.eng.positions.get(key) or PositionState()


def build_book(t0: int = T0, **kw: Any) -> Book:
    return Book(build_config(**kw), t0)


def book_state(eng: Engine) -> tuple:
    """Everything a decision could touch: ``snapshot()`` and, beyond it, every account's and
    instrument's attributes, the slot generations and the shared empty singletons."""
    def plain(obj: object) -> dict:
        return {k: tuple(v) if isinstance(v, deque) else v for k, v in vars(obj).items()}
    return (eng.snapshot(), [plain(a) for a in eng.accounts], [plain(i) for i in eng.instruments],
            {k: p.as_tuple() for k, p in eng.positions.items()},
            {k: (c.messages, c.filled_orders) for k, c in eng.products.items()},
            list(eng.slot_gen), list(eng.free_slots), set(eng.automated_sessions),
            engine_module._EMPTY_POS.as_tuple(),
            (engine_module._EMPTY_PROD.messages, engine_module._EMPTY_PROD.filled_orders),
            (engine_module._EMPTY_GI.open_volume, engine_module._EMPTY_GI.buys,
             engine_module._EMPTY_GI.sells))


@pytest.fixture
def make_book():
    return build_book


@pytest.fixture
def book() -> Book:
    return build_book()
