"""The shipped alert rules and dashboard: valid for Prometheus, and naming only metrics the gateway exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO, GatewayProcess

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "tests" / "data" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboard.json"
METRIC = re.compile(r"\b(dlp_gateway_[a-z_]+|process_[a-z_]+)\b")

promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                              reason="promtool not installed (Debian package prometheus; make test installs it)")


def _exported(gateway: GatewayProcess) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{gateway.admin_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum"))
        names.update(s.name for s in family.samples)
    return names


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


@promtool
def test_alert_rules_are_valid() -> None:
    out = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@promtool
def test_alerts_fire_on_the_series_that_should_fire_them() -> None:
    out = subprocess.run(["promtool", "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True,
                         cwd=ALERT_TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_in_the_alerts_and_the_dashboard_is_exported(gateway: GatewayProcess) -> None:
    exported = _exported(gateway)
    named = set(METRIC.findall(ALERTS.read_text())) | {m for e in _dashboard_exprs() for m in METRIC.findall(e)}
    assert named, "no metric names found"
    assert sorted(named - exported) == []


def test_every_alert_has_a_summary_and_a_severity() -> None:
    import yaml

    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "DlpGatewayDown", "DlpGatewayRejectRateSpike", "DlpGatewayDeliveryFailures",
        "DlpGatewayTlsDeliveriesDeferred", "DlpGatewayQuarantineBacklog", "DlpGatewaySlowScans",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_dashboard_panels_have_unique_ids_and_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in dashboard["panels"])
