"""Trading-day checkpoints: what a restart needs from before today, in one journal record.

Theory of operation
-------------------
Positions and balances start each trading day from the broker's settlement (the configured
snapshot), so of everything before today a restart needs only what *carries over*: stops and
account states that stay in force until a person lifts them (kills, status, programmatic
registration, limit changes), the client sessions still logged on (a session that logged on
at 16:30 may trade at 21:05, in the next trading day), the Kafka control commands already
applied, the exchange-id state of the running instance, and the programmatic-trading registry
(reports, the versions in force, findings awaiting correction). The router asks for a checkpoint
at the first record of each new trading day (``Router.on_day_start``), and the gateway writes
one at start-up when the journal has none for today; it is journaled as
``State(kind="checkpoint")`` *before* that first record, with a digest of its own content.

Recovery (``gateway.recovery``) finds the newest checkpoint by reading segments from the
newest backwards, restores it and replays only the records after it, so restart time depends
on one day's flow, not on the years of retention behind it. A journal without a checkpoint
(written before they existed) is replayed from its first record, as before.

Working orders do not carry over: every order is good-for-day, and the exchange's own
session end finishes them. Should one survive anyway, reconciliation after the restart finds
it and the ``exchange.unknown_orders`` policy cancels or adopts it, with a CRITICAL alert.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import msgspec

from checks.enums import AccountStatus, KillScope, ProgReg
from checks.model import Limits
from gateway import journal as jr

if TYPE_CHECKING:
    from gateway.recovery import ReplaySession
    from gateway.server import Gateway

KIND = "checkpoint"
COMMAND_MEMORY = 10_000  # Kafka control command ids carried (newest); older ones are long done


class SessionMark(msgspec.Struct, array_like=True, frozen=True):
    session: int
    user: str
    accounts: list[str]
    automated: bool
    cancel_on_disconnect: bool


class KillMark(msgspec.Struct, array_like=True, frozen=True):
    scope: str  # firm | account | group | session | instrument | product
    key: str
    close_only: bool


class Checkpoint(msgspec.Struct, array_like=True, frozen=True):
    trading_day: int
    prefix: str  # exchange-id prefix of the instance running when it was taken
    order_seq: int
    max_session: int
    sessions: list[SessionMark]
    kills: list[KillMark]
    statuses: dict[str, str]  # account -> AccountStatus name (those not ACTIVE)
    registrations: dict[str, str]  # account -> ProgReg name (every account)
    limits: dict[str, Limits]  # accounts whose limits differ from the configuration
    command_ids: list[str]
    digest: str = ""  # sha256 of every other field, as encoded
    registry: bytes = b""  # gateway.compliance.registry.Registry.encode() (none before it)


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Checkpoint).decode


def _digest(cp: Checkpoint) -> str:
    return hashlib.sha256(_encode(msgspec.structs.replace(cp, digest=""))).hexdigest()[:32]


def take(gw: Gateway, trading_day: int, command_ids: list[str], max_session: int) -> Checkpoint:
    """The carried-over state of ``gw`` now."""
    engine, router = gw.engine, gw.router
    configured = {a.id: a.limits for a in gw.cfg.risk.accounts}
    sessions = [SessionMark(s.session_id, s.user, sorted(s.accounts),
                            bool(getattr(s, "automated", False)), s.cancel_on_disconnect)
                for s in router.sessions.values() if not s.closed]
    kills = [KillMark(KillScope(scope).name.lower(), gw.scope_name(scope, key), mode == 2)
             for scope, key, mode in engine.killed()]
    views = {a.id: engine.account_view(a.id) for a in gw.cfg.risk.accounts}
    cp = Checkpoint(
        trading_day, router.prefix, router.order_seq, max_session,
        sorted(sessions, key=lambda m: m.session), kills,
        {a: v["status"] for a, v in views.items() if v["status"] != AccountStatus.ACTIVE.name},
        {a: v["programmatic"] for a, v in views.items()},
        {a: lim for a, lim in gw.limits.items() if configured.get(a) != lim},
        command_ids[-COMMAND_MEMORY:], "",
        gw.registry.encode() if getattr(gw, "registry", None) is not None else b"")
    return msgspec.structs.replace(cp, digest=_digest(cp))


def record(cp: Checkpoint, now: int) -> jr.State:
    return jr.State(now, KIND, _encode(cp))


def decode(rec: jr.State) -> Checkpoint:
    """The checkpoint in a journal record; raises ValueError if it is not intact."""
    try:
        cp = _decode(rec.data)
    except msgspec.DecodeError as err:
        raise ValueError(f"checkpoint does not decode: {err}") from None
    if cp.digest != _digest(cp):
        raise ValueError("checkpoint digest does not match its content")
    return cp


def restore(gw: Gateway, cp: Checkpoint, sessions: dict[int, ReplaySession]) -> None:
    """Put ``gw`` (freshly built from configuration) in the checkpoint's state."""
    from gateway.recovery import ReplaySession

    engine, router = gw.engine, gw.router
    for a, reg in cp.registrations.items():
        engine.set_programmatic(a, ProgReg[reg])
    for a, status in cp.statuses.items():
        engine.set_status(a, AccountStatus[status])
    for a, lim in cp.limits.items():
        engine.set_limits(a, lim)
        gw.limits[a] = lim
    for k in cp.kills:
        scope = KillScope[k.scope.upper()]
        engine.kill(scope, int(k.key) if scope == KillScope.SESSION else k.key, k.close_only)
    for m in cp.sessions:
        s = ReplaySession(m.session, m.user, frozenset(m.accounts), m.cancel_on_disconnect,
                          m.automated)
        sessions[m.session] = s
        engine.register_session(m.session, m.automated)
        router.sessions[m.session] = s
    if getattr(gw, "registry", None) is not None:
        gw.registry.restore(cp.registry)
    router.prefix = cp.prefix
    router.order_seq = cp.order_seq
