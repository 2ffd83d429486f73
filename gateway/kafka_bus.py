"""Kafka for the gateway: the journal outbox and the fleet-wide control channel (DESIGN.md §6).

Theory of operation
-------------------
**Outbox.** The gateway never talks to Kafka on the order path: it appends to its local journal
(``gateway.journal``) and ``OutboxPublisher`` tails that journal in the background. Each record
goes to the audit topic keyed by its account (so one account's records stay in order on one
partition); alerts also go to the alerts topic and exchange execution reports to the drop-copy
topic (``route`` is the one place that decides). Every Kafka record carries the gateway id and
the journal sequence number, in its headers and in its JSON value, so consumers de-duplicate on
``(gateway_id, seq)``: delivery is at least once, and exactly once after de-duplication.

The publisher remembers the last sequence number the broker acknowledged in a small JSON state
file, replaced atomically (write a temp file, fsync, rename, fsync the directory) and only *after*
the acknowledgement. When Kafka is unreachable, publishing fails, the publisher backs off
(exponentially, capped) and starts again from the stored position — the journal keeps accepting
records meanwhile, so an outage delays publishing but loses nothing. On every (re)connect it
creates any missing topic: a broker that lost its data (the in-memory test broker after a
restart) gets its topics back. Batches re-sent after a failure may duplicate records the broker
had already taken; the de-duplication key covers that.

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
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Literal

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.journal import (
    ExchangeEvent,
    JournalDamage,
    JournalReader,
    JournalRecord,
)
from gateway.journal_tools import record_account, to_builtins
from gateway.protocol import Alert

log = structlog.get_logger(__name__)

_json = msgspec.json.Encoder()


class Topics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Topic names and the shape used when the gateway has to create one (config ``[kafka.topics]``)."""

    audit: str = "fengkong.audit"
    alerts: str = "fengkong.alerts"
    drop_copy: str = "fengkong.dropcopy"
    control: str = "fengkong.control"
    partitions: int = 6
    replication: int = 1


def route(record: JournalRecord, topics: Topics) -> list[str]:
    """The topics a journal record is published to: always audit, plus alerts / drop copy."""
    out = [topics.audit]
    if isinstance(getattr(record, "msg", None), Alert):
        out.append(topics.alerts)
    elif isinstance(record, ExchangeEvent):
        out.append(topics.drop_copy)
    return out


async def ensure_topics(bootstrap: str, names: dict[str, int], replication: int = 1,
                        timeout_ms: int = 5000) -> None:
    """Create each missing topic (name -> partitions); existing ones are left alone."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, parts, replication) for name, parts in names.items()])
        for topic, code, message in getattr(response, "topic_errors", []):
            if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS
                raise KafkaError(f"cannot create topic {topic}: error {code} {message}")
    finally:
        await admin.close()


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
        self.published_seq = self._load_state()  # last sequence the broker acknowledged
        self.failures = 0  # publish attempts that failed (outage, timeout)
        self.last_error = ""
        self.damage: JournalDamage | None = None  # stops publishing until a person repairs it
        self._progress = _Progress()
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._gid = gateway_id.encode()

    # -- state file: the outbox position ---------------------------------------------------------

    def _load_state(self) -> int:
        try:
            state = msgspec.json.decode(self.state_path.read_bytes())
        except FileNotFoundError:
            return 0
        except msgspec.DecodeError as err:
            raise ValueError(f"outbox state {self.state_path} is not valid JSON ({err}); "
                             "delete it to republish the whole journal") from None
        if state.get("gateway_id") != self.gateway_id:
            raise ValueError(f"outbox state {self.state_path} belongs to gateway "
                             f"{state.get('gateway_id')!r}, not {self.gateway_id!r}")
        return int(state["published_seq"])

    def _save_state(self, seq: int) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(_json.encode({"gateway_id": self.gateway_id, "published_seq": seq}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        fd = os.open(self.state_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the rename itself is durable
        finally:
            os.close(fd)

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
                await self._connect()
                await self._pump()  # returns only by raising
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError, TimeoutError) as err:
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                log.warning("outbox.publish_failed", gateway_id=self.gateway_id,
                            published_seq=self.published_seq, error=self.last_error, retry_in_s=delay)
                self._progress.notify()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
            else:
                delay = self.backoff[0]

    async def _connect(self) -> None:
        await ensure_topics(self.bootstrap, {
            self.topics.audit: self.topics.partitions,
            self.topics.alerts: self.topics.partitions,
            self.topics.drop_copy: self.topics.partitions,
        }, self.topics.replication, self.request_timeout_ms)
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
        while True:
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
                    async with asyncio.timeout(self.poll_interval):
                        await self._more.wait()
                except TimeoutError:
                    pass
                continue
            await self._publish(batch)
            seq = batch[-1][0]
            await asyncio.to_thread(self._save_state, seq)
            self.published_seq = seq
            self.damage = None
            self._progress.notify()

    async def _publish(self, batch: list[tuple[int, JournalRecord]]) -> None:
        assert self._producer is not None
        send = self._producer.send
        futures = []
        for seq, record in batch:
            account = record_account(record)
            key = account.encode() if account else None
            value = _json.encode({"gateway_id": self.gateway_id, "seq": seq, "record": to_builtins(record)})
            headers = [("gateway_id", self._gid), ("seq", str(seq).encode()),
                       ("type", type(record).__struct_config__.tag.encode())]
            for topic in route(record, self.topics):
                futures.append(await send(topic, value, key=key, headers=headers))
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


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
