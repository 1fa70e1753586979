"""Collect every finished run into docs/results/NAME.json, then render docs/RESULTS.md from those files.

    python -m training.report [--runs-dir runs] [--results docs/results] [--out docs/RESULTS.md]
    python -m training.report --from-store models_store   # also seed rows from published models' manifests

Run folders are not committed, so each finished run's summary (the table's fields and headline metrics, no
per-sample data) is copied into a committed JSON file; the table is rendered from those files alone, and a
clone without runs/ keeps every measured row. For one experiment the newest measurement wins. Study tables
(runs/sweeps/NAME/results.md and comparison.png) are copied to docs/results/studies/ and linked, but not
smoke runs: a run on a cut data set, or a study scored on a cut test split or retrained on a cut one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes, atomic_write_json, atomic_write_text
from .manifest import headline_metrics
from .registry import EXPERIMENTS, beats_target
from .store import latest, published_names, read_manifest

# What a row needs, as a run's report.json and a published manifest's provenance both name it.
_FIELDS = ("experiment", "epochs", "wall_time_s", "hardware", "command", "data_source", "train_size",
           "test_size", "test_note", "finished_at", "git_commit")


def summary_from_run(run_dir: Path) -> dict[str, Any] | None:
    """The summary of a finished full run; None when unfinished or a smoke run on a subset of the data."""
    report_path, config_path = run_dir / "report.json", run_dir / "config.json"
    if not report_path.is_file():
        return None
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if config.get("train_limit") is not None or config.get("test_limit") is not None:
        return None
    r = json.loads(report_path.read_text(encoding="utf-8"))
    return {**{k: r.get(k) for k in _FIELDS}, "report_figure": r["report_figure"], "target": r["target"],
            "metric": r.get("metric", "accuracy"), "metrics": headline_metrics(r), "source": "run"}


def summary_from_manifest(version_dir: Path) -> dict[str, Any]:
    """The summary a published model's manifest gives, for a run whose folder is gone."""
    m = read_manifest(version_dir)
    p = m["provenance"]
    return {**{k: p.get(k) for k in _FIELDS}, "report_figure": m["report_figure"], "target": m["target"],
            "metric": p["config"].get("metric", "accuracy"), "metrics": m["metrics"],
            "source": f"published manifest ({m['name']} {m['version']})"}


def collect(runs_dir: Path, results_dir: Path, store: Path | None = None) -> list[str]:
    """Write docs/results/NAME.json for every finished run (and published model); the names written."""
    found = [summary_from_manifest(latest(store, name)) for name in published_names(store)] if store else []
    found += [s for name in EXPERIMENTS if (s := summary_from_run(Path(runs_dir) / name))]
    written = []
    for summary in found:
        path = Path(results_dir) / f"{summary['experiment']}.json"
        kept = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if kept.get("note") and summary["finished_at"] == kept.get("finished_at"):
            summary = {**summary, "note": kept["note"]}  # a note written by hand about this very run stays
        if summary != kept and (summary["finished_at"] or "") >= (kept.get("finished_at") or ""):
            atomic_write_json(path, summary)
            written.append(summary["experiment"])
    return written


def collect_studies(sweeps_dir: Path, results_dir: Path) -> list[str]:
    """Copy each study's table and plot (runs/sweeps/NAME/) to docs/results/studies/; the names whose copy changed."""
    names = []
    for table in sorted(Path(sweeps_dir).glob("*/results.md")):
        name, out = table.parent.name, Path(results_dir) / "studies"
        if _smoke_study(table.parent):
            continue
        text = table.read_text(encoding="utf-8").replace("(comparison.png)", f"({name}.png)")
        plot = table.parent / "comparison.png"
        copies = [(out / f"{name}.md", text.encode("utf-8"))]
        if plot.is_file():
            copies.append((out / f"{name}.png", plot.read_bytes()))
        stale = [(path, data) for path, data in copies if not path.is_file() or path.read_bytes() != data]
        for path, data in stale:
            atomic_write_bytes(path, data)
        if stale:  # a study copied before and unchanged since is not news
            names.append(name)
    return names


def _smoke_study(folder: Path) -> bool:
    """Whether a study's figures come from a cut test split or a cut retrain. A search on fewer training
    images or epochs still scores on the whole test split (or held-out folds), and its table states it."""
    summary = folder / "summary.json"
    limits = json.loads(summary.read_text(encoding="utf-8")).get("limits", {}) if summary.is_file() else {}
    return "test_limit" in limits or "retrain_limit" in limits


