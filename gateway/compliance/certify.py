"""``fengkong certify``: test a client's trading system before it may connect (art. 16-17).

    fengkong certify run --client "python my_algo.py --cert" --name "MyAlgo 2.1" --out DIR
    fengkong certify verify DIR/cert-<run>.jsonl --journal DIR/journal
    fengkong certify cases

Theory of operation
-------------------
A run starts, on loopback, the exchange simulator and a gateway in *certification mode*: the
certification configuration (``examples/certify/``: instruments and accounts made to reach
every condition in a few messages) and a journal of its own (``OUT/journal``), which holds the
records for twenty years. Between them the suite puts a link relay (so it can cut the exchange
link), and in front of the gateway a recording proxy that the client system connects to
(``gateway.compliance.certify_wire``)::

    client system ──native protocol──▶ recording proxy ──▶ gateway ──▶ link relay ──▶ simulator
          ▲ stdin: instructions                               ▲ admin HTTP (kill, reset)
          └──────────── suite ────────────────────────────────┘ counterparty session (fills)

The client system is any process. It is started with ``--client CMD`` and finds the gateway and
its login in its environment (``FENGKONG_CERT_HOST``, ``_PORT``, ``_USER``, ``_SECRET``,
``_ACCOUNTS``). It reads the suite's *instructions* — what its trader or strategy would
otherwise decide — as JSON lines on stdin (``{"id": n, "do": "order", ...}``; see
``examples/certify/sample_client.py`` and the README) and answers each with one JSON line
(``{"id": n, ...}``) on stdout once it has done it. The suite judges only what happens on the
wire (``gateway.compliance.certify_cases``): whether the client resends a refused order, backs
off at a warning, stops when killed or when the link is down, reconnects and reconciles, books a
partial fill, cancels what it was asked to.

The result is a record per case with its evidence (every message exchanged during the case),
between a run record and a summary, chained by hashes and anchored in the certification
journal (``gateway.compliance.certify_records``). ``certify verify`` proves a record file
untouched. Exit codes of ``run``: 0 every case passed, 1 some failed or could not be provoked,
2 the run could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from checks.enums import Side
from gateway.admin_client import AdminCallError, admin_call
from gateway.compliance import certify_records as records
from gateway.compliance.certify_cases import CASE_NAMES, CASES, Case, NotProvoked
from gateway.compliance.certify_wire import Relay, Wire, WireEvent
from gateway.journal import JournalError
from gateway.protocol import Logon

ROOT = Path(__file__).resolve().parent.parent.parent
CERT_CONFIG = ROOT / "examples" / "certify" / "gateway.toml"
CERT_RISK = ROOT / "examples" / "certify" / "risk.toml"
USER, SECRET, ACCOUNTS = "cert", "cert-secret", "CERT1,CERT2"
CP_USER, CP_SECRET, CP_ACCOUNT = "certcp", "cp-secret", "CP1"
TOKEN = "cert-risk-token"
ASK_TIMEOUT = 10.0
EVIDENCE_MAX = 400  # messages kept per case (a runaway client cannot make a record huge)


class CertifyError(Exception):
    """The run could not be made (a process did not start, the client never got ready)."""


class _Child:
    """A child process whose output lines we watch (the simulator, the gateway)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[str] = []
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))
            del self.lines[:-400]
            self.changed.set()
        self.changed.set()

    async def wait_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        rx = re.compile(pattern)
        seen = 0

        async def scan() -> re.Match[str]:
            nonlocal seen
            while True:
                for line in self.lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                if self.proc.returncode is not None or self.task.done():
                    raise CertifyError(f"{self.name} exited before {pattern!r}: "
                                       f"{''.join(self.lines[-10:])}")
                self.changed.clear()
                await self.changed.wait()
        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise CertifyError(f"{self.name}: no {pattern!r} in {timeout:.0f} s: "
                               f"{''.join(self.lines[-10:])}") from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.task.cancel()


