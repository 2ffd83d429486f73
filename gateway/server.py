"""The gateway process: wires the engine, router, sessions, exchange link, kill switch and
admin plane together, and owns every task it starts.

``fengkong serve --config gateway.toml`` runs it until SIGTERM/SIGINT, then shuts down in
order: stop accepting clients, optionally cancel every working order, log out the sessions,
flush the journal, close the exchange link.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from pathlib import Path
from typing import Any

import msgspec
import structlog

from checks.enums import AlertLevel, KillScope
from checks.model import Limits
from checks.reasons import Reason
from gateway import checkpoint
from gateway import journal as jr
from gateway.admin import AdminApi, any_session_open
from gateway.audit import AuditLog
from gateway.compliance.conformance import Conformance
from gateway.compliance.registry import Registry, grace_ns
from gateway.config import GatewayConfig
from gateway.exchange_link import ExchangeLink
from gateway.fast_router import router_class
from gateway.journal import FsyncPolicy, Journal, JournalError
from gateway.kafka_bus import ControlConsumer, OutboxPublisher, Topics
from gateway.killswitch import KillSwitch
from gateway.metrics import GatewayMetrics
from gateway.protocol import Logout
from gateway.recovery import RecoveryReport, end_replayed_sessions, replay_journal
from gateway.session import ClientSession, LogonGuard, last_session_id, next_session_ids
from gateway.terminal import TerminalRelay
from gateway.tls import ServerTls, TlsServer, create_server

log = structlog.get_logger("fengkong.server")


def _cython_engine() -> Any:
    from cext.engine import Engine

    return Engine


class Gateway:
    def __init__(self, cfg: GatewayConfig, engine_cls: Any = None, router_cls: Any = None) -> None:
        self.cfg = cfg
        # The Cython engine; the reference engine can stand in (it decides identically).
        self.engine = (engine_cls or _cython_engine())(cfg.risk)
        self.limits: dict[str, Limits] = {a.id: a.limits for a in cfg.risk.accounts}
        self.journal: Journal | None = None
        audit = None
        if cfg.journal.dir:
            self.journal = Journal.open(cfg.journal.dir, fsync=FsyncPolicy(
                cfg.journal.fsync, cfg.journal.fsync_interval_ms))
            audit = AuditLog(self.journal, on_failure=self._journal_failed,
                             on_recovery=self._journal_recovered)
        self.audit = audit
        # The compiled order path (gateway/fastroute.pyx) unless told otherwise; the reference
        # router decides, sends and journals the same.
        self.router = (router_cls or router_class())(cfg, self.engine, audit)
        self.killswitch = KillSwitch(self.router)
        self.link = ExchangeLink(self.router, cfg.exchange)
        self.logons = LogonGuard(cfg)  # logon timeout, connection caps, lockout, hash pool
        self.lockout = self.logons.lockout
        self.metrics = GatewayMetrics(self)  # before the admin plane, which serves it
        # The programmatic-trading registry and its watch on behaviour (issue 14), and the
        # terminal information relay: set up before the replay, which rebuilds them.
        self.registry = Registry([a.id for a in cfg.risk.accounts], self.engine,
                                 grace_ns=grace_ns(cfg.compliance.correction_grace_s),
                                 killswitch=self.killswitch)
        self.conformance = Conformance(self.registry, cfg.risk, self.router,
                                       per_sec=cfg.compliance.programmatic_per_sec,
                                       occasions=cfg.compliance.programmatic_occasions)
        self.router.on_counted = self.conformance.message
        self.terminals = TerminalRelay(self.router)
        self.router.on_logon = self.terminals.logon
        self.link.on_up = self.terminals.link_up
        self._grace: asyncio.Task[None] | None = None
        self._grace_wake = asyncio.Event()
        self.registry.on_change = self._grace_wake.set
        self.admin = AdminApi(self)
        self.fix: Any = None  # gateway.fix.acceptor.FixAcceptor when [fix].enabled
        if cfg.fix.enabled:
            from gateway.fix.acceptor import FixAcceptor

            self.fix = FixAcceptor(self.router, self.logons)
        self.server: TlsServer | None = None
        self.port = 0
        self._ticker: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._pruner: asyncio.Task[None] | None = None
        self.outbox: OutboxPublisher | None = None
        self.control: ControlConsumer | None = None
        self.started_ns = time.time_ns()
        self.recovery: RecoveryReport | None = None
        self.checkpoint_day = -1
        # Unrepaired journal corruption: while there is any, no new order is traded (SAFE_MODE).
        self.safe_mode: list[jr.Corruption] = []
        if self.journal is not None:
            if self.journal.recovered is not None:
                log.warning("journal tail was damaged and cut", damage=str(self.journal.recovered))
            self.recovery = replay_journal(self, self.journal)
            next_session_ids(max(self.recovery.max_session + 1, 1))
            self._check_journal(time.time_ns())
            self._after_replay(self.recovery, time.time_ns())

    # ------------------------------------------------------------------ journal health
    def _check_journal(self, now: int) -> None:
        """Corruption found on open or by the replay (not a torn tail, which was cut): the book
        may be missing what the damaged records held, so refuse to trade on it. Safe mode keeps
        everything that reduces risk: the exchange link reconciles, clients and operators
        cancel, the kill switch works. It lasts, restart after restart, until a person repairs
        the journal (``fengkong journal repair``), which removes the journal's CORRUPTION file."""
        j = self.journal
        assert j is not None and self.audit is not None
        if j.damage_seen is not None:
            j.mark_corrupt(j.damage_seen)
        if not j.corruption:
            return
        self.safe_mode = list(j.corruption)
        d = j.corruption[0].damage
        self.router.halted = (int(Reason.SAFE_MODE), f"{d.kind} damage at byte {d.offset} of "
                              f"journal segment {Path(d.segment).name}, record {d.seq}")
        repair = self.repair_procedure()
        for c in j.corruption:
            log.critical("journal corrupt: safe mode, no new orders", segment=c.damage.segment,
                         offset=c.damage.offset, seq=c.damage.seq, kind=c.damage.kind,
                         detail=c.damage.detail, intact_after=c.intact_after,
                         resumed_at=c.resumed_at, repair=repair)
            self.router.alert(AlertLevel.CRITICAL, Reason.JOURNAL_FAILURE, "firm",
                              f"journal corrupt: {c}. Safe mode: new orders refused (1209); the "
                              f"exchange link reconciles, cancels and kills still work. {repair}",
                              now)
        # Written down in the journal too, after the damage, so a dump tells the story.
        self.audit.append(jr.State(now, "safe_mode", msgspec.json.encode(j.corruption)))

    def repair_procedure(self) -> str:
        d = self.journal.directory if self.journal is not None else "DIR"
        return (f"To repair: stop the gateway; `fengkong journal verify {d}`; "
                f"`fengkong journal repair {d}` (dry run), then with `--apply`; start it again.")

    def _journal_failed(self, err: jr.JournalIOError, unjournaled: list[tuple[int, str]]) -> None:
        """The journal cannot be written (AuditLog holds the records and retries): fail closed.
        ``unjournaled``: (session, cl_ord_id) of the orders in the turn whose write failed; those
        accepted are already on their way out and get cancels right behind them (see
        ``gateway.audit``)."""
        where = err.path.name if err.path is not None else str(self.cfg.journal.dir)
        r = self.router
        if r.halted is None or r.halted[0] == Reason.JOURNAL_UNAVAILABLE:
            r.halted = (int(Reason.JOURNAL_UNAVAILABLE),
                        f"journal {err.op} failed at record {err.seq} in {where}: {err.strerror}")
        refs = []
        for sid, clid in unjournaled:
            s = r.sessions.get(sid)
            ref = r.by_clid.get((s.user, clid)) if s is not None else None
            if ref is not None:  # accepted (a refused one was never working)
                refs.append(ref)
        if refs:
            r.cancel_refs(refs, "accepted as the journal write failed")
        r.alert(AlertLevel.CRITICAL, Reason.JOURNAL_FAILURE, "firm",
                f"{err}. New orders are refused (1208) until the journal can be written; cancels "
                "still go; records are held in memory and written when the disk works again"
                + (f"; {len(refs)} order(s) accepted in that instant were cancelled" if refs
                   else ""))

    def _journal_recovered(self, text: str) -> None:
        r = self.router
        if r.halted is not None and r.halted[0] == Reason.JOURNAL_UNAVAILABLE:
            r.halted = None
        r.alert(AlertLevel.WARNING, Reason.JOURNAL_FAILURE, "firm",
                text + ("; new orders are accepted again" if r.halted is None else
                        f"; new orders stay refused ({Reason(r.halted[0]).name})"))

    def journal_state(self) -> dict[str, Any] | None:
        """The journal's health for /v1/status and /v1/recovery (None: no journal)."""
        j, audit = self.journal, self.audit
        if j is None or audit is None:
            return None
        return {
            "dir": str(j.directory),
            "fsync": j.fsync.mode,
            "next_seq": j.next_seq,
            "safe_mode": bool(self.safe_mode),
            "corruption": msgspec.to_builtins(self.safe_mode),
            "repair": self.repair_procedure() if self.safe_mode else "",
            "torn_tail": None if j.recovered is None else {
                **msgspec.to_builtins(j.recovered), "kept_in": str(j.quarantined)},
            "writable": audit.failure is None,
            "write_failure": "" if audit.failure is None else str(audit.failure),
            "held_records": audit.pending,
        }

    def _after_replay(self, report: RecoveryReport, now: int) -> None:
        """Live again: a boot record (this instance's exchange ids), the replayed sessions'
        end (their cancel-on-disconnect), and a checkpoint if today has none and no trading
        yet — a checkpoint must come before every record of its day, or a restart from it
        would skip them."""
        self.router.on_day_start = self.checkpoint_now
        self.checkpoint_day = report.checkpoint_day
        self.router.record(jr.State(now, "boot", self.router.prefix.encode()))
        today = self.router.day
        if self.checkpoint_day != today and report.today_records == 0:
            self.checkpoint_now(today, now)
        held = end_replayed_sessions(self)
        if held:
            log.warning("orders of sessions that were logged on at the crash will be cancelled "
                        "once the exchange link is back", cancels=held)

    def _kafka_lost(self, text: str) -> None:
        """The outbox found the broker without records it had acknowledged (it publishes them
        again): the risk desk hears of it, since consumers saw a gap meanwhile."""
        self.router.alert(AlertLevel.CRITICAL, Reason.KAFKA_LOSS, "firm", text)

    def checkpoint_now(self, day: int, now: int) -> None:
        """Journal the carried-over state at the start of trading day ``day``."""
        if self.safe_mode:
            # Taken from a book the damaged journal left incomplete, it would be restored after
            # the repair instead of the repaired records. None until then.
            log.warning("no trading-day checkpoint in safe mode", trading_day=day)
            return
        ids = sorted(self.control.applied) if self.control is not None else \
            list(self.recovery.command_ids if self.recovery else [])
        cp = checkpoint.take(self, day, ids, last_session_id())
        audit = self.router.audit
        if audit is not None and self.journal is not None:
            audit.flush()  # what came before goes first, in the older segment
            if audit.pending == 0:
                try:
                    self.journal.start_segment()
                except JournalError as err:  # the next append will say so, and be held
                    log.error("could not start a segment for the checkpoint", error=str(err))
        self.router.record(checkpoint.record(cp, now))
        self.checkpoint_day = day
        log.info("trading-day checkpoint", trading_day=day, sessions=len(cp.sessions),
                 kills=len(cp.kills))

    async def start(self, wait_link: float | None = None) -> None:
        g = self.cfg.gateway
        _ensure_fd_headroom(g.max_unauthenticated)
        client_tls = ServerTls.optional(g.tls, self.cfg.users, self.cfg.source, "gateway.tls")
        self.server = await create_server(lambda: ClientSession(self.router, self.logons),
                                          g.host, g.port, client_tls, what="client")
        self.port = self.server.sockets[0].getsockname()[1]
        await self.admin.start(self.cfg.admin.host, self.cfg.admin.port)
        if self.fix is not None:
            await self.fix.start()
        self.link.start()
        self.metrics.start()
        self._ticker = asyncio.create_task(self._tick(), name="session-ticker")
        self._grace = asyncio.create_task(self._registry_grace(), name="registry-grace")
        if self.journal is not None:
            self._flusher = asyncio.create_task(self.journal.run_flusher(), name="journal-fsync")
            self._pruner = asyncio.create_task(self._prune_daily(), name="journal-retention")
        k = self.cfg.kafka
        if k.bootstrap and self.journal is not None:
            topics = Topics(audit=k.audit_topic, alerts=k.alerts_topic, drop_copy=k.dropcopy_topic,
                            control=k.control_topic)
            self.outbox = OutboxPublisher(self.journal.directory, k.bootstrap, topics,
                                          self.cfg.gateway.id,
                                          Path(self.journal.directory) / "outbox.state",
                                          idempotent=k.idempotent,
                                          on_broker_loss=self._kafka_lost)
            await self.outbox.start()
            applied = self.recovery.command_ids if self.recovery else []
            self.control = ControlConsumer(k.bootstrap, k.control_topic,
                                           f"fengkong-{self.cfg.gateway.id}",
                                           self.killswitch.control_command, applied)
            await self.control.start()
        log.info("gateway started", client_port=self.port, admin_port=self.admin.port,
                 exchange=f"{self.cfg.exchange.host}:{self.cfg.exchange.port}",
                 engine=type(self.engine).__module__, router=type(self.router).__name__)
        self.logons.warn_rehash()
        if wait_link:
            await self.link.wait_up(wait_link)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic_ns()
            for s in list(self.router.sessions.values()):
                s.tick(now)  # type: ignore[attr-defined]

    async def _registry_grace(self) -> None:
        """Accounts whose report was not corrected in time go close-only (art. 11): woken by
        each new finding, or at the earliest deadline; a deadline that passed while the
        gateway was down is enforced at once."""
        while True:
            due = self.registry.next_deadline()
            timeout = None if due is None else max(0.0, (due - time.time_ns()) / 1e9)
            try:
                await asyncio.wait_for(self._grace_wake.wait(), timeout)
            except TimeoutError:
                pass
            self._grace_wake.clear()
            self.registry.enforce_due(time.time_ns())

    async def stop(self, cancel_all: bool | None = None) -> None:
        """Graceful shutdown (see the module docstring)."""
        cancel_all = self.cfg.gateway.cancel_all_on_shutdown if cancel_all is None else cancel_all
        if self.server is not None:
            self.server.close()
        if self.fix is not None and self.fix.server is not None:
            self.fix.server.close()
        if cancel_all and self.link.up:
            self.router.cancel_refs(self.engine.open_orders(KillScope.FIRM, ""), "shutdown")
            await asyncio.sleep(0)  # let the cancels leave in this turn's flush
        for s in list(self.router.sessions.values()):
            s.send(Logout("gateway shutting down"))
            s.close()  # type: ignore[attr-defined]
        for s in list(self.logons.pending):
            s.abort()
        self.logons.close()
        if self.fix is not None:
            await self.fix.stop()
        for task in (self._ticker, self._flusher, self._pruner, self._grace):
            if task is not None:
                task.cancel()
        self.metrics.stop()
        await self.admin.stop()
        await self.link.stop()
        for part in (self.control, self.outbox):
            if part is not None:
                await part.stop()
        if self.router.audit is not None:
            self.router.audit.close()
        log.info("gateway stopped")

    async def _prune_daily(self) -> None:
        """Retention: delete whole journal segments past ``retention_days``, at start and daily."""
        assert self.journal is not None
        while True:
            removed = self.journal.prune(time.time_ns(), self.cfg.journal.retention_days)
            if removed:
                log.info("journal segments past retention deleted", count=len(removed),
                         retention_days=self.cfg.journal.retention_days)
            await asyncio.sleep(86_400)

    def session_open(self) -> bool:
        return any_session_open(self, time.time_ns())

    def status(self) -> dict[str, Any]:
        r = self.router
        return {
            "gateway": self.cfg.gateway.id,
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            "exchange_link": self.link.state,  # up, down (reconnecting) or taken over
            # Why new orders are refused whatever the engine says (journal failing or damaged).
            "halted": None if r.halted is None else {
                "code": r.halted[0], "reason": Reason(r.halted[0]).name, "text": r.halted[1]},
            "journal": self.journal_state(),
            "sessions": [{"session": s.session_id, "user": s.user, "accounts": sorted(s.accounts),
                          "working_orders": r.owned(s.session_id)} for s in r.sessions.values()],
            # Connections not logged on, lockouts, users whose secret hash should be renewed.
            "logons": self.logons.status(time.time_ns()),
            "fix": self.fix.status() if self.fix is not None else None,
            "kills": [{"scope": KillScope(scope).name.lower(), "key": self.scope_name(scope, key),
                       "mode": "close_only" if mode == 2 else "block"}
                      for scope, key, mode in self.engine.killed()],
            "accounts": [self.engine.account_view(a.id) for a in self.cfg.risk.accounts],
            "working_orders": len(r.orders),
            # Working orders with a cancel requested and not yet answered (held while the
            # exchange link is down; sent first when it is back).
            "cancels_pending": r.pending_cancels(),
            "stats": dict(r.stats),
            "alerts": [msgspec.structs.asdict(a) for a in list(r.alerts)[-20:]],
            "history": self.killswitch.history[-20:],
        }

    def scope_name(self, scope: int, key: int) -> str:
        risk = self.cfg.risk
        if scope == KillScope.ACCOUNT:
            return risk.accounts[key].id
        if scope == KillScope.INSTRUMENT:
            return risk.instruments[key].symbol
        if scope == KillScope.GROUP:
            return sorted({a.group for a in risk.accounts})[key]
        if scope == KillScope.PRODUCT:
            return sorted({i.product for i in risk.instruments})[key]
        return "" if scope == KillScope.FIRM else str(key)


