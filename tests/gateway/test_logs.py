"""One log stream: with JSON logs, every stderr line of a gateway process is a JSON object —
the libraries' records (here aiohttp's, with a traceback) too, the traceback inside the object.

aiokafka's records go the same way (a gateway pointed at a closed Kafka port logs them).

The gateway is stopped with SIGTERM, early (its exchange link may still be logging on), and its
shutdown lines are checked too; a gateway that does not stop is killed, never left behind."""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading

from tests.conftest import EXAMPLES, ROOT, start_exchange

T = 30.0  # generous: a loaded machine (never asserted on)


def test_every_stderr_line_is_json_while_libraries_log(tmp_path):
    ex = start_exchange()
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(EXAMPLES / "gateway.toml"),
         "--port", "0", "--admin-port", "0", "--exchange", f"127.0.0.1:{ex.match.group(1)}",
         "--journal", str(tmp_path / "journal"), "--log-json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines: queue.Queue[str] = queue.Queue()
    stderr: list[str] = []

    def pump() -> None:
        assert gw.stderr is not None
        for line in gw.stderr:
            stderr.append(line)
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert gw.stdout is not None
        banner = gw.stdout.readline()
        admin = int(re.search(r"admin on [\d.]+:(\d+)", banner).group(1))  # type: ignore[union-attr]
        # A malformed HTTP request: aiohttp logs it with its traceback (at ERROR).
        with socket.create_connection(("127.0.0.1", admin), timeout=T) as s:
            s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.")
        wanted = {"aiohttp.server"}
        while wanted:
            line = lines.get(timeout=T)
            assert line, f"the gateway exited; stderr:\n{''.join(stderr)}"
            try:
                wanted.discard(json.loads(line).get("logger", ""))
            except ValueError:
                break  # not JSON: reported below, with its line number
    finally:
        gw.terminate()
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()  # see the module docstring; never left behind
            gw.wait()
        ex.stop()
    reader.join(T)  # every line the process wrote, to its end
    if gw.returncode != 0 and stderr and not stderr[-1].endswith("\n"):
        stderr.pop()  # a line cut by SIGKILL is not the renderer's fault
    records = []
    for n, line in enumerate(stderr):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"stderr line {n + 1} is not JSON: {line!r}") from None
    assert all({"event", "level", "timestamp"} <= r.keys() for r in records)
    aiohttp = next(r for r in records if r.get("logger") == "aiohttp.server")
    assert aiohttp["level"] == "error" and "Traceback" in aiohttp["exception"]
    assert gw.returncode == 0, "the gateway did not stop on SIGTERM"
    assert any(r["event"] == "gateway stopped" for r in records)
