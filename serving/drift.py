"""python -m serving.drift DIR [--store PATH]: a prediction log (serving.predictions) against each version's
test split, as its manifest records it (metrics.answers): how often each label is answered, how sure the
answers are, how many are unsure. Torch-free; reads the log files, not the service.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path
from typing import Any, Iterator

from training.answers import UNSURE_BELOW
from training.store import StoreError, read_manifest, store_from_env, version_dir

CONFIDENCE_DROP = 0.15  # mean top-1 probability this far under the test split's is worth a look (as the alert)
SHARE_SHIFT = 0.20      # a label answered this much more or less often than on the test split, likewise


def records(folder: Path) -> Iterator[dict[str, Any]]:
    """Every record of every log file under `folder`; a torn last line (a worker killed mid-write) is skipped."""
    for path in sorted(folder.glob("predictions-*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "model" in record and "probability" in record:
                yield record


def summarise(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (model, version): answers, label shares, mean top-1 probability, unsure share."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for record in records(folder):
        groups[(record["model"], record.get("version") or "?")].append(record)
    summary = {}
    for key, group in sorted(groups.items()):
        labels = collections.Counter(r.get("label") for r in group)
        top1 = [float(r["probability"]) for r in group]
        summary[key] = {"count": len(group), "label_share": {k: v / len(group) for k, v in labels.items()},
                        "top1_mean": sum(top1) / len(top1),
                        "unsure_share": sum(p < UNSURE_BELOW for p in top1) / len(group)}
    return summary


def compare(live: dict[str, Any], test: dict[str, Any] | None) -> list[str]:
    """What in `live` is far from `test` (the manifest's metrics.answers), as sentences."""
    if not test:
        return ["no test-split profile in its manifest (published before profiles were recorded)"]
    notes = []
    if live["top1_mean"] < (test.get("top1_mean") or 0) - CONFIDENCE_DROP:
        notes.append(f"mean confidence {live['top1_mean']:.1%} against {test['top1_mean']:.1%} on the test split")
    for label in sorted(set(live["label_share"]) | set(test["label_share"])):
        ours, theirs = live["label_share"].get(label, 0.0), test["label_share"].get(label, 0.0)
        if abs(ours - theirs) > SHARE_SHIFT:
            notes.append(f"{label} answered {ours:.0%} of the time against {theirs:.0%} on the test split")
    return notes


def report(folder: Path, store: Path) -> str:
    lines = [f"# Drift report: {folder}", "",
             "| model | version | answers | mean confidence (test) | unsure (test) | worth a look |",
             "| --- | --- | --- | --- | --- | --- |"]
    for (model, version), live in summarise(folder).items():
        try:
            test = read_manifest(version_dir(store, model, version)).get("metrics", {}).get("answers")
        except (StoreError, OSError, ValueError):
            test = None
        notes = compare(live, test)
        shown_test = (f" ({test['top1_mean']:.1%})" if test and test.get("top1_mean") is not None else "")
        unsure_test = f" ({test['unsure_share']:.1%})" if test else ""
        lines.append(f"| {model} | {version} | {live['count']:,} | {live['top1_mean']:.1%}{shown_test} | "
                     f"{live['unsure_share']:.1%}{unsure_test} | {'; '.join(notes) or 'no'} |")
    if len(lines) == 4:
        lines.append("| (no records) | | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.drift", description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="the prediction log's folder ($SERVING_PREDICTION_LOG)")
    p.add_argument("--store", type=Path, default=None, help="the store (default: $MODELS_STORE, else ./models_store)")
    args = p.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: no folder {args.folder}", file=sys.stderr)
        return 1
    print(report(args.folder, args.store or store_from_env()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
