"""TLS on every port, with real processes and certificates made at test time (trustme).

One simulated exchange serves TLS on its member port; two gateways connect to it over TLS
(each on a seat of its own):

- ``tls_gateway``: TLS on the client port and HTTPS on the admin port — a native client
  trades through it, curl reads the admin plane over HTTPS, a plaintext client on either port
  is refused cleanly (one log line, no traceback) while the TLS client keeps trading;
- ``mtls_gateway``: mutual TLS on the client port, certificates mapped to users by subject CN —
  a certificate logs on as its own user only, and a certificate nobody knows (right CA, unknown
  CN; another CA; none) is refused at the handshake.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from simulator.client import Client, ConnectionClosed, LogonRejected
from tests.conftest import EXAMPLES, Proc, start_exchange, start_gateway

T = 10.0  # generous timeouts for a loaded machine (never asserted on)
VIEWER_TOKEN = "demo-viewer-token"


class Pki:
    """A CA for the gateway and exchange certificates and client certificates, another CA
    nobody trusts, all written as PEM files under ``dir``."""

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.ca = trustme.CA(organization_name="fengkong test CA")
        self.rogue = trustme.CA(organization_name="someone else")
        self.ca_pem = self._write("ca.pem", self.ca.cert_pem)
        for name in ("gateway", "exchange"):
            cert = self.ca.issue_cert("127.0.0.1", "localhost")
            self._write(f"{name}.pem", *cert.cert_chain_pems)
            self._write(f"{name}.key", cert.private_key_pem)

    def _write(self, name: str, *blobs: trustme.Blob) -> Path:
        path = self.dir / name
        path.write_bytes(b"".join(b.bytes() for b in blobs))
        return path

    def server_table(self, table: str, extra: str = "") -> str:
        """A TOML table giving a listener the gateway's certificate (and ``extra`` lines)."""
        return (f'\n[{table}]\ncert = "{self.dir / "gateway.pem"}"\n'
                f'key = "{self.dir / "gateway.key"}"\n{extra}')

    def client(self, cn: str | None, ca: trustme.CA | None = None) -> ssl.SSLContext:
        """A client context trusting our CA; with ``cn``, presenting a certificate for it."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if cn is not None:
            cert = (ca or self.ca).issue_cert(f"{cn}.clients.test", common_name=cn)
            cert.configure_cert(ctx)
        return ctx


def gateway_toml(tmp: Path, extra: str) -> Path:
    """The sample gateway config with ``extra`` tables appended (TLS), written to ``tmp``."""
    text = (EXAMPLES / "gateway.toml").read_text().replace(
        'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"')
    path = tmp / "gateway.toml"
    path.write_text(text + "\n" + extra)
    return path


def ports(gw: Proc) -> tuple[int, int]:
    return int(gw.match.group(1)), int(gw.match.group(2))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_exchange(pki):
    proc = start_exchange(0, "--tls-cert", str(pki.dir / "exchange.pem"),
                          "--tls-key", str(pki.dir / "exchange.key"))
    yield proc
    proc.stop()


def _start(tmp: Path, pki: Pki, exchange: Proc, seat: str, client_tls: str) -> Proc:
    config = gateway_toml(tmp, f"""
