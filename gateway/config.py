"""Gateway configuration: the risk config plus listeners, users, operators, exchange link.

One TOML file holds everything a deployment needs (``examples/gateway.toml``). The risk part is
``checks.model.RiskConfigFile``; this module adds the service sections and validates them the
same way: a mistake names the file, the field path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from checks.config import ConfigError, decode_toml, resolve
from checks.model import RiskConfig, RiskConfigFile
from gateway.auth import check_secret_hash
from gateway.protocol import DEFAULT_MAX_FRAME, MAX_APP_ID_BYTES
from gateway.tls import TlsClientConfig, TlsServerConfig, check_client, check_server


class ListenerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    id: str = "gw1"
    host: str = "127.0.0.1"
    port: int = 9100
    max_frame: int = DEFAULT_MAX_FRAME
    heartbeat_s: float = 5.0  # the most a client may ask for; it may ask for less
    idle_timeout_factor: float = 3.0  # no inbound traffic for this many heartbeats: disconnect
    max_client_buffer: int = 8 * 1024 * 1024  # bytes queued to a slow client before it is dropped
    reject_storm: int = 200  # rejects in one second from one session that trip its kill switch
    cancel_all_on_shutdown: bool = False
    # A connection must log on within this time (whatever it sends meanwhile), or is closed.
    logon_timeout_s: float = 10.0
    # Connections not logged on yet: at most this many from one address (more are refused) and
    # in all (the oldest idle one of the busiest address is closed to make room).
    max_unauthenticated_per_source: int = 16
    max_unauthenticated: int = 256
    # TLS on the client port (``gateway.tls``: certificate, key, optional mutual TLS).
    tls: TlsServerConfig = TlsServerConfig()


class ExchangeLinkConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 9200
    user: str = "gateway"
    secret: str = ""
    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 2.0
    heartbeat_s: float = 5.0
    # Working orders the exchange reports at reconciliation that the gateway does not know
    # (placed by an earlier instance whose journal is gone, or by hand on the seat): "cancel"
    # them, or "adopt" them into the book under their account when the risk checks accept
    # them (cancelled otherwise). Either way a CRITICAL alert names each one.
    unknown_orders: Literal["cancel", "adopt"] = "cancel"
    # TLS to the exchange: the CA that signs its certificate (``gateway.tls``).
    tls: TlsClientConfig = TlsClientConfig()
    # Relay each client session's terminal information (穿透式监管) to the exchange as a
    # TerminalInfo message (gateway.terminal); off only for an exchange side that lacks it.
    relay_terminal_info: bool = True


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 9300
    tls: TlsServerConfig = TlsServerConfig()  # HTTPS (and, optionally, client certificates)


class AuthConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    max_failures: int = 5
    failure_window_s: float = 60.0
    lockout_s: float = 300.0
    # max_failures counts per (user, source address). Firm-wide guard: past this many failures
    # in failure_window_s (all users, all addresses), only addresses that have logged on
    # successfully before may try.
    firm_max_failures: int = 100
    max_failure_entries: int = 10_000  # the failure and lockout tables hold at most this many
    # Secret hashes computed at once (each scrypt hash at N = 2**17 takes 128 MiB).
    max_concurrent_hashes: int = 2


class AppConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A client application registered for a user (穿透式监管): its id and auth code, the
    code stored hashed like a secret (``fengkong hash-secret``)."""

    app_id: str
    auth_code_hash: str


class UserConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str
    secret_hash: str
    accounts: list[str]
    ip_allow: list[str] = []
    automated: bool = True  # an algo (programmatic) session: needs a confirmed registration
    cancel_on_disconnect: bool | None = None  # None: as the client asks at logon
    # Registered applications: when there are any, a Logon must name one of them with its
    # auth code (else LogonReject 110 APP_NOT_REGISTERED); none: any application may log on.
    apps: list[AppConfig] = []


class ComplianceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The programmatic-trading registry (``gateway.compliance.registry``)."""

    # A report found in need of correction (alert 1314) that is not corrected within this
    # many seconds sends its account close-only (art. 11).
    correction_grace_s: float = 86_400.0
    # The programmatic-behaviour standard for unregistered accounts and account groups.
    programmatic_per_sec: int = 10
    programmatic_occasions: int = 10


class OperatorConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    name: str
    token_hash: str  # gateway.auth.hash_token(token)
    role: Literal["viewer", "risk", "admin"]


class JournalConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    dir: str = ""  # empty: no journal (tests and demos only)
    fsync: Literal["record", "interval", "os"] = "interval"  # see gateway.journal.FsyncPolicy
    fsync_interval_ms: int = 5
    # Business records are kept at least 5 years (security rules, rule 18); whole segments
    # older than this are pruned at start and daily.
    retention_days: int = 1826


class KafkaConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    bootstrap: str = ""  # empty: Kafka off
    audit_topic: str = "fengkong.audit"
    alerts_topic: str = "fengkong.alerts"
    dropcopy_topic: str = "fengkong.dropcopy"
    control_topic: str = "fengkong.control"
    idempotent: bool = True


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # Per-account series on /metrics carry the account's id for at most this many accounts
    # (the busiest by messages today); the rest are summed under account="other".
    max_accounts: int = 50
    loop_lag_interval_s: float = 0.25  # how often the event loop's lag is measured
    # /metrics names accounts and their funds: it wants an operator token (any role; Prometheus
    # sends it with `authorization: {credentials_file: ...}`). false: open to anyone who can
    # reach the admin port. /healthz and /readyz never need one.
    require_token: bool = True


class FixSessionConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One FIX session: a SenderCompID/TargetCompID pair bound to a user (README, "FIX")."""

    sender_comp_id: str  # the gateway's CompID on this session (the client's TargetCompID 56)
    target_comp_id: str  # the client's CompID (its SenderCompID 49)
    user: str  # [[users]].name: Username (553) must name it, Password (554) is its secret
    kind: Literal["order_entry", "drop_copy"] = "order_entry"
    # drop_copy: the accounts whose execution reports it receives ("*": every account);
    # order_entry: empty (the user's accounts).
    accounts: list[str] = []


class FixConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The FIX 4.4 acceptor (``gateway.fix``): off unless enabled (or ``serve --fix-port``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 9400
    max_message: int = 65536  # bytes; a longer message ends its session (Logout)
    max_heartbeat_s: int = 60  # the longest HeartBtInt (108) a client may ask for
    # Garbled messages (bad BeginString, BodyLength or CheckSum) in a row, with no good one in
    # between, before the session is logged out.
    garbled_limit: int = 20
    # Where the per-session message stores live; empty: beside the journal directory
    # ("<journal.dir>.fix"); with no journal the stores are in memory only.
    store_dir: str = ""
    # TLS on the FIX port, as on the native one (certificate, key, optional mutual TLS).
    tls: TlsServerConfig = TlsServerConfig()
    sessions: list[FixSessionConfig] = []


class GatewayConfigFile(RiskConfigFile, forbid_unknown_fields=True, kw_only=True, frozen=True):
    # The risk sections may live in a file of their own, shared with the exchange simulator
    # (path relative to this file); this file may then override only ``[firm]``.
    risk_config: str = ""
    gateway: ListenerConfig = ListenerConfig()
    exchange: ExchangeLinkConfig = ExchangeLinkConfig()
    admin: AdminConfig = AdminConfig()
    auth: AuthConfig = AuthConfig()
    users: list[UserConfig] = []
    operators: list[OperatorConfig] = []
    journal: JournalConfig = JournalConfig()
    kafka: KafkaConfig = KafkaConfig()
    metrics: MetricsConfig = MetricsConfig()
    fix: FixConfig = FixConfig()
    compliance: ComplianceConfig = ComplianceConfig()


class GatewayConfig(msgspec.Struct, kw_only=True):
    source: str
    risk: RiskConfig
    gateway: ListenerConfig
    exchange: ExchangeLinkConfig
    admin: AdminConfig
    auth: AuthConfig
    users: dict[str, UserConfig]
    operators: list[OperatorConfig]
    journal: JournalConfig
    kafka: KafkaConfig
    metrics: MetricsConfig = MetricsConfig()
    fix: FixConfig = FixConfig()
    compliance: ComplianceConfig = ComplianceConfig()


def load_gateway_config(path: str | Path, data: bytes | None = None) -> GatewayConfig:
    source = str(path)
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise ConfigError(source, "", f"cannot read the file: {err.strerror}") from None
    file = decode_toml(data, GatewayConfigFile, source)
    if file.risk_config:
        risk_path = Path(path).parent / file.risk_config
        present = set(msgspec.toml.decode(data))
        for key in sorted(present & (set(RiskConfigFile.__struct_fields__) - {"firm"})):
            raise ConfigError(source, key, f"risk sections live in {file.risk_config!r} "
                                           "(risk_config); only [firm] may be overridden here")
        try:
            risk_data = risk_path.read_bytes()
        except OSError as err:
            raise ConfigError(source, "risk_config", f"cannot read {risk_path}: {err.strerror}") from None
        risk_file = decode_toml(risk_data, RiskConfigFile, str(risk_path))
        if "firm" in present:
            risk_file = msgspec.structs.replace(risk_file, firm=file.firm)
        risk = resolve(risk_file, str(risk_path))
    else:
        risk = resolve(file, source)
    accounts = {a.id for a in risk.accounts}
    users: dict[str, UserConfig] = {}
    for n, user in enumerate(file.users):
        where = f"users[{n}]"
        if user.name in users:
            raise ConfigError(source, f"{where}.name", f"duplicate user {user.name!r}")
        problem = check_secret_hash(user.secret_hash)
        if problem:
            raise ConfigError(source, f"{where}.secret_hash", problem)
        for j, acc in enumerate(user.accounts):
            if acc not in accounts:
                raise ConfigError(source, f"{where}.accounts[{j}]", f"unknown account {acc!r}")
        seen_apps: set[str] = set()
        for j, app in enumerate(user.apps):
            at = f"{where}.apps[{j}]"
            if not 1 <= len(app.app_id.encode()) <= MAX_APP_ID_BYTES:
                raise ConfigError(source, f"{at}.app_id",
                                  f"expected 1 to {MAX_APP_ID_BYTES} bytes")
            if app.app_id in seen_apps:
                raise ConfigError(source, f"{at}.app_id", f"duplicate app id {app.app_id!r}")
            seen_apps.add(app.app_id)
            problem = check_secret_hash(app.auth_code_hash)
            if problem:
                raise ConfigError(source, f"{at}.auth_code_hash", problem)
        users[user.name] = user
    for n, op in enumerate(file.operators):
        if not op.token_hash.startswith("sha256$"):
            raise ConfigError(source, f"operators[{n}].token_hash",
                              "expected 'sha256$...' (make one with `fengkong hash-token`)")
    g = file.gateway
    if not 0 < g.max_frame <= 16 * 1024 * 1024:
        raise ConfigError(source, "gateway.max_frame", "expected 1 .. 16777216 bytes")
    if file.kafka.bootstrap and not file.journal.dir:
        raise ConfigError(source, "kafka.bootstrap", "Kafka publishes from the journal: set "
                                                     "[journal].dir too")
    if file.journal.retention_days < 1826:
        raise ConfigError(source, "journal.retention_days",
                          "business records must be kept at least 5 years (1826 days)")
    if g.heartbeat_s <= 0:
        raise ConfigError(source, "gateway.heartbeat_s", "expected a number of seconds > 0")
    if not 0 < g.logon_timeout_s <= 300:
        raise ConfigError(source, "gateway.logon_timeout_s", "expected 0 < seconds <= 300")
    if not 1 <= g.max_unauthenticated_per_source <= g.max_unauthenticated <= 100_000:
        raise ConfigError(source, "gateway.max_unauthenticated_per_source",
                          "expected 1 <= max_unauthenticated_per_source <= max_unauthenticated "
                          "<= 100000")
    a = file.auth
    for name, value, low, high in (("max_failures", a.max_failures, 1, 1000),
                                   ("firm_max_failures", a.firm_max_failures, 1, 1_000_000),
                                   ("max_failure_entries", a.max_failure_entries, 100, 10_000_000),
                                   ("max_concurrent_hashes", a.max_concurrent_hashes, 1, 64)):
        if not low <= value <= high:
            raise ConfigError(source, f"auth.{name}", f"expected {low} .. {high}")
    for name, value in (("failure_window_s", a.failure_window_s), ("lockout_s", a.lockout_s)):
        if not 0 < value < float("inf"):
            raise ConfigError(source, f"auth.{name}", "expected a number of seconds > 0")
    m = file.metrics
    if not 0 <= m.max_accounts <= 10_000:
        raise ConfigError(source, "metrics.max_accounts", "expected 0 .. 10000 accounts")
    if not 0.01 <= m.loop_lag_interval_s <= 60:
        raise ConfigError(source, "metrics.loop_lag_interval_s", "expected 0.01 .. 60 seconds")
    _check_fix(source, file.fix, users, accounts)
    c = file.compliance
    if not 0 <= c.correction_grace_s <= 30 * 86_400:  # NaN fails this too
        raise ConfigError(source, "compliance.correction_grace_s",
                          "expected 0 .. 2592000 seconds (30 days)")
    for name, value in (("programmatic_per_sec", c.programmatic_per_sec),
                        ("programmatic_occasions", c.programmatic_occasions)):
        if not 1 <= value <= 100_000:
            raise ConfigError(source, f"compliance.{name}", "expected 1 .. 100000")
    # TLS: paths relative to this file, each context built once here so a bad file or key is
    # named now (file and field), not at the first connection.
    base = Path(path).parent
    g = msgspec.structs.replace(g, tls=check_server(g.tls, source, "gateway.tls", base, users))
    admin = msgspec.structs.replace(file.admin, tls=check_server(
        file.admin.tls, source, "admin.tls", base, {o.name for o in file.operators}))
    exchange = msgspec.structs.replace(file.exchange, tls=check_client(
        file.exchange.tls, source, "exchange.tls", base))
    fix = msgspec.structs.replace(file.fix, tls=check_server(file.fix.tls, source, "fix.tls",
                                                             base, users))
    return GatewayConfig(source=source, risk=risk, gateway=g, exchange=exchange,
                         admin=admin, auth=file.auth, users=users,
                         operators=list(file.operators), journal=file.journal, kafka=file.kafka,
                         metrics=m, fix=fix, compliance=c)


def _check_fix(source: str, fix: FixConfig, users: dict[str, UserConfig],
               accounts: set[str]) -> None:
    """``[fix]``: each session names a known user, a CompID pair used once, and for a drop
    copy known accounts (or "*")."""
    if not 0 <= fix.port <= 65535:
        raise ConfigError(source, "fix.port", "expected 0 .. 65535")
    if not 256 <= fix.max_message <= 16 * 1024 * 1024:
        raise ConfigError(source, "fix.max_message", "expected 256 .. 16777216 bytes")
    if not 1 <= fix.max_heartbeat_s <= 3600:
        raise ConfigError(source, "fix.max_heartbeat_s", "expected 1 .. 3600 seconds")
    if not 1 <= fix.garbled_limit <= 100_000:
        raise ConfigError(source, "fix.garbled_limit", "expected 1 .. 100000")
    pairs: set[tuple[str, str]] = set()
    for n, s in enumerate(fix.sessions):
        where = f"fix.sessions[{n}]"
        for name, value in (("sender_comp_id", s.sender_comp_id),
                            ("target_comp_id", s.target_comp_id)):
            if not value or len(value) > 64 or not value.isprintable() or "\x01" in value \
                    or not value.isascii():
                raise ConfigError(source, f"{where}.{name}",
                                  "expected 1 to 64 printable ASCII characters")
        if (s.sender_comp_id, s.target_comp_id) in pairs:
            raise ConfigError(source, f"{where}.target_comp_id",
                              f"the CompID pair {s.sender_comp_id}/{s.target_comp_id} is "
                              "already a session")
        pairs.add((s.sender_comp_id, s.target_comp_id))
        if s.user not in users:
            raise ConfigError(source, f"{where}.user", f"unknown user {s.user!r} (expected "
                              f"one of [[users]]: {', '.join(sorted(users)) or 'none'})")
        if s.kind == "order_entry" and s.accounts:
            raise ConfigError(source, f"{where}.accounts", "an order-entry session trades its "
                              "user's accounts; accounts are for drop_copy sessions")
        if s.kind == "drop_copy" and not s.accounts:
            raise ConfigError(source, f"{where}.accounts", "a drop-copy session needs the "
                              'accounts whose reports it receives (or ["*"])')
        for j, acc in enumerate(s.accounts):
            if acc != "*" and acc not in accounts:
                raise ConfigError(source, f"{where}.accounts[{j}]", f"unknown account {acc!r}")
