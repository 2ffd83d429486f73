"""What the console shows, as plain data: built from the gateway's own read accessors.

Nothing here changes state or reaches into a collaborator's privates: the firm summary comes
from ``Gateway.status()``, accounts from ``engine.account_view``, positions and daily counters
from ``engine.snapshot()``, limits from ``Gateway.limits`` and the exchange rules of the risk
configuration, working orders from ``Router.open_order_views``.

Usage against a limit
---------------------
Every limit the book can measure is reported as ``{limit, scope, used, max, level}``:
``level`` is ``"ok"``, ``"warn"`` from the account's ``warn_fraction`` of the limit on (the same
fraction the engine warns at) and ``"limit"`` at or past it. The console colours by ``level`` and
never decides it. Measured today:

=================================  ==============================================================
open_orders                        working orders against ``max_open_orders``
loss                               intraday loss (−(realised + marked P&L), yuan) against
                                   ``loss_limit``
messages / product                 orders + cancels per product today against
                                   ``max_messages_per_product``
cancels / contract                 daily cancels per contract against the exchange's
                                   ``cancel_limit_per_contract``
large_cancels / contract           against the exchange's ``large_cancel_limit``
self_trades / contract             against the exchange's ``self_trade_limit``
open_volume / contract             the account group's opening volume today against
                                   ``max_open_volume_per_contract`` (交易限额)
=================================  ==============================================================

Rates over a rolling second (orders and cancels per second) live in the engine's windows, which
have no read accessor; the console shows each *session's* message rate instead.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from checks.enums import AlertLevel
from checks.reasons import Reason

if TYPE_CHECKING:
    from gateway.server import Gateway

# Position tuple fields, as ``engine.snapshot()`` gives them (see checks.state.PositionState).
_POS = ("long_td", "long_yd", "short_td", "short_yd", "long_td_frozen", "long_yd_frozen",
        "short_td_frozen", "short_yd_frozen", "long_pending", "short_pending", "long_cost",
        "short_cost", "long_margin", "short_margin", "unrealised", "cancels", "large_cancels",
        "self_trades")
_I = {name: n for n, name in enumerate(_POS)}
ALERTS_IN_SNAPSHOT = 100  # the alert stream a new console starts with


def level(used: float, limit: float | None, warn_fraction: float) -> str:
    """``limit`` at or past the limit, ``warn`` from its warning fraction on, else ``ok``."""
    if limit is None:
        return "ok"
    if limit <= 0:
        return "limit" if used > 0 or limit < 0 else "ok"
    if used >= limit:
        return "limit"
    return "warn" if used >= warn_fraction * limit else "ok"


def _item(name: str, scope: str, used: float, limit: float | None, warn: float) -> dict[str, Any]:
    return {"limit": name, "scope": scope, "used": used, "max": limit,
            "level": level(used, limit, warn)}


class BookIndex:
    """One ``engine.snapshot()`` indexed by account (and group) once, so the usage of every
    account costs one pass over the book, not one pass per account."""

    def __init__(self, gw: Gateway, snap: dict[str, Any] | None = None) -> None:
        snap = gw.engine.snapshot() if snap is None else snap
        self.positions: dict[str, list[tuple[str, tuple]]] = {}
        for (acc, sym), row in sorted(snap["positions"].items()):
            self.positions.setdefault(acc, []).append((sym, row))
        names = {n: p for p, n in gw.engine.product_ids.items()}
        self.messages: dict[str, list[tuple[str, int]]] = {}
        for (acc, p), (messages, _filled) in sorted(snap["products"].items(), key=str):
            self.messages.setdefault(acc, []).append((str(names.get(p, p)), messages))
        self.open_volume: dict[int, list[tuple[str, int]]] = {}
        for (g, sym), row in sorted(snap["groups"].items(), key=str):
            if row[0]:
                self.open_volume.setdefault(g, []).append((sym, row[0]))
        risk = gw.cfg.risk
        self.rules = {i.symbol: risk.exchanges.get(i.exchange) for i in risk.instruments}
        self.group_of = {a.id: gw.engine.group_ids[a.group] for a in risk.accounts}


def account_usage(gw: Gateway, account: str, book: BookIndex,
                  view: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured limit of ``account`` (its ``engine.account_view``), per contract or
    product where it is counted so."""
    lim = gw.limits[account]
    warn = lim.warn_fraction
    out = [_item("open_orders", "", view["open_orders"], lim.max_open_orders, warn)]
    loss = round(max(0.0, -(view["realised_pnl"] + view["unrealised_pnl"])), 2)
    out.append(_item("loss", "", loss, lim.loss_limit, warn))
    for product, messages in book.messages.get(account, ()):
        out.append(_item("messages", product, messages, lim.max_messages_per_product, warn))
    for sym, row in book.positions.get(account, ()):
        rules = book.rules.get(sym)
        if rules is None:
            continue
        for name, cap in (("cancels", rules.cancel_limit_per_contract),
                          ("large_cancels", rules.large_cancel_limit),
                          ("self_trades", rules.self_trade_limit)):
            if row[_I[name]]:
                out.append(_item(name, sym, row[_I[name]], cap, warn))
    if lim.max_open_volume_per_contract is not None:
        for sym, volume in book.open_volume.get(book.group_of[account], ()):
            out.append(_item("open_volume", sym, volume, lim.max_open_volume_per_contract, warn))
    return out


