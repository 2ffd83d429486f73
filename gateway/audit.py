"""Write-ahead batching between the router and the journal.

The router appends a handful of records per order (inbound, decision, outbound, exchange
event). One ``os.write`` each would cost more than the risk checks, so records collect in a
batch and go to the journal with one ``append_many`` (one write, one fsync under the
``record`` policy: group commit).

Write-ahead still holds: nothing the gateway sends is visible before its records are written,
because every connection (``gateway.framed``) calls ``flush`` as its ``before_write`` hook
ahead of each ``transport.write``; a batch is also flushed at the end of the loop turn that filled it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.journal import Journal


class AuditLog:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._batch: list[Any] = []
        self._scheduled = False

    def append(self, record: Any) -> None:
        self._batch.append(record)
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (offline tools): write through
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if self._batch:
            batch, self._batch = self._batch, []
            self.journal.append_many(batch)

    def close(self) -> None:
        self.flush()
        self.journal.close()