def _ours(r: dict[str, Any]) -> str:
    m = r["metrics"]
    if "test_accuracy" in m:
        ours = f"{100 * m['test_accuracy']:.2f}%"
        if r.get("test_note"):
            ours += f" on its {r['test_size']} training images"
        if m.get("heldout_accuracy") is not None:
            n = r["train_size"]  # the folds partition the training split
            ours += (f"; held out ({m['heldout_folds']}-fold CV on the training split): "
                     f"{100 * m['heldout_accuracy']:.2f}% ({round(m['heldout_accuracy'] * n)}/{n})")
        return ours
    return f"MSE {m['test_mse']:.5f} (denoising {m['test_noisy_input_mse']:.4f} -> {m['test_denoise_mse']:.4f})"


def _verdict(r: dict[str, Any]) -> str:
    target, m = r.get("target"), r["metrics"]
    if target is None:
        return "no figure"
    value = m.get("test_accuracy", m.get("test_mse"))
    if beats_target(value, target, r.get("metric", "accuracy")):
        return "beaten"
    return "poor, as expected (note)" if EXPERIMENTS[r["experiment"]].failed_recipe else "**not reached**"


def _row(name: str, r: dict[str, Any]) -> str:
    if "metrics" not in r:  # a status entry written by hand: no finished run (its note says why)
        return f"| {name} | {r['report_figure']} | not run | **not run** (note) | | | | | {r['source']} |"
    seconds = r["wall_time_s"]
    wall = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    return (f"| {name} | {r['report_figure']} | {_ours(r)} | {_verdict(r)} | {r['epochs']} "
            f"| {wall} | {r['hardware']} | `{r['command']}` | {r['source']} |")


def results_table(results_dir: Path) -> tuple[str, list[str]]:
    """Markdown: one row per docs/results/NAME.json, in registry order; and the notes under it."""
    rows = ["| experiment | report figure | ours (same test split) | verdict | epochs | wall time | hardware "
            "| command | from |", "|---|---|---|---|---:|---:|---|---|---|"]
    notes = []
    for name, cfg in EXPERIMENTS.items():
        path = Path(results_dir) / f"{name}.json"
        if not path.is_file():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        rows.append(_row(name, r))
        if r.get("note"):
            notes.append(f"- **{name}**: {r['note']}")
        if cfg.failed_recipe and "metrics" in r:
            outcome = ("this run came out above the report's figure, still far below a sound recipe"
                       if _verdict(r) == "beaten" else "this run fails as the report's did")
            notes.append(f"- **{name}** reproduces a failed recipe on purpose: {cfg.failed_recipe}; {outcome}.")
    return "\n".join(rows), notes


_INTRO = (
    "# Results\n\nEvery finished run, collected by `python -m training.report` into `docs/results/NAME.json` "
    "(committed, so rows survive the run folders) and rendered from there. \"from\" says where a row was "
    "measured: a run collected from `runs/`, or a published model's manifest in `models_store/` whose run folder "
    "is gone (`--from-store`). Test figures are on the official test split of each data set (for the five-class "
    "FashionMNIST experiments: the 5,000 test images of those classes; for the heart table, which has none: a "
    "fixed stratified 200-row split; the 27 Greek letters have no test split at all, so their row also gives "
    "the leave-one-out figure), measured once at the end of training; nothing was selected on the test set. "
    "Wall times are as measured, training included, on machines that were often running other jobs at the same "
    "time; clean throughput figures are in [BENCHMARKS.md](BENCHMARKS.md).\n\n")


def render(results_dir: Path) -> str:
    table, notes = results_table(results_dir)
    studies = [f"- [{p.stem}](results/studies/{p.name}): {_first_sentence(p)}"
               for p in sorted((Path(results_dir) / "studies").glob("*.md"))]
    return (_INTRO + table + "\n" + ("\nNotes:\n\n" + "\n".join(notes) + "\n" if notes else "")
            + ("\nStudies (`python -m training.sweep NAME`), each table as its sweep wrote it:\n\n"
               + "\n".join(studies) + "\n" if studies else ""))


def _first_sentence(study_table: Path) -> str:
    """The study's description: the first line after its title."""
    return next(line for line in study_table.read_text(encoding="utf-8").splitlines()[1:] if line.strip())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.report", description=__doc__.split("\n")[0])
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--results", type=Path, default=Path("docs/results"),
                   help="one committed JSON summary per experiment (default: docs/results)")
    p.add_argument("--from-store", type=Path, metavar="STORE",
                   help="also collect each published model's latest manifest (rows whose run folder is gone)")
    p.add_argument("--sweeps-dir", type=Path, default=Path("runs/sweeps"),
                   help="where studies wrote their tables (default: runs/sweeps)")
    p.add_argument("--out", type=Path, default=Path("docs/RESULTS.md"))
    args = p.parse_args(argv)
    written = collect(args.runs_dir, args.results, args.from_store) + collect_studies(args.sweeps_dir, args.results)
    text = render(args.results)
    atomic_write_text(args.out, text)
    print(text)
    print(f"collected into {args.results}: {', '.join(written) or 'nothing new'}")


if __name__ == "__main__":
    main()
