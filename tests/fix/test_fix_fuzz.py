"""Bad input on the FIX port, from a bare socket: garbled messages are ignored (their gap is
recovered by resend), invalid ones answered with Reject (373), persistent garbage and oversized
messages end that session with Logout — while a QuickFIX session keeps trading throughout."""

from __future__ import annotations

import asyncio

import pytest

from checks.enums import OrdStatus
from gateway.fix.codec import frame
from simulator.client import Client
from tests.fix.qf import Initiator
from tests.fix.raw import RawFix

NOW = "20260101-00:00:00.000"


def order_fields(clid: str, price: float = 3200.0) -> list[tuple[int, object]]:
    return [(11, clid), (1, "A003"), (55, "rb2605"), (54, 1), (38, 1), (40, 2), (44, price),
            (60, NOW)]


@pytest.fixture(scope="module")
def trader(shared_fix_gateway, tmp_path_factory):
    """A QuickFIX session trading on the same gateway: it must not notice the fuzz."""
    qf = Initiator(tmp_path_factory.mktemp("trader"), shared_fix_gateway.fix_port,
                   reset=True).start()
    qf.n = 0  # type: ignore[attr-defined]
    yield qf
    qf.stop()


def still_trading(qf: Initiator) -> None:
    qf.n += 1  # type: ignore[attr-defined]
    clid = f"T{qf.n}"  # type: ignore[attr-defined]
    qf.order(clid, account="A001", price=3150.0)
    assert qf.report(clid, "0")[39] == "0"


def test_garbled_messages_are_ignored_and_their_gap_is_recovered_by_resend(
        shared_fix_gateway, trader):
    raw = RawFix(shared_fix_gateway.fix_port)
    assert raw.logon().msg_type == b"A"
    good = raw.build("D", order_fields("M1"))  # seq 2, sent below only after the garbage
    bad_sum = good[:-4] + (b"000\x01" if not good.endswith(b"=000\x01") else b"001\x01")
    raw.write(bad_sum)
    length = good.split(b"\x01")[1]
    raw.write(good.replace(length, b"9=%d" % (int(length[2:]) - 3), 1))  # BodyLength wrong
    raw.write(raw.build("D", order_fields("M1")).replace(b"35=D\x01", b"", 1))  # no MsgType
    raw.write(b"8=FIX.4.2\x019=5\x0135=0\x0110=000\x01")  # wrong BeginString
    raw.seq = 3
    raw.send("0")  # seq 3: the gateway sees 2 missing and asks for it
    rr = raw.wait("2")
    assert rr.fields[7] == b"2" and rr.fields[16] == b"0"
    raw.write(raw.build("D", order_fields("M1"), seq=2, poss_dup=True))
    raw.write(raw.build("4", [(123, "Y"), (36, 4)], seq=3, poss_dup=True))  # the heartbeat
    er = raw.wait("8")
    assert er.fields[11] == b"M1" and er.fields[150] == b"0"
    raw.send("1", [(112, "ping")])
    assert raw.wait("0").fields.get(112) == b"ping"
    still_trading(trader)
    raw.close()


INVALID = [
    # (fields of a D, or a whole body override, SessionRejectReason, RefTagID)
    ("D", [(11, "I1"), (11, "I1b")] + order_fields("I1")[1:], b"13", b"11"),
    ("D", order_fields("I2")[1:], b"1", b"11"),  # ClOrdID missing
    ("D", order_fields("I3")[:4] + [(38, "abc"), (40, 2), (44, 3200)], b"6", b"38"),
    ("D", order_fields("I4")[:3] + [(54, 7)] + order_fields("I4")[4:], b"5", b"54"),
    ("D", order_fields("I5") + [(34, 99)], b"13", b"34"),  # a header tag repeated in the body
    ("D", order_fields("I6") + [(52, NOW)], b"13", b"52"),
    ("ZZ", [(11, "x")], b"11", b"35"),  # not a FIX 4.4 message type
    ("D", order_fields("I7") + [(58, "")], b"4", b"58"),  # tag without a value
]


def test_invalid_messages_get_reject_with_a_reason_and_the_session_goes_on(
        shared_fix_gateway, trader):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    for mt, fields, reason, tag in INVALID:
        raw.send(mt, fields)
        rej = raw.wait("3")
        assert (rej.fields[373], rej.fields.get(371)) == (reason, tag), (mt, fields, rej)
    # A field that is not tag=value at all.
    header = f"49=MANUAL1\x0156=FENGKONG\x0134={raw.seq}\x0152={NOW}\x01".encode()
    raw.write(frame(b"0", header, b"junk\x01"))
    raw.seq += 1
    assert raw.wait("3").fields[373] == b"0"
    raw.send("1", [(112, "alive")])
    assert raw.wait("0").fields.get(112) == b"alive"
    still_trading(trader)
    raw.close()


def test_one_byte_writes_and_ten_thousand_messages_in_one_write(shared_fix_gateway, trader):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.sender = "MANUAL1"
    logon = raw.build("A", [(98, 0), (108, 30), (141, "Y"), (553, "manual1"),
                            (554, "manual-secret")])
    raw.seq += 1
    for i in range(len(logon)):
        raw.write(logon[i:i + 1])
    assert raw.wait("A").fields[34] == b"1"
    order = raw.build("D", order_fields("B1", 3150.0))
    raw.seq += 1
    for i in range(len(order)):
        raw.write(order[i:i + 1])
    assert raw.wait("8").fields[11] == b"B1"
    burst = bytearray()
    for _ in range(10_000):
        burst += raw.build("0", [])
        raw.seq += 1
    burst += raw.build("1", [(112, "after-burst")])
    raw.seq += 1
    raw.write(bytes(burst))
    answer = raw.wait("0", "2", "3", "5")
    assert answer.msg_type == b"0" and answer.fields.get(112) == b"after-burst"
    still_trading(trader)
    raw.close()


