"""``OrderHandle``: the client library's view of one order (see ``simulator.client``).

A handle is created by ``Client.send_order`` (or adopted from an order-status answer) and
updated by the client for every report of its order; it wakes the coroutines waiting on it.
The client forgets a handle as soon as its order finishes; the caller's reference keeps the
final state.

Fills are keyed by the exchange's execution id: ``executions`` maps each ``exec_id`` the order
traded under to its TRADE report, in the order they came. A TRADE report whose ``exec_id`` the
handle already holds (a trade query sends every execution again) changes nothing, so ``fills``
and ``cum_qty`` count each execution once.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from checks.enums import FINISHED_STATUSES, ExecType, OrdStatus
from gateway.protocol import CancelReject, ExecReport, NewOrder

if TYPE_CHECKING:
    from simulator.client import Client

FINISHED_INTS = frozenset(int(s) for s in FINISHED_STATUSES)
_FINISHED = FINISHED_INTS
_X_TRADE = int(ExecType.TRADE)


class OrderHandle:
    """The client's view of one order; updated by every report for it."""

    __slots__ = ("client", "order", "order_id", "status", "cum_qty", "leaves_qty", "last",
                 "fills", "executions", "cancel_reject", "sent_ns", "first_report_ns", "_waiters")

    def __init__(self, client: Client, order: NewOrder, sent_ns: int) -> None:
        self.client = client
        self.order = order
        self.order_id = ""
        self.status = int(OrdStatus.PENDING_NEW)
        self.cum_qty = 0
        self.leaves_qty = int(order.qty)
        self.last: ExecReport | None = None
        self.fills = 0
        self.executions: dict[str, ExecReport] = {}  # exec_id -> its TRADE report
        self.cancel_reject: CancelReject | None = None
        self.sent_ns = sent_ns
        self.first_report_ns = 0
        self._waiters: list[tuple[frozenset[int] | None, asyncio.Future[ExecReport]]] = []

    @property
    def cl_ord_id(self) -> str:
        return self.order.cl_ord_id

    @property
    def done(self) -> bool:
        """Filled, cancelled or rejected: no further report will change it."""
        return self.status in _FINISHED

    @property
    def exec_ids(self) -> list[str]:
        """The execution ids of the order's fills, in the order they were received."""
        return list(self.executions)

    @property
    def reason(self) -> int:
        """Reject reason code of the last report (0 unless rejected)."""
        return self.last.reason if self.last is not None else 0

    @property
    def latency_ns(self) -> int | None:
        """Send to first report (ack or reject), as the client saw it."""
        return self.first_report_ns - self.sent_ns if self.first_report_ns else None

    async def acked(self, timeout: float | None = None) -> ExecReport:
        """The first report for the order (NEW, REJECTED, or whatever came first)."""
        if self.last is not None:
            return self.last
        return await self._wait(None, timeout)

    async def wait_status(self, *statuses: OrdStatus | int, timeout: float | None = None) -> ExecReport:
        """Wait until the order's status is one of ``statuses`` — or it finishes otherwise.

        Returns the report that got it there; check ``.status`` when a finish other than the
        one you waited for matters (e.g. REJECTED while waiting for FILLED). Raises
        ``TimeoutError`` after ``timeout`` seconds and ``ConnectionClosed`` if the session ends.
        """
        wanted = frozenset(int(s) for s in statuses)
        if self.last is not None and (self.status in wanted or self.done):
            return self.last
        return await self._wait(wanted, timeout)

    async def wait_done(self, timeout: float | None = None) -> ExecReport:
        return await self.wait_status(*_FINISHED, timeout=timeout)

    async def cancel(self) -> str:
        return await self.client.cancel(self.cl_ord_id, account=self.order.account)

    async def _wait(self, wanted: frozenset[int] | None, timeout: float | None) -> ExecReport:
        if self.client.closed:
            raise self.client._closed_error()
        fut: asyncio.Future[ExecReport] = asyncio.get_running_loop().create_future()
        entry = (wanted, fut)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _update(self, rep: ExecReport) -> None:
        if rep.exec_type == _X_TRADE:
            xid = rep.exec_id
            if xid:
                if xid in self.executions:
                    return  # an execution said again (trade query): already counted
                self.executions[xid] = rep
            self.fills += 1
            if rep.cum_qty < self.cum_qty:
                return  # a missed earlier fill learnt late: counted, but state never goes back
        if not self.first_report_ns:
            self.first_report_ns = time.perf_counter_ns()
        self.last = rep
        self.status = rep.status
        if rep.order_id:
            self.order_id = rep.order_id
        self.cum_qty = rep.cum_qty
        self.leaves_qty = rep.leaves_qty
        if self._waiters:
            done = rep.status in _FINISHED
            keep = []
            for wanted, fut in self._waiters:
                if fut.done():
                    continue
                if wanted is None or done or rep.status in wanted:
                    fut.set_result(rep)
                else:
                    keep.append((wanted, fut))
            self._waiters = keep

    def _fail(self, err: Exception) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(err)
        self._waiters = []

    def __repr__(self) -> str:
        return (f"OrderHandle({self.cl_ord_id!r} {OrdStatus(self.status).name} "
                f"{self.cum_qty}/{self.order.qty})")
