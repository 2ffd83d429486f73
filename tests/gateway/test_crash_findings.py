"""What the crash property test (``test_crash_property.py``) found, each pinned down alone.

An order the gateway refused *before* the risk engine — the exchange link down
(EXCHANGE_UNAVAILABLE, 1201) or new orders halted (JOURNAL_UNAVAILABLE, SAFE_MODE) — was
journaled as its inbound ``NewOrder`` and the reject sent to the client, with no ``Decision``
record (``Router.new_order``). Replay ran ``new_order`` with ``replaying`` set, which skipped
those live-only refusals, so the engine decided the order again and accepted it: the recovered
book held an order the exchange never received (frozen margin, the group's resting-order
index), and it took the next exchange id of its boot — every order accepted after it in that
boot was rebuilt under the id of the order before it. The exchange's reports then landed on the
wrong orders, and the order really working at the exchange was closed at reconciliation as
"lost". The replay reported no disagreement (there was no ``Decision`` to compare with).

Fixed by a5735a3 (such refusals are journaled as decisions, and replay decides an order only
when the engine's decision follows it). The first test writes the journal as the gateway wrote
it *before* that change (no ``Decision`` after the refused order), so journals from older
versions keep replaying right; the second runs the whole story with real processes.
"""

from __future__ import annotations

import time

from checks.engine import Engine as ReferenceEngine
from checks.enums import ExecType, OrdStatus, Side
from checks.reasons import Reason
from gateway import journal as jr
from gateway.config import load_gateway_config
from gateway.protocol import ExecReport, Logon, NewOrder
from gateway.recovery import replay_journal
from gateway.server import Gateway
from tests.conftest import EXAMPLES
from tests.gateway.crash_harness import SEAT, CrashRun, Point, T


def test_replay_does_not_revive_an_order_refused_for_a_down_link(tmp_path):
    """The journal as the live gateway wrote it before the fix (no Decision for the refusal)."""
    now = time.time_ns()
    prefix = "gw1.abc."
    refused = NewOrder("r1", "A005", "rb2605", 2, 1, 1, 1, 1, 3201.0, 3)
    placed = NewOrder("t1", "A001", "rb2605", 2, 1, 1, 1, 1, 3203.0, 1)
    with jr.Journal.open(tmp_path) as j:
        j.append_many([
            jr.State(now, "boot", prefix.encode()),
            jr.Inbound(now + 1, 1, Logon("algo1", "***", [], 5.0, False)),
            # Link down: the inbound order, then its reject to the client — no Decision.
            jr.Inbound(now + 2, 1, refused),
            jr.Outbound(now + 2, 1, ExecReport(
                "r1", "", "A005", "rb2605", OrdStatus.REJECTED, ExecType.REJECTED,
                int(Reason.EXCHANGE_UNAVAILABLE), Reason.EXCHANGE_UNAVAILABLE.description, 0, 0.0,
                0, 0, now + 2, 2, 3201.0, 3)),
            # Link back: the next order is accepted and sent as the boot's first exchange id.
            jr.Inbound(now + 3, 1, placed),
            jr.Decision(now + 3, 1, "t1", "A001", "rb2605", 0, "", 1),
            jr.Outbound(now + 3, jr.EXCHANGE_LINK, NewOrder(
                f"{prefix}1", "A001", "rb2605", 2, 1, 1, 1, 1, 3203.0, 1)),
        ])
    gw = Gateway(load_gateway_config(EXAMPLES / "gateway.toml"), engine_cls=ReferenceEngine)
    with jr.Journal.open(tmp_path) as j:
        report = replay_journal(gw, j, now_ns=now + 10)
    rebuilt = sorted((o.exch_id, o.cl_ord_id) for o in gw.router.orders.values())
    assert rebuilt == [(f"{prefix}1", "t1")], (
        f"replay rebuilt {rebuilt}: the order refused for a down link came back as a working "
        f"order, and t1 lost the exchange id it was sent under ({prefix}1); "
        f"disagreements reported: {report.disagreements}")
    assert gw.engine.account_view("A005")["frozen_margin"] == 0


async def test_after_a_restart_the_order_working_at_the_exchange_is_in_the_book(tmp_path):
    """Real processes: refused while the link is down, accepted after it is back, kill -9."""
    async with CrashRun(tmp_path, 0, 0) as run:
        assert run.proxy is not None
        point = Point(1, "refused for a down link, then an order accepted, then kill -9")
        algo = await run.connect("algo1", False, "f")
        run.proxy.cut()
        await run.wait_seat_gone()
        await run.wait_link("down")
        refused = await algo.send_order(account="A005", symbol="rb2605", side=Side.SELL,
                                        price=3201.0, qty=3)
        assert (await refused.acked(T)).reason == Reason.EXCHANGE_UNAVAILABLE
        run.proxy.restore()
        await run.wait_link("up")
        placed = await algo.send_order(account="A001", symbol="rb2605", side=Side.SELL,
                                       price=3203.0, qty=1)
        assert (await placed.acked(T)).status == OrdStatus.NEW
        [(exch_id, _)] = run.truth().working.items()
        run._kill(point, "with the order working")
        algo.abort()

        run.proxy.reset(open_=True)
        await run._start_gateway()
        await run._wait_line("exchange link up")
        book = [(o["exch_id"], o["cl_ord_id"], o["account"]) for o in await run.get("/v1/orders")]
        assert book == [(exch_id, placed.cl_ord_id, "A001")], (
            f"after the restart the gateway's working orders are {book}; the exchange has "
            f"{exch_id} ({placed.cl_ord_id}, A001) working for seat {SEAT}")
