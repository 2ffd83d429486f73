"""A canonical digest of an engine's ``snapshot()``: equal books give equal digests.

Used to compare a recovered book with an independent replay (possibly by the other engine),
across processes, without shipping the whole book around.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec


def canonical(value: Any) -> Any:
    """Dicts become key-sorted lists of pairs, tuples lists, recursively."""
    if isinstance(value, dict):
        return [[canonical(k), canonical(v)] for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))]
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return int(value)  # IntEnum -> int
    return repr(value)


def digest(snapshot: dict) -> str:
    return hashlib.sha256(msgspec.msgpack.encode(canonical(snapshot))).hexdigest()
