"""checks/reasons.py, and a guard that every code the reference engine can answer is pinned here.

If a new check appears in checks/engine.py, ``test_every_engine_reason_is_covered`` fails until
the code is added to ``COVERED`` — with a test in this directory that pins it.
"""

from __future__ import annotations

import re
from pathlib import Path

from checks.decision import Decision, rejected, warn, warn_level
from checks.reasons import KILL_REASON_BY_SCOPE_NAME, Reason, markdown_table

ENGINE = Path(__file__).resolve().parents[2] / "checks" / "engine.py"

# Reason codes the reference engine produces, each pinned by tests in this directory.
COVERED = {
    107, 401, 408, 402, 403, 404, 405, 406, 407,  # test_checks_static.py
    201, 202, 203, 204, 205, 206, 301, 302, 303, 304, 305, 306,  # test_checks_kill_permissions.py
    501, 502, 503, 601, 602,  # test_checks_price_size.py
    701, 702, 703, 704, 705, 706, 707, 708, 709, 710, 711,  # test_checks_rates.py
    801, 802, 803, 804, 1302, 1303,  # test_checks_programmatic.py
    901, 902, 1001, 1002, 1101, 1305,  # test_checks_positions_funds.py
    1301, 1308,  # warnings and message fees, throughout
}


def test_every_engine_reason_is_covered():
    source = ENGINE.read_text(encoding="utf-8")
    used = {Reason[name].value for name in re.findall(r"\bR\.([A-Z_]+)\b", source)}
    assert used - COVERED == set(), "reason codes the engine produces without a pinning test"


def test_reason_numbers_are_unique_and_described():
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(r.description.endswith(".") or r.description.endswith(")") for r in Reason)
    assert Reason.ACCEPTED == 0


def test_markdown_table_lists_every_code():
    table = markdown_table()
    for r in Reason:
        assert f"| {r.value} | `{r.name}` |" in table


def test_kill_reasons_are_the_2xx_codes():
    assert sorted(KILL_REASON_BY_SCOPE_NAME.values()) == [201, 202, 203, 204, 205, 206]


def test_rejected_builds_the_text_from_the_table():
    d = rejected(Reason.INVALID_QTY, "qty=0")
    assert d == Decision(403, -1, "Quantity must be a positive whole number of lots. (qty=0)",
                         None, 0)
    assert not d.accepted
    assert rejected(Reason.LOSS_LIMIT, trigger=Reason.LOSS_LIMIT).trigger == 1002


def test_warning_level_is_the_fraction_of_the_limit_at_least_one():
    assert warn_level(10, 0.8) == 8
    assert warn_level(4, 0.5) == 2
    assert warn_level(1, 0.8) == 1
    assert warn_level(0, 0.8) == 1
    assert warn_level(3, 1.0) == 3
    w = warn(Reason.ORDER_RATE, "account:A1", "orders in the last second", 8, 10)
    assert w.code == Reason.THRESHOLD_WARNING and w.text.startswith("ORDER_RATE: ")
