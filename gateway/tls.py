"""TLS on every port: contexts built from ``gateway.toml``, an acceptor that refuses a plaintext
or unknown peer cleanly, and the user a client certificate stands for (mutual TLS).

Theory of operation
-------------------
Each listener (the native client port ``[gateway.tls]``, the admin plane ``[admin.tls]``, the
FIX port) and the exchange link (``[exchange.tls]``, the gateway as a TLS *client*) is plaintext
unless its table names a certificate. The tables decode into the typed structs below; the
paths are relative to the config file, and ``check_server`` / ``check_client`` build the context
once at load time, so a missing file, a key that does not match its certificate or a bad CA
bundle is a ``ConfigError`` naming the file and the field (``gateway.tls.key``), never a
traceback at the first connection.

The acceptor (``create_server``): a TLS listener accepts sockets itself and runs each one's
handshake on a task of its own (``loop.connect_accepted_socket``), so it learns of every
failure. Only a connection whose handshake
succeeds — and, with mutual TLS, whose certificate maps to a known user — ever reaches the
application protocol (a ``ClientSession``, the admin plane's HTTP handler, the FIX session).
A handshake that fails (a plaintext client, a certificate the CA did not sign, no certificate
when one is required, a handshake that takes longer than ``handshake_timeout_s``) is logged
once, as one warning line naming the port, the peer and why, and the connection is closed; no
traceback, and no other connection notices. A client stuck retrying gets one line a minute per
address and reason (with the number refused meanwhile), so it cannot flood the log; every
refusal is counted (``fengkong_tls_handshake_failures_total``). Letting asyncio wrap the listener itself
(``create_server(ssl=...)``) would drop such a connection silently, in debug mode only saying
so: the operator would never learn that a client is misconfigured.

After the handshake the application protocol is attached to the TLS transport directly: the
per-message cost is the TLS record layer itself (encrypt, decrypt, one extra buffer copy in
uvloop's SSL protocol), nothing of ours. ``bench/RESULTS.md`` has the measured cost.

Mutual TLS (``client_ca`` set): every client must present a certificate signed by that CA. Its
user is its subject CN (``client_identity = "cn"``) or, for certificates whose CN means nothing
to us, the SHA-256 fingerprint of the certificate looked up in ``fingerprints``
(``client_identity = "fingerprint"``). A certificate that maps to no known user is refused at
the handshake, like a failed one. The application protocol gets the user in its ``peer_user``
attribute before ``connection_made``; the native session then accepts a ``Logon`` only for that
user (the secret is still checked: a stolen key alone does not trade).

Bounds: connections in the handshake are capped per listener (``max_handshakes``; more are
refused at once), and each handshake is bounded in time, so a flood of half-open TLS
connections holds neither memory nor file descriptors for long.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

import msgspec
import structlog

from checks.config import ConfigError

log = structlog.get_logger("fengkong.tls")
LOG_EVERY_S = 60.0  # a refused peer's line at most this often per address and reason
LOG_KEYS_KEPT = 4096  # addresses and reasons remembered for that

__all__ = ["ServerTls", "TlsClientConfig", "TlsServer", "TlsServerConfig", "UnknownPeer",
           "check_client", "check_server", "client_context", "create_server", "fingerprint",
           "peer_user", "server_context"]


class TlsServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A listener's TLS (``[gateway.tls]``, ``[admin.tls]``); no ``cert``: plaintext."""

    cert: str = ""  # PEM certificate chain, leaf first (relative to the config file)
    key: str = ""  # PEM private key of the certificate
    # Mutual TLS: clients must present a certificate signed by a CA in this PEM bundle.
    client_ca: str = ""
    # How a client certificate names its user: its subject CN, or its SHA-256 fingerprint
    # looked up in ``fingerprints`` (hex, colons and case ignored) -> user name.
    client_identity: Literal["cn", "fingerprint"] = "cn"
    fingerprints: dict[str, str] = {}
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    handshake_timeout_s: float = 10.0
    max_handshakes: int = 256  # connections in the handshake at once; more are refused

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


class TlsClientConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The exchange link's TLS (``[exchange.tls]``); no ``ca``: plaintext."""

    ca: str = ""  # PEM bundle of the CA(s) that sign the exchange's certificate
    server_name: str = ""  # name checked against the certificate (default: the host)
    cert: str = ""  # a client certificate, if the exchange asks for one
    key: str = ""
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    @property
    def enabled(self) -> bool:
        return bool(self.ca)


