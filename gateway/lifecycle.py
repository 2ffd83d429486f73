"""The order lifecycle, as the gateway tracks it for each routed order.

    PENDING_NEW --ack--> NEW --fill--> PARTIALLY_FILLED --fill--> FILLED
         |                |                  |
         +---- cancel / reject ----------------+--> CANCELED / REJECTED

Everything that moves an order between states lives in this table; the router asks
``next_status`` and treats ``None`` as an event the order cannot take in its state (a late or
duplicate exchange report), which is logged and ignored rather than allowed to corrupt state.
"""

from __future__ import annotations

from enum import IntEnum

from checks.enums import OrdStatus as S


class Event(IntEnum):
    ACK = 1
    PARTIAL_FILL = 2
    FULL_FILL = 3
    CANCELED = 4
    REJECTED = 5


_LIVE = (S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED)

TRANSITIONS: dict[tuple[int, int], int] = {
    (S.PENDING_NEW, Event.ACK): S.NEW,
    (S.PENDING_NEW, Event.REJECTED): S.REJECTED,
    **{(s, Event.PARTIAL_FILL): S.PARTIALLY_FILLED for s in _LIVE},
    **{(s, Event.FULL_FILL): S.FILLED for s in _LIVE},
    **{(s, Event.CANCELED): S.CANCELED for s in _LIVE},
    # An exchange may ack late, after a fill report already moved the order on.
    (S.NEW, Event.ACK): S.NEW,
    (S.PARTIALLY_FILLED, Event.ACK): S.PARTIALLY_FILLED,
}

FINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED})


def next_status(status: int, event: int) -> int | None:
    return TRANSITIONS.get((status, event))