def test_persistent_garbage_ends_the_session_with_logout(shared_fix_gateway, trader):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    for _ in range(25):
        raw.write(b"8=FIX.4.4\x019=5\x0135=0\x0110=999\x01")
    rest = raw.wait_closed()
    assert [m.msg_type for m in rest][-1:] == [b"5"]
    assert b"garbled" in rest[-1].fields[58]
    still_trading(trader)


def test_an_oversized_message_ends_the_session_with_logout(shared_fix_gateway, trader):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    raw.write(raw.build("D", order_fields("BIG") + [(58, "x" * (1 << 20))]))
    rest = raw.wait_closed()
    assert rest and rest[-1].msg_type == b"5" and b"bytes" in rest[-1].fields[58]
    still_trading(trader)


def test_msgseqnum_too_low_is_logout(shared_fix_gateway):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    raw.send("0")
    raw.send("0", seq=2)  # again, not PossDup
    rest = raw.wait_closed()
    assert rest[-1].msg_type == b"5"
    assert b"MsgSeqNum too low, expecting 3 but received 2" in rest[-1].fields[58]


def test_a_silent_line_gets_heartbeat_then_test_request_then_logout(shared_fix_gateway):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon(hb=1)
    seen = [m.msg_type for m in raw.wait_closed()]
    assert b"0" in seen and b"1" in seen and seen[-1] == b"5"
    assert seen.index(b"0") < seen.index(b"1")


def test_nothing_but_logon_before_logon(shared_fix_gateway):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.send("D", order_fields("NL"))
    assert raw.wait_closed() == []
    raw = RawFix(shared_fix_gateway.fix_port, sender="NOBODY")
    raw.send("A", [(98, 0), (108, 30), (553, "manual1"), (554, "manual-secret")])
    assert raw.wait_closed() == []


def test_absurd_numbers_are_ordinary_rejects(shared_fix_gateway):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    for n, (qty, price) in enumerate([("1e400", 3200), ("nan", 3200), ("2", "nan"), ("2", "inf"),
                                      ("-3", 3200), ("1.5", 3200), ("2", "-1"),
                                      ("9" * 40, 3200)]):
        fields = order_fields(f"N{n}")
        fields[4], fields[6] = (38, qty), (44, price)
        raw.send("D", fields)
        er = raw.wait("8", "3")
        assert er.msg_type == b"8" and er.fields[150] == b"8", (qty, price, er)
        assert int(er.fields[20001]) in (403, 406, 408), er
    raw.send("1", [(112, "still")])
    assert raw.wait("0").fields.get(112) == b"still"


def test_two_logons_of_one_session_at_once_one_wins(shared_fix_gateway):
    a, b = RawFix(shared_fix_gateway.fix_port), RawFix(shared_fix_gateway.fix_port)
    logon = [(98, 0), (108, 30), (141, "Y"), (553, "manual1"), (554, "manual-secret")]
    a.send("A", logon)
    b.send("A", logon)
    answers = [m.msg_type if (m := r.recv(timeout=5)) is not None else None for r in (a, b)]
    assert answers.count(b"A") == 1 and answers.count(None) == 1, answers
    a.close()
    b.close()


def test_a_registered_application_must_be_named_on_the_fix_logon(shared_fix_gateway):
    from tests.fix.conftest import APP_ID, AUTH_CODE

    base = [(98, 0), (108, 30), (141, "Y"), (553, "appdesk"), (554, "backoffice-secret")]
    for extra in ([], [(20011, APP_ID), (20012, "wrong")]):
        raw = RawFix(shared_fix_gateway.fix_port, sender="APPDESK")
        raw.send("A", base + extra)
        out = raw.wait_closed()
        assert out and out[-1].msg_type == b"5" and out[-1].fields[58].startswith(b"110 "), out
    raw = RawFix(shared_fix_gateway.fix_port, sender="APPDESK")
    raw.send("A", base + [(20011, APP_ID), (20012, AUTH_CODE), (20013, "10.0.0.7"),
                          (20017, "Linux 6.1")])
    assert raw.wait("A", "5").msg_type == b"A"
    raw.close()


def test_sequence_reset_moves_the_expected_number_and_never_back(shared_fix_gateway):
    raw = RawFix(shared_fix_gateway.fix_port)
    raw.logon()
    raw.send("4", [(36, 50)], seq=99)  # Reset mode: its own MsgSeqNum does not matter
    raw.seq = 50
    raw.send("1", [(112, "after-reset")])
    assert raw.wait("0", "2").fields.get(112) == b"after-reset"  # no gap seen
    raw.send("4", [(36, 10)])  # backwards: refused
    rej = raw.wait("3")
    assert (rej.fields[373], rej.fields[371]) == (b"5", b"36")
    raw.close()


async def test_cancel_on_disconnect_over_fix(shared_fix_gateway):
    # manual1 (cancel_on_disconnect = true) is also connected natively: its orders' reports go
    # there once the FIX connection is gone.
    heir = await Client.connect("127.0.0.1", int(shared_fix_gateway.match.group(1)), "manual1",
                                "manual-secret")
    try:
        raw = RawFix(shared_fix_gateway.fix_port)
        raw.logon()
        raw.send("D", order_fields("COD1", 3140.0))
        assert raw.wait("8").fields[150] == b"0"
        raw.sock.close()  # dropped, no Logout
        while True:
            rep = await asyncio.wait_for(heir.next_report(), 15)
            if rep.cl_ord_id == "COD1" and rep.status == OrdStatus.CANCELED:
                break
    finally:
        await heir.close()
