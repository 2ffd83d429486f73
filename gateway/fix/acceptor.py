"""The FIX acceptor: the FIX port, its sessions, their timers and the drop copy.

Theory of operation
-------------------
``FixAcceptor`` is built by the gateway when ``[fix].enabled``. It makes one
``gateway.fix.session.FixSession`` per ``[[fix.sessions]]`` entry, with its message store
(``<store_dir>/<our CompID>-<their CompID>.fixstore``; ``store_dir`` defaults to the journal
directory's sibling ``<journal.dir>.fix``; no journal, no files), listens on ``[fix].port``
and hands each connection to a ``FixConnection``.

Drop copy: the acceptor registers one observer with the router
(``Router.report_observers``), which is called with every execution report the router sends
to a client (or journals for an absent one). Each drop-copy session whose accounts include the
report's account gets it as an ExecutionReport (8) — *whether or not it is connected*: it is
numbered and stored, so a back office that was away receives what it missed by the ordinary
FIX resend when it logs on again (its Logon shows our higher MsgSeqNum; its engine asks).

TLS: ``[fix.tls]`` as for the native port (``gateway.tls``): only a connection whose handshake
succeeded reaches a ``FixConnection``; with mutual TLS its certificate's user must be the
Username of its Logon.

Timers: one task ticks every connection twice a second (heartbeats, test requests); another
fsyncs dirty stores every ``[journal].fsync_interval_ms`` when the journal's policy is
``interval``.

ExecID (17): unique across sessions, restarts and days — the instance prefix (gateway id and
start time) and a counter; a trade's ExecID also carries the exchange's execution id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from checks.enums import ExecType
from checks.reasons import Reason
from gateway.fix.session import FixConnection, FixSession
from gateway.fix.store import FixStore
from gateway.protocol import ExecReport
from gateway.tls import ServerTls, TlsServer, create_server

if TYPE_CHECKING:
    from gateway.router import Router
    from gateway.session import LogonGuard

log = structlog.get_logger("fengkong.fix")


def store_directory(cfg: Any) -> Path | None:
    """Where the stores live: ``[fix].store_dir``, else beside the journal; None: memory."""
    if cfg.fix.store_dir:
        return Path(cfg.fix.store_dir)
    if cfg.journal.dir:
        j = Path(cfg.journal.dir)
        return j.parent / (j.name + ".fix")
    return None


class FixAcceptor:
    def __init__(self, router: Router, guard: LogonGuard) -> None:
        gcfg = router.cfg
        self.cfg = gcfg.fix
        self.router = router
        self.guard = guard
        self.fsync = gcfg.journal.fsync
        self.fsync_interval_s = gcfg.journal.fsync_interval_ms / 1000
        self.directory = store_directory(gcfg)
        self.sessions: dict[tuple[bytes, bytes], FixSession] = {}
        self.drop_copies: list[FixSession] = []
        for sc in self.cfg.sessions:
            path = None if self.directory is None else \
                self.directory / f"{sc.sender_comp_id}-{sc.target_comp_id}.fixstore"
            accounts = None if "*" in sc.accounts else frozenset(sc.accounts)
            s = FixSession(sc, FixStore(path, self.fsync), accounts, self)
            self.sessions[(s.our, s.their)] = s
            if s.drop_copy:
                self.drop_copies.append(s)
        self.connections: set[FixConnection] = set()
        self.stats: Counter[str] = Counter()
        self._exec_prefix = f"{gcfg.gateway.id}.{time.time_ns() // 1_000_000 % 10**10:x}."
        self._exec_seq = 0
        # ClOrdID of a PossDup order being offered to the router: its duplicate refusal is not
        # a real reject (the order exists), so neither the session nor the drop copy shows it.
        self.dup_probe = ""
        self.server: TlsServer | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        if self.drop_copies:
            router.report_observers.append(self.drop_copy)

    def exec_id(self, rep: ExecReport) -> bytes:
        self._exec_seq += 1
        if rep.exec_type == ExecType.TRADE and rep.exec_id:
            return f"{self._exec_prefix}{self._exec_seq:x}.{rep.exec_id}".encode()
        return f"{self._exec_prefix}{self._exec_seq:x}".encode()

    def drop_copy(self, rep: ExecReport) -> None:
        """Router observer: every execution report, to the drop-copy sessions that see its
        account (stored and numbered even while they are away)."""
        if self.dup_probe and rep.cl_ord_id == self.dup_probe \
                and rep.reason == Reason.DUPLICATE_CL_ORD_ID:
            return
        for s in self.drop_copies:
            if s.accounts is None or rep.account in s.accounts:
                s.exec_report(rep)
                if s.conn is None:
                    try:
                        s.store.flush()
                    except OSError as err:  # kept in memory; written with the next flush
                        log.error("FIX drop-copy store write failed", fix=s.name,
                                  error=str(err))

    async def start(self) -> None:
        gcfg = self.router.cfg
        tls = ServerTls.optional(self.cfg.tls, gcfg.users, gcfg.source, "fix.tls")
        self.server = await create_server(lambda: FixConnection(self), self.cfg.host,
                                          self.cfg.port, tls, what="FIX")
        self.port = self.server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._tick(), name="fix-timers"))
        if self.fsync == "interval" and self.directory is not None:
            self._tasks.append(asyncio.create_task(self._sync(), name="fix-store-fsync"))
        log.info("FIX acceptor started", port=self.port, sessions=len(self.sessions),
                 store_dir=str(self.directory) if self.directory else "memory")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic_ns()
            for c in list(self.connections):
                c.timer(now)

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval_s)
            for s in self.sessions.values():
                if s.store.dirty:
                    await asyncio.to_thread(s.store.sync)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for c in list(self.connections):
            c.logout("gateway shutting down", wait=False)
        for t in self._tasks:
            t.cancel()
        for s in self.sessions.values():
            s.store.close()

    def status(self) -> dict[str, Any]:
        return {"port": self.port, "stats": dict(self.stats),
                "sessions": [{"session": s.name, "user": s.cfg.user, "kind": s.cfg.kind,
                              "connected": s.conn is not None and not s.conn.closed,
                              "next_in": s.store.next_in, "next_out": s.store.next_out}
                             for s in self.sessions.values()]}
