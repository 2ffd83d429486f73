"""The certification cases: what each provokes, what a client system must do, how it is judged.

Each case is an async function of the running suite (``Suite``, ``gateway.compliance.certify``)
that provokes one condition — by an instruction to the client system (the order its trader
would place), by an operator's action on the gateway (kill, reset), by a fault (the exchange
link or the client's connection cut) or by the suite's counterparty trading against the client
— and then judges the client's *reaction* from the messages on the wire (``certify_wire.Wire``),
never from what the client says about itself (except where the case asks for its view of an
order, which is compared with what the gateway told it). It returns its findings: empty is a
pass. ``NotProvoked`` means the condition did not happen (the gateway answered otherwise), so
the case proves nothing: an error, not a pass.

The cases follow the industry test guide (T/ZQX 0004-2025) and DESIGN.md §7, in an order that
keeps them apart: the refusal cases leave nothing working; the order-count case uses its own
account; the kill and link cases come after the cancels, which they would otherwise disturb.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from checks.enums import AlertLevel, ExecType, Offset, OrdStatus, Side
from checks.reasons import Reason
from gateway.compliance.certify_wire import CLIENT, GATEWAY, WireEvent
from gateway.protocol import Alert, CancelOrder, ExecReport, Logon, NewOrder, OrderStatusRequest

if TYPE_CHECKING:
    from gateway.compliance.certify import Suite

MAIN, RATE = "CERT1", "CERT2"  # the client system's accounts (examples/certify/risk.toml)
_FINAL = {OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED}


class NotProvoked(Exception):
    """The condition the case needs did not happen; the text says what happened instead."""


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    condition: str
    expected: str
    run: Callable[[Suite], Awaitable[list[str]]]


# ----------------------------------------------------------------------------- wire helpers
def client_orders(events: list[WireEvent]) -> list[NewOrder]:
    return [e.msg for e in events if e.dir == CLIENT and type(e.msg) is NewOrder]


def refusals(events: list[WireEvent]) -> list[ExecReport]:
    return [e.msg for e in events if e.dir == GATEWAY and type(e.msg) is ExecReport
            and e.msg.exec_type == ExecType.REJECTED]


def working_on_wire(events: list[WireEvent]) -> dict[str, NewOrder]:
    """The client's working orders as the messages so far say: sent, not refused, not final."""
    orders: dict[str, NewOrder] = {}
    for e in events:
        m = e.msg
        if e.dir == CLIENT and type(m) is NewOrder:
            orders[m.cl_ord_id] = m
        elif e.dir == GATEWAY and type(m) is ExecReport and m.exec_type != ExecType.STATUS \
                and m.status in _FINAL:
            orders.pop(m.cl_ord_id, None)
        elif e.dir == GATEWAY and type(m) is ExecReport and m.exec_type == ExecType.STATUS \
                and m.status in _FINAL:
            orders.pop(m.cl_ord_id, None)
    return orders


def _same_terms(a: NewOrder, b: NewOrder) -> bool:
    return (a.account, a.symbol, a.side, a.offset, a.price, a.qty) == \
        (b.account, b.symbol, b.side, b.offset, b.price, b.qty)


# ----------------------------------------------------------------------------- the cases
def refused_order(order: dict[str, Any], reason: Reason) -> Callable[[Suite], Awaitable[list[str]]]:
    """An order the gateway must refuse with ``reason``; the client must not resend it."""

    async def run(suite: Suite) -> list[str]:
        mark = suite.mark()
        reply = await suite.ask("order", **order)
        events = suite.wire.since(mark)
        sent = [o for o in client_orders(events)
                if (o.account, o.symbol, o.price, o.qty) ==
                (order["account"], order["symbol"], order["price"], order["qty"])]
        if not sent:
            if reply.get("sent") is False:
                return []  # the client's own pre-trade check stopped it: better still
            return ["the client did not send the order it was asked for and did not say why"]
        refused = [r for r in refusals(events) if r.cl_ord_id == sent[0].cl_ord_id]
        if not refused or refused[0].reason != reason:
            got = f"reason {refused[0].reason}" if refused else "no refusal"
            raise NotProvoked(f"the gateway answered with {got}, not {int(reason)} "
                              f"({reason.name})")
        if len(sent) > 1:
            return [f"resent the refused order {len(sent) - 1} time(s) without changing it "
                    f"(refused {int(reason)} {reason.name}): a blind resend"]
        return []

    return run


