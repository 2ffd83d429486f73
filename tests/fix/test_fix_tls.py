"""The FIX port over TLS, as the native port: a QuickFIX initiator (quickfix-tls's
SSLSocketInitiator) trades through it, and with mutual TLS its certificate must be its user's."""

from __future__ import annotations

import pytest

from tests.fix.conftest import exchange_and_gateway
from tests.fix.qf import Initiator
from tests.fix.raw import RawFix
from tests.gateway.test_tls import Pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def client_files(pki: Pki, cn: str) -> tuple[str, str]:
    cert = pki.ca.issue_cert(f"{cn}.clients.test", common_name=cn)
    crt = pki._write(f"{cn}.pem", *cert.cert_chain_pems)
    key = pki._write(f"{cn}.key", cert.private_key_pem)
    return str(crt), str(key)


@pytest.fixture(scope="module")
def mtls_fix_gateway(pki, tmp_path_factory):
    tls = f"""
[fix.tls]
cert = "{pki.dir / 'gateway.pem'}"
key = "{pki.dir / 'gateway.key'}"
client_ca = "{pki.ca_pem}"
"""
    with exchange_and_gateway(tmp_path_factory.mktemp("fixtls"), tls) as gw:
        yield gw


def ssl_settings(pki: Pki, cn: str) -> str:
    crt, key = client_files(pki, cn)
    return (f"SSLProtocol=+TLSv1.2 +TLSv1.3\nCertificationAuthoritiesFile={pki.ca_pem}\n"
            f"ClientCertificateFile={crt}\nClientCertificateKeyFile={key}\n")


def test_quickfix_trades_over_mutual_tls(pki, mtls_fix_gateway, tmp_path):
    qf = Initiator(tmp_path / "qf", mtls_fix_gateway.fix_port, reset=True, tls=True,
                   extra=ssl_settings(pki, "algo1")).start()
    try:
        qf.order("TLS1", price=3190.0)
        assert qf.report("TLS1", "0")[39] == "0"
    finally:
        qf.stop()


def test_a_certificate_of_another_user_or_plaintext_is_refused(pki, mtls_fix_gateway, tmp_path):
    qf = Initiator(tmp_path / "other", mtls_fix_gateway.fix_port, reset=True, tls=True,
                   extra=ssl_settings(pki, "manual1")).start(wait_logon=False)
    try:
        out = qf.next_admin("5")
        assert out[58].startswith("102 ")  # algo1's logon with manual1's certificate
    finally:
        qf.stop()
    raw = RawFix(mtls_fix_gateway.fix_port, sender="ALGO1")
    raw.send("A", [(98, 0), (108, 30), (141, "Y"), (553, "algo1"), (554, "algo-secret")])
    assert raw.wait_closed() == []  # plaintext: closed at the handshake, nothing said
