"""Kafka for the gateway: the journal outbox and the fleet-wide control channel (docs/ARCHITECTURE.md §6).

Theory of operation
-------------------
**Outbox.** The gateway never talks to Kafka on the order path: it appends to its local journal
(``gateway.journal``) and ``OutboxPublisher`` tails that journal in the background. Every record
goes to the audit topic keyed by its account (so one account's records stay in order on one
partition). ``route`` is the one place that decides what else goes where: the alert the router
journals once for risk officers (``Outbound`` to ``NO_SESSION``) also goes to the alerts topic,
so one alert is one alerts record; what a client was told about its orders (the exchange's
reports on them, refusals, reports the gateway derived) also goes to the drop-copy topic (the
broker's copy), see ``route``. Every Kafka record carries the gateway id and the journal sequence
number, in its headers and in its JSON value, so consumers de-duplicate on ``(gateway_id, seq)``:
delivery is at least once, and exactly once after de-duplication.

**Acknowledged, and still there.** The publisher remembers, in a small JSON state file replaced
atomically (temp file, fsync, rename, fsync the directory) and only *after* the broker's
acknowledgement, the last journal sequence acknowledged (``published_seq``) and a few *marks*:
for a past ``published_seq``, where our last record sat on each partition (topic, partition,
offset, journal seq). Marks are dense near the head and thin out geometrically into the past
(``thin_marks``). An acknowledgement is only as good as the broker's storage: a memory-only broker
restarted, a topic deleted and re-created, a tail cut by an unclean leader election all lose
records the broker acknowledged. The publisher catches that three ways:

* On every (re)connect and every ``verify_interval`` seconds it reads the metadata of all topics
  (one request; asking by name may auto-create): a topic it published to that is gone, or has
  lost partitions, lost our records; it says so and creates the topic before publishing. It then
  fetches the record at the newest mark's offset on each partition and checks that it is ours,
  with that sequence number. A partition that fails is searched back through the older marks
  (binary search, one fetch round per step) for the newest one still there.
* Before every batch it asks, on the producer's own connection (which the client library
  re-opens silently after a broker restart) and by name *without* auto-creation, whether our
  topics and partitions exist: a broker that came back empty is caught before it acknowledges
  produces to topics it does not have (the in-memory test broker does exactly that, and the
  stray batches it keeps then collide with the re-created topic).
* Every acknowledgement is checked against the last offset we had on its partition: a partition's
  offsets only grow, so a smaller one means its log was reset or cut under us (a broker rolled
  back to an older state still has its topics).

On a loss the publisher rewinds ``published_seq`` to the newest mark that survived on every
partition (0 when none did), says so in one error line (``outbox.broker_lost_records``, and to
``on_broker_loss`` so the gateway can raise an alert) and publishes again from there; the copies
of records that did survive are duplicates, which the de-duplication key absorbs. A check that
cannot complete (broker down, metadata or fetch failing) is a failure like any other: nothing is
published until a check passes.

When Kafka is unreachable, publishing fails, the publisher backs off (exponentially, capped) and,
after the check above, starts again from the stored position — the journal keeps accepting
records meanwhile, so an outage delays publishing but loses nothing.

**Control.** A risk officer's fleet-wide kill or reset is a ``ControlCommand`` (JSON) on the
control topic, all under one key so commands keep their order. Each gateway instance runs a
``ControlConsumer`` in its *own* consumer group (every instance must see every command) reading
from the earliest offset, so a new instance also applies kills issued before it started. The
handler is called once per command id: ids already applied (seeded from the journal's
``AdminAction.command_id`` on restart) are skipped when Kafka redelivers.

Every background task is owned by the object that started it and is cancelled by its ``stop()``;
the only blocking work (fsync of the state file) runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Literal

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, OffsetOutOfRangeError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import ConsumerRecord, RecordMetadata

from gateway.journal import (
    NO_SESSION,
    Decision,
    ExchangeEvent,
    JournalDamage,
    JournalReader,
    JournalRecord,
    Outbound,
)
from gateway.journal_tools import record_account, to_builtins
from gateway.protocol import Alert, ExecReport

log = structlog.get_logger(__name__)

_json = msgspec.json.Encoder()

Partition = tuple[str, int]  # (topic, partition number)


class Topics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Topic names and the shape used when the gateway has to create one (config ``[kafka.topics]``)."""

    audit: str = "fengkong.audit"
    alerts: str = "fengkong.alerts"
    drop_copy: str = "fengkong.dropcopy"
    control: str = "fengkong.control"
    partitions: int = 6
    replication: int = 1