_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as lower-case hex (how ``fingerprints`` keys are kept)."""
    return hashlib.sha256(der).hexdigest()


def _norm_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").lower()


def _resolve(base: Path, path: str) -> str:
    return str(base / path) if path else ""


def _need_files(source: str, where: str, **paths: str) -> None:
    """Each named file exists and is readable, else a ConfigError naming its field (OpenSSL's
    own errors do not say which of the files it was)."""
    for field, path in paths.items():
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as err:
            problem = "no such file" if isinstance(err, FileNotFoundError) else \
                f"cannot read it ({err.strerror})"
            raise ConfigError(source, f"{where}.{field}", f"{problem}: {path}") from None


def _load_problem(err: Exception) -> str:
    if isinstance(err, ssl.SSLError):
        return f"not usable: {err.reason or err}"
    if isinstance(err, OSError):
        return f"cannot read {err.filename or 'the file'}: {err.strerror}"
    return str(err)


def server_context(cfg: TlsServerConfig | None, source: str = "<config>",
                   where: str = "tls") -> ssl.SSLContext | None:
    """The listener's context (None: plaintext). Errors name ``source`` and ``where.field``."""
    if cfg is None or not cfg.enabled:
        return None
    if not cfg.key:
        raise ConfigError(source, f"{where}.key", "a certificate needs its private key (key = ...)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION  # a client may not make us redo handshakes (TLS 1.2)
    _need_files(source, where, cert=cfg.cert, key=cfg.key, client_ca=cfg.client_ca)
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(source, f"{where}.cert", f"{_load_problem(err)} (does the key belong "
                                                   "to the certificate? both PEM?)") from None
    if cfg.client_ca:
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(source, f"{where}.client_ca", _load_problem(err)) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(cfg: TlsClientConfig | None, source: str = "<config>",
                   where: str = "exchange.tls") -> ssl.SSLContext | None:
    """The exchange link's context (None: plaintext): the server's certificate is verified
    against ``ca`` and its name checked."""
    if cfg is None or not cfg.enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname
    ctx.minimum_version = _VERSIONS[cfg.min_version]
    _need_files(source, where, ca=cfg.ca, cert=cfg.cert, key=cfg.key)
    try:
        ctx.load_verify_locations(cafile=cfg.ca)
    except (ssl.SSLError, OSError) as err:
        raise ConfigError(source, f"{where}.ca", _load_problem(err)) from None
    if cfg.cert or cfg.key:
        if not (cfg.cert and cfg.key):
            raise ConfigError(source, f"{where}.{'key' if cfg.cert else 'cert'}",
                              "a client certificate needs both cert and key")
        try:
            ctx.load_cert_chain(cfg.cert, cfg.key)
        except (ssl.SSLError, OSError) as err:
            raise ConfigError(source, f"{where}.cert", _load_problem(err)) from None
    return ctx


def check_server(cfg: TlsServerConfig, source: str, where: str, base: Path,
                 users: Collection[str] | None = None) -> TlsServerConfig:
    """``cfg`` with its paths made absolute (relative to ``base``, the config file's directory),
    checked by building its context once; ``users``: the names a client certificate may map to
    (checked against ``fingerprints``)."""
    if not (cfg.cert or cfg.key or cfg.client_ca or cfg.fingerprints):
        return cfg
    if not cfg.cert:
        raise ConfigError(source, f"{where}.cert", "TLS settings without a certificate: give "
                                                   "cert and key, or remove the table")
    if not 0 < cfg.handshake_timeout_s <= 300:
        raise ConfigError(source, f"{where}.handshake_timeout_s", "expected 0 < seconds <= 300")
    if not 1 <= cfg.max_handshakes <= 100_000:
        raise ConfigError(source, f"{where}.max_handshakes", "expected 1 .. 100000")
    if (cfg.fingerprints or cfg.client_identity == "fingerprint") and not cfg.client_ca:
        raise ConfigError(source, f"{where}.client_ca", "client certificates are mapped to users "
                                                        "only with mutual TLS: give client_ca")
    if cfg.client_identity == "fingerprint" and not cfg.fingerprints:
        raise ConfigError(source, f"{where}.fingerprints", "client_identity = \"fingerprint\" "
                                                           "needs at least one fingerprint")
    prints: dict[str, str] = {}
    for raw, user in cfg.fingerprints.items():
        fp = _norm_fingerprint(raw)
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise ConfigError(source, f"{where}.fingerprints.{raw}",
                              "expected a SHA-256 fingerprint: 64 hex digits (colons allowed)")
        if users is not None and user not in users:
            raise ConfigError(source, f"{where}.fingerprints.{raw}", f"unknown user {user!r}")
        prints[fp] = user
    out = msgspec.structs.replace(cfg, cert=_resolve(base, cfg.cert), key=_resolve(base, cfg.key),
                                  client_ca=_resolve(base, cfg.client_ca), fingerprints=prints)
    server_context(out, source, where)
    return out


def check_client(cfg: TlsClientConfig, source: str, where: str, base: Path) -> TlsClientConfig:
    """As ``check_server``, for the exchange link."""
    if not (cfg.ca or cfg.cert or cfg.key or cfg.server_name):
        return cfg
    if not cfg.ca:
        raise ConfigError(source, f"{where}.ca", "TLS to the exchange needs the CA bundle that "
                                                 "signs its certificate (ca = ...)")
    out = msgspec.structs.replace(cfg, ca=_resolve(base, cfg.ca), cert=_resolve(base, cfg.cert),
                                  key=_resolve(base, cfg.key))
    client_context(out, source, where)
    return out


class UnknownPeer(Exception):
    """A client certificate that maps to no known user."""


class ServerTls:
    """A listener's TLS: its context and how a client certificate maps to a user."""

    def __init__(self, cfg: TlsServerConfig, users: Collection[str] = (),
                 source: str = "<config>", where: str = "tls") -> None:
        ctx = server_context(cfg, source, where)
        if ctx is None:
            raise ValueError(f"{where}: no certificate configured")
        self.context = ctx
        self.cfg = cfg
        self.mutual = bool(cfg.client_ca)
        self.users = frozenset(users)
        self.by_fingerprint = {_norm_fingerprint(k): v for k, v in cfg.fingerprints.items()}

    @classmethod
    def optional(cls, cfg: TlsServerConfig | None, users: Collection[str] = (),
                 source: str = "<config>", where: str = "tls") -> ServerTls | None:
        return cls(cfg, users, source, where) if cfg is not None and cfg.enabled else None

    def user_of(self, transport: asyncio.BaseTransport) -> str | None:
        """The user the peer's certificate stands for (None: not mutual TLS); ``UnknownPeer``
        when it stands for nobody we know."""
        if not self.mutual:
            return None
        sslobj = transport.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            raise UnknownPeer("no client certificate")
        if self.cfg.client_identity == "fingerprint":
            fp = fingerprint(der)
            user = self.by_fingerprint.get(fp)
            if user is None:
                raise UnknownPeer(f"certificate sha256:{fp} is not in fingerprints")
            return user
        cn = _subject_cn(transport.get_extra_info("peercert") or {})
        if not cn or cn not in self.users:
            raise UnknownPeer(f"certificate CN {cn!r} is not a known user")
        return cn


def _subject_cn(cert: dict[str, Any]) -> str:
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return ""


def peer_user(transport: asyncio.BaseTransport | None) -> str | None:
    """The user a connection's client certificate was mapped to at the handshake (None: no
    mutual TLS on that port)."""
    if transport is None:
        return None
    proto = transport.get_protocol()
    return getattr(proto, "peer_user", None)


# ---------------------------------------------------------------------- the acceptor
class _Acceptor:
    """One TLS listener: accepts sockets itself, runs each handshake on a task of its own
    (bounded in number and time), logs and closes the ones that fail, and hands the others to
    the application protocol."""

    def __init__(self, tls: ServerTls, factory: Callable[[], asyncio.BaseProtocol], what: str,
                 sock: socket.socket) -> None:
        self.tls = tls
        self.factory = factory
        self.what = what
        self.sock = sock
        self.pending: set[asyncio.Task[None]] = set()
        self.handshakes = 0  # completed, ever
        self.failures = 0  # refused at the handshake, ever (plaintext, bad or unknown cert)
        self._task: asyncio.Task[None] | None = None
        # (address, what happened) -> (monotonic time of the last line, refusals not logged
        # since): a client stuck retrying in plaintext gets a line a minute, not one a try.
        self._logged: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()

    def refused(self, event: str, peer: str, **fields: Any) -> None:
        """Count a refused connection and log it — once per address and reason per
        ``LOG_EVERY_S``, with how many were refused meanwhile without a line."""
        self.failures += 1
        key = (peer.rpartition(":")[0] or peer, event, str(fields.get("error", "")))
        now = time.monotonic()
        seen = self._logged.get(key)
        if seen is not None and now - seen[0] < LOG_EVERY_S:
            seen[1] += 1
            return
        suppressed = int(seen[1]) if seen is not None else 0
        self._logged[key] = [now, 0]
        self._logged.move_to_end(key)
        if len(self._logged) > LOG_KEYS_KEPT:
            self._logged.popitem(last=False)
        log.warning(event, port=self.what, peer=peer, **fields,
                    **({"not_logged_since": suppressed} if suppressed else {}))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._accept(),
                                                            name=f"tls-accept-{self.what}")

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(self.sock)
            except OSError as err:  # out of file descriptors, ...: say so, do not spin
                log.error("TLS listener could not accept a connection", port=self.what,
                          error=str(err))
                await asyncio.sleep(0.1)
                continue
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            if len(self.pending) >= self.tls.cfg.max_handshakes:
                self.refused("TLS connection refused: too many handshakes in progress", peer,
                             max_handshakes=self.tls.cfg.max_handshakes)
                conn.close()
                continue
            conn.setblocking(False)
            task = loop.create_task(self._handshake(conn, peer))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _handshake(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: _Guard(self, peer), conn, ssl=self.tls.context,
                ssl_handshake_timeout=self.tls.cfg.handshake_timeout_s)
        except (OSError, EOFError) as err:  # SSLError and handshake timeouts are OSErrors
            # The loop closed the transport (and the socket with it).
            self.refused("TLS handshake failed; connection closed", peer, error=_why(err))

    def attach(self, guard: _Guard, transport: asyncio.BaseTransport) -> None:
        """Handshake done: map the certificate to a user (mutual TLS), then let the application
        protocol take the connection over, before any application data is delivered."""
        try:
            user = self.tls.user_of(transport)
        except UnknownPeer as err:
            self.refused("TLS client certificate refused; connection closed", guard.peer,
                         error=str(err))
            transport.abort()
            return
        self.handshakes += 1
        app = self.factory()
        if user is not None:
            app.peer_user = user  # type: ignore[attr-defined]
        transport.set_protocol(app)
        app.connection_made(transport)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self.pending):
            task.cancel()
        self.sock.close()


