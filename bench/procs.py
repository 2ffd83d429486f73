"""Processes for the benchmark: started pinned to a core, watched, measured, always stopped.

``Proc`` starts a child (``python -m ...``) with its stdout and stderr going to a log file,
waits for the line that says it is ready (the port it bound), pins it to a CPU set with
``os.sched_setaffinity`` right after it starts (before it has any thread of its own, so every
thread it makes later inherits the set), and can report the CPU time it used and the core it
last ran on from ``/proc/PID/stat``.

``Procs`` owns every ``Proc`` of a run: leaving its ``with`` block — normally, on an error, or
on Ctrl-C — sends SIGTERM to each child still running and SIGKILL to any that has not exited a
few seconds later. Only processes it started are ever signalled, and only by their pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


class ProcError(RuntimeError):
    pass


def busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy (``/proc/stat``), all processes.

    Compared with the CPU time of our own processes over the same interval it shows how much
    of the machine something else was using: these are shared VMs.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system = (int(x) for x in fields[:3])
    # irq and softirq time is left out: loopback TCP is processed in softirq, so our own
    # traffic would show up there and be taken for someone else's.
    return (user + nice + system) / _TICKS


class DiskProbe:
    """Times a small write + ``fdatasync`` every ``interval`` s in ``directory`` (the journal's
    filesystem) from a thread, so a report can show what the disk was doing meanwhile: the
    gateway calls ``fdatasync`` on its event loop, so a slow disk is a slow gateway."""

    def __init__(self, directory: Path, interval: float = 0.02) -> None:
        self.path = directory / f".disk-probe-{os.getpid()}"
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="disk-probe", daemon=True)

    def __enter__(self) -> DiskProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            block = b"\0" * 4096
            while not self._stop.wait(self.interval):
                os.write(fd, block)
                t0 = time.perf_counter()
                os.fdatasync(fd)
                self.samples.append((time.perf_counter() - t0) * 1000)
        finally:
            os.close(fd)

    def summary(self) -> dict[str, float]:
        s = sorted(self.samples)
        if not s:
            return {}
        return {"n": len(s), "p50_ms": round(s[len(s) // 2], 3),
                "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
                "max_ms": round(s[-1], 3)}


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while ours wanted to run (all cores)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    return int(fields[7]) / _TICKS if len(fields) > 7 else 0.0


def wait_quiet(threshold_pct: float = 10.0, timeout: float = 60.0, span: float = 1.0) -> float:
    """Wait until the machine is nearly idle (we start measurements only then); returns the
    last busy percentage seen (of the whole machine) — still high if ``timeout`` ran out."""
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + timeout
    while True:
        b0, t0 = busy_seconds(), time.monotonic()
        time.sleep(span)
        pct = 100 * (busy_seconds() - b0) / ((time.monotonic() - t0) * cores)
        if pct <= threshold_pct or time.monotonic() >= deadline:
            return round(pct, 1)


class Proc:
    def __init__(self, name: str, args: list[str], log: Path, cores: set[int] | None,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log
        self.cores = cores
        self._log = open(log, "w", buffering=1)  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env)
        # Called from the reader thread with each output line (e.g. to sample other processes
        # the moment a load generator opens its measurement window).
        self.on_line = on_line
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, name=f"pump-{name}", daemon=True).start()
        self.match: re.Match[str] | None = None

    def pin(self) -> None:
        if self.cores:
            try:
                os.sched_setaffinity(self.p.pid, self.cores)
            except OSError as err:
                raise ProcError(f"{self.name}: cannot pin to cores {sorted(self.cores)}: {err}") from None

    @property
    def pid(self) -> int:
        return self.p.pid

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self._log.write(line)
            if self.on_line is not None:
                self.on_line(line)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first output line matching ``pattern`` (waits for it, never sleeps blindly)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self._eof:
                    raise ProcError(f"{self.name} exited ({self.p.wait()}) before printing "
                                    f"{pattern!r}; see {self.log_path}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ProcError(f"{self.name}: no line matching {pattern!r} within {timeout} s;"
                                    f" see {self.log_path}:\n{self.tail()}")
                self._cond.wait(left)

    def tail(self, n: int = 15) -> str:
        return "".join(self.lines[-n:])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def last_core(self) -> int:
        """The CPU the process last ran on (``processor`` in /proc/PID/stat)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return -1
        return int(fields[36])

    def affinity(self) -> list[int]:
        try:
            return sorted(os.sched_getaffinity(self.pid))
        except OSError:
            return []

    def wait(self, timeout: float) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ProcError(f"{self.name} did not finish within {timeout:.0f} s; stopped it. "
                            f"See {self.log_path}:\n{self.tail()}") from None

    def stop(self, timeout: float = 5.0) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
        code = self.p.wait()
        with self._cond:
            self._cond.wait_for(lambda: self._eof, 2.0)
        self._log.close()
        return code


class Procs:
    """Every process of a run, stopped in reverse order on exit (see the module docstring)."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []

    def start(self, name: str, module_args: list[str], cores: set[int] | None,
              ready: str | None = None, timeout: float = 60.0,
              on_line: Callable[[str], None] | None = None) -> Proc:
        log = self.logdir / f"{name}.log"
        proc = Proc(name, [sys.executable, "-m", *module_args], log, cores, on_line)
        self.procs.append(proc)  # owned from here on, so an error below still stops it
        proc.pin()
        if ready:
            proc.match = proc.wait_for(ready, timeout)
        return proc

    def start_command(self, name: str, argv: list[str], cores: set[int] | None) -> Proc:
        """A non-Python helper (e.g. py-spy), owned and stopped like the others."""
        proc = Proc(name, argv, self.logdir / f"{name}.log", cores)
        self.procs.append(proc)
        proc.pin()
        return proc

    def stop(self, proc: Proc) -> int:
        code = proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)
        return code

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        while self.procs:
            self.procs.pop().stop()
