"""The router's day-long id tables — ``gateway.idmemory.IdMemory`` (the reference router's) and
its compiled twin ``gateway.idtable.IdTable`` — against a plain dict + deque model."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import idmemory, idtable
from gateway.idmemory import SHARDS, SPLIT_AT

KINDS = [pytest.param(idmemory.IdMemory, id="python"),
         pytest.param(idtable.IdTable, id="compiled")]


class Model:
    def __init__(self, limit: int | None) -> None:
        self.limit, self.d, self.order = limit, {}, deque()

    def put(self, key: str, value: object) -> None:
        if key not in self.d:
            self.order.append(key)
        self.d[key] = value
        if self.limit is not None and len(self.d) > self.limit:
            del self.d[self.order.popleft()]


ops = st.lists(st.tuples(st.sampled_from(["put", "has", "get", "clear"]),
                         st.integers(0, 12_000), st.integers()), max_size=300)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=60, deadline=None)
@given(ops=ops, limit=st.one_of(st.none(), st.integers(1, 50)), bulk=st.integers(0, 6_000))
def test_it_remembers_what_a_dict_with_a_deque_would(kind, ops, limit, bulk):
    mem, model = kind(limit), Model(limit)
    for i in range(bulk):  # enough keys, some runs, to split into shards
        mem.put(f"k{i * 7919 % 12_000}", i)
        model.put(f"k{i * 7919 % 12_000}", i)
    for op, k, v in ops:
        key = f"k{k}"
        if op == "put":
            mem.put(key, v)
            model.put(key, v)
        elif op == "has":
            assert mem.has(key) == (key in mem) == (key in model.d)
        elif op == "get":
            assert mem.get(key, "none") == model.d.get(key, "none")
        else:
            mem.clear()
            model.d.clear()
            model.order.clear()
        assert len(mem) == len(model.d)
    assert sorted(mem) == sorted(model.d)
    if limit is not None:
        assert list(mem) == [k for k in model.order if k in model.d]  # oldest first
        assert list(mem.values()) == [model.d[k] for k in mem]
    else:
        assert sorted(mem.values(), key=repr) == sorted(model.d.values(), key=repr)


@pytest.mark.parametrize("kind", KINDS)
def test_a_large_memory_is_many_small_dicts(kind):
    # What keeps the loop from stopping: no dict ever holds more than a shard's share, so no
    # rebuild walks more than that many keys.
    mem = kind(200_000)
    for i in range(300_000):
        mem.put(f"E{i}")
    assert len(mem) == 200_000 and len(mem.shards) == SHARDS
    assert max(map(len, mem.shards)) < 2 * 200_000 // SHARDS
    assert "E99999" not in mem and "E100000" in mem and "E299999" in mem
    # A dict places a key by the low bits of its hash: if the shard were chosen by them too,
    # every key of a shard would start at the same few slots (found: 1.5x the CPU per order).
    assert all(len({hash(k) & 255 for k in shard}) > 200 for shard in mem.shards)


@pytest.mark.parametrize("kind", KINDS)
def test_a_small_memory_stays_one_dict_until_it_grows(kind):
    mem = kind()
    for i in range(SPLIT_AT):
        mem.put(f"c{i}")
    assert len(mem.shards) == 1
    mem.put("one more")
    assert len(mem.shards) == SHARDS and len(mem) == SPLIT_AT + 1
    assert all(f"c{i}" in mem for i in range(SPLIT_AT)) and "one more" in mem
    mem.clear()
    assert len(mem) == 0 and len(mem.shards) == 1 and "c1" not in mem


@pytest.mark.parametrize("kind", KINDS)
def test_a_known_key_keeps_its_age(kind):
    mem = kind(2)
    mem.put("a", 1)
    mem.put("b", 2)
    mem.put("a", 3)  # a new value, not a new arrival
    mem.put("c", 4)
    assert list(mem) == ["b", "c"] and mem.get("a") is None and mem.get("b") == 2


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["put", "put", "has", "clear"]),
                              st.integers(0, 12_000)), max_size=300),
       limit=st.one_of(st.none(), st.integers(0, 50)), bulk=st.integers(0, 6_000))
def test_the_compiled_table_keeps_the_arrival_order_an_id_memory_keeps(ops, limit, bulk):
    """Answers, sizes and the arrival order as ``IdMemory`` gives them — through splits,
    evictions (keys shifted back over the freed slot), a limit of 0 and clears."""
    got, want = idtable.IdTable(limit), idmemory.IdMemory(limit)
    for i in range(bulk):
        got.put(f"k{i * 7919 % 12_000}")
        want.put(f"k{i * 7919 % 12_000}")
    for op, k in ops:
        key = f"k{k}"
        if op == "put":
            got.put(key)
            want.put(key)
        elif op == "has":
            assert got.has(key) == (key in got) == want.has(key)
        else:
            got.clear()
            want.clear()
        assert len(got) == len(want)
    assert sorted(got) == sorted(want)
    if limit is not None:
        assert list(got) == list(want)


def test_the_compiled_table_finds_equal_strs_that_are_not_the_same_object():
    t = idtable.IdTable()
    key = "".join(["E", "12345"])  # built at run time: not the literal's object
    t.put(key, 7)
    assert t.has("E12345") and t.get("E12345") == 7 and "E12345" in t
    assert not t.has("E1234") and 5 not in t and t.get("E1234", "none") == "none"
    t.put("单号")  # non-ASCII ids (the exchange's, on the object path) are ids like the rest
    assert t.has("".join(["单", "号"])) and t.get("单号", "none") is None


def test_the_compiled_table_refuses_what_its_slots_cannot_hold():
    """Its slots are not seen by the cyclic collector, so a value whose references the
    collector follows (it could close a cycle through the table) is refused; atoms and the
    router's orders (``no_gc``) are kept. A negative limit is refused."""
    from gateway.fastroute import Order

    t = idtable.IdTable(3)
    for bad in ([], {}, (1, 2), object.__new__(type("Thing", (), {}))):
        with pytest.raises(TypeError, match="cyclic collector follows"):
            t.put("k", bad)
    assert "k" not in t
    o = Order(1, None, "u", "c1", "gw.1", "A001", "rb2605", 1, 3200.0, 1, 0)
    t.put("gw.1", o)
    t.put("gw.2", 2.5)
    assert t.get("gw.1") is o and t.get("gw.2") == 2.5
    with pytest.raises(ValueError, match="count of ids"):
        idtable.IdTable(-1)
