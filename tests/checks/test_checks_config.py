"""checks/config.py: a config mistake names the file, the field path and what was expected.

Two stages (module docstring of checks.config): msgspec decoding (wrong type, unknown field,
missing field, bad TOML) and ``resolve`` (cross-references, duplicates, impossible numbers,
firm <- group <- account limit merging). The sample config must load.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from checks.config import ConfigError, decode_toml, load_risk_config, resolve
from checks.engine import Engine
from checks.enums import AccountStatus, ProgReg
from checks.model import AccountConfig, Limits, RiskConfigFile

ROOT = Path(__file__).resolve().parents[2]

INSTRUMENT = """
[[instruments]]
symbol = "rb2605"
exchange = "SHFE"
product = "rb"
multiplier = 10
tick = 1.0
reference_price = 3200.0
upper_limit = 3424.0
lower_limit = 2976.0
"""

ACCOUNT = """
[[accounts]]
id = "A1"
balance = 1000000.0
"""


def load(text: str, source: str = "risk.toml"):
    return resolve(decode_toml(text, RiskConfigFile, source), source)


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text)
    err = info.value
    assert str(err).startswith("risk.toml: ")
    return err


# ---------------------------------------------------------------- stage 1: decoding
def test_wrong_type_names_file_field_and_expectation():
    err = error(INSTRUMENT + '[[accounts]]\nid = "A1"\nbalance = "lots"\n')
    assert err.source == "risk.toml" and err.path == "accounts[0].balance"
    assert "Expected `float`, got `str`" in err.problem
    assert str(err) == "risk.toml: accounts[0].balance: Expected `float`, got `str`"


def test_wrong_type_inside_an_instrument():
    err = error(INSTRUMENT.replace("multiplier = 10", 'multiplier = "ten"'))
    assert err.path == "instruments[0].multiplier" and "Expected `float`" in err.problem


def test_unknown_field_is_named():
    err = error(INSTRUMENT + 'colour = "red"\n')
    assert err.path == "instruments[0]" and "unknown field `colour`" in err.problem


def test_unknown_top_level_section_is_named():
    err = error("[risk]\nx = 1\n")
    assert "unknown field `risk`" in err.problem


def test_missing_required_field_is_named():
    err = error(INSTRUMENT.replace('exchange = "SHFE"\n', ""))
    assert err.path == "instruments[0]" and "missing required field `exchange`" in err.problem


def test_bad_enum_value_is_named():
    err = error(ACCOUNT + 'status = "FROZEN"\n')
    assert err.path == "accounts[0].status" and "FROZEN" in err.problem


def test_invalid_toml_says_so():
    err = error("x = [")
    assert err.path == "" and "not valid TOML" in err.problem


def test_unreadable_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml: cannot read the file"):
        load_risk_config(missing)


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "risk.toml"
    path.write_text(INSTRUMENT + '[[accounts]]\nid = "A1"\nbalance = "lots"\n')
    with pytest.raises(ConfigError) as info:
        load_risk_config(path)
    assert info.value.source == str(path) and info.value.path == "accounts[0].balance"


# ---------------------------------------------------------------- stage 2: resolve
def test_unknown_exchange_lists_the_known_ones():
    err = error(INSTRUMENT.replace('"SHFE"', '"LME"'))
    assert err.path == "instruments[0].exchange"
    assert "unknown exchange 'LME'" in err.problem
    assert "CFFEX, CZCE, DCE, GFEX, INE, SHFE" in err.problem


def test_exchange_declared_in_config_is_known():
    cfg = load('[exchanges.XSGE]\nhft_per_sec = 10\n' + INSTRUMENT.replace('"SHFE"', '"XSGE"'))
    assert cfg.exchanges["XSGE"].hft_per_sec == 10


def test_duplicate_symbol_is_named():
    err = error(INSTRUMENT + INSTRUMENT)
    assert err.path == "instruments[1].symbol" and "duplicate instrument 'rb2605'" in err.problem


@pytest.mark.parametrize("sessions,expect", [
    ('[["9am", "10:15"]]', "expected a time as 'HH:MM', got '9am'"),
    ('[["09:00", "25:00"]]', "between 00:00 and 24:00, got '25:00'"),
    ('[["09:00", "10:60"]]', "got '10:60'"),
    ('[["09:00:00", "10:00"]]', "got '09:00:00'"),
])
def test_bad_sessions_string_is_named(sessions, expect):
    err = error(INSTRUMENT + f"sessions = {sessions}\n")
    assert err.path == "instruments[0].sessions" and expect in err.problem


def test_unknown_product_in_an_account_allow_list_is_named():
    err = error(INSTRUMENT + ACCOUNT + 'products = ["rb", "zz"]\n')
    assert err.path == "accounts[0].products[1]" and "unknown product 'zz'" in err.problem


def test_unknown_limit_name_lists_the_known_limits():
    err = error(INSTRUMENT + ACCOUNT + "limits = { max_ordr_qty = 5 }\n")
    assert err.path == "accounts[0].limits.max_ordr_qty"
    assert "unknown limit" in err.problem and "max_order_qty" in err.problem


def test_unknown_limit_name_in_a_group():
    err = error('[[groups]]\nname = "G"\nlimits = { nope = 1 }\n')
    assert err.path == "groups[0].limits.nope" and "unknown limit" in err.problem


def test_limit_of_the_wrong_type_is_named():
    err = error(INSTRUMENT + ACCOUNT + "limits = { max_order_qty = 1.5 }\n")
    assert err.path == "accounts[0].limits.max_order_qty" and "Expected `int" in err.problem


def test_unknown_exchange_rule_is_named():
    err = error("[exchanges.SHFE]\nhft_per_minute = 5\n")
    assert err.path == "exchanges.SHFE.hft_per_minute" and "unknown exchange rule" in err.problem


def test_exchange_rule_of_the_wrong_type_is_named():
    err = error("[exchanges.SHFE]\nhft_per_sec = 2.5\n")
    assert err.path.startswith("exchanges.SHFE") and "Expected `int`" in err.problem


@pytest.mark.parametrize("limits,path,expect", [
    ("[limits]\nmax_order_qty = -1\n", "limits.max_order_qty", ">= 0"),
    ("[limits]\nmax_notional = inf\n", "limits.max_notional", "finite"),
    ("[limits]\nwarn_fraction = 0.0\n", "limits.warn_fraction", "(0, 1]"),
    ("[limits]\nwarn_fraction = 1.5\n", "limits.warn_fraction", "(0, 1]"),
])
def test_impossible_limits_are_named(limits, path, expect):
    err = error(limits)
    assert err.path == path and expect in err.problem


@pytest.mark.parametrize("change,path,expect", [
    (("tick = 1.0", "tick = 0.0"), "instruments[0].tick", "> 0"),
    (("tick = 1.0", "tick = nan"), "instruments[0].tick", "> 0"),
    (("multiplier = 10", "multiplier = -10"), "instruments[0].multiplier", "> 0"),
    (("lower_limit = 2976.0", "lower_limit = 3500.0"), "instruments[0].lower_limit", "above"),
    (("tick = 1.0", "tick = 1.0\nmin_limit_qty = 0"), "instruments[0].min_limit_qty", ">= 1"),
    (("tick = 1.0", "tick = 1.0\nmin_limit_qty = 5\nmax_limit_qty = 4"),
     "instruments[0].min_limit_qty", "above max_limit_qty"),
    (("tick = 1.0", "tick = 1.0\nmin_market_qty = 5\nmax_market_qty = 4"),
     "instruments[0].min_market_qty", "above max_market_qty"),
    (("tick = 1.0", "tick = 1.0\ncollar_pct = 1.0"), "instruments[0].collar_pct", "[0, 1)"),
    (("tick = 1.0", "tick = 1.0\ncollar_pct = -0.01"), "instruments[0].collar_pct", "[0, 1)"),
    (("tick = 1.0", "tick = 1.0\ncollar_pct = nan"), "instruments[0].collar_pct", "[0, 1)"),
    (("tick = 1.0", "tick = 1.0\ncollar_ticks = -1"), "instruments[0].collar_ticks", ">= 0"),
    (("tick = 1.0", "tick = 1.0\nmargin_long = -0.1"), "instruments[0].margin_long", ">= 0"),
    (("tick = 1.0", "tick = 1.0\nfees = { open_per_lot = -1.0 }"),
     "instruments[0].fees.open_per_lot", ">= 0"),
])
def test_impossible_instrument_numbers_are_named(change, path, expect):
    err = error(INSTRUMENT.replace(*change))
    assert err.path == path and expect in err.problem


@pytest.mark.parametrize("extra,path,expect", [
    ("balance = -1.0\n", "accounts[0].balance", ">= 0"),
    ('positions = [{ symbol = "zz999", long = 1 }]\n', "accounts[0].positions[0].symbol",
     "unknown instrument 'zz999'"),
    ('positions = [{ symbol = "rb2605", long = -1 }]\n', "accounts[0].positions[0]", ">= 0"),
    ("hft = { max_per_sec = 0, max_per_day = 10 }\n", "accounts[0].hft", ">= 1"),
    ("limits = { warn_fraction = 2.0 }\n", "accounts[0].limits.warn_fraction", "(0, 1]"),
])
def test_impossible_account_settings_are_named(extra, path, expect):
    balance = "" if extra.startswith("balance") else "balance = 1.0\n"
    err = error(INSTRUMENT + '[[accounts]]\nid = "A1"\n' + balance + extra)
    assert err.path == path and expect in err.problem


def test_duplicate_account_and_group_are_named():
    err = error(ACCOUNT + ACCOUNT)
    assert err.path == "accounts[1].id" and "duplicate account 'A1'" in err.problem
    err = error('[[groups]]\nname = "G"\n[[groups]]\nname = "G"\n')
    assert err.path == "groups[1].name" and "duplicate group 'G'" in err.problem


def test_bad_day_boundary_is_named():
    err = error('[firm]\nday_boundary = "5pm"\n')
    assert err.path == "firm.day_boundary" and "'5pm'" in err.problem


# ---------------------------------------------------------------- resolution
def test_limits_merge_firm_then_group_then_account():
    cfg = load(INSTRUMENT + """
