"""Client sessions: logon, authentication, heartbeats, and the message table of a session.

Theory of operation
-------------------
A session is one TCP connection from a strategy host. Its state machine is small and lives
here, as a table of (state, message type) -> handler::

    AWAIT_LOGON --Logon ok--> ACTIVE --Logout / idle / error / kill--> CLOSED
         |  \\--Logon refused (LogonReject; lockout counts)--> CLOSED

In ACTIVE, ``NewOrder`` and ``CancelOrder`` go to the router; ``Heartbeat`` only refreshes the
idle timer (any inbound message does). A message the table has no entry for is answered with a
precise reject and the session carries on; a *broken stream* (``ProtocolError``) is answered with
``Logout`` naming the problem and that session alone is closed.

Logon defences (``LogonGuard``, one per gateway): a connection must log on within
``[gateway].logon_timeout_s`` of connecting (a timer per connection: heartbeats do not stretch it;
the wait for the hashing pool after a Logon arrived does not count against it);
connections not yet logged on are capped per source address (the newest is refused) and in
total (the oldest idle one of the busiest address makes room; the newest is refused when all
are logging on), so a flood of idle or half-open connections holds neither file descriptors
nor a real client's way in. A logon checks the
address allow-list first (a disallowed address gets 104 and no hash is computed), then takes the
user's lock — one attempt per user at a time — checks the lockout, hashes the secret on a small
pool (``[auth].max_concurrent_hashes``: each scrypt hash takes 128 MiB) and checks the lockout
again before deciding.

Backpressure: reports to a client queue in its transport; past ``max_client_buffer`` bytes the
client is a slow consumer — it is told so and disconnected (its orders then follow its
cancel-on-disconnect setting), so one stuck client never holds memory or the event loop hostage.

Bounds: a session holds no per-message memory of its own. Inbound, a frame is at most
``gateway.max_frame`` bytes (the decoder refuses more); outbound, the queue is at most
``max_client_buffer`` (above) and no frame exceeds ``max_frame`` — a message that would (a reject
echoing a huge client text) goes out with its texts cut (``protocol.fit_frame``). What the
router remembers per session and per day is bounded in ``gateway.router``'s memory caps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import structlog

from checks.calendar import day_as_yyyymmdd, trading_day_number
from checks.enums import ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.auth import DUMMY_HASH, Lockout, ip_allowed, needs_rehash, verify_secret
from gateway.framed import FramedProtocol
from gateway.protocol import (
    HEADER_SIZE,
    CancelOrder,
    CancelReject,
    ExecReport,
    Heartbeat,
    Logon,
    LogonAck,
    LogonReject,
    Logout,
    NewOrder,
    OrderStatusEnd,
    OrderStatusRequest,
    encode_into,
    fit_frame,
    terminal_problem,
)
from gateway.terminal import check_application, journaled_logon

if TYPE_CHECKING:
    from gateway.config import GatewayConfig, UserConfig
    from gateway.router import Router

log = structlog.get_logger("fengkong.session")
_last_session_id = 0  # session numbers are unique for the journal's life (see recovery)


def effective_cancel_on_disconnect(user: UserConfig, logon: Logon) -> bool:
    """The user's configured setting wins; otherwise what the client asked for at logon."""
    return user.cancel_on_disconnect if user.cancel_on_disconnect is not None \
        else logon.cancel_on_disconnect


def next_session_ids(start: int) -> None:
    """Number new sessions from ``start`` (after recovery: past every journaled session)."""
    global _last_session_id
    _last_session_id = start - 1


def last_session_id() -> int:
    return _last_session_id


def _new_session_id() -> int:
    global _last_session_id
    _last_session_id += 1
    return _last_session_id


def new_session_id() -> int:
    """A session number for another front (FIX): the same numbering as native sessions, so
    the journal, recovery and the kill switch's session scope see one kind of session."""
    return _new_session_id()


class State(IntEnum):
    AWAIT_LOGON = 1
    LOGGING_ON = 4  # secret being verified off the loop
    ACTIVE = 2
    CLOSED = 3


