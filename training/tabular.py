"""The heart failure table: its schema, a fixed stratified split, and feature encodings as plain data.

An encoding is a dict (never a pickled object) in the layout serving/tabular.py reads from a manifest's
``preprocessing.tabular``: columns in feature order, each ``numeric`` (one value, (x - mean) / std) or
``categorical`` (one 0/1 indicator per category, in the order listed). It is fitted on the training rows
only, travels in the checkpoint, and is published in the manifest.

Impossible values: a living patient has neither 0 mm Hg resting blood pressure nor 0 mg/dl cholesterol.
The data set writes 0 where the value was not measured (172 Cholesterol rows, nearly all from one of its
hospitals, and 1 RestingBP row), and those rows are far from random: dropping them would drop a fifth of the
data and much of its signal. So 0 is kept and read as "not measured": the column's mean and std are fitted
on the measured values only, and the model's graph (models.MissingIndicators) replaces a 0 by the mean and
adds a 0/1 "not measured" input per such column. A client sends the row as it is, 0 included.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

HEART_FEATURES = ("Age", "Sex", "ChestPainType", "RestingBP", "Cholesterol", "FastingBS", "RestingECG",
                  "MaxHR", "ExerciseAngina", "Oldpeak", "ST_Slope")
HEART_TARGET = "HeartDisease"
HEART_COLUMNS = (*HEART_FEATURES, HEART_TARGET)
HEART_CLASSES = ("Normal", "HeartDisease")  # target 0 and 1; the model's probability is of the second
HEART_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Sex": ("F", "M"),
    "ChestPainType": ("TA", "ATA", "NAP", "ASY"),
    "RestingECG": ("Normal", "ST", "LVH"),
    "ExerciseAngina": ("N", "Y"),
    "ST_Slope": ("Up", "Flat", "Down"),
}
NOT_MEASURED = {"RestingBP": 0.0, "Cholesterol": 0.0}  # column -> the value the data set uses for "missing"
TEST_SHARE = 200 / 918   # Report C trained on 718 of the 918 rows; the other 200 are the test split
SPLIT_SEED = 0           # fixed: the split is part of the data set, not of a run (--seed leaves it alone)
DECISION_THRESHOLD = 0.5  # probability from which the positive class is answered


def parse_rows(rows: Sequence[Mapping[str, str]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CSV rows (strings) -> {column: values} (floats or category strings) and 0/1 labels.

    A ValueError names the line and column of a bad cell.
    """
    table: dict[str, list] = {name: [] for name in HEART_FEATURES}
    labels = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        for name in HEART_FEATURES:
            value = row[name].strip()
            if name in HEART_CATEGORIES:
                if value not in HEART_CATEGORIES[name]:
                    raise ValueError(f"line {line}: {name} is {value!r}; expected one of "
                                     f"{', '.join(HEART_CATEGORIES[name])}")
                table[name].append(value)
            else:
                table[name].append(_number(value, name, line))
        target = _number(row[HEART_TARGET].strip(), HEART_TARGET, line)
        if target not in (0, 1):
            raise ValueError(f"line {line}: {HEART_TARGET} is {target:g}; expected 0 or 1")
        labels.append(int(target))
    columns = {k: np.asarray(v, dtype=object if k in HEART_CATEGORIES else np.float64) for k, v in table.items()}
    return columns, np.asarray(labels, dtype=np.int64)


def _number(value: str, name: str, line: int) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"line {line}: {name} is {value!r}, not a number") from None
    if not np.isfinite(number):
        raise ValueError(f"line {line}: {name} is {value!r}")
    return number


def stratified_split(labels: np.ndarray, test_share: float = TEST_SHARE,
                     seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices; each class is split in the same proportion, reproducibly."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        k = round(test_share * len(rows))
        test.append(rows[:k])
        train.append(rows[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def fit_onehot(train: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One-hot categories and standardised numbers, fitted on the training rows; "not measured" values excluded."""
    columns = []
    for name in HEART_FEATURES:
        if name in HEART_CATEGORIES:
            columns.append({"name": name, "kind": "categorical", "categories": list(HEART_CATEGORIES[name])})
            continue
        values = train[name].astype(np.float64)
        if name in NOT_MEASURED:
            values = values[values != NOT_MEASURED[name]]
        column = {"name": name, "kind": "numeric", "mean": float(values.mean()), "std": float(values.std()) or 1.0}
        if name in NOT_MEASURED:
            column["missing_value"] = NOT_MEASURED[name]
        columns.append(column)
    return {"columns": columns, "threshold": DECISION_THRESHOLD}


def report_codes() -> dict[str, Any]:
    """Report C's encoding: categories as their integer codes, numbers as they are. Not servable (kind "code")."""
    columns = [{"name": n, "kind": "code", "categories": list(HEART_CATEGORIES[n])} if n in HEART_CATEGORIES
               else {"name": n, "kind": "numeric", "mean": 0.0, "std": 1.0} for n in HEART_FEATURES]
    return {"columns": columns, "threshold": DECISION_THRESHOLD}


def encode(table: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> np.ndarray:
    """(N, F) float32 features, laid out as `spec` says; serving/tabular.py encodes each request with it too."""
    parts = []
    for column in spec["columns"]:
        values = table[column["name"]]
        if column["kind"] == "numeric":
            parts.append(((values.astype(np.float64) - column["mean"]) / column["std"])[:, None])
        elif column["kind"] == "categorical":
            parts.append(np.stack([values == c for c in column["categories"]], axis=1).astype(np.float64))
        elif column["kind"] == "code":
            parts.append(np.asarray([column["categories"].index(v) for v in values], np.float64)[:, None])
        else:
            raise ValueError(f"unknown column kind {column['kind']!r}")
    return np.concatenate(parts, axis=1).astype(np.float32)


def missing_inputs(spec: Mapping[str, Any]) -> list[tuple[int, float, float]]:
    """(feature index, encoded "not measured" value, tolerance) for each column that has one.

    The tolerance is half a unit of the raw measurement, so only that value (as a client's float) matches.
    """
    found, index = [], 0
    for column in spec["columns"]:
        if column["kind"] == "numeric" and "missing_value" in column:
            code = (column["missing_value"] - column["mean"]) / column["std"]
            found.append((index, code, 0.5 / column["std"]))
        index += len(column["categories"]) if column["kind"] == "categorical" else 1
    return found
