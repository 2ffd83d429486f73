"""Per-key FIFO of delayed callbacks, used by the exchange's latency model and fault plan.

asyncio's timer heap does not promise FIFO order for equal deadlines, and two delays of
different lengths would let a later message overtake an earlier one. A ``DelayLine`` keeps one
queue and one timer per key (a seat), and never schedules an item before the one queued ahead of
it, so delayed messages to a seat arrive in the order they were produced.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any


class DelayLine:
    """Per-key FIFO of delayed callbacks, one timer per key: a later item never overtakes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, after: Callable[[], None]) -> None:
        self._loop = loop
        self._after = after  # run once after each batch of due items (the server's flush)
        self._queues: dict[Any, deque[tuple[float, Callable[..., None], tuple]]] = {}
        self._timers: dict[Any, asyncio.TimerHandle] = {}

    def busy(self, key: Any) -> bool:
        return key in self._queues

    def push(self, key: Any, delay_s: float, fn: Callable[..., None], *args: Any) -> None:
        queue = self._queues.get(key)
        due = self._loop.time() + delay_s
        if queue is None:
            queue = self._queues[key] = deque()
            self._timers[key] = self._loop.call_at(due, self._fire, key)
        elif queue[-1][0] > due:
            due = queue[-1][0]  # never before what is already waiting
        queue.append((due, fn, args))

    def _fire(self, key: Any) -> None:
        queue = self._queues[key]
        now = self._loop.time()
        while queue and queue[0][0] <= now:
            _, fn, args = queue.popleft()
            fn(*args)
        if queue:
            self._timers[key] = self._loop.call_at(queue[0][0], self._fire, key)
        else:
            del self._queues[key], self._timers[key]
        self._after()

    def close(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._queues.clear()
        self._timers.clear()
