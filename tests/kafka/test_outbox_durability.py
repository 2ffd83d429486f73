"""The outbox only counts what the broker still holds (docs/ARCHITECTURE.md §6).

Against a broker that keeps its data (tansu on S3, ``durable_broker``): a stop/start or a kill -9
in the middle of publishing loses nothing and is not mistaken for a loss; a broker rolled back to
an older state (a lost tail) is caught and exactly the lost tail is published again. Against the
memory-only broker (``broker``): coming back empty is caught, whether the publisher sees the
outage or the client library reconnects silently, and everything is published again. Alerts reach
the alerts topic once each, drop copy carries each report sent to a client once.

After every scenario each topic is read back and, after de-duplication on (gateway id, seq),
holds exactly the journal records that belong there: none missing, none foreign.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from gateway.journal import ExchangeEvent, FsyncPolicy, Inbound, Journal, Outbound
from gateway.kafka_bus import Mark, OutboxPublisher, route, thin_marks
from gateway.protocol import Alert, ExecReport, NewOrder
from tests.kafka.flows import T0, TOPICS, dedup, expected_seqs, flow, read_topics, seqs_of

if TYPE_CHECKING:
    from conftest import Broker, S3Server  # the fixtures' types (tests/kafka/conftest.py)

T = 30.0  # the longest any wait below may take before the test fails


def publisher(broker: Broker, tmp_path: Path, **kw: object) -> OutboxPublisher:
    options: dict = {"request_timeout_ms": 1500, "backoff": (0.05, 0.5), "batch_size": 100, **kw}
    return OutboxPublisher(tmp_path / "journal", broker.bootstrap, TOPICS, "gw-1",
                           tmp_path / "outbox.state", **options)


def assert_exactly_once(got: dict[str, list], want: dict[str, set[int]]) -> None:
    for topic, seqs in want.items():
        assert seqs_of(got[topic]) == seqs, topic  # after de-dup: none missing, none extra
        assert {gid for gid, _ in dedup(got[topic])} == {"gw-1"}


@pytest.mark.parametrize("how", ["stop-start", "kill-9", "kill-9-quick"])
async def test_durable_broker_bounced_mid_flow_loses_nothing(durable_broker: Broker, tmp_path: Path,
                                                              how: str) -> None:
    """stop-start: SIGINT, the publisher sees the outage, the broker comes back. kill-9: the same
    with kill -9. kill-9-quick: killed and back at once, whether or not the publisher noticed."""
    broker = durable_broker
    recs = flow(0, 1500)
    j = Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never(), segment_bytes=64 << 10)
    pub = publisher(broker, tmp_path)
    try:
        j.append_many(recs[:1000])
        await pub.start()
        await pub.wait_for(lambda: pub.published_seq >= 300, T)  # publishing is under way
        if how == "stop-start":
            broker.stop()
        else:
            broker.kill()
        j.append_many(recs[1000:1250])  # the gateway keeps journaling through the outage
        pub.wake()
        if how != "kill-9-quick":
            await pub.wait_for(lambda: pub.failures >= 1, T)
        broker.start()
        await broker.wait_ready()
        j.append_many(recs[1250:])
        pub.wake()
        await pub.wait_published(len(recs), T)
    finally:
        await pub.stop()
        j.close()
    assert pub.broker_losses == 0 and pub.republished == 0  # it kept everything: no false alarm
    assert pub.checks >= (2 if how != "kill-9-quick" else 1)  # checked again after the reconnect
    want = expected_seqs(recs)
    got = await read_topics(broker.bootstrap, want, T)
    assert_exactly_once(got, want)
    # Re-sent at most what was in flight when the broker went (a batch per failed attempt).
    assert len(got[TOPICS.audit]) - len(recs) <= pub.batch_size * max(pub.failures, 1)


async def test_broker_back_empty_while_idle_is_found_and_everything_published_again(
        broker: Broker, tmp_path: Path) -> None:
    """Memory storage: the restarted broker has no topics. The periodic check finds it although
    the publisher has nothing new to send, and publishes the lost records again."""
    alarms: list[str] = []
    recs = flow(0, 700)
    with Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never()) as j:
        j.append_many(recs)
        async with publisher(broker, tmp_path, verify_interval=0.2, on_broker_loss=alarms.append) as pub:
            await pub.wait_published(len(recs), T)
            await broker.restart()  # back empty, on the same port
            await pub.wait_for(lambda: pub.broker_losses == 1 and pub.published_seq == len(recs), T)
    assert pub.republished == len(recs)
    assert len(alarms) == 1 and broker.bootstrap in alarms[0] and f"records 1..{len(recs)}" in alarms[0]
    want = expected_seqs(recs)
    assert_exactly_once(await read_topics(broker.bootstrap, want, T), want)
    state = msgspec.json.decode((tmp_path / "outbox.state").read_bytes())
    assert state["published_seq"] == len(recs) and state["marks"][-1][0] == len(recs)


async def test_broker_back_empty_mid_flow_is_found_without_waiting_for_the_periodic_check(
        broker: Broker, tmp_path: Path) -> None:
    """The broker restarts empty between two batches and aiokafka reconnects by itself, so no
    error ever reaches the publisher (and this broker would acknowledge produces to the topics it
    no longer has). The topic check before the next batch, on the producer's own connection,
    gives it away — failing that, the acknowledged offsets going back would."""
    recs = flow(0, 1500)
    with Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never()) as j:
        j.append_many(recs[:1000])
        async with publisher(broker, tmp_path, verify_interval=3600) as pub:
            await pub.wait_published(1000, T)
            await broker.restart()
            j.append_many(recs[1000:])
            pub.wake()
            await pub.wait_for(lambda: pub.broker_losses == 1 and pub.published_seq == len(recs), T)
    assert pub.republished == 1000  # everything acknowledged before the restart, none of it skipped
    want = expected_seqs(recs)
    assert_exactly_once(await read_topics(broker.bootstrap, want, T), want)


async def test_a_restarted_publisher_checks_what_its_state_file_claims(broker: Broker, tmp_path: Path) -> None:
    """The broker lost everything while the gateway was down: only the state file's marks say
    what the broker ought to hold, and the first check after starting finds it gone."""
    recs = flow(0, 300)
    with Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never()) as j:
        j.append_many(recs)
        async with publisher(broker, tmp_path) as pub:
            await pub.wait_published(len(recs), T)
        await broker.restart()
        pub = publisher(broker, tmp_path)
        assert pub.published_seq == len(recs)  # what the state file claims
        async with pub:
            await pub.wait_for(lambda: pub.broker_losses == 1 and pub.published_seq == len(recs), T)
    assert pub.republished == len(recs)
    want = expected_seqs(recs)
    assert_exactly_once(await read_topics(broker.bootstrap, want, T), want)


@pytest.mark.parametrize("found_by", ["periodic-check", "offsets-going-back"])
async def test_broker_rolled_back_loses_a_tail_and_exactly_that_tail_is_published_again(
        durable_broker: Broker, s3_server: S3Server, tmp_path: Path, found_by: str) -> None:
    """The broker comes back holding records 1..400 of the 800 it acknowledged (its storage put
    back as it was: what an unclean leader election does), with all its topics. Found by the
    periodic check while idle, or by the next acknowledgements' offsets going back: either way the
    check finds the newest records missing, searches back through its marks and resumes after 400."""
    broker = durable_broker
    recs = flow(0, 1000)
    idle = found_by == "periodic-check"
    with Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never()) as j:
        j.append_many(recs[:400])
        async with publisher(broker, tmp_path, verify_interval=0.2 if idle else 3600) as pub:
            await pub.wait_published(400, T)
            broker.stop()
            older = s3_server.snapshot(broker.bucket)
            broker.start()
            await broker.wait_ready()
            j.append_many(recs[400:800])
            pub.wake()
            await pub.wait_published(800, T)
            broker.kill()
            s3_server.restore(broker.bucket, older)
            broker.start()
            await broker.wait_ready()
            if not idle:
                j.append_many(recs[800:])
                pub.wake()
            else:
                recs = recs[:800]
            await pub.wait_for(lambda: pub.broker_losses == 1 and pub.published_seq == len(recs), T)
    assert pub.offsets_went_back == (0 if idle else 1)
    assert pub.republished == 400  # the lost tail, not the journal
    assert "publishing journal records 401..800 again" in pub.last_loss
    want = expected_seqs(recs)
    got = await read_topics(broker.bootstrap, want, T)
    assert_exactly_once(got, want)
    if idle:
        assert len(got[TOPICS.audit]) == len(recs)  # nothing that survived was sent twice
    else:  # only the batch whose acknowledgement gave the loss away was sent twice
        assert len(got[TOPICS.audit]) - len(recs) <= pub.batch_size


async def test_one_alert_is_one_alerts_record_and_each_client_report_one_drop_copy(
        broker: Broker, tmp_path: Path) -> None:
    def alert(n: int) -> Alert:
        return Alert(2, 1301, "account:A1", f"80% of the cancel limit ({n})", T0 + n)

    def report(n: int) -> ExecReport:
        return ExecReport(f"c{n}", f"X{n}", "A1", "rb2510", 2, 2, ts_ns=T0 + n)

    recs = [
        Outbound(T0, 0, alert(1)),  # journaled once for the alerts topic...
        Outbound(T0, 11, alert(1)),  # ...and as delivered to each session trading A1
        Outbound(T0, 12, alert(1)),
        Outbound(T0 + 1, 0, alert(2)),
        Outbound(T0 + 1, 11, alert(2)),
        Inbound(T0 + 2, 11, alert(3)),  # a client sending us an Alert is not an alert
        Inbound(T0 + 3, 11, NewOrder("c1", "A1", "rb2510", 1, 1, 1, 1, 1, 3500.0, 1)),
        Outbound(T0 + 4, -1, NewOrder("gw.1", "A1", "rb2510", 1, 1, 1, 1, 1, 3500.0, 1)),
        ExchangeEvent(T0 + 5, report(5)),  # the exchange's own report: audit
        Outbound(T0 + 5, 11, report(5)),  # what the client was told: drop copy
        Outbound(T0 + 6, 11, report(6)),
        Outbound(T0 + 7, 12, report(7)),
        Outbound(T0 + 8, 0, report(8)),  # no client connected to hear it: drop copy all the same
    ]
    assert [len(route(r, TOPICS)) for r in recs] == [2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 2, 2, 2]
    with Journal.open(tmp_path / "journal", fsync=FsyncPolicy.never()) as j:
        j.append_many(recs)
        async with publisher(broker, tmp_path) as pub:
            await pub.wait_published(len(recs), T)
    want = {TOPICS.audit: set(range(1, 14)), TOPICS.alerts: {1, 4},
            TOPICS.drop_copy: {10, 11, 12, 13}}
    assert expected_seqs(recs) == want
    got = await read_topics(broker.bootstrap, want, T)
    assert_exactly_once(got, want)
    assert len(got[TOPICS.alerts]) == 2 and len(got[TOPICS.drop_copy]) == 4  # once each, not de-duplicated
    assert [msgspec.json.decode(m.value)["record"]["session"] for m in got[TOPICS.alerts]] == [0, 0]


def test_marks_stay_few_and_a_lost_tail_costs_at_most_twice_its_length_to_publish_again() -> None:
    rng = random.Random(9)
    marks: list[Mark] = []
    seq = 0
    for _ in range(5000):  # 5000 batches of 1..500 records
        seq += rng.randint(1, 500)
        marks = thin_marks([*marks, Mark(seq)])
        assert len(marks) <= 24
    assert marks[-1].seq == seq and marks[0].seq <= 500  # the newest and the oldest are kept
    for lost in range(1, seq, 97):  # a tail of ``lost`` records gone
        survivor = max((m.seq for m in marks if m.seq <= seq - lost), default=0)
        assert seq - survivor <= 2 * lost + 500, lost  # republished: the tail, doubled, plus a batch


def test_state_file_of_the_older_format_still_loads(tmp_path: Path) -> None:
    state = tmp_path / "outbox.state"
    state.write_text('{"gateway_id": "gw-1", "published_seq": 7}')
    pub = OutboxPublisher(tmp_path, "127.0.0.1:1", TOPICS, "gw-1", state)
    assert pub.published_seq == 7
    state.write_text('{"gateway_id": "gw-1", "published_seq": "seven"}')
    with pytest.raises(ValueError, match=r"outbox state .* is not valid .*published_seq"):
        OutboxPublisher(tmp_path, "127.0.0.1:1", TOPICS, "gw-1", state)
