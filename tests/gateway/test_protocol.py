"""Tests for the wire codec (gateway/protocol.py): round trips, stream splitting, fuzzing, errors.

The codec is sans-IO, so everything here is bytes in, messages out: no sockets, no event loop.
Property tests generate every message type from its annotations, so a field added to a message
is covered without touching this file.
"""

from __future__ import annotations

import math
import re
import struct
import typing

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    MESSAGE_TYPES,
    CancelOrder,
    ExecReport,
    FrameDecoder,
    Heartbeat,
    Logon,
    Logout,
    NewOrder,
    ProtocolError,
    TerminalData,
    encode,
    encode_into,
)

# No example database: keeps the tree clean and the suite the same from run to run.
FAST = settings(max_examples=60, deadline=None, database=None)
THOROUGH = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TAGS = [cls.__name__ for cls in MESSAGE_TYPES]


# --- helpers ---------------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    """A frame around an arbitrary body (which need not be a valid message)."""
    return struct.pack(">I", len(body)) + body


def raw_frame(*items: object) -> bytes:
    """A frame whose body is the msgpack array ``items``, bypassing the typed encoder."""
    return frame(msgspec.msgpack.encode(list(items)))


def fail(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> str:
    """Feed ``data`` to a fresh decoder, expect a ProtocolError, return its text."""
    dec = FrameDecoder(max_frame)
    with pytest.raises(ProtocolError) as info:
        dec.feed(data)
    return str(info.value)


def same(a: object, b: object) -> bool:
    """Structural equality that treats NaN as equal to NaN and tells 0.0 from -0.0 and 1 from 1.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, msgspec.Struct):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__struct_fields__)
    return a == b


def same_all(got: list, want: list) -> bool:
    return len(got) == len(want) and all(map(same, got, want))


# --- strategies ------------------------------------------------------------------------------

# msgpack carries integers from -2**63 to 2**64 - 1; floats as IEEE doubles (NaN and inf too).
INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=24)

_BY_TYPE: dict[object, st.SearchStrategy] = {
    int: INTS,
    float: FLOATS,
    str: TEXT,
    bool: st.booleans(),
    list[str]: st.lists(TEXT, max_size=5),
    int | float: st.one_of(INTS, FLOATS),
}
_BY_TYPE[TerminalData] = st.builds(TerminalData, *[TEXT] * len(TerminalData.__struct_fields__))
_BY_TYPE[TerminalData | None] = st.one_of(st.none(), _BY_TYPE[TerminalData])


def _strategy_for(cls: type) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls)
    fields = {name: _BY_TYPE[hints[name]] for name in cls.__struct_fields__}
    return st.builds(cls, **fields)


MESSAGE_STRATEGIES = {cls: _strategy_for(cls) for cls in MESSAGE_TYPES}
MESSAGES = st.one_of(*MESSAGE_STRATEGIES.values())


def test_every_field_type_has_a_strategy() -> None:
    # Fails loudly (KeyError above at import, or here) if a message grows a field of a new type.
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES)
    assert {
        "Logon",
        "LogonAck",
        "LogonReject",
        "NewOrder",
        "CancelOrder",
        "ExecReport",
        "CancelReject",
        "Alert",
        "Heartbeat",
        "Logout",
        "MarketData",
    } <= set(TAGS)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=TAGS)
@FAST
@given(data=st.data())
def test_round_trip_every_type(cls: type, data: st.DataObject) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    wire = encode(msg)
    (length,) = struct.unpack_from(">I", wire)
    assert length == len(wire) - HEADER_SIZE
    # The body is an array whose first element names the type (the documented wire shape).
    body = msgspec.msgpack.decode(wire[HEADER_SIZE:])
    assert isinstance(body, list) and body[0] == cls.__name__
    assert len(body) == 1 + len(cls.__struct_fields__)

    dec = FrameDecoder()
    got = dec.feed(wire)
    assert same_all(got, [msg]), (got, msg)
    assert dec.buffered == 0
    dec.close()


def _float_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f for f in cls.__struct_fields__ if hints[f] in (float, int | float)]


@pytest.mark.parametrize(
    "cls", [c for c in MESSAGE_TYPES if _float_fields(c)], ids=lambda c: c.__name__
)
def test_nan_and_infinities_survive(cls: type) -> None:
    floats = _float_fields(cls)
    base = msgspec.msgpack.decode(encode(_minimal(cls))[HEADER_SIZE:], type=cls)
    for value in (math.nan, math.inf, -math.inf, -0.0):
        msg = msgspec.structs.replace(base, **dict.fromkeys(floats, value))
        assert same_all(FrameDecoder().feed(encode(msg)), [msg])


def _minimal(cls: type) -> msgspec.Struct:
    """A message of type ``cls`` with every required field set to a plain value."""
    hints = typing.get_type_hints(cls)
    plain = {int: 1, float: 1.5, str: "x", bool: True, list[str]: ["a"], int | float: 2,
             TerminalData: TerminalData("10.0.0.1"), TerminalData | None: None}
    return cls(**{f: plain[hints[f]] for f in cls.__struct_fields__})


@FAST
@given(msgs=st.lists(MESSAGES, max_size=20), prefix=st.binary(max_size=8))
def test_encode_into_batches_equal_concatenated_encode(msgs: list, prefix: bytes) -> None:
    out = bytearray(prefix)
    for m in msgs:
        encode_into(m, out)
    assert bytes(out) == prefix + b"".join(encode(m) for m in msgs)


def test_defaults_travel_and_may_be_omitted() -> None:
    # A frame may stop after the required fields (an older peer); the rest take their defaults.
    (msg,) = FrameDecoder().feed(raw_frame("Logon", "alice", "pw"))
    assert msg == Logon(user="alice", secret="pw")
    assert (msg.accounts, msg.heartbeat_s, msg.cancel_on_disconnect) == ([], 5.0, True)
    (msg,) = FrameDecoder().feed(raw_frame("Heartbeat"))
    assert msg == Heartbeat()
    (msg,) = FrameDecoder().feed(raw_frame("ExecReport", "c1", "o1", "acct", "rb2410", 1, 2))
    assert msg == ExecReport("c1", "o1", "acct", "rb2410", 1, 2)


def test_extra_trailing_elements_are_ignored_for_forward_compatibility() -> None:
    (msg,) = FrameDecoder().feed(raw_frame("Heartbeat", 7, "a field from the future", [1, 2]))
    assert msg == Heartbeat(ts_ns=7)


# --- splitting a stream ----------------------------------------------------------------------


def _stream(msgs: list) -> tuple[bytes, list[int]]:
    """The wire bytes of ``msgs`` and the offset at which each frame ends."""
    out = bytearray()
    ends = []
    for m in msgs:
        encode_into(m, out)
        ends.append(len(out))
    return bytes(out), ends


@THOROUGH
@given(msgs=st.lists(MESSAGES, min_size=1, max_size=25), data=st.data())
def test_any_split_decodes_the_same_messages_in_order(msgs: list, data: st.DataObject) -> None:
    wire, ends = _stream(msgs)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=40).map(sorted))
    dec = FrameDecoder()
    got: list = []
    fed = 0
    for cut in [*cuts, len(wire)]:
        got += dec.feed(wire[fed:cut])
        fed = max(fed, cut)
        # Nothing is held back: every frame complete so far has come out, and only the
        # incomplete tail is buffered.
        done = sum(1 for e in ends if e <= fed)
        assert len(got) == done
        assert dec.buffered == fed - (ends[done - 1] if done else 0)
    assert same_all(got, msgs)
    assert dec.buffered == 0
    dec.close()


@FAST
@given(msgs=st.lists(MESSAGES, min_size=1, max_size=8))
def test_one_byte_at_a_time(msgs: list) -> None:
    wire, _ = _stream(msgs)
    dec = FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i : i + 1])
    assert same_all(got, msgs)
    dec.close()


def test_empty_feed_is_harmless() -> None:
    dec = FrameDecoder()
    assert dec.feed(b"") == []
    wire = encode(Heartbeat(1))
    assert dec.feed(wire[:3]) == []
    assert dec.feed(b"") == []
    assert dec.feed(wire[3:]) == [Heartbeat(1)]
    assert dec.feed(b"") == []


# --- fuzzing: only ProtocolError, and a failed decoder stays failed --------------------------

_MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | INTS | FLOATS | TEXT | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=12,
)
# Bodies that are valid msgpack arrays, mostly with a real tag, with fields of any type: these
# reach msgspec's validation rather than dying at the length check.
_ARRAY_BODIES = st.tuples(
    st.sampled_from(TAGS) | _MSGPACK_VALUES, st.lists(_MSGPACK_VALUES, max_size=18)
).map(lambda t: msgspec.msgpack.encode([t[0], *t[1]]))
_BODIES = st.one_of(
    st.binary(min_size=1, max_size=40),
    _ARRAY_BODIES,
    MESSAGES.map(lambda m: encode(m)[HEADER_SIZE:]),
    # a valid body with a few bytes overwritten
    st.tuples(MESSAGES, st.lists(st.tuples(st.integers(0), st.integers(0, 255)), max_size=3)).map(
        lambda t: _mutate(encode(t[0])[HEADER_SIZE:], t[1])
    ),
)
_PIECES = st.one_of(
    _BODIES.map(frame),  # well framed
    st.binary(max_size=12),  # raw bytes: random lengths, partial headers
)


def _mutate(body: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(body)
    for at, value in edits:
        out[at % len(out)] = value
    return bytes(out)


def _chunks(data: st.DataObject, wire: bytes) -> list[bytes]:
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10).map(sorted))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@THOROUGH
@given(
    pieces=st.lists(_PIECES, max_size=8),
    data=st.data(),
    max_frame=st.sampled_from([16, 64, DEFAULT_MAX_FRAME]),
)
def test_garbage_raises_only_protocol_error_and_poisons(
    pieces: list[bytes], data: st.DataObject, max_frame: int
) -> None:
    dec = FrameDecoder(max_frame)
    try:
        for chunk in _chunks(data, b"".join(pieces)):
            for msg in dec.feed(chunk):
                assert isinstance(msg, MESSAGE_TYPES)
        dec.close()
    except ProtocolError as err:
        assert str(err)
        assert dec.buffered == 0
        with pytest.raises(ProtocolError, match="already failed"):
            dec.feed(encode(Heartbeat()))
        with pytest.raises(ProtocolError, match="already failed"):
            dec.feed(b"")
        dec.close()  # the error was already reported; end of stream adds nothing


@FAST
@given(body=_ARRAY_BODIES)
def test_valid_msgpack_is_a_message_or_a_named_error(body: bytes) -> None:
    try:
        (msg,) = FrameDecoder().feed(frame(body))
    except ProtocolError as err:
        assert str(err).startswith("invalid message: ")
    else:
        assert isinstance(msg, MESSAGE_TYPES)


def test_messages_before_a_bad_frame_are_delivered_by_earlier_feeds() -> None:
    dec = FrameDecoder()
    assert dec.feed(encode(Heartbeat(1)) + encode(Heartbeat(2))) == [Heartbeat(1), Heartbeat(2)]
    with pytest.raises(ProtocolError):
        dec.feed(raw_frame("Bogus"))
    with pytest.raises(ProtocolError, match="stream already failed: invalid message: unknown"):
        dec.feed(encode(Heartbeat(3)))


# --- precise errors --------------------------------------------------------------------------


def test_oversize_length_names_length_and_maximum_before_the_body_arrives() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        dec.feed(struct.pack(">I", DEFAULT_MAX_FRAME + 1))  # header only: no need to wait
    assert str(info.value) == (
        f"frame length {DEFAULT_MAX_FRAME + 1} exceeds the maximum of {DEFAULT_MAX_FRAME} bytes"
    )
    assert "4294967295" in fail(b"\xff\xff\xff\xff")


def test_zero_length() -> None:
    assert "length 0" in fail(b"\0\0\0\0")
    assert "length 0" in fail(encode(Heartbeat()) + b"\0\0\0\0")


def test_unknown_tag_is_named() -> None:
    text = fail(raw_frame("Bogus", 1, 2))
    assert text.startswith("invalid message: unknown message type 'Bogus' (expected one of Logon,")
    assert "OrderStatusEnd" in text


def test_unknown_tag_is_not_echoed_in_full() -> None:
    text = fail(raw_frame("Z" * 10_000))
    assert "unknown message type 'ZZZZ" in text and "10000 chars" in text
    assert len(text) < 500


def test_unknown_tag_that_looks_like_a_path() -> None:
    assert "unknown message type 'x - at `$[3]`'" in fail(raw_frame("x - at `$[3]`"))


@pytest.mark.parametrize("tag", [5, None, 1.5, [], {}, b"NewOrder"], ids=repr)
def test_tag_that_is_not_a_string(tag: object) -> None:
    text = fail(raw_frame(tag, "x"))
    assert "message type must be a string" in text and "NewOrder" in text


_WRONG_TYPE_CASES = [
    (cls.__name__, index, name)
    for cls in MESSAGE_TYPES
    for index, name in enumerate(cls.__struct_fields__, start=1)
]


@pytest.mark.parametrize(
    ("tag", "index", "field"), _WRONG_TYPE_CASES, ids=[f"{t}.{f}" for t, _, f in _WRONG_TYPE_CASES]
)
def test_wrong_field_type_names_message_and_field(tag: str, index: int, field: str) -> None:
    cls = dict(zip(TAGS, MESSAGE_TYPES, strict=True))[tag]
    items = list(msgspec.msgpack.decode(encode(_minimal(cls))[HEADER_SIZE:]))
    hint = typing.get_type_hints(cls)[field]
    items[index] = 123 if hint is str else "not the right type"
    text = fail(raw_frame(*items))
    assert text.startswith(f"invalid message: {tag}.{field}: Expected `"), text
    assert f"`$[{index}]`" in text


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (
            ["NewOrder", "c1", "acct", "rb2410", 1, 0, 0, 0, 0, "3500", 1],
            "NewOrder.price: Expected `float`, got `str`",
        ),
        (
            ["NewOrder", "c1", "acct", "rb2410", 1.5, 0, 0, 0, 0, 3500.0, 1],
            "NewOrder.side: Expected `int`, got `float`",
        ),
        (
            ["NewOrder", "c1", "acct", "rb2410", True, 0, 0, 0, 0, 3500.0, 1],
            "NewOrder.side: Expected `int`, got `bool`",
        ),
        (
            ["NewOrder", "c1", "acct", "rb2410", 1, 0, 0, 0, 0, 3500.0, None],
            "NewOrder.qty: Expected `int | float`, got `None`",
        ),
        (
            ["Logon", "u", "pw", ["a", 7]],
            "Logon.accounts: Expected `str`, got `int` - at `$[3][1]`",
        ),
        (["Logon", "u", "pw", "acct"], "Logon.accounts: Expected `array`, got `str`"),
        (["Logout", b"bytes"], "Logout.text: Expected `str`, got `bytes`"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_wrong_field_type_examples(items: list, expected: str) -> None:
    text = fail(raw_frame(*items))
    assert expected in text, text


@pytest.mark.parametrize("cls", MESSAGE_TYPES, ids=TAGS)
def test_missing_fields_are_named(cls: type) -> None:
    n_required = len(cls.__struct_fields__) - len(cls.__struct_defaults__)
    required = cls.__struct_fields__[:n_required]
    items = list(msgspec.msgpack.decode(encode(_minimal(cls))[HEADER_SIZE:]))
    for have in range(n_required):
        text = fail(raw_frame(*items[: 1 + have]))
        assert text == (
            f"invalid message: {cls.__name__} is missing required field(s): "
            f"{', '.join(required[have:])} (got {have} of {n_required})"
        )
    # Exactly the required fields: accepted, defaults filled in.
    (msg,) = FrameDecoder().feed(raw_frame(*items[: 1 + n_required]))
    assert isinstance(msg, cls)


def test_missing_fields_do_not_name_optional_ones() -> None:
    text = fail(raw_frame("CancelOrder", "c2"))
    assert text.endswith(
        "CancelOrder is missing required field(s): orig_cl_ord_id, account (got 1 of 3)"
    )
    text = fail(raw_frame("Logon"))
    assert "user, secret (got 0 of 2)" in text and "heartbeat_s" not in text


def test_empty_array_and_non_array_bodies() -> None:
    assert "empty message array" in fail(frame(msgspec.msgpack.encode([])))
    text = fail(frame(msgspec.msgpack.encode({"type": "Heartbeat"})))
    assert "must be a msgpack array" in text and "got `object`" in text
    assert "got `int`" in fail(frame(msgspec.msgpack.encode(5)))


def test_trailing_garbage_inside_a_frame() -> None:
    body = encode(Heartbeat(1))[HEADER_SIZE:]
    text = fail(frame(body + b"\x00"))
    assert text.startswith("malformed msgpack in frame body:") and "trailing characters" in text


def test_malformed_msgpack() -> None:
    text = fail(frame(b"\xc1"))
    assert text.startswith("malformed msgpack in frame body:") and "invalid opcode" in text


def test_msgpack_cut_short_inside_a_complete_frame() -> None:
    body = encode(CancelOrder("c1", "c0", "acct"))[HEADER_SIZE:]
    assert "truncated" in fail(frame(body[:-2]))
    # An array header claiming 2**32-1 elements in a 5-byte body: no huge allocation.
    assert "truncated" in fail(frame(b"\xdd\xff\xff\xff\xff"))


@pytest.mark.parametrize("body", [b"\x92\xa6Logout\xa2\xff\xfe",  # in a field
                                  b"\x91\xa2\xff\xfe"],  # in the tag itself
                         ids=["field", "tag"])
def test_invalid_utf8_is_a_protocol_error(body: bytes) -> None:
    # Some msgspec releases raise UnicodeDecodeError here (it must not escape from feed()),
    # others a DecodeError in their own words: either way the frame is a protocol error in
    # ours. The session-level behaviour (Logout 108, only that session closes) is pinned in
    # tests/gateway/test_e2e.py::test_garbage_closes_only_that_session.
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match="^malformed msgpack in frame body: .*UTF-8"):
        dec.feed(frame(body))
    assert dec.buffered == 0


@pytest.mark.parametrize(
    "body",
    [
        b"\x93\xa9Heartbeat\x01" + b"\x91" * 60_000 + b"\x01",  # nested extra element: skipped
        b"\x92\xa6Logout" + b"\x91" * 60_000 + b"\x01",  # nested where a str belongs
        b"\x91" * 60_000 + b"\x01",  # nested where the tag belongs
        b"\x81\x01" * 30_000 + b"\x01",  # nested maps
    ],
    ids=["extra", "field", "tag", "maps"],
)
def test_deeply_nested_body_is_a_protocol_error(body: bytes) -> None:
    # msgspec raises RecursionError for some of these, which must not escape from feed().
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(encode(Heartbeat(1))[:2])
        dec.feed(encode(Heartbeat(1))[2:] + frame(body))
    assert dec.buffered == 0
    with pytest.raises(ProtocolError, match="already failed"):
        dec.feed(b"")


def test_truncated_frame_at_close_names_the_bytes() -> None:
    wire = encode(CancelOrder("c1", "c0", "acct"))
    body_len = len(wire) - HEADER_SIZE
    dec = FrameDecoder()
    assert dec.feed(encode(Heartbeat()) + wire[:-3]) == [Heartbeat()]
    assert dec.buffered == len(wire) - 3
    with pytest.raises(ProtocolError) as info:
        dec.close()
    assert str(info.value) == (
        f"connection closed inside a frame ({body_len - 3} of {body_len} body bytes received,"
        f" {len(wire) - 3} bytes unread)"
    )
    with pytest.raises(ProtocolError, match="already failed: connection closed"):
        dec.feed(b"")


def test_truncated_header_at_close() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x00\x00")
    with pytest.raises(ProtocolError, match=re.escape("inside a frame header (2 of 4 bytes)")):
        dec.close()


def test_clean_close() -> None:
    dec = FrameDecoder()
    dec.close()
    assert dec.feed(encode(Heartbeat(5))) == [Heartbeat(5)]
    dec.close()


# --- max frame size --------------------------------------------------------------------------


def _logout_with_body(size: int) -> Logout:
    """A Logout whose encoded body is exactly ``size`` bytes (two knobs cover every size)."""
    for reason in (0, 128, 256):  # 1, 2 and 3 bytes of msgpack
        for n in range(max(0, size - 16), size + 1):
            msg = Logout(text="x" * n, reason=reason)
            if len(encode(msg)) - HEADER_SIZE == size:
                return msg
    raise AssertionError(f"no Logout of body size {size}")


@FAST
@given(max_frame=st.integers(min_value=10, max_value=70_000))
def test_max_frame_is_honoured_exactly(max_frame: int) -> None:
    fits = _logout_with_body(max_frame)
    assert FrameDecoder(max_frame).feed(encode(fits)) == [fits]
    too_big = _logout_with_body(max_frame + 1)
    text = fail(encode(too_big), max_frame)
    assert text == f"frame length {max_frame + 1} exceeds the maximum of {max_frame} bytes"


def test_default_max_frame_is_64_kib() -> None:
    assert DEFAULT_MAX_FRAME == 64 * 1024
    fits = _logout_with_body(DEFAULT_MAX_FRAME)
    assert FrameDecoder().feed(encode(fits)) == [fits]
    assert str(DEFAULT_MAX_FRAME + 1) in fail(encode(_logout_with_body(DEFAULT_MAX_FRAME + 1)))


@pytest.mark.parametrize("max_frame", [1, 2, 9])
def test_tiny_max_frame(max_frame: int) -> None:
    # Smaller than any message: the frame size check still comes first, at the header.
    assert f"frame length {max_frame + 1} exceeds" in fail(
        frame(b"\xc0" * (max_frame + 1)), max_frame
    )
    assert "malformed" in fail(frame(b"\xc1" * max_frame), max_frame)


@pytest.mark.parametrize("max_frame", [0, -1])
def test_nonsense_max_frame_is_refused(max_frame: int) -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame)


# --- bad values in orders are the risk engine's business, not the codec's --------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("qty", 1.5),  # not a whole number of lots
        ("qty", -3),
        ("qty", 0),
        ("qty", math.nan),
        ("side", 9),  # no such side
        ("offset", -1),
        ("hedge", 2**40),
        ("ord_type", 7),
        ("tif", 99),
        ("price", math.nan),
        ("price", -math.inf),
        ("symbol", ""),
    ],
)
def test_bad_order_values_decode_for_the_risk_engine_to_reject(field: str, value: object) -> None:
    order = msgspec.structs.replace(
        NewOrder("c1", "acct", "rb2410", 1, 0, 0, 0, 0, 3500.0, 1), **{field: value}
    )
    dec = FrameDecoder()
    (got,) = dec.feed(encode(order))
    assert same(got, order)
    # ... and the session carries on.
    assert dec.feed(encode(Heartbeat(1))) == [Heartbeat(1)]


def test_order_qty_keeps_its_number_type() -> None:
    (whole,) = FrameDecoder().feed(raw_frame("NewOrder", "c", "a", "s", 1, 0, 0, 0, 0, 1.0, 2))
    (frac,) = FrameDecoder().feed(raw_frame("NewOrder", "c", "a", "s", 9, 0, 0, 0, 0, 1, 1.5))
    assert type(whole.qty) is int and whole.qty == 2
    assert type(frac.qty) is float and frac.qty == 1.5 and frac.side == 9
    assert type(frac.price) is float and frac.price == 1.0  # an int price widens to float
