"""The compiled journal framing writes exactly the reference's bytes (gateway/journal_frame.pyx).

``gateway.journal._frame`` frames a record at a time in Python; ``frame_many`` frames a batch in
one call. For any records — every record type, every message inside them, odd strings and big
numbers — the bytes must be the same, the CRC must be zlib's, and a record that cannot be
journaled must be refused the same way, leaving what came before it framed.
"""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import journal as jr
from gateway.protocol import Alert, CancelOrder, ExecReport, NewOrder

frame_mod = pytest.importorskip("gateway.journal_frame")

texts = st.text(max_size=40)
ints = st.integers(-(2**63), 2**63 - 1)
messages = st.one_of(
    st.builds(NewOrder, texts, texts, texts, st.integers(0, 3), st.integers(0, 3),
              st.integers(0, 3), st.integers(0, 3), st.integers(0, 3),
              st.floats(allow_nan=False), st.one_of(st.integers(0, 10**6), st.floats(0, 1e6))),
    st.builds(CancelOrder, texts, texts, texts),
    st.builds(ExecReport, texts, texts, texts, texts, st.integers(0, 6), st.integers(0, 6),
              exec_id=texts, last_qty=st.integers(0, 10**6)),
    st.builds(Alert, st.integers(1, 3), st.integers(0, 2000), texts, texts, ints),
)
records = st.one_of(
    st.builds(jr.Inbound, ints, ints, messages),
    st.builds(jr.Decision, ints, ints, texts, texts, texts, st.integers(0, 2000), texts),
    st.builds(jr.Outbound, ints, ints, messages),
    st.builds(jr.ExchangeEvent, ints, st.builds(ExecReport, texts, texts, texts, texts,
                                                st.integers(0, 6), st.integers(0, 6)),
              texts, ints, texts),
    st.builds(jr.AdminAction, ints, texts, texts, texts, texts),
    st.builds(jr.State, ints, texts, st.binary(max_size=300)),
)


def reference(batch: list, seq: int) -> bytes:
    out = bytearray()
    for i, rec in enumerate(batch):
        out += jr.frame(rec, seq + i)
    return bytes(out)


def compiled(batch: list, seq: int, out: bytearray | None = None) -> bytearray:
    out = bytearray() if out is None else out
    frame_mod.frame_many(batch, seq, out, jr._encode_into, jr._RECORD_TYPE_SET, jr.MAX_RECORD,
                         jr._not_a_record)
    return out


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(records, max_size=8), seq=st.integers(0, 2**64 - 100))
def test_a_batch_frames_to_the_reference_bytes(batch, seq):
    assert bytes(compiled(batch, seq)) == reference(batch, seq)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), start=st.integers(0, 2**32 - 1))
def test_the_crc_is_zlibs(data, start):
    assert frame_mod.crc32(data, start) == zlib.crc32(data, start)
    assert frame_mod.crc32(data) == zlib.crc32(data)


def test_a_record_that_cannot_be_journaled_leaves_the_ones_before_it_framed():
    good = jr.State(1, "boot", b"gw.")
    out = bytearray(b"keep")
    with pytest.raises(TypeError, match="journal records are"):
        compiled([good, object()], 7, out)
    assert bytes(out) == b"keep" + jr.frame(good, 7)
    with pytest.raises(TypeError, match="cannot be journaled"):
        compiled([jr.State(1, "x", b""), jr.AdminAction(1, "op", "kill", args={"k": object()})],
                 1, out)
    assert bytes(out) == b"keep" + jr.frame(good, 7) + jr.frame(jr.State(1, "x", b""), 1)
    before = bytes(out)
    cap = len(jr._encode(good))  # the good one fits exactly; the next is over
    with pytest.raises(ValueError, match=f"record 4 is .* the maximum is {cap}"):
        frame_mod.frame_many([good, jr.State(2, "big", b"x" * 64)], 3, out, jr._encode_into,
                             jr._RECORD_TYPE_SET, cap, jr._not_a_record)
    assert bytes(out) == before + jr.frame(good, 3)


def test_the_journal_writes_and_reads_back_a_compiled_batch(tmp_path):
    batch = [jr.State(i, "s", bytes([i])) for i in range(1, 50)]
    with jr.Journal.open(tmp_path) as j:
        assert j.append_many(batch) == 49
    assert [rec for _, rec in jr.JournalReader(tmp_path)] == batch