def _threshold_trigger(e: WireEvent, account: str, codes: set[int]) -> bool:
    m = e.msg
    if e.dir != GATEWAY:
        return False
    if type(m) is Alert:
        return m.level >= AlertLevel.WARNING and m.scope.split("/")[0] == f"account:{account}" \
            and (m.code == Reason.THRESHOLD_WARNING or m.code in codes)
    return type(m) is ExecReport and m.exec_type == ExecType.REJECTED and m.reason in codes


def backs_off(do: str, params: dict[str, Any], codes: set[int], what: str
              ) -> Callable[[Suite], Awaitable[list[str]]]:
    """A burst towards a threshold: the client must stop at the warning or the first refusal."""

    async def run(suite: Suite) -> list[str]:
        mark = suite.mark()
        await suite.ask(do, **params)
        events = suite.wire.since(mark)
        account = params["account"]
        trigger = next((i for i, e in enumerate(events)
                        if _threshold_trigger(e, account, codes)), None)
        if trigger is None:
            raise NotProvoked(f"no warning or refusal for {what} reached the client")
        findings = []
        over = [r for r in refusals(events) if r.reason in codes]
        if over:
            findings.append(f"kept sending past the {what} threshold: {len(over)} order(s) "
                            f"refused ({', '.join(sorted({str(r.reason) for r in over}))})")
        after = [o for o in client_orders(events[trigger + 1:]) if o.account == account
                 and o.symbol == params["symbol"]]
        if after:
            findings.append(f"sent {len(after)} new order(s) after the gateway's warning "
                            f"({events[trigger].msg.__class__.__name__} at "
                            f"{events[trigger].t_ns}) instead of backing off")
        return findings

    return run


async def _alert(suite: Suite, code: Reason, critical: bool, since: int, timeout: float) -> None:
    """Wait until the client has been told (an ``Alert`` of ``code``, critical or not)."""
    await suite.wire.wait_for(lambda e: e.dir == GATEWAY and type(e.msg) is Alert
                              and e.msg.code == code
                              and (e.msg.level >= AlertLevel.CRITICAL) == critical,
                              since, timeout)


async def kill_switch(suite: Suite) -> list[str]:
    mark = suite.mark()
    await suite.admin("/v1/kill", {"scope": "account", "key": MAIN,
                                   "reason": "certification: kill switch case"})
    await _alert(suite, Reason.KILL_SWITCH, True, mark, 10)
    stopped = suite.mark()
    await suite.ask("order", account=MAIN, symbol="cu2701", side=Side.BUY, price=69000.0, qty=1)
    during = suite.wire.since(stopped)
    await suite.admin("/v1/reset", {"scope": "account", "key": MAIN,
                                    "reason": "certification: kill switch case over"})
    await _alert(suite, Reason.KILL_SWITCH, False, stopped, 10)
    sent = [o for o in client_orders(during) if o.account == MAIN]
    if sent:
        return [f"sent {len(sent)} new order(s) for {MAIN} while the kill switch stopped it "
                "(it was told by Alert 1304)"]
    return []


async def link_loss(suite: Suite) -> list[str]:
    mark = suite.mark()
    suite.cut_link()
    await _alert(suite, Reason.LINK_STATUS, True, mark, 10)
    down = suite.mark()
    await suite.ask("order", account=MAIN, symbol="cu2701", side=Side.BUY, price=68900.0, qty=1)
    during = suite.wire.since(down)
    back = suite.mark()
    await suite.restore_link()
    await _alert(suite, Reason.LINK_STATUS, False, back, 15)
    after = suite.mark()
    await suite.ask("order", account=MAIN, symbol="cu2701", side=Side.BUY, price=68800.0, qty=1)
    findings = []
    sent = client_orders(during)
    if sent:
        findings.append(f"sent {len(sent)} new order(s) while the exchange link was down "
                        "(it was told by Alert 1307)")
    resumed = [o for o in client_orders(suite.wire.since(after)) if o.price == 68800.0]
    if not resumed:
        findings.append("did not trade again after the exchange link came back")
    return findings


