"""Certification records: a hash chain, anchored in the journal, kept at least twenty years.

Theory of operation
-------------------
A certification run (``gateway.compliance.certify``) produces records: one for the run (who,
what, when), one per case (condition, expected reaction, result, evidence: the messages
exchanged) and a summary. They are written as JSON lines, each::

    {"seq": n, "prev": "<hash of record n-1>", "hash": "<sha256>", "body": {...}}

``hash`` is the SHA-256 of ``prev`` and of the canonical JSON of ``{"seq", "body"}`` (keys
sorted, no spaces), so each record carries the hash of the one before it: changing one byte of a
record changes its hash (or breaks its JSON), removing a record breaks the ``prev`` link or the
numbering of the next one, and reordering does both. The first record's ``prev`` is
``GENESIS`` (64 zeros).

Removing the *last* records leaves a shorter chain that is still consistent, so the head is
anchored outside the file: the run appends to the gateway's journal one
``State(kind="cert_record")`` per record (the same line) and then an
``AdminAction(action="certify_anchor")`` whose ``args`` hold the run id, the head hash and the
number of records. The journal's own checksums and gap-free numbering protect those.
``verify(path, journal)`` checks the chain and, given the journal, that the chain ends where the
anchor says.

Retention (programmatic-trading rules art. 16-17): test records are kept at least twenty years.
``gateway.journal.prune`` refuses to delete a segment that holds a certification record or anchor
younger than ``CERT_RETENTION_DAYS``; a certification journal is a journal of its own (the suite
runs its gateway on it), so the rule never holds back the pruning of a trading journal.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from gateway import journal as jr

GENESIS = "0" * 64
RECORD_KIND = jr.CERT_RECORD_KIND
ANCHOR_ACTION = jr.CERT_ANCHOR_ACTION
_canonical = msgspec.json.Encoder(order="sorted").encode


def record_hash(prev: str, seq: int, body: dict[str, Any]) -> str:
    return hashlib.sha256(prev.encode() + b"\n" + _canonical({"seq": seq, "body": body})).hexdigest()


def chain(bodies: Iterable[dict[str, Any]]) -> list[bytes]:
    """The JSON lines of ``bodies`` chained in order (each ends with a newline)."""
    lines, prev = [], GENESIS
    for seq, body in enumerate(bodies):
        h = record_hash(prev, seq, body)
        lines.append(_canonical({"seq": seq, "prev": prev, "hash": h, "body": body}) + b"\n")
        prev = h
    return lines


def head_of(lines: list[bytes]) -> str:
    return json.loads(lines[-1])["hash"] if lines else GENESIS


def anchor(journal_dir: str | Path, run_id: str, lines: list[bytes], file_name: str,
           now_ns: int | None = None) -> int:
    """Append the records and their anchor to the (stopped) gateway's journal; returns the
    anchor's sequence number."""
    now = time.time_ns() if now_ns is None else now_ns
    with jr.Journal.open(journal_dir) as j:
        j.append_many([jr.State(now, RECORD_KIND, line) for line in lines])
        seq = j.append(jr.AdminAction(now, "certify", ANCHOR_ACTION, "firm", "",
                                      {"run": run_id, "head": head_of(lines),
                                       "records": len(lines), "file": file_name},
                                      "head of the certification record chain"))
    return seq


@dataclass
class Verdict:
    ok: bool
    records: int = 0
    run: str = ""
    head: str = ""
    anchored: bool = False
    problems: list[str] = field(default_factory=list)


def verify(path: str | Path, journal_dir: str | Path | None = None) -> Verdict:
    """Check a record file's chain and, with ``journal_dir``, its anchor."""
    v = Verdict(ok=False)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        v.problems.append(f"cannot read {path}: {err.strerror}")
        return v
    prev = GENESIS
    for n, line in enumerate(raw.splitlines()):
        where = f"line {n + 1}"
        try:
            rec = json.loads(line)
            seq, rprev, rhash, body = rec["seq"], rec["prev"], rec["hash"], rec["body"]
        except (ValueError, KeyError, TypeError) as err:
            v.problems.append(f"{where}: not a certification record ({err})")
            break
        if not (type(seq) is int and isinstance(rprev, str) and isinstance(rhash, str)
                and isinstance(body, dict)):
            v.problems.append(f"{where}: not a certification record (seq, prev, hash or body "
                              "of the wrong type)")
            break
        if seq != n:
            v.problems.append(f"{where}: record {seq} where record {n} belongs "
                              "(a record was removed, added or moved)")
        if rprev != prev:
            v.problems.append(f"{where}: its previous-record hash does not match record "
                              f"{n - 1}'s (a record before it was removed, changed or moved)")
        if record_hash(rprev, seq, body) != rhash:
            v.problems.append(f"{where}: its content does not match its hash (changed)")
        if n == 0:
            v.run = str(body.get("run", ""))
        prev = rhash
        v.records += 1
        if v.problems:
            break
    v.head = prev
    if not v.problems and v.records == 0:
        v.problems.append(f"{path} holds no records")
    if journal_dir is not None and not v.problems:
        found = find_anchor(journal_dir, v.run)
        if found is None:
            v.problems.append(f"no anchor for run {v.run!r} in the journal {journal_dir}")
        else:
            head, count = found
            if (head, count) != (v.head, v.records):
                v.problems.append(f"the journal anchors {count} records ending in {head[:16]}…; "
                                  f"the file holds {v.records} ending in {v.head[:16]}… "
                                  "(records were removed or added at the end)")
            else:
                v.anchored = True
    v.ok = not v.problems
    return v


def find_anchor(journal_dir: str | Path, run_id: str) -> tuple[str, int] | None:
    """The (head hash, record count) the journal anchors for ``run_id`` (the newest)."""
    if not Path(journal_dir).is_dir():
        raise jr.JournalError(f"journal {journal_dir} is not a directory")
    found = None
    reader = jr.JournalReader(journal_dir)
    for _, rec in reader:
        if type(rec) is jr.AdminAction and rec.action == ANCHOR_ACTION \
                and rec.args.get("run") == run_id:
            found = (str(rec.args.get("head", "")), int(rec.args.get("records", -1)))
    if reader.damage is not None:
        raise jr.JournalError(f"the journal is damaged: {reader.damage}")
    return found
