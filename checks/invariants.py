"""The book's invariants (docs/ARCHITECTURE.md §4), checked on an engine's ``snapshot()``.

A pure function over plain data, so it holds either engine to the same promise — the
reference and the Cython one produce equal snapshots — and any test can call it after any
step. It returns the list of violations (empty when the book is sound) rather than asserting,
so a failing test can show every broken identity at once.

What must hold after any sequence of decisions and exchange events:

- nothing is frozen for a finished order: an account's frozen margin and frozen fees are the
  sums over its working orders; a position's frozen yesterday/today lots are the sums of its
  working closing orders' remaining split; pending opening lots are the sums of its working
  opening orders' leaves;
- every working order is whole: ``leaves + cum == qty``, a closing order's split covers its
  leaves, and it holds nothing negative;
- used margin is the sum of the account's position margins, marked P&L the sum of its
  positions' marks, and a flat side carries no cost and no margin;
- the self-trade index is exactly the working limit orders by price, and its best prices are
  the extremes of that index; the daily opening volume never falls below what working
  openings still hold;
- positions equal the start-of-day positions plus the fills (when the caller tracks fills);
- available funds equal balance − used margin − frozen margin − frozen fees − paid fees +
  realised P&L (when the caller passes ``account_view`` results).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from checks.enums import Hedge, Side
from checks.state import NO_BUY, NO_SELL

# Field positions in the snapshot's tuples (checks.engine.account_tuple, OrderState.as_tuple,
# PositionState.as_tuple).
A_BALANCE, A_FROZEN_MARGIN, A_FROZEN_FEE, A_USED, A_PAID, A_REALISED, A_UNREALISED = range(2, 9)
A_OPEN_ORDERS = 9
(O_REF, O_ACCT, O_INST, O_SIDE, O_OFFSET, O_HEDGE, O_ORD_TYPE, O_TIF, O_PRICE, O_TICKS, O_QTY,
 O_LEAVES, O_CUM, O_STATUS, O_OPENING, O_LARGE, O_FROZEN_MARGIN, O_FROZEN_FEE, O_CLOSE_YD,
 O_CLOSE_TD, O_HAD_FILL, O_CANCEL_REQUESTED) = range(22)
(P_LONG_TD, P_LONG_YD, P_SHORT_TD, P_SHORT_YD, P_LONG_TD_FROZEN, P_LONG_YD_FROZEN,
 P_SHORT_TD_FROZEN, P_SHORT_YD_FROZEN, P_LONG_PENDING, P_SHORT_PENDING, P_LONG_COST,
 P_SHORT_COST, P_LONG_MARGIN, P_SHORT_MARGIN, P_UNREALISED) = range(15)
_EMPTY_POSITION = (0,) * 18


def book_violations(
    snap: Mapping,
    account_groups: Sequence[int] | None = None,
    positions: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    views: Mapping[str, Mapping] | None = None,
) -> list[str]:
    """Every broken invariant of ``snap`` (an engine's ``snapshot()``), as sentences.

    ``account_groups[a]`` is account ``a``'s group index (``engine.accounts[a].group``), needed
    for the group checks; ``positions`` maps (account, symbol) to the (long, short) lots the
    caller expects from the start-of-day positions plus the fills it applied; ``views`` maps an
    account id to its ``account_view()``. Checks that need a missing argument are skipped.
    """
    bad: list[str] = []
    account_ids = list(snap["accounts"])  # in index order, as both engines build it
    symbols = list(snap["instruments"])
    orders = snap["orders"].values()

    frozen_margin: Counter[int] = Counter()
    frozen_fee: Counter[int] = Counter()
    working: Counter[int] = Counter()
    # (account, instrument) -> [long_yd, long_td, short_yd, short_td, long_pending, short_pending]
    held: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0] * 6)
    resting: dict[tuple[int, int, int], Counter[int]] = defaultdict(Counter)
    opening_leaves: Counter[tuple[int, int]] = Counter()
    for o in orders:
        a, i, ref = o[O_ACCT], o[O_INST], o[O_REF]
        frozen_margin[a] += o[O_FROZEN_MARGIN]
        frozen_fee[a] += o[O_FROZEN_FEE]
        working[a] += 1
        if o[O_LEAVES] + o[O_CUM] != o[O_QTY] or o[O_LEAVES] <= 0:
            bad.append(f"order {ref}: leaves {o[O_LEAVES]} + cum {o[O_CUM]} != qty {o[O_QTY]}"
                       " or nothing left")
        if min(o[O_FROZEN_MARGIN], o[O_FROZEN_FEE], o[O_CLOSE_YD], o[O_CLOSE_TD]) < 0:
            bad.append(f"order {ref}: holds a negative amount {o}")
        h = held[(a, i)]
        if o[O_OPENING]:
            if o[O_CLOSE_YD] or o[O_CLOSE_TD]:
                bad.append(f"order {ref}: an opening order holds closing lots")
            h[4 if o[O_SIDE] == Side.BUY else 5] += o[O_LEAVES]
            if o[O_HEDGE] != Hedge.HEDGE and account_groups is not None:
                opening_leaves[(account_groups[a], i)] += o[O_LEAVES]
        else:
            if o[O_CLOSE_YD] + o[O_CLOSE_TD] != o[O_LEAVES]:
                bad.append(f"order {ref}: closing split {o[O_CLOSE_YD]}+{o[O_CLOSE_TD]} "
                           f"!= leaves {o[O_LEAVES]}")
            if o[O_SIDE] == Side.SELL:  # closes a long
                h[0] += o[O_CLOSE_YD]
                h[1] += o[O_CLOSE_TD]
            else:
                h[2] += o[O_CLOSE_YD]
                h[3] += o[O_CLOSE_TD]
        if o[O_TICKS] >= 0 and account_groups is not None:
            resting[(account_groups[a], i, o[O_SIDE])][o[O_TICKS]] += 1

    used: Counter[int] = Counter()
    marked: Counter[int] = Counter()
    position_rows = snap["positions"]
    for a, acct_id in enumerate(account_ids):
        for i, symbol in enumerate(symbols):
            p = position_rows.get((acct_id, symbol), _EMPTY_POSITION)
            used[a] += p[P_LONG_MARGIN] + p[P_SHORT_MARGIN]
            marked[a] += p[P_UNREALISED]
            h = held.get((a, i), [0] * 6)
            where = f"position {acct_id}/{symbol}"
            got = [p[P_LONG_YD_FROZEN], p[P_LONG_TD_FROZEN], p[P_SHORT_YD_FROZEN],
                   p[P_SHORT_TD_FROZEN], p[P_LONG_PENDING], p[P_SHORT_PENDING]]
            if got != h:
                bad.append(f"{where}: frozen yd/td and pending {got} != working orders' {h}")
            if min(p[:10]) < 0:
                bad.append(f"{where}: negative lots {p[:10]}")
            if p[P_LONG_YD_FROZEN] > p[P_LONG_YD] or p[P_LONG_TD_FROZEN] > p[P_LONG_TD] \
                    or p[P_SHORT_YD_FROZEN] > p[P_SHORT_YD] or p[P_SHORT_TD_FROZEN] > p[P_SHORT_TD]:
                bad.append(f"{where}: more frozen than held {p[:8]}")
            if p[P_LONG_TD] + p[P_LONG_YD] == 0 and (p[P_LONG_COST] or p[P_LONG_MARGIN]):
                bad.append(f"{where}: flat long side carries cost/margin {p}")
            if p[P_SHORT_TD] + p[P_SHORT_YD] == 0 and (p[P_SHORT_COST] or p[P_SHORT_MARGIN]):
                bad.append(f"{where}: flat short side carries cost/margin {p}")
            if positions is not None:
                want = positions.get((acct_id, symbol), (0, 0))
                have = (p[P_LONG_TD] + p[P_LONG_YD], p[P_SHORT_TD] + p[P_SHORT_YD])
                if have != tuple(want):
                    bad.append(f"{where}: (long, short) {have} != start of day + fills {want}")

    for a, acct_id in enumerate(account_ids):
        t = snap["accounts"][acct_id]
        where = f"account {acct_id}"
        if (t[A_FROZEN_MARGIN], t[A_FROZEN_FEE]) != (frozen_margin[a], frozen_fee[a]):
            bad.append(f"{where}: frozen margin/fee {t[A_FROZEN_MARGIN]}/{t[A_FROZEN_FEE]} != "
                       f"working orders' {frozen_margin[a]}/{frozen_fee[a]}")
        if t[A_OPEN_ORDERS] != working[a]:
            bad.append(f"{where}: open_orders {t[A_OPEN_ORDERS]} != {working[a]} working")
        if t[A_USED] != used[a]:
            bad.append(f"{where}: used margin {t[A_USED]} != positions' {used[a]}")
        if t[A_UNREALISED] != marked[a]:
            bad.append(f"{where}: marked P&L {t[A_UNREALISED]} != positions' {marked[a]}")
        if views is not None and acct_id in views:
            v = views[acct_id]
            identity = (t[A_BALANCE] - t[A_USED] - t[A_FROZEN_MARGIN] - t[A_FROZEN_FEE]
                        - t[A_PAID] + t[A_REALISED])
            if v["available"] != identity / 100:
                bad.append(f"{where}: available {v['available']} != balance - used - frozen "
                           f"margin - frozen fees - paid fees + realised = {identity / 100}")

    if account_groups is not None:
        for (g, symbol), row in snap["groups"].items():
            i = symbols.index(symbol)
            open_volume, best_buy, best_sell, buys, sells = row
            want_buys = tuple(sorted(resting.get((g, i, Side.BUY), Counter()).items()))
            want_sells = tuple(sorted(resting.get((g, i, Side.SELL), Counter()).items()))
            where = f"group {g}/{symbol}"
            if (buys, sells) != (want_buys, want_sells):
                bad.append(f"{where}: index {buys}/{sells} != working limit orders "
                           f"{want_buys}/{want_sells}")
            if best_buy != (buys[-1][0] if buys else NO_BUY) \
                    or best_sell != (sells[0][0] if sells else NO_SELL):
                bad.append(f"{where}: best {best_buy}/{best_sell} not the index's extremes")
            if open_volume < opening_leaves[(g, i)]:
                bad.append(f"{where}: opening volume {open_volume} < working openings' "
                           f"leaves {opening_leaves[(g, i)]}")
        for (g, i, _side), levels in resting.items():
            if levels and (g, symbols[i]) not in snap["groups"]:
                bad.append(f"group {g}/{symbols[i]}: working limit orders missing from the index")
        for (g, i), leaves in opening_leaves.items():
            if leaves and (g, symbols[i]) not in snap["groups"]:
                bad.append(f"group {g}/{symbols[i]}: opening volume missing for working openings")
    return bad