def route(record: JournalRecord, topics: Topics) -> tuple[str, ...]:
    """The topics a journal record is published to: always audit; the alert journaled once for
    risk officers (session 0) also alerts. Drop copy — the broker's record of what each client
    was told about its orders — gets the exchange's reports on a client's order (``ExchangeEvent``
    with the order's ``client_id``: the client's report is derived from it), every refused order
    (``Decision``: the reject) and the reports the gateway derived itself, e.g. an order the
    exchange lost (``Outbound`` ``ExecReport`` to a session, or to none when no client was
    connected to hear it)."""
    t = type(record)
    if t is ExchangeEvent:
        return (topics.audit, topics.drop_copy) if record.client_id else (topics.audit,)
    if t is Decision:
        return (topics.audit, topics.drop_copy) if record.reason else (topics.audit,)
    if t is Outbound:
        msg = record.msg
        if record.session == NO_SESSION and isinstance(msg, Alert):
            return (topics.audit, topics.alerts)
        if record.session >= 0 and isinstance(msg, ExecReport):
            return (topics.audit, topics.drop_copy)
    return (topics.audit,)


async def _create_topics(admin: AIOKafkaAdminClient, names: dict[str, int], replication: int) -> None:
    response = await admin.create_topics(
        [NewTopic(name, parts, replication) for name, parts in names.items()])
    for topic, code, message in getattr(response, "topic_errors", []):
        if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
            raise KafkaError(f"cannot create topic {topic}: error {code} {message}")


async def ensure_topics(bootstrap: str, names: dict[str, int], replication: int = 1,
                        timeout_ms: int = 5000) -> None:
    """Create each missing topic (name -> partitions); existing ones are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        await _create_topics(admin, names, replication)
    finally:
        await admin.close()


# --- the outbox's memory: how far it got, and where that lies on the broker ----------------------

class Mark(msgspec.Struct, array_like=True, frozen=True):
    """Every journal record up to ``seq`` was acknowledged, and ``at`` is where our last record sat
    on each partition then: ``(topic, partition, offset, journal seq)``, sorted."""

    seq: int
    at: tuple[tuple[str, int, int, int], ...] = ()


class OutboxState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The outbox state file (JSON)."""

    gateway_id: str
    published_seq: int
    marks: list[Mark] = []


MAX_MARKS = 24  # a lost tail of any depth is found in at most ~5 fetch rounds


def thin_marks(marks: list[Mark], limit: int = MAX_MARKS) -> list[Mark]:
    """At most ``limit`` marks: always the oldest and the newest; in between, drop the mark whose
    neighbours are closest together relative to their distance from the head, so marks stay dense
    near the head (where a lost tail usually ends) and thin out geometrically into the past."""
    if limit < 3:
        raise ValueError(f"thin_marks keeps the oldest, the newest and one between: limit {limit} < 3")
    out = list(marks)
    while len(out) > limit:
        head = out[-1].seq
        i = min(range(1, len(out) - 1),
                key=lambda i: (out[i + 1].seq - out[i - 1].seq) / (head - out[i - 1].seq + 1))
        del out[i]
    return out


class BrokerLostRecords(Exception):
    """The broker no longer has what it acknowledged: our topics or partitions are gone, or an
    acknowledgement showed a partition's offsets going back (its log was reset or cut)."""

    def __init__(self, text: str, partitions: set[Partition]) -> None:
        super().__init__(text)
        self.partitions = partitions


