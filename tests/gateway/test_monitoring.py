"""The sample Prometheus alert rules and Grafana dashboard (``examples/monitoring``) name only
metrics the gateway exports: a renamed metric breaks this test, not a risk desk's alerting."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import msgspec
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_gateway_config
from gateway.server import Gateway
from tests.conftest import EXAMPLES

MONITORING = EXAMPLES / "monitoring"
NAME = re.compile(r"\bfengkong_[a-z_]+\b")


def exported(tmp_path) -> set[str]:
    """Every sample name a journaled gateway with a Kafka outbox exports."""
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    cfg = msgspec.structs.replace(cfg, journal=msgspec.structs.replace(
        cfg.journal, dir=str(tmp_path / "journal")))
    gw = Gateway(cfg)
    try:
        gw.outbox = SimpleNamespace(published_seq=0, failures=0, broker_losses=0)  # type: ignore[assignment]
        text = generate_latest(gw.metrics.registry).decode()
        families = list(text_string_to_metric_families(text))
        # A family without samples yet (no reject, no TLS port) is still declared.
        return ({s.name for fam in families for s in fam.samples}
                | {fam.name + ("_total" if fam.type == "counter" else "") for fam in families})
    finally:
        gw.router.audit.close()


def test_alert_rules_and_dashboard_name_only_exported_metrics(tmp_path):
    names = exported(tmp_path)
    rules = yaml.safe_load((MONITORING / "fengkong-alerts.yml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "FengkongExchangeLinkDown", "FengkongJournalErrors", "FengkongRejectRateHigh",
        "FengkongKillEngaged", "FengkongOutboxLag"}
    dash = json.loads((MONITORING / "fengkong-dashboard.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    used = {n for e in exprs for n in NAME.findall(e)}
    assert used and not used - names, f"not exported: {sorted(used - names)}"
