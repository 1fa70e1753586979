"""Per-model metrics for Prometheus: latency, time in preprocessing and in ONNX Runtime, what the models answer
and how sure they are, beside the same figures on the test split (the drift signal's reference).

Every series is labelled by model and version (and endpoint or label where it says so). Label values come
from the store only: a request is counted once the runtime has found its model, so a made-up name adds no
series. The test split's profile comes from each live version's manifest (metrics.answers, written by
training.answers at export); deploy/prometheus/ holds the queries and alerts that compare the two.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import prometheus_client

from training.answers import TOP1_BUCKETS, UNSURE_BELOW

from .loading import ServedModel

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_SECONDS = prometheus_client.Histogram(
    "model_request_seconds", "time to answer a request, by endpoint, model and version",
    ["endpoint", "model", "version"], buckets=LATENCY_BUCKETS)
PREPARE_SECONDS = prometheus_client.Histogram(
    "model_prepare_seconds", "time to decode and prepare one upload", ["model", "version"], buckets=STEP_BUCKETS)
INFERENCE_SECONDS = prometheus_client.Histogram(
    "model_inference_seconds", "time of one ONNX Runtime call (a batch)", ["model", "version"], buckets=STEP_BUCKETS)
ANSWERS = prometheus_client.Counter("model_answers_total", "answers given, by label", ["model", "version", "label"])
TOP1 = prometheus_client.Histogram("model_top1_probability", "the answered label's probability",
                                   ["model", "version"], buckets=TOP1_BUCKETS)
UNSURE = prometheus_client.Counter("model_unsure_answers_total", f"answers under {UNSURE_BELOW} probability",
                                   ["model", "version"])
# The test split's profile of the live versions (the same in every worker: the largest is any one's).
TEST_LABEL_SHARE = prometheus_client.Gauge("model_test_label_share", "share of the test split's answers, by label",
                                           ["model", "version", "label"], multiprocess_mode="max")
TEST_TOP1_SHARE = prometheus_client.Gauge("model_test_top1_share", "share of the test split's answers with a top-1 "
                                          "probability at most le", ["model", "version", "le"], multiprocess_mode="max")
TEST_TOP1_MEAN = prometheus_client.Gauge("model_test_top1_mean", "mean top-1 probability on the test split",
                                         ["model", "version"], multiprocess_mode="max")
TEST_UNSURE_SHARE = prometheus_client.Gauge("model_test_unsure_share", "share of unsure answers on the test split",
                                            ["model", "version"], multiprocess_mode="max")


class Monitor:
    """What the runtime tells the metrics; ServedModels calls it for every model it has found."""

    def prepared(self, served: ServedModel, seconds: float) -> None:
        PREPARE_SECONDS.labels(served.name, served.version).observe(seconds)

    def inferred(self, served: ServedModel, seconds: float) -> None:
        INFERENCE_SECONDS.labels(served.name, served.version).observe(seconds)

    def answered(self, served: ServedModel, probabilities: np.ndarray, chosen: np.ndarray | None = None) -> None:
        """(N, K) probabilities of N answers, in the order of the model's labels; `chosen`, the label index each
        answer gave, when it is not the most probable one (a table model's threshold)."""
        labels, top1 = served.labels, probabilities.max(axis=1)
        chosen = probabilities.argmax(axis=1) if chosen is None else chosen
        for index, count in zip(*np.unique(chosen, return_counts=True)):
            ANSWERS.labels(served.name, served.version, labels[index]).inc(int(count))
        histogram = TOP1.labels(served.name, served.version)
        for p in top1.tolist():
            histogram.observe(p)
        unsure = int((top1 < UNSURE_BELOW).sum())
        if unsure:
            UNSURE.labels(served.name, served.version).inc(unsure)

    def live(self, served: ServedModel) -> None:
        """`served` is now a live version: export its test split's profile."""
        profile: Mapping[str, Any] | None = served.manifest.get("metrics", {}).get("answers")
        if not profile:
            return  # published before profiles were recorded
        name, version = served.name, served.version
        for label, share in profile["label_share"].items():
            TEST_LABEL_SHARE.labels(name, version, label).set(share)
        for bound, share in zip(profile["top1_buckets"], profile["top1_cumulative_share"]):
            TEST_TOP1_SHARE.labels(name, version, str(float(bound))).set(share)
        if profile.get("top1_mean") is not None:
            TEST_TOP1_MEAN.labels(name, version).set(profile["top1_mean"])
        TEST_UNSURE_SHARE.labels(name, version).set(profile["unsure_share"])


def observe_request(endpoint: str, model: str, version: str | None, seconds: float) -> None:
    """A request answered by `model` `version` (names the runtime found in the store) in `seconds`."""
    REQUEST_SECONDS.labels(endpoint, model, version).observe(seconds)
