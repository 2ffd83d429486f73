"""What an engine answers: ``Decision`` for a new order, ``Outcome`` for everything else.

Both engines (``checks.engine`` and ``cext.engine``) build their answers with the functions
here, so a rejection's text and an alert's wording are produced by one piece of code and the
differential tests can compare answers field for field.

A *trigger* asks the caller to stop an account through the kill-switch path (docs/ARCHITECTURE.md §5):
the engine itself never changes state on a rejection, so when a rejection means "and stop the
account" (repeated orders, programmatic behaviour, loss limit) it says so and the gateway acts
— journaled and audited like an operator's kill. A decision's or an order event's ``trigger``
is about the order's account; market data concerns every account holding the instrument, so
its ``Outcome.triggers`` name the accounts.
"""

from __future__ import annotations

import msgspec

from checks.enums import AccountStatus, AlertLevel
from checks.reasons import Reason

# The status an automatic trigger puts the account in.
TRIGGER_STATUS: dict[int, int] = {
    Reason.REPEATED_ORDERS: AccountStatus.SUSPENDED,
    Reason.REPEATED_EXECUTIONS: AccountStatus.SUSPENDED,
    Reason.PROGRAMMATIC_UNREGISTERED: AccountStatus.SUSPENDED,
    Reason.LOSS_LIMIT: AccountStatus.CLOSE_ONLY,
}


class AlertEvent(msgspec.Struct, frozen=True, array_like=True, gc=False):
    level: int
    code: int
    scope: str  # "account:A001", "account:A001/rb2605", "group:G1/rb2605", ...
    text: str


class Decision(msgspec.Struct, array_like=True, gc=False):
    reason: int  # Reason.ACCEPTED (0) or the first failed check's code
    ref: int = -1  # the engine's order reference when accepted
    text: str = ""
    alerts: list[AlertEvent] | None = None
    trigger: int = 0  # a Reason for which the caller must stop the account (TRIGGER_STATUS)

    @property
    def accepted(self) -> bool:
        return self.reason == 0


class Outcome(msgspec.Struct, array_like=True, gc=False):
    """What ``apply``/``cancel_request``/``market_data`` produced besides the state change."""

    known: bool = True  # False: the order reference was unknown or finished; nothing changed
    finished: bool = False  # the order reached a final state with this event
    alerts: list[AlertEvent] | None = None
    trigger: int = 0  # a Reason for which the caller must stop the order's account
    # (account id, Reason) for each account the caller must stop: market data concerns every
    # account holding the instrument, so its stop requests name their accounts
    triggers: list[tuple[str, int]] | None = None


def accepted(ref: int, alerts: list[AlertEvent] | None) -> Decision:
    return Decision(0, ref, "", alerts, 0)


def rejected(reason: int, detail: str = "", trigger: int = 0) -> Decision:
    # Both engines pass Reason members: reading the member's description directly skips the
    # enum lookup ``Reason(reason)`` (~0.2 µs, most of a refusal's cost); a plain int still works.
    text = reason.description if type(reason) is Reason else Reason(reason).description
    if detail:
        text = f"{text} ({detail})"
    return Decision(reason, -1, text, None, trigger)


def warn(code: int, scope: str, what: str, count: int | str, limit: int | str) -> AlertEvent:
    """The warning that a counter (or a ratio, as text) reached the configured fraction of its
    limit."""
    name = code.name if type(code) is Reason else Reason(code).name
    return AlertEvent(AlertLevel.WARNING, Reason.THRESHOLD_WARNING, scope,
                      f"{name}: {what} at {count} of limit {limit}")


def alert(level: int, code: int, scope: str, text: str) -> AlertEvent:
    return AlertEvent(level, code, scope, text)


def warn_level(limit: int, fraction: float) -> int:
    """The count at which the warning fires: the fraction of the limit, at least 1."""
    level = int(limit * fraction)
    return level if level >= 1 else 1
