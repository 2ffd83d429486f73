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

Backpressure: reports to a client queue in its transport; past ``max_client_buffer`` bytes the
client is a slow consumer — it is told so and disconnected (its orders then follow its
cancel-on-disconnect setting), so one stuck client never holds memory or the event loop hostage.
"""

from __future__ import annotations

import asyncio
import time
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import structlog

from checks.calendar import day_as_yyyymmdd, trading_day_number
from checks.enums import ExecType, OrdStatus
from checks.reasons import Reason
from gateway import journal as jr
from gateway.auth import hash_secret, ip_allowed, verify_secret
from gateway.framed import FramedProtocol
from gateway.protocol import (
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
)

if TYPE_CHECKING:
    from gateway.auth import Lockout
    from gateway.config import UserConfig
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


class State(IntEnum):
    AWAIT_LOGON = 1
    LOGGING_ON = 4  # secret being verified off the loop
    ACTIVE = 2
    CLOSED = 3


# Verified against when the user is unknown, so an unknown user costs as much as a wrong secret.
_DUMMY_HASH = hash_secret("unknown-user", salt=b"fengkong-dummy!!")


class ClientSession(FramedProtocol):
    def __init__(self, router: Router, lockout: Lockout) -> None:
        super().__init__(router.cfg.gateway.max_frame, router.before_write)
        self.router = router
        self.lockout = lockout
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

    # ------------------------------------------------------------------ transport events
    def on_connected(self) -> None:
        log.info("client connected", session=self.session_id, peer=self.peer)

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
        if was_active:
            cancelled = self.router.remove_session(self, self.cancel_on_disconnect)
            log.info("session closed", session=self.session_id, user=self.user,
                     cancelled=cancelled, reason=self.dropped_reason or str(exc or "closed"))

    def send(self, msg: Any) -> None:
        super().send(msg)
        self.last_out = time.monotonic_ns()
        if self.write_buffer_size() > self.router.cfg.gateway.max_client_buffer:
            self.drop_slow_consumer()

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
        cfg = self.router.cfg
        self.router.record(jr.Inbound(now, self.session_id,
                                       Logon(msg.user, "***", msg.accounts, msg.heartbeat_s,
                                             msg.cancel_on_disconnect)))
        user = cfg.users.get(msg.user)
        if self.lockout.locked(msg.user, now):
            self._refuse(msg.user, Reason.LOCKED_OUT)
            return
        # scrypt is deliberately slow: verify off the event loop so other sessions keep trading.
        self.state = State.LOGGING_ON
        stored = user.secret_hash if user is not None else _DUMMY_HASH
        task = asyncio.get_running_loop().run_in_executor(None, verify_secret, stored, msg.secret)
        self._logon_task = asyncio.ensure_future(self._logon_verified(msg, task))

    async def _logon_verified(self, msg: Logon, verified: asyncio.Future[bool]) -> None:
        ok = await verified
        if self.closed:
            return
        now = time.time_ns()
        cfg = self.router.cfg
        user = cfg.users.get(msg.user)
        reason = None
        if user is None or not ok:
            reason = Reason.LOCKED_OUT if self.lockout.failed(msg.user, now) else Reason.AUTH_FAILED
        elif not ip_allowed(user.ip_allow, self.peer):
            reason = Reason.IP_NOT_ALLOWED
        else:
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
        if reason is not None:
            self._refuse(msg.user, reason)
            return
        assert user is not None
        self.lockout.succeeded(msg.user)
        self.user = msg.user
        self.accounts = frozenset(asked)
        self.automated = user.automated
        self.cancel_on_disconnect = effective_cancel_on_disconnect(user, msg)
        hb = msg.heartbeat_s if 0 < msg.heartbeat_s <= cfg.gateway.heartbeat_s else cfg.gateway.heartbeat_s
        self.heartbeat_ns = int(hb * 1e9)
        self.state = State.ACTIVE
        self.router.engine.register_session(self.session_id, self.automated)
        self.router.add_session(self)
        day = trading_day_number(now, self.router.cfg.risk.day_boundary_s)
        self.send(LogonAck(self.session_id, day_as_yyyymmdd(day), now))
        log.info("logon", session=self.session_id, user=self.user, peer=self.peer,
                 accounts=sorted(self.accounts), cancel_on_disconnect=self.cancel_on_disconnect)

    def _refuse(self, user: str, reason: Reason) -> None:
        log.warning("logon refused", session=self.session_id, user=user, peer=self.peer,
                    reason=reason.name)
        self.send(LogonReject(int(reason), reason.description))
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
            if now_mono - self.last_in > 10 * 1_000_000_000:
                self.send(Logout("no logon within 10 s", int(Reason.NOT_LOGGED_ON)))
                self.close()
            return
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
