"""A realistic risk book and order flows for the ``decide`` micro-benchmarks.

``realistic_config()`` builds (through the real ``RiskConfigFile`` -> ``resolve`` path) a book the
size of a mid-sized futures broker's colocated gateway:

- **276 instruments** on all six exchanges — 69 products with four listed months each, with
  plausible prices, ticks, multipliers, margin rates, fees, limit bands, collars (by percentage,
  and by ticks on CFFEX), position limits and day + night sessions;
- **1,200 accounts**: 300 of them in 100 groups of three (common control, with a daily opening
  volume limit per group), the rest on their own; mostly programmatic and confirmed, some HFT
  registered, a few direct-access, manual (unregistered) or close-only; some restricted to a
  product list or to limit orders; 70 % carry 3-8 positions from yesterday;
- **every check on**, with the firm limits of ``examples/risk.toml`` (rates, open orders,
  messages and OTR, repeats, executions, loss limit, warnings at 80 %).

``decide_flow()`` and ``life_flow()`` pre-generate the ``NewOrder`` objects the benchmarks replay,
rotating through the accounts so that each sees a realistic rate (tens of orders a second) when
the benchmark advances time by ``STEP_NS`` per order. Everything is seeded: two runs measure
the same book and the same flow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import msgspec

from checks.calendar import ns_from_local
from checks.config import resolve
from checks.model import RiskConfig, RiskConfigFile
from gateway.protocol import NewOrder

# Tuesday 2026-03-10 09:35 China time: every day session is open, CFFEX's too.
T_OPEN = ns_from_local(2026, 3, 10, 9, 35)
STEP_NS = 100_000  # between two orders of a flow: 10,000 orders/s, ~8 a second per account
AUTOMATED_SESSION = 1
NIGHT = [["21:00", "23:00"], ["09:00", "10:15"], ["10:30", "11:30"], ["13:30", "15:00"]]
LATE_NIGHT = [["21:00", "02:30"], ["09:00", "10:15"], ["10:30", "11:30"], ["13:30", "15:00"]]
DAY = [["09:00", "10:15"], ["10:30", "11:30"], ["13:30", "15:00"]]
CFFEX = [["09:30", "11:30"], ["13:00", "15:00"]]

# product: (exchange, price, tick, multiplier, sessions)
PRODUCTS: dict[str, tuple[str, float, float, float, list]] = {
    "rb": ("SHFE", 3200, 1, 10, NIGHT), "hc": ("SHFE", 3350, 1, 10, NIGHT),
    "cu": ("SHFE", 72000, 10, 5, LATE_NIGHT), "al": ("SHFE", 19500, 5, 5, LATE_NIGHT),
    "zn": ("SHFE", 23000, 5, 5, LATE_NIGHT), "pb": ("SHFE", 16500, 5, 5, LATE_NIGHT),
    "ni": ("SHFE", 128000, 10, 1, LATE_NIGHT), "sn": ("SHFE", 260000, 10, 1, LATE_NIGHT),
    "au": ("SHFE", 640, 0.02, 1000, LATE_NIGHT), "ag": ("SHFE", 7800, 1, 15, LATE_NIGHT),
    "ru": ("SHFE", 15000, 5, 10, NIGHT), "bu": ("SHFE", 3500, 1, 10, NIGHT),
    "fu": ("SHFE", 3000, 1, 10, NIGHT), "sp": ("SHFE", 5600, 2, 10, NIGHT),
    "ss": ("SHFE", 13500, 5, 5, LATE_NIGHT), "ao": ("SHFE", 3300, 1, 20, LATE_NIGHT),
    "sc": ("INE", 480, 0.1, 1000, LATE_NIGHT), "lu": ("INE", 3900, 1, 10, NIGHT),
    "nr": ("INE", 12500, 5, 10, NIGHT), "bc": ("INE", 64000, 10, 5, LATE_NIGHT),
    "ec": ("INE", 1800, 0.1, 50, DAY),
    "m": ("DCE", 2900, 1, 10, NIGHT), "y": ("DCE", 7600, 2, 10, NIGHT),
    "a": ("DCE", 4100, 1, 10, NIGHT), "b": ("DCE", 3700, 1, 10, NIGHT),
    "p": ("DCE", 8000, 2, 10, NIGHT), "c": ("DCE", 2300, 1, 10, NIGHT),
    "cs": ("DCE", 2700, 1, 10, NIGHT), "jd": ("DCE", 3400, 1, 10, DAY),
    "l": ("DCE", 7400, 1, 5, NIGHT), "v": ("DCE", 5000, 1, 5, NIGHT),
    "pp": ("DCE", 7200, 1, 5, NIGHT), "eg": ("DCE", 4500, 1, 10, NIGHT),
    "eb": ("DCE", 7600, 1, 5, NIGHT), "pg": ("DCE", 4300, 1, 20, NIGHT),
    "i": ("DCE", 780, 0.5, 100, NIGHT), "j": ("DCE", 1900, 0.5, 100, NIGHT),
    "jm": ("DCE", 1200, 0.5, 60, NIGHT), "lh": ("DCE", 14500, 5, 16, DAY),
    "SR": ("CZCE", 5600, 1, 10, NIGHT), "CF": ("CZCE", 14000, 5, 5, NIGHT),
    "TA": ("CZCE", 4800, 2, 5, NIGHT), "MA": ("CZCE", 2500, 1, 10, NIGHT),
    "FG": ("CZCE", 1200, 1, 20, NIGHT), "RM": ("CZCE", 2400, 1, 10, NIGHT),
    "OI": ("CZCE", 9000, 1, 10, NIGHT), "SA": ("CZCE", 1500, 1, 20, NIGHT),
    "UR": ("CZCE", 1800, 1, 20, DAY), "AP": ("CZCE", 7500, 1, 10, DAY),
    "CJ": ("CZCE", 11000, 5, 5, DAY), "PK": ("CZCE", 8200, 2, 5, DAY),
    "SF": ("CZCE", 6000, 2, 5, DAY), "SM": ("CZCE", 6300, 2, 5, DAY),
    "PF": ("CZCE", 6900, 2, 5, NIGHT), "CY": ("CZCE", 19500, 5, 5, NIGHT),
    "PX": ("CZCE", 8000, 2, 5, NIGHT), "SH": ("CZCE", 2500, 1, 30, NIGHT),
    "IF": ("CFFEX", 3900, 0.2, 300, CFFEX), "IH": ("CFFEX", 2700, 0.2, 300, CFFEX),
    "IC": ("CFFEX", 5800, 0.2, 200, CFFEX), "IM": ("CFFEX", 6200, 0.2, 200, CFFEX),
    "T": ("CFFEX", 108, 0.005, 10000, CFFEX), "TF": ("CFFEX", 105, 0.005, 10000, CFFEX),
    "TS": ("CFFEX", 102, 0.002, 20000, CFFEX), "TL": ("CFFEX", 118, 0.01, 10000, CFFEX),
    "si": ("GFEX", 11500, 5, 5, DAY), "lc": ("GFEX", 76000, 50, 1, DAY),
    "ps": ("GFEX", 52000, 5, 3, DAY),
}
MONTHS = ["2605", "2606", "2609", "2612"]
N_ACCOUNTS = 1200

LIMITS = {  # the firm limits of examples/risk.toml, every one of them on
    "max_order_qty": 500, "max_notional": 50_000_000.0, "max_orders_per_sec": 50,
    "max_cancels_per_sec": 50, "max_open_orders": 400, "max_messages_per_product": 20_000,
    "max_otr": 50.0, "otr_min_messages": 500, "message_fee": 0.01, "message_fee_free": 8_000,
    "max_repeats": 10, "repeat_window_ms": 1000, "max_executions": 200,
    "execution_window_ms": 1000, "loss_limit": 2_000_000.0, "warn_fraction": 0.8,
}


def _instruments(rng: random.Random) -> list[dict]:
    out = []
    for product, (exchange, price, tick, mult, sessions) in PRODUCTS.items():
        for k, month in enumerate(MONTHS):
            ref = round(price * (1 + 0.01 * (k - 1.5)) / tick) * tick
            band = 0.08 if exchange != "CFFEX" else 0.10
            inst = {
                "symbol": f"{product}{month}", "exchange": exchange, "product": product,
                "multiplier": float(mult), "tick": float(tick), "reference_price": float(ref),
                "upper_limit": round(ref * (1 + band) / tick) * tick,
                "lower_limit": round(ref * (1 - band) / tick) * tick,
                "margin_long": rng.choice([0.08, 0.1, 0.12]),
                "margin_short": rng.choice([0.08, 0.1, 0.12]),
                "fees": ({"open_ratio": 0.0001, "close_ratio": 0.0001, "close_today_ratio": 0.0001}
                         if k % 2 else {"open_per_lot": 3.0, "close_per_lot": 3.0,
                                        "close_today_per_lot": 3.0}),
                "max_limit_qty": 500, "max_market_qty": 100, "position_limit": 5000,
                "sessions": sessions,
            }
            if exchange == "CFFEX":
                inst.update(collar_pct=None, collar_ticks=200, max_limit_qty=20,
                            max_market_qty=10)
            else:
                inst["collar_pct"] = 0.03
            out.append(inst)
    return out


def _accounts(rng: random.Random, instruments: list[dict]) -> list[dict]:
    out = []
    for n in range(N_ACCOUNTS):
        acc: dict = {"id": f"C{n:05d}", "balance": float(rng.choice([20, 50, 100, 200]) * 1_000_000),
                     "programmatic": "CONFIRMED"}
        if n < 300:
            acc["group"] = f"G{n // 3:03d}"
        roll = n % 100
        if roll < 5:
            acc["hft"] = {"max_per_sec": 500, "max_per_day": 100_000}
            acc["limits"] = {"max_orders_per_sec": 400, "max_cancels_per_sec": 400}
        elif roll < 7:
            acc["direct_access"] = True
        elif roll < 10:
            acc["programmatic"] = "NONE"
            acc["limits"] = {"stop_unregistered_programmatic": True}
        elif roll < 12:
            acc["status"] = "CLOSE_ONLY"
        elif roll < 20:
            acc["products"] = rng.sample(sorted(PRODUCTS), 12)
        elif roll < 25:
            acc["order_types"] = ["LIMIT"]
        if rng.random() < 0.7:
            held = rng.sample(instruments, rng.randint(3, 8))
            acc["positions"] = [{"symbol": i["symbol"], "long": rng.choice([0, 2, 5, 10]),
                                 "long_price": i["reference_price"],
                                 "short": rng.choice([0, 0, 3, 8]),
                                 "short_price": i["reference_price"]} for i in held]
        out.append(acc)
    return out


def realistic_config(seed: int = 1) -> RiskConfig:
    rng = random.Random(seed)
    instruments = _instruments(rng)
    raw = {
        "firm": {"name": "bench", "trading_hours": "enforce"},
        "limits": LIMITS,
        "instruments": instruments,
        "groups": [{"name": f"G{g:03d}", "limits": {"max_open_volume_per_contract": 3000}}
                   for g in range(100)],
        "accounts": _accounts(rng, instruments),
    }
    return resolve(msgspec.convert(raw, RiskConfigFile), "<bench book>")


@dataclass
class Flow:
    orders: list[NewOrder]
    sessions: list[int]  # the session each order arrives on


def _session(cfg: RiskConfig, a: int) -> int:
    return AUTOMATED_SESSION if cfg.accounts[a].programmatic == 2 else 0


def decide_flow(cfg: RiskConfig, n: int, seed: int = 2, reject_share: float = 0.05) -> Flow:
    """Mostly acceptable orders (opens, closes against yesterday's positions, some market
    orders), with ``reject_share`` refused for a typical reason (off tick, outside the band,
    too big, nothing to close, market order on SHFE, unknown contract)."""
    rng = random.Random(seed)
    insts = cfg.instruments
    by_symbol = {i.symbol: i for i in insts}
    orders: list[NewOrder] = []
    sessions: list[int] = []
    for k in range(n):
        a = k % len(cfg.accounts)
        acc = cfg.accounts[a]
        if acc.products:
            inst = by_symbol[f"{rng.choice(sorted(acc.products))}{rng.choice(MONTHS)}"]
        else:
            inst = rng.choice(insts)
        side, offset, qty = rng.choice([1, 2]), 1, rng.randint(1, 5)
        closable = [p for p in acc.positions if p.long or p.short]
        if closable and rng.random() < 0.25:  # close part of yesterday's position
            pos = rng.choice(closable)
            inst = by_symbol[pos.symbol]
            side = 2 if pos.long else 1
            offset, qty = 2, 1
        tick = inst.tick
        # buys below and sells above the reference: resting orders never cross each other
        steps = rng.randint(1, 20) * (-1 if side == 1 else 1)
        price = round(inst.reference_price / tick + steps) * tick
        ord_type, tif = 1, 1
        if acc.market_allowed and inst.exchange not in ("SHFE", "INE") and rng.random() < 0.05:
            ord_type, tif, price = 2, 2, 0.0
        symbol = inst.symbol
        if rng.random() < reject_share:
            kind = rng.randrange(6)
            if kind == 0:
                price += tick / 2  # off tick
            elif kind == 1:
                price = inst.upper_limit + 10 * tick  # above the band
            elif kind == 2:
                qty = 600  # above the maximum
            elif kind == 3:
                side, offset = 2, 3  # close today, with nothing bought today
            elif kind == 4:
                symbol = "xx9999"  # unknown contract
            else:
                ord_type, tif = 2, 2  # a market order (refused on SHFE/INE)
        orders.append(NewOrder(f"c{k}", acc.id, symbol, side, offset, 1, ord_type, tif,
                               price, qty))
        sessions.append(_session(cfg, a))
    return Flow(orders, sessions)


def life_flow(cfg: RiskConfig, n: int, seed: int = 3) -> tuple[Flow, list[float]]:
    """Round trips that fill at once: buy-open then sell-close of the same lots, so positions,
    margin and funds return where they started; with each order, the price it fills at."""
    rng = random.Random(seed)
    tradable = [a for a, acc in enumerate(cfg.accounts)
                if acc.status == 1 and acc.programmatic == 2 and not acc.products]
    orders: list[NewOrder] = []
    sessions: list[int] = []
    prices: list[float] = []
    for k in range(n // 2):
        a = tradable[k % len(tradable)]
        acc = cfg.accounts[a]
        inst = rng.choice(cfg.instruments)
        qty = rng.randint(1, 3)
        price = round(inst.reference_price / inst.tick + rng.randint(-10, 10)) * inst.tick
        close = 3 if inst.exchange in ("SHFE", "INE") else 2  # today's lots, there
        for side, offset in ((1, 1), (2, close)):
            orders.append(NewOrder(f"l{k}{side}", acc.id, inst.symbol, side, offset, 1, 1, 1,
                                   price, qty))
            sessions.append(_session(cfg, a))
            prices.append(price)
    return Flow(orders, sessions), prices
