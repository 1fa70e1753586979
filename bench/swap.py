"""Hot swaps under load: /classify latency while live versions change, against steady state in the same run,
and the worker's memory after many swaps.

    python -m bench.swap [--clients 8] [--steady 10] [--swaps 20] [--every 1.0] [--out runs/bench_swap]

Serves a copy of models_store/ (fashion has two versions) with one worker, sends /classify to fashion from
--clients keep-alive connections, measures --steady seconds without a change, then promotes the other
version every --every seconds, --swaps times (python -m training.store's promote: the service follows the
pointer). Reported: p50/p99 steady and while swapping, their ratio (goal: p99 at most 2x), errors, the
worker's RSS after the first swap and after the last (goal: under +50 MB), and whether every swap landed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from training.provenance import hardware, utc_now
from training.store import live, promote, versions

from .overload import percentile_ms, save, send
from .serve import Server, free_port, tree_rss

ROOT = Path(__file__).resolve().parent.parent
MODEL = "fashion"


def figures(log: list[tuple[int, float]]) -> dict[str, Any]:
    ok = sorted(s for status, s in log if status == 200)
    return {"requests": len(log), "errors": len(log) - len(ok), "p50_ms": percentile_ms(ok, 0.5),
            "p99_ms": percentile_ms(ok, 0.99)}


def swap(store: Path, server: Server, swaps: int, every_s: float) -> tuple[list[int], int]:
    """Promote the other version `swaps` times; (worker RSS after each swap landed, swaps that landed)."""
    names = [p.name for p in versions(store, MODEL)][-2:]
    rss, landed = [], 0
    for i in range(swaps):
        target = names[i % 2] if live(store, MODEL).name != names[i % 2] else names[(i + 1) % 2]
        started = time.monotonic()
        promote(store, MODEL, target)
        while time.monotonic() - started < 10:
            if httpx.get(server.url + "/models", timeout=10).json()["models"][MODEL]["live"] == target:
                landed += 1
                break
            time.sleep(0.05)
        rss.append(tree_rss(server.process.pid))
        time.sleep(max(0.0, every_s - (time.monotonic() - started)))
    return rss, landed


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    store = work / "models_store"
    shutil.copytree(ROOT / "models_store", store)
    if len(versions(store, MODEL)) < 2:
        raise SystemExit(f"{MODEL} needs two versions in models_store/ to swap between")
    promote(store, MODEL, live(store, MODEL).name)
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    port = free_port()
    server = Server("ours", [bentoml, "serve", "serving.service:ModelService", "--port", str(port)], "/readyz", port,
                    args.out / "server.log", {"MODELS_STORE": str(store), "CUDA_VISIBLE_DEVICES": ""})
    try:
        server.start()
        server.wait_ready()
        send(port, 4, 2, MODEL)  # warm-up
        steady = send(port, args.clients, args.steady, MODEL)
        swapping: list[tuple[int, float]] = []
        loader = threading.Thread(target=lambda: swapping.extend(send(port, args.clients, args.swaps * args.every,
                                                                      MODEL)))
        loader.start()
        rss, landed = swap(store, server, args.swaps, args.every)
        loader.join()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    calm, busy = figures(steady), figures(swapping)
    return {"when": utc_now(), "machine": hardware("cpu"), "clients": args.clients, "swaps": args.swaps,
            "every_s": args.every, "steady": calm, "swapping": busy, "swaps_landed": landed,
            "p99_ratio": round(busy["p99_ms"] / calm["p99_ms"], 2) if calm["p99_ms"] and busy["p99_ms"] else None,
            "rss_after_first_mib": round(rss[0] / 2**20, 1), "rss_after_last_mib": round(rss[-1] / 2**20, 1),
            "rss_growth_mib": round((rss[-1] - rss[0]) / 2**20, 1)}


def report(r: dict[str, Any]) -> str:
    return (f"{r['clients']} clients, {r['swaps']} swaps every {r['every_s']:g} s ({r['swaps_landed']} landed), "
            f"{r['machine']}, {r['when']}:\n\n| phase | requests | errors | p50 | p99 |\n| --- | --- | --- | --- | --- |\n"
            + "".join(f"| {name} | {f['requests']} | {f['errors']} | {f['p50_ms']} ms | {f['p99_ms']} ms |\n"
                      for name, f in (("steady", r["steady"]), ("swapping", r["swapping"])))
            + f"\np99 while swapping / steady: {r['p99_ratio']} (goal <= 2); RSS after the first swap "
              f"{r['rss_after_first_mib']} MiB, after the last {r['rss_after_last_mib']} MiB "
              f"({r['rss_growth_mib']:+} MiB; goal < +50)\n")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.swap", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--steady", type=float, default=10, help="seconds of load without a change")
    p.add_argument("--swaps", type=int, default=20)
    p.add_argument("--every", type=float, default=1.0, help="seconds between promotions")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_swap")
    args = p.parse_args()
    save(args.out, run(args), report)


if __name__ == "__main__":
    main()
