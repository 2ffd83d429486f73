"""``[fix]`` in gateway.toml: typed, and every mistake names the field."""

from __future__ import annotations

import pytest

from checks.config import ConfigError
from gateway.config import load_gateway_config
from tests.fix.conftest import fix_config


def load(tmp_path, extra: str):
    return load_gateway_config(fix_config(tmp_path, extra))


def test_the_sample_sessions_load(tmp_path):
    cfg = load(tmp_path, "")
    assert cfg.fix.enabled and [s.kind for s in cfg.fix.sessions] == \
        ["order_entry"] * 5 + ["drop_copy"] * 2


@pytest.mark.parametrize(("extra", "field", "words"), [
    ('[[fix.sessions]]\nsender_comp_id = "FENGKONG"\ntarget_comp_id = "X"\nuser = "nobody"\n',
     "fix.sessions[7].user", "unknown user"),
    ('[[fix.sessions]]\nsender_comp_id = "FENGKONG"\ntarget_comp_id = "ALGO1"\nuser = "algo1"\n',
     "fix.sessions[7].target_comp_id", "already a session"),
    ('[[fix.sessions]]\nsender_comp_id = "FENGKONG"\ntarget_comp_id = "D2"\nuser = "algo1"\n'
     'kind = "drop_copy"\naccounts = ["NOPE"]\n', "fix.sessions[7].accounts[0]", "unknown account"),
    ('[[fix.sessions]]\nsender_comp_id = "FENGKONG"\ntarget_comp_id = "D3"\nuser = "algo1"\n'
     'kind = "drop_copy"\n', "fix.sessions[7].accounts", "drop-copy"),
    ('[[fix.sessions]]\nsender_comp_id = ""\ntarget_comp_id = "D4"\nuser = "algo1"\n',
     "fix.sessions[7].sender_comp_id", "printable"),
    ('[[fix.sessions]]\nsender_comp_id = "A"\ntarget_comp_id = "D5"\nuser = "algo1"\n'
     'kind = "dropcopy"\n', "fix.sessions[7].kind", "drop_copy"),
])
def test_mistakes_name_the_field(tmp_path, extra, field, words):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "\n" + extra)
    assert field in str(err.value) and words in str(err.value)


def test_limits_are_checked(tmp_path):
    path = fix_config(tmp_path)
    path.write_text(path.read_text().replace("garbled_limit = 20", "garbled_limit = 0"))
    with pytest.raises(ConfigError, match=r"fix\.garbled_limit"):
        load_gateway_config(path)


def test_a_bad_fix_tls_certificate_names_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"fix\.tls\.(cert|key)"):
        load(tmp_path, '\n[fix.tls]\ncert = "no-such.pem"\nkey = "no-such.key"\n')
