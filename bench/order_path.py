"""The gateway's own per-order work, without sockets: a read of orders in, the exchange's reads of
acks and fills back, through router + engine + journal, in one process.

The end-to-end harness (``fengkong bench``) measures what a client sees, sockets and all, on a
machine shared with the load generator and the simulator; it takes minutes and is noisy. This
drives the same code a live gateway runs between the socket read and the socket write: a
client's read of ``--batch`` NewOrder frames, then the exchange's read of their acks and one of
their fills, each handed over as bytes as ``FramedProtocol.data_received`` gets them (the
compiled router's ``client_data`` / ``exchange_data``; the reference router behind the same
``FrameDecoder`` loop), with the bench configuration's 256 accounts and 8 contracts and the
journal on a real directory (one write per read). The frames the gateway sends are encoded
into the connections' buffers and dropped there; what it leaves out are the socket calls.

Run: ``.venv/bin/python -m bench.order_path [--orders N] [--batch B] [--journal DIR|off]
[--engine cython|reference] [--router fast|reference|both] [--rounds R] [--profile]``; it prints
CPU µs per order (order + ack + fill) and the longest wall time one batch took (a stall: a
table rebuilt at once, a collection). ``--router both`` measures the compiled order path and
the reference alternately in one process, ``--rounds`` times each, and gives each one's best
round and their ratio: on a shared machine the ratio of one run is the figure to trust.
``bench/test_bench_order_path.py`` runs the same loop under pytest-benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench import benchconfig as bc
from bench.loadgen import InstrumentSpec, build_flow
from checks.enums import ExecType, Hedge, OrdStatus, OrdType, Tif
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.fast_router import router_class
from gateway.protocol import (
    DEFAULT_MAX_FRAME,
    ExecReport,
    FrameDecoder,
    Logon,
    NewOrder,
    encode,
)
from gateway.server import Gateway
from gateway.session import State

SESSION_ID = 1


class Connection:
    """A connection's ends as the router sees them (``gateway.framed.FramedProtocol``'s
    attributes), with no socket: what is queued to it is counted and dropped."""

    def __init__(self) -> None:
        self.state = State.ACTIVE
        self.closed = False
        self.decoder = FrameDecoder()
        self._out = self.frame_buffer = bytearray()
        self._max_frame = DEFAULT_MAX_FRAME
        self.messages_in = 0
        self.last_in = 0
        self.frames = 0

    def send(self, msg: Any) -> None:
        self.frames += 1

    def queued(self, start: int) -> None:
        self.frames += 1
        del self._out[start:]

    read_done = queued

    def on_message(self, msg: Any) -> None:
        raise SystemExit(f"bench flow: unexpected {type(msg).__name__}")

    def on_protocol_error(self, text: str) -> None:
        raise SystemExit(f"bench flow: {text}")

    def on_internal_error(self, msg: Any, exc: Exception) -> None:
        raise exc


class BenchSession(Connection):
    def __init__(self, accounts: frozenset[str]) -> None:
        super().__init__()
        self.session_id = SESSION_ID
        self.user = bc.USER
        self.accounts = accounts
        self.cancel_on_disconnect = False
        self.automated = True


class BenchLink(Connection):
    """The exchange link, up; its connection is itself."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True
        self.proto = self

    def send(self, msg: Any) -> bool:
        self.frames += 1
        return True


class OrderPath:
    """A gateway in-process with one session, ready to take orders."""

    def __init__(self, journal: Path | None, engine: str = "cython", router: str = "fast",
                 fsync: str = "") -> None:
        cfg = load_gateway_config(bc.GATEWAY_TOML)
        jcfg = msgspec.structs.replace(cfg.journal, dir=str(journal) if journal else "")
        if fsync:
            jcfg = msgspec.structs.replace(jcfg, fsync=fsync)
        cfg = msgspec.structs.replace(cfg, journal=jcfg)
        engine_cls = None
        if engine == "reference":
            from checks.engine import Engine as engine_cls  # noqa: N813
        self.gw = Gateway(cfg, engine_cls=engine_cls, router_cls=router_class(router))
        self.router = r = self.gw.router
        r.link = self.link = BenchLink()
        universe = bc.load_bench_universe()
        user = cfg.users[bc.USER]
        self.session = BenchSession(frozenset(user.accounts))
        now = time.time_ns()
        r.record(jr.Inbound(now, SESSION_ID, Logon(bc.USER, "***", list(user.accounts), 5.0,
                                                   False)))
        self.gw.engine.register_session(SESSION_ID, True)
        r.add_session(self.session)
        specs = [InstrumentSpec(i.symbol, i.tick, i.reference) for i in universe.instruments]
        self.flow = build_flow(list(universe.accounts), specs)
        self.pos = 0
        self.seq = 0
        self.exch_seq = 0
        # How a read reaches the router: the compiled one takes the bytes; the reference
        # takes what the connection's FrameDecoder makes of them, message by message.
        self.compiled = hasattr(r, "client_data")

    def orders(self, n: int) -> list[NewOrder]:
        out = []
        flow, size = self.flow, len(self.flow)
        for _ in range(n):
            account, symbol, side, offset, price, qty = flow[self.pos]
            self.pos = self.pos + 1 if self.pos + 1 < size else 0
            self.seq += 1
            out.append(NewOrder(f"c{self.seq:x}", account, symbol, side, offset, Hedge.SPEC,
                                OrdType.LIMIT, Tif.GFD, price, qty))
        return out

    def reads(self, n: int) -> tuple[bytes, bytes, bytes]:
        """The three reads of one batch: ``n`` orders from the client, then their acks, then
        their fills from the exchange (every order of the bench flow is accepted, so the
        gateway's ids for them are the next ``n``)."""
        orders = self.orders(n)
        acks, fills = [], []
        for i, o in enumerate(orders):
            self.exch_seq += 1
            exch_id = self.router.prefix + format(self.exch_seq, "x")
            acks.append(encode(ExecReport(exch_id, f"X{i}", o.account, o.symbol,
                                          OrdStatus.NEW, ExecType.NEW)))
            fills.append(encode(ExecReport(exch_id, f"X{i}", o.account, o.symbol,
                                           OrdStatus.FILLED, ExecType.TRADE, last_qty=o.qty,
                                           last_px=o.price, exec_id=f"E{exch_id}")))
        return b"".join(encode(o) for o in orders), b"".join(acks), b"".join(fills)

    def run_batch(self, reads: tuple[bytes, bytes, bytes]) -> None:
        """The three reads, each followed by the journal's write-ahead flush (what the
        connection does before its write)."""
        r, s, link = self.router, self.session, self.link
        audit = r.audit
        if self.compiled:
            r.client_data(s, reads[0])
            if audit is not None:
                audit.flush()
            r.exchange_data(link, reads[1])
            if audit is not None:
                audit.flush()
            r.exchange_data(link, reads[2])
        else:
            clock = r.clock
            for msg in s.decoder.feed(reads[0]):
                r.new_order(s, msg, clock())
            if audit is not None:
                audit.flush()
            for data in reads[1:]:
                for msg in link.decoder.feed(data):
                    r.exchange_report(msg, clock())
                if audit is not None:
                    audit.flush()
        if audit is not None:
            audit.flush()

    def close(self) -> None:
        if self.gw.audit is not None:
            self.gw.audit.close()