async def _spawn(name: str, *args: str) -> _Child:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(*args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    return _Child(proc, name)


class Suite:
    """One certification run: the processes, the wire, the client and the cases."""

    def __init__(self, client_cmd: str, out: Path, name: str = "",
                 engine: str = "cython") -> None:
        self.client_cmd = client_cmd
        self.name = name or client_cmd
        self.out = out
        self.engine = engine
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.journal = out / "journal"
        self.wire = Wire()
        self.children: list[_Child] = []
        self.client: asyncio.subprocess.Process | None = None
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.client_said: list[str] = []
        self.ready = asyncio.Event()
        self.next_id = 0
        self.admin_base = ""
        self.gateway_port = 0
        self.proxy: Relay | None = None
        self.link: Relay | None = None
        self.link_port = 0
        self.counterparty: Any = None

    # -- the parts ------------------------------------------------------------------------------
    async def start(self) -> None:
        py = sys.executable
        ex = await _spawn("simulator", py, "-m", "simulator", "exchange", "--config",
                          str(CERT_RISK), "--port", "0")
        self.children.append(ex)
        ex_port = int((await ex.wait_line(r"listening on [\d.]+:(\d+)")).group(1))
        self.link = Relay(("127.0.0.1", ex_port))
        self.link_port = await self.link.start()
        gw = await _spawn("gateway", py, "-m", "gateway", "serve", "--config", str(CERT_CONFIG),
                          "--port", "0", "--admin-port", "0", "--exchange",
                          f"127.0.0.1:{self.link_port}", "--journal", str(self.journal),
                          "--engine", self.engine)
        self.children.append(gw)
        m = await gw.wait_line(r"clients on [\d.]+:(\d+), admin on [\d.]+:(\d+)")
        self.gateway_port, admin_port = int(m.group(1)), int(m.group(2))
        self.admin_base = f"http://127.0.0.1:{admin_port}"
        await gw.wait_line("exchange link up")
        self.proxy = Relay(("127.0.0.1", self.gateway_port), self.wire)
        proxy_port = await self.proxy.start()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
               "FENGKONG_CERT_HOST": "127.0.0.1", "FENGKONG_CERT_PORT": str(proxy_port),
               "FENGKONG_CERT_USER": USER, "FENGKONG_CERT_SECRET": SECRET,
               "FENGKONG_CERT_ACCOUNTS": ACCOUNTS}
        try:
            with open(self.out / f"client-{self.run_id}.log", "wb") as log:  # the client's stderr
                self.client = await asyncio.create_subprocess_exec(
                    *shlex.split(self.client_cmd), cwd=ROOT, env=env,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log)
        except OSError as err:
            raise CertifyError(f"cannot start the client system {self.client_cmd!r}: "
                               f"{err.strerror}") from None
        asyncio.get_running_loop().create_task(self._read_client())
        try:
            await asyncio.wait_for(self.ready.wait(), 30)
        except TimeoutError:
            raise CertifyError("the client system did not say it was ready "
                               "({\"ready\": true} on stdout) within 30 s") from None

    async def _read_client(self) -> None:
        assert self.client is not None and self.client.stdout is not None
        while True:
            try:
                raw = await self.client.stdout.readline()
            except ValueError:  # a line past the stream's limit (64 KiB): not an answer
                self.client_said.append("(a line longer than 64 KiB was dropped)")
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").strip()
            try:
                msg = json.loads(line)
            except ValueError:
                msg = None
            if not isinstance(msg, dict):
                self.client_said.append(line[:500])
                del self.client_said[:-200]  # bounded, whatever the client prints
                continue
            if msg.get("ready"):
                self.ready.set()
            fut = self.replies.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in self.replies.values():
            if not fut.done():
                fut.set_exception(CertifyError("the client system exited"))

    async def stop(self) -> None:
        if self.counterparty is not None:
            self.counterparty.abort()
        if self.client is not None and self.client.returncode is None:
            self.client.kill()
            await self.client.wait()
        for relay in (self.proxy, self.link):
            if relay is not None:
                await relay.close()
        for child in reversed(self.children):
            await child.stop()

    # -- what the cases use ------------------------------------------------------------------
    def mark(self) -> int:
        return len(self.wire.events)

    async def ask(self, do: str, timeout: float = ASK_TIMEOUT, **params: Any) -> dict[str, Any]:
        """Give the client system one instruction and wait for its answer."""
        assert self.client is not None and self.client.stdin is not None
        self.next_id += 1
        n = self.next_id
        instruction = {"id": n, "do": do, **params}
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[n] = fut
        self.wire.note(f"instruction {json.dumps(instruction, sort_keys=True)}")
        self.client.stdin.write(json.dumps(instruction).encode() + b"\n")
        try:
            await self.client.stdin.drain()
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise CertifyError(f"the client did not answer instruction {n} ({do}) in "
                               f"{timeout:.0f} s") from None
        except (BrokenPipeError, ConnectionResetError):
            raise CertifyError("the client system exited") from None
        self.wire.note(f"client answered {json.dumps(reply, sort_keys=True)}")
        return reply

    async def admin(self, path: str, body: dict[str, Any]) -> Any:
        self.wire.note(f"suite: POST {path} {json.dumps(body, sort_keys=True)}")
        return await asyncio.to_thread(admin_call, self.admin_base, TOKEN, "POST", path, body)

    def cut_client(self) -> int:
        assert self.proxy is not None
        self.wire.note("suite: the client's connection is cut")
        return self.proxy.cut()

    def cut_link(self) -> None:
        assert self.link is not None
        self.wire.note("suite: the exchange link is cut")
        loop = asyncio.get_running_loop()
        loop.create_task(self.link.stop_listening())
        self.link.cut()

    async def restore_link(self) -> None:
        assert self.link is not None
        self.wire.note("suite: the exchange link may connect again")
        await self.link.start(self.link_port)

    async def counterparty_sell(self, symbol: str, price: float, qty: int) -> None:
        from simulator.client import Client

        if self.counterparty is None:
            self.counterparty = await Client.connect("127.0.0.1", self.gateway_port, CP_USER,
                                                     CP_SECRET, accounts=[CP_ACCOUNT])
        self.wire.note(f"suite: counterparty sells {qty} {symbol} at {price}")
        h = self.counterparty.send_order_nowait(account=CP_ACCOUNT, symbol=symbol,
                                                side=Side.SELL, qty=qty, price=price)
        await h.wait_done(timeout=10)

    # -- the run ----------------------------------------------------------------------------
    async def run_case(self, case: Case) -> dict[str, Any]:
        mark = self.mark()
        started = time.time_ns()
        try:
            findings = await case.run(self)
            result = "pass" if not findings else "fail"
        except NotProvoked as err:
            findings, result = [f"not provoked: {err}"], "error"
        except (CertifyError, TimeoutError) as err:
            findings, result = [str(err) or "timed out"], "fail"
        except (AdminCallError, OSError) as err:  # the suite could not act: proves nothing
            findings, result = [f"the suite could not provoke the condition: {err}"], "error"
        events = self.wire.since(mark)
        return {"kind": "case", "run": self.run_id, "case": case.name, "title": case.title,
                "condition": case.condition, "expected": case.expected, "result": result,
                "findings": findings, "started_ns": started, "ended_ns": time.time_ns(),
                "evidence": [_evidence(e) for e in events[:EVIDENCE_MAX]],
                "evidence_dropped": max(0, len(events) - EVIDENCE_MAX)}

    async def run(self, cases: tuple[Case, ...] = CASES) -> list[dict[str, Any]]:
        from gateway.cli import version

        bodies: list[dict[str, Any]] = [{
            "kind": "run", "run": self.run_id, "client": self.name, "command": self.client_cmd,
            "started_ns": time.time_ns(), "fengkong": version(),
            "config": str(CERT_CONFIG.relative_to(ROOT)),
            "cases": [c.name for c in cases]}]
        try:
            await self.start()
            for case in cases:
                bodies.append(await self.run_case(case))
        finally:
            await self.stop()
        failed = [b["case"] for b in bodies[1:] if b["result"] != "pass"]
        bodies.append({"kind": "summary", "run": self.run_id, "passed": len(cases) - len(failed),
                       "failed": failed, "records": len(bodies) + 1,
                       "client_output": self.client_said[-50:]})
        return bodies


