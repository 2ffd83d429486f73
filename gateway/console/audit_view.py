"""The audit view: operators' actions as the journal holds them, newest first, a page at a time.

Every admin action (kill, reset, status, registration, limits, link reconnect, unlock, and the
engine's own triggers) is a ``journal.AdminAction`` record, written before it took effect. The
console pages through them with ``GET /v1/audit?limit=N&before=SEQ``: the newest ``N`` actions
with a sequence number below ``SEQ`` (no ``before``: the newest), and ``next_before`` to ask for
the page after.

Reading is done with the journal's own checked reader (``JournalReader``: every checksum and
sequence number verified) in a worker thread, so a large segment never stalls the event loop:

* the newest segment is tailed (``follow``): each page first reads what was appended since the
  previous page, so the cost of a page is what is new, not the journal's size;
* older segments are read only when a page reaches back past what has been read, one whole
  segment at a time, oldest last, and what they hold is kept (closed segments never change);
* at most ``MAX_KEPT`` actions are kept; a page beyond them says ``truncated`` (the rest is
  there for ``fengkong journal dump``). Damage the reader meets is reported, never skipped.

Without a journal (tests, the demo) the kill switch's in-memory history stands in
(``source: "memory"``: this process's actions since it started, the newest ``HISTORY_KEPT``).
"""

from __future__ import annotations

import asyncio
import bisect
from pathlib import Path
from typing import Any

from gateway import journal as jr

MAX_KEPT = 50_000
PAGE_MAX = 500


def entry(seq: int | None, rec: jr.AdminAction) -> dict[str, Any]:
    return {"seq": seq, "ts_ns": rec.ts_ns, "operator": rec.operator, "action": rec.action,
            "scope": rec.scope_kind, "key": rec.scope_value, "reason": rec.reason,
            "emergency": rec.emergency, "args": rec.args, "command_id": rec.command_id}


class JournalAudit:
    """Admin actions read from a journal directory, kept in sequence order."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.seqs: list[int] = []
        self.entries: list[dict[str, Any]] = []
        self.low: int | None = None  # first sequence number of the oldest segment read
        self.damage: str = ""
        self._tail: jr.JournalReader | None = None
        self._lock = asyncio.Lock()

    def _catch_up(self) -> None:
        if self._tail is None:
            segments = jr.list_segments(self.directory)
            if not segments:
                return
            self.low = segments[-1][0]
            self._tail = jr.JournalReader(self.directory, self.low, follow=True)
        for seq, rec in self._tail:
            if type(rec) is jr.AdminAction:
                self.seqs.append(seq)
                self.entries.append(entry(seq, rec))
        if self._tail.damage is not None:
            self.damage = str(self._tail.damage)

    def _older(self) -> bool:
        """Read the segment before the oldest one read; False when there is none (or enough)."""
        if self.low is None or len(self.entries) >= MAX_KEPT:
            return False
        earlier = [s for s in jr.list_segments(self.directory) if s[0] < self.low]
        if not earlier:
            return False
        first = earlier[-1][0]
        reader = jr.JournalReader(self.directory, first)
        seqs, found = [], []
        for seq, rec in reader:
            if seq >= self.low:
                break
            if type(rec) is jr.AdminAction:
                seqs.append(seq)
                found.append(entry(seq, rec))
        if reader.damage is not None and reader.damage.seq < self.low:
            self.damage = str(reader.damage)
        self.seqs[:0] = seqs
        self.entries[:0] = found
        self.low = first
        return True

    def _page(self, before: int | None, limit: int) -> dict[str, Any]:
        self._catch_up()
        while True:
            end = len(self.seqs) if before is None else bisect.bisect_left(self.seqs, before)
            if end > limit or not self._older():
                break
        start = max(0, end - limit)
        page = self.entries[start:end][::-1]
        older = [s for s in jr.list_segments(self.directory)
                 if self.low is not None and s[0] < self.low]
        more = start > 0 or bool(older)
        return {"source": "journal", "entries": page,
                "next_before": page[-1]["seq"] if page and more else None,
                "truncated": bool(older) and len(self.entries) >= MAX_KEPT and start == 0,
                "damage": self.damage}

    async def page(self, before: int | None, limit: int) -> dict[str, Any]:
        async with self._lock:  # one reader at a time: the tail reader keeps its place
            return await asyncio.to_thread(self._page, before, limit)


def memory_page(history: list[dict[str, Any]], before: int | None,
                limit: int) -> dict[str, Any]:
    """A page of the kill switch's in-memory history; its cursor is the position in it."""
    end = len(history) if before is None else max(0, min(before, len(history)))
    start = max(0, end - limit)
    page = []
    for n in range(end - 1, start - 1, -1):
        h = history[n]
        args = {k: v for k, v in h.items() if k not in
                ("ts_ns", "operator", "action", "scope", "key", "reason", "emergency")}
        page.append({"seq": None, "cursor": n, "ts_ns": h["ts_ns"], "operator": h["operator"],
                     "action": h["action"], "scope": h["scope"], "key": h["key"],
                     "reason": h["reason"], "emergency": h["emergency"], "args": args,
                     "command_id": ""})
    return {"source": "memory", "entries": page, "next_before": start if start > 0 else None,
            "truncated": False, "damage": ""}
