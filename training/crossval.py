"""k-fold cross-validation on a training split, with the one loop: held-out figures without a test set.

Greek letters report leave-one-out accuracy this way, and Report C's grid search scores each network by
3-fold cross-validation. Each fold trains the experiment from its start (including any `init_from`
weights and `freeze`) on the other folds and scores the held-out one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from .averaging import average_of, scored
from .build import set_up
from .data import DataBundle, TensorData
from .loop import evaluate, train_one_epoch
from .registry import ExperimentConfig

FOLD_SEED = 0  # fixed, so every configuration of a study is scored on the same folds


def fold_indices(n: int, folds: int) -> list[torch.Tensor]:
    """`folds` disjoint index sets covering 0..n-1, from one fixed permutation."""
    if not 2 <= folds <= n:
        raise ValueError(f"cannot make {folds} folds of {n} examples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(FOLD_SEED))
    return [part.sort().values for part in order.tensor_split(folds)]


def fit_and_score(cfg: ExperimentConfig, data: DataBundle, train: TensorData, held: TensorData, runs_dir: Path,
                  device: torch.device, desc: str, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                  ) -> dict[str, Any]:
    """Train the experiment from its start on `train`, score `held` (keys heldout_*); with `on_epoch`, also
    after every epoch, handing it (epoch, scores): a study prunes hopeless trials there by raising."""
    started = time.perf_counter()
    # Plain fp32, as every fold was trained when the held-out figures in docs/RESULTS.md were measured.
    setup = set_up(cfg, data, device, runs_dir, train_size=len(train), precision="fp32", channels_last=False)
    model = setup.model
    average = average_of(model, cfg.ema_decay)
    scores: dict[str, float] = {}
    for epoch in range(cfg.epochs):
        train_one_epoch(model, train, cfg, setup.optimizer, setup.scheduler, setup.gen, average=average,
                        desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}")
        if on_epoch is not None or epoch + 1 == cfg.epochs:
            scores = evaluate(scored(model, average), held, cfg, prefix="heldout_")
        if on_epoch is not None:
            on_epoch(epoch + 1, scores)
    return {"size": len(held), "train_size": len(train), **scores,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - started}


def run_fold(cfg: ExperimentConfig, data: DataBundle, folds: int, fold: int, runs_dir: Path,
             device: torch.device) -> dict[str, Any]:
    """Train on every fold but `fold` (numbered from 0), score `fold`; the held-out figures and their size."""
    parts = fold_indices(len(data.train), folds)
    on = data.train.labels.device
    train = data.train.subset(torch.cat([p for i, p in enumerate(parts) if i != fold]).to(on))
    result = fit_and_score(cfg, data, train, data.train.subset(parts[fold].to(on)), runs_dir, device,
                           desc=f"{cfg.name} fold {fold + 1}/{folds}")
    return {"fold": fold + 1, **result}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Size-weighted mean of each held-out figure over the folds, and its spread across folds."""
    sizes = torch.tensor([r["size"] for r in results], dtype=torch.float64)
    summary: dict[str, Any] = {"folds": len(results), "per_fold": results}
    for key in (k for k in results[0] if k.startswith("heldout_")):
        values = torch.tensor([r[key] for r in results], dtype=torch.float64)
        summary[key] = float((values * sizes).sum() / sizes.sum())
        summary[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
    return summary


def cross_validate(cfg: ExperimentConfig, data: DataBundle, folds: int, runs_dir: Path,
                   device: torch.device) -> dict[str, Any]:
    """Every fold in turn (at most one example per fold: leave-one-out); their summary."""
    folds = min(folds, len(data.train))
    return summarize([run_fold(cfg, data, folds, fold, runs_dir, device) for fold in range(folds)])
