"""Operations surface of the admin port: Prometheus ``/metrics``, ``/healthz`` and ``/readyz``.

Theory of operation
-------------------
The order path must not get slower for being watched, so almost nothing here is counted per
order. ``/metrics`` is a *custom collector*: at scrape time it reads what the gateway keeps
anyway — the router's ``stats`` counters and working-order table, the engine's accounts and
kills, the sessions, the exchange link, the journal, the audit log, the Kafka outbox — and
turns it into metric families. Nothing is spent between scrapes; a scrape runs on the event
loop and holds it for its duration — measured on the project's 2-core VM under load, with the
Cython engine: ~2 ms for the sample config's 7 accounts, ~6 ms for the bench config's 257
(1.4 ms of it the pass over ``account_view``, the rest writing ~400 samples). At a 15 s scrape
interval that is one order in a few hundred thousand delayed by a few milliseconds; keep
``max_accounts`` modest and the interval sane.

Three measurements do not exist elsewhere and are taken on the path itself, each kept as a
plain bucket array (``Histogram`` below: one ``bisect`` and two integer adds; no lock, no label
lookup, no prometheus object per observation). Their cost, measured with ``timeit`` on the
project's 2-core VM (CPython 3.11):

- the order -> exchange-acknowledgement round trip (router, at each live ACK: the router's
  clock at the ack minus its clock when the order arrived — decision, journal, both sockets
  and the exchange itself): ``observe`` 0.2 µs per acknowledged order;
- the journal's append (the ``write`` of a batch) and fsync latencies (journal): two
  ``perf_counter_ns`` reads and an ``observe``, ~0.45 µs per *batch* (one per event-loop turn,
  not per order), and per fsync;
- rejects by reason code (router: one list slot per code): ~0.05 µs per reject.

Event-loop lag is measured off the path: a task sleeps ``loop_lag_interval_s`` and records
how late it woke up.

Cardinality is bounded: per-account series carry an ``account`` label for at most
``[metrics].max_accounts`` accounts — the busiest by messages today at scrape time — and the
rest are summed under ``account="other"``, so a firm of 10,000 accounts exports at most
``max_accounts + 1`` series per account metric. Reason codes are a fixed table
(``checks.reasons``); session, link and journal metrics carry no per-session labels.

Health: ``/healthz`` answers 200 while the process and its event loop run. ``/readyz`` answers
200 when the gateway would accept a new order that passes the risk checks — the exchange link
is up (which it only is after reconciliation), the journal is writable, no safe mode, nothing
halts new orders — else 503 with each reason. Both are unauthenticated (a load balancer or a
kubelet probes them) and read-only, and say nothing about accounts or users. ``/metrics`` names
accounts and their funds, so it wants an operator token unless ``[metrics] require_token`` is
false (Prometheus sends one with ``authorization: {credentials_file: ...}``).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from checks.enums import KillScope
from checks.reasons import Reason

if TYPE_CHECKING:
    from gateway.server import Gateway

log = structlog.get_logger("fengkong.metrics")

# Bucket upper bounds in nanoseconds: 10 µs .. 10 s, roughly 1-2.5-5 per decade.
LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(
    int(m * 10 ** e) for e in range(4, 10) for m in (1, 2.5, 5)) + (10 ** 10,)
LOOP_LAG_BOUNDS_NS: tuple[int, ...] = tuple(
    int(m * 10 ** e) for e in range(5, 10) for m in (1, 2.5, 5)) + (10 ** 10,)


class Histogram:
    """A fixed-bucket latency histogram for the hot path: ``observe(ns)`` is a ``bisect`` and
    two integer adds. Exported at scrape time as a Prometheus histogram in seconds."""

    __slots__ = ("bounds", "counts", "sum_ns")

    def __init__(self, bounds: tuple[int, ...] = LATENCY_BOUNDS_NS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot: above every bound (+Inf)
        self.sum_ns = 0

    def observe(self, ns: int) -> None:
        self.counts[bisect_left(self.bounds, ns)] += 1
        self.sum_ns += ns

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        buckets, total = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            total += count
            buckets.append((f"{bound / 1e9:g}", total))
        buckets.append(("+Inf", total + self.counts[-1]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum_ns / 1e9)


LINK_STATES = ("up", "down", "taken over")


class GatewayMetrics:
    """The gateway's metrics: the hot-path histograms it wires in, the loop-lag task, and the
    collector that reads everything else at scrape time."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.max_accounts = gw.cfg.metrics.max_accounts
        self.loop_lag_interval_s = gw.cfg.metrics.loop_lag_interval_s
        self.require_token = gw.cfg.metrics.require_token
        self.authorize: Callable[[web.Request, str], str] | None = None
        self.ack_rtt = Histogram()
        self.journal_append = Histogram()
        self.journal_fsync = Histogram()
        self.loop_lag = Histogram(LOOP_LAG_BOUNDS_NS)
        self.loop_lag_max_ns = 0  # the worst lag since the last scrape
        # The hooks: each a plain attribute the owner checks for None.
        gw.router.ack_latency = self.ack_rtt
        if gw.journal is not None:
            gw.journal.write_latency = self.journal_append
            gw.journal.sync_latency = self.journal_fsync
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        self._lag_task: asyncio.Task[None] | None = None

    # -- lifecycle
    def start(self) -> None:
        self._lag_task = asyncio.get_running_loop().create_task(self._measure_lag(),
                                                                name="metrics-loop-lag")

    def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()

    async def _measure_lag(self) -> None:
        interval = self.loop_lag_interval_s
        interval_ns = int(interval * 1e9)
        while True:
            start = time.perf_counter_ns()
            await asyncio.sleep(interval)
            lag = max(0, time.perf_counter_ns() - start - interval_ns)
            self.loop_lag.observe(lag)
            if lag > self.loop_lag_max_ns:
                self.loop_lag_max_ns = lag

    # -- HTTP
    def add_routes(self, app: web.Application,
                   authorize: Callable[[web.Request, str], str] | None = None) -> None:
        """Serve the three routes; ``authorize(request, role)`` checks an operator's token
        for ``/metrics`` when ``[metrics] require_token`` (the admin plane's own check)."""
        self.authorize = authorize if self.require_token else None
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    async def metrics(self, request: web.Request) -> web.Response:
        if self.authorize is not None:
            self.authorize(request, "viewer")  # 401 / 403 as for any admin read
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True, "gateway": self.gw.cfg.gateway.id,
                                  "uptime_s": round((time.time_ns() - self.gw.started_ns) / 1e9, 1)})

    async def readyz(self, request: web.Request) -> web.Response:
        reasons = self.not_ready()
        body = {"ready": not reasons, "gateway": self.gw.cfg.gateway.id,
                "exchange_link": self.gw.link.state, "reasons": reasons}
        return web.json_response(body, status=200 if not reasons else 503)

    def not_ready(self) -> list[dict[str, str]]:
        """Why a new order would be refused whatever the risk checks say (empty: ready)."""
        gw = self.gw
        out: list[dict[str, str]] = []
        link = gw.link
        if link.state != "up":
            out.append({"check": "exchange_link", "text": (
                "the exchange seat was taken over by another connection; an operator must "
                "reconnect it" if link.state == "taken over" else
                "the exchange link is down or not yet reconciled")})
        audit = gw.audit
        if audit is not None and audit.failure is not None:
            # Not the error itself (it names paths): an operator reads it in /v1/status.
            out.append({"check": "journal", "text": "the journal cannot be written; new orders "
                                                    "are refused (details in /v1/status)"})
        if gw.safe_mode:
            out.append({"check": "safe_mode", "text": "journal corruption: safe mode until "
                                                      "`fengkong journal repair`"})
        halted = gw.router.halted
        if halted is not None and halted[0] not in (Reason.JOURNAL_UNAVAILABLE,
                                                    Reason.SAFE_MODE):
            out.append({"check": "halted", "text": f"new orders refused: {Reason(halted[0]).name}"})
        return out

    # -- the collector
    def collect(self) -> Iterator[Metric]:
        gw = self.gw
        r = gw.router
        stats = r.stats
        p = "fengkong_"
        for key, name, doc in (
                ("orders", "orders", "New orders received from clients"),
                ("accepted", "orders_accepted", "New orders accepted and sent to the exchange"),
                ("rejected", "orders_rejected", "New orders refused by the gateway"),
                ("cancels", "cancels", "Cancel requests (clients, kills, disconnects)"),
                ("fills", "fills", "Executions booked"),
                ("duplicate_fills", "duplicate_fills", "Executions reported again and ignored"),
                ("surprises", "exchange_surprises",
                 "Exchange reports the order lifecycle did not expect")):
            yield CounterMetricFamily(p + name, doc, value=stats.get(key, 0))
        rejects = CounterMetricFamily(p + "rejects", "New orders refused, by reason code",
                                      labels=("code", "reason"))
        for code, count in enumerate(r.rejects_by_reason):
            if count:
                rejects.add_metric((str(code), _reason_name(code)), count)
        yield rejects
        yield GaugeMetricFamily(p + "working_orders", "Orders working at the exchange",
                                value=len(r.orders))
        yield GaugeMetricFamily(p + "cancels_pending",
                                "Working orders with a cancel requested and not yet answered",
                                value=r.pending_cancels())
        yield from self._sessions()
        yield from self._link()
        yield from self._kills()
        yield from self._journal()
        yield from self._accounts()
        yield self.ack_rtt.family(p + "order_ack_rtt_seconds", "Order received -> exchange "
                                  "acknowledgement handled, on the gateway's clock")
        yield self.loop_lag.family(p + "event_loop_lag_seconds",
                                   "How late the event loop ran a timer")
        worst, self.loop_lag_max_ns = self.loop_lag_max_ns, 0
        yield GaugeMetricFamily(p + "event_loop_lag_max_seconds",
                                "Worst event-loop lag since the previous scrape", value=worst / 1e9)

    def _sessions(self) -> Iterator[Metric]:
        gw = self.gw
        p = "fengkong_"
        logons = gw.logons
        yield GaugeMetricFamily(p + "sessions", "Client sessions logged on",
                                value=len(gw.router.sessions))
        yield GaugeMetricFamily(p + "connections_not_logged_on",
                                "Client connections that have not logged on yet",
                                value=len(logons.pending))
        yield CounterMetricFamily(p + "connections", "Client connections accepted",
                                  value=logons.connections)
        yield CounterMetricFamily(p + "connections_refused",
                                  "Client connections refused by the connection caps",
                                  value=logons.refused_connections)
        yield CounterMetricFamily(p + "logon_timeouts", "Connections closed for not logging on",
                                  value=logons.timed_out)
        failures = CounterMetricFamily(p + "tls_handshake_failures",
                                       "TLS connections refused at the handshake (plaintext, "
                                       "bad or unknown certificate)", labels=("port",))
        fix = getattr(gw, "fix", None)  # the FIX acceptor, when [fix] is enabled
        for port, server in (("client", gw.server), ("admin", gw.admin.tls_server),
                             ("fix", fix.server if fix is not None else None)):
            if server is not None and server.acceptor is not None:
                failures.add_metric((port,), server.handshake_failures)
        yield failures

    def _link(self) -> Iterator[Metric]:
        link = self.gw.link
        p = "fengkong_"
        yield GaugeMetricFamily(p + "exchange_link_up", "1 when the exchange link is up and "
                                "reconciled", value=1 if link.state == "up" else 0)
        state = GaugeMetricFamily(p + "exchange_link_state", "The exchange link's state (1 for "
                                  "the current one)", labels=("state",))
        for s in LINK_STATES:
            state.add_metric((s,), 1 if link.state == s else 0)
        yield state
        yield CounterMetricFamily(p + "exchange_link_connects", "Exchange logons completed",
                                  value=link.connects)

    def _kills(self) -> Iterator[Metric]:
        gw = self.gw
        p = "fengkong_"
        kills = GaugeMetricFamily(p + "kills_engaged", "Kill switches engaged, by scope and mode",
                                  labels=("scope", "mode"))
        counts: dict[tuple[str, str], int] = {}
        for scope, _key, mode in gw.engine.killed():
            k = (KillScope(scope).name.lower(), "close_only" if mode == 2 else "block")
            counts[k] = counts.get(k, 0) + 1
        for scope in KillScope:
            for mode in ("block", "close_only"):
                kills.add_metric((scope.name.lower(), mode), counts.get((scope.name.lower(), mode), 0))
        yield kills
        halted = gw.router.halted
        yield GaugeMetricFamily(p + "halted", "1 when new orders are refused whatever the "
                                "checks say (journal failing or damaged)",
                                value=0 if halted is None else 1)
        yield GaugeMetricFamily(p + "safe_mode", "1 while journal corruption keeps the gateway "
                                "in safe mode", value=1 if gw.safe_mode else 0)
        yield GaugeMetricFamily(p + "alerts_kept", "Recent alerts held for the status view",
                                value=len(gw.router.alerts))

    def _journal(self) -> Iterator[Metric]:
        gw = self.gw
        p = "fengkong_journal_"
        j, audit = gw.journal, gw.audit
        yield GaugeMetricFamily(p + "enabled", "1 when the gateway journals",
                                value=0 if j is None else 1)
        if j is None or audit is None:
            return
        yield GaugeMetricFamily(p + "writable", "0 while journal writes fail (new orders "
                                "refused)", value=1 if audit.failure is None else 0)
        yield GaugeMetricFamily(p + "held_records", "Records held in memory while the journal "
                                "cannot be written", value=audit.pending)
        yield CounterMetricFamily(p + "write_failures", "Journal writes that failed",
                                  value=audit.failures)
        yield GaugeMetricFamily(p + "unflushed_bytes", "Bytes written to the journal and not "
                                "yet forced to disk", value=j.unflushed_bytes)
        yield GaugeMetricFamily(p + "next_seq", "Sequence number of the next record",
                                value=j.next_seq)
        yield self.journal_append.family(p + "append_seconds", "Journal write of one batch")
        yield self.journal_fsync.family(p + "fsync_seconds", "Journal fdatasync")
        outbox = gw.outbox
        if outbox is not None:
            yield GaugeMetricFamily("fengkong_outbox_lag_records", "Journal records not yet "
                                    "acknowledged by Kafka",
                                    value=max(0, j.next_seq - 1 - outbox.published_seq))
            yield CounterMetricFamily("fengkong_outbox_failures", "Kafka publish attempts that "
                                      "failed", value=outbox.failures)
            yield CounterMetricFamily("fengkong_outbox_broker_losses", "Times Kafka was found "
                                      "without records it had acknowledged",
                                      value=outbox.broker_losses)

    def _accounts(self) -> Iterator[Metric]:
        """Per-account series for the busiest ``max_accounts`` accounts, the rest as "other"."""
        gw = self.gw
        views = [gw.engine.account_view(a.id) for a in gw.cfg.risk.accounts]
        views.sort(key=lambda v: (-v["messages_today"], v["account"]))
        named, rest = views[:self.max_accounts], views[self.max_accounts:]
        p = "fengkong_account_"
        fams = {
            "messages_today": GaugeMetricFamily(
                p + "messages_today", "Orders and cancels today (the exchanges' message count)",
                labels=("account",)),
            "open_orders": GaugeMetricFamily(p + "open_orders", "Working orders",
                                             labels=("account",)),
            "used_margin": GaugeMetricFamily(p + "used_margin_yuan", "Margin in use, yuan",
                                             labels=("account",)),
            "frozen_margin": GaugeMetricFamily(p + "frozen_margin_yuan", "Margin frozen by "
                                               "working orders, yuan", labels=("account",)),
            "available": GaugeMetricFamily(p + "available_yuan", "Available funds, yuan",
                                           labels=("account",)),
        }
        status = GaugeMetricFamily(p + "status", "Accounts by status (ACTIVE, CLOSE_ONLY, "
                                   "SUSPENDED), the named ones and \"other\"",
                                   labels=("account", "status"))
        for v in named:
            for key, fam in fams.items():
                fam.add_metric((v["account"],), v[key])
            status.add_metric((v["account"], v["status"]), 1)
        if rest:
            for key, fam in fams.items():
                fam.add_metric(("other",), sum(v[key] for v in rest))
            by_status: dict[str, int] = {}
            for v in rest:
                by_status[v["status"]] = by_status.get(v["status"], 0) + 1
            for s, n in sorted(by_status.items()):
                status.add_metric(("other", s), n)
        yield from fams.values()
        yield status


class _Collector:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect()


def _reason_name(code: int) -> str:
    try:
        return Reason(code).name
    except ValueError:
        return "UNKNOWN"

