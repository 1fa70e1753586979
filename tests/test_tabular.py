"""The heart table: the CSV contract, the fixed stratified split, encodings fitted on training rows only,
"not measured" zeros handled inside the exported graph, and a manifest the service can use as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from synthetic import HEART_HEADER, write_heart_csv
from test_experiments import run_tiny
from training import tabular
from training.data import DataNotFound, load_data
from training.registry import get_config
from training.store import latest, read_manifest

HEART = get_config("heart_mlp")


def _row(**changes) -> dict:
    row = {"Age": 54, "Sex": "M", "ChestPainType": "ASY", "RestingBP": 140, "Cholesterol": 239, "FastingBS": 0,
           "RestingECG": "Normal", "MaxHR": 160, "ExerciseAngina": "N", "Oldpeak": 1.2, "ST_Slope": "Up"}
    return {**row, **changes}


def test_split_is_stratified_fixed_and_report_sized() -> None:
    labels = np.array([1] * 508 + [0] * 410)  # the real table's classes
    train, test = tabular.stratified_split(labels)
    assert (len(train), len(test)) == (718, 200) and not set(train) & set(test)
    assert abs(labels[test].mean() - labels.mean()) < 0.01
    again = tabular.stratified_split(labels)
    assert np.array_equal(again[1], test)


def test_scaling_is_fitted_on_training_rows_without_missing_zeros(data_root: Path) -> None:
    bundle = load_data(HEART, data_root)
    columns = {c["name"]: c for c in bundle.tabular["columns"]}
    table, labels = tabular.parse_rows(_csv_rows(data_root / "heart" / "heart.csv"))
    train_rows, _ = tabular.stratified_split(labels)
    cholesterol = table["Cholesterol"][train_rows]
    assert columns["Cholesterol"]["mean"] == pytest.approx(cholesterol[cholesterol != 0].mean())
    assert columns["Cholesterol"]["missing_value"] == 0 and "missing_value" not in columns["Age"]
    assert columns["Age"]["mean"] == pytest.approx(table["Age"][train_rows].mean())
    assert bundle.train.inputs.dtype == torch.float32 and bundle.input_shape == (20,)  # 6 numbers + 14 one-hot


def _csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_missing_csv_and_missing_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="HeartDisease") as err:
        load_data(HEART, tmp_path)
    assert "Cholesterol" in str(err.value) and "--data-root" in str(err.value)
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(h for h in HEART_HEADER if h not in ("MaxHR", "ST_Slope")) + "\n")
    with pytest.raises(DataNotFound, match="missing column\\(s\\) MaxHR, ST_Slope"):
        load_data(HEART, bad)


def test_unknown_category_names_the_line(tmp_path: Path) -> None:
    path = write_heart_csv(tmp_path / "heart.csv", rows=20)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",M,", ",X,").replace(",F,", ",X,")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataNotFound, match="line 4: Sex is 'X'"):
        load_data(HEART, tmp_path)


def test_report_encoding_is_codes_and_raw_numbers(data_root: Path) -> None:
    bundle = load_data(get_config("heart_mlp_report"), data_root)
    assert bundle.input_shape == (11,)
    ages = bundle.train.inputs[:, 0]
    assert ages.min() >= 30 and ages.max() < 75  # raw years, unscaled
    assert set(bundle.train.inputs[:, 1].tolist()) <= {0.0, 1.0}  # Sex as its code


def test_published_heart_model_serves_rows_as_they_are(data_root: Path, tmp_path: Path) -> None:
    """The service's own encoder, fed the manifest, gives what the training encoding gave; 0 = not measured."""
    from serving.tabular import HeartRow, check_tabular_spec, encode_row

    run_tiny("heart_mlp", data_root, tmp_path)
    version = latest(tmp_path / "store", "heart")
    manifest = read_manifest(version)
    spec = manifest["preprocessing"]["tabular"]
    assert manifest["task"] == "classify" and manifest["labels"] == ["Normal", "HeartDisease"]
    assert manifest["input"]["name"] == "features" and manifest["output"] == {
        "name": "probability", "shape": [None, 1], "dtype": "float32"}
    check_tabular_spec(spec, manifest["input"]["shape"][1])

    row = _row()
    ours = tabular.encode({k: np.array([v], dtype=object if k in tabular.HEART_CATEGORIES else np.float64)
                           for k, v in row.items()}, spec)
    np.testing.assert_allclose(encode_row(HeartRow(**row), spec), ours, rtol=1e-6)

    session = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    mean = next(c["mean"] for c in spec["columns"] if c["name"] == "Cholesterol")

    def probability(**changes) -> float:
        return float(session.run(None, {"features": encode_row(HeartRow(**_row(**changes)), spec)})[0][0, 0])

    assert 0 < probability() < 1
    # Not measured: the mean stands in, plus the flag; so it differs from sending the mean itself...
    flagged, at_mean = probability(Cholesterol=0), probability(Cholesterol=mean)
    assert flagged != pytest.approx(at_mean, abs=1e-7)
    # ...and a value that is merely low is a measurement, not a missing one.
    assert probability(Cholesterol=85) != pytest.approx(flagged, abs=1e-7)


def test_missing_indicators_impute_and_flag() -> None:
    from training.models import MissingIndicators

    stage = MissingIndicators(3, [(1, -4.0, 0.01)])
    x = torch.tensor([[1.0, -4.0, 2.0], [1.0, 0.5, 2.0]])
    out = stage(x)
    assert out.tolist() == [[1.0, 0.0, 2.0, 1.0], [1.0, 0.5, 2.0, 0.0]]
