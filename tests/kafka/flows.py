"""What the Kafka tests publish and how they read it back: a synthetic journal flow with every
record type, and a topic reader that de-duplicates on ``(gateway_id, seq)`` as a consumer would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from gateway.journal import (
    AdminAction,
    Decision,
    ExchangeEvent,
    Inbound,
    JournalRecord,
    Outbound,
    State,
)
from gateway.kafka_bus import Topics
from gateway.protocol import Alert, ExecReport, NewOrder

T0 = 1_748_914_200 * 10**9
TOPICS = Topics(audit="t.audit", alerts="t.alerts", drop_copy="t.dropcopy", control="t.control",
                partitions=3)


def flow(start: int, n: int) -> list[JournalRecord]:
    """A plausible mix of every record type, several accounts."""
    out: list[JournalRecord] = []
    for i in range(start, start + n):
        acct = ("A1", "B2", "C3")[i % 3]
        t = T0 + i * 1000
        kind = i % 7
        if kind == 0:
            out.append(Inbound(t, 7, NewOrder(f"c{i}", acct, "rb2510", 1, 1, 1, 1, 1, 3500.0, 1)))
        elif kind == 1:
            out.append(Decision(t, 7, f"c{i}", acct, "rb2510", 0, "", i))
        elif kind == 2:
            out.append(Outbound(t, 7, ExecReport(f"c{i}", f"X{i}", acct, "rb2510", 2, 2)))
        elif kind == 3:
            out.append(ExchangeEvent(t, ExecReport(f"c{i}", f"X{i}", acct, "rb2510", 4, 3, last_qty=1)))
        elif kind == 4:
            out.append(Outbound(t, 0, Alert(2, 1301, f"account:{acct}", "80% of the cancel limit")))
        elif kind == 5:
            out.append(AdminAction(t, "risk.li", "kill", "account", acct, reason="drill"))
        else:
            out.append(State(t, "snapshot", b"\x01\x02"))
    return out


def expected_seqs(records: list[JournalRecord], topics: Topics = TOPICS, first_seq: int = 1) -> dict[str, set[int]]:
    """Which journal seqs belong on which topic, written out independently of ``route``: all on
    audit; the alert journaled once for risk officers (session 0) on alerts; execution reports
    for clients' orders (sent to a session, or with none connected, session 0) on drop copy."""
    out: dict[str, set[int]] = {topics.audit: set(), topics.alerts: set(), topics.drop_copy: set()}
    for seq, r in enumerate(records, first_seq):
        out[topics.audit].add(seq)
        if isinstance(r, Outbound) and r.session == 0 and isinstance(r.msg, Alert):
            out[topics.alerts].add(seq)
        if isinstance(r, Outbound) and r.session >= 0 and isinstance(r.msg, ExecReport):
            out[topics.drop_copy].add(seq)
    return out


async def consume(bootstrap: str, topic: str, done: Callable[[list[ConsumerRecord]], bool],
                  timeout: float = 20) -> list[ConsumerRecord]:
    """Read ``topic`` from the start (no group) until ``done(messages)``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", metadata_max_age_ms=1000)
    await consumer.start()
    got: list[ConsumerRecord] = []
    try:
        async with asyncio.timeout(timeout):
            while not done(got):
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(messages)
    finally:
        await consumer.stop()
    return got


def dedup(messages: list[ConsumerRecord]) -> dict[tuple[str, int], ConsumerRecord]:
    """De-duplicate on (gateway_id, seq) as a consumer would; duplicates must be identical."""
    out: dict[tuple[str, int], ConsumerRecord] = {}
    for m in messages:
        headers = dict(m.headers)
        key = (headers["gateway_id"].decode(), int(headers["seq"]))
        if key in out:
            assert (out[key].value, out[key].key) == (m.value, m.key)
        out[key] = m
    return out


def seqs_of(messages: list[ConsumerRecord], gateway_id: str = "gw-1") -> set[int]:
    return {seq for gid, seq in dedup(messages) if gid == gateway_id}


async def read_topics(bootstrap: str, want: dict[str, set[int]], timeout: float = 20,
                      gateway_id: str = "gw-1") -> dict[str, list[ConsumerRecord]]:
    """Every message on each topic in ``want``, read until the wanted seqs have all arrived."""
    return {topic: await consume(bootstrap, topic, lambda got, s=seqs: seqs_of(got, gateway_id) >= s, timeout)
            for topic, seqs in want.items()}
