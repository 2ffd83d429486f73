"""Inspecting an audit journal: ``fengkong journal verify | dump | prune``, and the helpers the
Kafka outbox shares (which account a record belongs to, records as plain JSON-able data).

The journal itself — the write-ahead log and its reader — is ``gateway.journal``; this module
only reads, so it can run beside a live gateway.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec

from checks.enums import AlertLevel, ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.journal import (
    BUSINESS_RETENTION_DAYS,
    CHINA_TZ,
    SUFFIX,
    AdminAction,
    Decision,
    ExchangeEvent,
    JournalDamage,
    JournalError,
    JournalReader,
    JournalRecord,
    list_segments,
    prune,
)


def record_account(record: JournalRecord) -> str:
    """The account a record concerns ('' if none): the Kafka audit key and dump's --account."""
    if isinstance(record, Decision):
        return record.account
    if isinstance(record, ExchangeEvent):
        return record.report.account
    if isinstance(record, AdminAction):
        return record.scope_value if record.scope_kind == "account" else ""
    msg = getattr(record, "msg", None)
    return getattr(msg, "account", "") if msg is not None else ""


def record_order_ids(record: JournalRecord) -> set[str]:
    """Every order id a record names (client, exchange, original, engine ref): dump's --order-id."""
    ids: set[str] = set()
    for obj in (record, getattr(record, "msg", None), getattr(record, "report", None)):
        for field in ("cl_ord_id", "orig_cl_ord_id", "order_id"):
            value = getattr(obj, field, "")
            if value:
                ids.add(value)
    if isinstance(record, Decision) and record.order_ref:
        ids.add(str(record.order_ref))
    return ids


