"""The kill switch (应急处置): stop a scope, cancel what rests in it, and put it back.

One path for every stop, whoever asks: a risk officer through the admin plane, a fleet-wide
command from the Kafka control topic, or the gateway itself (reject storm, a trigger from the
risk engine such as repeated orders or the loss limit, exchange-link loss). Each action is
journaled and logged with the operator's identity *before* it takes effect, then:

1. the engine blocks the scope — from the very next message, new orders in it are rejected
   with the scope's reason code (or, in close-only mode, only opening orders);
2. every working order in the scope gets a cancel sent to the exchange;
3. an alert tells the alert listeners (Kafka, status) who did it and why, and tells the client
   sessions concerned (those that may trade an account in the scope) *what* changed, in a
   neutral sentence of its own: never the operator's name or the free-text reason.

Reset is an explicit, audited operator action; cancels are never blocked by a kill.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import structlog

from checks.enums import AccountStatus, AlertLevel, KillScope
from checks.reasons import Reason
from gateway import journal as jr

if TYPE_CHECKING:
    from gateway.router import Router

log = structlog.get_logger("fengkong.killswitch")

SCOPE_NAMES = {s.name.lower(): s for s in KillScope}
# Admin actions kept in memory for the status view (the journal keeps them all): triggers can
# fire all day (e.g. a reject storm per session), so the oldest are forgotten past this many.
HISTORY_KEPT = 1_000


class KillResult(msgspec.Struct):
    scope: str
    key: str
    cancels_sent: int  # left for the exchange now
    elapsed_us: float
    cancels_pending: int = 0  # held while the exchange link is down; sent first when it is back


class KillError(ValueError):
    """An unknown scope or key: nothing was changed."""


def parse_scope(scope: str) -> KillScope:
    try:
        return SCOPE_NAMES[scope.lower()]
    except KeyError:
        raise KillError(f"unknown scope {scope!r}; expected one of {', '.join(SCOPE_NAMES)}") from None


class KillSwitch:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.engine = router.engine
        router.trigger_handler = self.engine_trigger
        router.storm_handler = self.reject_storm
        self.history: list[dict] = []

    def _key(self, scope: KillScope, key: str) -> str | int:
        if scope == KillScope.FIRM:
            return ""
        if scope == KillScope.SESSION:
            try:
                return int(key)
            except ValueError:
                raise KillError(f"session ids are numbers, got {key!r}") from None
        return key

    def audit(self, operator: str, action: str, scope: KillScope, key: str, reason: str,
              now: int, command_id: str = "", *, emergency: bool = False,
              **args: object) -> None:
        """Journal (write-ahead) and log an operator's action: the one path every admin change
        takes, so the admin plane calls it rather than writing records itself. ``emergency``:
        the operator declared one (change control while a session is open)."""
        self.router.record(jr.AdminAction(now, operator, action, scope.name.lower(), str(key),
                                           dict(args), reason, emergency, command_id))
        entry = {"ts_ns": now, "operator": operator, "action": action,
                 "scope": scope.name.lower(), "key": str(key), "reason": reason,
                 "emergency": emergency, **args}
        self.history.append(entry)
        if len(self.history) > HISTORY_KEPT:
            del self.history[0]
        log.warning("admin action", **entry)

    def kill(self, scope: KillScope | str, key: str = "", *, operator: str, reason: str = "",
             close_only: bool = False, now: int | None = None,
             command_id: str = "") -> KillResult:
        scope = parse_scope(scope) if isinstance(scope, str) else scope
        now = time.time_ns() if now is None else now
        started = time.perf_counter()
        k = self._key(scope, key)
        try:
            refs = self.engine.kill(scope, k, close_only)
        except KeyError as err:
            raise KillError(str(err).strip("'\"")) from None
        self.audit(operator, "kill", scope, key, reason, now, command_id, close_only=close_only)
        if scope == KillScope.SESSION:
            refs = self.router.session_refs(int(k))
        sent, held = self.router.cancel_refs(refs, f"kill {scope.name.lower()} {key}", now)
        elapsed = (time.perf_counter() - started) * 1e6
        self.router.alert(AlertLevel.CRITICAL, Reason.KILL_SWITCH, _scope_text(scope, key),
                          f"kill switch engaged by {operator}"
                          f"{' (close-only)' if close_only else ''}: {reason or 'no reason given'};"
                          f" {sent} cancels sent"
                          f"{f', {held} held until the exchange link is back' if held else ''}",
                          now, client_text=_client_kill_text(scope, key, close_only))
        return KillResult(scope.name.lower(), str(key), sent, elapsed, held)

    def reset(self, scope: KillScope | str, key: str = "", *, operator: str, reason: str = "",
              now: int | None = None, command_id: str = "") -> None:
        scope = parse_scope(scope) if isinstance(scope, str) else scope
        now = time.time_ns() if now is None else now
        k = self._key(scope, key)
        try:
            self.engine.reset(scope, k)
        except KeyError as err:
            raise KillError(str(err).strip("'\"")) from None
        self.audit(operator, "reset", scope, key, reason, now, command_id)
        self.router.alert(AlertLevel.WARNING, Reason.KILL_SWITCH, _scope_text(scope, key),
                          f"kill switch reset by {operator}: {reason or 'no reason given'}", now,
                          client_text=f"{_client_scope(scope, key)}: the kill switch is lifted; "
                                      "new orders are accepted again")

    def set_status(self, account: str, status: AccountStatus | str, *, operator: str,
                   reason: str = "", now: int | None = None, emergency: bool = False) -> int:
        """Set an account's trading state; stopping it also cancels what it has working."""
        if isinstance(status, str):
            try:
                status = AccountStatus[status.upper()]
            except KeyError:
                raise KillError(f"unknown status {status!r}; expected ACTIVE, CLOSE_ONLY or "
                                "SUSPENDED") from None
        now = time.time_ns() if now is None else now
        try:
            self.engine.set_status(account, status)
        except KeyError as err:
            raise KillError(str(err).strip("'\"")) from None
        self.audit(operator, "set_status", KillScope.ACCOUNT, account, reason, now,
                    emergency=emergency, status=status.name)
        sent = 0
        if status != AccountStatus.ACTIVE:
            refs = self.engine.open_orders(KillScope.ACCOUNT, account,
                                           status == AccountStatus.CLOSE_ONLY)
            sent = sum(self.router.cancel_refs(refs, f"account {account} set {status.name}", now))
        self.router.alert(AlertLevel.CRITICAL if status != AccountStatus.ACTIVE else AlertLevel.INFO,
                          Reason.KILL_SWITCH, f"account:{account}",
                          f"account set {status.name} by {operator}: {reason or 'no reason given'}",
                          now, client_text=f"account {account}: {_STATUS_TEXT[status]}")
        return sent

    # -- fleet-wide commands from the Kafka control topic
    async def control_command(self, cmd) -> None:  # noqa: ANN001 - gateway.kafka_bus.ControlCommand
        operator = f"kafka:{cmd.operator or 'unknown'}"
        if cmd.action == "kill":
            self.kill(cmd.scope_kind, cmd.scope_value, operator=operator, reason=cmd.reason,
                      command_id=cmd.command_id)
        else:
            self.reset(cmd.scope_kind, cmd.scope_value, operator=operator, reason=cmd.reason,
                       command_id=cmd.command_id)

    # -- automatic triggers: the same path, with the gateway as the operator
    def engine_trigger(self, account: str, reason: int, status: int) -> None:
        if not status:
            return
        self.set_status(account, AccountStatus(status), operator="engine",
                        reason=f"{Reason(reason).name}: {Reason(reason).description}")

    def reject_storm(self, session_id: int) -> None:
        text = f"{self.router.cfg.gateway.reject_storm} rejects within one second"
        self.router.alert(AlertLevel.CRITICAL, Reason.REJECT_STORM, f"session:{session_id}",
                          text, client_text=f"this session: {text}; its orders are stopped")
        self.kill(KillScope.SESSION, str(session_id), operator="engine",
                  reason="reject storm")


def _scope_text(scope: KillScope, key: str) -> str:
    return "firm" if scope == KillScope.FIRM else f"{scope.name.lower()}:{key}"


# What a client hears (gateway.router.Router.alert): what changed for its trading, in the same
# words whoever asked and why — the risk desk's alert keeps the operator and the reason.
_STATUS_TEXT = {
    AccountStatus.ACTIVE: "trading allowed again",
    AccountStatus.CLOSE_ONLY: "set close-only: opening orders are refused, working opening orders "
                              "cancelled",
    AccountStatus.SUSPENDED: "suspended: new orders are refused, working ones cancelled",
}


def _client_scope(scope: KillScope, key: str) -> str:
    if scope == KillScope.FIRM:
        return "all trading"
    if scope == KillScope.SESSION:
        return "this session"
    return f"{scope.name.lower()} {key}"


def _client_kill_text(scope: KillScope, key: str, close_only: bool) -> str:
    if close_only:
        return (f"{_client_scope(scope, key)}: stopped by the kill switch (close-only): opening "
                "orders are refused and working opening orders cancelled")
    return (f"{_client_scope(scope, key)}: stopped by the kill switch: new orders are refused and "
            "working ones cancelled")
