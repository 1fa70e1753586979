"""python -m bench.gpu where no GPU is usable: it checks what it can, says so, exits 1, and trains nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gpu import TARGETS_S, report, tables, time_to_targets

REPO = Path(__file__).resolve().parents[1]


def test_without_a_usable_gpu_it_says_so_after_its_checks_and_fails(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--data-root", str(data_root), "--out", str(out)],
                          cwd=REPO, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # a GPU here is hidden
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    text = (out / "results.md").read_text()
    assert text == done.stdout.rstrip("\n") + "\n" or text.strip() == done.stdout.strip()
    assert "No usable GPU here, so nothing was timed" in text and "is_available() is False" in text
    checks = {c["what"]: c["ok"] for c in json.loads((out / "results.json").read_text())["checks"]}
    assert checks["torch on CUDA"] is False
    assert checks["CUDA 13 and cuDNN 9 packages"] and checks["FashionMNIST"] and checks["MNIST"]
    assert checks["models_store"]
    assert not (out / "runs.log").exists() and not (out / "serve_cuda.log").exists()  # nothing started
    assert seconds < 60  # checks only: nothing trains


def test_the_report_reads_the_benches_tables_and_the_targets() -> None:
    runs = ("  fashion_cnn: 98.1% in 20.0 s\n\nWhole runs, today, H100; `python -m bench.runs`\n\n"
            "| experiment | target | time to target |\n|---|---:|---:|\n"
            "| `fashion_cnn` | 98.00% | 12.5 s (epoch 4) |\n| `mnist_cnn32` | 99.00% | not reached |\n")
    assert tables(runs).splitlines()[:3] == ["Whole runs, today, H100; `python -m bench.runs`", "",
                                             "| experiment | target | time to target |"]
    assert time_to_targets(runs) == {"fashion_cnn": 12.5, "mnist_cnn32": None}
    assert set(TARGETS_S) == {"fashion_cnn", "mnist_cnn32"}
    part = {"command": "python -m bench.runs", "rc": 0, "seconds": 30.0, "output": runs}
    results = {"date": "today", "commit": "abc", "machine": "a CPU", "command": "python -m bench.gpu", "checks": [],
               "seconds": 100.0, "parts": {"serving": {"skipped": "wrk not found"}, "runs": part,
                                           "train": {"skipped": "no time left before the deadline"},
                                           "torchrun": {"failed": "OSError: x"}}}
    text = report(results)
    assert "`fashion_cnn` to its target, under 15 s wanted: 12.5 s: met" in text
    assert "`mnist_cnn32` to its target, under 10 s wanted: not reached" in text
    assert "Not measured: wrk not found." in text and "every part ran: NO" in text
