"""The scenario library: one flow per named scenario (the runner is ``simulator.scenarios``).

Each flow sends the same orders whichever the target; what it *checks* differs: against the
bare exchange, what an exchange does; against the gateway, what the risk checks must do, by
reason code (``checks.reasons``). Accounts are those of ``examples/risk.toml``: A001
(programmatic, confirmed; long rb2605 and short au2606 from yesterday), A003 (manual,
unregistered, stopped when it behaves programmatically), A004/A005 (one account group),
H001 (registered HFT). Prices are placed in ticks from each instrument's reference price, so
they stay inside the daily band and the fat-finger collar unless a scenario means otherwise.
"""

from __future__ import annotations

import asyncio

from checks.enums import ExecType, Offset, OrdStatus, Side, Tif
from checks.reasons import Reason
from gateway.protocol import ExecReport
from simulator.client import OrderHandle
from simulator.scenarios import ScenarioContext, describe, rejects, scenario

BUY, SELL = Side.BUY, Side.SELL
NEW, FILLED, CANCELED, REJECTED = OrdStatus.NEW, OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED
_KILLED = {int(r) for r in Reason if 200 < r.value < 300}
_STORM_STOPPERS = {int(Reason.ORDER_RATE), int(Reason.CANCEL_RATE), int(Reason.REPEATED_ORDERS),
                   int(Reason.HFT_UNREGISTERED), int(Reason.HFT_LIMIT)} | _KILLED
_CANCEL_STOPPERS = {int(Reason.CANCEL_RATE), int(Reason.CONTRACT_CANCEL_LIMIT),
                    int(Reason.ORDER_RATE), int(Reason.REPEATED_ORDERS)} | _KILLED


def _trades(ctx: ScenarioContext, role: str) -> list[ExecReport]:
    return [r for r in ctx.reports.get(role, []) if isinstance(r, ExecReport)
            and r.exec_type == ExecType.TRADE]


@scenario("normal-trading", "two desks trade with each other on m2605",
          exchange="every order accepted; trades happen; bought qty == sold qty; "
                   "every fill at or better than the aggressor's limit",
          gateway="the same: ordinary two-sided flow passes every risk check",
          roles=("seller", "buyer"))
async def normal_trading(ctx: ScenarioContext) -> None:
    seller = await ctx.connect("seller", ["H001"])
    buyer = await ctx.connect("buyer", ["A001"])
    rng = ctx.rng
    asks = [await ctx.order(seller, account="H001", symbol="m2605", side=SELL,
                            price=ctx.px("m2605", rng.randint(1, 4)), qty=rng.randint(1, 5))
            for _ in range(8)]
    # Random bids around the offers; the fourth is at the top offer, so something trades.
    bids = [await ctx.order(buyer, account="A001", symbol="m2605", side=BUY,
                            price=ctx.px("m2605", 4 if i == 3 else rng.randint(-3, 4)),
                            qty=rng.randint(1, 5))
            for i in range(8)]
    everything = asks + bids
    ctx.check("all orders accepted", not rejects(everything), describe(rejects(everything)))
    await ctx.cancel_all(buyer)  # every report of an order precedes its final one
    await ctx.cancel_all(seller)
    bought = sum(h.cum_qty for h in bids)
    sold = sum(h.cum_qty for h in asks)
    ctx.check("trades happen", bought > 0, f"{bought} lots bought")
    ctx.check("bought qty == sold qty", bought == sold, f"bought {bought}, sold {sold}")
    limits = {h.cl_ord_id: h.order.price for h in bids}
    bad = [t for t in _trades(ctx, "buyer") if t.last_px > limits[t.cl_ord_id]]
    ctx.check("fills at or better than the buyer's limit", not bad, f"{len(bad)} worse")


@scenario("runaway-algo", "an algo sends an order storm on rb2605",
          exchange="all 150 orders acknowledged (an exchange has no rate limit)",
          gateway="the storm is stopped: orders refused by the order-rate limit (701) or a "
                  "related stop (702/710/802/804, kill switch 2xx); not all 150 accepted",
          roles=("algo",))
async def runaway_algo(ctx: ScenarioContext) -> None:
    algo = await ctx.connect("algo", ["A001"])
    n = 150
    handles = []
    for i in range(n):
        await algo.drain()
        handles.append(algo.send_order_nowait(
            account="A001", symbol="rb2605", side=BUY, qty=1 + ctx.rng.randint(0, 1),
            price=ctx.px("rb2605", -20 - i % 20)))
    await ctx.acked(handles)
    codes = rejects(handles)
    accepted = n - sum(codes.values())
    if ctx.gateway:
        stopped = {c: k for c, k in codes.items() if c in _STORM_STOPPERS}
        ctx.check("storm refused by rate limit / kill switch", bool(stopped), describe(codes))
        ctx.check("not every storm order accepted", accepted < n, f"{accepted}/{n} accepted")
    else:
        ctx.check("every order acknowledged", accepted == n, f"{accepted}/{n}; {describe(codes)}")


