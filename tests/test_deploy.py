"""deploy/prometheus/: the configuration and rules Prometheus's own promtool accepts, a dashboard over metrics the
service exports, and the real Prometheus reading per-model p99 and the confidence gap from `bentoml serve`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reliability.prometheus import prometheus_check
from serving import monitoring, service
from serving_store import build_store

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(PROMTOOL is None, reason="apt-get install prometheus (bootstrap.sh --test)")


@needs_prometheus
@pytest.mark.parametrize("what, file", [("config", "prometheus.yml"), ("rules", "rules.yml")])
def test_promtool_accepts_the_configuration(what: str, file: str) -> None:
    done = subprocess.run([PROMTOOL, "check", what, str(DEPLOY / file)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def exported_metrics() -> set[str]:
    """Every metric family the service defines (prometheus_client's collectors), with its _bucket/_sum/_count."""
    names = set()
    for module in (monitoring, service):
        for value in vars(module).values():
            if hasattr(value, "_name") and hasattr(value, "_type"):
                base = value._name + ("_total" if value._type == "counter" else "")
                names |= {base, f"{value._name}_bucket", f"{value._name}_sum", f"{value._name}_count"}
    return names | {"bentoml_service_request_total"}


def test_rules_and_dashboard_use_only_metrics_the_service_exports() -> None:
    recorded = set(re.findall(r"record: ([\w:]+)", (DEPLOY / "rules.yml").read_text()))
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    texts = [(DEPLOY / "rules.yml").read_text(),
             *[t["expr"] for p in dashboard["panels"] for t in p["targets"]]]
    used = {name for text in texts for name in re.findall(r"\b((?:model|bentoml)[_:][\w:]*)", text)}
    unknown = used - exported_metrics() - recorded
    assert not unknown, unknown
    assert len(dashboard["panels"]) >= 6


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="apt-get install prometheus (bootstrap.sh --test)")
def test_prometheus_reads_per_model_p99_and_the_confidence_gap(tmp_path_factory: pytest.TempPathFactory,
                                                                tmp_path: Path) -> None:
    store = build_store(tmp_path_factory.getbasetemp() / "serving")
    result = prometheus_check(store, tmp_path, traffic_s=8)
    assert result["passed"], result
