"""How long an occlusion map takes (serving/explain.py), against a drawing stroke's round trip in the demo.

    python -m bench.explain [--repeats 40] [--out runs/bench_explain]

In this process, on the committed models_store/: the map of a 28x28 MNIST test digit (digits) and of a 32x32
CIFAR-10 test photo (cifar10) from the input prepared already, as the demo computes it after each stroke;
and the demo's /classify_drawing round trip through gradio_client for a 280x280 drawing of a 7 (the canvas's
upload, the event, the answer; the pictures' files are not fetched, as the page fetches them after the answer),
with its map and with the map switched off. Median and p90 of `--repeats`
runs each, after one untimed run. Writes results.json and results.md to --out (bench.overload.save).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from bench.overload import save
from demo import views
from demo.screenshots import SEVEN, launched
from demo.ui import CANVAS_SIZE, build_demo
from serving.runtime import ServedModels, load_models
from training.provenance import hardware, utc_now

ROOT = Path(__file__).resolve().parent.parent
PICTURES = {"digits": ROOT / "demo" / "examples" / "mnist" / "7-00000.png",      # MNIST test image 0
            "cifar10": ROOT / "demo" / "examples" / "cifar10" / "ship-0000.png"}  # a CIFAR-10 test ship
PEN = 24  # canvas pixels: the demo's brush (demo.ui.BRUSH_RADIUS) is a radius


def timed(calls: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Median and p90 of `repeats` runs of each call, in ms, taken in turn (drift hits all alike), after one
    untimed run each."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for n in range(repeats + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            if n:
                times[name].append((time.perf_counter() - started) * 1e3)
    return {name: {"median_ms": statistics.median(t), "p90_ms": float(np.percentile(t, 90)), "runs": repeats}
            for name, t in times.items()}


def map_times(models: ServedModels, repeats: int) -> dict[str, dict[str, Any]]:
    """Each model's map of its picture, from the prepared input (what the demo does after classifying)."""
    found, inputs = {}, {name: models.prepare(name, picture.read_bytes()) for name, picture in PICTURES.items()}
    times = timed({name: functools.partial(models.explain, name, pixels) for name, pixels in inputs.items()}, repeats)
    for name, pixels in inputs.items():
        _, sensitivity, served = models.explain(name, pixels)
        windows, (channels, height, width) = sensitivity.windows, pixels.shape
        found[name] = {"input": f"{height}x{width}" + (" colour" if channels == 3 else ""),
                       "copies": sensitivity.copies, "windows": len(windows.boxes(height, width)),
                       "window": windows.size[0], "stride": windows.stride[0], "provider": served.provider,
                       **times[name]}
    return found


def drawn_seven(path: Path) -> Path:
    """A 7 as the canvas sends it: black strokes on a transparent 280x280 RGBA picture."""
    width, height = CANVAS_SIZE
    picture = Image.new("RGBA", CANVAS_SIZE, (0, 0, 0, 0))
    for stroke in SEVEN:
        ImageDraw.Draw(picture).line([(x * width, y * height) for x, y in stroke], fill=(0, 0, 0, 255), width=PEN)
    picture.save(path)
    return path


def stroke_round_trips(models: ServedModels, repeats: int, work: Path) -> dict[str, dict[str, float]]:
    """/classify_drawing through gradio_client, as the page sends each stroke: with the map, and without."""
    from gradio_client import Client, handle_file

    drawing = drawn_seven(work / "seven.png")
    where_it_looks = views.where_it_looks
    with launched(build_demo(models)) as url:
        client = Client(url, verbose=False, download_files=False)  # the page shows pictures as they arrive

        def stroke(with_map: bool) -> None:
            views.where_it_looks = where_it_looks if with_map else lambda *args, **kwargs: views.Looks(None)
            client.predict("digits", {"background": None, "layers": [], "composite": handle_file(str(drawing))},
                           api_name="/classify_drawing")

        try:
            return timed({"with the map": lambda: stroke(True), "without the map": lambda: stroke(False)}, repeats)
        finally:
            views.where_it_looks = where_it_looks


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = load_models(ROOT / "models_store")
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as work:
        return {"date": utc_now(), "machine": hardware(), "load_average": os.getloadavg(),
                "command": "python -m bench.explain " + " ".join(sys.argv[1:]), "repeats": args.repeats,
                "maps": map_times(models, args.repeats),
                "strokes": stroke_round_trips(models, args.repeats, Path(work))}


def report(results: dict[str, Any]) -> str:
    lines = [f"Occlusion maps and the demo's stroke round trip, {results['date']}, {results['machine']}, load "
             f"average {results['load_average'][0]:.1f} at the start; `{results['command']}`",
             "", "| what | median ms | p90 ms |", "|---|---:|---:|"]
    for name, m in results["maps"].items():
        lines.append(f"| map of a {m['input']} {name} picture ({m['copies']} of {m['windows']} windows run, "
                     f"window {m['window']}, "
                     f"stride {m['stride']}, {m['provider']}) | {m['median_ms']:.1f} | {m['p90_ms']:.1f} |")
    for how, m in results["strokes"].items():
        lines.append(f"| demo stroke round trip, /classify_drawing {how} | {m['median_ms']:.1f} | {m['p90_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=40, help="timed runs per row")
    p.add_argument("--out", type=Path, default=Path("runs/bench_explain"), help="results.json, results.md")
    args = p.parse_args()
    save(args.out, run(args), report)


if __name__ == "__main__":
    main()
