"""The FIX message store: numbers and sent messages survive reopening; a torn tail is cut; a
compaction keeps exactly the state."""

from __future__ import annotations

from gateway.fix.store import FixStore


def test_numbers_and_messages_survive_reopening(tmp_path):
    path = tmp_path / "A-B.fixstore"
    s = FixStore(path, "record")
    s.sent_admin(1)
    s.sent_app(2, b"8", b"20260101-00:00:00.000", b"11=X\x01")
    s.set_next_in(5)
    s.flush()
    s.close()
    again = FixStore(path, "os")
    assert (again.next_out, again.next_in) == (3, 5)
    assert again.sent == {2: (b"8", b"20260101-00:00:00.000", b"11=X\x01")}
    again.close()


def test_a_torn_tail_is_cut_and_the_rest_kept(tmp_path):
    path = tmp_path / "A-B.fixstore"
    s = FixStore(path, "os")
    s.sent_app(1, b"8", b"T", b"11=X\x01")
    s.set_next_in(2)
    s.flush()
    s.close()
    with open(path, "ab") as f:
        f.write(b"\x00\x00\x00\x40garbage")
    again = FixStore(path, "os")
    assert again.cut and (again.next_out, again.next_in) == (2, 2) and 1 in again.sent
    again.set_next_in(3)
    again.close()
    assert FixStore(path, "os").next_in == 3  # appending continued after the cut


def test_compaction_keeps_the_state(tmp_path):
    path = tmp_path / "A-B.fixstore"
    s = FixStore(path, "os")
    for n in range(1, 200):
        s.sent_app(n, b"8", b"T", b"11=%d\x01" % n)
        s.set_next_in(n + 1)
        s.flush()  # one inbound-number record per flush: 199 of them, 1 kept
    s.sent_admin(200)
    s.flush()
    before = path.stat().st_size
    s.compact()
    assert path.stat().st_size < before
    s.set_next_in(777)
    s.close()
    again = FixStore(path, "os")
    assert (again.next_out, again.next_in, len(again.sent)) == (201, 777, 199)