def worst(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per limit name, the item nearest its limit: one cell per limit in the account list."""
    out: dict[str, dict[str, Any]] = {}
    for it in items:
        cur = out.get(it["limit"])
        if cur is None or _fraction(it) > _fraction(cur):
            out[it["limit"]] = it
    return out


def _fraction(it: dict[str, Any]) -> float:
    m = it["max"]
    return -1.0 if m is None else (float("inf") if m <= 0 else it["used"] / m)


def positions(snap: dict[str, Any], account: str) -> list[dict[str, Any]]:
    """Positions of ``account``: today's and yesterday's long and short, frozen, pending."""
    out = []
    for (acc, sym), row in sorted(snap["positions"].items()):
        if acc != account:
            continue
        p = dict(zip(_POS, row, strict=True))
        if not any(p[k] for k in _POS[:10]) and not p["long_margin"] and not p["short_margin"]:
            continue  # only daily counters on it: shown with the counters
        for money in ("long_cost", "short_cost", "long_margin", "short_margin", "unrealised"):
            p[money] = round(p[money] / 100, 2)
        out.append({"symbol": sym, **{k: p[k] for k in _POS[:15]}})
    return out


def alert_view(a: Any) -> dict[str, Any]:
    """An alert with its level and code by name (the console shows names, not numbers)."""
    try:
        level_name = AlertLevel(a.level).name
    except ValueError:
        level_name = str(a.level)
    try:
        code_name = Reason(a.code).name
    except ValueError:
        code_name = str(a.code)
    return {"ts_ns": a.ts_ns, "level": a.level, "level_name": level_name, "code": a.code,
            "code_name": code_name, "scope": a.scope, "text": a.text}


def outbox_view(gw: Gateway) -> dict[str, Any]:
    """The Kafka outbox: how far it has published the journal, and its trouble."""
    ob = gw.outbox
    if ob is None:
        return {"configured": bool(gw.cfg.kafka.bootstrap), "running": False}
    last = gw.journal.last_seq if gw.journal is not None else 0
    return {"configured": True, "running": True, "published_seq": ob.published_seq,
            "journal_seq": last, "lag": max(0, last - ob.published_seq),
            "failures": ob.failures, "last_error": ob.last_error,
            "broker_losses": ob.broker_losses}


def session_messages(s: Any) -> tuple[str, int]:
    """A client session's front and the messages it has received: a native session counts
    them (``FramedProtocol.messages_in``, whichever router path took them); a FIX connection's are its FIX session's inbound
    sequence (the next MsgSeqNum expected, less one: what a rate needs, since it moves by one
    per message received; a sequence reset makes it fall, and the rate is then not given)."""
    if type(s).__module__.startswith("gateway.fix"):
        fix = getattr(s, "session", None)
        store = getattr(fix, "store", None)
        return "FIX", max(0, getattr(store, "next_in", 1) - 1)
    return "native", getattr(s, "messages_in", 0)


class Sections:
    """Builds the live view's sections; remembers each session's message count so the next
    build can give its rate (messages per second since the previous build)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._counts: dict[int, tuple[int, int]] = {}  # session -> (messages, monotonic ns)

    def build(self) -> dict[str, Any]:
        gw = self.gw
        st = gw.status()
        book = BookIndex(gw)
        firm = {k: st[k] for k in ("gateway", "exchange_link", "halted", "working_orders",
                                   "cancels_pending", "stats", "kills")}
        firm["started_ns"] = gw.started_ns
        firm["session_open"] = gw.session_open()
        j = st["journal"]
        firm["journal"] = None if j is None else {
            k: j[k] for k in ("dir", "fsync", "next_seq", "safe_mode", "writable",
                              "write_failure", "held_records", "repair")}
        firm["kafka"] = outbox_view(gw)
        kills = {(k["scope"], k["key"]): k["mode"] for k in st["kills"]}
        accounts = []
        for view in st["accounts"]:
            acc = view["account"]
            row = dict(view)
            row["killed"] = kills.get(("account", acc))
            row["usage"] = worst(account_usage(gw, acc, book, view))
            accounts.append(row)
        now = time.monotonic_ns()
        sessions, counts = [], {}
        for s in gw.router.sessions.values():
            front, n = session_messages(s)
            prev = self._counts.get(s.session_id)
            rate = None if prev is None or now <= prev[1] or n < prev[0] else \
                round((n - prev[0]) * 1e9 / (now - prev[1]), 1)
            counts[s.session_id] = (n, now)
            sessions.append({"session": s.session_id, "front": front, "user": s.user,
                             "accounts": sorted(s.accounts), "messages": n, "rate": rate,
                             "working_orders": gw.router.owned(s.session_id),
                             "killed": kills.get(("session", str(s.session_id)))})
        self._counts = counts
        return {"firm": firm, "accounts": accounts, "sessions": sessions}
