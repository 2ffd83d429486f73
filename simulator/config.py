"""The exchange simulator's configuration: member seats, latency model and fault plan.

The simulator reads the same TOML file as the risk gateway: instruments and exchange rules come
from the risk part (``checks.config``), and an optional ``[sim]`` table adds what only the
simulator needs::

    [sim]
    md_interval_s = 1.0            # market data to every seat at this interval (0 = only on trades)
    tls = { cert = "exchange.pem", key = "exchange.key" }   # TLS on the member port (optional)
    ack_only = false               # capacity mode: acknowledge every order without a book
    fill_on_ack = false            # ... and fill it at once at its own price
    members = [{ user = "GW1", secret = "s3cret" }]   # none = accept any user/secret

    [sim.latency]                  # per-leg delays in milliseconds (all zero by default)
    entry_ms = 0.0                 # order/cancel entry: before the engine sees it
    ack_ms = 0.0                   # NEW / REJECTED acknowledgements
    fill_ms = 0.0                  # TRADE reports
    cancel_ms = 0.0                # CANCELED reports and cancel rejects

    [sim.faults]                   # see FaultPlan
    reject_fraction = 0.0
    seed = 1

The risk part is decoded with the risk loader's own types, so a mistake there is reported
exactly as the gateway would report it; the ``[sim]`` table is decoded into the structs below
with unknown fields forbidden, and its errors name the file and the field too. Other top-level
tables (the gateway's own settings) are ignored here.
"""

from __future__ import annotations

import math
import ssl
from pathlib import Path
from typing import TypeVar

import msgspec

from checks.config import ConfigError, decode_toml, resolve
from checks.model import RiskConfig, RiskConfigFile

_RISK_KEYS = frozenset(RiskConfigFile.__struct_fields__)
T = TypeVar("T")