def _evidence(e: WireEvent) -> dict[str, Any]:
    if isinstance(e.msg, str):
        return {"t_ns": e.t_ns, "dir": e.dir, "note": e.msg}
    m = e.msg
    if type(m) is Logon:
        m = msgspec.structs.replace(m, secret="***")  # a secret is never recorded
    msg = msgspec.to_builtins(msgspec.structs.asdict(m))
    return {"t_ns": e.t_ns, "dir": e.dir, "conn": e.conn, "type": type(e.msg).__name__,
            "msg": msg}


async def certify(client_cmd: str, out: Path, name: str = "", cases: tuple[Case, ...] = CASES,
                  engine: str = "cython") -> tuple[Path, list[dict[str, Any]]]:
    """Run the suite against ``client_cmd``; write and anchor the records. Returns the record
    file and the record bodies."""
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(client_cmd, out, name, engine)
    bodies = await suite.run(cases)
    lines = records.chain(bodies)
    path = out / f"cert-{suite.run_id}.jsonl"
    path.write_bytes(b"".join(lines))
    records.anchor(suite.journal, suite.run_id, lines, path.name)
    return path, bodies


# ----------------------------------------------------------------------------- CLI
def _print_results(bodies: list[dict[str, Any]], out: Any) -> None:
    for b in bodies:
        if b["kind"] == "case":
            print(f"{b['result'].upper():5}  {b['case']:24} {b['title']}", file=out)
            for f in b["findings"]:
                print(f"       - {f}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fengkong certify",
                                     description="Client system certification (art. 16-17).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the suite against a client system")
    p.add_argument("--client", required=True, help="the command that starts the client system")
    p.add_argument("--name", default="", help="the system's name and version, for the record")
    p.add_argument("--out", default="certification", help="records and journal go here")
    p.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASE_NAMES)}")
    p.add_argument("--engine", default="cython", choices=("cython", "reference"))
    p = sub.add_parser("verify", help="prove a record file untouched (and anchored)")
    p.add_argument("file")
    p.add_argument("--journal", help="the certification journal holding the anchor")
    sub.add_parser("cases", help="list the cases")
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    if args.command == "cases":
        for c in CASES:
            print(f"{c.name:24} {c.condition} -> {c.expected}", file=out)
        return 0
    if args.command == "verify":
        try:
            v = records.verify(args.file, args.journal)
        except (JournalError, OSError) as e:
            print(f"fengkong certify: {e}", file=err)
            return 2
        if v.ok:
            anchored = (f"; anchored in {args.journal}" if v.anchored
                        else "; not checked against its anchor (pass --journal)")
            print(f"intact: {v.records} records of run {v.run}, head {v.head}{anchored}", file=out)
            return 0
        print(f"TAMPERED or incomplete: {args.file}", file=out)
        for problem in v.problems:
            print(f"  - {problem}", file=out)
        return 1
    chosen = CASES
    if args.cases:
        names = [n.strip() for n in args.cases.split(",") if n.strip()]
        unknown = [n for n in names if n not in CASE_NAMES]
        if unknown:
            print(f"fengkong certify: unknown case(s) {', '.join(unknown)}; the cases are "
                  f"{', '.join(CASE_NAMES)}", file=err)
            return 2
        chosen = tuple(c for c in CASES if c.name in names)
    try:
        path, bodies = asyncio.run(certify(args.client, Path(args.out), args.name, chosen,
                                           args.engine))
    except (CertifyError, OSError, JournalError) as e:
        print(f"fengkong certify: {e}", file=err)
        return 2
    except KeyboardInterrupt:  # the processes were stopped on the way out; nothing anchored
        print("fengkong certify: interrupted; no record written", file=err)
        return 130
    _print_results(bodies, out)
    summary = bodies[-1]
    print(f"{summary['passed']} of {len(chosen)} cases passed; records in {path} (anchored in "
          f"{Path(args.out) / 'journal'})", file=out)
    return 0 if not summary["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