async def _resting(suite: Suite, symbol: str, price: float, qty: int) -> dict[str, Any]:
    """Have the client place a buy the case needs working; NotProvoked if it is not."""
    reply = await suite.ask("order", account=MAIN, symbol=symbol, side=Side.BUY, price=price,
                            qty=qty)
    if reply.get("status") != OrdStatus.NEW:
        raise NotProvoked(f"the order the case needs working was not acknowledged: {reply}")
    return reply


async def disconnect(suite: Suite) -> list[str]:
    await _resting(suite, "al2701", 19000.0, 1)
    working = working_on_wire(suite.wire.events)
    mark = suite.mark()
    if suite.cut_client() == 0:
        raise NotProvoked("the client had no connection to cut")
    try:
        await suite.wire.wait_for(lambda e: e.dir == CLIENT and type(e.msg) is Logon, mark, 15)
    except TimeoutError:
        return ["did not reconnect within 15 s after its connection was cut"]
    await suite.ask("sync", timeout=20)
    events = suite.wire.since(mark)
    logon = next(i for i, e in enumerate(events) if e.dir == CLIENT and type(e.msg) is Logon)
    findings = []
    if not any(e.dir == CLIENT and type(e.msg) is OrderStatusRequest for e in events[logon:]):
        findings.append("reconnected without asking for the status of its orders "
                        "(no OrderStatusRequest): it did not reconcile")
    dupes = [o for o in client_orders(events) if any(_same_terms(o, w) for w in working.values())]
    if dupes:
        findings.append(f"sent {len(dupes)} working order(s) again as new after reconnecting "
                        f"({', '.join(o.cl_ord_id for o in dupes)}): they were still working")
    return findings


async def partial_fill(suite: Suite) -> list[str]:
    clid = (await _resting(suite, "cu2701", 70000.0, 5))["cl_ord_id"]
    mark = suite.mark()
    await suite.counterparty_sell("cu2701", 70000.0, 2)
    await suite.wire.wait_for(lambda e: e.dir == GATEWAY and type(e.msg) is ExecReport
                              and e.msg.cl_ord_id == clid and e.msg.exec_type == ExecType.TRADE,
                              mark, 10)
    book = await suite.ask("book")
    view = next((o for o in book.get("orders", []) if o.get("cl_ord_id") == clid), None)
    findings = []
    if view is None:
        findings.append(f"its book does not hold order {clid} after a partial fill")
    elif (view.get("cum"), view.get("leaves")) != (2, 3):
        findings.append(f"its book shows order {clid} with {view.get('cum')} filled and "
                        f"{view.get('leaves')} working; the gateway reported 2 filled, 3 working")
    extra = [o for o in client_orders(suite.wire.since(mark)) if o.symbol == "cu2701"]
    if extra:
        findings.append(f"sent {len(extra)} new cu2701 order(s) after the partial fill")
    return findings


def cancels(instrument: str) -> Callable[[Suite], Awaitable[list[str]]]:
    """Cancel-by-instrument (``instrument`` given) or cancel-all (empty)."""

    async def run(suite: Suite) -> list[str]:
        if instrument:
            await suite.ask("order", account=MAIN, symbol=instrument, side=Side.BUY,
                            price=19005.0, qty=1)
        working = working_on_wire(suite.wire.events)
        target = {c for c, o in working.items() if not instrument or o.symbol == instrument}
        if not target:
            raise NotProvoked("the client had no working order to cancel")
        mark = suite.mark()
        if instrument:
            await suite.ask("cancel_instrument", symbol=instrument)
        else:
            await suite.ask("cancel_all")
        events = suite.wire.since(mark)
        asked = {e.msg.orig_cl_ord_id for e in events
                 if e.dir == CLIENT and type(e.msg) is CancelOrder}
        findings = []
        missed = sorted(target - asked)
        if missed:
            findings.append(f"did not cancel working order(s) {', '.join(missed)}")
        wrong = sorted(asked - target)
        if wrong:
            findings.append(f"cancelled order(s) {', '.join(wrong)} outside "
                            f"{instrument or 'its working orders'}")
        left = set(working_on_wire(suite.wire.events)) & target
        if left and not missed:
            findings.append(f"order(s) {', '.join(sorted(left))} still working after the cancels")
        return findings

    return run