def _ensure_fd_headroom(pending: int) -> None:
    """Connections not logged on are capped (``[gateway].max_unauthenticated``) so a flood
    cannot take the file descriptors that real clients, the exchange link's reconnect and the
    journal's next segment need; raise the open-file limit to the hard limit, and say so when
    it leaves little room above the cap."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    inf = resource.RLIM_INFINITY
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != inf and (hard == inf or soft < hard):
            soft = hard if hard != inf else max(soft, 65_536)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except (ValueError, OSError) as err:
        log.warning("could not raise the open-file limit", error=str(err))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != inf and soft < 4 * pending:
        log.warning("the open-file limit leaves little room above max_unauthenticated",
                    open_file_limit=soft, max_unauthenticated=pending)


async def serve(cfg: GatewayConfig, ready: asyncio.Event | None = None,
                engine_cls: Any = None, router_cls: Any = None) -> None:
    """Run until SIGTERM or SIGINT."""
    gw = Gateway(cfg, engine_cls=engine_cls, router_cls=router_cls)
    await gw.start()
    # What start-up built (configuration, the engine's tables, the replayed book) lives as long
    # as the process: out of the cyclic collector's generations, so its full collections walk
    # only what trading allocates afterwards.
    gc.collect()
    gc.freeze()
    print(f"fengkong gateway {cfg.gateway.id}: clients on {cfg.gateway.host}:{gw.port}, "
          f"admin on {cfg.admin.host}:{gw.admin.port}", flush=True)
    if gw.fix is not None:
        print(f"fengkong gateway {cfg.gateway.id}: FIX on {cfg.fix.host}:{gw.fix.port}",
              flush=True)

    async def announce_link() -> None:
        await gw.link.wait_up(3600)
        print(f"fengkong gateway {cfg.gateway.id}: exchange link up", flush=True)

    announcer = asyncio.create_task(announce_link())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    await stop.wait()
    announcer.cancel()
    await gw.stop()
