"""Interop with a real QuickFIX 1.16 initiator (``quickfix`` from the ``quickfix-tls`` wheel)
against the running gateway and exchange simulator: logon, orders to fills, every class of
reject, cancels, sequence gaps, a restart, heartbeats, the kill switch and the drop copy."""

from __future__ import annotations

import asyncio
import signal

from checks.reasons import Reason
from gateway.fix.store import FixStore
from simulator.client import Client
from tests.conftest import Proc
from tests.fix.conftest import start_fix_gateway
from tests.fix.qf import Initiator
from tests.fix.raw import RawFix
from tests.gateway.test_e2e import admin

NOW = "20260101-00:00:00.000"


def cancel_fields(clid: str, orig: str, account: str = "A001") -> list[tuple[int, str]]:
    return [(11, clid), (41, orig), (1, account), (55, "rb2605"), (54, "1"), (60, NOW)]


def test_logon_order_to_a_fill_and_cancel(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    qf = Initiator(tmp_path / "qf", fix_gateway.fix_port, reset=True, heartbeat=1).start()
    try:
        # Heartbeats both ways at 1 s, and a TestRequest answered with its TestReqID (the
        # gateway's own TestRequest on a silent line: tests/fix/test_fix_fuzz.py).
        assert qf.next_admin("0", timeout=5)
        qf.send("1", [(112, "QF-PING")])
        while qf.next_admin("0", timeout=5).get(112) != "QF-PING":
            pass  # plain heartbeats meanwhile
        qf.order("B1", account="A001", side="1", price=3200.0, qty=2)
        ack = qf.report("B1", "0")
        assert ack[39] == "0" and ack[151] == "2" and ack[14] == "0" and ack[37] != "NONE"
        qf.order("S1", account="A004", side="2", price=3200.0, qty=2)
        fill = qf.report("S1", "F")
        assert (fill[39], fill[32], fill[31], fill[14], fill[151], fill[6]) == \
            ("2", "2", "3200", "2", "0", "3200")
        assert fill[17] != ack[17]
        assert qf.report("B1", "F")[39] == "2"
        qf.order("R1", price=3190.0)
        qf.report("R1", "0")
        qf.send("F", cancel_fields("C1", "R1"))
        assert qf.report("R1", "4")[39] == "4"
        # Too late (finished) and unknown: OrderCancelReject with CxlRejReason 0 and 1.
        qf.send("F", cancel_fields("C2", "R1"))
        rej = qf.next_app(lambda m: m.get(35) == "9")
        assert (rej[11], rej[41], rej[434], rej[102]) == ("C2", "R1", "1", "0")
        assert rej[20001] == str(int(Reason.ORDER_FINISHED))
        qf.send("F", cancel_fields("C3", "NOPE"))
        rej = qf.next_app(lambda m: m.get(35) == "9")
        assert (rej[41], rej[102], rej[20001]) == ("NOPE", "1", str(int(Reason.UNKNOWN_ORDER)))
        # Status of one order and of all (H, AF); an unsupported message (G): j.
        qf.order("R2", price=3191.0)
        qf.report("R2", "0")
        qf.send("H", [(11, "R2"), (55, "rb2605"), (54, "1")])
        st = qf.report("R2", "I")
        assert (st[39], st[151]) == ("0", "1")
        qf.send("AF", [(584, "M1"), (585, "7")])
        st = qf.next_app(lambda m: m.get(584) == "M1")
        assert (st[11], st[150], st[912]) == ("R2", "I", "Y")
        qf.send("G", [(11, "X"), (41, "R2"), (55, "rb2605"), (54, "1"), (40, "2"), (60, NOW)])
        bmr = qf.next_app(lambda m: m.get(35) == "j")
        assert (bmr[372], bmr[380]) == ("G", "3")
    finally:
        qf.stop(graceful=True)
    assert "Received logout response" in qf.events()  # the Logout handshake


# (FIX fields, expected reason): every class of refusal, as in tests/gateway/test_e2e.py.
REJECTIONS = [
    (dict(price=3200.5), Reason.PRICE_NOT_ON_TICK),
    (dict(price=3380.0), Reason.PRICE_OUTSIDE_COLLAR),
    (dict(price=3430.0), Reason.PRICE_ABOVE_UPPER_LIMIT),
    (dict(price=None, ord_type="1", extra=[(59, "3")]), Reason.ORD_TYPE_NOT_ALLOWED_EXCHANGE),
    (dict(qty=501), Reason.QTY_ABOVE_MAX),
    (dict(qty=0), Reason.INVALID_QTY),
    (dict(symbol="zz9999"), Reason.UNKNOWN_INSTRUMENT),
    (dict(account="A002", symbol="m2605", price=2900.0), Reason.ACCOUNT_CLOSE_ONLY),
    (dict(account="A004", side="2", extra=[(77, "C")]), Reason.INSUFFICIENT_POSITION),
    (dict(account="A004", side="2", extra=[(20002, "3")]), Reason.INSUFFICIENT_POSITION),
    (dict(account="A003"), Reason.ACCOUNT_NOT_PERMITTED),
    (dict(account="A004", symbol="au2606", price=640.0, qty=50), Reason.INSUFFICIENT_FUNDS),
]


def test_every_class_of_reject_arrives_with_its_reason(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    qf = Initiator(tmp_path / "qf", fix_gateway.fix_port, reset=True).start()
    try:
        for n, (kw, reason) in enumerate(REJECTIONS):
            qf.order(f"X{n}", **kw)
            rep = qf.report(f"X{n}")
            assert (rep[150], rep[39], rep[20001]) == ("8", "8", str(int(reason))), (kw, rep)
            assert rep[58].startswith(f"{int(reason)} {Reason(reason).description}")
            assert rep[103]
        # self-trade inside an account group, then a duplicate ClOrdID
        qf.order("REST", account="A004", symbol="SR605", side="2", price=5610.0, qty=3)
        qf.report("REST", "0")
        qf.order("CROSS", account="A005", symbol="SR605", side="1", price=5612.0, qty=3)
        assert qf.report("CROSS")[20001] == str(int(Reason.SELF_TRADE))
        qf.order("CROSS", price=3199.0)
        dup = qf.report("CROSS")
        assert (dup[20001], dup[103]) == (str(int(Reason.DUPLICATE_CL_ORD_ID)), "6")
        # Bad enumerations are session-level: Reject (3) naming the tag, the session goes on.
        qf.order("BADSIDE", side="9")
        rej = qf.next_admin("3")
        assert (rej[373], rej[371]) == ("5", "54")
        qf.order("OK1", price=3190.0)
        assert qf.report("OK1", "0")[39] == "0"
    finally:
        qf.stop()


def test_wrong_password_is_refused_and_locks_out(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    port = fix_gateway.fix_port
    bad = Initiator(tmp_path / "bad", port, password="wrong", reset=True).start(wait_logon=False)
    try:
        out = bad.next_admin("5")
        assert out[58].startswith(f"{int(Reason.AUTH_FAILED)} ")
    finally:
        bad.stop()
    for _ in range(4):  # max_failures = 5 from one address
        raw = RawFix(port, sender="ALGO1")
        raw.logon("algo1", "wrong-again")
        raw.wait_closed()
    good = Initiator(tmp_path / "good", port, reset=True).start(wait_logon=False)
    try:
        out = good.next_admin("5")
        assert out[58].startswith(f"{int(Reason.LOCKED_OUT)} "), out
        assert not good.app.logged_on.is_set()
    finally:
        good.stop()
        assert admin(fix_gateway, "POST", "/v1/users/algo1/unlock", {"reason": "test"})[0] == 200
    # Another user is not affected.
    raw = RawFix(port)
    assert raw.logon().msg_type == b"A"
    raw.close()


def test_sequence_gaps_are_answered_by_resend_both_ways(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    port = fix_gateway.fix_port
    _, before = admin(fix_gateway, "GET", "/v1/status", token="demo-viewer-token")
    qf = Initiator(tmp_path / "qf", port, reset=True).start()
    qf.order("G1", price=3190.0)
    qf.report("G1", "0")
    qf.order("G2", price=3191.0)
    qf.report("G2", "0")
    qf.stop()
    # The initiator comes back with its outbound number 5 ahead and expecting our messages
    # from 2 again: the gateway asks for the gap (QuickFIX gap-fills it) and resends its
    # reports with PossDupFlag and OrigSendingTime.
    sender, _ = qf.seqnums()
    qf.set_seqnums(sender + 5, 2)
    qf = Initiator(tmp_path / "qf", port)
    qf.start()
    try:
        again = qf.report("G1", "0")
        assert again[43] == "Y" and 122 in again
        assert qf.report("G2", "0")[43] == "Y"
        qf.order("G3", price=3192.0)  # numbers agree again both ways
        assert qf.report("G3", "0")[39] == "0"
    finally:
        qf.stop()
    _, status = admin(fix_gateway, "GET", "/v1/status", token="demo-viewer-token")
    # the resent reports made no new orders
    assert status["stats"]["accepted"] - before["stats"]["accepted"] == 3


def test_restart_resumes_sequence_numbers_and_possdup_resend_is_no_second_order(
        exchange_proc, tmp_path):
    gw, port = start_fix_gateway(int(exchange_proc.match.group(1)), tmp_path / "gw",
                                 keep_orders=True)
    qf = Initiator(tmp_path / "qf", port).start()
    try:
        for n in range(3):
            qf.order(f"P{n}", price=3190.0 + n)
            qf.report(f"P{n}", "0")
        gw.signal(signal.SIGKILL)
        gw.p.wait()
        assert qf.app.logged_out.wait(15)
        # The store forgets the last two inbound orders (as if their record had not reached the
        # disk): after the restart the gateway asks for them again and QuickFIX resends them with
        # PossDupFlag=Y. They must not become second orders.
        store_path = next((tmp_path / "gw" / "journal.fix").glob("FENGKONG-ALGO1.fixstore"))
        store = FixStore(store_path, "os")
        store.set_next_in(store.next_in - 2)
        store.close()
        qf.stop()
        seq_in = qf.seqnums()[1]
        gw = Proc(gw.args, r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)")  # same journal
        port = int(gw.wait_for(r"FIX on [\d.]+:(\d+)").group(1))  # and stores, a new port
    except BaseException:
        gw.kill9()
        qf.stop()
        raise
    try:
        gw.wait_for("exchange link up")
        # The same initiator (same store) pointed at the new port.
        qf = Initiator(tmp_path / "qf", port).start()
        for n in (1, 2):
            st = qf.report(f"P{n}", "I")  # the order's status, not a new order
            assert st[39] == "0"
        qf.order("P3", price=3195.0)
        assert qf.report("P3", "0")[39] == "0"
        _, status = admin(gw, "GET", "/v1/status", token="demo-viewer-token")
        assert status["working_orders"] == 4 and status["stats"]["accepted"] == 4
        assert qf.seqnums()[1] > seq_in  # our numbers resumed where they were, not reset
        # The drop copy (away all along) gets every report by resend, and no reject for the
        # PossDup orders: they were never refused, they exist.
        dc = Initiator(tmp_path / "dc", port, sender="BACKOFFICE", username="backoffice1",
                       password="backoffice-secret").start()
        try:
            seen = []
            while not seen or seen[-1][:2] != ("P3", "0"):
                m = dc.next_app(lambda m: m.get(35) == "8")
                seen.append((m[11], m[150], m.get(20001)))
            assert not [s for s in seen if s[1] == "8"], seen
            assert {c for c, et, _ in seen if et == "0"} == {"P0", "P1", "P2", "P3"}
        finally:
            dc.stop()
    finally:
        qf.stop()
        gw.stop()


def test_kill_switch_stops_the_fix_sessions_account_and_cancels_its_orders(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    qf = Initiator(tmp_path / "qf", fix_gateway.fix_port, reset=True).start()
    try:
        for n in range(2):
            qf.order(f"K{n}", price=3190.0 + n)
            qf.report(f"K{n}", "0")
        code, _ = admin(fix_gateway, "POST", "/v1/kill",
                        {"scope": "account", "key": "A001", "reason": "runaway algo"})
        assert code == 200
        got = [qf.next_app() for _ in range(3)]  # two cancels and the alert, as News (B)
        assert sorted((m[35], m.get(11), m.get(150)) for m in got if m[35] == "8") == \
            [("8", "K0", "4"), ("8", "K1", "4")]
        news = next(m for m in got if m[35] == "B")
        assert news[20001] == str(int(Reason.KILL_SWITCH))
        qf.order("K9", price=3190.0)
        assert qf.report("K9")[20001] == str(int(Reason.KILLED_ACCOUNT))
        qf.order("K10", account="A004", price=3190.0)  # other accounts trade on
        assert qf.report("K10", "0")[39] == "0"
    finally:
        qf.stop()
        admin(fix_gateway, "POST", "/v1/reset", {"scope": "account", "key": "A001",
                                                 "reason": "test"})


def test_drop_copy_receives_native_and_fix_flow_and_what_it_missed(shared_fix_gateway, tmp_path):
    fix_gateway = shared_fix_gateway
    port = fix_gateway.fix_port
    dc = Initiator(tmp_path / "dc", port, sender="BACKOFFICE", username="backoffice1",
                   password="backoffice-secret", reset=True).start()
    qf = Initiator(tmp_path / "qf", port, reset=True).start()

    async def native(clid: str) -> None:
        c = await Client.connect("127.0.0.1", int(fix_gateway.match.group(1)), "algo1",
                                 "algo-secret")
        h = await c.send_order(account="A004", symbol="rb2605", side=1, price=3190.0, qty=1,
                               cl_ord_id=clid)
        await h.acked(timeout=15)
        await c.close()

    narrow = RawFix(port, sender="BACKOFFICE-A004")  # permitted A004 only
    narrow.logon("backoffice1", "backoffice-secret")
    try:
        asyncio.run(native("NAT1"))  # A004
        qf.order("FIX1", price=3191.0)  # A001
        qf.report("FIX1", "0")
        seen = {(m[11], m[150]) for m in (dc.report("NAT1", "0"), dc.report("FIX1", "0"))}
        assert seen == {("NAT1", "0"), ("FIX1", "0")}
        qf.order("FIX-A4", account="A004", price=3189.0)
        qf.report("FIX-A4", "0")
        # The one-account drop copy saw A004's reports and nothing of A001's.
        got = [narrow.wait("8").fields]
        while got[-1][11] != b"FIX-A4":
            got.append(narrow.wait("8").fields)
        assert {f[1] for f in got} == {b"A004"} and b"NAT1" in {f[11] for f in got}, got
        narrow.close()
        # Read-only: an order on the drop copy is refused with BusinessMessageReject.
        dc.order("DC1")
        assert dc.next_app(lambda m: m.get(35) == "j")[380] == "3"
        # Away, then back: what happened meanwhile arrives by resend.
        dc.stop()
        qf.order("FIX2", price=3192.0)
        qf.report("FIX2", "0")
        dc = Initiator(tmp_path / "dc", port, sender="BACKOFFICE", username="backoffice1",
                       password="backoffice-secret").start()
        missed = dc.report("FIX2", "0")
        assert missed[43] == "Y"
    finally:
        narrow.close()
        dc.stop()
        qf.stop()
