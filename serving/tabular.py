"""The heart-disease row: what a request must hold, and how a model's manifest says to encode it.

A tabular model's manifest carries its encoding under ``preprocessing.tabular``::

    "input":  {"name": "features", "shape": [null, 20], "dtype": "float32"},
    "output": {"name": "probability", "shape": [null, 1], "dtype": "float32"},
    "labels": ["Normal", "HeartDisease"],          # labels[1] is the positive class
    "preprocessing": {"tabular": {
        "columns": [
            {"name": "Age", "kind": "numeric", "mean": 53.5, "std": 9.43},
            {"name": "Sex", "kind": "categorical", "categories": ["F", "M"]},
            ...
        ],
        "threshold": 0.5                           # probability from which labels[1] is answered
    }}

The feature vector is laid out column by column in that order: a ``numeric`` column gives one value,
(x - mean) / std; a ``categorical`` column gives one 0/1 indicator per category, in the order listed
(one-hot): training.tabular.encode, the encoding training used, on a table of one row. The
graph takes float32 (B, F) "features" and gives (B, 1) "probability" of labels[1] (a sigmoid output).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.tabular import encode

from .asgi import echo
from .errors import InvalidField

_NUMBER = dict(strict=True, allow_inf_nan=False)  # JSON numbers only: no "54", no true, no NaN


class HeartRow(BaseModel):
    """One patient, as a row of the heart failure prediction data set (heart.csv).

    Numbers must be plausible human values (inclusive); the data set's own lie well inside. RestingBP
    and Cholesterol include 0 because the data set uses 0 where the measurement is missing.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"example": {
        "Age": 54, "Sex": "M", "ChestPainType": "ASY", "RestingBP": 140, "Cholesterol": 239,
        "FastingBS": 0, "RestingECG": "Normal", "MaxHR": 160, "ExerciseAngina": "N", "Oldpeak": 1.2,
        "ST_Slope": "Up"}})

    Age: Annotated[float, Field(ge=1, le=120, description="years", **_NUMBER)]
    Sex: Literal["M", "F"]
    ChestPainType: Literal["TA", "ATA", "NAP", "ASY"] = Field(
        description="typical angina, atypical angina, non-anginal pain, asymptomatic")
    RestingBP: Annotated[float, Field(ge=0, le=300, description="resting blood pressure, mm Hg", **_NUMBER)]
    Cholesterol: Annotated[float, Field(ge=0, le=1000, description="serum cholesterol, mg/dl", **_NUMBER)]
    FastingBS: Annotated[int, Field(ge=0, le=1, strict=True, json_schema_extra={"enum": [0, 1]},
                                    description="1 if fasting blood sugar > 120 mg/dl, else 0")]
    RestingECG: Literal["Normal", "ST", "LVH"]
    MaxHR: Annotated[float, Field(ge=40, le=250, description="maximum heart rate reached, bpm", **_NUMBER)]
    ExerciseAngina: Literal["Y", "N"]
    Oldpeak: Annotated[float, Field(ge=-10, le=10, description="ST depression, mm", **_NUMBER)]
    ST_Slope: Literal["Up", "Flat", "Down"]


def _width(column: Mapping[str, Any]) -> int:
    return len(column["categories"]) if column["kind"] == "categorical" else 1


SERVED_KINDS = ("numeric", "categorical")  # training.tabular's "code" kind only reproduces a report's failed recipe


def check_tabular_spec(spec: Mapping[str, Any], input_width: int | None) -> None:
    """Raise ValueError when a manifest's tabular section cannot encode a row into `input_width` values."""
    columns = spec.get("columns")
    if not columns:
        raise ValueError("preprocessing.tabular has no columns")
    for column in columns:
        if not isinstance(column.get("name"), str) or not column["name"]:
            raise ValueError(f"tabular column without a name: {column}")
        if column.get("kind") not in SERVED_KINDS:
            raise ValueError(f"tabular column {column['name']}: unknown kind {column.get('kind')!r}; "
                             f"known: {', '.join(SERVED_KINDS)}")
        if column["kind"] == "numeric" and not float(column.get("std", 0)) > 0:
            raise ValueError(f"tabular column {column['name']}: std must be positive")
    width = sum(_width(c) for c in columns)
    if input_width is not None and width != input_width:
        raise ValueError(f"tabular columns encode {width} features but the model takes {input_width}")


def heart_columns_missing(spec: Mapping[str, Any]) -> list[str]:
    """The model's columns a HeartRow does not hold: a table model /heart cannot feed (POST /tabular can)."""
    return [c["name"] for c in spec["columns"] if c["name"] not in HeartRow.model_fields]


def validate_row(row: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    """`row` checked against a table model's columns, as its manifest gives them: each present, numbers as
    finite JSON numbers, categories among the model's, nothing else. InvalidField (422) names every problem."""
    if not isinstance(row, Mapping):
        raise InvalidField(f"row: must be a JSON object of the model's columns, not {type(row).__name__}")
    problems, values = [], {}
    for column in spec["columns"]:
        name = column["name"]
        if name not in row:
            problems.append(f"{name}: Field required")
            continue
        value = row[name]
        if column["kind"] == "numeric":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name}: must be a finite number")
        elif str(value) not in [str(c) for c in column["categories"]] or isinstance(value, (dict, list, bool)):
            problems.append(f"{name}: must be one of {', '.join(str(c) for c in column['categories'])}")
        values[name] = value
    known = {c["name"] for c in spec["columns"]}
    problems += [f"{echo(str(name))}: Extra inputs are not permitted" for name in row if name not in known]
    if problems:
        raise InvalidField("; ".join(problems))
    return values


def encode_row(row: HeartRow | Mapping[str, Any], spec: Mapping[str, Any]) -> np.ndarray:
    """(1, F) float32 features for one validated row (a HeartRow, or validate_row's values), laid out as `spec`
    says: training.tabular.encode, the encoding the model was trained with, on a table of one row."""
    if isinstance(row, HeartRow):
        row = row.model_dump()
    for column in spec["columns"]:
        value, categories = row[column["name"]], [str(c) for c in column.get("categories", ())]
        if column["kind"] == "categorical" and str(value) not in categories:
            raise InvalidField(f"{column['name']}: {value!r} is unknown to this model; "
                               f"it knows {', '.join(categories)}")
    return encode({column["name"]: np.asarray([row[column["name"]]]) for column in spec["columns"]}, spec)
