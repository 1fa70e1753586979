"""The published model scores over PNG bytes what its manifest claims; runs collect into RESULTS.md."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_experiments import run_tiny
from training import report, verify
from training.registry import beats_target, get_config


def test_published_classifier_matches_its_manifest_over_png(fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_cnn", fashion_root, tmp_path)
    result = verify.verify_published(tmp_path / "store", "fashion", fashion_root)
    assert result["matches"] and result["images"] == 64 and result["version"] == "v1"
    assert verify.main(["fashion", "--store", str(tmp_path / "store"), "--data-root", str(fashion_root)]) == 0


def test_the_same_check_runs_through_the_service(fashion_root: Path, tmp_path: Path) -> None:
    from test_serving import serve

    run_tiny("fashion_cnn", fashion_root, tmp_path)
    with serve(tmp_path / "store") as client:  # a TestClient is an httpx.Client of the in-process service
        result = verify.verify_published(tmp_path / "store", "fashion", fashion_root, client)
    assert result["matches"] and result["answered_by"] == ["v1"] and result["images"] == 64


def test_a_version_published_without_an_answer_profile_gets_the_one_training_records(
        fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_cnn", fashion_root, tmp_path)
    manifest_file = tmp_path / "store" / "fashion" / "v1" / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    recorded = manifest["metrics"].pop("answers")  # as the versions published before profiles existed
    manifest_file.write_text(json.dumps(manifest))
    args = ["fashion", "--store", str(tmp_path / "store"), "--data-root", str(fashion_root), "--profile"]
    assert verify.main(args) == 0
    profile = json.loads(manifest_file.read_text())["metrics"]["answers"]
    assert profile["label_share"] == recorded["label_share"] and profile["count"] == recorded["count"]
    assert profile["top1_mean"] == pytest.approx(recorded["top1_mean"], abs=1e-4)


def test_verify_says_what_it_cannot_check(fashion_root: Path, tmp_path: Path, capsys) -> None:
    run_tiny("fashion_autoencoder", fashion_root, tmp_path)
    store = ["--store", str(tmp_path / "store"), "--data-root", str(fashion_root)]
    assert verify.main(["fashion_reconstruction", *store]) == 2
    assert verify.main(["digits", *store]) == 2
    err = capsys.readouterr().err
    assert "fashion_reconstruction is not an image classifier" in err and "no published model 'digits'" in err


def test_results_table_lists_finished_runs(fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_autoencoder", fashion_root, tmp_path)
    out, results, run_dir = tmp_path / "RESULTS.md", tmp_path / "results", tmp_path / "runs" / "fashion_autoencoder"
    args = ["--runs-dir", str(tmp_path / "runs"), "--results", str(results), "--out", str(out),
            "--sweeps-dir", str(tmp_path / "sweeps")]
    report.main(args)
    assert not results.exists() or not any(results.iterdir())  # a run on a subset of the data is a smoke run
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**config, "train_limit": None, "test_limit": None}))
    report.main(args)
    text = out.read_text()
    assert "| fashion_autoencoder |" in text and "MSE" in text and "fashion_cnn |" not in text
    assert json.loads((results / "fashion_autoencoder.json").read_text())["source"] == "run"


def _fake_run(runs: Path, name: str, accuracy: float, finished_at: str, **config) -> None:
    """A finished run's folder as training.run leaves it, reduced to what training.report reads."""
    cfg = get_config(name)
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"name": name, "train_limit": None, "test_limit": None,
                                                    **config}))
    (folder / "report.json").write_text(json.dumps({
        "experiment": name, "report_figure": cfg.report_figure, "target": cfg.target, "metric": cfg.metric,
        "metrics": {"test_accuracy": accuracy, "per_sample": [0] * 100}, "epochs": 3, "wall_time_s": 90.0,
        "hardware": "test CPU", "command": f"python -m training.fit {name}", "data_source": "synthetic",
        "train_size": 100, "test_size": 50, "test_note": "", "finished_at": finished_at, "git_commit": "abc"}))