class Member(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A member seat allowed to log on (the gateway's exchange link is one)."""

    user: str
    secret: str


class LatencyModel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Per-leg delays, milliseconds. Reports to one seat are never reordered by delays."""

    entry_ms: float = 0.0
    ack_ms: float = 0.0
    fill_ms: float = 0.0
    cancel_ms: float = 0.0

    @property
    def zero(self) -> bool:
        return not (self.entry_ms or self.ack_ms or self.fill_ms or self.cancel_ms)


class FaultPlan(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the exchange does wrong on purpose; the server consults it for every message.

    - ``reject_fraction``: this fraction of new orders is rejected (EXCHANGE_REJECT, 1202)
      before reaching the book, drawn from a ``random.Random(seed)``;
    - ``extra_latency_ms``: added to every report leg on top of the latency model;
    - ``drop_after``: close a seat's connection (abruptly, no Logout) once it has sent this many
      messages after its Logon; ``None`` = never;
    - ``silent``: stop acknowledging — swallow new orders and cancels without any answer
      (heartbeats are still answered, as a hung matching engine behind a live gateway would);
    - ``users``: apply the plan only to these seats (empty = every seat).
    """

    reject_fraction: float = 0.0
    seed: int = 1
    extra_latency_ms: float = 0.0
    drop_after: int | None = None
    silent: bool = False
    users: list[str] = []

    def applies_to(self, user: str) -> bool:
        return not self.users or user in self.users

    @property
    def active(self) -> bool:
        return bool(self.reject_fraction or self.extra_latency_ms or self.drop_after is not None
                    or self.silent)


class SimTls(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """TLS on the member port (``[sim.tls]``; no ``cert``: plaintext), as a real exchange's
    front offers it. Paths are relative to the config file."""

    cert: str = ""  # PEM certificate chain, leaf first
    key: str = ""  # its PEM private key
    client_ca: str = ""  # members must present a certificate signed by this CA (mutual TLS)


def tls_context(tls: SimTls, source: str = "<sim config>") -> ssl.SSLContext | None:
    """The member port's server context (None: plaintext); a bad file names its field."""
    if not tls.cert and not tls.key and not tls.client_ca:
        return None
    if not (tls.cert and tls.key):
        raise ConfigError(source, f"sim.tls.{'key' if tls.cert else 'cert'}",
                          "TLS needs both cert and key")
    for field in ("cert", "key", "client_ca"):  # OpenSSL's errors do not say which file
        path = getattr(tls, field)
        if path and not Path(path).is_file():
            raise ConfigError(source, f"sim.tls.{field}", f"no such file: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for field, load in (("cert", lambda: ctx.load_cert_chain(tls.cert, tls.key)),
                        ("client_ca", lambda: ctx.load_verify_locations(cafile=tls.client_ca)
                         if tls.client_ca else None)):
        try:
            load()
        except (OSError, ssl.SSLError) as err:
            what = err.reason if isinstance(err, ssl.SSLError) else err.strerror
            raise ConfigError(source, f"sim.tls.{field}", f"cannot load it: {what}") from None
    if tls.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class SimConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    members: list[Member] = []
    tls: SimTls = SimTls()
    md_interval_s: float = 1.0
    ack_only: bool = False
    fill_on_ack: bool = False
    max_frame: int = 64 * 1024
    latency: LatencyModel = msgspec.field(default_factory=LatencyModel)
    faults: FaultPlan = msgspec.field(default_factory=FaultPlan)


def check_sim_config(sim: SimConfig, source: str = "<sim config>") -> SimConfig:
    """What types cannot say: finite non-negative delays, a fraction in [0, 1]."""
    for name in ("entry_ms", "ack_ms", "fill_ms", "cancel_ms"):
        value = getattr(sim.latency, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(source, f"sim.latency.{name}", f"expected a number >= 0, got {value}")
    f = sim.faults
    if not 0.0 <= f.reject_fraction <= 1.0:
        raise ConfigError(source, "sim.faults.reject_fraction", f"expected a fraction in [0, 1], got {f.reject_fraction}")
    if not (math.isfinite(f.extra_latency_ms) and f.extra_latency_ms >= 0):
        raise ConfigError(source, "sim.faults.extra_latency_ms", "expected a number >= 0")
    if f.drop_after is not None and f.drop_after < 0:
        raise ConfigError(source, "sim.faults.drop_after", "expected a whole number >= 0")
    if not (math.isfinite(sim.md_interval_s) and sim.md_interval_s >= 0):
        raise ConfigError(source, "sim.md_interval_s", "expected a number of seconds >= 0")
    users = [m.user for m in sim.members]
    if len(set(users)) != len(users):
        raise ConfigError(source, "sim.members", "duplicate member user")
    return sim


def load_sim_config(path: str | Path) -> tuple[RiskConfig, SimConfig]:
    """Read one TOML file: the risk part (instruments, exchange rules) and the ``[sim]`` table."""
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(source, "", f"cannot read the file: {err.strerror}") from None
    raw = decode_toml(data, dict, source)
    sim_raw = raw.pop("sim", {})
    risk_raw = {k: v for k, v in raw.items() if k in _RISK_KEYS}
    risk = resolve(_convert(risk_raw, RiskConfigFile, source, ""), source)
    sim = _convert(sim_raw, SimConfig, source, "sim")
    t = sim.tls
    sim.tls = msgspec.structs.replace(t, **{f: str(path.parent / getattr(t, f))
                                           for f in ("cert", "key", "client_ca") if getattr(t, f)})
    tls_context(sim.tls, source)  # a bad file is named now, not at the first connection
    return risk, check_sim_config(sim, source)


def _convert(raw: dict, type_: type[T], source: str, prefix: str) -> T:
    """``msgspec.convert`` with the risk loader's error shape: file, field path, problem."""
    try:
        return msgspec.convert(raw, type_)
    except msgspec.ValidationError as err:
        text, _, at = str(err).partition(" - at `")
        path = at.rstrip("`").removeprefix("$").removeprefix(".")
        where = ".".join(p for p in (prefix, path) if p) if not path.startswith("[") else prefix + path
        raise ConfigError(source, where, text) from None
