"""Order entry over FIX: the one home of the tag mapping between FIX 4.4 and the native messages.

Theory of operation
-------------------
Inbound, ``new_order(msg)`` turns a NewOrderSingle (D) into the gateway's ``NewOrder`` and
``cancel(msg)`` an OrderCancelRequest (F) into ``CancelOrder``. A tag whose *value* FIX
enumerates (Side 54, OrdType 40, TimeInForce 59, PositionEffect 77, our offset and hedge tags)
and that holds something else is a session-level problem — the caller answers Reject (35=3)
with SessionRejectReason 5 naming the tag; a required tag missing is reason 1. Everything
else (account, symbol, price, quantity) goes to the router as it came, so the risk engine
refuses it with the same reason code a native client would get.

Outbound, ``exec_report`` and ``cancel_reject`` build the body fields of ExecutionReport (8)
and OrderCancelReject (9) from the router's ``ExecReport`` / ``CancelReject``. The reason code
travels three ways: OrdRejReason 103 / CxlRejReason 102 (FIX's own small vocabularies), Text
58 (``"<code> <sentence>"``) and the custom tag ``TAG_REASON`` (20001, the code alone).

China futures fields FIX 4.4 lacks, as custom tags (README, "FIX"):

- ``TAG_OFFSET`` 20002 (开平): ``0`` open, ``1`` close, ``3`` close today, ``4`` close
  yesterday — CTP's CombOffsetFlag values. When present it wins over PositionEffect 77
  (``O`` open, ``C`` close).
- ``TAG_HEDGE`` 20003 (投机套保): ``1`` speculation (default), ``2`` arbitrage, ``3`` hedge —
  CTP's CombHedgeFlag values.
"""

from __future__ import annotations

import math

from checks.enums import ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.fix.codec import (
    R_BAD_FORMAT,
    R_BAD_VALUE,
    R_REQUIRED_MISSING,
    FixMessage,
    format_float,
)
from gateway.protocol import CancelOrder, CancelReject, ExecReport, NewOrder

TAG_REASON = 20001
TAG_OFFSET = 20002
TAG_HEDGE = 20003
# On Logon (35=A): the client application and terminal (穿透式监管, ``gateway.terminal``).
TAG_APP_ID = 20011
TAG_AUTH_CODE = 20012
# TerminalData's fields in order: ip, mac, device_name, device_id, os, extra.
TAG_TERMINAL = (20013, 20014, 20015, 20016, 20017, 20018)

Problem = tuple[int, int, str]  # (SessionRejectReason 373, RefTagID 371, text)

# Plain ints (the enums' values): the engine reads them on the hot path.
_SIDE = {b"1": int(Side.BUY), b"2": int(Side.SELL)}
_ORD_TYPE = {b"1": int(OrdType.MARKET), b"2": int(OrdType.LIMIT)}
_TIF = {b"0": int(Tif.GFD), b"3": int(Tif.IOC), b"4": int(Tif.FOK)}
_POSITION_EFFECT = {b"O": int(Offset.OPEN), b"C": int(Offset.CLOSE)}
_OFFSET = {b"0": int(Offset.OPEN), b"1": int(Offset.CLOSE), b"3": int(Offset.CLOSE_TODAY),
           b"4": int(Offset.CLOSE_YESTERDAY)}
_HEDGE = {b"1": int(Hedge.SPEC), b"2": int(Hedge.ARB), b"3": int(Hedge.HEDGE)}

EXEC_TYPE = {ExecType.PENDING_NEW: b"A", ExecType.NEW: b"0", ExecType.TRADE: b"F",
             ExecType.CANCELED: b"4", ExecType.REJECTED: b"8", ExecType.STATUS: b"I"}
ORD_STATUS = {OrdStatus.PENDING_NEW: b"A", OrdStatus.NEW: b"0", OrdStatus.PARTIALLY_FILLED: b"1",
              OrdStatus.FILLED: b"2", OrdStatus.CANCELED: b"4", OrdStatus.REJECTED: b"8"}