class LogonGuard:
    """What stands between a new connection and a logged-on session (see the module docstring):
    the lockout, one lock per user name, the hashing pool, and the table of connections that
    have not logged on yet."""

    def __init__(self, cfg: GatewayConfig) -> None:
        a, g = cfg.auth, cfg.gateway
        self.users = cfg.users
        self.lockout = Lockout(a.max_failures, int(a.failure_window_s * 1e9),
                               int(a.lockout_s * 1e9), a.firm_max_failures, a.max_failure_entries)
        self.logon_timeout_s = g.logon_timeout_s
        self.max_pending = g.max_unauthenticated
        self.max_per_source = g.max_unauthenticated_per_source
        self.pending: dict[ClientSession, None] = {}  # not logged on yet, oldest first
        self.per_source: Counter[str] = Counter()
        self.connections = 0  # accepted, ever
        self.refused_connections = 0
        self.timed_out = 0
        self._pool = ThreadPoolExecutor(max_workers=a.max_concurrent_hashes,
                                        thread_name_prefix="logon-hash")
        self._user_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # An unknown user costs what a configured user's wrong secret costs (same parameters).
        first = next(iter(cfg.users.values()), None)
        if first is not None:
            n, r, p = first.secret_hash.split("$")[1:4]
            self.dummy_hash = f"scrypt${n}${r}${p}${'00' * 16}${'00' * 32}"
        else:
            self.dummy_hash = DUMMY_HASH
        self.any_address = any(not u.ip_allow for u in cfg.users.values())
        self.allow_lists = [u.ip_allow for u in cfg.users.values()]
        self.to_rehash = sorted(u.name for u in cfg.users.values() if needs_rehash(u.secret_hash))

    def warn_rehash(self) -> None:
        """Name the users whose secret hash is below today's cost (at start; /v1/status too)."""
        if self.to_rehash:
            log.warning("secret hashes below today's KDF cost: accepted, give these users new "
                        "ones (`fengkong hash-secret`)", users=self.to_rehash)

    # -- connections not logged on
    def admit(self, s: ClientSession) -> bool:
        """Count a new connection; False when it must be refused (its address has too many, or
        every connection not logged on is busy logging on)."""
        self.connections += 1
        if self.per_source[s.peer] >= self.max_per_source:
            self.refused_connections += 1
            return False
        if len(self.pending) >= self.max_pending:
            self._evict()
            if len(self.pending) >= self.max_pending:  # all of them are logging on: wait
                self.refused_connections += 1
                return False
        self.pending[s] = None
        self.per_source[s.peer] += 1
        return True

    def _evict(self) -> None:
        """Make room: close the oldest connection, not yet logging on, of the busiest address."""
        busiest = None
        for s in self.pending:
            if s.state == State.AWAIT_LOGON and (
                    busiest is None or self.per_source[s.peer] > self.per_source[busiest.peer]):
                busiest = s
        if busiest is not None:
            self.refused_connections += 1
            log.warning("too many connections not logged on; closing the oldest of the busiest "
                        "address", session=busiest.session_id, peer=busiest.peer,
                        pending=len(self.pending))
            busiest.logon_expired("too many connections waiting to log on", timed_out=False)

    def leave(self, s: ClientSession) -> None:
        if self.pending.pop(s, 0) is None:
            self.per_source[s.peer] -= 1
            if self.per_source[s.peer] <= 0:
                del self.per_source[s.peer]

    # -- logon attempts
    def address_refused(self, user: UserConfig | None, peer: str) -> bool:
        """Whether ``peer`` may not log on as ``user``; for an unknown name, whether it may not
        log on as anyone (so a disallowed address learns nothing about names either)."""
        if user is not None:
            return not ip_allowed(user.ip_allow, peer)
        return bool(self.allow_lists) and not self.any_address and             not any(ip_allowed(a, peer) for a in self.allow_lists)

    @asynccontextmanager
    async def user_lock(self, key: str) -> AsyncIterator[None]:
        lock, users = self._user_locks.get(key) or (asyncio.Lock(), 0)
        self._user_locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._user_locks[key]
            if users <= 1:
                del self._user_locks[key]
            else:
                self._user_locks[key] = (lock, users - 1)

    def refused_before_hash(self, user: UserConfig | None, key: str, peer: str, now: int) -> bool:
        """Locked out from ``peer``, or the firm-wide guard is on — which spares an address
        the user's own allow-list names (guessers elsewhere cannot fail against that user)."""
        if self.lockout.locked(key, now, peer):
            return True
        return not (user is not None and user.ip_allow) and self.lockout.guard_tripped(peer, now)

    async def authenticate(self, name: str, secret: str, peer: str,
                           gone: Callable[[], bool]) -> tuple[UserConfig | None, Reason | None]:
        """Check a logon's user name and secret from ``peer``, for any front (native or FIX):
        the address allow-list first (a disallowed address gets 104 and no hash is computed),
        then, holding the user's lock, the lockout, the hash on the pool, the lockout again.
        Returns (user, None) when it may log on, (None, reason) when refused (a failure is
        counted even if the client has gone meanwhile), (None, None) when the connection went
        away (``gone()``) before its turn. The caller records the success
        (``lockout.succeeded``) once it admits the session."""
        user = self.users.get(name)
        key = name if user is not None else ""  # unknown names share one lockout key
        if self.address_refused(user, peer):  # before the secret: it learns nothing
            return None, Reason.IP_NOT_ALLOWED
        async with self.user_lock(key):  # one attempt per user at a time
            if gone():
                return None, None
            if self.refused_before_hash(user, key, peer, time.time_ns()):
                return None, Reason.LOCKED_OUT
            # scrypt is deliberately slow: verify off the event loop, on the bounded pool.
            ok = await self.verify(user.secret_hash if user is not None else self.dummy_hash,
                                   secret)
            now = time.time_ns()
            if user is None or not ok:
                locked = self.lockout.failed(key, now, peer)
                return None, Reason.LOCKED_OUT if locked else Reason.AUTH_FAILED
            if self.refused_before_hash(user, key, peer, now):  # locked while hashing
                return None, Reason.LOCKED_OUT
        return user, None

    async def verify(self, stored: str, secret: str) -> bool:
        return await asyncio.get_running_loop().run_in_executor(self._pool, verify_secret,
                                                                stored, secret)

    def unlock(self, user: str) -> int:
        return self.lockout.unlock(user)

    def status(self, now: int) -> dict[str, Any]:
        failures, locks = self.lockout.sizes()
        return {"connections": self.connections,
                "connections_not_logged_on": len(self.pending),
                "connections_refused": self.refused_connections,
                "logon_timeouts": self.timed_out,
                "failure_entries": failures, "lockouts": locks,
                "locked_out": {u: self.lockout.locked_sources(u, now)
                               for u in sorted({k[0] for k in self.lockout._locked_until})
                               if self.lockout.locked_sources(u, now)},
                "users_to_rehash": self.to_rehash}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class ClientSession(FramedProtocol):
    def __init__(self, router: Router, guard: LogonGuard) -> None:
        super().__init__(router.cfg.gateway.max_frame, router.before_write)
        self._max_frame = router.cfg.gateway.max_frame
        self._max_buffer = router.cfg.gateway.max_client_buffer
        # The compiled router takes each read's bytes (an active session's orders and cancels it
        # handles itself; every other message comes back to ``on_message``).
        self.on_data = getattr(router, "client_data", None)
        self.router = router
        self.guard = guard
        self.lockout = guard.lockout
        self.session_id = _new_session_id()
        self.state = State.AWAIT_LOGON
        self.user = ""
        self.accounts: frozenset[str] = frozenset()
        self.cancel_on_disconnect = True
        self.automated = False
        self.heartbeat_ns = int(router.cfg.gateway.heartbeat_s * 1e9)
        self.last_in = time.monotonic_ns()
        self.last_out = self.last_in
        self.dropped_reason = ""
        self._logon_task: asyncio.Future[None] | None = None
        self._logon_timer: asyncio.TimerHandle | None = None
        # Mutual TLS: the user the client certificate stands for (set by ``gateway.tls`` before
        # the connection is made); a Logon for any other user is refused.
        self.peer_user: str | None = None

    # ------------------------------------------------------------------ transport events
    def on_connected(self) -> None:
        if not self.guard.admit(self):
            log.warning("connection refused: too many from this address not logged on",
                        session=self.session_id, peer=self.peer)
            self.abort()
            return
        log.info("client connected", session=self.session_id, peer=self.peer)
        self._logon_timer = asyncio.get_running_loop().call_later(
            self.guard.logon_timeout_s, self.logon_expired,
            f"no logon within {self.guard.logon_timeout_s:g} s")

    def logon_expired(self, text: str, timed_out: bool = True) -> None:
        """Close a connection that has not logged on; a peer that does not read (half-open)
        cannot hold it open: what cannot be written at once is dropped with the connection."""
        if self.closed or self.state == State.ACTIVE:
            return
        self.guard.timed_out += timed_out
        self.send(Logout(text, int(Reason.NOT_LOGGED_ON)))
        self.close()
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.transport.abort()
        self.guard.leave(self)

    def on_message(self, msg: Any) -> None:
        self.last_in = time.monotonic_ns()
        handler = _TABLE.get((self.state, type(msg)))
        if handler is None:
            self._unexpected(msg)
        else:
            handler(self, msg)

    def on_protocol_error(self, text: str) -> None:
        log.warning("protocol error; closing session", session=self.session_id, peer=self.peer,
                    error=text)
        self.router.record(jr.Inbound(time.time_ns(), self.session_id, None,
                                       text.encode()[:1024]))
        self.send(Logout(text, int(Reason.PROTOCOL_ERROR)))
        self.close()

    def on_internal_error(self, msg: Any, exc: Exception) -> None:
        """A bug handling one message: say so to the client (nothing was sent), keep serving."""
        log.exception("internal error; message refused", session=self.session_id,
                      msg_type=type(msg).__name__, exc_info=exc)
        if isinstance(msg, NewOrder):
            self.send(ExecReport(msg.cl_ord_id, "", msg.account, msg.symbol, OrdStatus.REJECTED,
                                 ExecType.REJECTED, int(Reason.INTERNAL_ERROR),
                                 Reason.INTERNAL_ERROR.description, ts_ns=time.time_ns()))
        elif isinstance(msg, CancelOrder):
            self.send(CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(Reason.INTERNAL_ERROR),
                                   Reason.INTERNAL_ERROR.description))

    def on_disconnected(self, exc: Exception | None, closed_by_us: bool) -> None:
        was_active = self.state == State.ACTIVE
        self.state = State.CLOSED
        self.guard.leave(self)
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        if was_active:
            cancelled = self.router.remove_session(self, self.cancel_on_disconnect)
            log.info("session closed", session=self.session_id, user=self.user,
                     cancelled=cancelled, reason=self.dropped_reason or str(exc or "closed"))

    def send(self, msg: Any) -> None:
        if self.closed:
            return
        out = self._out
        start = len(out)
        encode_into(msg, out)
        # No frame may exceed the limit the peer enforces (it would close the stream): the
        # rare over-long one (a text echoing what the client sent) is re-sent with its texts cut.
        if len(out) - start - HEADER_SIZE > self._max_frame:
            del out[start:]
            encode_into(fit_frame(msg, self._max_frame), out)
        self.queued(start)

    def queued(self, start: int) -> None:
        super().queued(start)
        self._check_backlog()

    def read_done(self, start: int) -> None:
        super().read_done(start)
        self._check_backlog()

    def _check_backlog(self) -> None:
        # Held beyond the limit: dropped (the cheap bound first, the exact figure to decide).
        if len(self._out) + self._buffered > self._max_buffer \
                and self.write_buffer_size() > self._max_buffer:
            self.drop_slow_consumer()

    def flush(self) -> None:
        wrote = bool(self._out)
        super().flush()
        if wrote:  # bytes left: the heartbeat timer counts from here
            self.last_out = time.monotonic_ns()

    def drop_slow_consumer(self) -> None:
        if self.closed:
            return
        self.dropped_reason = "slow consumer"
        log.warning("slow consumer dropped", session=self.session_id, user=self.user,
                    buffered=self.write_buffer_size())
        self.abort()

    # ------------------------------------------------------------------ handlers
    def _logon(self, msg: Logon) -> None:
        now = time.time_ns()
        self.router.record(jr.Inbound(now, self.session_id, journaled_logon(msg)))
        self.state = State.LOGGING_ON
        # It logged on in time; waiting for the hashing pool is the gateway's doing, not the
        # client's (the wait is bounded: by the caps above, the lockout and the firm guard).
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        self._logon_task = asyncio.ensure_future(self._logon_checked(msg))

    async def _logon_checked(self, msg: Logon) -> None:
        if self.peer_user is not None and msg.user != self.peer_user:
            log.warning("logon refused: the client certificate belongs to another user",
                        session=self.session_id, user=msg.user, certificate_user=self.peer_user)
            self._refuse(msg.user, Reason.AUTH_FAILED)
            return
        problem = terminal_problem(msg)
        if problem is not None:
            self._refuse(msg.user, Reason.TERMINAL_INFO_INVALID, problem)
            return
        user, refused = await self.guard.authenticate(msg.user, msg.secret, self.peer,
                                                      lambda: self.closed)
        if refused is not None:
            self._refuse(msg.user, refused)
            return
        if user is None or self.closed:
            return
        if not await check_application(self.guard, user, msg):  # 穿透式监管 (gateway.terminal)
            # An auth code is a credential: a wrong one counts towards the lockout.
            locked = self.lockout.failed(msg.user, time.time_ns(), self.peer)
            self._refuse(msg.user, Reason.LOCKED_OUT if locked else Reason.APP_NOT_REGISTERED)
            return
        if self.closed:
            return
        self._logon_verified(msg, user, time.time_ns())

    def _logon_verified(self, msg: Logon, user: UserConfig, now: int) -> None:
        cfg = self.router.cfg
        asked = set(msg.accounts) if msg.accounts else set(user.accounts)
        refused = sorted(asked - set(user.accounts))
        if refused:
            self.send(LogonReject(int(Reason.ACCOUNT_NOT_PERMITTED),
                                  f"{Reason.ACCOUNT_NOT_PERMITTED.description} "
                                  f"({', '.join(refused)})"))
            log.warning("logon refused", session=self.session_id, user=msg.user,
                        reason="ACCOUNT_NOT_PERMITTED", accounts=refused)
            self.close()
            return
        self.lockout.succeeded(msg.user, now, self.peer)
        if needs_rehash(user.secret_hash):
            log.warning("logon with a secret hash below today's KDF cost: give the user a new "
                        "one (`fengkong hash-secret`)", user=msg.user)
        self.user = msg.user
        self.accounts = frozenset(asked)
        self.automated = user.automated
        self.cancel_on_disconnect = effective_cancel_on_disconnect(user, msg)
        hb = msg.heartbeat_s if 0 < msg.heartbeat_s <= cfg.gateway.heartbeat_s else cfg.gateway.heartbeat_s
        self.heartbeat_ns = int(hb * 1e9)
        self.state = State.ACTIVE
        self.guard.leave(self)
        if self._logon_timer is not None:
            self._logon_timer.cancel()
        self.router.engine.register_session(self.session_id, self.automated)
        self.router.add_session(self)
        day = trading_day_number(now, self.router.cfg.risk.day_boundary_s)
        self.send(LogonAck(self.session_id, day_as_yyyymmdd(day), now))
        if self.router.on_logon is not None:  # terminal information to the exchange
            self.router.on_logon(self, msg, now)
        log.info("logon", session=self.session_id, user=self.user, peer=self.peer,
                 accounts=sorted(self.accounts), cancel_on_disconnect=self.cancel_on_disconnect)

    def _refuse(self, user: str, reason: Reason, detail: str = "") -> None:
        log.warning("logon refused", session=self.session_id, user=user, peer=self.peer,
                    reason=reason.name, detail=detail)
        self.send(LogonReject(int(reason), reason.description + (f" ({detail})" if detail else "")))
        self.close()

    def _new_order(self, msg: NewOrder) -> None:
        self.router.new_order(self, msg)

    def _cancel(self, msg: CancelOrder) -> None:
        self.router.cancel(self, msg)

    def _status_request(self, msg: OrderStatusRequest) -> None:
        """The user's working orders (whichever connection placed them, before or after a
        restart), e.g. for a client after a reconnect; it may cancel each of them."""
        now = time.time_ns()
        count = 0
        for o in self.router.user_orders(self.user, msg.account):
            self.send(ExecReport(o.cl_ord_id, o.order_id, o.account, o.symbol, o.status,
                                 ExecType.STATUS, 0, "", 0, 0.0, o.cum, o.leaves, now, o.side,
                                 o.price, o.qty))
            count += 1
        self.send(OrderStatusEnd(msg.req_id, count))

    def _heartbeat(self, msg: Heartbeat) -> None:
        pass  # on_message already refreshed the idle timer

    def _logout(self, msg: Logout) -> None:
        self.router.record(jr.Inbound(time.time_ns(), self.session_id, msg))
        self.send(Logout("goodbye"))
        self.close()

    def _not_logged_on(self, msg: Any) -> None:
        now = time.time_ns()
        if isinstance(msg, NewOrder):
            self.send(ExecReport(msg.cl_ord_id, "", msg.account, msg.symbol, OrdStatus.REJECTED,
                                 ExecType.REJECTED, int(Reason.NOT_LOGGED_ON),
                                 Reason.NOT_LOGGED_ON.description, ts_ns=now))
        else:
            self.send(CancelReject(msg.cl_ord_id, msg.orig_cl_ord_id, int(Reason.NOT_LOGGED_ON),
                                   Reason.NOT_LOGGED_ON.description))

    def _second_logon(self, msg: Logon) -> None:
        self.send(LogonReject(int(Reason.ALREADY_LOGGED_ON), Reason.ALREADY_LOGGED_ON.description))

    def _unexpected(self, msg: Any) -> None:
        text = f"{type(msg).__name__} is not a message a client sends"
        if self.state == State.AWAIT_LOGON:
            text += "; log on first"
        log.warning("unexpected message", session=self.session_id, type=type(msg).__name__)
        self.send(Logout(text, int(Reason.PROTOCOL_ERROR)))
        self.close()

    # ------------------------------------------------------------------ timers
    def tick(self, now_mono: int) -> None:
        """Called about every second by the server: heartbeats out, idle timeout in."""
        if self.closed:
            return
        if self.state in (State.AWAIT_LOGON, State.LOGGING_ON):
            return  # the logon timer (on_connected) closes it
        idle_limit = self.heartbeat_ns * self.router.cfg.gateway.idle_timeout_factor
        if now_mono - self.last_in > idle_limit:
            self.dropped_reason = "idle timeout"
            self.send(Logout(f"no message for {idle_limit / 1e9:.1f} s (heartbeat timeout)"))
            self.close()
        elif now_mono - self.last_out >= self.heartbeat_ns:
            self.send(Heartbeat(time.time_ns()))


_TABLE: dict[tuple[State, type], Any] = {
    (State.AWAIT_LOGON, Logon): ClientSession._logon,
    (State.AWAIT_LOGON, NewOrder): ClientSession._not_logged_on,
    (State.AWAIT_LOGON, CancelOrder): ClientSession._not_logged_on,
    (State.AWAIT_LOGON, Heartbeat): ClientSession._heartbeat,
    (State.AWAIT_LOGON, Logout): ClientSession._logout,
    (State.LOGGING_ON, NewOrder): ClientSession._not_logged_on,
    (State.LOGGING_ON, CancelOrder): ClientSession._not_logged_on,
    (State.LOGGING_ON, Heartbeat): ClientSession._heartbeat,
    (State.LOGGING_ON, Logout): ClientSession._logout,
    (State.ACTIVE, NewOrder): ClientSession._new_order,
    (State.ACTIVE, CancelOrder): ClientSession._cancel,
    (State.ACTIVE, Heartbeat): ClientSession._heartbeat,
    (State.ACTIVE, OrderStatusRequest): ClientSession._status_request,
    (State.ACTIVE, Logout): ClientSession._logout,
    (State.ACTIVE, Logon): ClientSession._second_logon,
}
