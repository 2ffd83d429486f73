"""Trading calendar: which trading day a timestamp belongs to and whether a session is open.

Chinese futures trade in a day session and (for many products) a night session that starts in
the evening and *belongs to the next trading day*: Friday night trades settle on Monday. Times
are China Standard Time (UTC+8, no daylight saving). Timestamps are passed in as integer
nanoseconds since the epoch; nothing here reads the clock.
"""

from __future__ import annotations

import datetime as dt

NS = 1_000_000_000
DAY_S = 86_400
CST_OFFSET_S = 8 * 3600
# From this local time on, activity belongs to the next trading day (night session).
DEFAULT_DAY_BOUNDARY_S = 17 * 3600


def parse_hhmm(text: str) -> int:
    """'21:00' -> seconds after midnight; raises ValueError with the offending text."""
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"expected a time as 'HH:MM', got {text!r}") from None
    if not (0 <= h <= 24 and 0 <= m < 60) or (h == 24 and m):
        raise ValueError(f"expected a time as 'HH:MM' between 00:00 and 24:00, got {text!r}")
    return h * 3600 + m * 60


def local_seconds(now_ns: int) -> int:
    """Seconds since the epoch, shifted to China Standard Time."""
    return now_ns // NS + CST_OFFSET_S


def time_of_day(now_ns: int) -> int:
    return local_seconds(now_ns) % DAY_S


def in_sessions(tod: int, sessions: list[tuple[int, int]]) -> bool:
    """Whether local time-of-day ``tod`` (seconds) lies in one of ``[start, end)`` sessions.

    A session whose end is before its start crosses midnight (21:00-02:30).
    """
    for start, end in sessions:
        if start <= end:
            if start <= tod < end:
                return True
        elif tod >= start or tod < end:
            return True
    return False


def weekday(now_ns: int) -> int:
    """The local calendar weekday of ``now_ns``: Monday == 0 ... Sunday == 6."""
    return (local_seconds(now_ns) // DAY_S + 3) % 7  # 1970-01-01 was a Thursday


def session_open(now_ns: int, sessions: list[tuple[int, int]]) -> bool:
    """Whether an instrument with ``sessions`` trades at ``now_ns``: time of day *and* weekday.

    Exchanges trade Monday to Friday. A day-session or evening time needs a weekday Monday to
    Friday; a time after midnight of a night session (00:00-02:30 of a 21:00-02:30 session, or
    of a session written to start at 00:00) continues the evening before, so it needs Tuesday
    to Saturday: Friday night's session runs into Saturday's small hours (and belongs to
    Monday's trading day), and no session runs on Sunday night or into Monday's small hours.
    One session of the whole day (00:00-24:00) means "always open" — simulators and
    benchmarks configure that — and is open every day. O(1): one division for the weekday,
    then at most one comparison per session.
    """
    local = local_seconds(now_ns)
    day = local // DAY_S
    return open_at(local - day * DAY_S, (day + 3) % 7, sessions)


def open_at(tod: int, wday: int, sessions: list[tuple[int, int]]) -> bool:
    """``session_open`` for a local time of day ``tod`` (seconds) on local weekday ``wday``."""
    weekday_ok = wday <= 4  # Monday to Friday
    small_hours_ok = 1 <= wday <= 5  # Tuesday to Saturday: last evening's session continues
    for start, end in sessions:
        if start <= end:
            if start <= tod < end:
                if start == 0 and end >= DAY_S:
                    return True  # 00:00-24:00: always open
                if small_hours_ok if start == 0 else weekday_ok:
                    return True
        elif tod >= start:
            if weekday_ok:
                return True
        elif tod < end:
            if small_hours_ok:
                return True
    return False


def trading_day_number(now_ns: int, boundary_s: int = DEFAULT_DAY_BOUNDARY_S) -> int:
    """Days since the epoch of the trading day ``now_ns`` belongs to.

    At or after ``boundary_s`` local time, activity belongs to the next day; a Saturday or
    Sunday rolls forward to Monday. (Exchange holidays are not modelled: a broker's calendar
    for them belongs in the start-of-day snapshot.)
    """
    local = local_seconds(now_ns)
    day = local // DAY_S
    if local % DAY_S >= boundary_s:
        day += 1
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0
    if weekday == 5:
        day += 2
    elif weekday == 6:
        day += 1
    return day


def trading_day_bounds(day: int, boundary_s: int = DEFAULT_DAY_BOUNDARY_S) -> tuple[int, int]:
    """[start_ns, end_ns) of the timestamps that belong to trading day ``day`` (days since epoch)."""
    weekday = (day + 3) % 7
    # The day opens at the boundary of the previous calendar day, or of Friday for a Monday.
    prev = day - 3 if weekday == 0 else day - 1
    start_local = prev * DAY_S + boundary_s
    end_local = day * DAY_S + boundary_s
    return (start_local - CST_OFFSET_S) * NS, (end_local - CST_OFFSET_S) * NS


def day_as_yyyymmdd(day: int) -> int:
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return d.year * 10000 + d.month * 100 + d.day


def ns_from_local(year: int, month: int, day: int, hh: int = 0, mm: int = 0, ss: int = 0) -> int:
    """Nanoseconds since the epoch for a China-local wall time (for tests, tools and samples)."""
    naive = dt.datetime(year, month, day, hh, mm, ss)
    epoch_s = int((naive - dt.datetime(1970, 1, 1)).total_seconds()) - CST_OFFSET_S
    return epoch_s * NS
