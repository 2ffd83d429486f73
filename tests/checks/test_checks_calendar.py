"""checks/calendar.py: China-time sessions and trading days (the night belongs to the next day).

Times are China Standard Time (UTC+8, no daylight saving); a Saturday or Sunday rolls forward to
Monday; from the day boundary (default 17:00) activity belongs to the next trading day.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.calendar import (
    DAY_S,
    NS,
    day_as_yyyymmdd,
    in_sessions,
    local_seconds,
    ns_from_local,
    open_at,
    parse_hhmm,
    session_open,
    time_of_day,
    trading_day_bounds,
    trading_day_number,
    weekday,
)


def day_of(y: int, m: int, d: int) -> int:
    return (dt.date(y, m, d) - dt.date(1970, 1, 1)).days


# ---------------------------------------------------------------- parse_hhmm
@pytest.mark.parametrize("text,seconds", [("00:00", 0), ("09:30", 34200), ("9:30", 34200),
                                          ("23:59", 86340), ("24:00", 86400), ("21:00", 75600)])
def test_parse_hhmm(text, seconds):
    assert parse_hhmm(text) == seconds


@pytest.mark.parametrize("text", ["", "9", "0930", "09:30:00", "ab:cd", "09:60", "24:01", "25:00",
                                  "-1:00", "09:-5", "nine:30"])
def test_parse_hhmm_rejects_with_the_offending_text(text):
    with pytest.raises(ValueError, match="expected a time as 'HH:MM'") as info:
        parse_hhmm(text)
    assert repr(text) in str(info.value)


# ---------------------------------------------------------------- ns_from_local and time of day
def test_ns_from_local_is_china_time():
    assert ns_from_local(1970, 1, 1, 8, 0) == 0
    assert ns_from_local(2026, 3, 10, 10, 0) == int(
        dt.datetime(2026, 3, 10, 2, 0, tzinfo=dt.UTC).timestamp()) * NS


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1)))
def test_time_of_day_round_trips_local_wall_time(t):
    now = ns_from_local(t.year, t.month, t.day, t.hour, t.minute, t.second)
    assert time_of_day(now) == t.hour * 3600 + t.minute * 60 + t.second
    assert local_seconds(now) // DAY_S == day_of(t.year, t.month, t.day)
    assert time_of_day(now + NS - 1) == time_of_day(now)  # sub-second nanoseconds truncate


# ---------------------------------------------------------------- in_sessions
DAY = [(parse_hhmm("09:00"), parse_hhmm("10:15")), (parse_hhmm("13:30"), parse_hhmm("15:00"))]
NIGHT = [(parse_hhmm("21:00"), parse_hhmm("02:30"))]


@pytest.mark.parametrize("hhmm,inside", [("08:59", False), ("09:00", True), ("10:14", True),
                                         ("10:15", False), ("13:30", True), ("15:00", False)])
def test_sessions_are_half_open(hhmm, inside):
    assert in_sessions(parse_hhmm(hhmm), DAY) is inside


def test_session_ends_are_exclusive_to_the_second():
    assert in_sessions(parse_hhmm("10:15") - 1, DAY)
    assert not in_sessions(parse_hhmm("09:00") - 1, DAY)


@pytest.mark.parametrize("hhmm,inside", [("20:59", False), ("21:00", True), ("23:59", True),
                                         ("00:00", True), ("02:29", True), ("02:30", False),
                                         ("12:00", False)])
def test_session_crossing_midnight(hhmm, inside):
    assert in_sessions(parse_hhmm(hhmm), NIGHT) is inside


def test_no_sessions_is_never_open():
    assert not in_sessions(parse_hhmm("10:00"), [])


# ---------------------------------------------------------------- session_open: hours and weekday
DAY_AND_NIGHT = DAY + NIGHT


@pytest.mark.parametrize("ymd,wday", [((2026, 3, 16), 0), ((2026, 3, 10), 1), ((2026, 3, 13), 4),
                                      ((2026, 3, 14), 5), ((2026, 3, 15), 6), ((1970, 1, 1), 3)])
def test_weekday_is_the_local_calendar_day(ymd, wday):
    assert weekday(ns_from_local(*ymd, 0, 0)) == wday
    assert weekday(ns_from_local(*ymd, 23, 59, 59)) == wday


# Monday 0 ... Sunday 6: which days each kind of time trades on.
@pytest.mark.parametrize("hhmm,days", [
    ("09:00", {0, 1, 2, 3, 4}),  # day session: Monday to Friday
    ("21:30", {0, 1, 2, 3, 4}),  # evening: Monday to Friday (Friday's belongs to Monday)
    ("01:00", {1, 2, 3, 4, 5}),  # small hours: the evening before continues, Tuesday to Saturday
    ("03:00", set()),
    ("12:00", set()),
])
def test_open_at_checks_the_weekday_by_the_kind_of_time(hhmm, days):
    assert {d for d in range(7) if open_at(parse_hhmm(hhmm), d, DAY_AND_NIGHT)} == days


def test_a_whole_day_session_is_open_every_day():
    always = [(0, DAY_S)]
    assert all(open_at(tod, d, always) for d in range(7) for tod in (0, 3600, DAY_S - 1))


def test_a_session_from_midnight_continues_the_evening_before():
    split = [(parse_hhmm("21:00"), DAY_S), (0, parse_hhmm("02:30"))]
    assert {d for d in range(7) if open_at(parse_hhmm("01:00"), d, split)} == {1, 2, 3, 4, 5}
    assert {d for d in range(7) if open_at(parse_hhmm("23:00"), d, split)} == {0, 1, 2, 3, 4}


@given(st.integers(ns_from_local(2000, 1, 1), ns_from_local(2100, 1, 1)))
def test_session_open_is_open_at_of_local_time_and_weekday(now):
    assert session_open(now, DAY_AND_NIGHT) == open_at(time_of_day(now), weekday(now),
                                                       DAY_AND_NIGHT)
    if session_open(now, DAY_AND_NIGHT):  # an open moment belongs to a weekday's trading day
        assert in_sessions(time_of_day(now), DAY_AND_NIGHT)
        assert (trading_day_number(now) + 3) % 7 < 5


def test_the_weekend_is_closed_from_saturday_small_hours_to_monday_morning():
    assert session_open(ns_from_local(2026, 3, 14, 2, 29), NIGHT)  # Friday night, continued
    assert not session_open(ns_from_local(2026, 3, 14, 2, 30), DAY_AND_NIGHT)
    closed = range(ns_from_local(2026, 3, 14, 2, 30), ns_from_local(2026, 3, 16, 9, 0), 60 * NS)
    assert not any(session_open(t, DAY_AND_NIGHT) for t in closed)
    assert session_open(ns_from_local(2026, 3, 16, 9, 0), DAY_AND_NIGHT)


# ---------------------------------------------------------------- trading days
TUE = day_of(2026, 3, 10)
WED, FRI, MON = TUE + 1, TUE + 3, TUE + 6


@pytest.mark.parametrize("when,day", [
    ((2026, 3, 10, 0, 0), TUE), ((2026, 3, 10, 10, 0), TUE), ((2026, 3, 10, 16, 59, 59), TUE),
    ((2026, 3, 10, 17, 0), WED), ((2026, 3, 10, 21, 0), WED), ((2026, 3, 11, 1, 0), WED),
    ((2026, 3, 13, 15, 0), FRI), ((2026, 3, 13, 21, 0), MON), ((2026, 3, 14, 1, 0), MON),
    ((2026, 3, 14, 12, 0), MON), ((2026, 3, 15, 22, 0), MON), ((2026, 3, 16, 10, 0), MON),
    ((2026, 3, 16, 21, 0), MON + 1),
], ids=str)
def test_trading_day_number(when, day):
    assert trading_day_number(ns_from_local(*when)) == day


def test_day_boundary_is_configurable():
    at_1730 = ns_from_local(2026, 3, 10, 17, 30)
    assert trading_day_number(at_1730, parse_hhmm("18:00")) == TUE
    assert trading_day_number(at_1730, parse_hhmm("17:30")) == WED
    assert trading_day_number(at_1730, parse_hhmm("24:00")) == TUE


def test_trading_day_bounds_of_a_weekday_start_the_evening_before():
    start, end = trading_day_bounds(WED)
    assert start == ns_from_local(2026, 3, 10, 17, 0) and end == ns_from_local(2026, 3, 11, 17, 0)


def test_monday_starts_on_friday_evening():
    start, end = trading_day_bounds(MON)
    assert start == ns_from_local(2026, 3, 13, 17, 0) and end == ns_from_local(2026, 3, 16, 17, 0)


@given(st.integers(ns_from_local(2000, 1, 1), ns_from_local(2100, 1, 1)))
def test_every_instant_lies_inside_the_bounds_of_its_trading_day(now):
    day = trading_day_number(now)
    start, end = trading_day_bounds(day)
    assert start <= now < end
    assert (day + 3) % 7 < 5  # a weekday
    assert trading_day_number(start) == day and trading_day_number(end - 1) == day
    assert trading_day_number(end) > day


def test_day_as_yyyymmdd():
    assert day_as_yyyymmdd(TUE) == 20260310
    assert day_as_yyyymmdd(0) == 19700101
    assert day_as_yyyymmdd(day_of(2028, 2, 29)) == 20280229
