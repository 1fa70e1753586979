"""Fuzzing: schemathesis against the service's own OpenAPI document, and Hypothesis-made pictures.

Both pass only with zero 5xx answers and a service that still answers afterwards. The schema's `model`
fields are plain strings (the names come from the store at start-up); `fuzzed_schema` narrows them to the
served names so that generated positive cases reach the models, while negative cases still send any string.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import httpx
from hypothesis import HealthCheck, given, settings

from .images import DOCUMENTED, uploads
from .server import serve_store

ST = str(Path(sys.executable).parent / "st")  # schemathesis' CLI, in this environment


def fuzzed_schema(spec: dict[str, Any], model_names: list[str]) -> dict[str, Any]:
    """`spec` with every request body's `model` field limited to `model_names` (for positive cases)."""
    spec = copy.deepcopy(spec)
    for operation in (op for path in spec["paths"].values() for op in path.values()):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            model = media.get("schema", {}).get("properties", {}).get("model")
            if model is not None:
                model["enum"] = list(model_names)
    return spec


def schemathesis_run(url: str, work: Path, max_examples: int, seed: int = 0) -> dict[str, Any]:
    """`st run` over every operation of the live service's /docs.json; figures from its JSON report."""
    work.mkdir(parents=True, exist_ok=True)
    spec = httpx.get(url + "/docs.json", timeout=10).json()
    names = sorted(httpx.get(url + "/models", timeout=10).json()["models"])
    schema_file, report = work / "openapi.json", work / "schemathesis.json"
    schema_file.write_text(json.dumps(fuzzed_schema(spec, names)))
    run = subprocess.run([ST, "run", str(schema_file), "--url", url, "--checks", "not_a_server_error",
                          "--max-examples", str(max_examples), "--seed", str(seed), "--workers", "2",
                          "--generation-database", "none", "--no-color", "--report", "json",
                          "--report-json-path", str(report)], capture_output=True, text=True, timeout=3600)
    (work / "schemathesis.txt").write_text(run.stdout + run.stderr)
    facts = json.loads(report.read_text())
    return {"exit_code": run.returncode, "cases": facts["test_cases"]["generated"],
            "failures": facts["failures"], "errors": facts["errors"], "operations": facts["operations"]["tested"],
            "seconds": round(facts["running_time"], 1), "seed": seed}


def image_fuzz(post: Callable[[str, bytes, dict[str, str]], int], examples: int, seed: int = 0) -> dict[str, Any]:
    """Hypothesis pictures through /classify and /reconstruct: never a 5xx, 200 for every whole documented one.

    `post(path, image_bytes, form_fields) -> status`; raises AssertionError with the picture's description.
    """
    counts: dict[str, int] = {}

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed == 0,
              suppress_health_check=list(HealthCheck))
    @given(uploads())
    def check(upload: tuple[bytes, bool, str]) -> None:
        data, whole, what = upload
        for path, fields in (("/classify", {"model": "fashion"}), ("/reconstruct", {})):
            status = post(path, data, fields)
            counts[f"{path} {status}"] = counts.get(f"{path} {status}", 0) + 1
            assert status < 500, f"{what}: {path} answered {status}"
            if whole and what.split()[0] in DOCUMENTED:
                assert status == 200, f"{what}: {path} answered {status}"

    check()
    return {"examples": examples, "requests": sum(counts.values()), "statuses": counts}


def fuzz(store: Path, work: Path, max_examples: int = 1000, images: int = 500) -> dict[str, Any]:
    """The long run: schemathesis and the picture fuzzing against `bentoml serve` on `store`."""
    work.mkdir(parents=True, exist_ok=True)
    problems = []
    with serve_store(store, work / "fuzz.log") as server:
        (worker,) = server.workers()
        api = schemathesis_run(server.url, work, max_examples)
        if api["failures"] or api["errors"] or api["exit_code"]:
            problems.append(f"schemathesis: {api['failures'] or api['errors']} (exit {api['exit_code']})")

        def post(path: str, data: bytes, fields: dict[str, str]) -> int:
            return httpx.post(server.url + path, files={"image": ("x", data)}, data=fields, timeout=60).status_code

        try:
            pictures = image_fuzz(post, images)
        except AssertionError as err:
            pictures = {"examples": images, "failure": str(err)}
            problems.append(str(err))
        alive = [w.pid for w in server.workers()] == [worker.pid]
        ready = httpx.get(server.url + "/readyz", timeout=10).status_code
        tracebacks = server.log.read_text().count("Traceback")
    if not alive or ready != 200 or tracebacks:
        problems.append(f"after fuzzing: same worker {alive}, /readyz {ready}, {tracebacks} tracebacks in the log")
    return {"check": "fuzz", "passed": not problems, "problems": problems,
            "figures": {"schemathesis": api, "pictures": pictures, "same_worker": alive, "tracebacks": tracebacks}}
