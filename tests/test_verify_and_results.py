"""The published model scores over PNG bytes what its manifest claims; runs collect into RESULTS.md."""

from __future__ import annotations

from pathlib import Path

from test_experiments import run_tiny
from training import report, verify


def test_published_classifier_matches_its_manifest_over_png(fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_cnn", fashion_root, tmp_path)
    result = verify.verify_published(tmp_path / "store", "fashion", fashion_root)
    assert result["matches"] and result["images"] == 64 and result["version"] == "v1"
    assert verify.main(["fashion", "--store", str(tmp_path / "store"), "--data-root", str(fashion_root)]) == 0


def test_results_table_lists_finished_runs(fashion_root: Path, tmp_path: Path) -> None:
    run_tiny("fashion_autoencoder", fashion_root, tmp_path)
    out = tmp_path / "RESULTS.md"
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = out.read_text()
    assert "| fashion_autoencoder |" in text and "MSE" in text and "fashion_cnn |" not in text