@scenario("fat-finger", "prices outside the band or the collar, and an oversized order",
          exchange="outside the daily band rejected by the exchange (501 above, 502 below); "
                   "qty above the instrument maximum rejected (405); inside the band accepted",
          gateway="every one refused: band 501/502 (or collar 503), collar 503, size 405/601",
          roles=("desk",))
async def fat_finger(ctx: ScenarioContext) -> None:
    desk = await ctx.connect("desk", ["A001"])
    above = await ctx.order(desk, account="A001", symbol="rb2605", side=BUY, price=3500.0, qty=1)
    below = await ctx.order(desk, account="A001", symbol="rb2605", side=SELL, price=2900.0, qty=1)
    collar = await ctx.order(desk, account="A001", symbol="rb2605", side=BUY, price=3400.0, qty=1)
    collar_ticks = await ctx.order(desk, account="A001", symbol="IF2612", side=BUY,
                                   price=4000.0, qty=1)
    big = await ctx.order(desk, account="A001", symbol="rb2605", side=BUY,
                          price=ctx.px("rb2605", -10), qty=600)

    def is_(h: OrderHandle, *codes: Reason) -> tuple[bool, str]:
        ok = h.status == REJECTED and h.reason in {int(c) for c in codes}
        return ok, f"{OrdStatus(h.status).name} {h.reason} {h.last.text if h.last else ''}"

    if ctx.gateway:
        ctx.check("above the upper limit refused", *is_(above, Reason.PRICE_ABOVE_UPPER_LIMIT,
                                                         Reason.PRICE_OUTSIDE_COLLAR))
        ctx.check("below the lower limit refused", *is_(below, Reason.PRICE_BELOW_LOWER_LIMIT,
                                                         Reason.PRICE_OUTSIDE_COLLAR))
        ctx.check("outside the % collar refused", *is_(collar, Reason.PRICE_OUTSIDE_COLLAR))
        ctx.check("outside the tick collar refused", *is_(collar_ticks, Reason.PRICE_OUTSIDE_COLLAR))
        ctx.check("oversized order refused", *is_(big, Reason.QTY_ABOVE_MAX,
                                                  Reason.QTY_ABOVE_ACCOUNT_MAX))
    else:
        ctx.check("above the upper limit rejected (501)", *is_(above, Reason.PRICE_ABOVE_UPPER_LIMIT))
        ctx.check("below the lower limit rejected (502)", *is_(below, Reason.PRICE_BELOW_LOWER_LIMIT))
        ctx.check("oversized order rejected (405)", *is_(big, Reason.QTY_ABOVE_MAX))
        inside = [collar, collar_ticks]
        ctx.check("inside the band accepted", all(h.status == NEW for h in inside),
                  ", ".join(OrdStatus(h.status).name for h in inside))


@scenario("self-trade", "an account and its group sibling buy against the account's own offer",
          exchange="both buys trade (an exchange matches them); the same-account trade is "
                   "flagged self_trade",
          gateway="both buys refused with SELF_TRADE (1101); the offer keeps working",
          roles=("group",))
async def self_trade(ctx: ScenarioContext) -> None:
    group = await ctx.connect("group", ["A004", "A005"])
    price = ctx.px("m2605", 50)
    offer = await ctx.order(group, account="A004", symbol="m2605", side=SELL, price=price, qty=2)
    own = await ctx.order(group, account="A004", symbol="m2605", side=BUY, price=price, qty=1)
    sibling = await ctx.order(group, account="A005", symbol="m2605", side=BUY, price=price, qty=1)
    ctx.check("offer accepted", offer.status in (NEW, FILLED, OrdStatus.PARTIALLY_FILLED),
              OrdStatus(offer.status).name)
    if ctx.gateway:
        for label, h in (("same account", own), ("same group", sibling)):
            ctx.check(f"{label} buy refused (1101)",
                      h.status == REJECTED and h.reason == Reason.SELF_TRADE,
                      f"{OrdStatus(h.status).name} {h.reason}")
        ctx.check("offer still working", not offer.done and offer.cum_qty == 0,
                  f"{OrdStatus(offer.status).name} {offer.cum_qty} filled")
    else:
        await ctx.done([own, sibling, offer])
        ctx.check("both buys filled", own.status == FILLED and sibling.status == FILLED,
                  f"{OrdStatus(own.status).name}, {OrdStatus(sibling.status).name}")
        flagged = [t.self_trade for t in _trades(ctx, "group") if t.cl_ord_id == own.cl_ord_id]
        ctx.check("same-account trade flagged self_trade", flagged == [True], str(flagged))


