"""Shared test fixtures: real processes on free loopback ports, always cleaned up."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


class Proc:
    """A child process whose stdout we watch for a readiness line (e.g. the port it bound)."""

    def __init__(self, args: list[str], ready: str, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=full_env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            self.match = self.wait_for(ready, timeout)
        except BaseException:
            self.kill9()  # never ready: do not leave it running behind the failed test
            raise

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put("")

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.args[2:5]}: no line matching {pattern!r} in {timeout} s;"
                                   f" output:\n{''.join(self.output[-40:])}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line == "":
                raise RuntimeError(f"{self.args[2:5]} exited with {self.p.wait()} before "
                                   f"{pattern!r}; output:\n{''.join(self.output[-40:])}")
            m = rx.search(line)
            if m:
                return m

    def signal(self, sig: int) -> None:
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        return self.p.wait()

    def kill9(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def start_exchange(port: int = 0, *extra: str, config: Path = EXAMPLES / "risk.toml") -> Proc:
    return Proc([sys.executable, "-m", "simulator", "exchange", "--config", str(config),
                 "--port", str(port), *extra], r"listening on [\d.]+:(\d+)")


def start_gateway(exchange_port: int, *extra: str,
                  config: Path = EXAMPLES / "gateway.toml") -> Proc:
    # FENGKONG_TEST_ENGINE=reference / FENGKONG_TEST_ROUTER=reference run the same end-to-end
    # tests on the Python reference engine / order path.
    engine = os.environ.get("FENGKONG_TEST_ENGINE", "cython")
    router = os.environ.get("FENGKONG_TEST_ROUTER", "fast")
    return Proc([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", "0",
                 "--admin-port", "0", "--exchange", f"127.0.0.1:{exchange_port}",
                 "--engine", engine, "--router", router, *extra],
                r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)")


@pytest.fixture
def exchange_proc():
    proc = start_exchange()
    yield proc
    proc.stop()


@pytest.fixture
def gateway_proc(exchange_proc):
    proc = start_gateway(int(exchange_proc.match.group(1)))
    proc.wait_for("exchange link up")
    yield proc
    proc.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