CASES: tuple[Case, ...] = (
    Case("unknown_instrument", "Unknown instrument",
         "an order for instrument xx2701, which does not exist (401)",
         "the refusal is taken; the order is not sent again",
         refused_order({"account": MAIN, "symbol": "xx2701", "price": 100.0, "qty": 1},
                       Reason.UNKNOWN_INSTRUMENT)),
    Case("off_tick", "Price off the tick grid",
         "cu2701 (tick 10) at 69005 (407)", "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "cu2701", "price": 69005.0, "qty": 1},
                       Reason.PRICE_NOT_ON_TICK)),
    Case("volume_out_of_range", "Volume outside the instrument's min/max",
         "51 lots of cu2701, whose maximum limit order is 50 (405)",
         "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "cu2701", "price": 69000.0, "qty": 51},
                       Reason.QTY_ABOVE_MAX)),
    Case("insufficient_funds", "Insufficient funds",
         "40 lots of cu2701 at 70000: 1.4 M margin on 1 M of funds (1001)",
         "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "cu2701", "price": 70000.0, "qty": 40},
                       Reason.INSUFFICIENT_FUNDS)),
    Case("no_position", "No position to close",
         "a closing sell of cu2701 with no position (901)", "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "cu2701", "side": Side.SELL,
                        "offset": Offset.CLOSE, "price": 70000.0, "qty": 1},
                       Reason.INSUFFICIENT_POSITION)),
    Case("non_trading_hours", "Outside trading hours",
         "ni2701, whose trading session never opens (402)", "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "ni2701", "price": 130000.0, "qty": 1},
                       Reason.MARKET_CLOSED)),
    Case("price_limit", "Price-limit (limit-up) day",
         "sn2701 is limit-up at 214000; a buy at 214010 (501)",
         "the refusal is taken; not resent",
         refused_order({"account": MAIN, "symbol": "sn2701", "price": 214010.0, "qty": 1},
                       Reason.PRICE_ABOVE_UPPER_LIMIT)),
    Case("order_count_threshold", "Order-count threshold and its warning",
         "a burst of 8 orders on CERT2, allowed 5 a second (warning at 3, refusal 701)",
         "backs off at the warning or the first refusal; keeps nothing coming",
         backs_off("burst", {"account": RATE, "symbol": "cu2701", "price": 68000.0,
                             "step": 10.0, "n": 8},
                   {int(Reason.ORDER_RATE), int(Reason.CANCEL_RATE)}, "order-rate")),
    Case("cancel_count_threshold", "Cancel-count threshold and its warning",
         "place-and-cancel cycles on zn2701, 5 cancels a day allowed (warning at 3, then 703)",
         "stops cancelling and re-placing on zn2701 at the warning",
         backs_off("cancel_cycle", {"account": MAIN, "symbol": "zn2701", "price": 23000.0,
                                    "n": 7},
                   {int(Reason.CONTRACT_CANCEL_LIMIT)}, "cancel-count")),
    Case("partial_fill", "Partial fill",
         "a buy of 5 cu2701 of which the suite's counterparty sells 2",
         "books 2 filled and 3 working; sends nothing new for it", partial_fill),
    Case("disconnect_reconnect", "Disconnect and reconnect with a status request",
         "the client's connection is cut while it has orders working",
         "reconnects, asks for the status of its orders, does not send them again", disconnect),
    Case("cancel_by_instrument", "Cancel by instrument",
         "working orders on al2701 and cu2701; asked to cancel al2701's",
         "cancels every al2701 order and nothing else", cancels("al2701")),
    Case("cancel_all", "Cancel all", "working orders; asked to cancel all",
         "cancels every working order", cancels("")),
    Case("kill_switch", "Kill switch (pause trading)",
         "the risk desk kills CERT1 (Alert 1304), then asks the client for an order",
         "sends no new order while stopped; resumes after the reset", kill_switch),
    Case("link_loss", "Exchange link loss and recovery",
         "the exchange link drops (Alert 1307 critical), then comes back",
         "sends no new order while the link is down; trades again after it is back",
         link_loss),
)
CASE_NAMES = tuple(c.name for c in CASES)