SIDE_OUT = {Side.BUY: b"1", Side.SELL: b"2"}
# OrdRejReason (103) for the codes FIX 4.4 has a word for; 99 (Other) for the rest.
ORD_REJ_REASON = {Reason.UNKNOWN_INSTRUMENT: b"1", Reason.MARKET_CLOSED: b"2",
                  Reason.EXCHANGE_UNAVAILABLE: b"2", Reason.QTY_ABOVE_MAX: b"3",
                  Reason.QTY_ABOVE_ACCOUNT_MAX: b"3", Reason.NOTIONAL_ABOVE_MAX: b"3",
                  Reason.DUPLICATE_CL_ORD_ID: b"6", Reason.INVALID_QTY: b"13",
                  Reason.QTY_BELOW_MIN: b"13", Reason.UNKNOWN_ACCOUNT: b"15",
                  Reason.ACCOUNT_NOT_PERMITTED: b"15"}


def _enum(msg: FixMessage, tag: int, table: dict[bytes, int], default: int | None) -> int | Problem:
    v = msg.fields.get(tag)
    if v is None:
        if default is None:
            return (R_REQUIRED_MISSING, tag, f"required tag {tag} missing")
        return default
    got = table.get(v)
    if got is None:
        return (R_BAD_VALUE, tag, f"tag {tag} value {v[:20].decode('latin-1')!r} is not one "
                f"of {', '.join(k.decode() for k in table)}")
    return got


def _number(msg: FixMessage, tag: int, default: float | None) -> float | Problem:
    v = msg.fields.get(tag)
    if v is None:
        if default is None:
            return (R_REQUIRED_MISSING, tag, f"required tag {tag} missing")
        return default
    try:
        return float(v)
    except ValueError:
        return (R_BAD_FORMAT, tag, f"tag {tag} value {v[:20].decode('latin-1')!r} is not a "
                "number")


def new_order(msg: FixMessage) -> NewOrder | Problem:
    """NewOrderSingle (D) -> ``NewOrder``, or the problem the session rejects it for (the
    usual, well-formed order in a few dictionary lookups; anything missing or odd is looked at
    tag by tag to name what is wrong)."""
    f = msg.fields
    clid, symbol, qty_b = f.get(11), f.get(55), f.get(38)
    side, ord_type = _SIDE.get(f.get(54)), _ORD_TYPE.get(f.get(40))  # type: ignore[arg-type]
    tif = _TIF.get(f.get(59, b"0"))
    offset = _OFFSET.get(f[TAG_OFFSET]) if TAG_OFFSET in f else \
        _POSITION_EFFECT.get(f.get(77, b"O"))
    hedge = _HEDGE.get(f.get(TAG_HEDGE, b"1"))
    if clid is not None and symbol is not None and qty_b is not None and side is not None \
            and ord_type is not None and tif is not None and offset is not None \
            and hedge is not None:
        try:
            qty = float(qty_b)
            price = float(f.get(44, b"0"))
        except ValueError:
            return _new_order_slowly(msg)
        q: int | float = int(qty) if math.isfinite(qty) and qty == int(qty) \
            and abs(qty) < 1e15 else qty
        return NewOrder(clid.decode("utf-8", "replace"), msg.text(1),
                        symbol.decode("utf-8", "replace"), side, offset, hedge, ord_type, tif,
                        price, q)
    return _new_order_slowly(msg)


