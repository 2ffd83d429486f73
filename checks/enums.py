"""Domain enumerations shared by the risk model, the wire protocol and the simulator.

They are ``IntEnum``s with stable numbers: the numbers travel on the wire (msgpack) and index
the Cython engine's tables, so a value, once published, never changes meaning.
"""

from enum import IntEnum


class Side(IntEnum):
    BUY = 1
    SELL = 2


class Offset(IntEnum):
    """开平: whether an order opens a position or closes one (and which one)."""

    OPEN = 1
    CLOSE = 2
    CLOSE_TODAY = 3
    CLOSE_YESTERDAY = 4


class Hedge(IntEnum):
    SPEC = 1
    ARB = 2
    HEDGE = 3


class OrdType(IntEnum):
    LIMIT = 1
    MARKET = 2


class Tif(IntEnum):
    GFD = 1
    IOC = 2  # FAK
    FOK = 3


class OrdStatus(IntEnum):
    PENDING_NEW = 1
    NEW = 2
    PARTIALLY_FILLED = 3
    FILLED = 4
    CANCELED = 5
    REJECTED = 6


class ExecType(IntEnum):
    PENDING_NEW = 1
    NEW = 2
    TRADE = 3
    CANCELED = 4
    REJECTED = 5
    STATUS = 6  # an order-status answer (reconciliation), no state change by itself


class AccountStatus(IntEnum):
    """Trading state of an account: a small enum, never scattered flags."""

    ACTIVE = 1
    CLOSE_ONLY = 2
    SUSPENDED = 3


class ProgReg(IntEnum):
    """Programmatic-trading registration (报告管理)."""

    NONE = 0
    REPORTED = 1
    CONFIRMED = 2


class AlertLevel(IntEnum):
    INFO = 1
    WARNING = 2
    CRITICAL = 3


class KillScope(IntEnum):
    FIRM = 1
    ACCOUNT = 2
    GROUP = 3
    SESSION = 4
    INSTRUMENT = 5
    PRODUCT = 6


FINISHED_STATUSES = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REJECTED})
