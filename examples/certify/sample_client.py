"""Sample client systems for ``fengkong certify``, on the client library (``simulator.client``).

    python examples/certify/sample_client.py                   # well-behaved: passes every case
    python examples/certify/sample_client.py --fault resend    # resends refused orders blindly
    python examples/certify/sample_client.py --fault no-backoff  # ignores warnings, kills, link loss
    python examples/certify/sample_client.py --fault sloppy-state  # no reconciliation, loses partials

A client system under certification talks the native protocol to the address the suite gives it
and takes the suite's instructions — what its trader or strategy would otherwise decide — as
JSON lines on stdin, answering each with one JSON line on stdout (``{"id": n, ...}``). The
certification interface (README, "Client certification") is these environment variables and
instructions; everything the suite judges, it judges from the messages on the wire.

A well-behaved client, as the industry test guide asks:

- does not resend an order the gateway refused; it reports the refusal to its trader;
- backs off at a threshold warning (``Alert`` 1301 or a 7xx code for its account) and at a
  rate refusal (701/702): the burst stops;
- stops sending new orders while its account is killed (``Alert`` 1304, critical) or the
  exchange link is down (``Alert`` 1307, critical), and resumes when told it is over;
- after a disconnect, reconnects, asks for the status of its orders (``OrderStatusRequest``)
  and rebuilds its book from the answer, never sending its working orders again;
- books partial fills: an order with 2 of 5 lots filled still has 3 working.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from gateway.protocol import Alert, CancelReject, ExecReport
from simulator.client import Client, ClientError

FINAL = {OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED}
T = 5.0


class SampleClient:
    resend_rejected = False  # faulty: resend a refused order once more
    backoff = True  # faulty when False: ignore warnings, kills and link loss
    reconcile = True  # faulty when False: after a reconnect, resend working orders as new
    track_partials = True  # faulty when False: a partial fill finishes the order

    def __init__(self) -> None:
        env = os.environ
        self.host = env["FENGKONG_CERT_HOST"]
        self.port = int(env["FENGKONG_CERT_PORT"])
        self.user = env["FENGKONG_CERT_USER"]
        self.secret = env["FENGKONG_CERT_SECRET"]
        self.accounts = env["FENGKONG_CERT_ACCOUNTS"].split(",")
        self.client: Client | None = None
        self.book: dict[str, dict[str, Any]] = {}  # cl_ord_id -> the order as this client sees it
        self.changed = asyncio.Event()
        self.paused: set[str] = set()  # accounts killed
        self.link_down = False
        self.warned: set[str] = set()  # alert scopes that warned of a threshold
        self.connected = asyncio.Event()
        self.seq = 0

    # -- connection -------------------------------------------------------------------------
    async def connect(self) -> None:
        for _ in range(100):
            try:
                self.client = await Client.connect(
                    self.host, self.port, self.user, self.secret, accounts=self.accounts,
                    cancel_on_disconnect=False, on_report=self.on_report, on_alert=self.on_alert,
                    id_prefix=f"s{os.getpid()}-{self.seq}-")
                self.seq += 1
                break
            except (OSError, ClientError, TimeoutError):
                await asyncio.sleep(0.1)
        else:
            raise SystemExit("cannot reach the gateway")
        asyncio.get_running_loop().create_task(self.watch(self.client))

    async def watch(self, client: Client) -> None:
        """Reconnect when the connection drops, then reconcile (or, faulty, resend)."""
        try:
            await client.wait_closed()
        except ClientError:
            pass
        self.connected.clear()
        await self.connect()
        if self.reconcile:
            status = await self.client.request_status(open_only=True)
            seen = {r.cl_ord_id for r in status}
            for rep in status:
                self.book.setdefault(rep.cl_ord_id, {
                    "cl_ord_id": rep.cl_ord_id, "account": rep.account, "symbol": rep.symbol,
                    "side": rep.side, "price": rep.price, "qty": rep.qty})
                self.book[rep.cl_ord_id].update(status=int(rep.status), cum=rep.cum_qty,
                                                leaves=rep.leaves_qty)
            for o in self.book.values():
                if o["status"] not in FINAL and o["cl_ord_id"] not in seen:
                    o["status"] = int(OrdStatus.CANCELED)  # gone while we were away
        else:
            for clid, o in list(self.book.items()):
                if o["status"] not in FINAL:
                    del self.book[clid]
                    await self.send(o["account"], o["symbol"], o["side"], o["price"], o["qty"])
        self.connected.set()

    # -- what the gateway tells us ------------------------------------------------------------
    def on_report(self, rep: ExecReport | CancelReject) -> None:
        if type(rep) is CancelReject:
            o = self.book.get(rep.orig_cl_ord_id)
            if o is not None and rep.reason == Reason.ORDER_FINISHED:
                o["status"] = int(OrdStatus.CANCELED)
        else:
            o = self.book.get(rep.cl_ord_id)
            if o is not None and rep.exec_type != 6:  # not a STATUS answer
                status = int(rep.status)
                if not self.track_partials and status == OrdStatus.PARTIALLY_FILLED:
                    status = int(OrdStatus.FILLED)
                o.update(status=status, cum=rep.cum_qty,
                         leaves=0 if status in FINAL else rep.leaves_qty)
        self.changed.set()

    def on_alert(self, a: Alert) -> None:
        if a.code == Reason.KILL_SWITCH and a.scope.startswith("account:"):
            account = a.scope.split(":", 1)[1]
            (self.paused.add if a.level >= 3 else self.paused.discard)(account)
        elif a.code == Reason.LINK_STATUS:
            self.link_down = a.level >= 3
        elif a.level >= 2 and (a.code == Reason.THRESHOLD_WARNING or 700 <= a.code < 800):
            self.warned.add(a.scope)
        self.changed.set()

    async def wait(self, done: Any) -> None:
        async def loop() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), T)

    # -- doing what the trader asks ------------------------------------------------------------
    def stopped(self, account: str, symbol: str = "") -> str:
        if not self.backoff:
            return ""
        if account in self.paused:
            return f"paused: the kill switch stops {account}"
        if self.link_down:
            return "paused: the exchange link is down"
        if f"account:{account}" in self.warned or f"account:{account}/{symbol}" in self.warned:
            return "backing off: a threshold warning"
        return ""

    async def send(self, account: str, symbol: str, side: int, price: float, qty: int,
                   offset: int = 1, tif: int = 1) -> dict[str, Any]:
        assert self.client is not None
        h = self.client.send_order_nowait(account=account, symbol=symbol, side=side, qty=qty,
                                          price=price, offset=offset, tif=tif)
        self.book[h.cl_ord_id] = {"cl_ord_id": h.cl_ord_id, "account": account, "symbol": symbol,
                                  "side": side, "price": price, "qty": qty, "offset": offset,
                                  "status": int(OrdStatus.PENDING_NEW), "cum": 0, "leaves": qty}
        first = await h.acked(timeout=T)
        return {"cl_ord_id": h.cl_ord_id, "status": int(first.status), "reason": first.reason}

    async def order(self, i: dict[str, Any]) -> dict[str, Any]:
        why = self.stopped(i["account"], i["symbol"])
        if why:
            return {"sent": False, "why": why}
        args = (i["account"], i["symbol"], i.get("side", Side.BUY), i["price"], i["qty"],
                i.get("offset", 1), i.get("tif", 1))
        out = await self.send(*args)
        if out["status"] == OrdStatus.REJECTED and self.resend_rejected:
            out = await self.send(*args)
        return {"sent": True, **out}

    async def burst(self, i: dict[str, Any]) -> dict[str, Any]:
        sent = 0
        if not self.backoff:  # all at once, whatever the gateway says
            handles = [self.client.send_order_nowait(
                account=i["account"], symbol=i["symbol"], side=Side.BUY, qty=1,
                price=i["price"] - n * i["step"]) for n in range(i["n"])]
            for h in handles:
                await h.acked(timeout=T)
            return {"sent": len(handles)}
        for n in range(i["n"]):
            if self.stopped(i["account"], i["symbol"]):
                break
            out = await self.send(i["account"], i["symbol"], Side.BUY, i["price"] - n * i["step"], 1)
            sent += 1
            if out["reason"] in (Reason.ORDER_RATE, Reason.CANCEL_RATE):
                break
        return {"sent": sent}

    async def cancel_cycle(self, i: dict[str, Any]) -> dict[str, Any]:
        cycles = 0
        for _ in range(i["n"]):
            if self.stopped(i["account"], i["symbol"]):
                break
            out = await self.send(i["account"], i["symbol"], Side.BUY, i["price"], 1)
            cycles += 1
            if out["status"] == OrdStatus.REJECTED:
                if self.backoff:
                    break
                continue
            await self.cancel([out["cl_ord_id"]])
        return {"cycles": cycles}

    async def cancel(self, clids: list[str]) -> None:
        assert self.client is not None
        for clid in clids:
            self.client.cancel_nowait(clid, account=self.book[clid]["account"])
        await self.wait(lambda: all(self.book[c]["status"] in FINAL for c in clids))

    def working(self, symbol: str = "") -> list[str]:
        return [c for c, o in self.book.items()
                if o["status"] not in FINAL and (not symbol or o["symbol"] == symbol)]

    async def handle(self, i: dict[str, Any]) -> dict[str, Any]:
        do = i["do"]
        if do == "order":
            return await self.order(i)
        if do == "burst":
            return await self.burst(i)
        if do == "cancel_cycle":
            return await self.cancel_cycle(i)
        if do == "cancel_instrument":
            clids = self.working(i["symbol"])
            await self.cancel(clids)
            return {"cancelled": clids}
        if do == "cancel_all":
            clids = self.working()
            await self.cancel(clids)
            return {"cancelled": clids}
        if do == "sync":
            await asyncio.wait_for(self.connected.wait(), T * 2)
            return {"connected": True}
        if do == "book":
            return {"orders": list(self.book.values())}
        return {"error": f"unknown instruction {do!r}"}

    async def run(self) -> None:
        await self.connect()
        self.connected.set()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(json.dumps({"ready": True}), flush=True)
        while line := await reader.readline():
            i = json.loads(line)
            try:
                out = await self.handle(i)
            except (TimeoutError, ClientError, KeyError, ValueError) as err:
                out = {"error": f"{type(err).__name__}: {err}"}
            print(json.dumps({"id": i.get("id"), **out}), flush=True)


class Resender(SampleClient):
    resend_rejected = True


class NoBackoff(SampleClient):
    backoff = False


class SloppyState(SampleClient):
    reconcile = False
    track_partials = False


FAULTS = {"": SampleClient, "resend": Resender, "no-backoff": NoBackoff,
          "sloppy-state": SloppyState}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fault", default="", choices=sorted(FAULTS))
    args = p.parse_args()
    asyncio.run(FAULTS[args.fault]().run())


if __name__ == "__main__":
    main()
