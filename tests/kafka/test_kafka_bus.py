"""The Kafka outbox and control channel against a real broker (tansu, see conftest.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from gateway.journal import (
    FsyncPolicy,
    Journal,
    JournalReader,
    Outbound,
)
from gateway.journal_tools import record_account, to_builtins
from gateway.kafka_bus import (
    ControlCommand,
    ControlConsumer,
    OutboxPublisher,
    publish_control,
)
from gateway.protocol import Alert, ExecReport
from tests.kafka.flows import T0, TOPICS, consume, dedup, flow, seqs_of

if TYPE_CHECKING:
    from conftest import Broker  # the fixture's type (tests/kafka/conftest.py)


async def test_every_journal_record_reaches_audit_once_after_dedup(broker: Broker, tmp_path: Path) -> None:
    jdir, state = tmp_path / "journal", tmp_path / "outbox.json"
    recs = flow(0, 210)
    with Journal.open(jdir, fsync=FsyncPolicy.never(), segment_bytes=4096) as j:
        j.append_many(recs[:100])  # some before the publisher starts, some while it runs
        async with OutboxPublisher(jdir, broker.bootstrap, TOPICS, "gw-1", state,
                                   request_timeout_ms=5000, batch_size=64) as pub:
            for r in recs[100:]:
                j.append(r)
                pub.wake()
            await pub.wait_published(len(recs), timeout=20)
        saved = json.loads(state.read_text())
        assert (saved["gateway_id"], saved["published_seq"]) == ("gw-1", len(recs))
        assert saved["marks"][-1][0] == len(recs)  # where the newest records lie, for the broker check
        # Publish it all again from scratch: at-least-once means duplicates are possible, and
        # consumers must still see every record exactly once after de-duplication.
        state.unlink()
        async with OutboxPublisher(jdir, broker.bootstrap, TOPICS, "gw-1", state,
                                   request_timeout_ms=5000) as pub:
            await pub.wait_published(len(recs), timeout=20)

    audit = await consume(broker.bootstrap, TOPICS.audit, lambda got: len(got) >= 2 * len(recs))
    assert len(audit) == 2 * len(recs)
    unique = dedup(audit)
    assert sorted(unique) == [("gw-1", s) for s in range(1, len(recs) + 1)]
    for (_, seq), m in unique.items():
        value = json.loads(m.value)
        record = recs[seq - 1]
        assert value == {"gateway_id": "gw-1", "seq": seq, "record": json.loads(json.dumps(to_builtins(record)))}
        assert (m.key or b"").decode() == record_account(record)  # keyed by account
        assert dict(m.headers)["type"].decode() == value["record"]["type"]

    alert_seqs = {s for s, r in enumerate(recs, 1) if isinstance(getattr(r, "msg", None), Alert)}
    # Drop copy: the execution reports client sessions were sent (not the exchange's own reports).
    drop_seqs = {s for s, r in enumerate(recs, 1)
                 if isinstance(r, Outbound) and r.session > 0 and isinstance(r.msg, ExecReport)}
    alerts = await consume(broker.bootstrap, TOPICS.alerts, lambda got: seqs_of(got) >= alert_seqs)
    drops = await consume(broker.bootstrap, TOPICS.drop_copy, lambda got: seqs_of(got) >= drop_seqs)
    assert seqs_of(alerts) == alert_seqs and seqs_of(drops) == drop_seqs


async def test_broker_outage_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    jdir, state = tmp_path / "journal", tmp_path / "outbox.json"
    j = Journal.open(jdir, fsync=FsyncPolicy.never(), segment_bytes=2048)
    pub = OutboxPublisher(jdir, broker.bootstrap, TOPICS, "gw-1", state,
                          request_timeout_ms=1500, backoff=(0.05, 0.5))
    try:
        await pub.start()
        j.append_many(flow(0, 40))
        await pub.wait_published(40, timeout=20)

        broker.stop()
        for r in flow(40, 60):  # the gateway keeps journaling through the outage
            j.append(r)
        pub.wake()
        await pub.wait_for(lambda: pub.failures >= 2, timeout=30)
        acked = pub.published_seq
        assert acked == 40 and json.loads(state.read_text())["published_seq"] == acked

        await broker.restart()  # empty: memory storage, topics gone with the 40 acknowledged records
        for r in flow(100, 20):
            j.append(r)
        pub.wake()
        await pub.wait_published(120, timeout=30)
        assert pub.broker_losses == 1 and pub.republished == 40  # found out, and published again
    finally:
        await pub.stop()
        j.close()

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:  # the publisher re-created its topics, with its own partition count, on the empty broker
        described = await admin.describe_topics([TOPICS.audit, TOPICS.alerts, TOPICS.drop_copy])
    finally:
        await admin.close()
    assert [len(t["partitions"]) for t in described] == [TOPICS.partitions] * 3
    audit = await consume(broker.bootstrap, TOPICS.audit, lambda got: seqs_of(got) >= set(range(1, 121)))
    assert seqs_of(audit) == set(range(1, 121))  # the lost 40 as well as everything after them
    restarted = OutboxPublisher(jdir, broker.bootstrap, TOPICS, "gw-1", state)
    assert restarted.published_seq == 120  # a restarted publisher resumes from the stored position
    assert [s for s, _ in JournalReader(jdir)][-1] == 120


async def test_control_command_applied_once_by_each_gateway(broker: Broker) -> None:
    applied: dict[str, list[str]] = {"gw-a": [], "gw-b": [], "gw-c": []}
    finished = {g: asyncio.Event() for g in applied}

    def handler_for(gateway: str):
        async def handle(command: ControlCommand) -> None:
            applied[gateway].append(command.command_id)
            if command.command_id == "cmd-2":
                finished[gateway].set()
        return handle

    kill = ControlCommand("cmd-1", "kill", "account", "A1", "risk.li", "runaway algo", T0)
    await publish_control(broker.bootstrap, TOPICS.control, kill)
    consumers = [
        ControlConsumer(broker.bootstrap, TOPICS.control, "fengkong-gw-a", handler_for("gw-a")),
        ControlConsumer(broker.bootstrap, TOPICS.control, "fengkong-gw-b", handler_for("gw-b")),
        # a restarted instance whose journal already shows cmd-1 applied
        ControlConsumer(broker.bootstrap, TOPICS.control, "fengkong-gw-c", handler_for("gw-c"),
                        applied_ids=["cmd-1"]),
    ]
    try:
        for c in consumers:
            await c.start()
        await publish_control(broker.bootstrap, TOPICS.control, kill)  # redelivered: same id
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(TOPICS.control, b"{not a command", key=b"fleet")
        finally:
            await producer.stop()
        reset = ControlCommand("cmd-2", "reset", "account", "A1", "risk.li", "algo fixed", T0 + 1)
        await publish_control(broker.bootstrap, TOPICS.control, reset)
        async with asyncio.timeout(30):
            await asyncio.gather(*(e.wait() for e in finished.values()))
    finally:
        for c in consumers:
            await c.stop()
    assert applied == {"gw-a": ["cmd-1", "cmd-2"], "gw-b": ["cmd-1", "cmd-2"], "gw-c": ["cmd-2"]}
    assert all(c.received == 4 for c in consumers)  # kill, duplicate kill, junk, reset


async def test_publisher_stops_at_journal_damage_and_says_where(broker: Broker, tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    with Journal.open(jdir, fsync=FsyncPolicy.never(), segment_bytes=512) as j:
        j.append_many(flow(0, 30))
    segs = sorted(jdir.glob("*.journal"))
    raw = bytearray(segs[1].read_bytes())
    raw[30] ^= 0x01  # corrupt the second segment: not a tail, so nothing is cut
    segs[1].write_bytes(raw)
    first_bad = int(segs[1].name.split(".")[0])
    async with OutboxPublisher(jdir, broker.bootstrap, TOPICS, "gw-1", tmp_path / "outbox.json",
                               request_timeout_ms=5000) as pub:
        await pub.wait_for(lambda: pub.damage is not None and pub.published_seq == first_bad - 1, 20)
        assert pub.damage is not None and pub.damage.segment == str(segs[1]) and pub.damage.seq == first_bad


def test_outbox_state_of_another_gateway_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "outbox.json"
    state.write_text('{"gateway_id": "gw-2", "published_seq": 7}')
    with pytest.raises(ValueError, match="belongs to gateway 'gw-2'"):
        OutboxPublisher(tmp_path, "127.0.0.1:1", TOPICS, "gw-1", state)
    assert OutboxPublisher(tmp_path, "127.0.0.1:1", TOPICS, "gw-2", state).published_seq == 7
