"""A day's memory of string ids that never stops the loop to grow.

The router remembers a trading day's ids in large tables: the cl_ord_ids each user used (up to
``MAX_CLIDS_PER_USER_DAY``), the executions applied (``EXEC_ID_MEMORY``), the finished orders
(``FINISHED_MEMORY``). In one Python dict or set such a table rebuilds itself whenever it
outgrows its slots, and, once it forgets its oldest keys as fast as it learns new ones, every few
hundred thousand inserts to clear the deleted slots. A rebuild walks every key at once: 35 ms at
350,000 keys, over 100 ms at 700,000 on the 2-core VM — a colocation gateway frozen for that
long in the middle of a trading day, with every order behind it waiting.

``IdMemory`` keeps the keys in many small dicts (shards, chosen by the key's hash, which a str
caches), so a rebuild walks one shard: ``limit / SHARDS`` keys at most. A small memory (most
users' cl_ord_ids) starts as one dict and is split into ``SHARDS`` shards once when it passes
``SPLIT_AT`` keys, which costs one walk of ``SPLIT_AT`` keys, once.

With a ``limit`` it forgets its oldest key past that many (the order they came in is kept in a
deque, which grows by fixed blocks and never rebuilds); without one it only grows (the caller
refuses ids past its own cap before remembering them).

The reference router (``gateway.router.Router``) uses this class; the compiled order path uses
its twin ``gateway.idtable.IdTable`` (the same behaviour and shards, in open-addressing tables
that keep each key's hash inline; held equal to this class by ``tests/gateway/test_idmemory.py``).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

SHARDS = 256  # at most 256 (see SHIFT): a 1,000,000-key memory rebuilds ~4,000 keys at a time
SPLIT_AT = 4_096  # a memory this small rebuilds in well under a millisecond: one dict until then
# A key's shard is chosen by the top 8 bits of its hash: a dict places keys by the low bits, and
# a shard whose keys all shared their low bits would pile them onto the same few slots.
SHIFT = sys.hash_info.width - 8


class IdMemory:
    """Ids (str) with a value each (None for a plain set), in shards; the oldest forgotten past
    ``limit`` if one is given."""

    __slots__ = ("limit", "mask", "order", "shards", "size")

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.shards: list[dict[str, Any]] = [{}]
        self.mask = 0
        self.size = 0
        # Arrival order, for forgetting the oldest: only kept when there is a limit.
        self.order: deque[str] | None = deque() if limit is not None else None

    def __len__(self) -> int:
        return self.size

    def __contains__(self, key: str) -> bool:
        return key in self.shards[hash(key) >> SHIFT & self.mask]

    has = __contains__

    def get(self, key: str, default: Any = None) -> Any:
        return self.shards[hash(key) >> SHIFT & self.mask].get(key, default)

    def put(self, key: str, value: Any = None) -> None:
        """Remember ``key`` (a known key takes the new value and keeps its age); past the
        limit the oldest key is forgotten."""
        shard = self.shards[hash(key) >> SHIFT & self.mask]
        if key in shard:
            shard[key] = value
            return
        shard[key] = value
        self.size += 1
        order = self.order
        if order is not None:
            order.append(key)
            if self.size > self.limit:  # type: ignore[operator]
                oldest = order.popleft()
                del self.shards[hash(oldest) >> SHIFT & self.mask][oldest]
                self.size -= 1
        if self.mask == 0 and self.size > SPLIT_AT:
            self.split()

    def split(self) -> None:
        """From one dict to ``SHARDS``: called once, when the memory passes ``SPLIT_AT``."""
        mask = SHARDS - 1
        shards: list[dict[str, Any]] = [{} for _ in range(SHARDS)]
        for key, value in self.shards[0].items():
            shards[hash(key) >> SHIFT & mask][key] = value
        self.shards, self.mask = shards, mask

    def clear(self) -> None:
        self.shards, self.mask, self.size = [{}], 0, 0
        if self.order is not None:
            self.order.clear()

    def __iter__(self) -> Iterator[str]:
        """The keys, oldest first when there is a limit (in no set order otherwise)."""
        if self.order is not None:
            return iter(self.order)
        return (key for shard in self.shards for key in shard)

    def values(self) -> Iterator[Any]:
        return (self.get(key) for key in self) if self.order is not None else \
            (value for shard in self.shards for value in shard.values())

    def __repr__(self) -> str:
        return f"IdMemory({self.size} ids, limit {self.limit}, {len(self.shards)} shard(s))"
