"""Every GPU figure in one command, on one GPU, within 8 minutes, offline: results.md and results.json.

    python -m bench.gpu [--data-root data] [--duration 5] [--rounds 2] [--out runs/bench_gpu]

1. The GPU as nvidia-smi names it, and what the rest needs: driver, torch on CUDA, NCCL, the CUDA and cuDNN
   packages bentofile.yaml pins, FashionMNIST and MNIST under --data-root, wrk, the models in models_store/.
2. Where each model really runs: GET /models of serving.service started with SERVING_DEVICE=cuda.
3. /classify (one digit PNG, 1 and 32 connections) and /classify_batch (256 digits) through that service on
   CUDA and through the same service with SERVING_DEVICE=cpu, in the same run (bench.serve's wrk rows,
   interleaved rounds, medians).
4. fashion_cnn to 98% and mnist_cnn32 to 99% against the clock (python -m bench.runs --device cuda
   --no-artifacts), against issue 6's targets: under 15 s and under 10 s.
5. Time to the report's figure on CUDA, ours against Report A's recipe (python -m bench.train --device cuda
   --cap 2).
6. One epoch of fashion_cnn under torchrun, one process on the GPU, its gradients averaged over NCCL.

Each part has a time limit (LIMITS_S) within one deadline (DEADLINE_S); a part that overruns is stopped and
reported so. Without a usable GPU only part 1 runs: the report says what is missing, and the exit status is
1, as it is whenever a part could not run or failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml

from serving.devices import DEVICE_ENV, driver_present
from training.provenance import git_commit, hardware, utc_now
from training.store import published_names

from .overload import save
from .serve import (BATCH_IMAGES, MODEL, READY_TIMEOUT_S, WARMUP_S, Scenario, Server, check_answers, free_port,
                    measure_http, render_table, request_bodies, summarise)

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "models_store"
DEADLINE_S = 465  # the whole command, 8 minutes with a margin for writing the report
LIMITS_S = {"serving": 120, "runs": 170, "train": 100, "torchrun": 80}  # each part at most, within the deadline
TARGETS_S = {"fashion_cnn": 15.0, "mnist_cnn32": 10.0}  # issue 6: time to 98% / 99% on one GPU
CONCURRENCY = (1, 32)  # /classify connections; /classify_batch gets one
TORCHRUN_EXPERIMENT = "fashion_cnn"
SIDES = {"cuda": "cuda", "cpu": "cpu"}  # server name -> its SERVING_DEVICE


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str


def gpu_packages() -> dict[str, str]:
    """The NVIDIA packages bentofile.yaml pins for a GPU node: name -> version."""
    listed = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["python"]["packages"]
    pins = dict(line.split("==", 1) for line in listed if "==" in line)
    return {name: version for name, version in pins.items() if name.startswith("nvidia-")}


# -- 1. what is here


def nvidia_smi() -> Check:
    if shutil.which("nvidia-smi") is None:
        return Check("GPU (nvidia-smi)", False, "nvidia-smi not found")
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                           "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    ok = done.returncode == 0 and bool(done.stdout.strip())
    return Check("GPU (nvidia-smi)", ok, (done.stdout if ok else done.stderr or done.stdout).strip()[:500])


def torch_checks() -> list[Check]:
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    checks = [Check("torch on CUDA", cuda, f"torch {torch.__version__}, CUDA {torch.version.cuda}: "
                    + (torch.cuda.get_device_name(0) if cuda else "torch.cuda.is_available() is False"))]
    nccl = cuda and dist.is_nccl_available()
    version = ".".join(map(str, torch.cuda.nccl.version())) if nccl else "not available"
    return checks + [Check("NCCL", nccl, f"NCCL {version}")]


def package_check() -> Check:
    wrong = []
    for name, pinned in gpu_packages().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        if installed != pinned:
            wrong.append(f"{name} {installed} (bentofile.yaml: {pinned})")
    return Check("CUDA 13 and cuDNN 9 packages", not wrong, "; ".join(wrong) or
                 ", ".join(f"{n} {v}" for n, v in gpu_packages().items()))


def data_checks(root: Path) -> list[Check]:
    from training.data import DEBIAN_FASHION_DIR, FASHION_FILES, MNIST_FILES

    fashion = all((root / "FashionMNIST" / "raw" / f).is_file() for f in FASHION_FILES) or \
        all((DEBIAN_FASHION_DIR / f"{f}.gz").is_file() for f in FASHION_FILES)
    mnist = all((root / "MNIST" / "raw" / f).is_file() for f in MNIST_FILES)
    none = "none in "
    return [Check("FashionMNIST", fashion, f"{'' if fashion else none}{root}/FashionMNIST/raw or {DEBIAN_FASHION_DIR}"),
            Check("MNIST", mnist, f"{'' if mnist else none}{root}/MNIST/raw")]


def checks(data_root: Path) -> list[Check]:
    models = published_names(STORE)
    driver, wrk = driver_present(), shutil.which("wrk")
    return [nvidia_smi(),
            Check("NVIDIA driver", driver, "found" if driver else "none: no /proc/driver/nvidia, no libcuda.so.1"),
            *torch_checks(), package_check(), *data_checks(data_root),
            Check("wrk", wrk is not None, wrk or "not found: the serving rows need it (Debian's wrk)"),
            Check("models_store", MODEL in models, ", ".join(models) or f"nothing published in {STORE}")]


def passed(found: list[Check], *names: str) -> str | None:
    """None when every named check passed, else what failed."""
    failed = [f"{c.what}: {c.detail}" for c in found if c.what in names and not c.ok]
    return "; ".join(failed) or None


# -- running the parts


def run_part(argv: list[str], limit_s: float, log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `argv` from the repository root in its own session, stopped (with its children) after `limit_s`."""
    started = time.perf_counter()
    with open(log, "w+b") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
        try:
            rc = process.wait(timeout=max(limit_s, 1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            rc = process.wait()
            rc = f"stopped after {limit_s:.0f} s"
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return {"command": " ".join(argv), "rc": rc, "seconds": time.perf_counter() - started, "output": text[-20000:]}


def tables(text: str) -> str:
    """The markdown tables in a benchmark's output, each after the line that introduces it."""
    kept, intro = [], ""
    for line in text.splitlines():
        if line.startswith("|"):
            kept += [intro, ""] if intro else []
            kept.append(line)
            intro = ""
        elif line.strip():
            intro = line.strip()
            if kept and kept[-1].startswith("|"):
                kept.append("")
    return "\n".join(kept)


def time_to_targets(text: str) -> dict[str, float | None]:
    """bench.runs' time to target in seconds per experiment, None where it was not reached."""
    found = {}
    for name in TARGETS_S:
        row = re.search(rf"^\| `{name}` \| [^|]+ \| ([^|]+) \|", text, re.M)
        seconds = re.match(r"\s*([\d.]+) s", row.group(1)) if row else None
        found[name] = float(seconds.group(1)) if seconds else None
    return found


# -- 2 and 3. the service on CUDA and on the CPU


def settle(server: Server, timeout_s: float) -> dict[str, Any]:
    """GET /models once every model is ready or has said why not (SERVING_DEVICE=cuda refuses the CPU)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}; see {server.log}")
        try:
            facts = httpx.get(server.url + "/models", timeout=5).json()
            if facts["models"] and all(m["ready"] or m["error"] for m in facts["models"].values()):
                return facts
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{server.name}: models not settled after {timeout_s:.0f} s; see {server.log}")


def serving(args: argparse.Namespace, limit_s: float, wrk: bool) -> dict[str, Any]:
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    servers = {}
    for side, setting in SIDES.items():
        port = free_port()
        servers[side] = Server(side, [bentoml, "serve", "serving.service:ModelService", "--port", str(port)],
                               "/readyz", port, args.out / f"serve_{side}.log", {DEVICE_ENV: setting})
    bodies, _, source = request_bodies(args.data_root, args.out)
    plan = [Scenario(f"{side} /classify", side, concurrency=c) for c in CONCURRENCY for side in SIDES] + \
        [Scenario(f"{side} /classify_batch", side, "/classify_batch", "batch", 1, BATCH_IMAGES) for side in SIDES]
    found: dict[str, Any] = {"batch_source": source}
    try:
        for server in servers.values():
            server.start()
        found["models"] = {side: settle(s, min(READY_TIMEOUT_S, limit_s))["models"] for side, s in servers.items()}
        not_ready = [f"{n}: {m['error']}" for n, m in found["models"]["cuda"].items() if not m["ready"]]
        if not_ready or not wrk:
            found["skipped"] = "; ".join(not_ready) if not_ready else "wrk not found"
            return found
        for server in servers.values():
            check_answers({"ours": server}, bodies)  # bench.serve's: a digit and a batch answered right

        def measure(s: Scenario, seconds: float) -> dict[str, Any]:
            return {"label": s.label, "server": s.server, "path": s.path, "concurrency": s.concurrency,
                    "images": s.images, **measure_http(s, servers[s.server], *bodies[s.body], seconds)}

        for s in plan:
            measure(s, WARMUP_S)
        rounds = []
        for i in range(args.rounds):
            order = plan if i % 2 == 0 else plan[::-1]
            results = {s: measure(s, args.duration) for s in order}
            rounds.append([results[s] for s in plan])
        found["rows"] = summarise(rounds)
    finally:
        for server in servers.values():
            server.stop()
    return found


def cuda_over_cpu(rows: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(row, CUDA / CPU throughput, CUDA / CPU p99) for each path and concurrency."""
    by = {(r["server"], r["path"], r["concurrency"]): r for r in rows}
    out = []
    for (side, path, c), r in by.items():
        if side == "cuda" and ("cpu", path, c) in by:
            cpu = by[("cpu", path, c)]
            figure = "images_per_s" if path == "/classify_batch" else "requests_per_s"
            out.append((f"{path} at {c} connection{'s' if c > 1 else ''}", r[figure] / cpu[figure],
                        r["p99_ms"] / cpu["p99_ms"]))
    return out


# -- the command


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    found = checks(args.data_root)
    results: dict[str, Any] = {"date": utc_now(), "command": "python -m bench.gpu " + " ".join(args.argv),
                               "commit": git_commit(), "machine": hardware(),
                               "checks": [asdict(c) for c in found], "parts": {}}
    no_gpu = passed(found, "GPU (nvidia-smi)", "NVIDIA driver", "torch on CUDA")
    if no_gpu:
        results["no_gpu"] = no_gpu
        return results

    def remaining(part: str) -> float:
        return min(LIMITS_S[part], DEADLINE_S - (time.monotonic() - started))

    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "serving": lambda: serving(args, remaining("serving"), shutil.which("wrk") is not None),
        "runs": lambda: run_part([sys.executable, "-m", "bench.runs", "--device", "cuda", "--no-artifacts",
                                  "--data-root", str(args.data_root)], remaining("runs"), args.out / "runs.log"),
        "train": lambda: run_part([sys.executable, "-m", "bench.train", "--device", "cuda", "--cap", "2",
                                   "--data-root", str(args.data_root)], remaining("train"), args.out / "train.log"),
        "torchrun": lambda: torchrun(args, remaining("torchrun")),
    }
    needs = {"serving": passed(found, "models_store"), "runs": passed(found, "FashionMNIST", "MNIST"),
             "train": passed(found, "FashionMNIST"), "torchrun": passed(found, "FashionMNIST", "NCCL")}
    for name, part in parts.items():
        if needs[name] or remaining(name) <= 0:
            results["parts"][name] = {"skipped": needs[name] or "no time left before the deadline"}
            continue
        try:
            results["parts"][name] = part()
        except Exception as err:  # one part failing must not lose the others' figures
            results["parts"][name] = {"failed": f"{type(err).__name__}: {err}"}
        print(f"{name} done, {time.monotonic() - started:.0f} s in", file=sys.stderr, flush=True)
    results["seconds"] = time.monotonic() - started
    return results


def torchrun(args: argparse.Namespace, limit_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        done = run_part([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                         "-m", "training.fit", TORCHRUN_EXPERIMENT, "--device", "cuda", "--epochs", "1",
                         "--no-publish", "--data-root", str(args.data_root), "--runs-dir", f"{tmp}/runs",
                         "--store", f"{tmp}/store"], limit_s, args.out / "torchrun.log", {"NCCL_DEBUG": "VERSION"})
        report = Path(tmp) / "runs" / TORCHRUN_EXPERIMENT / "report.json"
        done["hardware"] = json.loads(report.read_text())["hardware"] if report.is_file() else None
    done["nccl"] = next((line.strip() for line in done["output"].splitlines() if "NCCL version" in line), None)
    return done


def ok(part: dict[str, Any]) -> bool:
    if "rows" in part:
        return True
    return part.get("rc") == 0 and ("nccl" not in part or bool(part["nccl"]))


# -- the report


def report(results: dict[str, Any]) -> str:
    lines = ["# GPU figures (`python -m bench.gpu`)", "",
             f"{results['date']}, commit {results['commit']}, {results['machine']}; `{results['command']}`", "",
             "| check | ok | found |", "|---|---|---|"]
    lines += [f"| {c['what']} | {'yes' if c['ok'] else 'NO'} | {c['detail']} |" for c in results["checks"]]
    if "no_gpu" in results:
        return "\n".join(lines + ["", f"**No usable GPU here, so nothing was timed** ({results['no_gpu']}).", ""])
    parts = results["parts"]
    lines += ["", *render_serving(parts["serving"]), "", "## Whole runs against the clock (`bench.runs`)", "",
              *render_runs(parts["runs"]), "", "## Time to the report's figure (`bench.train`)", "",
              *render_output(parts["train"]), "", "## torchrun, one process on the GPU (NCCL)", "",
              *render_torchrun(parts["torchrun"]), "",
              f"All parts: {results['seconds']:.0f} s; every part ran: "
              f"{'yes' if all(map(ok, parts.values())) else 'NO'}.",
              ""]
    return "\n".join(lines)


def render_serving(part: dict[str, Any]) -> list[str]:
    lines = ["## Where each model runs (`GET /models`, `SERVING_DEVICE=cuda`)", ""]
    if "models" in part:
        lines += ["| model | version | provider | why not CUDA |", "|---|---|---|---|"]
        lines += [f"| {name} | {m['version']} | {m['provider'] or 'not ready'} | "
                  f"{m.get('error') or m.get('provider_note') or ''} |" for name, m in part["models"]["cuda"].items()]
    lines += ["", "## Serving on CUDA against the CPU, same run (`SERVING_DEVICE=cuda` / `cpu`)", ""]
    if "rows" not in part:
        return lines + [f"Not measured: {part.get('skipped') or part.get('failed')}."]
    lines += [f"Batch: {part['batch_source']}.", "", render_table(part["rows"]), "",
              "| path | CUDA / CPU throughput | CUDA / CPU p99 |", "|---|---:|---:|"]
    return lines + [f"| {what} | {speed:.2f}x | {p99:.2f}x |" for what, speed, p99 in cuda_over_cpu(part["rows"])]


def render_output(part: dict[str, Any]) -> list[str]:
    if "rc" not in part:
        return [f"Not run: {part.get('skipped') or part.get('failed')}."]
    said = f"`{part['command'].replace(sys.executable, 'python')}`: exit {part['rc']}, {part['seconds']:.0f} s."
    return [said, "", tables(part["output"]) or "No table printed; the end of its output:\n\n```\n"
            + part["output"][-2000:] + "\n```"]


def render_runs(part: dict[str, Any]) -> list[str]:
    lines = render_output(part)
    if "output" in part:
        for name, seconds in time_to_targets(part["output"]).items():
            met = "not reached" if seconds is None else \
                f"{seconds:.1f} s: {'met' if seconds < TARGETS_S[name] else 'NOT met'}"
            lines.append(f"- `{name}` to its target, under {TARGETS_S[name]:g} s wanted: {met}")
    return lines


def render_torchrun(part: dict[str, Any]) -> list[str]:
    if "rc" not in part:
        return render_output(part)
    accuracy = next((l for l in part["output"].splitlines() if f"{TORCHRUN_EXPERIMENT}: test" in l), "no result line")
    return [f"`{part['command'].replace(sys.executable, 'python')}`: exit {part['rc']}, {part['seconds']:.0f} s "
            f"(start-up and export included).", "", f"- {accuracy}", f"- trained on: {part['hardware']}",
            f"- {part['nccl'] or 'NO NCCL version line: the process group did not use NCCL'}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, default=Path("data"),
                   help="FashionMNIST and MNIST, as training reads them")
    p.add_argument("--duration", type=float, default=5, help="seconds of load per serving row and round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved serving rounds; medians are reported")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_gpu", help="results.md, results.json, logs")
    args = p.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    args.data_root = args.data_root.resolve()
    results = run(args)
    save(args.out, results, report)
    return 0 if "no_gpu" not in results and all(map(ok, results["parts"].values())) else 1


if __name__ == "__main__":
    sys.exit(main())