class _Progress:
    """Lets tests and shutdown wait on a condition over the publisher's counters, with a timeout."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await self._changed.wait()


def _describe(partitions: Iterable[Partition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for topic, number in sorted(partitions):
        by_topic.setdefault(topic, []).append(number)
    return ", ".join(f"{topic}{numbers}" for topic, numbers in by_topic.items())


class OutboxPublisher:
    """Publishes the journal in ``journal_dir`` to Kafka from the last acknowledged sequence on."""

    def __init__(
        self,
        journal_dir: str | os.PathLike[str],
        bootstrap: str,
        topics: Topics,
        gateway_id: str,
        state_path: str | os.PathLike[str],
        idempotent: bool = False,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.05,
        request_timeout_ms: int = 30_000,
        backoff: tuple[float, float] = (0.1, 5.0),
        verify_interval: float = 10.0,
        verify_timeout: float = 2.0,
        on_broker_loss: Callable[[str], None] | None = None,
    ) -> None:
        self.journal_dir = Path(journal_dir)
        self.bootstrap = bootstrap
        self.topics = topics
        self.gateway_id = gateway_id
        self.state_path = Path(state_path)
        self.idempotent = idempotent
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.request_timeout_ms = request_timeout_ms
        self.backoff = backoff
        self.verify_interval = verify_interval  # how often the broker is checked while connected
        self.verify_timeout = verify_timeout  # how long a record we look for may take to come back
        self.on_broker_loss = on_broker_loss
        self._names = (topics.audit, topics.alerts, topics.drop_copy)
        state = self._load_state()
        self.published_seq = state.published_seq  # last sequence the broker acknowledged
        self._marks = [Mark(m.seq, tuple(p for p in m.at if p[0] in self._names)) for m in state.marks]
        self._acked = self._positions(self._marks)  # partition -> (offset, seq) of our last record
        self.failures = 0  # publish attempts that failed (outage, timeout)
        self.last_error = ""
        self.broker_losses = 0  # times the broker was found to have lost acknowledged records
        self.republished = 0  # journal records published again because of those losses
        self.last_loss = ""
        self.checks = 0  # broker checks completed (topics there, newest records ours or rewound)
        self.offsets_went_back = 0  # acknowledgements below an offset that already held our record
        self.damage: JournalDamage | None = None  # stops publishing until a person repairs it
        self._suspect: set[Partition] = set()  # partitions whose offsets were seen going back
        self._partition_counts: dict[str, int] = {}
        self._check_due = 0.0
        self._progress = _Progress()
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._gid = gateway_id.encode()

    # -- state file: the outbox position ---------------------------------------------------------

    def _load_state(self) -> OutboxState:
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            return OutboxState(self.gateway_id, 0)
        try:
            state = msgspec.json.decode(raw, type=OutboxState)
        except msgspec.DecodeError as err:
            raise ValueError(f"outbox state {self.state_path} is not valid ({err}); "
                             "delete it to republish the whole journal") from None
        if state.gateway_id != self.gateway_id:
            raise ValueError(f"outbox state {self.state_path} belongs to gateway "
                             f"{state.gateway_id!r}, not {self.gateway_id!r}")
        return state

    def _save_state(self, state: OutboxState) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_json.encode(state))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        fd = os.open(self.state_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the rename itself is durable
        finally:
            os.close(fd)

    @staticmethod
    def _positions(marks: list[Mark]) -> dict[Partition, tuple[int, int]]:
        return {(t, p): (offset, seq) for t, p, offset, seq in marks[-1].at} if marks else {}

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            self._task = asyncio.create_task(self._run(), name=f"outbox-{self.gateway_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._close_producer()

    async def __aenter__(self) -> OutboxPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def wake(self) -> None:
        """Hint that records were appended (saves up to one poll interval of latency)."""
        self._more.set()

    async def wait_published(self, seq: int, timeout: float) -> None:
        """Wait until every record up to ``seq`` is acknowledged (TimeoutError otherwise)."""
        await self._progress.wait_for(lambda: self.published_seq >= seq, timeout)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever progress or a failure happens."""
        await self._progress.wait_for(predicate, timeout)

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            try:
                await self._check_broker()
                await self._open_producer()
                await self._pump()  # returns when the next broker check is due
            except asyncio.CancelledError:
                raise
            except BrokerLostRecords as err:
                # The next turn's check finds out what the broker still holds, and rewinds. (The
                # back-off only matters if it keeps happening: a freshly created topic can take a
                # moment to show in every broker's metadata.)
                self._suspect |= err.partitions
                self.last_error = str(err)
                log.error("outbox.broker_reset", gateway_id=self.gateway_id, error=str(err),
                          retry_in_s=delay)
            except (KafkaError, OSError, TimeoutError) as err:
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("outbox.publish_failed", gateway_id=self.gateway_id,
                            published_seq=self.published_seq, error=self.last_error, retry_in_s=delay)
            else:
                delay = self.backoff[0]
                continue
            self._progress.notify()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff[1])

    async def _open_producer(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, client_id=f"fengkong-outbox-{self.gateway_id}",
                acks="all", enable_idempotence=self.idempotent, linger_ms=5,
                request_timeout_ms=self.request_timeout_ms)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def _pump(self) -> None:
        # Always (re)start from the acknowledged position: after a failure some of the batch
        # may or may not have reached the broker, and re-sending is what makes loss impossible.
        reader = JournalReader(self.journal_dir, self.published_seq + 1, follow=True)
        while (left := self._check_due - time.monotonic()) > 0:
            it = iter(reader)
            batch = list(itertools.islice(it, self.batch_size))
            it.close()  # type: ignore[attr-defined]  # releases the segment file handle
            if reader.damage is not None:
                if self.damage != reader.damage:
                    self.damage = reader.damage
                    log.error("outbox.journal_damaged", damage=str(reader.damage),
                              published_seq=self.published_seq)
                    self._progress.notify()
                reader = JournalReader(self.journal_dir, self.published_seq + 1, follow=True)
            if not batch:
                self._more.clear()
                try:
                    async with asyncio.timeout(min(self.poll_interval, left)):
                        await self._more.wait()
                except TimeoutError:
                    pass
                continue
            await self._topics_still_there()
            acked = await self._publish(batch)
            await self._commit(batch[-1][0], acked)

    async def _topics_still_there(self) -> None:
        """Before each batch, ask the broker (on the producer's own connection, which the client
        library re-opens silently) whether our topics and partitions are there — by name and
        without letting the question create them. A broker that restarted empty is caught here,
        before it acknowledges records for topics it does not have."""
        assert self._producer is not None
        client = self._producer.client
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError(f"no broker known at {self.bootstrap}")
        request = MetadataRequest(list(self._names), allow_auto_topic_creation=False)
        response = await client.send(node, request)
        counts = {t["topic"]: len(t["partitions"]) for t in response.to_object()["topics"]
                  if t["error_code"] == 0}
        gone = {tp for tp in self._acked if tp[1] >= counts.get(tp[0], 0)}
        missing = sorted(set(self._names) - counts.keys())
        if gone or missing:
            raise BrokerLostRecords(f"broker {self.bootstrap} no longer has topics {missing} or "
                                    f"partitions {_describe(gone)} that held our records", gone)

    async def _publish(self, batch: list[tuple[int, JournalRecord]]) -> dict[Partition, tuple[int, int]]:
        """Send a batch and wait for every acknowledgement; returns, per partition, the offset and
        journal seq of our newest record there."""
        assert self._producer is not None
        send = self._producer.send
        futures = []
        seqs = []
        for seq, record in batch:
            account = record_account(record)
            key = account.encode() if account else None
            value = _json.encode({"gateway_id": self.gateway_id, "seq": seq,
                                  "record": to_builtins(record)})
            headers = [("gateway_id", self._gid), ("seq", str(seq).encode()),
                       ("type", type(record).__struct_config__.tag.encode())]
            for topic in route(record, self.topics):
                futures.append(await send(topic, value, key=key, headers=headers))
                seqs.append(seq)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        lowest: dict[Partition, int] = {}
        newest: dict[Partition, tuple[int, int]] = {}
        for seq, meta in zip(seqs, results, strict=True):
            assert isinstance(meta, RecordMetadata)
            tp = (meta.topic, meta.partition)
            if meta.offset < lowest.get(tp, meta.offset + 1):
                lowest[tp] = meta.offset
            if meta.offset > newest.get(tp, (-1, 0))[0]:
                newest[tp] = (meta.offset, seq)
        acked = self._acked
        went_back = {tp for tp, offset in lowest.items() if tp in acked and offset <= acked[tp][0]}
        if went_back:
            self.offsets_went_back += 1
            detail = "; ".join(f"{t}[{p}] acknowledged offset {lowest[(t, p)]}, but offset "
                               f"{acked[(t, p)][0]} already held our record {acked[(t, p)][1]}"
                               for t, p in sorted(went_back))
            raise BrokerLostRecords(f"broker {self.bootstrap} reset partitions under us: {detail}",
                                    went_back)
        return newest

    async def _commit(self, seq: int, acked: dict[Partition, tuple[int, int]]) -> None:
        """Remember that everything up to ``seq`` is acknowledged, and where it lies."""
        positions = {**self._acked, **acked}
        mark = Mark(seq, tuple(sorted((t, p, offset, s) for (t, p), (offset, s) in positions.items())))
        marks = thin_marks([*self._marks, mark])
        await asyncio.to_thread(self._save_state, OutboxState(self.gateway_id, seq, marks))
        self._acked, self._marks, self.published_seq = positions, marks, seq
        self.damage = None
        self._progress.notify()

    # -- checking that the broker still holds what it acknowledged -------------------------------

    async def _check_broker(self) -> None:
        """Topics there (created if not), and our newest records still on them; rewind if not."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                    request_timeout_ms=self.request_timeout_ms,
                                    client_id=f"fengkong-outbox-check-{self.gateway_id}")
        await admin.start()
        try:
            # All topics in one metadata request: asked for by name, some brokers (the test
            # broker) describe a topic they do not have.
            counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()
                      if t["error_code"] == 0}
            missing = [name for name in self._names if name not in counts]
            if missing:
                await _create_topics(admin, {name: self.topics.partitions for name in missing},
                                     self.topics.replication)
        finally:
            await admin.close()
        for name in self._names:
            have = counts.get(name, self.topics.partitions)
            if have != self.topics.partitions and self._partition_counts.get(name) != have:
                log.warning("outbox.partition_count", topic=name, partitions=have,
                            configured=self.topics.partitions,
                            note="records keep their per-account order only while the count stays")
            self._partition_counts[name] = have
        gone = {tp for tp in self._acked if tp[0] in missing or tp[1] >= counts.get(tp[0], 0)}
        if gone:
            log.error("outbox.topics_gone", gateway_id=self.gateway_id, bootstrap=self.bootstrap,
                      partitions=_describe(gone), missing_topics=missing,
                      note="the broker no longer has partitions that held our acknowledged records")
        if self.published_seq and not self._marks and not self.checks:
            log.warning("outbox.unverifiable", gateway_id=self.gateway_id,
                        published_seq=self.published_seq,
                        note="the state file has no marks (older format): trusting it")
        survived, lost = await self._survivor(gone)
        if survived < self.published_seq:
            await self._rewind(survived, lost)
        self._suspect.clear()
        self.checks += 1
        self._check_due = time.monotonic() + self.verify_interval
        self._progress.notify()

    async def _survivor(self, gone: set[Partition]) -> tuple[int, set[Partition]]:
        """The newest mark whose records are all still on the broker (its seq, 0 if none), and the
        partitions that lost records."""
        marks = self._marks
        if not marks:
            return self.published_seq, set()
        at: dict[Partition, list[tuple[int, int] | None]] = {}
        for i, mark in enumerate(marks):
            for topic, number, offset, seq in mark.at:
                at.setdefault((topic, number), [None] * len(marks))[i] = (offset, seq)
        head = len(marks) - 1
        suspect = gone | (self._suspect & at.keys())
        held = await self._probe({tp: pos[head] for tp, pos in at.items()  # type: ignore[misc]
                                  if tp not in suspect and pos[head] is not None})
        # Per partition that failed at the head: (newest mark known held, oldest known lost).
        # Marks before our first record there hold trivially.
        search = {tp: [next(i for i, p in enumerate(pos) if p is not None) - 1, head]
                  for tp, pos in at.items() if tp not in held}
        while True:
            step: dict[Partition, int] = {}
            for tp, bounds in search.items():
                lo, hi = bounds
                while tp not in gone and hi - lo > 1:
                    mid = (lo + hi) // 2
                    if at[tp][mid] == at[tp][hi]:  # the same record: lost as well
                        hi = mid
                        continue
                    step[tp] = mid
                    break
                bounds[:] = lo, hi
            if not step:
                break
            held = await self._probe({tp: at[tp][mid] for tp, mid in step.items()})  # type: ignore[misc]
            for tp, mid in step.items():
                search[tp][0 if tp in held else 1] = mid
        if not search:
            return self.published_seq, set()
        worst = min(lo for lo, _ in search.values())
        return (marks[worst].seq if worst >= 0 else 0), set(search)

    async def _probe(self, wanted: dict[Partition, tuple[int, int]]) -> set[Partition]:
        """The partitions that still hold our record with journal seq ``seq`` at ``offset``."""
        if not wanted:
            return set()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            client_id=f"fengkong-outbox-check-{self.gateway_id}", auto_offset_reset="none",
            fetch_max_wait_ms=100, request_timeout_ms=self.request_timeout_ms)
        await consumer.start()
        held: set[Partition] = set()
        try:
            tps = {TopicPartition(*tp): tp for tp in wanted}
            consumer.assign(list(tps))
            first = await consumer.beginning_offsets(list(tps))
            pending: dict[TopicPartition, tuple[int, int]] = {}
            for tp, key in tps.items():
                offset = wanted[key][0]
                if offset < first[tp]:
                    held.add(key)  # retention deleted it: expired, which is not a loss
                else:
                    consumer.seek(tp, offset)
                    pending[tp] = wanted[key]
            try:
                async with asyncio.timeout(self.verify_timeout):
                    while pending:
                        try:
                            batches = await consumer.getmany(*pending, timeout_ms=100)
                        except OffsetOutOfRangeError as err:  # past the end: not there
                            for tp in err.args[0]:
                                pending.pop(tp, None)
                            continue
                        for tp, messages in batches.items():
                            if tp not in pending:
                                continue
                            offset, seq = pending[tp]
                            message = next((m for m in messages if m.offset >= offset), None)
                            if message is None:
                                continue
                            if message.offset == offset and self._is_ours(message, seq):
                                held.add(tps[tp])
                            del pending[tp]
                        for tp in list(pending):
                            # A fetch past the end of a partition is answered empty (after
                            # fetch_max_wait), not with an error; its high watermark says so.
                            highwater = consumer.highwater(tp)
                            if highwater is not None and highwater <= pending[tp][0]:
                                del pending[tp]
            except TimeoutError:
                pass  # a record that has not come back by now is not there
        finally:
            await consumer.stop()
        return held

    def _is_ours(self, message: ConsumerRecord, seq: int) -> bool:
        headers = dict(message.headers or ())
        return headers.get("gateway_id") == self._gid and headers.get("seq") == str(seq).encode()

    async def _rewind(self, seq: int, lost: set[Partition]) -> None:
        marks = [m for m in self._marks if m.seq <= seq]
        await asyncio.to_thread(self._save_state, OutboxState(self.gateway_id, seq, marks))
        before = self.published_seq
        self._marks, self._acked, self.published_seq = marks, self._positions(marks), seq
        self.broker_losses += 1
        self.republished += before - seq
        self.last_loss = (f"Kafka broker {self.bootstrap} no longer holds records it acknowledged "
                          f"(partitions {_describe(lost)}); publishing journal records {seq + 1}.."
                          f"{before} again")
        log.error("outbox.broker_lost_records", gateway_id=self.gateway_id, text=self.last_loss,
                  republish_from=seq + 1, acknowledged_before=before)
        self._progress.notify()
        if self.on_broker_loss is not None:
            try:
                self.on_broker_loss(self.last_loss)
            except Exception:
                log.exception("outbox.on_broker_loss_failed")


# --- fleet control ------------------------------------------------------------------------------

ScopeKind = Literal["firm", "account", "group", "session", "instrument", "product"]


class ControlCommand(msgspec.Struct, frozen=True):
    """A fleet-wide kill or reset; travels as JSON on the control topic."""

    command_id: str
    action: Literal["kill", "reset"]
    scope_kind: ScopeKind
    scope_value: str = ""
    operator: str = ""
    reason: str = ""
    ts_ns: int = 0


_CONTROL_KEY = b"fleet"  # one key, one partition: commands are applied in the order issued


async def publish_control(bootstrap: str, topic: str, command: ControlCommand,
                          request_timeout_ms: int = 10_000) -> None:
    """Publish one control command and wait for the broker's acknowledgement."""
    await ensure_topics(bootstrap, {topic: 1}, timeout_ms=request_timeout_ms)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                request_timeout_ms=request_timeout_ms)
    await producer.start()
    try:
        await producer.send_and_wait(topic, msgspec.json.encode(command), key=_CONTROL_KEY,
                                     headers=[("command_id", command.command_id.encode())])
    finally:
        await producer.stop()


