"""Collect every finished run into docs/RESULTS.md: report figure against ours, same test split.

    python -m training.report [--runs-dir runs] [--out docs/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .files import atomic_write_text
from .registry import EXPERIMENTS


def _ours(report: dict[str, Any]) -> str:
    m = report["metrics"]
    if "test_accuracy" in m:
        ours = f"{100 * m['test_accuracy']:.2f}%"
        if report.get("test_note"):
            ours += f" on its {report['test_size']} training images"
        cv = m.get("cross_validation")
        if cv and "heldout_accuracy" in cv:
            n = sum(r["size"] for r in cv["per_fold"])
            ours += (f"; held out ({cv['folds']}-fold CV on the training split): "
                     f"{100 * cv['heldout_accuracy']:.2f}% ({round(cv['heldout_accuracy'] * n)}/{n})")
        return ours
    return f"MSE {m['test_mse']:.5f} (denoising {m['test_noisy_input_mse']:.4f} -> {m['test_denoise_mse']:.4f})"


def _verdict(report: dict[str, Any]) -> str:
    target, m = report.get("target"), report["metrics"]
    if target is None:
        return "no figure"
    value = m.get("test_accuracy", m.get("test_mse"))
    beats = value >= target if report.get("metric", "accuracy") == "accuracy" else value <= target
    return "beaten" if beats else "**not reached**"


def results_table(runs_dir: Path) -> str:
    """Markdown: one row per finished run, in registry order."""
    rows = ["| experiment | report figure | ours (same test split) | verdict | epochs | wall time | hardware "
            "| command |", "|---|---|---|---|---:|---:|---|---|"]
    for name in EXPERIMENTS:
        path = runs_dir / name / "report.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        rows.append(f"| {name} | {r['report_figure']} | {_ours(r)} | {_verdict(r)} | {r['epochs']} "
                    f"| {r['wall_time_s'] / 60:.1f} min | {r['hardware']} | `{r['command']}` |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = p.parse_args(argv)
    text = ("# Results\n\nEvery finished run in `runs/`, collected by `python -m training.report`. Test "
            "figures are on the official test split of each data set (for the five-class FashionMNIST "
            "experiments: the 5,000 test images of those classes; for the heart table, which has none: a fixed "
            "stratified 200-row split; the 27 Greek letters have no test split at all, so their row also gives "
            "the leave-one-out figure), measured once at the end of training; "
            "nothing was selected on the test set. Wall times are as measured, training included, on machines that "
            "were often running other jobs at the same time; clean throughput figures are in "
            "[BENCHMARKS.md](BENCHMARKS.md).\n\n" + results_table(args.runs_dir) + "\n")
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