class _Guard(asyncio.Protocol):
    """The application protocol as far as the TLS layer knows, until the handshake is done."""

    def __init__(self, acceptor: _Acceptor, peer: str) -> None:
        self.acceptor = acceptor
        self.peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.acceptor.attach(self, transport)

    def data_received(self, data: bytes) -> None:
        pass  # only after a refused certificate, while the connection closes


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "?")


def _why(err: BaseException) -> str:
    if isinstance(err, ssl.SSLError):
        reason = err.reason or ""
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL",
                      "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
            return f"not a TLS client (plaintext on a TLS port?): {reason}"
        return reason or str(err)
    if isinstance(err, ConnectionAbortedError):
        return str(err) or "handshake timed out"
    if isinstance(err, (ConnectionResetError, EOFError)) and not str(err):
        return "closed by the peer before the handshake finished"
    return str(err) or type(err).__name__


class TlsServer:
    """What ``create_server`` returns: the listener, and the acceptor's counters when it is TLS."""

    def __init__(self, server: asyncio.Server | None, acceptor: _Acceptor | None) -> None:
        self.server = server
        self.acceptor = acceptor

    @property
    def sockets(self) -> list[socket.socket]:
        if self.acceptor is not None:
            return [self.acceptor.sock]
        assert self.server is not None
        return list(self.server.sockets)

    @property
    def handshake_failures(self) -> int:
        return self.acceptor.failures if self.acceptor is not None else 0

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.acceptor is not None:
            self.acceptor.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()


async def create_server(factory: Callable[[], asyncio.BaseProtocol], host: str, port: int,
                        tls: ServerTls | None, *, what: str, backlog: int = 128) -> TlsServer:
    """Listen on ``host:port``: plaintext when ``tls`` is None (the loop's own server), else
    through the acceptor (see the module docstring). ``what`` names the port in logs."""
    loop = asyncio.get_running_loop()
    if tls is None:
        return TlsServer(await loop.create_server(factory, host, port, backlog=backlog), None)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as err:  # worded as the loop's own server says it (the CLI names the port)
        raise OSError(err.errno, f"error while attempting to bind on address {(host, port)!r}: "
                                 f"{(err.strerror or str(err)).lower()}") from None
    sock.setblocking(False)
    acceptor = _Acceptor(tls, factory, what, sock)
    acceptor.start()
    return TlsServer(None, acceptor)
