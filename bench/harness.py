"""``fengkong bench``: the end-to-end benchmark — gateway vs bare forwarder vs direct, kill
switch, capacity ramp, profile — written up as a dated report.

How it fits
-----------
Everything runs as real processes on loopback, each pinned to a core (``bench.procs``):

- the exchange simulator (``python -m simulator exchange``) in *ack-only* mode: with ``--fill``
  every order is acknowledged and filled at once at its own price (the capacity mode: no book,
  so the simulator costs as little as it can), or without it so orders rest (kill-switch test);
- in the middle, one at a time, nothing (*direct*), the bare forwarder (``bench.forwarder``),
  or the gateway (``python -m gateway serve``, journal on) — each started fresh for its
  measurement and stopped after it, so an idle one never takes market data or CPU from the
  one being measured;
- the load generator (``bench.loadgen``), a process of its own per measurement.

Phases, in order: (1) *compare*: the same load through the three paths, at a fixed rate
(open loop, default 10,000 orders/s) and at max throughput (closed loop, a window of orders in
flight), ``--repeat`` times interleaved, medians reported; with ``--tls`` a fourth path,
*gateway-tls*, is the same gateway with TLS on its client port and on its exchange link (the
simulator serving TLS for it, certificates made at the start with trustme), so TLS on and off
are compared in the same run, interleaved; (2) *kill*: rest N orders in one
account, kill it through the admin plane, time the cancels and the next order's reject;
(3) *ramp*: raise the rate from ``--peak`` by ``--ramp-factor`` until p99 passes
``--p99-limit-ms`` or anything fails (reject, lost order, lag), then bisect; the last rate that
held is the sustained capacity, reported as a multiple of the peak; (4) *profile*: sample the
gateway with py-spy (cProfile when py-spy is missing) under max load.

Every process is stopped on the way out — normal exit, error or Ctrl-C. The report
(``report.md``, ``report.json``, ``latency.png``, the process logs) goes to
``--out/<YYYYmmdd-HHMMSS>/``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from bench import benchconfig as bc
from bench.loadgen import (
    WINDOW_CLOSED,
    WINDOW_OPEN,
    InstrumentSpec,
    KillResult,
    LoadResult,
    LoadSpec,
)
from bench.procs import (
    DiskProbe,
    Proc,
    ProcError,
    Procs,
    busy_seconds,
    steal_seconds,
    wait_quiet,
)

ROOT = Path(__file__).resolve().parent.parent
SIM_READY = r"listening on [\d.]+:(\d+)"
FWD_READY = r"forwarder listening on [\d.]+:(\d+)"
GW_READY = r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)"
FIX_READY = r"FIX on [\d.]+:(\d+)"
PATHS = ("direct", "forwarder", "gateway")


# ------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """Which cores each process may run on (None: wherever the scheduler likes)."""

    name: str
    loadgen: frozenset[int] | None
    proxy: frozenset[int] | None
    sim: frozenset[int] | None

    @classmethod
    def parse(cls, text: str) -> Placement:
        """'loadgen=0,proxy=1,sim=0' (a core list may be '0+1'), or 'free' for no pinning."""
        if text == "free":
            return cls("free", None, None, None)
        cores: dict[str, frozenset[int] | None] = {"loadgen": None, "proxy": None, "sim": None}
        for part in text.split(","):
            key, _, value = part.partition("=")
            if key.strip() not in cores or not value:
                raise argparse.ArgumentTypeError(
                    f"bad placement {part!r}: expected loadgen=N,proxy=N,sim=N (or 'free')")
            cores[key.strip()] = frozenset(int(c) for c in value.split("+"))
        usable = os.sched_getaffinity(0)
        for key, value in cores.items():
            if value is not None and not value <= usable:
                raise argparse.ArgumentTypeError(
                    f"placement {text!r}: {key} asks for cores {sorted(value)}, this machine "
                    f"offers {sorted(usable)}")
        return cls(text, cores["loadgen"], cores["proxy"], cores["sim"])

    def describe(self) -> str:
        def c(v: frozenset[int] | None) -> str:
            return "any" if v is None else "+".join(map(str, sorted(v)))
        return f"loadgen on core {c(self.loadgen)}, proxy on core {c(self.proxy)}, simulator on core {c(self.sim)}"


def default_placements() -> list[str]:
    if len(os.sched_getaffinity(0)) < 2:
        return ["free"]
    return ["loadgen=0,proxy=1,sim=0", "loadgen=0,proxy=1,sim=1", "free"]


# ------------------------------------------------------------------------------- results
@dataclass
class PathRun:
    path: str
    result: LoadResult
    cpu_pct: dict[str, float]  # process -> % of one core during the measurement window
    cores: dict[str, int]  # process -> core it last ran on
    disk: dict[str, float]  # fdatasync latency of a probe on the journal's disk meanwhile


@dataclass
class Window:
    """CPU samples of the other processes when a load generator opens and closes its window."""

    procs: dict[str, Proc]
    opened: dict[str, float] = field(default_factory=dict)
    closed: dict[str, float] = field(default_factory=dict)
    t_open: float = 0.0
    t_close: float = 0.0
    cores: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    on_open: Any = None  # called (from the reader thread) when the window opens
    disk: dict[str, float] = field(default_factory=dict)  # fdatasync latency meanwhile
    busy: tuple[float, float] = (0.0, 0.0)  # machine-wide busy CPU seconds at open, close
    steal: tuple[float, float] = (0.0, 0.0)  # hypervisor steal at open, close

    def on_line(self, line: str) -> None:
        if WINDOW_OPEN in line:
            with self.lock:
                self.t_open = time.monotonic()
                self.opened = {n: p.cpu_seconds() for n, p in self.procs.items()}
                self.busy = (busy_seconds(), 0.0)
                self.steal = (steal_seconds(), 0.0)
            if self.on_open is not None:
                self.on_open()
        elif WINDOW_CLOSED in line:
            with self.lock:
                self.t_close = time.monotonic()
                self.closed = {n: p.cpu_seconds() for n, p in self.procs.items()}
                self.busy = (self.busy[0], busy_seconds())
                self.steal = (self.steal[0], steal_seconds())
                self.cores = {n: p.last_core() for n, p in self.procs.items()}

    def cpu_pct(self, loadgen_pct: float) -> dict[str, float]:
        """% of one core per process during the window, and ``other``: what processes that
        are not ours used meanwhile (the machine is shared; a high figure taints the run)."""
        span = self.t_close - self.t_open
        if span <= 0:
            return {"loadgen": loadgen_pct}
        out = {n: round(100 * (self.closed.get(n, 0.0) - self.opened.get(n, 0.0)) / span, 1)
               for n in self.procs}
        out["loadgen"] = loadgen_pct
        machine = 100 * (self.busy[1] - self.busy[0]) / span
        out["other"] = round(max(0.0, machine - sum(out.values())), 1)
        out["steal"] = round(100 * (self.steal[1] - self.steal[0]) / span, 1)
        return out


class Bench:
    """One benchmark run: owns its processes (``Procs``) and its working directory."""

    def __init__(self, args: argparse.Namespace, run_dir: Path, procs: Procs) -> None:
        self.args = args
        self.run_dir = run_dir
        self.work = run_dir / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.procs = procs
        self.universe = bc.load_bench_universe(args.gateway_config)
        self.instruments = [InstrumentSpec(i.symbol, i.tick, i.reference)
                            for i in self.universe.instruments]
        self.serial = 0
        self.journal_bytes: list[int] = []
        self.noisy: list[str] = []
        self.tls = _tls_files(self.work / "tls", args.gateway_config) if args.tls else None

    def _name(self, kind: str) -> str:
        self.serial += 1
        return f"{self.serial:03d}-{kind}"

    # ---------------------------------------------------------------------- processes
    def start_sim(self, placement: Placement, fill: bool, tls: bool = False) -> tuple[Proc, int]:
        extra = ["--ack-only"] + (["--fill"] if fill else [])
        if tls:
            assert self.tls is not None
            extra += ["--tls-cert", str(self.tls.sim_cert), "--tls-key", str(self.tls.sim_key)]
        sim = self.procs.start(self._name("sim"), ["simulator", "exchange", "--config",
                                                   str(self.args.risk_config), "--port", "0",
                                                   "--md-interval", "1", *extra],
                               _set(placement.sim), SIM_READY)
        assert sim.match is not None
        return sim, int(sim.match.group(1))

    def start_forwarder(self, placement: Placement, sim_port: int) -> tuple[Proc, int]:
        fwd = self.procs.start(self._name("forwarder"),
                               ["bench.forwarder", "--upstream", f"127.0.0.1:{sim_port}",
                                "--mode", self.args.forwarder_mode],
                               _set(placement.proxy), FWD_READY)
        assert fwd.match is not None
        return fwd, int(fwd.match.group(1))

    def start_gateway(self, placement: Placement, sim_port: int, journal: bool,
                      prefix: list[str] | None = None, config: Path | None = None,
                      fix: bool = False) -> tuple[Proc, int, int]:
        """The gateway; with ``fix`` its FIX acceptor on too, and the port returned is the
        FIX port (the load then goes through the FIX front)."""
        name = self._name("gateway-fix" if fix else "gateway")
        args = ["gateway", "serve", "--config", str(config or self.args.gateway_config), "--port", "0",
                "--admin-port", "0", "--exchange", f"127.0.0.1:{sim_port}",
                "--engine", self.args.engine, "--log-json"]
        if journal:
            args += ["--journal", str(self.work / f"{name}.journal")]
        if fix:
            args += ["--fix-port", "0"]
        gw = self.procs.start(name, (prefix or []) + args, _set(placement.proxy), GW_READY)
        fix_port = int(gw.wait_for(FIX_READY, 30).group(1)) if fix else 0
        gw.wait_for("exchange link up", 30)
        assert gw.match is not None
        return gw, fix_port or int(gw.match.group(1)), int(gw.match.group(2))

    def stop(self, proc: Proc) -> None:
        self.procs.stop(proc)
        journal = self.work / f"{proc.name}.journal"
        if journal.is_dir():  # keep the size as evidence the journal was on, not the bytes
            self.journal_bytes.append(sum(f.stat().st_size for f in journal.glob("*.journal")))
            # Deleted with the work directory at the end of the run, not now: freeing hundreds
            # of MiB (with online discard) makes the disk stall the next measurement's fsyncs.

    # ---------------------------------------------------------------------- load
    def spec(self, label: str, port: int, seat_per_session: bool, rate: float, duration: float,
             sessions: int, **kw: Any) -> LoadSpec:
        return LoadSpec(label=label, host="127.0.0.1", port=port, user=bc.USER,
                        secret=bc.SECRET, accounts=list(self.universe.accounts),
                        instruments=self.instruments, sessions=sessions,
                        seat_per_session=seat_per_session, rate=rate,
                        window=self.args.window, duration=duration,
                        warmup=self.args.warmup, **kw)

    def run_loadgen(self, spec: LoadSpec, placement: Placement, others: dict[str, Proc],
                    kill: bool = False, on_open: Any = None) -> tuple[Any, Window]:
        """Run one load generator; redo it (``--retries``) when something that is not ours
        used more than ``--max-other-pct`` of a core during its window."""
        for attempt in range(self.args.retries + 1):
            result, window = self._run_loadgen(spec, placement, others, kill, on_open)
            if kill:
                return result, window
            other = window.cpu_pct(result.loadgen_cpu_pct).get("other", 0.0)
            if other <= self.args.max_other_pct:
                return result, window
            note = (f"{spec.label}: other processes used {other:.0f} % of a core during the "
                    f"window (attempt {attempt + 1})")
            self.noisy.append(note)
            _say(note + ("; measuring again" if attempt < self.args.retries else "; keeping it"))
        return result, window

    def _run_loadgen(self, spec: LoadSpec, placement: Placement, others: dict[str, Proc],
                     kill: bool, on_open: Any) -> tuple[Any, Window]:
        name = self._name(f"loadgen-{spec.label}")
        spec_file, out_file = self.work / f"{name}.spec.json", self.work / f"{name}.out.json"
        spec_file.write_bytes(msgspec.json.encode(spec))
        if self.args.quiet_pct < 100:
            busy = wait_quiet(self.args.quiet_pct, self.args.quiet_wait)
            if busy > self.args.quiet_pct:
                self.noisy.append(f"{spec.label}: machine {busy:.0f} % busy before it started")
        window = Window(others, on_open=on_open)
        with DiskProbe(self.work) as probe:
            lg = self.procs.start(name, ["bench.loadgen", "--spec", str(spec_file), "--out",
                                         str(out_file)] + (["--kill"] if kill else []),
                                  _set(placement.loadgen), on_line=window.on_line)
            budget = spec.warmup + spec.duration + spec.drain_s + 90 + spec.kill_orders / 500
            code = lg.wait(budget)
            self.procs.stop(lg)
        window.disk = probe.summary()
        if code != 0 or not out_file.exists():
            raise ProcError(f"load generator {spec.label} failed ({code}); see {lg.log_path}:\n"
                            f"{lg.tail()}")
        result = msgspec.json.decode(out_file.read_bytes(), type=KillResult if kill else LoadResult)
        return result, window

    def measure(self, path: str, placement: Placement, sim: Proc, sim_port: int, rate: float,
                duration: float, journal: bool = True) -> PathRun:
        """One measurement of one path: start its middle process, load it, stop it."""
        sessions = self.args.sessions
        middle: Proc | None = None
        tls_sim: Proc | None = None
        tls_ca = ""
        if path == "direct":
            port, seats = sim_port, True
        elif path == "forwarder":
            middle, port = self.start_forwarder(placement, sim_port)
            seats = self.args.forwarder_mode == "pipe"
        elif path == "gateway-tls":
            # Its own simulator, serving TLS (the shared one serves the plaintext paths).
            assert self.tls is not None
            tls_sim, tls_port = self.start_sim(placement, fill=True, tls=True)
            sim = tls_sim
            middle, port, _ = self.start_gateway(placement, tls_port, journal,
                                                 config=self.tls.gateway_config)
            seats, tls_ca = False, str(self.tls.ca)
        else:
            fix = path == "gateway-fix"
            middle, port, _ = self.start_gateway(placement, sim_port, journal, fix=fix)
            seats = False
        try:
            others = {"sim": sim} | ({"proxy": middle} if middle is not None else {})
            spec = self.spec(path, port, seats, rate, duration, sessions,
                             front="fix" if path == "gateway-fix" else "native")
            spec.tls_ca = tls_ca
            result, window = self.run_loadgen(spec, placement, others)
        finally:
            if middle is not None:
                self.stop(middle)
            if tls_sim is not None:
                self.stop(tls_sim)
        return PathRun(path, result, window.cpu_pct(result.loadgen_cpu_pct), window.cores,
                       window.disk)

    def compare(self, placement: Placement, rate: float, duration: float, repeat: int,
                journal_modes: list[bool]) -> dict[str, dict[str, list[PathRun]]]:
        """Fixed rate and max throughput on every path, interleaved ``repeat`` times."""
        sim, sim_port = self.start_sim(placement, fill=True)
        paths = [("direct", True), ("forwarder", True)]
        # "gateway" is the first journal mode asked for; with both, journal-off is an extra row.
        paths += [("gateway" if k == 0 else "gateway-nojournal", j)
                  for k, j in enumerate(journal_modes)]
        if self.tls is not None:
            paths.append(("gateway-tls", journal_modes[0]))
        if self.args.front == "fix":  # the FIX front, on the same load, beside the native one
            paths.append(("gateway-fix", journal_modes[0]))
        runs: dict[str, dict[str, list[PathRun]]] = {"fixed": {}, "max": {}}
        try:
            for r in range(repeat):
                for mode, target in (("fixed", rate), ("max", 0.0)):
                    for path, journal in paths:
                        kind = path if path in ("gateway-tls", "gateway-fix") else \
                            "gateway" if path.startswith("gateway") else path
                        _say(f"compare [{placement.name}] {mode} {path} (round {r + 1}/{repeat})")
                        run = self.measure(kind, placement, sim, sim_port, target, duration,
                                           journal)
                        run.path = path
                        runs[mode].setdefault(path, []).append(run)
        finally:
            self.stop(sim)
        return runs

    # ---------------------------------------------------------------------- kill switch
    def kill_test(self, placement: Placement, orders: int, journal: bool) -> KillResult:
        sim, sim_port = self.start_sim(placement, fill=False)
        try:
            gw, port, admin = self.start_gateway(placement, sim_port, journal)
            try:
                spec = LoadSpec(label="kill", host="127.0.0.1", port=port, user=bc.KILL_USER,
                                secret=bc.KILL_SECRET, accounts=[self.universe.kill_account],
                                instruments=[self.instruments[0]], sessions=1, rate=0,
                                duration=0, warmup=0, kill_orders=orders,
                                kill_rate=self.args.kill_rate, admin_port=admin,
                                token=bc.RISK_TOKEN)
                _say(f"kill switch: {orders} resting orders in {self.universe.kill_account}")
                result, _ = self.run_loadgen(spec, placement, {"sim": sim, "proxy": gw}, kill=True)
            finally:
                self.stop(gw)
        finally:
            self.stop(sim)
        return result

    # ---------------------------------------------------------------------- capacity ramp
    def ramp(self, placement: Placement, journal: bool) -> list[dict[str, Any]]:
        a = self.args
        sim, sim_port = self.start_sim(placement, fill=True)
        steps: list[dict[str, Any]] = []
        try:
            gw, port, _ = self.start_gateway(placement, sim_port, journal)
            try:
                def step(rate: float) -> bool:
                    _say(f"ramp: {rate:,.0f} orders/s")
                    result, window = self.run_loadgen(
                        self.spec(f"ramp-{rate:.0f}", port, False, rate, a.ramp_duration,
                                  a.ramp_sessions), placement, {"sim": sim, "proxy": gw})
                    ok, why = judge(result, rate, a.p99_limit_ms)
                    cpu = window.cpu_pct(result.loadgen_cpu_pct)
                    steps.append({"rate": rate, "ok": ok, "why": why, "result": result,
                                  "cpu_pct": cpu, "disk": window.disk})
                    return ok

                rate, good, bad = a.peak * a.ramp_start, 0.0, 0.0
                for _ in range(a.ramp_steps):
                    if not step(rate):
                        bad = rate
                        break
                    good, rate = rate, rate * a.ramp_factor
                # Broke at the first step: walk down, so the report says what it does hold.
                rate = bad / a.ramp_factor
                for _ in range(a.ramp_steps if not good else 0):
                    if step(rate):
                        good = rate
                        break
                    bad, rate = rate, rate / a.ramp_factor
                for _ in range(a.ramp_refine if good and bad else 0):
                    mid = (good + bad) / 2
                    if step(mid):
                        good = mid
                    else:
                        bad = mid
            finally:
                self.stop(gw)
        finally:
            self.stop(sim)
        return steps

    # ---------------------------------------------------------------------- profile
    def profile(self, placement: Placement, journal: bool) -> dict[str, Any]:
        from bench import profile as prof

        a = self.args
        sim, sim_port = self.start_sim(placement, fill=True)
        out: dict[str, Any] = {}
        try:
            spy = shutil.which("py-spy") or _venv_tool("py-spy")
            prefix = None if spy else ["cProfile", "-o", str(self.work / "gateway.prof"), "-m"]
            gw, port, _ = self.start_gateway(placement, sim_port, journal, prefix)
            raw = self.work / "gateway.pyspy.txt"
            samplers: list[Proc] = []

            def start_sampler() -> None:
                # Sample only the measured window (not logons), beside the load generator so
                # py-spy steals no time from the gateway's core.
                samplers.append(self.procs.start_command(
                    "py-spy", [spy, "record", "--pid", str(gw.pid), "--rate", "250",
                               "--duration", str(int(a.profile_duration)),
                               "--format", "raw", "--output", str(raw)]
                    # --native must pause the target to unwind C stacks; otherwise never pause.
                    + (["--native"] if a.profile_native else ["--nonblocking"]),
                    _set(placement.loadgen)))

            try:
                _say(f"profile: gateway under max load with {'py-spy' if spy else 'cProfile'}")
                result, _ = self.run_loadgen(
                    self.spec("profile", port, False, 0.0, a.profile_duration, a.sessions),
                    placement, {"sim": sim, "proxy": gw}, on_open=start_sampler if spy else None)
                for sampler in samplers:
                    sampler.wait(a.profile_duration + 30)
                    self.procs.stop(sampler)
                out["throughput"] = result.throughput
            finally:
                self.stop(gw)
            if spy:
                out |= prof.summarize_pyspy(raw.read_text() if raw.exists() else "")
                out["tool"] = ("py-spy (sampling, 250 Hz, "
                               + ("native frames, pausing the gateway per sample: slower, shares "
                                  "still hold)" if a.profile_native else "non-blocking)"))
            else:
                out |= prof.summarize_cprofile(self.work / "gateway.prof")
                out["tool"] = "cProfile (deterministic; inflates call-heavy code)"
        finally:
            self.stop(sim)
        return out


def judge(result: LoadResult, rate: float, p99_limit_ms: float) -> tuple[bool, str]:
    """Did the gateway hold ``rate``? (the capacity criteria, in the report's words)"""
    if result.errors:
        return False, f"errors: {result.errors[0]}"
    if result.rejected:
        return False, f"{result.rejected} rejects {result.reject_reasons}"
    if result.lost:
        return False, f"{result.lost} orders never acknowledged"
    if result.throughput < 0.98 * rate:
        return False, f"acknowledged {result.throughput:,.0f}/s of {rate:,.0f}/s offered"
    p99_ms = result.latency_us.get("p99", 0.0) / 1000
    if p99_ms > p99_limit_ms:
        return False, f"p99 {p99_ms:.2f} ms > {p99_limit_ms} ms"
    return True, f"p99 {p99_ms:.2f} ms"


def median_run(runs: list[PathRun]) -> dict[str, Any]:
    """The median of each figure over the repeats (each figure on its own)."""
    med = statistics.median
    lat = {k: med(r.result.latency_us[k] for r in runs) for k in runs[0].result.latency_us}
    cpu_keys = {k for r in runs for k in r.cpu_pct}
    return {
        "path": runs[0].path,
        "throughput": med(r.result.throughput for r in runs),
        "offered": med(r.result.offered_rate for r in runs),
        "latency_us": lat,
        "cpu_pct": {k: med(r.cpu_pct.get(k, 0.0) for r in runs) for k in sorted(cpu_keys)},
        "cores": runs[-1].cores,
        "disk_fsync_max_ms": max((r.disk.get("max_ms", 0.0) for r in runs), default=0.0),
        "rejected": sum(r.result.rejected for r in runs),
        "lost": sum(r.result.lost for r in runs),
        "errors": [e for r in runs for e in r.result.errors][:5],
        "lag_us": runs[-1].result.lag_us,
        "histograms": [r.result.histogram for r in runs],  # the plot pools every repeat
        "repeats": len(runs),
        "all_throughput": [r.result.throughput for r in runs],
        "all_p50": [r.result.latency_us["p50"] for r in runs],
        "all_p99": [r.result.latency_us["p99"] for r in runs],
    }


def ratios(summary: dict[str, dict[str, Any]], gateway: str = "gateway") -> dict[str, Any]:
    """Gateway vs forwarder: throughput ratio, added latency over direct and its ratio."""
    d, f, g = summary["direct"], summary["forwarder"], summary[gateway]
    out: dict[str, Any] = {"throughput_ratio": _div(g["throughput"], f["throughput"])}
    # CPU per order of the middle process: its own cost, whatever else bounded the throughput
    # (at max load the forwarder is starved by the generator and simulator sharing a core).
    fc, gc = cpu_per_order_us(f), cpu_per_order_us(g)
    out |= {"forwarder_cpu_us_per_order": fc, "gateway_cpu_us_per_order": gc,
            "cpu_cost_ratio": _div(gc, fc) if fc and gc else None}
    for q in ("p50", "p99"):
        fa = f["latency_us"][q] - d["latency_us"][q]
        ga = g["latency_us"][q] - d["latency_us"][q]
        out[f"forwarder_added_{q}_us"] = fa
        out[f"gateway_added_{q}_us"] = ga
        # A forwarder that adds nothing measurable leaves no ratio to speak of.
        out[f"added_{q}_ratio"] = _div(ga, fa) if fa > 0 else None
    return out


def tls_cost(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """TLS on vs off, same run and load: the gateway's CPU per order and its added latency
    (over direct) with TLS on its client port and exchange link, against the plain gateway."""
    d, plain, tls = summary["direct"], summary["gateway"], summary["gateway-tls"]
    pc, tc = cpu_per_order_us(plain), cpu_per_order_us(tls)
    out: dict[str, Any] = {
        "plain_cpu_us_per_order": pc, "tls_cpu_us_per_order": tc,
        "tls_cpu_us_extra": round(tc - pc, 1) if pc is not None and tc is not None else None,
        "tls_cpu_ratio": _div(tc, pc) if pc and tc else None,
        "throughput_ratio": _div(tls["throughput"], plain["throughput"])}
    for q in ("p50", "p99"):
        pa = plain["latency_us"][q] - d["latency_us"][q]
        ta = tls["latency_us"][q] - d["latency_us"][q]
        out[f"plain_added_{q}_us"] = pa
        out[f"tls_added_{q}_us"] = ta
        out[f"tls_extra_{q}_us"] = ta - pa
    return out


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    sim_cert: Path
    sim_key: Path
    gateway_config: Path


def _tls_files(directory: Path, gateway_config: Path) -> TlsFiles:
    """Certificates for ``--tls`` (a throwaway CA; trustme, from the test extra) and the bench
    gateway config with TLS on its client port and exchange link."""
    try:
        import trustme
    except ModuleNotFoundError:
        raise ProcError("--tls makes its certificates with trustme (the test extra): "
                        "pip install -r requirements/test.lock") from None
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="fengkong bench")
    files = {}
    for name in ("gateway", "sim"):
        cert = ca.issue_cert("127.0.0.1", "localhost")
        files[name] = (directory / f"{name}.pem", directory / f"{name}.key")
        files[name][0].write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
        files[name][1].write_bytes(cert.private_key_pem.bytes())
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.cert_pem.bytes())
    # The bench config as it is, its risk file made absolute, the TLS tables appended.
    text = gateway_config.read_text()
    risk = msgspec.toml.decode(text.encode()).get("risk_config", "")
    if risk:
        text = text.replace(f'risk_config = "{risk}"',
                            f'risk_config = "{(gateway_config.parent / risk).resolve()}"')
    cert, key = files["gateway"]
    config = directory / "gateway-tls.toml"
    config.write_text(text + f'\n[gateway.tls]\ncert = "{cert}"\nkey = "{key}"\n'
                             f'\n[exchange.tls]\nca = "{ca_path}"\n')
    return TlsFiles(ca_path, files["sim"][0], files["sim"][1], config)