@scenario("cancel-storm", "place-and-cancel in a loop on one contract (rb2605)",
          exchange="all 120 orders acknowledged and all 120 cancelled",
          gateway="new orders on the contract refused (702 cancel rate / 703 daily cancel "
                  "limit, or 701/710/2xx); no cancel of a working order is ever refused",
          roles=("algo",))
async def cancel_storm(ctx: ScenarioContext) -> None:
    algo = await ctx.connect("algo", ["A001"])
    n, accepted, canceled, refused_in_a_row = 120, 0, 0, 0
    handles: list[OrderHandle] = []
    for i in range(n):
        h = await ctx.order(algo, account="A001", symbol="rb2605", side=BUY, qty=1,
                            price=ctx.px("rb2605", -30 - (i * 7) % 23))
        handles.append(h)
        if h.status == REJECTED:
            refused_in_a_row += 1
            if refused_in_a_row >= 5:
                break  # the gateway has clearly stopped the storm
            continue
        refused_in_a_row = 0
        accepted += 1
        await algo.cancel(h.cl_ord_id)
        await h.wait_done(ctx.timeout)
        canceled += h.status == CANCELED
    codes = rejects(handles)
    cancel_rejects = [r for r in ctx.reports["algo"] if not isinstance(r, ExecReport)]
    ctx.check("no cancel refused", not cancel_rejects,
              "; ".join(f"{r.reason} {r.text}" for r in cancel_rejects[:3]))
    if ctx.gateway:
        stopped = {c: k for c, k in codes.items() if c in _CANCEL_STOPPERS}
        ctx.check("new orders refused once the cancel limit is reached", bool(stopped), describe(codes))
        ctx.check("every accepted order cancelled", canceled == accepted, f"{canceled}/{accepted}")
    else:
        ctx.check("every order acknowledged", accepted == n, f"{accepted}/{n}; {describe(codes)}")
        ctx.check("every order cancelled", canceled == n, f"{canceled}/{n}")


@scenario("margin-exhaustion", "A004 (3,000,000) keeps buying 10-lot au2606 orders",
          exchange="all 10 orders acknowledged (an exchange does not check funds)",
          gateway="the first orders accepted, then refused with INSUFFICIENT_FUNDS (1001)",
          roles=("desk",))
async def margin_exhaustion(ctx: ScenarioContext) -> None:
    desk = await ctx.connect("desk", ["A004"])
    handles = [await ctx.order(desk, account="A004", symbol="au2606", side=BUY, qty=10,
                               price=ctx.px("au2606", -500 - i)) for i in range(10)]
    codes = rejects(handles)
    accepted = sum(1 for h in handles if h.status != REJECTED)
    if ctx.gateway:
        ctx.check("some orders accepted while funds last", accepted >= 1, f"{accepted} accepted")
        ctx.check("refused with INSUFFICIENT_FUNDS (1001)", codes.get(int(Reason.INSUFFICIENT_FUNDS), 0) >= 1,
                  describe(codes))
        first = next((i for i, h in enumerate(handles) if h.status == REJECTED), len(handles))
        ctx.check("nothing accepted after the first refusal",
                  all(h.status == REJECTED for h in handles[first:]), f"first refusal at #{first + 1}")
    else:
        ctx.check("every order acknowledged", accepted == 10, describe(codes))


@scenario("close-without-position", "closing orders with no (or not enough) position",
          exchange="all acknowledged (an exchange does not check positions)",
          gateway="A005 close of m2605 and A001 close of 30 rb2605 (holds 20, 5 pending) "
                  "and of 3 au2606 (short 2) refused with INSUFFICIENT_POSITION (901); "
                  "A001 close of 5 rb2605 accepted",
          roles=("desk",))
async def close_without_position(ctx: ScenarioContext) -> None:
    desk = await ctx.connect("desk", ["A001", "A005"])
    none = await ctx.order(desk, account="A005", symbol="m2605", side=SELL, offset=Offset.CLOSE,
                           price=ctx.px("m2605", 40), qty=1)
    fine = await ctx.order(desk, account="A001", symbol="rb2605", side=SELL, offset=Offset.CLOSE,
                           price=ctx.px("rb2605", 100), qty=5)
    too_many = await ctx.order(desk, account="A001", symbol="rb2605", side=SELL,
                               offset=Offset.CLOSE, price=ctx.px("rb2605", 100), qty=30)
    short = await ctx.order(desk, account="A001", symbol="au2606", side=BUY, offset=Offset.CLOSE,
                            price=ctx.px("au2606", -500), qty=3)
    refused = [none, too_many, short]
    if ctx.gateway:
        ctx.check("closes beyond the position refused (901)",
                  all(h.status == REJECTED and h.reason == Reason.INSUFFICIENT_POSITION for h in refused),
                  ", ".join(f"{OrdStatus(h.status).name} {h.reason}" for h in refused))
        ctx.check("close within the position accepted", fine.status == NEW, OrdStatus(fine.status).name)
    else:
        all_four = refused + [fine]
        ctx.check("every close acknowledged", all(h.status == NEW for h in all_four),
                  describe(rejects(all_four)))


