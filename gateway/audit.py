"""Write-ahead batching between the router and the journal, and what happens when the disk fails.

The router appends a record per message it receives (a client's order, the exchange's reports;
a refused order's decision too). One ``os.write`` each would cost more than the risk checks, so
records collect in a batch and go to the journal with one ``append_many`` (one write, one fsync
under the ``record`` policy: group commit).

Write-ahead still holds: nothing the gateway sends is visible before its records are written,
because every connection (``gateway.framed``) calls ``flush`` as its ``before_write`` hook
ahead of each ``transport.write``; a batch is also flushed at the end of the loop turn that filled it.

When the journal cannot be written
----------------------------------
A write, rotation or fsync that fails (ENOSPC, EIO, a read-only remount) raises
``JournalIOError``. The journal has already cut any partial record, so it stays whole and its
sequence numbers gap-free. Here:

* nothing is lost: the records not written stay in the batch, in order, and every record made
  while the disk is failing joins them;
* the gateway fails closed: ``on_failure`` (the gateway passes one in) halts new orders with
  JOURNAL_UNAVAILABLE (1208) and raises a CRITICAL alert. The halt is checked before the risk
  engine, so from the first message after the failure no new order is accepted;
* ``flush`` never raises into the socket layer, and stops trying to write: a timer task retries
  the held batch (50 ms, doubling to 2 s). When a write succeeds, the held records are on disk
  with the next sequence numbers, in the order they were made, ``on_recovery`` lifts the halt
  and says so; a failed fsync is retried the same way (on Linux a retried fsync can report
  success for pages an earlier failure dropped, so the recovery alert says which records that
  concerns).

Which outputs leave while the journal is failing: all that are queued, because what is left to
send is risk-reducing or a statement of fact, and holding it is the greater risk:

* to the exchange: cancels (client cancels, kill switch, cancel-on-disconnect — being unable
  to cancel is worse than an unjournaled cancel), status requests for reconciliation;
* to clients: rejects (1208, so a client knows at once why), cancel rejects, reports of what
  the exchange did (fills, cancels: they happened whatever we write), alerts, heartbeats.

No new order reaches the exchange after the failure is known. The one exception is the loop
turn in which the write fails: a failure is only known by trying, so the orders the engine
accepted in that turn (the write was carrying their records) are already queued on the exchange
link, in the same buffer as any cancels. ``on_failure`` is told the orders that were in the
batch, as (session, cl_ord_id) of their ``Inbound`` records; the gateway finds those it accepted
and cancels them at once: the cancels leave in the same write, right behind the orders, so
none of them is left working on the exchange without a journal record. (Holding them back
instead would need the router to reject them to their clients; it is the better end state and
needs a hook in the router and the exchange link.)

With no event loop (offline tools) there is no retry: ``flush`` raises the ``JournalIOError``
after keeping the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

from gateway.journal import Inbound, Journal, JournalError, JournalIOError, JournalRecord, frame
from gateway.protocol import NewOrder

log = structlog.get_logger("fengkong.audit")

# A batch holds records, or records already encoded (``bytes``: what the compiled order path
# journals); the rare path that must look inside one decodes it.
_record_decoder = msgspec.msgpack.Decoder(JournalRecord)

RETRY_MIN_S = 0.05
RETRY_MAX_S = 2.0


class AuditLog:
    def __init__(self, journal: Journal,
                 on_failure: Callable[[JournalIOError, list[tuple[int, str]]], None] | None = None,
                 on_recovery: Callable[[str], None] | None = None) -> None:
        self.journal = journal
        # Told once when records start being held (the gateway halts new orders, alerts, and
        # cancels the new orders whose records were in the failed write: (session, cl_ord_id)),
        # and once when they are all written again.
        self.on_failure = on_failure
        self.on_recovery = on_recovery
        self.failure: JournalIOError | None = None  # why records are held (None: written as they come)
        self.failed_at = 0.0  # monotonic time of the failure
        self.failures = 0  # failed writes and fsyncs, ever (for /metrics)
        self.retry_min_s = RETRY_MIN_S
        self.retry_max_s = RETRY_MAX_S
        self._batch: list[Any] = []
        # The same list, for a writer that appends to it directly and then calls ``appended``
        # once (the compiled order path: a read's records, already encoded, one call a read).
        self.records = self._batch
        self._scheduled = False
        self._retry_task: asyncio.Task[None] | None = None
        self._closed = False
        self._first_held = 0  # journal sequence number the first held record will get
        journal.on_sync_failure = self._sync_failed

    @property
    def pending(self) -> int:
        """Records made but not yet written to the journal."""
        return len(self._batch)

    def append(self, record: Any) -> None:
        if self._closed:
            log.error("audit record after the journal was closed: not journaled",
                      record=type(record).__name__)
            return
        self._batch.append(record)
        if not self._scheduled:
            self._schedule()

    def appended(self) -> None:
        """Records were appended to ``records`` directly: ``append``'s bookkeeping, once."""
        if self._closed:
            if self._batch:
                log.error("audit records after the journal was closed: not journaled",
                          count=len(self._batch))
                self._batch.clear()
            return
        if not self._scheduled:
            self._schedule()

    def appended_now(self) -> None:
        """``appended``, for a read that is over and whose frames leave next: the records are
        written now (write-ahead), not at the end of the loop turn."""
        if self._closed:
            self.appended()
            return
        self.flush()

    def _schedule(self) -> None:
        """Write the batch at the end of this loop turn."""
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:  # no loop (offline tools): write through
            self.flush()

    def flush(self) -> None:
        """Write the batch now (write-ahead). Never raises on a failing disk while a loop runs:
        the records are held and retried (see the module docstring)."""
        self._scheduled = False
        if self.failure is None and self._batch:
            self._write()

    def _write(self) -> bool:
        """Write what is held; True when the journal took all of it."""
        err = self._try_write()
        if err is not None:
            self._failed(err)
            return False
        return True

    def _try_write(self) -> JournalIOError | None:
        j = self.journal
        try:
            if j.sync_failed is not None:
                j.flush()  # written but not known to be on disk: that first
            while self._batch:
                start = j.next_seq
                try:
                    j.append_many(self._batch)
                except (TypeError, ValueError) as err:
                    # A record that can never be journaled (a bug, not the disk): write what
                    # came before it, say which, drop it, go on with the rest.
                    del self._batch[: j.next_seq - start]
                    self._drop_unjournalable(err)
                    continue
                except JournalIOError:
                    del self._batch[: j.next_seq - start]  # a prefix may have been written
                    raise
                self._batch.clear()
        except JournalIOError as err:
            return err
        except JournalError as err:  # closed underneath us: nothing more can be written
            log.error("audit records not journaled", error=str(err), count=len(self._batch))
            self._batch.clear()
        return None

    def _drop_unjournalable(self, err: Exception) -> None:
        for i, record in enumerate(self._batch):
            try:
                frame(record, 0)
            except (TypeError, ValueError) as bad:
                del self._batch[i]
                log.error("audit record cannot be journaled: dropped", record=type(record).__name__,
                          error=str(bad))
                return
        log.error("audit batch refused, no record at fault found", error=str(err))
        self._batch.clear()

    def _failed(self, err: JournalIOError) -> None:
        first = self.failure is None
        self.failure = err
        self.failures += 1  # ever, for /metrics
        if not first:
            log.debug("journal still failing", error=str(err), held=len(self._batch))
            return
        self.failed_at = time.monotonic()
        self._first_held = self.journal.next_seq
        log.critical("journal.write_failed", op=err.op, segment=str(err.path), seq=err.seq,
                     error=err.strerror, held=len(self._batch))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise err from None  # offline: the caller decides; the batch is kept
        self._retry_task = loop.create_task(self._retry(), name="journal-retry")
        if self.on_failure is not None:
            held = (_record_decoder.decode(r) if type(r) is bytes else r for r in self._batch)
            self.on_failure(err, [(r.session, r.msg.cl_ord_id) for r in held
                                  if type(r) is Inbound and type(r.msg) is NewOrder])

    def _sync_failed(self, err: JournalIOError) -> None:
        """The background flusher's fsync failed: hold new records and retry it."""
        if not self._closed:
            self._failed(err)

    async def _retry(self) -> None:
        delay = self.retry_min_s
        while self.failure is not None and not self._closed:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)
            held = len(self._batch)
            failure = self.failure
            if self._write():
                self._recovered(failure, held)

    def _recovered(self, failure: JournalIOError | None, held: int) -> None:
        self.failure = None
        self._retry_task = None
        seconds = time.monotonic() - self.failed_at
        last = self.journal.last_seq
        if held:
            what = f"{held} held record(s) written as {last - held + 1}..{last}"
        else:
            what = "no records were waiting"
        if failure is not None and failure.op == "fsync":
            what += (f"; records up to {failure.seq} were written before an fsync failed and are "
                     "in the OS but may not have reached the disk (a power loss could lose them)")
        text = f"audit journal writable again after {seconds:.1f} s ({failure}): {what}"
        log.warning("journal.recovered", seconds=round(seconds, 3), held=held,
                    first_seq=self._first_held, last_seq=last)
        if self.on_recovery is not None:
            self.on_recovery(text)
        # Records made by on_recovery (the alert) are written in the ordinary way.

    def close(self) -> None:
        """Write what is held (one last try), then close the journal."""
        if self._retry_task is not None:
            self._retry_task.cancel()
            self._retry_task = None
        self._closed = True
        if self._batch:
            err = self._try_write()
            if err is not None:
                log.critical("journal.records_lost_at_shutdown", held=len(self._batch),
                             first_seq=self.journal.next_seq, error=str(err),
                             detail="the journal could not be written before shutdown")
        self.journal.close()
