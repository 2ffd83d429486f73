"""Change control (security rules art. 15): what counts as loosening, and when it needs an
emergency."""

from __future__ import annotations

import msgspec
import pytest

from checks.calendar import ns_from_local
from gateway.admin import any_session_open, is_looser
from gateway.config import load_gateway_config
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("name, old, new, looser", [
    ("max_order_qty", 500, 600, True),
    ("max_order_qty", 500, 400, False),
    ("max_order_qty", 500, None, True),   # None = no limit: the loosest
    ("max_order_qty", None, 500, False),
    ("loss_limit", 1e6, 2e6, True),
    ("repeat_window_ms", 1000, 500, True),  # a shorter window catches fewer repeats
    ("stop_unregistered_programmatic", True, False, True),
    ("warn_fraction", 0.8, 0.9, True),      # a later warning
    ("max_otr", 50.0, 50.0, False),
])
def test_what_counts_as_loosening(name, old, new, looser):
    assert is_looser(name, old, new) is looser


class _Gw:
    def __init__(self, enforce: bool) -> None:
        cfg = load_gateway_config(EXAMPLES / "gateway.toml")
        self.cfg = msgspec.structs.replace(cfg, risk=msgspec.structs.replace(cfg.risk,
                                                                              enforce_hours=enforce))


def test_sessions_are_open_on_weekday_trading_hours_only():
    gw = _Gw(enforce=True)
    assert any_session_open(gw, ns_from_local(2026, 11, 30, 9, 30))       # Monday morning
    assert any_session_open(gw, ns_from_local(2026, 11, 27, 21, 30))      # Friday night session
    assert not any_session_open(gw, ns_from_local(2026, 11, 30, 12, 0))   # lunch break
    assert not any_session_open(gw, ns_from_local(2026, 11, 29, 10, 0))   # Sunday
    assert not any_session_open(gw, ns_from_local(2026, 11, 30, 16, 0))   # after the close


def test_without_a_calendar_every_moment_counts_as_trading_time():
    assert any_session_open(_Gw(enforce=False), ns_from_local(2026, 11, 29, 3, 0))
