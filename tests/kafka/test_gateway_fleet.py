"""Kafka with real gateways: the audit trail leaves through the outbox, and one kill command on
the control topic stops an account on every gateway instance of the fleet."""

from __future__ import annotations

import asyncio
import sys

import msgspec
from aiokafka import AIOKafkaConsumer

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from simulator.client import Client
from tests.conftest import ROOT, start_exchange, start_gateway

T = 20.0


async def _audit_records(bootstrap: str, wanted: set[tuple[str, str]], timeout: float) -> set:
    """Read the audit topic until every (gateway_id, cl_ord_id) order in ``wanted`` is seen (its
    inbound ``NewOrder``; an accepted order has no decision record of its own)."""
    seen: set[tuple[str, str]] = set()
    consumer = AIOKafkaConsumer("fengkong.audit", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= seen:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for m in messages:
                        value = msgspec.json.decode(m.value)
                        record = value["record"]
                        msg = record.get("msg") if isinstance(record, dict) else None
                        if isinstance(msg, dict) and msg.get("type") == "NewOrder":
                            seen.add((value["gateway_id"], msg["cl_ord_id"]))
                        elif isinstance(record, dict) and "cl_ord_id" in record:
                            seen.add((value["gateway_id"], record["cl_ord_id"]))
                        elif isinstance(record, list) and record and record[0] == "dec":
                            seen.add((value["gateway_id"], record[3]))
    finally:
        await consumer.stop()
    return seen


async def test_one_control_command_stops_an_account_on_every_gateway(broker, tmp_path):
    ex = start_exchange()
    ex_port = int(ex.match.group(1))
    gateways = []
    try:
        for gid in ("gwA", "gwB"):
            gw = start_gateway(ex_port, "--journal", str(tmp_path / gid), "--kafka", broker.bootstrap,
                               "--kafka-idempotent", "off", "--id", gid, "--seat", f"SEAT-{gid}")
            gw.wait_for("exchange link up", T)
            gateways.append(gw)
        clients = [await Client.connect("127.0.0.1", int(gw.match.group(1)), "algo1", "algo-secret",
                                        id_prefix=f"{n}-") for n, gw in enumerate(gateways)]
        before = [await c.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                     price=3190.0 + n, qty=1) for n, c in enumerate(clients)]
        for h in before:
            assert (await h.acked(timeout=T)).status == OrdStatus.NEW

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "kill", "--account", "A001", "--fleet", broker.bootstrap,
            "--operator", "risk-officer-li", "--reason", "fleet test", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={"PYTHONPATH": str(ROOT)})
        out, _ = await asyncio.wait_for(proc.communicate(), T)
        assert proc.returncode == 0, out.decode()

        for gw in gateways:
            gw.wait_for("engaged by kafka:risk-officer-li", T)
        for h in before:  # the resting orders were cancelled on both gateways
            assert (await h.wait_done(timeout=T)).status == OrdStatus.CANCELED
        for c in clients:
            after = await c.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                       price=3190.0, qty=1)
            assert (await after.wait_done(timeout=T)).reason == Reason.KILLED_ACCOUNT
            other = await c.send_order(account="A004", symbol="rb2605", side=Side.BUY,
                                       price=3185.0, qty=1)
            assert (await other.acked(timeout=T)).status == OrdStatus.NEW
        for c in clients:
            await c.close()

        # Both gateways' orders reached the audit topic through their outboxes.
        wanted = {("gwA", before[0].cl_ord_id), ("gwB", before[1].cl_ord_id)}
        assert wanted <= await _audit_records(broker.bootstrap, wanted, T)
    finally:
        for gw in gateways:
            gw.stop()
        ex.stop()
