"""python -m reliability.decoding: what decoding uploads costs, measured (docs/RELIABILITY.md#decoding-uploads).

1. Per format, the worst accepted upload we could build (reliability.hostile): CPU seconds to read its
   header, decode and prepare it, and its peak memory beside the estimate, each in a fresh process; and
   how long each refused file takes to refuse.
2. Against `bentoml serve` (one worker) on the store: the worker's peak RSS for one request of each big
   picture; a burst of them at once (2 /classify, 2 /reconstruct, 2 demo calls) with the worker's RSS
   before, at its peak and 3 s after; a normal 300x300 PNG sent 3 s after two scan bombs, and 0.3 s after
   two of the slowest accepted PNGs.

    python -m reliability.decoding                          # both parts, this checkout's service
    python -m reliability.decoding --service-root /tmp/old  # part 2 against another tree (the numbers before)

Results go to runs/reliability/decoding.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil

from . import hostile
from .server import REPO, SERVICE, Server

SPECS = {"digit": (28, 28, 1, "digit"), "photo": (32, 32, 3, "photo")}
CLASSIFIER, AUTOENCODER = "digits", "fashion_reconstruction"
SAMPLE_S = 0.01  # RSS sampling period


def _drawing(mode: str) -> bytes:
    """The issue's pictures: 4096 x 4096 of paper with one stroke, a few tens of KB as PNG."""
    import numpy as np
    from PIL import Image

    paper = np.full((hostile.SIDE, hostile.SIDE), 255, np.uint8)
    paper[1000:3000, 1800:2300] = 0
    return hostile.encoded(Image.fromarray(paper).convert(mode), "PNG")


def _normal() -> bytes:
    """A 300 x 300 drawing: what a phone or the demo's canvas sends."""
    from PIL import Image

    img = Image.new("RGB", (300, 300), (250, 250, 245))
    img.paste((20, 20, 30), (40, 30, 120, 150))
    return hostile.encoded(img, "PNG")


BIG_PICTURES: dict[str, Callable[[], bytes]] = {
    "greyscale PNG 4096 x 4096": lambda: _drawing("L"), "RGBA PNG 4096 x 4096": lambda: _drawing("RGBA"),
    "worst PNG": hostile.png_worst, "worst WebP": hostile.webp_worst,
}


def _child_write(name: str, path: str) -> None:
    making = {**hostile.WORST_ACCEPTED, **BIG_PICTURES, "normal": _normal}
    Path(path).write_bytes(making[name]() if name in making else hostile.REFUSED[name]())