def _new_order_slowly(msg: FixMessage) -> NewOrder | Problem:
    f = msg.fields
    clid = f.get(11)
    if clid is None:
        return (R_REQUIRED_MISSING, 11, "required tag 11 (ClOrdID) missing")
    if f.get(55) is None:
        return (R_REQUIRED_MISSING, 55, "required tag 55 (Symbol) missing")
    side = _enum(msg, 54, _SIDE, None)
    if type(side) is tuple:
        return side
    ord_type = _enum(msg, 40, _ORD_TYPE, None)
    if type(ord_type) is tuple:
        return ord_type
    tif = _enum(msg, 59, _TIF, int(Tif.GFD))
    if type(tif) is tuple:
        return tif
    if TAG_OFFSET in f:
        offset = _enum(msg, TAG_OFFSET, _OFFSET, None)
    else:
        offset = _enum(msg, 77, _POSITION_EFFECT, int(Offset.OPEN))
    if type(offset) is tuple:
        return offset
    hedge = _enum(msg, TAG_HEDGE, _HEDGE, int(Hedge.SPEC))
    if type(hedge) is tuple:
        return hedge
    qty = _number(msg, 38, None)
    if type(qty) is tuple:
        return qty
    price = _number(msg, 44, 0.0)
    if type(price) is tuple:
        return price
    # A whole number goes as an int; anything else (1.5, NaN, inf) as it is, for the engine
    # to refuse with its own reason (403), as for a native client.
    q: int | float = int(qty) if math.isfinite(qty) and qty == int(qty) and abs(qty) < 1e15 \
        else qty  # type: ignore[arg-type]
    return NewOrder(clid.decode("utf-8", "replace"), msg.text(1), msg.text(55), side, offset,
                    hedge, ord_type, tif, price, q)  # type: ignore[arg-type]


def cancel(msg: FixMessage) -> CancelOrder | Problem:
    """OrderCancelRequest (F) -> ``CancelOrder``."""
    f = msg.fields
    if f.get(11) is None:
        return (R_REQUIRED_MISSING, 11, "required tag 11 (ClOrdID) missing")
    if f.get(41) is None:
        return (R_REQUIRED_MISSING, 41, "required tag 41 (OrigClOrdID) missing")
    return CancelOrder(msg.text(11), msg.text(41), msg.text(1))


def _s(text: str) -> bytes:
    # A value may not contain SOH (it would end the field); nothing we send needs one.
    return text.encode().replace(b"\x01", b" ")


_TEXT_CACHE: dict[str, bytes] = {}  # accounts and symbols, encoded once (bounded below)


def _b(text: str) -> bytes:
    """``_s`` for values that repeat (accounts, symbols), cached."""
    out = _TEXT_CACHE.get(text)
    if out is None:
        out = _s(text)
        if len(_TEXT_CACHE) < 10_000:
            _TEXT_CACHE[text] = out
    return out


def exec_report(rep: ExecReport, exec_id: bytes, avg_px: float, now_ts: bytes,
                extra: bytes = b"") -> bytes:
    """ExecutionReport (8) body fields for a router ``ExecReport`` (one format for the fields
    every report has; the optional ones appended)."""
    et = rep.exec_type
    out = b"37=%s\x0111=%s\x0117=%s\x01150=%s\x0139=%s\x011=%s\x0155=%s\x01" % (
        _s(rep.order_id) or b"NONE", _s(rep.cl_ord_id), exec_id, EXEC_TYPE.get(et, b"I"),
        ORD_STATUS.get(rep.status, b"8"), _b(rep.account), _b(rep.symbol))
    side = SIDE_OUT.get(rep.side)  # type: ignore[call-overload]
    if side is not None:
        out += b"54=%s\x01" % side
    if rep.qty:
        out += b"38=%d\x01" % rep.qty
    if rep.price and math.isfinite(rep.price):
        out += b"44=%s\x01" % format_float(rep.price)
    out += b"151=%d\x0114=%d\x016=%s\x01" % (rep.leaves_qty, rep.cum_qty, format_float(avg_px))
    if et == ExecType.TRADE:
        out += b"32=%d\x0131=%s\x01" % (rep.last_qty, format_float(rep.last_px))
    if rep.reason:
        if et == ExecType.REJECTED:
            out += b"103=%s\x01" % ORD_REJ_REASON.get(rep.reason, b"99")  # type: ignore[call-overload]
        out += b"58=%d %s\x01%d=%d\x01" % (rep.reason, _s(rep.text), TAG_REASON, rep.reason)
    elif rep.text:
        out += b"58=%s\x01" % _s(rep.text)
    return out + b"60=%s\x01" % now_ts + extra