class ControlConsumer:
    """Applies control commands with ``handler``, once per command id. Use one ``group_id`` per
    gateway instance (e.g. ``fengkong-<gateway id>``): consumer groups share work, and here every
    instance must see every command."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        handler: Callable[[ControlCommand], Awaitable[None]],
        applied_ids: Iterable[str] = (),
        *,
        backoff: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.handler = handler
        self.applied: set[str] = set(applied_ids)
        self.received = 0  # messages read, duplicates and bad ones included
        self.backoff = backoff
        self._decode = msgspec.json.Decoder(ControlCommand).decode
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"control-{self.group_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> ControlConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        delay = self.backoff[0]
        while True:
            consumer = AIOKafkaConsumer(
                self.topic, bootstrap_servers=self.bootstrap, group_id=self.group_id,
                client_id=f"fengkong-control-{self.group_id}", enable_auto_commit=False,
                auto_offset_reset="earliest", metadata_max_age_ms=5000,
                session_timeout_ms=10_000, heartbeat_interval_ms=1000, rebalance_timeout_ms=5000)
            try:
                await ensure_topics(self.bootstrap, {self.topic: 1})
                await consumer.start()
                delay = self.backoff[0]
                while True:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for messages in batches.values():
                        for message in messages:
                            await self._apply(message.value)
                    if batches:
                        await consumer.commit()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as err:
                log.warning("control.consumer_failed", group_id=self.group_id, error=str(err),
                            retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
            finally:
                await consumer.stop()

    async def _apply(self, value: bytes | None) -> None:
        self.received += 1
        try:
            command = self._decode(value or b"")
        except msgspec.DecodeError as err:
            log.error("control.bad_command", topic=self.topic, error=str(err), value=value)
            return
        if command.command_id in self.applied:
            log.info("control.duplicate_skipped", command_id=command.command_id)
            return
        try:
            await self.handler(command)
        except Exception:
            # A failed handler is loud but does not wedge the channel: later commands (a reset,
            # another kill) must still get through. The operator sees it and re-issues.
            log.exception("control.handler_failed", command_id=command.command_id)
            return
        self.applied.add(command.command_id)
        log.info("control.applied", command_id=command.command_id, action=command.action,
                 scope=f"{command.scope_kind}:{command.scope_value}", operator=command.operator)
