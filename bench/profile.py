"""Where the gateway spends its time under load: py-spy (or cProfile) output, summarised.

``summarize_pyspy`` reads py-spy's ``--format raw`` output (one line per distinct stack,
``frame;frame;...;frame COUNT``, root first, each frame ``function (file:line)``) and returns
shares of the busy samples:

- ``self`` (by function *and line*) and ``self_functions``: the innermost Python frame of each
  sample; line numbers from py-spy on Python 3.11 can be off by a statement. Time spent in a
  C extension (the Cython engine, msgspec, uvloop's transport calls) has no Python frame of
  its own, so it lands on the line that called it — ``new_order (gateway/router.py:NNN)`` is
  the ``engine.decide`` call, for instance;
- ``inclusive``: every function on the stack, counted once per sample;
- ``areas``: the same samples grouped by what the code is for (codec, risk engine call,
  routing, journal, logging, event loop, ...), by the file of the innermost project frame.

``summarize_cprofile`` gives the same ``self`` and ``inclusive`` views from a cProfile dump
(tottime and cumtime), for machines without py-spy; cProfile's own overhead inflates
call-heavy code, which the report says.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# The innermost frame's file decides the area of a sample (first match wins).
AREAS: tuple[tuple[str, str], ...] = (
    ("gateway/protocol.py", "wire codec (decode/encode frames)"),
    ("gateway/framed.py", "framed connection (buffers, writes)"),
    ("gateway/journal.py", "journal"),
    ("gateway/audit.py", "journal"),
    ("gateway/router.py", "router (incl. engine calls)"),
    ("gateway/session.py", "client session"),
    ("gateway/exchange_link.py", "exchange link"),
    ("gateway/lifecycle.py", "order lifecycle"),
    ("gateway/killswitch.py", "kill switch"),
    ("structlog", "logging"),
    ("logging", "logging"),
    ("checks/", "reference engine (Python)"),
    ("cext/", "risk engine (Cython)"),
    ("msgspec", "wire codec (decode/encode frames)"),
    ("asyncio", "event loop"),
    ("uvloop", "event loop"),
)


def _parse(frame: str) -> tuple[str, str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), "", ""
    return m.group("func"), m.group("file"), m.group("line") or ""


def _area(stack: list[tuple[str, str, str]]) -> str:
    for _func, file, _ in reversed(stack):
        for needle, area in AREAS:
            if needle in file:
                return area
    return "other"


def _top(counter: Counter[str], total: int, n: int) -> list[dict[str, Any]]:
    return [{"where": k, "share": round(100 * v / total, 1), "samples": v}
            for k, v in counter.most_common(n)]


def summarize_pyspy(raw: str, top: int = 20) -> dict[str, Any]:
    selfc: Counter[str] = Counter()
    selff: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = [_parse(f) for f in stack_text.split(";") if f]
        if not stack:
            continue
        # Threads other than the event loop's (scrypt at logon, the default executor) are not
        # the hot path; a sample whose stack never enters the loop is left out.
        if not any("run" in func and ("uvloop" in file or "asyncio" in file)
                   for func, file, _ in stack):
            continue
        total += count
        func, file, ln = stack[-1]
        selfc[f"{func} ({file}:{ln})"] += count
        selff[f"{func} ({file})"] += count
        for f in {f"{func} ({file})" for func, file, _ in stack}:
            incl[f] += count
        areas[_area(stack)] += count
    if not total:
        return {"samples": 0, "self": [], "self_functions": [], "inclusive": [], "areas": []}
    return {"samples": total, "self": _top(selfc, total, top),
            "self_functions": _top(selff, total, top), "inclusive": _top(incl, total, top),
            "areas": _top(areas, total, len(areas))}


def summarize_cprofile(path: Path, top: int = 20) -> dict[str, Any]:
    import pstats

    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": [], "areas": []}
    st = pstats.Stats(str(path))
    stats = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for (file, line, func), (_cc, _nc, tt, ct, _callers) in stats.items():
        name = f"{func} ({_short(file)}:{line})"
        selfc[name] = int(tt * 1e6)
        incl[name] = int(ct * 1e6)
    scale = int(total * 1e6)
    return {"samples": scale, "self": _top(selfc, scale, top), "inclusive": _top(incl, scale, top),
            "areas": []}


def _short(file: str) -> str:
    for marker in ("/gateway/", "/checks/", "/cext/", "/site-packages/", "/asyncio/"):
        if marker in file:
            return marker.strip("/") + "/" + file.split(marker, 1)[1]
    return file