def cancel_reject(rej: CancelReject, ord_status: bytes, order_id: str, account: str) -> bytes:
    """OrderCancelReject (9) body fields for a router ``CancelReject``."""
    why = b"1" if rej.reason == Reason.UNKNOWN_ORDER else \
        b"0" if rej.reason == Reason.ORDER_FINISHED else b"99"
    out = (b"37=" + (_s(order_id) or b"NONE") + b"\x0111=" + _s(rej.cl_ord_id) +
           b"\x0141=" + _s(rej.orig_cl_ord_id) + b"\x0139=" + ord_status +
           b"\x01434=1\x01102=" + why + b"\x0158=%d " % rej.reason + _s(rej.text) +
           b"\x01%d=%d\x01" % (TAG_REASON, rej.reason))
    if account:
        out += b"1=" + _s(account) + b"\x01"
    return out


# ---------------------------------------------------------------------- the client's side
# The same mapping read the other way, for a FIX initiator of our own (``simulator.fix_client``):
# native messages out as FIX, FIX reports in as native ones.
SIDE_FIX = {v: k for k, v in _SIDE.items()}
ORD_TYPE_FIX = {v: k for k, v in _ORD_TYPE.items()}
TIF_FIX = {v: k for k, v in _TIF.items()}
OFFSET_FIX = {v: k for k, v in _OFFSET.items()}
HEDGE_FIX = {v: k for k, v in _HEDGE.items()}
_EXEC_TYPE_IN = {v: int(k) for k, v in EXEC_TYPE.items()}
_ORD_STATUS_IN = {v: int(k) for k, v in ORD_STATUS.items()}


def _code(v: int, table: dict[int, bytes]) -> bytes:
    # A value outside the enumeration goes as its number: the acceptor answers Reject (373=5).
    return table.get(v) or b"%d" % v


def new_order_fields(o: NewOrder, transact_time: bytes) -> bytes:
    """NewOrderSingle (D) body fields for a native ``NewOrder``."""
    price = o.price if isinstance(o.price, float) else 0.0
    out = [(11, _s(o.cl_ord_id)), (1, _s(o.account)), (55, _s(o.symbol)),
           (54, _code(o.side, SIDE_FIX)), (38, format_float(float(o.qty))),
           (40, _code(o.ord_type, ORD_TYPE_FIX)), (59, _code(o.tif, TIF_FIX)),
           (TAG_OFFSET, _code(o.offset, OFFSET_FIX)), (TAG_HEDGE, _code(o.hedge, HEDGE_FIX)),
           (60, transact_time)]
    if o.ord_type != OrdType.MARKET:
        out.append((44, format_float(price) if price == price else b"NaN"))
    return b"".join(b"%d=%s\x01" % (t, v) for t, v in out)


def _int(msg: FixMessage, tag: int) -> int:
    v = msg.fields.get(tag)
    try:
        return int(float(v)) if v is not None else 0
    except ValueError:
        return 0


def _float(msg: FixMessage, tag: int) -> float:
    v = msg.fields.get(tag)
    try:
        return float(v) if v is not None else 0.0
    except ValueError:
        return 0.0


def _reason_text(msg: FixMessage) -> tuple[int, str]:
    """(reason code, sentence): the code from tag 20001, the sentence from Text without it."""
    reason = _int(msg, TAG_REASON)
    text = msg.text(58)
    if reason and text.startswith(f"{reason} "):
        text = text[len(str(reason)) + 1:]
    return reason, text


def parse_exec_report(msg: FixMessage) -> ExecReport:
    """ExecutionReport (8) -> native ``ExecReport`` (ExecID as the execution id)."""
    reason, text = _reason_text(msg)
    side = {b"1": int(Side.BUY), b"2": int(Side.SELL)}.get(msg.fields.get(54, b""), 0)
    return ExecReport(msg.text(11), "" if msg.fields.get(37) == b"NONE" else msg.text(37),
                      msg.text(1), msg.text(55), _ORD_STATUS_IN.get(msg.fields.get(39, b""), 0),
                      _EXEC_TYPE_IN.get(msg.fields.get(150, b""), 0), reason, text,
                      _int(msg, 32), _float(msg, 31), _int(msg, 14), _int(msg, 151), 0, side,
                      _float(msg, 44), _int(msg, 38), False, msg.text(17))


def parse_cancel_reject(msg: FixMessage) -> CancelReject:
    reason, text = _reason_text(msg)
    return CancelReject(msg.text(11), msg.text(41), reason, text)
