"""Classification metrics against a hand-worked example."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import classification_metrics


def test_metrics_on_a_small_known_case() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 1])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [0, 1, 0]]
    a, b, c = m["per_class"]
    assert (a["precision"], a["recall"]) == (1.0, pytest.approx(2 / 3))
    assert (b["precision"], b["recall"]) == (0.5, 1.0)
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)  # never predicted: 0, not NaN
    assert a["f1"] == pytest.approx(0.8) and b["f1"] == pytest.approx(2 / 3)
    assert m["macro_avg"]["f1"] == pytest.approx((0.8 + 2 / 3) / 3)
    assert m["weighted_avg"]["recall"] == pytest.approx(m["accuracy"])
