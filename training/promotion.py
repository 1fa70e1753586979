"""The promotion gate: a published version goes live only when it scores at least the live one's figure.

A finished run publishes its version as a candidate, then decide() says whether it goes live: with
--promote auto (the default) when nothing is live, or when its test figure on the same test split is at
least the live version's (accuracy: higher is better; reconstruction MSE: lower is better); always or
never as asked. Torch-free: it reads manifests only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class Decision:
    promote: bool
    why: str  # "98.50% >= live v2's 98.42%", for the run's report and its last line

    def sentence(self, version: str) -> str:
        return f"{version} published" + (" and promoted" if self.promote else ", not promoted") + f": {self.why}"


def headline(manifest: Mapping[str, Any]) -> tuple[str, float, bool] | None:
    """(metric, value, higher is better) of a version's test figure, or None when it has none."""
    metrics = manifest.get("metrics", {})
    if isinstance(metrics.get("test_accuracy"), (int, float)):
        return "test_accuracy", float(metrics["test_accuracy"]), True
    if isinstance(metrics.get("test_mse"), (int, float)):
        return "test_mse", float(metrics["test_mse"]), False
    return None


def shown(metric: str, value: float) -> str:
    return f"{value:.2%}" if metric == "test_accuracy" else f"MSE {value:.5f}"


def _split(manifest: Mapping[str, Any]) -> tuple[Any, Any]:
    provenance = manifest.get("provenance", {})
    return provenance.get("data_source"), provenance.get("test_size")


def decide(policy: str, candidate: Mapping[str, Any], live: Mapping[str, Any] | None) -> Decision:
    """Whether `candidate` (a manifest) replaces `live` (the live version's manifest, None if none)."""
    if policy not in POLICIES:
        raise ValueError(f"--promote must be one of {', '.join(POLICIES)}, not {policy!r}")
    if policy != "auto":
        return Decision(policy == "always", f"--promote {policy}")
    if live is None:
        return Decision(True, "nothing was live")
    version, ours, theirs = live.get("version", "?"), headline(candidate), headline(live)
    if ours is None or theirs is None or ours[0] != theirs[0]:
        return Decision(False, f"live {version} has no figure to compare with; promote it by hand if it is better "
                               "(python -m training.store promote)")
    if _split(candidate) != _split(live):
        (source, size), (live_source, live_size) = _split(candidate), _split(live)
        return Decision(False, f"live {version} was scored on another test split ({live_size} items of "
                               f"{live_source}; this run: {size} of {source}): compare them, then promote by "
                               "hand (python -m training.store promote)")
    metric, value, higher = ours
    better_or_equal = value >= theirs[1] if higher else value <= theirs[1]
    relation = (">=" if higher else "<=") if better_or_equal else ("<" if higher else ">")
    return Decision(better_or_equal, f"{shown(metric, value)} {relation} live {version}'s {shown(metric, theirs[1])}")