[exchange.tls]
ca = "{pki.ca_pem}"
{client_tls}
""")
    gw = start_gateway(int(exchange.match.group(1)), "--seat", seat, config=config)
    gw.wait_for("exchange link up")  # the link logged on and reconciled over TLS
    return gw


@pytest.fixture(scope="module")
def tls_gateway(pki, tls_exchange, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    gw = _start(tmp, pki, tls_exchange, "GWTLS",
                pki.server_table("gateway.tls") + pki.server_table("admin.tls"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def mtls_gateway(pki, tls_exchange, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    gw = _start(tmp, pki, tls_exchange, "GWMTLS", pki.server_table(
        "gateway.tls", f'client_ca = "{pki.ca_pem}"\nclient_identity = "cn"\n'))
    yield gw
    gw.stop()


async def _trade(client: Client, price: float) -> None:
    h = await client.send_order(account="A001", symbol="rb2605", side=Side.BUY, price=price,
                                qty=1)
    assert (await h.acked(timeout=T)).status == OrdStatus.NEW  # the exchange acknowledged it


async def _plaintext_logon(port: int) -> bytes:
    """Connect without TLS and send a native Logon frame; what comes back before the close."""
    from gateway.protocol import Logon, encode

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Logon("algo1", "algo-secret", [], 5.0, True)))
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), T)  # until the gateway closes it
    writer.close()
    return data


async def test_native_client_trades_over_tls_and_plaintext_is_refused_cleanly(pki, tls_gateway):
    port = ports(tls_gateway)[0]
    c = await Client.connect("127.0.0.1", port, "algo1", "algo-secret", tls=pki.client(None))
    await _trade(c, 3190.0)
    tls_gateway.output.clear()
    assert await _plaintext_logon(port) == b""  # closed, no frame answered in plaintext
    line = tls_gateway.wait_for(r".*TLS handshake failed.*", T).group(0)
    assert "not a TLS client" in line and '"port": "client"' in line, line
    await _trade(c, 3191.0)  # the TLS session did not notice
    # A client that does not trust the gateway's certificate refuses it (and the gateway logs it).
    with pytest.raises(ssl.SSLCertVerificationError):
        await Client.connect("127.0.0.1", port, "algo1", "algo-secret",
                             tls=ssl.create_default_context())
    await _trade(c, 3192.0)
    await c.close()
    assert not any("Traceback" in out for out in tls_gateway.output), tls_gateway.output


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_admin_plane_over_https_with_curl(pki, tls_gateway):
    url = f"https://127.0.0.1:{ports(tls_gateway)[1]}/v1/link"
    out = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(pki.ca_pem), "-H",
                          f"Authorization: Bearer {VIEWER_TOKEN}", url],
                         capture_output=True, text=True, timeout=T)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"exchange_link": "up"}
    # Plain HTTP on the HTTPS port: refused, logged once, no traceback.
    tls_gateway.output.clear()
    plain = subprocess.run(["curl", "-sS", url.replace("https:", "http:")],
                           capture_output=True, text=True, timeout=T)
    assert plain.returncode != 0
    tls_gateway.wait_for(r'"port": "admin".*TLS handshake failed', T)
    assert not any("Traceback" in out for out in tls_gateway.output)


def test_the_cli_talks_https_to_the_admin_plane(pki, tls_gateway):
    """`fengkong status --admin https://...` trusts the CA named by SSL_CERT_FILE; without it,
    one line saying the certificate was not verified, and no traceback."""
    base = f"https://127.0.0.1:{ports(tls_gateway)[1]}"
    cmd = [sys.executable, "-m", "gateway", "status", "--admin", base, "--token", VIEWER_TOKEN]
    env = {"PYTHONPATH": str(EXAMPLES.parent), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=T * 3, cwd=EXAMPLES.parent,
                        env={**env, "SSL_CERT_FILE": str(pki.ca_pem)})
    assert ok.returncode == 0 and "A001" in ok.stdout, ok.stderr
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=T * 3,
                             cwd=EXAMPLES.parent, env=env)
    assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_mutual_tls_maps_the_certificate_to_its_user(pki, mtls_gateway):
    port = ports(mtls_gateway)[0]
    algo = pki.client("algo1")
    c = await Client.connect("127.0.0.1", port, "algo1", "algo-secret", tls=algo)
    await _trade(c, 3185.0)
    # The certificate is algo1's: logging on as another user with it is refused.
    with pytest.raises(LogonRejected) as refused:
        await Client.connect("127.0.0.1", port, "manual1", "manual-secret", tls=algo)
    assert refused.value.reason == Reason.AUTH_FAILED
    mtls_gateway.wait_for("the client certificate belongs to another user", T)
    await _trade(c, 3186.0)
    await c.close()


@pytest.mark.parametrize("who", ["unknown CN", "another CA", "no certificate"])
async def test_mutual_tls_refuses_an_unknown_certificate(pki, mtls_gateway, who):
    port = ports(mtls_gateway)[0]
    ctx = {"unknown CN": lambda: pki.client("mallory"),
           "another CA": lambda: pki.client("algo1", ca=pki.rogue),
           "no certificate": lambda: pki.client(None)}[who]()
    mtls_gateway.output.clear()
    # TLS 1.3 finishes the client's side of the handshake before the server checks the
    # certificate: the refusal arrives as an alert or a close, before any logon answer.
    with pytest.raises((ssl.SSLError, ConnectionClosed, ConnectionError)):
        c = await Client.connect("127.0.0.1", port, "algo1", "algo-secret", tls=ctx)
        await c.close()
    mtls_gateway.wait_for(r"TLS (handshake failed|client certificate refused)", T)
    assert not any("Traceback" in out for out in mtls_gateway.output)


def test_a_bad_certificate_path_names_the_field_and_the_file(pki, tmp_path):
    config = gateway_toml(tmp_path, f"""