[limits]
max_order_qty = 100
max_orders_per_sec = 50
max_notional = 1e6
[[groups]]
name = "G"
limits = { max_order_qty = 10, max_open_volume_per_contract = 30 }
[[accounts]]
id = "A1"
balance = 1.0
group = "G"
limits = { max_orders_per_sec = 5, max_notional = 20000.0 }
[[accounts]]
id = "A2"
balance = 1.0
limits = { max_notional = 50 }
[[accounts]]
id = "A3"
balance = 1.0
group = "H"
""")
    a1, a2, a3 = cfg.accounts
    assert (a1.limits.max_order_qty, a1.limits.max_orders_per_sec, a1.limits.max_notional,
            a1.limits.max_open_volume_per_contract) == (10, 5, 20000.0, 30)
    assert (a2.limits.max_order_qty, a2.limits.max_orders_per_sec, a2.limits.max_notional) == (
        100, 50, 50.0)
    assert a2.group == "~A2"  # an ungrouped account is its own group
    assert a3.group == "H" and a3.limits.max_order_qty == 100  # a group needs no section


def test_a_limit_can_be_switched_off_for_one_account_in_python():
    # TOML has no null, but a RiskConfigFile built in code may say "no limit" (None).
    cfg = resolve(RiskConfigFile(limits=Limits(max_order_qty=10), accounts=[
        AccountConfig(id="A1", balance=1.0, limits={"max_order_qty": None}),
        AccountConfig(id="A2", balance=1.0)]))
    assert [a.limits.max_order_qty for a in cfg.accounts] == [None, 10]


def test_account_fields_resolve_to_engine_values():
    cfg = load(INSTRUMENT + ACCOUNT + """status = "CLOSE_ONLY"
