"""Inspecting and repairing an audit journal: ``fengkong journal verify | dump | prune | repair``,
and the helpers the Kafka outbox shares (which account a record belongs to, records as plain
JSON-able data).

The journal itself — the write-ahead log, its reader and its damage rules — is
``gateway.journal``. ``verify`` and ``dump`` only read, so they run beside a live gateway.

``repair`` is the person's step after corruption (the gateway stays in safe mode until it is
done). It takes the journal's lock, so the gateway must be stopped. Without ``--apply`` it only
says what it would do. With it, each damaged segment is rewritten: every intact record byte for
byte, and for every sequence number the unreadable bytes stood for a ``State(kind="unreadable")``
placeholder naming the file, offset, size and kind of the damage, so the journal reads through
gap-free and replay skips the placeholders. The original segment is kept beside it as
``<segment>.<UTC time>.corrupt``; unreadable bytes at the very end of the newest segment stand
for no known record and are only kept there. A missing segment (a gap) is filled with
``State(kind="missing")`` placeholders only with ``--fill-gaps`` (restoring the file from a
backup is better, when there is one). Then the journal's ``CORRUPTION`` file is removed and an
``AdminAction`` ("journal_repair": who, why, what) is appended, and the result is verified.
After the restart the gateway replays every intact record, and the reconciliation with the
exchange books what the unreadable records held (fills by execution id; orders the gateway no
longer knows are alerted and cancelled or adopted by policy).
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import getpass
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

import msgspec

from checks.enums import AlertLevel, ExecType, Hedge, Offset, OrdStatus, OrdType, Side, Tif
from checks.reasons import Reason
from gateway.journal import (
    BUSINESS_RETENTION_DAYS,
    CERT_RETENTION_DAYS,
    CHINA_TZ,
    CORRUPTION_FILE,
    SUFFIX,
    AdminAction,
    Corruption,
    Decision,
    ExchangeEvent,
    FsyncPolicy,
    Journal,
    JournalDamage,
    JournalError,
    JournalReader,
    JournalRecord,
    Piece,
    State,
    frame,
    list_segments,
    map_segment,
    prune,
    read_corruption,
    segment_name,
    torn_tail,
    write_corruption,
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


class SegmentMap(msgspec.Struct):
    """One segment from the damage on, stretch by stretch (``gateway.journal.map_segment``)."""

    name: str
    first: int
    size: int
    pieces: list[Piece]
    torn_tail: bool = False  # its only damage is a torn tail (it is the newest segment)


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
    quarantined: list[str] = []  # evidence: tails cut away, segments kept before a repair
    corruption: list[Corruption] = []  # what CORRUPTION records (the gateway is in safe mode)
    after_damage: list[SegmentMap] = []  # the damaged segment and every later one, mapped

    @property
    def ok(self) -> bool:
        return self.damage is None and not self.corruption

    @property
    def torn_tail_only(self) -> bool:
        """The only damage is a torn tail: the gateway cuts it on open and trades on."""
        return (self.damage is not None and not self.corruption and len(self.after_damage) == 1
                and self.after_damage[0].torn_tail)


def _evidence(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir()
                  if SUFFIX + "." in p.name and p.name.endswith((".damaged", ".corrupt")))


def _map_from(d: Path, damage: JournalDamage) -> list[SegmentMap]:
    segs = list_segments(d)
    where = Path(damage.segment).name
    start = next((i for i, (_, p) in enumerate(segs) if p.name == where), len(segs))
    out = []
    for i, (first, path) in enumerate(segs[start:], start):
        buf = path.read_bytes()
        pieces = map_segment(buf, first)
        newest = i == len(segs) - 1
        out.append(SegmentMap(path.name, first, len(buf), pieces,
                              newest and torn_tail(buf, pieces) is not None))
    return out


def verify(directory: str | os.PathLike[str]) -> VerifyReport:
    """Read the whole journal, checking every record; the report says what was found, and past
    any damage, what is intact after it."""
    d = Path(directory)
    if not d.is_dir():
        raise JournalError(f"{d} is not a directory")
    segs = list_segments(d)
    report = VerifyReport(str(d), segments=len(segs), bytes=sum(p.stat().st_size for _, p in segs),
                          quarantined=_evidence(d), corruption=read_corruption(d))
    reader = JournalReader(d)
    for seq, record in reader:
        if report.records == 0:
            report.first_seq, report.first_ts_ns = seq, record.ts_ns
        report.records += 1
        report.last_seq, report.last_ts_ns = seq, record.ts_ns
    report.damage = reader.damage
    if reader.damage is not None:
        report.after_damage = _map_from(d, reader.damage)
    return report


def describe_piece(p: Piece) -> str:
    if p.ok:
        return f"bytes {p.start}..{p.end}: records {p.first}..{p.last} intact"
    stands = (f"stands for record(s) {p.first}..{p.last}" if p.last >= p.first else
              f"stands for no record known to be missing (the next expected is {p.first})")
    if p.start == p.end:
        return f"at byte {p.start}: {p.detail}"
    return f"bytes {p.start}..{p.end}: unreadable ({p.kind}: {p.detail}); {stands}"


# --- repair ----------------------------------------------------------------------------------


class RepairStep(msgspec.Struct):
    segment: str  # file name
    action: str  # rewrite | fill_gap | note
    text: str
    placeholders: list[tuple[int, int]] = []  # sequence runs that get placeholders
    data: bytes = b""  # the new file's content (rewrite, fill_gap)


class RepairPlan(msgspec.Struct):
    directory: str
    steps: list[RepairStep] = []
    problems: list[str] = []  # what repair cannot do: a person must
    clears_marker: bool = False

    @property
    def needed(self) -> bool:
        return bool(self.steps) or self.clears_marker


def _placeholder(ts: int, kind: str, info: dict[str, Any]) -> State:
    return State(ts, kind, msgspec.json.encode(info))


def plan_repair(directory: str | os.PathLike[str], fill_gaps: bool = False,
                stamp: str = "<time>") -> RepairPlan:
    """What ``repair`` would do, without doing it."""
    d = Path(directory)
    plan = RepairPlan(str(d), clears_marker=(d / CORRUPTION_FILE).exists())
    rep = verify(d)
    if rep.damage is None:
        return plan
    segs = list_segments(d)
    names = [p.name for _, p in segs]
    expected: int | None = None  # the first record the next segment must hold
    for m in rep.after_damage:
        i = names.index(m.name)
        next_first = segs[i + 1][0] if i + 1 < len(segs) else None
        if expected is not None and m.first != expected:
            if m.first < expected:
                plan.problems.append(f"{m.name} starts at record {m.first} but the segment before "
                                     f"it ends at {expected - 1}: overlapping segments need a person")
                return plan
            missing = (expected, m.first - 1)
            if not fill_gaps:
                plan.problems.append(f"records {missing[0]}..{missing[1]} are missing: no segment "
                                     f"file holds them (before {m.name}). Restore the file "
                                     f"{segment_name(missing[0])} from a backup, or rerun with "
                                     "--fill-gaps to stand placeholders in for them")
                return plan
            ts = m.pieces[0].first_ts if m.pieces and m.pieces[0].ok else 0
            gap = _placeholder(ts, "missing", {"detail": "segment file missing", "before": m.name})
            plan.steps.append(RepairStep(
                segment_name(missing[0]), "fill_gap",
                f"new segment with placeholders for the missing records {missing[0]}..{missing[1]}",
                [missing], b"".join(frame(gap, seq) for seq in range(missing[0], missing[1] + 1))))
        last = m.first - 1  # the last record the (repaired) segment holds
        if all(p.ok for p in m.pieces):
            expected = (m.pieces[-1].last if m.pieces else last) + 1
            continue
        buf = (d / m.name).read_bytes()
        evidence = f"{m.name}.{stamp}.corrupt"
        out = bytearray()
        runs: list[tuple[int, int]] = []
        notes = []
        last_ts = 0
        for k, p in enumerate(m.pieces):
            if p.ok:
                out += buf[p.start : p.end]
                last, last_ts = p.last, p.last_ts
                continue
            stands = p.last
            if k == len(m.pieces) - 1 and stands < p.first and next_first is not None:
                stands = next_first - 1  # the next segment's name says what they stood for
            if stands >= p.first:
                ts = last_ts or next((q.first_ts for q in m.pieces[k:] if q.ok), 0)
                info = {"segment": m.name, "offset": p.start, "bytes": p.end - p.start,
                        "kind": p.kind, "detail": p.detail, "evidence": evidence}
                out += b"".join(frame(_placeholder(ts, "unreadable", info), seq)
                                for seq in range(p.first, stands + 1))
                runs.append((p.first, stands))
                notes.append(f"{describe_piece(p)}: placeholder(s) for {p.first}..{stands}")
                last = stands
            else:
                notes.append(f"{describe_piece(p)}: kept only in {evidence}"
                             + (" (a torn tail)" if m.torn_tail else ""))
        expected = last + 1
        plan.steps.append(RepairStep(m.name, "rewrite", "rewritten keeping every intact record "
                                     f"(original kept as {evidence}): " + "; ".join(notes),
                                     runs, bytes(out)))
    return plan


def repair(directory: str | os.PathLike[str], reason: str, *, fill_gaps: bool = False,
           operator: str | None = None) -> tuple[RepairPlan, VerifyReport]:
    """Carry out ``plan_repair`` (see the module docstring); the journal must not be open."""
    d = Path(directory)
    lock_fd = os.open(d / "LOCK", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"journal {d} is open (LOCK is held): stop the gateway first") from None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        plan = plan_repair(d, fill_gaps, stamp)
        if plan.problems:
            return plan, verify(d)
        for step in plan.steps:
            path = d / step.segment
            if step.action == "fill_gap":
                with open(path, "xb") as f:
                    f.write(step.data)
                    f.flush()
                    os.fsync(f.fileno())
            elif step.action == "rewrite":
                tmp = path.with_name(path.name + ".repair")
                with open(tmp, "wb") as f:
                    f.write(step.data)
                    f.flush()
                    os.fsync(f.fileno())
                os.link(path, path.with_name(f"{path.name}.{stamp}.corrupt"))  # evidence first
                os.replace(tmp, path)
        was = read_corruption(d)
        if plan.needed:
            write_corruption(d, [])  # also makes the renames above durable (directory fsync)
    finally:
        os.close(lock_fd)
    if plan.needed:
        with Journal.open(d, fsync=FsyncPolicy.every_record()) as j:
            j.append(AdminAction(time.time_ns(), operator or getpass.getuser(), "journal_repair",
                                 reason=reason, args={
                                     "placeholders": [list(r) for s in plan.steps for r in s.placeholders],
                                     "segments": [s.segment for s in plan.steps],
                                     "evidence_suffix": f".{stamp}.corrupt",
                                     "corruption": [str(c) for c in was]}))
    return plan, verify(d)


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


def print_verify(r: VerifyReport, out: TextIO) -> int:
    """``verify``'s report for people; returns the exit code (0 clean, 1 damage)."""
    span = (f"records {r.first_seq}..{r.last_seq}, {format_ts(r.first_ts_ns)} to "
            f"{format_ts(r.last_ts_ns)}" if r.records else "no records")
    print(f"{r.directory}: {r.segments} segment(s), {r.bytes} bytes, {r.records} record(s) read "
          f"back in order, {span}", file=out)
    for name in r.quarantined:
        what = ("a damaged tail cut away when the journal was opened" if name.endswith(".damaged")
                else "a segment as it was before a repair")
        print(f"note: {name} is evidence: {what}", file=out)
    for c in r.corruption:
        print(f"CORRUPT since {format_ts(c.found_ns)}: {c}", file=out)
    if r.damage is not None:
        print(f"DAMAGED ({r.damage.kind}): {r.damage}", file=out)
        print(f"records up to {r.damage.seq - 1} read back intact; from the damage on, segment by "
              "segment:", file=out)
        for m in r.after_damage:
            print(f"  {m.name} ({m.size} bytes)", file=out)
            for piece in m.pieces:
                print(f"    {describe_piece(piece)}", file=out)
    if r.torn_tail_only:
        print("This is a torn tail (an incomplete last record, what a crash leaves): the gateway "
              "cuts it when it opens the journal, keeping the bytes as <segment>.<offset>.damaged, "
              "and trades on.", file=out)
        return 1
    if not r.ok:
        if r.damage is None:
            print(f"The journal reads back whole, but {CORRUPTION_FILE} records corruption (restored "
                  "from a copy since?).", file=out)
        print("This is corruption: the gateway does not trade on this journal (safe mode, reason "
              "1209: it reconciles and cancels only) until it is repaired. With the gateway "
              f"stopped: `fengkong journal repair {r.directory}` says what it would do; add "
              "`--apply --reason TEXT` to do it.", file=out)
        return 1
    print("OK", file=out)
    return 0