def fix_ratios(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The FIX front against the native one, same load, same run: CPU per order in the gateway
    process and latency added over the direct path."""
    d, n, x = summary["direct"], summary["gateway"], summary["gateway-fix"]
    nc, xc = cpu_per_order_us(n), cpu_per_order_us(x)
    out: dict[str, Any] = {"native_cpu_us_per_order": nc, "fix_cpu_us_per_order": xc,
                           "cpu_ratio": _div(xc, nc) if nc and xc else None,
                           "throughput_ratio": _div(x["throughput"], n["throughput"])}
    for q in ("p50", "p99"):
        na = n["latency_us"][q] - d["latency_us"][q]
        xa = x["latency_us"][q] - d["latency_us"][q]
        out[f"native_added_{q}_us"], out[f"fix_added_{q}_us"] = na, xa
        out[f"fix_extra_{q}_us"] = xa - na
    return out


def cpu_per_order_us(s: dict[str, Any]) -> float | None:
    pct = s["cpu_pct"].get("proxy", 0.0)
    return round(pct / 100 * 1e6 / s["throughput"], 1) if pct and s["throughput"] else None


def _div(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _set(cores: frozenset[int] | None) -> set[int] | None:
    return set(cores) if cores is not None else None


def _venv_tool(name: str) -> str | None:
    tool = Path(sys.executable).parent / name
    return str(tool) if tool.exists() else None


def _say(text: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {text}", flush=True)


# ------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fengkong bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--engine", choices=("cython", "reference"), default="cython")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "reports",
                   help="reports go to OUT/<date-time>/")
    p.add_argument("--gateway-config", type=Path, default=bc.GATEWAY_TOML)
    p.add_argument("--risk-config", type=Path, default=bc.RISK_TOML)
    p.add_argument("--phases", default="compare,kill,ramp,profile",
                   help="comma-separated subset of compare,kill,ramp,profile")
    g = p.add_argument_group("load")
    g.add_argument("--rate", type=float, default=10_000, help="fixed rate for the comparison, orders/s")
    g.add_argument("--sessions", type=int, default=1,
                   help="client sessions in the comparison (1 keeps the paths symmetric: the "
                        "simulator sends market data to every seat)")
    g.add_argument("--window", type=int, default=512, help="closed loop: orders in flight per session")
    g.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    g.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    g.add_argument("--repeat", type=int, default=1, help="interleaved repeats; medians reported")
    g.add_argument("--placement", type=Placement.parse, action="append",
                   help="loadgen=N,proxy=N,sim=N or 'free'; repeat to compare placements "
                        f"(default: try {' ; '.join(default_placements())})")
    g.add_argument("--forwarder-mode", choices=("pipe", "mux"), default="pipe")
    g.add_argument("--quiet-pct", type=float, default=10.0,
                   help="before each measurement wait until the machine is at most this busy "
                        "(%% of all cores; 100 = never wait)")
    g.add_argument("--quiet-wait", type=float, default=60.0, help="... for at most this long (s)")
    g.add_argument("--max-other-pct", type=float, default=20.0,
                   help="redo a measurement when processes not ours used more than this "
                        "(%% of one core) during its window")
    g.add_argument("--retries", type=int, default=2, help="... at most this many times")
    g.add_argument("--tls", action="store_true",
                   help="also measure the gateway with TLS on its client port and exchange "
                        "link (path gateway-tls), against the plain gateway in the same run")
    g.add_argument("--journal", choices=("on", "off", "both"), default="on",
                   help="gateway journal (a fresh directory per gateway); both adds a row")
    g.add_argument("--front", choices=("native", "fix"), default="native",
                   help="fix: measure the FIX 4.4 front too (row gateway-fix), on the same load "
                        "in the same run, and report it against the native front")
    g = p.add_argument_group("kill switch")
    g.add_argument("--kill-orders", type=int, default=10_000)
    g.add_argument("--kill-rate", type=float, default=3_000, help="orders/s while resting them")
    g = p.add_argument_group("capacity ramp")
    g.add_argument("--peak", type=float, default=5_000, help="historical peak, orders/s")
    g.add_argument("--ramp-start", type=float, default=1.0, help="first step, as a multiple of --peak")
    g.add_argument("--ramp-factor", type=float, default=1.25)
    g.add_argument("--ramp-steps", type=int, default=14)
    g.add_argument("--ramp-refine", type=int, default=2, help="bisection steps after the first failure")
    g.add_argument("--ramp-duration", type=float, default=5.0)
    g.add_argument("--ramp-sessions", type=int, default=4)
    g.add_argument("--p99-limit-ms", type=float, default=5.0)
    g = p.add_argument_group("profile")
    g.add_argument("--profile-duration", type=float, default=8.0)
    g.add_argument("--profile-native", action="store_true",
                   help="py-spy --native: C frames too (Cython engine, msgspec), so the engine's "
                        "share is its own instead of its caller's")
    return p


def main(argv: list[str] | None = None) -> int:
    from bench import report

    if argv and argv[0] == "--":  # `fengkong bench -- ARGS` (how its parser passes options on)
        argv = argv[1:]
    args = build_parser().parse_args(argv)
    phases = {s.strip() for s in args.phases.split(",") if s.strip()}
    unknown = phases - {"compare", "kill", "ramp", "profile"}
    if unknown:
        print(f"fengkong bench: unknown phase(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if args.engine == "cython" and not list((ROOT / "cext").glob("engine*.so")):
        print("fengkong bench: the Cython engine is not built (cext/engine*.so); run "
              "`make build` or pass --engine reference", file=sys.stderr)
        return 2
    placements = args.placement or [Placement.parse(t) for t in default_placements()]
    started = datetime.now()
    run_dir = args.out / started.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    journal_modes = {"on": [True], "off": [False], "both": [True, False]}[args.journal]
    journal = journal_modes[0]
    data: dict[str, Any] = {"started": started.isoformat(timespec="seconds"),
                            "argv": ["fengkong", "bench", *(argv if argv is not None else sys.argv[1:])],
                            "args": {k: (str(v) if isinstance(v, Path) else v)
                                     for k, v in vars(args).items() if k != "placement"},
                            "machine": report.machine(), "engine": args.engine,
                            "journal": args.journal, "sim_mode": {}}
    _say(f"run directory {run_dir}")
    logdir = run_dir / "logs"
    logdir.mkdir(exist_ok=True)
    try:
        with Procs(logdir) as procs:
            bench = Bench(args, run_dir, procs)
            best = placements[0]
            if "compare" in phases:
                trials = []
                for pl in placements:
                    runs = bench.compare(pl, args.rate, args.duration, args.repeat, journal_modes)
                    summary = {mode: {path: median_run(rs) for path, rs in by_path.items()}
                               for mode, by_path in runs.items()}
                    trial = {"placement": pl.name, "describe": pl.describe(), "summary": summary,
                             "ratios": {mode: ratios(summary[mode]) for mode in summary}}
                    if len(journal_modes) > 1:
                        trial["ratios_nojournal"] = {mode: ratios(summary[mode], "gateway-nojournal")
                                                     for mode in summary}
                    if args.tls:
                        trial["tls"] = {mode: tls_cost(summary[mode]) for mode in summary}
                    if args.front == "fix":
                        trial["ratios_fix"] = {mode: fix_ratios(summary[mode]) for mode in summary}
                    trials.append(trial)
                # Best placement: the one where the gateway sustains the most.
                best_trial = max(trials, key=lambda t: t["summary"]["max"]["gateway"]["throughput"]
                                 if "gateway" in t["summary"]["max"] else 0.0)
                best = next(p for p in placements if p.name == best_trial["placement"])
                data["compare"] = {"trials": trials, "best": best.name}
                data["sim_mode"]["compare"] = "ack-only, fill on ack (--ack-only --fill)"
            data["placement"] = {"name": best.name, "describe": best.describe()}
            if "kill" in phases:
                data["kill"] = msgspec.to_builtins(bench.kill_test(best, args.kill_orders, journal))
                data["sim_mode"]["kill"] = "ack-only, orders rest (--ack-only)"
            if "ramp" in phases:
                # The first journal mode is the capacity of record; with both, journal off follows.
                for k, j in enumerate(journal_modes):
                    steps = bench.ramp(best, j)
                    data["ramp" if k == 0 else "ramp_nojournal"] = report.ramp_summary(steps, args.peak)
                data["sim_mode"]["ramp"] = "ack-only, fill on ack (--ack-only --fill)"
            if "profile" in phases:
                data["profile"] = bench.profile(best, journal)
            data["journal_bytes"] = bench.journal_bytes
            data["noisy"] = bench.noisy
    except (ProcError, OSError, ValueError) as err:
        data["error"] = str(err)
        print(f"fengkong bench: {err}", file=sys.stderr)
    finally:
        data["finished"] = datetime.now().isoformat(timespec="seconds")
        paths = report.write(run_dir, data)
        _say("report: " + ", ".join(str(p) for p in paths))
        shutil.rmtree(run_dir / "work", ignore_errors=True)
    return 1 if "error" in data else 0


if __name__ == "__main__":
    raise SystemExit(main())