def test_results_survive_their_run_folders(tmp_path: Path) -> None:
    runs, results, store, out = tmp_path / "runs", tmp_path / "results", tmp_path / "store", tmp_path / "R.md"
    _fake_run(runs, "mnist_mlp", 0.975, "2026-01-02T00:00:00+00:00")
    _fake_run(runs, "cifar_cnn2", 0.60, "2026-01-02T00:00:00+00:00")
    _fake_run(runs, "heart_mlp_report", 0.445, "2026-01-02T00:00:00+00:00")
    _fake_run(runs, "mnist_cnn16", 0.999, "2026-01-02T00:00:00+00:00", train_limit=256)  # a smoke run
    version = store / "digits" / "v1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({
        "name": "digits", "version": "v1", "report_figure": "99.12% (Report E)", "target": 0.9912,
        "metrics": {"test_accuracy": 0.9915, "test_size": 10000},
        "provenance": {"experiment": "mnist_cnn32", "config": {"metric": "accuracy"}, "epochs": 8,
                       "wall_time_s": 919.0, "hardware": "AMD EPYC, 2 cores (CPU)", "train_size": 60000,
                       "test_size": 10000, "command": "python -m training.fit mnist_cnn32",
                       "finished_at": "2026-01-01T00:00:00+00:00", "git_commit": "def", "test_note": ""}}))
    study = tmp_path / "sweeps" / "mnist_normalization"
    study.mkdir(parents=True)
    (study / "results.md").write_text("# Study mnist_normalization\n\nWith and without.\n\n"
                                      "![comparison](comparison.png)\n")
    args = ["--runs-dir", str(runs), "--results", str(results), "--out", str(out),
            "--sweeps-dir", str(tmp_path / "sweeps")]

    report.main([*args, "--from-store", str(store)])
    assert sorted(p.stem for p in results.glob("*.json")) == ["cifar_cnn2", "heart_mlp_report", "mnist_cnn32",
                                                             "mnist_mlp"]
    assert "per_sample" not in (results / "mnist_mlp.json").read_text()
    assert "(mnist_normalization.png)" in (results / "studies" / "mnist_normalization.md").read_text()
    shutil.rmtree(runs)  # a fresh clone: no run folders, the committed summaries remain
    shutil.rmtree(study)
    report.main(args)
    rows = {line.split(" | ")[0].strip("| "): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert "97.50% | beaten | 3 | 1.5 min | test CPU | `python -m training.fit mnist_mlp` | run |" in rows["mnist_mlp"]
    assert "99.15% | beaten | 8 | 15.3 min" in rows["mnist_cnn32"] and "published manifest (digits v1)" in rows[
        "mnist_cnn32"]
    assert "**not reached**" in rows["cifar_cnn2"] and "poor, as expected" in rows["heart_mlp_report"]
    assert "mnist_cnn16" not in rows and "saturates" in out.read_text()
    assert "- [mnist_normalization](results/studies/mnist_normalization.md): With and without." in out.read_text()

    _fake_run(runs, "mnist_mlp", 0.90, "2025-12-31T00:00:00+00:00")  # older than the kept row: ignored
    _fake_run(runs, "cifar_cnn2", 0.71, "2026-02-01T00:00:00+00:00")  # newer: replaces it
    report.main(args)
    text = out.read_text()
    assert "97.50%" in text and "90.00%" not in text and "71.00% | beaten" in text and "60.00%" not in text


def test_a_note_written_about_a_run_stays_until_a_newer_run(tmp_path: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    _fake_run(runs, "mnist_mlp", 0.975, "2026-01-02T00:00:00+00:00")
    report.collect(runs, results)
    kept = json.loads((results / "mnist_mlp.json").read_text())
    (results / "mnist_mlp.json").write_text(json.dumps({**kept, "note": "measured on a loaded machine"}))
    assert report.collect(runs, results) == []  # the same run collected again keeps its note
    assert json.loads((results / "mnist_mlp.json").read_text())["note"] == "measured on a loaded machine"
    _fake_run(runs, "mnist_mlp", 0.98, "2026-02-01T00:00:00+00:00")
    assert report.collect(runs, results) == ["mnist_mlp"]
    assert "note" not in json.loads((results / "mnist_mlp.json").read_text())  # about another run


def test_a_study_is_copied_again_only_when_it_changed(tmp_path: Path) -> None:
    study = tmp_path / "sweeps" / "fashion_epochs"
    study.mkdir(parents=True)
    (study / "results.md").write_text("# Study fashion_epochs\n\n![comparison](comparison.png)\n")
    assert report.collect_studies(tmp_path / "sweeps", tmp_path / "results") == ["fashion_epochs"]
    assert report.collect_studies(tmp_path / "sweeps", tmp_path / "results") == []
    (study / "results.md").write_text("# Study fashion_epochs\n\nrerun\n")
    assert report.collect_studies(tmp_path / "sweeps", tmp_path / "results") == ["fashion_epochs"]


@pytest.mark.parametrize("limits, copied", [({}, True), ({"train_limit": 6000}, True),
                                            ({"train_limit": 1024, "test_limit": 512}, False),
                                            ({"retrain_limit": 64}, False)])
def test_a_smoke_study_is_not_copied(tmp_path: Path, limits: dict, copied: bool) -> None:
    study = tmp_path / "sweeps" / "fashion_epochs"
    study.mkdir(parents=True)
    (study / "results.md").write_text("# Study fashion_epochs\n")
    (study / "summary.json").write_text(json.dumps({"study": "fashion_epochs", "limits": limits}))
    assert report.collect_studies(tmp_path / "sweeps", tmp_path / "results") == (["fashion_epochs"] if copied else [])


def test_a_target_is_beaten_upwards_for_accuracy_and_downwards_for_an_error() -> None:
    assert beats_target(0.9791, 0.9791) and not beats_target(0.9790, 0.9791)
    assert beats_target(0.009, 0.01, "mse") and not beats_target(0.011, 0.01, "mse")