def _child_measure(path: str, spec: str) -> None:
    """Prints {cpu_s, peak_bytes, estimate_bytes} or {refused, cpu_s} for the upload in `path`."""
    import numpy as np
    from PIL import Image

    from training.preprocessing import ImageError, ImageSpec, decode, prepare_image, read_header

    image_spec = ImageSpec(*SPECS[spec])
    prepare_image(decode(read_header(hostile.encoded(Image.fromarray(np.zeros((300, 300), np.uint8)), "PNG"))),
                  image_spec)  # warm up: code paths, caches
    data = Path(path).read_bytes()
    statm = Path("/proc/self/statm")
    base = max(int(statm.read_text().split()[1]) * resource.getpagesize(),
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    start = time.process_time()
    try:
        header = read_header(data)
        prepare_image(decode(header), image_spec)
    except ImageError as err:
        print(json.dumps({"refused": str(err), "cpu_s": time.process_time() - start}))
        return
    print(json.dumps({"cpu_s": time.process_time() - start, "estimate_bytes": header.peak_bytes,
                      "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base}))


def _child(*args: str) -> dict[str, Any]:
    # Each in a process of its own, and never this one forked while big: Linux carries ru_maxrss across exec.
    done = subprocess.run([sys.executable, "-m", "reliability.decoding", *args], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout) if done.stdout.strip() else {}


def measure_uploads(work: Path) -> dict[str, Any]:
    """Part 1: each worst accepted and each refused upload, in fresh processes."""
    results: dict[str, Any] = {}
    for name in [*hostile.WORST_ACCEPTED, *hostile.REFUSED]:
        path = work / (name.replace(" ", "_").replace("/", "_") + ".upload")
        _child("--write", name, str(path))
        results[name] = {"bytes": path.stat().st_size,
                         **{spec: _child("--measure", str(path), spec) for spec in SPECS}}
        print(name, json.dumps(results[name]), flush=True)
    return results


class PeakRss(threading.Thread):
    """The highest resident memory of `process` while running."""

    def __init__(self, process: psutil.Process):
        super().__init__(daemon=True)
        self.process, self.peak, self.running = process, process.memory_info().rss, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(SAMPLE_S)

    def __enter__(self) -> "PeakRss":
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running = False
        self.join()


def _post(url: str, path: str, data: bytes, model: str) -> dict[str, Any]:
    start = time.monotonic()
    response = httpx.post(url + path, files={"image": ("upload", data)}, data={"model": model}, timeout=120)
    return {"status": response.status_code, "seconds": round(time.monotonic() - start, 2)}


def _demo(url: str, upload: Path, tab: str) -> dict[str, Any]:
    from gradio_client import Client, handle_file

    start = time.monotonic()
    client = Client(url + "/ui/", verbose=False)
    try:
        answer = client.predict(CLASSIFIER, handle_file(str(upload)), api_name="/classify_upload") \
            if tab == "classify" else client.predict(AUTOENCODER, handle_file(str(upload)), 0.2,
                                                     api_name="/reconstruct_upload")
    except ValueError as err:  # Gradio's own upload size limit, before our code sees the file
        return {"answered": False, "said": str(err)[-80:], "seconds": round(time.monotonic() - start, 2)}
    said = str(answer[-1])
    return {"answered": not said.startswith("**Cannot"), "said": said[:120],
            "seconds": round(time.monotonic() - start, 2)}


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def measure_service(store: Path, root: Path, work: Path) -> dict[str, Any]:
    """Part 2: the worker's memory for single requests and bursts, and a normal picture among scan bombs."""
    pictures = {}
    for name in BIG_PICTURES:
        pictures[name] = work / (name.replace(" ", "_") + ".upload")
        _child("--write", name, str(pictures[name]))
    normal_path = work / "normal.png"
    _child("--write", "normal", str(normal_path))
    normal = normal_path.read_bytes()
    results: dict[str, Any] = {"single": {}, "burst": {}}
    with Server([SERVICE], root, {"MODELS_STORE": str(store.resolve())}, work / "server.log") as server:
        server.wait_ready()
        (worker,) = server.workers()
        for _ in range(3):
            _post(server.url, "/classify", normal, CLASSIFIER)
            _post(server.url, "/reconstruct", normal, AUTOENCODER)
            _demo(server.url, normal_path, "classify")
        results["idle_rss_mib"] = _mib(worker.memory_info().rss)
        for name, path in pictures.items():
            data = path.read_bytes()
            for endpoint, model in (("/classify", CLASSIFIER), ("/reconstruct", AUTOENCODER)):
                time.sleep(1)
                before = worker.memory_info().rss
                with PeakRss(worker) as peak:
                    answer = _post(server.url, endpoint, data, model)
                results["single"][f"{name} {endpoint}"] = {**answer, "peak_over_before_mib": _mib(peak.peak - before)}
            time.sleep(1)
            before = worker.memory_info().rss
            with PeakRss(worker) as peak, ThreadPoolExecutor(6) as pool:
                calls = [pool.submit(_post, server.url, "/classify", data, CLASSIFIER) for _ in range(2)]
                calls += [pool.submit(_post, server.url, "/reconstruct", data, AUTOENCODER) for _ in range(2)]
                calls += [pool.submit(_demo, server.url, path, tab) for tab in ("classify", "reconstruct")]
                answers = [call.result() for call in calls]
            time.sleep(3)
            after = worker.memory_info().rss
            results["burst"][name] = {"answers": answers, "rss_before_mib": _mib(before),
                                      "rss_peak_mib": _mib(peak.peak), "rss_3s_after_mib": _mib(after)}
            print(name, json.dumps(results["burst"][name]), flush=True)
        bomb = hostile.scan_bomb_jpeg(hostile.SIDE, 3300)
        slow = pictures["worst PNG"].read_bytes()
        for name, upload, wait_s in (("scan bombs", bomb, 3.0), ("worst PNGs", slow, 0.3)):
            with ThreadPoolExecutor(3) as pool:
                big = [pool.submit(_post, server.url, "/classify", upload, CLASSIFIER) for _ in range(2)]
                time.sleep(wait_s)
                key = "normal_png_after_two_" + name.replace(" ", "_")
                results[key] = _post(server.url, "/classify", normal, CLASSIFIER)
                results[name.replace(" ", "_")] = [call.result() for call in big]
        results["peak_rss_mib"] = max(b["rss_peak_mib"] for b in results["burst"].values())
    print(json.dumps({k: v for k, v in results.items() if k not in ("burst",)}, indent=1), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability.decoding", description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=REPO / "models_store")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "reliability")
    p.add_argument("--service-root", type=Path, default=REPO, help="the tree whose service is measured in part 2")
    p.add_argument("--part", choices=("uploads", "service", "both"), default="both")
    p.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.write:
        _child_write(*args.write)
        return 0
    if args.measure:
        _child_measure(*args.measure)
        return 0
    work = args.out / "decoding"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"service_root": str(args.service_root)}
    if args.part in ("uploads", "both"):
        results["uploads"] = measure_uploads(work)
    if args.part in ("service", "both"):
        results["service"] = measure_service(args.store, args.service_root, work)
    out = args.out / f"decoding-{args.part}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