def print_repair(plan: RepairPlan, out: TextIO) -> None:
    for step in plan.steps:
        print(f"{step.segment}: {step.text}", file=out)
    if plan.clears_marker:
        print(f"{CORRUPTION_FILE}: removed (the gateway trades again after its next start)", file=out)
    for problem in plan.problems:
        print(f"cannot repair: {problem}", file=out)


def main(argv: list[str] | None = None) -> int:
    """``fengkong journal verify DIR | dump DIR [filters] [--json] | prune DIR [--retention-days N]
    | repair DIR [--apply --reason TEXT] [--fill-gaps]``."""
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
    p = sub.add_parser("repair", help="after corruption: keep every intact record, stand "
                       "placeholders in for unreadable ones (dry run unless --apply)")
    p.add_argument("dir")
    p.add_argument("--apply", action="store_true", help="do it (the gateway must be stopped)")
    p.add_argument("--reason", default="", help="why (journaled with your user name); "
                   "required with --apply")
    p.add_argument("--fill-gaps", action="store_true",
                   help="stand placeholders in for records of missing segment files")
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if not Path(args.dir).is_dir():
            raise JournalError(f"{args.dir} is not a directory")
        if args.command == "verify":
            return print_verify(verify(args.dir), out)
        if args.command == "repair":
            if not args.apply:
                plan = plan_repair(args.dir, args.fill_gaps)
                if not plan.needed and not plan.problems:
                    print("nothing to repair: the journal reads back whole", file=out)
                    return 0
                print_repair(plan, out)
                print("dry run: nothing changed. Rerun with --apply --reason TEXT, the gateway "
                      "stopped.", file=out)
                return 1 if plan.problems else 0
            if not args.reason.strip():
                raise JournalError("--apply needs --reason: the repair is journaled with who and why")
            plan, after = repair(args.dir, args.reason, fill_gaps=args.fill_gaps)
            if not plan.needed and not plan.problems:
                print("nothing to repair: the journal reads back whole", file=out)
                return 0
            print_repair(plan, out)
            if plan.problems:
                print("nothing changed.", file=out)
                return 1
            return print_verify(after, out)
        if args.command == "prune":
            kept: list[Path] = []
            for path in prune(args.dir, time.time_ns(), args.retention_days, kept):
                print(f"deleted {path}", file=out)
            for path in kept:
                print(f"kept {path} and every later segment: it holds client certification "
                      f"records younger than {CERT_RETENTION_DAYS} days (20 years)", file=out)
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
    except BrokenPipeError:
        raise  # the reader left (``| head``): the CLI exits quietly, not with an error line
    except (JournalError, OSError) as err:
        print(f"fengkong journal: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
