"""The command line's sharp edges: each mistake an operator makes gets one clear line on stderr
and a non-zero exit, never a traceback (issue 10, item 11)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.journal import FsyncPolicy, Inbound, Journal
from gateway.protocol import NewOrder
from tests.conftest import EXAMPLES, ROOT, start_gateway

T0 = 1_748_914_200 * 10**9
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENGINE = ("--engine", os.environ.get("FENGKONG_TEST_ENGINE", "cython"))  # as start_gateway


def fengkong(*args: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=timeout, **kw)


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    # Structured log lines (JSON when stderr is not a terminal) may come before it.
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_version_comes_from_the_distribution_metadata() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = fengkong("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"fengkong {declared}"


def test_unknown_log_level_is_refused_by_name() -> None:
    out = fengkong("serve", "--config", str(EXAMPLES / "gateway.toml"), "--log-level", "verbose")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "invalid choice: 'verbose'" in out.stderr and "debug" in out.stderr


def test_bench_without_the_bench_extra_says_how_to_install_it() -> None:
    # A runtime-only install has no ``bench`` package: the import of it fails.
    code = ("import sys; sys.modules['bench'] = None; from gateway.cli import main; "
            "raise SystemExit(main(['bench', '--help']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 2
    line = one_clear_line(out.stderr)
    assert "bench extra" in line and "make bench" in line and "test.lock" in line


def test_journal_dump_into_head_exits_quietly(tmp_path: Path) -> None:
    with Journal.open(tmp_path, fsync=FsyncPolicy.never()) as j:
        for i in range(5000):  # far more text than a pipe buffer holds
            j.append(Inbound(T0 + i, 7, NewOrder(f"c{i}", "A1", "rb2510", 1, 1, 1, 1, 1,
                                                 3500.0, 1)))
    dump = subprocess.Popen([sys.executable, "-m", "gateway", "journal", "dump", str(tmp_path)],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    head = subprocess.run(["head", "-n", "2"], stdin=dump.stdout, capture_output=True, text=True,
                          timeout=60)
    assert dump.stdout is not None
    dump.stdout.close()
    _, err = dump.communicate(timeout=60)
    assert len(head.stdout.splitlines()) == 2
    assert err == ""  # no traceback, no "Exception ignored ... BrokenPipeError"
    assert dump.returncode == 141  # 128 + SIGPIPE, as a shell reports for cat


def _listening() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("which", ["--port", "--admin-port"])
def test_port_in_use_is_one_line(exchange_proc, which: str) -> None:
    with _listening() as busy:
        port = str(busy.getsockname()[1])
        ports = {"--port": "0", "--admin-port": "0", which: port}
        out = fengkong("serve", "--config", str(EXAMPLES / "gateway.toml"),
                       "--port", ports["--port"], "--admin-port", ports["--admin-port"],
                       "--exchange", f"127.0.0.1:{exchange_proc.match.group(1)}", *ENGINE)
    assert out.returncode == 1
    line = one_clear_line(out.stderr)
    name = "client" if which == "--port" else "admin"
    assert line.startswith(f"fengkong serve: the {name} port 127.0.0.1:{port} is already in use")
    assert which in line  # and says how to choose another


def test_journal_directory_locked_is_one_line(exchange_proc, tmp_path: Path) -> None:
    ex = exchange_proc.match.group(1)
    first = start_gateway(int(ex), "--journal", str(tmp_path))
    try:
        out = fengkong("serve", "--config", str(EXAMPLES / "gateway.toml"), "--port", "0",
                       "--admin-port", "0", "--exchange", f"127.0.0.1:{ex}",
                       "--journal", str(tmp_path), *ENGINE)
    finally:
        first.stop()
    assert out.returncode == 1
    line = one_clear_line(out.stderr)
    assert "already open by another writer" in line and str(tmp_path) in line
