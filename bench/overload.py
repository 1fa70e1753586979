"""Overload: more clients than a worker can serve, with and without serving.overload's in-flight limit.

    python -m bench.overload [--clients 256] [--duration 10] [--rounds 2] [--limit 64] [--out runs/bench_overload]

Starts serving.service (one worker, models_store/) twice: with $SERVING_MAX_IN_FLIGHT at --limit and at 0
(no limit). A closed-loop client in this process keeps --clients keep-alive connections busy with
/classify of one MNIST digit; a client refused with 429 waits out Retry-After, as a well-behaved client
does. Reported per server: admitted requests/s, their p50 and p99 latency, how many were refused, how fast
a refusal came, and errors. Rounds alternate the two servers, so drift hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

from serving.overload import LIMIT_ENV, MAX_IN_FLIGHT
from training.provenance import hardware, utc_now

from .serve import DIGIT_PNG, MODEL, Server, free_port, multipart

ROOT = Path(__file__).resolve().parent.parent


def request_bytes(port: int, model: str = MODEL) -> bytes:
    body, content_type = multipart("image", "digit.png", DIGIT_PNG.read_bytes(), "image/png", model=model)
    head = (f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers


async def client(port: int, request: bytes, until: float, log: list[tuple[int, float]]) -> None:
    """One keep-alive connection sending requests until `until`; (status, seconds) of each, -1 for an error."""
    reader = writer = None
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers = await asyncio.wait_for(read_response(reader), timeout=60)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
            log.append((-1, time.monotonic() - started))
            writer = None
            await asyncio.sleep(0.1)
            continue
        log.append((status, time.monotonic() - started))
        if status == 429:
            await asyncio.sleep(float(headers.get("retry-after", 1)))
    if writer is not None:
        writer.close()


def load(port: int, clients: int, duration_s: float, model: str = MODEL) -> dict[str, Any]:
    return summarise(send(port, clients, duration_s, model), duration_s)


def send(port: int, clients: int, duration_s: float, model: str = MODEL) -> list[tuple[int, float]]:
    """(status, seconds) of every /classify that `clients` connections sent for `duration_s`."""
    request, log = request_bytes(port, model), []

    async def main() -> None:
        until = time.monotonic() + duration_s
        await asyncio.gather(*(client(port, request, until, log) for _ in range(clients)))

    asyncio.run(main())
    return log


def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-quantile of sorted `values` (seconds), in ms, or None for no values."""
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1e3, 1) if values else None


def summarise(log: list[tuple[int, float]], duration_s: float) -> dict[str, Any]:
    admitted = sorted(s for status, s in log if status == 200)
    refused = sorted(s for status, s in log if status == 429)
    pct = percentile_ms
    return {"admitted_per_s": round(len(admitted) / duration_s, 1), "admitted_p50_ms": pct(admitted, 0.5),
            "admitted_p99_ms": pct(admitted, 0.99), "refused": len(refused), "refused_p99_ms": pct(refused, 0.99),
            "other_status": sum(status not in (200, 429, -1) for status, _ in log),
            "errors": sum(status == -1 for status, _ in log)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    plan = {f"limit {args.limit}": args.limit, "no limit": 0}
    servers = {}
    for name, limit in plan.items():
        port = free_port()
        servers[name] = Server(name, [bentoml, "serve", "serving.service:ModelService", "--port", str(port)],
                               "/readyz", port, args.out / f"{name.replace(' ', '_')}.log",
                               {LIMIT_ENV: str(limit), "CUDA_VISIBLE_DEVICES": ""})
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in plan}
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        for name, server in servers.items():  # warm-up
            load(server.port, 8, 2)
        for _ in range(args.rounds):
            for name, server in servers.items():
                rounds[name].append(load(server.port, args.clients, args.duration))
    finally:
        for server in servers.values():
            server.stop()
    medians = {name: {key: statistics.median(r[key] for r in runs) if runs[0][key] is not None else None
                      for key in runs[0]} for name, runs in rounds.items()}
    return {"when": utc_now(), "machine": hardware("cpu"), "clients": args.clients, "duration_s": args.duration,
            "rounds": args.rounds, "medians": medians, "all": rounds}


def save(out: Path, results: dict[str, Any], report: Callable[[dict[str, Any]], str]) -> None:
    """results.json and results.md (the report's text, also printed) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = report(results)
    (out / "results.md").write_text(text)
    print(text)


def report(results: dict[str, Any]) -> str:
    rows = ["| server | admitted/s | admitted p50 | admitted p99 | refused (429) | 429 p99 | other | errors |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in results["medians"].items():
        rows.append(f"| {name} | {m['admitted_per_s']} | {m['admitted_p50_ms']} ms | {m['admitted_p99_ms']} ms | "
                    f"{m['refused']:g} | {m['refused_p99_ms']} ms | {m['other_status']:g} | {m['errors']:g} |")
    return (f"{results['clients']} clients for {results['duration_s']:g} s, median of {results['rounds']} rounds, "
            f"{results['machine']}, {results['when']}:\n\n" + "\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=256, help="keep-alive connections, each one request at a time")
    p.add_argument("--duration", type=float, default=10, help="seconds of load per server and round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--limit", type=int, default=MAX_IN_FLIGHT, help="in-flight limit of the limited server")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_overload")
    args = p.parse_args()
    save(args.out, run(args), report)


if __name__ == "__main__":
    main()
