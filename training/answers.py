"""What a classifier answers, in aggregate: the profile a drift signal compares live traffic with.

Torch-free (numpy only): training writes the test split's profile into the manifest (metrics.answers),
and the service exports it beside the live answers' metrics (serving/monitoring.py), with the same buckets,
so that one PromQL expression compares them (deploy/prometheus/).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

# Upper bounds of the top-1 probability's buckets: the live histogram's and the test split's profile.
TOP1_BUCKETS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
UNSURE_BELOW = 0.5  # a top-1 probability under this is an unsure answer (the demo says so instead of answering)


def answer_profile(probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The share of answers per label, the top-1 probability's cumulative distribution over TOP1_BUCKETS, its
    mean, and the share of unsure answers, for (N, K) class probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    top1, answered = probabilities.max(axis=1), probabilities.argmax(axis=1)
    count = max(len(probabilities), 1)
    return {"count": int(len(probabilities)),
            "label_share": {label: float((answered == i).sum() / count) for i, label in enumerate(labels)},
            "top1_buckets": list(TOP1_BUCKETS),
            "top1_cumulative_share": [float((top1 <= bound).sum() / count) for bound in TOP1_BUCKETS],
            "top1_mean": float(top1.mean()) if len(top1) else None,
            "unsure_share": float((top1 < UNSURE_BELOW).sum() / count)}