@scenario("disconnect-resting", "a session drops (no Logout) with three resting orders",
          exchange="the seat's orders survive: the reconnected seat sees all three with "
                   "OrderStatusRequest (and cancels them)",
          gateway="cancel-on-disconnect: the three orders are cancelled; the reconnected "
                  "session's status request no longer lists them",
          roles=("desk",))
async def disconnect_resting(ctx: ScenarioContext) -> None:
    desk = await ctx.connect("desk", ["A001"], cancel_on_disconnect=True)
    resting = [await ctx.order(desk, account="A001", symbol="rb2605", side=BUY, qty=1,
                               price=ctx.px("rb2605", -40 - i)) for i in range(3)]
    ctx.check("three orders resting", all(h.status == NEW for h in resting),
              describe(rejects(resting)))
    ids = {h.cl_ord_id for h in resting}
    desk.abort()
    again = await ctx.connect("desk", ["A001"])
    if ctx.gateway:
        # The gateway cancels asynchronously: poll its status answer until they are gone.
        deadline = asyncio.get_running_loop().time() + ctx.timeout
        listed = ids
        while listed and asyncio.get_running_loop().time() < deadline:
            listed = {r.cl_ord_id for r in await again.request_status("A001")} & ids
            if listed:
                await asyncio.sleep(0.05)
        ctx.check("resting orders cancelled on disconnect", not listed,
                  f"{len(listed)} still working")
    else:
        listed = {r.cl_ord_id for r in await again.request_status("A001")} & ids
        ctx.check("orders survive the disconnect", listed == ids, f"{len(listed)}/3 listed")
        cancelled = await ctx.cancel_all(again)
        ctx.check("reconnected seat cancels them",
                  {h.cl_ord_id for h in cancelled if h.status == CANCELED} >= ids,
                  f"{len(cancelled)} cancelled")


@scenario("unregistered-programmatic", "manual account A003 starts behaving like an algo",
          exchange="every order acknowledged and cancelled; no alert (an exchange does not judge)",
          gateway="flagged: Alert PROGRAMMATIC_BEHAVIOUR (1302), and/or orders refused with "
                  "PROGRAMMATIC_UNREGISTERED (801) or PROGRAMMATIC_NOT_CONFIRMED (303)",
          roles=("manual",))
async def unregistered_programmatic(ctx: ScenarioContext) -> None:
    manual = await ctx.connect("manual", ["A003"])
    stop = {int(Reason.PROGRAMMATIC_UNREGISTERED), int(Reason.PROGRAMMATIC_NOT_CONFIRMED)}
    bursts, per_burst, all_handles = 12, 6, []

    def flagged() -> bool:
        return any(a.code == Reason.PROGRAMMATIC_BEHAVIOUR for a in ctx.alerts) or \
            any(h.status == REJECTED and h.reason in stop for h in all_handles)

    for b in range(bursts):
        # Each burst is 6 orders + 6 cancels inside a few milliseconds: 12 messages in a
        # second. The gateway counts occasions per second, so bursts are a second apart there.
        handles = [manual.send_order_nowait(account="A003", symbol="m2605", side=BUY, qty=1,
                                            price=ctx.px("m2605", -30 - k - b % 3), tif=Tif.GFD)
                   for k in range(per_burst)]
        all_handles += handles
        await ctx.acked(handles)
        for h in handles:
            if h.status == NEW:
                await manual.cancel(h.cl_ord_id)
        await ctx.done([h for h in handles if not h.done])
        if ctx.gateway:
            if flagged():
                break
            await asyncio.sleep(1.05)
    if ctx.gateway:
        ctx.check("unregistered programmatic behaviour flagged", flagged(),
                  f"alerts: {[a.code for a in ctx.alerts]}; rejects: {describe(rejects(all_handles))}")
    else:
        n = bursts * per_burst
        ctx.check("every order acknowledged", not rejects(all_handles), describe(rejects(all_handles)))
        ctx.check("every order cancelled", sum(h.status == CANCELED for h in all_handles) == n,
                  f"{sum(h.status == CANCELED for h in all_handles)}/{n}")
        ctx.check("no alert from the exchange", not ctx.alerts, f"{len(ctx.alerts)} alerts")
