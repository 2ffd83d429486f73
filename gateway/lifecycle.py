"""The order lifecycle, as the gateway tracks it for each routed order.

Everything that moves an order between states lives in this table, and the router asks it
*before* it settles the engine or tells anyone: ``step(status, event)`` says what the report
means for an order in that state. There is a row for every report the exchange may send at
every state, so "the table has no row" never happens silently::

    PENDING_NEW --ack--> NEW --fill--> PARTIALLY_FILLED --fill--> FILLED
         |                |                  |
         +--- cancel / reject ---------------+--> CANCELED / REJECTED

Actions:

- ``APPLY``: the expected report. Settle the engine, move the order, tell the client.
- ``SURPRISE``: a report the exchange may send but should not (a reject after an ack or a
  partial fill: the exchange dropped an order it had accepted). Applied like ``APPLY`` — the
  exchange is the truth — and raised as a warning alert, so a person sees it.
- ``REPEAT``: a report that says again what the order already reflects (a second ack, a late
  ack after a fill, a second cancel or reject of a finished order). Nothing changes; logged.
- ``LATE``: a fill for an order that already ended here. The exchange's position moved and the
  book cannot take it (the order released everything it held): a CRITICAL alert, never silence.

Fills are told apart by ``exec_id`` before the table is asked: a repeated execution is a
duplicate whatever the state, and is dropped by the router.
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


class Action(IntEnum):
    APPLY = 1
    SURPRISE = 2
    REPEAT = 3
    LATE = 4


LIVE = (S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED)
FINAL = frozenset({S.FILLED, S.CANCELED, S.REJECTED})

TRANSITIONS: dict[tuple[int, int], tuple[int, Action]] = {
    (S.PENDING_NEW, Event.ACK): (S.NEW, Action.APPLY),
    (S.PENDING_NEW, Event.REJECTED): (S.REJECTED, Action.APPLY),
    # An exchange may ack late, after a fill report already moved the order on.
    (S.NEW, Event.ACK): (S.NEW, Action.REPEAT),
    (S.PARTIALLY_FILLED, Event.ACK): (S.PARTIALLY_FILLED, Action.REPEAT),
    # The exchange dropped an order it had accepted (e.g. a risk check of its own after entry).
    (S.NEW, Event.REJECTED): (S.REJECTED, Action.SURPRISE),
    (S.PARTIALLY_FILLED, Event.REJECTED): (S.REJECTED, Action.SURPRISE),
    # A fill or a cancel (requested, FAK/FOK remainder, or the exchange's own at session end)
    # may reach an order in any live state; a fill before its ack is normal on fast markets.
    **{(s, Event.PARTIAL_FILL): (S.PARTIALLY_FILLED, Action.APPLY) for s in LIVE},
    **{(s, Event.FULL_FILL): (S.FILLED, Action.APPLY) for s in LIVE},
    **{(s, Event.CANCELED): (S.CANCELED, Action.APPLY) for s in LIVE},
    # Finished orders: anything but a fill only repeats what is known; a new fill is late.
    **{(s, e): (s, Action.REPEAT) for s in FINAL
       for e in (Event.ACK, Event.CANCELED, Event.REJECTED)},
    **{(s, e): (s, Action.LATE) for s in FINAL for e in (Event.PARTIAL_FILL, Event.FULL_FILL)},
}


def step(status: int, event: int) -> tuple[int, Action]:
    """What ``event`` does to an order in ``status``: (its next status, the action)."""
    return TRANSITIONS[(status, event)]