def measure(path: OrderPath, n: int, batch: int) -> float:
    """CPU µs per order (order + ack + fill) over ``n`` orders in batches of ``batch``, inside
    an event loop as the gateway runs (the journal batches what one loop turn appends)."""
    return asyncio.run(_measure(path, n, batch))[0]


def measure_with_stalls(path: OrderPath, n: int, batch: int) -> tuple[float, float]:
    """``measure``, and the longest wall time one batch (its three reads) took, in ms: a
    stall inside the order path (a table resized at once, a collection) shows there."""
    return asyncio.run(_measure(path, n, batch))


async def _measure(path: OrderPath, n: int, batch: int) -> tuple[float, float]:
    batches = [path.reads(batch) for _ in range(n // batch)]
    accepted_before = path.router.stats["accepted"]
    journal = path.gw.journal
    # Interval fsyncs in a worker thread, as the gateway runs them (its CPU counts here too).
    flusher = asyncio.create_task(journal.run_flusher()) if journal is not None else None
    await asyncio.sleep(0)
    worst = 0
    wall = time.perf_counter_ns
    start = time.process_time_ns()
    for b in batches:
        t0 = wall()
        path.run_batch(b)
        worst = max(worst, wall() - t0)
        await asyncio.sleep(0)  # the loop turn between two reads: the flusher may run
    spent = time.process_time_ns() - start
    if flusher is not None:
        flusher.cancel()
    done = len(batches) * batch
    accepted = path.router.stats["accepted"] - accepted_before
    if accepted != done:
        raise SystemExit(f"only {accepted} of {done} orders were accepted: the flow is off")
    return spent / done / 1000, worst / 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--journal", default="", help="a directory, or 'off' (default: a temp dir)")
    p.add_argument("--engine", choices=("cython", "reference"), default="cython")
    p.add_argument("--router", choices=("fast", "reference", "both"), default="fast")
    p.add_argument("--fsync", choices=("", "os", "interval", "record"), default="",
                   help="the journal's fsync policy (default: the bench config's)")
    p.add_argument("--rounds", type=int, default=1, help="measurements of each router; best kept")
    p.add_argument("--profile", action="store_true", help="cProfile the measured loop")
    args = p.parse_args(argv)
    routers = ("fast", "reference") if args.router == "both" else (args.router,)
    best: dict[str, float] = {}
    worst: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        paths = {}
        for name in routers:
            journal = None if args.journal == "off" else Path(args.journal or tmp) / f"j-{name}"
            paths[name] = OrderPath(journal, args.engine, name, args.fsync)
        try:
            for path in paths.values():
                measure(path, 5_000, args.batch)  # warm-up
            for _ in range(args.rounds):
                for name, path in paths.items():
                    if args.profile:
                        prof = cProfile.Profile()
                        prof.enable()
                    us, stall = measure_with_stalls(path, args.orders, args.batch)
                    worst[name] = max(stall, worst.get(name, stall))
                    if args.profile:
                        prof.disable()
                        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
                    best[name] = min(us, best.get(name, us))
        finally:
            for path in paths.values():
                path.close()
    for name, us in best.items():
        print(f"{us:.2f} µs CPU per order (order + ack + fill), router {name}, journal "
              f"{args.journal or 'on'}, engine {args.engine}, batch {args.batch}; longest "
              f"batch {worst[name]:.1f} ms")
    if len(best) == 2:
        print(f"reference / fast: {best['reference'] / best['fast']:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
