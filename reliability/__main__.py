"""python -m reliability [GROUP ...] [--store DIR]: the long reliability checks, a pass/fail line each.

Groups: fuzz, soak, faults, adversarial, prometheus, training (default: all, in that order; about 40 minutes
on 2 cores).
Every result is written to runs/reliability/GROUP.json; docs/RELIABILITY.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import adversarial, faults, fuzz, prometheus, soak, training_kills
from .server import REPO

GROUPS = ("fuzz", "soak", "faults", "adversarial", "prometheus", "training")


def run_group(group: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    work = args.out / group
    if group == "fuzz":
        return [fuzz.fuzz(args.store, work, args.fuzz_examples, args.images)]
    if group == "soak":
        return [soak.soak(args.store, work, args.soak_seconds)]
    if group == "prometheus":
        return [prometheus.prometheus_check(args.store, work)]
    if group in ("faults", "adversarial"):
        checks = faults.CHECKS if group == "faults" else adversarial.CHECKS
        return [check(args.store, work / name) for name, check in checks.items()]
    return [training_kills.run_trials(args.trials, work)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.splitlines()[0])
    p.add_argument("groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)} (default: all)")
    p.add_argument("--store", type=Path, default=REPO / "models_store", help="store to serve (default: ./models_store)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "reliability", help="where results and logs go")
    p.add_argument("--fuzz-examples", type=int, default=1000, help="schemathesis cases per operation, at most")
    p.add_argument("--images", type=int, default=500, help="Hypothesis pictures, each sent to 2 endpoints")
    p.add_argument("--soak-seconds", type=int, default=600)
    p.add_argument("--trials", type=int, default=20, help="training runs killed and resumed")
    args = p.parse_args(argv)
    if set(args.groups) - set(GROUPS):
        p.error(f"unknown group {sorted(set(args.groups) - set(GROUPS))}; choose from {', '.join(GROUPS)}")
    passed = True
    for group in args.groups or GROUPS:
        results = run_group(group, args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{group}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        for result in results:
            passed &= result["passed"]
            print(f"{'PASS' if result['passed'] else 'FAIL'} {result['check']}: {json.dumps(result['figures'])}"
                  + "".join(f"\n    {p}" for p in result["problems"]), flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
