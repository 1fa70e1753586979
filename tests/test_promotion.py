"""The promotion gate (training.promotion): a run's version goes live only when it is at least as good."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training import fit
from training.promotion import decide
from training.store import LIVE_FILE, MANIFEST_FILE, live, read_manifest
from test_experiments import run_tiny

SPLIT = {"data_source": "FashionMNIST (tiny)", "test_size": 64}


def manifest(version: str, **metrics: float) -> dict:
    return {"version": version, "metrics": metrics, "provenance": SPLIT}


@pytest.mark.parametrize("candidate, live_one, promoted, why", [
    (manifest("v3", test_accuracy=0.9850), manifest("v2", test_accuracy=0.9842), True, "98.50% >= live v2's 98.42%"),
    (manifest("v3", test_accuracy=0.9780), manifest("v2", test_accuracy=0.9842), False, "97.80% < live v2's 98.42%"),
    (manifest("v3", test_accuracy=0.9842), manifest("v2", test_accuracy=0.9842), True, ">="),
    (manifest("v2", test_mse=0.0090), manifest("v1", test_mse=0.0091), True, "MSE 0.00900 <= live v1's MSE 0.00910"),
    (manifest("v2", test_mse=0.0095), manifest("v1", test_mse=0.0091), False, "MSE 0.00950 > live v1's"),
    (manifest("v1", test_accuracy=0.5), None, True, "nothing was live"),
    (manifest("v3", test_accuracy=0.99), {**manifest("v2", test_accuracy=0.5), "provenance": {"test_size": 10_000}},
     False, "another test split"),
    (manifest("v3", test_accuracy=0.99), manifest("v2"), False, "no figure"),
])
def test_auto_promotes_what_is_at_least_as_good_on_the_same_split(candidate: dict, live_one: dict | None,
                                                                  promoted: bool, why: str) -> None:
    decision = decide("auto", candidate, live_one)
    assert decision.promote is promoted and why in decision.why, decision.why


def test_always_and_never_do_as_told() -> None:
    worse, better = manifest("v2", test_accuracy=0.1), manifest("v1", test_accuracy=0.9)
    assert decide("always", worse, better).promote and not decide("never", better, worse).promote
    assert decide("never", worse, better).sentence("v2") == "v2 published, not promoted: --promote never"
    with pytest.raises(ValueError, match="auto, always, never"):
        decide("sometimes", worse, better)


def test_a_worse_run_is_published_as_a_candidate_and_the_live_version_stays(fashion_root: Path, tmp_path: Path) -> None:
    first = run_tiny("fashion_cnn", fashion_root, tmp_path)
    store = tmp_path / "store"
    assert first["publication"]["promoted"] and live(store, "fashion").name == "v1"
    flattered = read_manifest(store / "fashion" / "v1")  # the live version claims a figure no run reaches
    flattered["metrics"]["test_accuracy"] = 1.01
    (store / "fashion" / "v1" / MANIFEST_FILE).write_text(json.dumps(flattered))
    second = run_tiny("fashion_cnn", fashion_root, tmp_path)
    assert second["publication"]["version"] == "v2" and not second["publication"]["promoted"]
    assert "< live v1's 101.00%" in second["publication"]["sentence"]
    assert live(store, "fashion").name == "v1" and (store / "fashion" / LIVE_FILE).exists()
    assert "v2 published, not promoted" in (tmp_path / "runs" / "fashion_cnn" / "report.md").read_text()


def test_the_command_says_what_happened_last(data_root: Path, tmp_path: Path, capsys) -> None:
    args = ["heart_mlp", "--epochs", "1", "--device", "cpu", "--data-root", str(data_root),
            "--runs-dir", str(tmp_path / "runs"), "--store", str(tmp_path / "store")]
    assert fit.main([*args, "--promote", "never"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "heart: v1 published, not promoted: --promote never"
    assert fit.main([*args, "--quick"]) == 0  # a smoke run
    assert capsys.readouterr().out.splitlines()[-1] == "heart: not published (a smoke run on part of the data)"