class VerifyReport(msgspec.Struct):
    directory: str
    segments: int = 0
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    bytes: int = 0
    damage: JournalDamage | None = None
    quarantined: list[str] = []  # tails cut away by earlier recoveries

    @property
    def ok(self) -> bool:
        return self.damage is None


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Read the whole journal, checking every record; the report says what was found."""
    d = Path(directory)
    if not d.is_dir():
        raise JournalError(f"{d} is not a directory")
    segs = list_segments(d)
    report = VerifyReport(str(d), segments=len(segs), bytes=sum(p.stat().st_size for _, p in segs),
                          quarantined=sorted(p.name for p in d.glob(f"*{SUFFIX}.*.damaged")))
    reader = JournalReader(d)
    for seq, record in reader:
        if report.records == 0:
            report.first_seq, report.first_ts_ns = seq, record.ts_ns
        report.records += 1
        report.last_seq, report.last_ts_ns = seq, record.ts_ns
    report.damage = reader.damage
    return report


def dump(directory: str | os.PathLike[str], account: str | None = None, order_id: str | None = None,
         since_ns: int | None = None, until_ns: int | None = None) -> JournalReader:
    """The records matching every given filter, as a reader (check ``.damage`` after iterating)."""

    def where(record: JournalRecord) -> bool:
        return ((account is None or record_account(record) == account)
                and (order_id is None or order_id in record_order_ids(record))
                and (since_ns is None or record.ts_ns >= since_ns)
                and (until_ns is None or record.ts_ns < until_ns))

    return JournalReader(directory, where=where)


def to_builtins(value: Any) -> Any:
    """A record as plain JSON-able data, fields by name and ``type`` by tag (for --json and Kafka)."""
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {"type": type(value).__struct_config__.tag}
        for name in value.__struct_fields__:
            out[name] = to_builtins(getattr(value, name))
        return out
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: to_builtins(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtins(v) for v in value]
    return value


_ENUM_FIELDS: dict[str, type[IntEnum]] = {
    "side": Side, "offset": Offset, "hedge": Hedge, "ord_type": OrdType, "tif": Tif,
    "status": OrdStatus, "exec_type": ExecType, "reason": Reason, "level": AlertLevel,
}


def _fields(obj: msgspec.Struct, skip: tuple[str, ...] = ()) -> str:
    parts = []
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        if name in skip or value in ("", b"", {}, None):
            continue
        enum = _ENUM_FIELDS.get(name)
        if enum is not None and isinstance(value, int) and value in enum._value2member_map_:
            value = f"{value}:{enum(value).name}"
        elif isinstance(value, msgspec.Struct):
            value = f"{type(value).__struct_config__.tag}({_fields(value)})"
        elif isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, str) and (not value or " " in value):
            value = repr(value)
        parts.append(f"{name}={value}")
    return " ".join(parts)


def format_ts(ts_ns: int) -> str:
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, CHINA_TZ)
    return f"{dt:%Y-%m-%d %H:%M:%S}.{ts_ns % 1_000_000_000:09d}{dt:%z}"


def format_record(seq: int, record: JournalRecord) -> str:
    tag = type(record).__struct_config__.tag
    return f"{seq:>10} {format_ts(record.ts_ns)} {tag:<5} {_fields(record, skip=('ts_ns',))}"


def parse_time(text: str) -> int:
    """ISO 8601 date or time to ns since the epoch; without a zone it is China time (UTC+8)."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise JournalError(f"{text!r} is not an ISO 8601 time (e.g. 2025-06-03T09:30:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=CHINA_TZ)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def main(argv: list[str] | None = None) -> int:
    """``fengkong journal verify DIR | dump DIR [filters] [--json] | prune DIR [--retention-days N]``."""
    parser = argparse.ArgumentParser(prog="fengkong journal", description="Inspect an audit journal.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="check every record; exit 1 on damage")
    p.add_argument("dir")
    p = sub.add_parser("dump", help="print records, oldest first")
    p.add_argument("dir")
    p.add_argument("--account")
    p.add_argument("--order-id", help="client, exchange or original order id, or engine ref")
    p.add_argument("--since", help="ISO time (China time unless it names a zone)")
    p.add_argument("--until", help="ISO time, exclusive")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = sub.add_parser("prune", help="delete whole segments older than the retention")
    p.add_argument("dir")
    p.add_argument("--retention-days", type=int, default=BUSINESS_RETENTION_DAYS)
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if not Path(args.dir).is_dir():
            raise JournalError(f"{args.dir} is not a directory")
        if args.command == "verify":
            r = verify(args.dir)
            span = (f"records {r.first_seq}..{r.last_seq}, {format_ts(r.first_ts_ns)} to "
                    f"{format_ts(r.last_ts_ns)}" if r.records else "no records")
            print(f"{r.directory}: {r.segments} segment(s), {r.bytes} bytes, {r.records} record(s), {span}", file=out)
            for name in r.quarantined:
                print(f"note: {name} holds a damaged tail cut away by an earlier recovery", file=out)
            if r.damage is not None:
                print(f"DAMAGED ({r.damage.kind}): {r.damage}", file=out)
                print(f"records up to {r.damage.seq - 1} read back intact; nothing after the damage "
                      "was read. A damaged tail in the newest segment is cut (and kept as .damaged) "
                      "when the gateway opens the journal; damage in an older segment needs a person.",
                      file=out)
                return 1
            print("OK", file=out)
            return 0
        if args.command == "prune":
            for path in prune(args.dir, time.time_ns(), args.retention_days):
                print(f"deleted {path}", file=out)
            return 0
        reader = dump(args.dir, args.account, args.order_id,
                      parse_time(args.since) if args.since else None,
                      parse_time(args.until) if args.until else None)
        encode = msgspec.json.Encoder().encode
        for seq, record in reader:
            if args.json:
                out.write(encode({"seq": seq, **to_builtins(record)}).decode() + "\n")
            else:
                print(format_record(seq, record), file=out)
        if reader.damage is not None:
            print(f"journal damaged, stopped: {reader.damage}", file=sys.stderr)
            return 1
        return 0
    except JournalError as err:
        print(f"fengkong journal: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
