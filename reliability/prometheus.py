"""The real Prometheus (Debian's `prometheus`) scraping `bentoml serve` with deploy/prometheus/'s configuration
and rules: traffic is sent, and per-model p99 and the confidence comparison are read back through its API.

    python -m reliability prometheus        # also part of `python -m reliability`
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from .load import Load, mixed_calls
from .server import REPO, free_port, serve_store

CONFIG = REPO / "deploy" / "prometheus"
PROMETHEUS = "prometheus"  # Debian's package puts it on PATH
SCRAPE_S = 1
P99 = "histogram_quantile(0.99, sum by (le, model) (rate(model_request_seconds_bucket[1m])))"
CONFIDENCE_GAP = ("sum by (model, version) (rate(model_top1_probability_sum[1m])) / sum by (model, version) "
                  "(rate(model_top1_probability_count[1m])) - on(model, version) "
                  "max by (model, version) (model_test_top1_mean)")
RECORDED = "model:request_seconds:p99_5m"
Result = dict[str, Any]


def config_for(target: str, rules: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml scraping `target` every SCRAPE_S seconds, with `rules`."""
    config = yaml.safe_load((CONFIG / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s")
    config["rule_files"] = [str(rules)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
    return config


def query(url: str, expr: str) -> dict[str, float]:
    """`expr`'s instant vector from Prometheus at `url`, by its model label (and endpoint or version)."""
    answer = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=10).json()
    if answer.get("status") != "success":
        raise RuntimeError(f"{expr}: {answer}")
    return {" ".join(v for k, v in sorted(r["metric"].items()) if k in ("model", "endpoint", "version")):
            float(r["value"][1]) for r in answer["data"]["result"]}


def prometheus_check(store: Path, work: Path, traffic_s: float = 20.0) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    if shutil.which(PROMETHEUS) is None:
        return {"check": "prometheus", "passed": False, "figures": {},
                "problems": ["no prometheus on PATH: apt-get install prometheus (bash scripts/bootstrap.sh --test)"]}
    figures: dict[str, Any] = {}
    with serve_store(store, work / "serve.log") as server:
        port = free_port()
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(config_for(server.url.removeprefix("http://"), CONFIG / "rules.yml")))
        with open(work / "prometheus.log", "wb") as log:
            prometheus = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                                           f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            with Load(server.url, calls=[c for c in mixed_calls() if c.endpoint in ("/classify", "/heart")],
                      concurrency=4) as load:
                time.sleep(traffic_s)
            time.sleep(3 * SCRAPE_S)  # the last scrape and rule evaluation
            p99, gap, recorded = query(url, P99), query(url, CONFIDENCE_GAP), query(url, RECORDED)
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=30)
    figures.update(requests=len(load.outcomes), failed=len(load.failures()),
                   p99_ms={k: round(v * 1000, 1) for k, v in p99.items()},
                   live_minus_test_confidence={k: round(v, 3) for k, v in gap.items()},
                   recorded_p99_series=len(recorded))
    if not any(k.startswith("fashion") for k in p99) or not all(math.isfinite(v) and v > 0 for v in p99.values()):
        problems.append(f"no per-model p99 for fashion from Prometheus: {p99}")
    if not any(k.startswith("fashion") for k in gap):
        problems.append(f"no confidence comparison for fashion: {gap} (does its manifest hold metrics.answers?)")
    if not recorded:
        problems.append(f"the recording rule {RECORDED} produced nothing")
    if load.failures():
        problems.append(f"{len(load.failures())} requests failed")
    return {"check": "prometheus", "passed": not problems, "figures": figures, "problems": problems}