programmatic = "REPORTED"
order_types = ["LIMIT"]
products = ["rb"]
direct_access = true
hft = { max_per_sec = 500, max_per_day = 50000 }
""")
    (a,) = cfg.accounts
    assert (a.status, a.programmatic) == (AccountStatus.CLOSE_ONLY, ProgReg.REPORTED)
    assert (a.limit_allowed, a.market_allowed, a.products) == (True, False, frozenset({"rb"}))
    assert (a.hft_registered, a.hft_max_per_sec, a.hft_max_per_day, a.direct_access) == (
        True, 500, 50000, True)


def test_sessions_and_day_boundary_resolve_to_seconds():
    cfg = load('[firm]\nday_boundary = "18:30"\ntrading_hours = "ignore"\n'
               + INSTRUMENT + 'sessions = [["21:00", "02:30"], ["09:00", "10:15"]]\n')
    assert cfg.session_seconds["rb2605"] == [(75600, 9000), (32400, 36900)]
    assert cfg.day_boundary_s == 66600 and cfg.enforce_hours is False


def test_exchange_overrides_keep_the_other_defaults():
    cfg = load("[exchanges.SHFE]\nself_trade_limit = 3\n")
    shfe = cfg.exchanges["SHFE"]
    assert shfe.self_trade_limit == 3 and shfe.market_orders is False
    assert shfe.close_today_distinct is True and shfe.large_order_qty == 300


def test_the_sample_config_loads_and_builds_an_engine():
    cfg = load_risk_config(ROOT / "examples" / "risk.toml")
    assert [i.symbol for i in cfg.instruments] == ["rb2605", "au2606", "sc2603", "m2605",
                                                   "SR605", "IF2612"]
    by_id = {a.id: a for a in cfg.accounts}
    assert by_id["A004"].limits.max_open_volume_per_contract == 300
    assert by_id["A005"].group == by_id["A004"].group == "G-HUANG"
    assert by_id["H001"].limits.max_orders_per_sec == 400
    assert by_id["A001"].limits.max_orders_per_sec == 50
    assert by_id["A003"].limits.stop_unregistered_programmatic is True
    assert cfg.exchanges["CFFEX"].cancel_limit_per_contract == 400
    eng = Engine(cfg)
    acct = eng.accounts[eng.acct_ids["A001"]]
    assert acct.used_margin > 0 and math.isfinite(acct.available())


def test_the_collar_is_5_percent_unless_the_instrument_says_otherwise():
    eng = Engine(load(INSTRUMENT + ACCOUNT))
    inst = eng.instruments[0]
    assert (inst.collar_pct, inst.collar_ticks) == (0.05, 0)


@pytest.mark.parametrize("off", ["collar_pct = 0", "collar_pct = 0.0\ncollar_ticks = 0"])
def test_a_collar_of_0_switches_it_off_for_that_instrument(off):
    eng = Engine(load(INSTRUMENT.replace("tick = 1.0", "tick = 1.0\n" + off) + ACCOUNT))
    inst = eng.instruments[0]
    assert (inst.collar_pct, inst.collar_ticks) == (0.0, 0)
