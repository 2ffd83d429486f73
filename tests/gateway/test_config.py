"""Gateway configuration: a mistake names the file, the field and what was expected."""

from __future__ import annotations

import subprocess
import sys

import pytest

from checks.config import ConfigError
from gateway.config import load_gateway_config
from tests.conftest import EXAMPLES, ROOT

BASE = (EXAMPLES / "gateway.toml").read_text()


def _load(tmp_path, text: str):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    (tmp_path / "risk.toml").write_text((EXAMPLES / "risk.toml").read_text())
    return load_gateway_config(path)


@pytest.mark.parametrize("change, where, says", [
    (("port = 9100", 'port = "x"'), "gateway.port", "Expected `int`"),
    (('name = "algo1"', 'name = "algo1"\nfavourite = 1'), "users[0]", "unknown field"),
    (('accounts = ["A003"]', 'accounts = ["Z999"]'), "users[1].accounts[0]", "unknown account"),
    (("secret_hash = \"scrypt$16384$8$1$66656e676b6f6e672d64656d6f2d3032",
      "secret_hash = \"plain$16384$8$1$66656e676b6f6e672d64656d6f2d3032"),
     "users[0].secret_hash", "hash-secret"),
    (('role = "risk"', 'role = "boss"'), "operators[0].role", "expected one of 'admin', 'risk', 'viewer'"),
    (('risk_config = "risk.toml"', 'risk_config = "nope.toml"'), "risk_config", "cannot read"),
    (('[firm]', '[limits]\nmax_order_qty = 5\n[firm]'), "limits", "risk sections live in"),
    (('[auth]', '[journal]\nretention_days = 30\n[auth]'), "journal.retention_days", "5 years"),
])
def test_config_errors_name_file_field_and_expectation(tmp_path, change, where, says):
    old, new = change
    assert old in BASE
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE.replace(old, new, 1))
    text = str(err.value)
    assert str(tmp_path) in text and where in text and says in text, text


def test_serve_reports_a_bad_config_and_exits_2(tmp_path):
    bad = tmp_path / "gateway.toml"
    bad.write_text(BASE.replace("port = 9100", 'port = "x"', 1))
    (tmp_path / "risk.toml").write_text((EXAMPLES / "risk.toml").read_text())
    proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(bad)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "config error" in proc.stderr and "gateway.port" in proc.stderr


@pytest.mark.parametrize(("extra", "field"), [
    ("[compliance]\ncorrection_grace_s = nan\n", "compliance.correction_grace_s"),
    ("[compliance]\ncorrection_grace_s = -1\n", "compliance.correction_grace_s"),
    ("[compliance]\nprogrammatic_per_sec = 0\n", "compliance.programmatic_per_sec"),
    ("[compliance]\ncolour = 1\n", "compliance"),
])
def test_compliance_mistakes_name_the_field(tmp_path, extra, field):
    text = (EXAMPLES / "gateway.toml").read_text().replace(
        'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"') + extra
    (tmp_path / "g.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gateway_config(tmp_path / "g.toml")
    assert err.value.path.startswith(field), str(err.value)


DEMO_HASH = ("scrypt$16384$8$1$66656e676b6f6e672d64656d6f2d3032$"
             "c908d2b8f8382d57f831ec80e76d0c4f118dcb56901c613fc76d2e11ca2353f0")


@pytest.mark.parametrize(("apps", "field"), [
    ('apps = [{ app_id = "", auth_code_hash = "x" }]', "apps[0].app_id"),
    ('apps = [{ app_id = "a", auth_code_hash = "plaintext" }]', "apps[0].auth_code_hash"),
    (f'apps = [{{ app_id = "a", auth_code_hash = "{DEMO_HASH}" }}, '
     f'{{ app_id = "a", auth_code_hash = "{DEMO_HASH}" }}]', "apps[1].app_id"),
])
def test_registered_apps_mistakes_name_the_field(tmp_path, apps, field):
    text = (EXAMPLES / "gateway.toml").read_text().replace(
        'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"').replace(
        'ip_allow = ["127.0.0.0/8"]\n', f'ip_allow = ["127.0.0.0/8"]\n{apps}\n', 1)
    (tmp_path / "g.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_gateway_config(tmp_path / "g.toml")
    assert err.value.path.endswith(field), str(err.value)