[gateway.tls]
cert = "{pki.dir / 'gateway.pem'}"
key = "missing.key"
""")
    out = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                         capture_output=True, text=True, timeout=30, cwd=EXAMPLES.parent)
    assert out.returncode == 2
    assert f"{config}: gateway.tls.key: no such file" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_exchange_link_refuses_an_exchange_it_cannot_verify(pki, tls_exchange, tmp_path):
    """The link checks the exchange's certificate: a CA that did not sign it fails the
    handshake, the link stays down and says why, and keeps retrying."""
    rogue = tmp_path / "rogue-ca.pem"
    rogue.write_bytes(pki.rogue.cert_pem.bytes())
    config = gateway_toml(tmp_path, f'[exchange.tls]\nca = "{rogue}"\n')
    gw = start_gateway(int(tls_exchange.match.group(1)), "--seat", "GWROGUE", config=config)
    try:
        gw.wait_for(r"CERTIFICATE_VERIFY_FAILED.*exchange link connect failed", T)
    finally:
        gw.stop()


# ---------------------------------------------------------------------- gateway.tls in-process
class _Echo(asyncio.Protocol):
    """An application protocol behind the acceptor: answers with the user it was given."""

    peer_user: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(f"{self.peer_user}:".encode() + data)  # type: ignore[attr-defined]


async def test_fingerprints_map_certificates_to_users_and_unknown_ones_are_refused(pki):
    from gateway.tls import ServerTls, TlsServerConfig, check_server, create_server, fingerprint

    alice = pki.ca.issue_cert("alice.clients.test", common_name="not-a-user-name")
    der = ssl.PEM_cert_to_DER_cert(alice.cert_chain_pems[0].bytes().decode())
    colons = ":".join(f"{b:02X}" for b in bytes.fromhex(fingerprint(der)))  # as openssl shows it
    cfg = check_server(TlsServerConfig(
        cert="gateway.pem", key="gateway.key", client_ca="ca.pem",
        client_identity="fingerprint", fingerprints={colons: "alice"}),
        "gw.toml", "gateway.tls", pki.dir, users={"alice"})
    server = await create_server(_Echo, "127.0.0.1", 0, ServerTls(cfg, {"alice"}), what="test")
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca_pem))
        alice.configure_cert(ctx)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        writer.write(b"hello")
        assert await asyncio.wait_for(reader.readexactly(11), T) == b"alice:hello"
        writer.close()
        # Same CA, a fingerprint nobody listed: refused after the handshake, counted.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=pki.client("bob"))
        writer.write(b"hello")
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), T)
        writer.close()
        assert server.handshake_failures == 1
    finally:
        server.close()


@pytest.mark.parametrize("fields, where, problem", [
    (dict(cert="gateway.pem"), "gateway.tls.key", "needs its private key"),
    (dict(cert="gateway.pem", key="exchange.key"), "gateway.tls.cert", "does the key belong"),
    (dict(cert="gateway.pem", key="gateway.key", fingerprints={"ab": "algo1"}),
     "gateway.tls.client_ca", "mutual TLS"),
    (dict(cert="gateway.pem", key="gateway.key", client_ca="ca.pem",
          fingerprints={"ab": "algo1"}), "gateway.tls.fingerprints.ab", "64 hex digits"),
    (dict(cert="gateway.pem", key="gateway.key", client_ca="ca.pem",
          fingerprints={"ab" * 32: "nobody"}), "gateway.tls.fingerprints." + "ab" * 32,
     "unknown user 'nobody'"),
    (dict(key="gateway.key"), "gateway.tls.cert", "without a certificate"),
    (dict(cert="missing.pem", key="gateway.key"), "gateway.tls.cert", "no such file"),
    (dict(cert="gateway.pem", key="missing.key"), "gateway.tls.key", "no such file"),
    (dict(cert="gateway.pem", key="gateway.key", client_ca="missing-ca.pem"),
     "gateway.tls.client_ca", "no such file"),
])
def test_tls_config_errors_name_the_field(pki, fields, where, problem):
    from checks.config import ConfigError
    from gateway.tls import TlsServerConfig, check_server

    with pytest.raises(ConfigError) as err:
        check_server(TlsServerConfig(**fields), "gw.toml", "gateway.tls", pki.dir, {"algo1"})
    assert (err.value.source, err.value.path) == ("gw.toml", where)
    assert problem in err.value.problem, err.value.problem


async def test_handshakes_are_capped_and_bounded_in_time(pki):
    """A peer that connects and never says hello holds a handshake slot only until
    ``handshake_timeout_s``; past ``max_handshakes`` at once, new connections are closed."""
    from gateway.tls import ServerTls, TlsServerConfig, create_server

    cfg = TlsServerConfig(cert=str(pki.dir / "gateway.pem"), key=str(pki.dir / "gateway.key"),
                          handshake_timeout_s=0.5, max_handshakes=1)
    server = await create_server(_Echo, "127.0.0.1", 0, ServerTls(cfg), what="test")
    port = server.sockets[0].getsockname()[1]
    try:
        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", port)
        extra_r, extra_w = await asyncio.open_connection("127.0.0.1", port)
        # One of the two takes the only slot; the other is closed at once, before the timeout.
        first = await asyncio.wait_for(
            asyncio.wait([asyncio.ensure_future(silent_r.read()),
                          asyncio.ensure_future(extra_r.read())],
                         return_when=asyncio.FIRST_COMPLETED), T)
        assert len(first[0]) == 1 and server.handshake_failures == 1
        # The silent one is cut when its handshake times out.
        await asyncio.wait_for(asyncio.gather(*first[1]), T)
        assert server.handshake_failures == 2
        for w in (silent_w, extra_w):
            w.close()
        # Then a real client gets through.
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=pki.client(None))
        writer.write(b"hi")
        assert await asyncio.wait_for(reader.readexactly(7), T) == b"None:hi"
        writer.close()
    finally:
        server.close()


async def test_a_tls_port_in_use_is_named(pki):
    import errno

    from gateway.tls import ServerTls, TlsServerConfig, create_server

    cfg = TlsServerConfig(cert=str(pki.dir / "gateway.pem"), key=str(pki.dir / "gateway.key"))
    first = await create_server(_Echo, "127.0.0.1", 0, ServerTls(cfg), what="test")
    port = first.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError) as err:
            await create_server(_Echo, "127.0.0.1", port, ServerTls(cfg), what="test")
        assert err.value.errno == errno.EADDRINUSE
        assert f"('127.0.0.1', {port})" in str(err.value)  # what `fengkong serve` looks for
    finally:
        first.close()


def test_the_exchange_link_presents_a_client_certificate_when_the_exchange_asks(pki, tmp_path):
    """An exchange that requires member certificates ([sim.tls] client_ca): the link logs on
    with the one in [exchange.tls] cert/key."""
    seat = pki.ca.issue_cert("gw-seat.members.test", common_name="GWSEAT")
    cert, key = tmp_path / "seat.pem", tmp_path / "seat.key"
    cert.write_bytes(b"".join(b.bytes() for b in seat.cert_chain_pems))
    key.write_bytes(seat.private_key_pem.bytes())
    ex = start_exchange(0, "--tls-cert", str(pki.dir / "exchange.pem"),
                        "--tls-key", str(pki.dir / "exchange.key"),
                        "--tls-client-ca", str(pki.ca_pem))
    try:
        config = gateway_toml(tmp_path, f'[exchange.tls]\nca = "{pki.ca_pem}"\n'
                                        f'cert = "{cert}"\nkey = "{key}"\n')
        gw = start_gateway(int(ex.match.group(1)), "--seat", "GWSEAT", config=config)
        try:
            gw.wait_for("exchange link up", T)
        finally:
            gw.stop()
    finally:
        ex.stop()


async def test_a_client_retrying_in_plaintext_is_counted_every_time_and_logged_once(pki):
    from structlog.testing import capture_logs

    from gateway.tls import ServerTls, TlsServerConfig, create_server

    cfg = TlsServerConfig(cert=str(pki.dir / "gateway.pem"), key=str(pki.dir / "gateway.key"))
    server = await create_server(_Echo, "127.0.0.1", 0, ServerTls(cfg), what="test")
    port = server.sockets[0].getsockname()[1]
    try:
        with capture_logs() as logs:
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"\x00\x00\x00\x05hello")
                try:  # closed, unanswered (a reset says the same)
                    assert await asyncio.wait_for(reader.read(), T) == b""
                except ConnectionResetError:
                    pass
                writer.close()
            assert server.acceptor is not None
            await asyncio.wait_for(asyncio.gather(*server.acceptor.pending), T)
        assert server.handshake_failures == 3
        lines = [e for e in logs if e["event"].startswith("TLS handshake failed")]
        assert len(lines) == 1 and "not a TLS client" in lines[0]["error"], logs
    finally:
        server.close()
