"""The compiled order path's wire code (``gateway/fastroute.pyx``) agrees with msgspec.

The compiled reader takes a frame only when the frame is exactly what ``gateway.protocol``'s
msgspec codec writes for the message in it; the journal then splices the frame into the
record. So: whatever it takes, msgspec decodes to the same values and re-encodes to the same
bytes (else a record would differ from the reference's); what msgspec writes for an order or
a report with ASCII texts, it takes; the records it writes are msgspec's records.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import journal as jr
from gateway.protocol import ExecReport, Message, NewOrder

fastroute = pytest.importorskip("gateway.fastroute")

decode = msgspec.msgpack.Decoder(Message).decode
encode = msgspec.msgpack.encode

ascii_text = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=300)
ints = st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from(
    (0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -32, -33, -128, -129,
     -32768, -32769, -2**31, -2**31 - 1)))
prices = st.floats(allow_nan=False, allow_infinity=False)

orders = st.builds(NewOrder, ascii_text, ascii_text, ascii_text, ints, ints, ints, ints, ints,
                   prices, ints)
reports = st.builds(ExecReport, ascii_text, ascii_text, ascii_text, ascii_text, ints, ints,
                    ints, ascii_text, ints, prices, ints, ints, ints, ints, prices, ints,
                    st.booleans(), ascii_text, ints, ints, ints, ints)


def fields(msg: msgspec.Struct) -> tuple:
    return msgspec.structs.astuple(msg)


@settings(max_examples=300)
@given(msg=st.one_of(orders, reports))
def test_what_msgspec_writes_the_reader_takes_with_the_same_values(msg):
    body = encode(msg)
    assert fastroute.read_fields(body, type(msg) is NewOrder) == fields(msg)
    # and never as the other kind
    assert fastroute.read_fields(body, type(msg) is not NewOrder) is None


@settings(max_examples=1000)
@given(msg=st.one_of(orders, reports), data=st.data())
def test_a_frame_it_takes_is_msgspec_canonical(msg, data):
    """Bytes changed anywhere: taken only if msgspec reads the same values and writes the
    very same bytes back (the journal's record of it is then the reference's)."""
    body = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        body = body[:data.draw(st.integers(0, len(body)))]
    body = bytes(body)
    for client in (True, False):
        got = fastroute.read_fields(body, client)
        if got is not None:
            decoded = decode(body)
            assert fields(decoded) == got
            assert encode(decoded) == body


@pytest.mark.parametrize("body", [
    encode(NewOrder("c1", "A001", "rb2605", 1, 1, 1, 2, 1, 3200.0, 2.0)),  # a float quantity
    encode(NewOrder("单1", "A001", "rb2605", 1, 1, 1, 2, 1, 3200.0, 2)),  # not ASCII
    encode(NewOrder("c1", "A001", "rb2605", 1, 1, 1, 2, 1, float("nan"), 2)),
    encode(NewOrder("c1", "A001", "rb2605", 1, 1, 1, 2, 1, float("inf"), 2)),
    encode(["NewOrder", "c1", "A001", "rb2605", 1, 1, 1, 2, 1, 3200.0]),  # a field short
    encode(["NewOrder", "c1", "A001", "rb2605", 1, 1, 1, 2, 1, 3200.0, 2, 0]),  # one extra
    bytes.fromhex("9ba84e65774f72646572") + bytes.fromhex("d9026331"),  # str8 for 2 bytes
    encode(ExecReport("x", "", "A", "S", 1, 0))[:-1],  # cut short
    encode(["ExecReport", "x", "", "A", "S", 1, 0]),  # trailing defaults left out
])
def test_anything_else_is_left_to_msgspec(body):
    assert fastroute.read_fields(body, True) is None
    assert fastroute.read_fields(body, False) is None


def test_a_non_shortest_int_is_left_to_msgspec():
    good = encode(NewOrder("c1", "A001", "rb2605", 1, 1, 1, 2, 1, 3200.0, 2))
    assert good.endswith(b"\x02")
    for longer in (b"\xcc\x02", b"\xcd\x00\x02", b"\xd0\x02", b"\xd3" + (2).to_bytes(8, "big")):
        assert fastroute.read_fields(good[:-1] + longer, True) is None


@settings(max_examples=300)
@given(msg=st.one_of(orders, reports), now=ints, session=ints, client_id=st.text(max_size=80))
def test_its_journal_records_are_msgspec_records(msg, now, session, client_id):
    body = encode(msg)
    inbound, exchange = fastroute.records_of(now, session, body, client_id)
    assert inbound == encode(jr.Inbound(now, session, msg))
    if type(msg) is ExecReport:
        assert exchange == encode(jr.ExchangeEvent(now, msg, "", session, client_id))


def test_a_recurring_name_is_one_str_and_a_colliding_one_is_still_itself():
    """Accounts and symbols are made into strs once and kept by a hash of their bytes: the same
    bytes give the same object, and with more names than the cache keeps (so names collide and
    replace each other) every answer is still exactly the str of its bytes."""
    assert fastroute.name_of(b"A001") is fastroute.name_of(b"A001")
    long = b"x" * 33  # past the identifier caps: never kept (a client's junk must not fill it)
    assert fastroute.name_of(long) == long.decode() and fastroute.name_of(long) is not \
        fastroute.name_of(long)
    names = [f"acct{k}" for k in range(5000)] + ["", "x" * 32]
    for _ in range(2):
        for name in names:
            got = fastroute.name_of(name.encode())
            assert got == name and type(got) is str
