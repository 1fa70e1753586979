"""The prediction log's cost: /classify with serving.predictions on and off, in the same run.

    python -m bench.prediction_log [--clients 8] [--duration 8] [--rounds 2] [--out runs/bench_prediction_log]

Two servers (one worker each, models_store/): one with $SERVING_PREDICTION_LOG set, one without. Rounds
alternate them; reported per server: requests/s, p50 and p99 of /classify (one MNIST digit), errors, and
how many records the log holds at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving.predictions import DIR_ENV
from training.provenance import hardware, utc_now

from .overload import percentile_ms, save, send
from .serve import Server, free_port

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-prediction-log-"))
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    servers = {}
    for name, env in (("log on", {DIR_ENV: str(folder)}), ("log off", {})):
        port = free_port()
        servers[name] = Server(name, [bentoml, "serve", "serving.service:ModelService", "--port", str(port)],
                               "/readyz", port, args.out / f"{name.replace(' ', '_')}.log",
                               {**env, "CUDA_VISIBLE_DEVICES": ""})
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
            send(server.port, 4, 2)  # warm-up
        for _ in range(args.rounds):
            for name, server in servers.items():
                log = send(server.port, args.clients, args.duration)
                ok = sorted(s for status, s in log if status == 200)
                rounds[name].append({"requests_per_s": len(ok) / args.duration, "p50_ms": percentile_ms(ok, 0.5),
                                     "p99_ms": percentile_ms(ok, 0.99), "errors": len(log) - len(ok)})
    finally:
        for server in servers.values():
            server.stop()
    records = sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl"))
    medians = {name: {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
               for name, runs in rounds.items()}
    return {"when": utc_now(), "machine": hardware("cpu"), "clients": args.clients, "duration_s": args.duration,
            "rounds": args.rounds, "medians": medians, "records_logged": records}


def report(r: dict[str, Any]) -> str:
    rows = "".join(f"| {name} | {m['requests_per_s']} | {m['p50_ms']} ms | {m['p99_ms']} ms | {m['errors']:g} |\n"
                   for name, m in r["medians"].items())
    return (f"{r['clients']} clients, {r['duration_s']:g} s x {r['rounds']} rounds, {r['machine']}, {r['when']}:\n\n"
            "| server | requests/s | p50 | p99 | errors |\n| --- | --- | --- | --- | --- |\n" + rows
            + f"\n{r['records_logged']:,} records in the log\n")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.prediction_log", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_prediction_log")
    args = p.parse_args()
    save(args.out, run(args), report)


if __name__ == "__main__":
    main()
