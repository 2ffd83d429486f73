"""The FIX codec, sans-IO: any split of a stream frames the same messages; garbage between
them is reported as garbled and skipped; nothing but ``Oversized`` ever escapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fix.codec import FixDecoder, FixMessage, Garbled, Oversized, checksum, frame
from gateway.fix.orders import new_order

HEADER = b"49=ALGO1\x0156=FENGKONG\x0134=%d\x0152=20260101-00:00:00.000\x01"


def message(seq: int, body: bytes = b"11=X\x0155=rb2605\x0154=1\x0138=2\x0140=2\x0144=3200\x01",
            msg_type: bytes = b"D") -> bytes:
    return frame(msg_type, HEADER % seq, body)


def decode_all(data: bytes, cuts: list[int]) -> list[FixMessage | Garbled]:
    d = FixDecoder()
    out: list[FixMessage | Garbled] = []
    last = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        out += d.feed(data[last:cut])
        last = cut
    return out


def test_frame_has_bodylength_and_checksum():
    m = message(7)
    assert m.startswith(b"8=FIX.4.4\x019=")
    body = m[m.index(b"35="):m.rindex(b"10=")]
    assert int(m.split(b"\x01")[1][2:]) == len(body)
    assert m[-4:-1] == checksum(m[:-7])
    (got,) = FixDecoder().feed(m)
    assert got.seq == 7 and got.problem is None
    assert new_order(got).qty == 2  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
       st.sampled_from([b"", b"junk", b"8=FIX.4.2\x019=3\x0135=0\x0110=000\x01", b"\x01\x01"]))
def test_any_split_frames_the_same_messages(cuts, garbage):
    stream = message(1) + garbage + message(2) + message(3)[:-4] + b"999\x01" + message(4)
    out = decode_all(stream, cuts)
    good = [m.seq for m in out if type(m) is FixMessage]
    assert good == [1, 2, 4]
    assert any(type(m) is Garbled and b"CheckSum" in m.why.encode() for m in out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(data):
    d = FixDecoder(max_message=1024)
    try:
        d.feed(data)
        d.feed(message(1))
    except Oversized:
        pass


def test_problems_are_found_not_raised():
    dup = FixDecoder().feed(message(1, b"11=A\x0111=B\x01"))[0]
    assert dup.problem[:2] == (13, 11)
    out_of_order = FixDecoder().feed(message(1, b"11=A\x0134=9\x01"))[0]
    assert out_of_order.problem[0] in (13, 14)
    no_value = FixDecoder().feed(message(1, b"11=\x01"))[0]
    assert no_value.problem[:2] == (4, 11)
    bad_tag = FixDecoder().feed(message(1, b"x1=A\x01"))[0]
    assert bad_tag.problem[0] == 0


def test_an_oversized_message_is_fatal():
    with pytest.raises(Oversized):
        FixDecoder(max_message=1000).feed(message(1, b"58=" + b"x" * 2000 + b"\x01"))
    with pytest.raises(Oversized):  # said before the body comes
        FixDecoder(max_message=1000).feed(b"8=FIX.4.4\x019=5000\x01")
    d = FixDecoder(max_message=1000)  # endless digits: garbled, and the buffer stays small
    for _ in range(50):
        assert all(type(m) is Garbled for m in d.feed(b"8=FIX.4.4\x019=" + b"9" * 100))
    assert d.buffered < 1000
