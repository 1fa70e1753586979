"""The evaluation report of a finished run: metrics, figures and a Markdown summary in its folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .augment import augment_batch
from .data import DataBundle
from .files import atomic_write_text
from .answers import answer_profile
from .loop import as_pixels, class_probabilities, predict
from .metrics import classification_metrics, roc_auc
from .models import parameter_table
from .plots import plot_confusion, plot_curves, plot_image_grid, plot_loss_vs_examples, plot_reconstructions
from .registry import ExperimentConfig, beats_target

GRID_SIZE = 20         # first predictions, first mistakes and random training images shown
SAMPLE_SEED = 0        # which training images are shown, fixed so runs compare
CONFIDENT_WRONG = 10   # most confidently wrong images shown
RECONSTRUCTIONS = 10   # columns of the reconstruction grid
DENOISE_SEED = 1234    # fixed noise for the test-set denoising figure, so runs compare


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _classification(run_dir: Path, model: nn.Module, data: DataBundle, cfg: ExperimentConfig,
                    figures: bool) -> tuple[dict[str, Any], list[str]]:
    test, names = data.test, data.class_names
    probs = class_probabilities(cfg, predict(model, test.inputs, cfg.eval_batch_size)).cpu().numpy()
    y_true, y_pred = test.labels.cpu().numpy(), probs.argmax(1)
    metrics = classification_metrics(y_true, y_pred, names)
    found: dict[str, Any] = {"test_accuracy": metrics["accuracy"], "classification": metrics,
                             "answers": answer_profile(probs, names)}  # the drift signal's reference
    if len(names) == 2:
        found["test_roc_auc"] = roc_auc(y_true, probs[:, 1])
    kind = "images" if test.inputs.ndim == 4 else "rows"
    lines = [f"Test accuracy: **{_pct(metrics['accuracy'])}** on {len(y_true):,} test {kind} "
             f"({int((y_pred != y_true).sum())} wrong)."
             + (f" ROC AUC {found['test_roc_auc']:.4f}." if "test_roc_auc" in found else "")]
    if data.test_note:
        lines.append(f"Note: {data.test_note}.")
    lines += ["", "| class | support | accuracy | precision | recall | F1 |", "|---|---:|---:|---:|---:|---:|"]
    for row in metrics["per_class"]:
        lines.append(f"| {row['class']} | {row['support']} | {_pct(row['accuracy'])} | {row['precision']:.4f} "
                     f"| {row['recall']:.4f} | {row['f1']:.4f} |")
    for avg in ("macro_avg", "weighted_avg"):
        a = metrics[avg]
        lines.append(f"| *{avg.replace('_', ' ')}* | {len(y_true)} | | {a['precision']:.4f} "
                     f"| {a['recall']:.4f} | {a['f1']:.4f} |")
    if figures:
        plot_confusion(np.array(metrics["confusion_matrix"]), names, run_dir / "confusion_matrix.png")
        lines += ["", "![confusion matrix](confusion_matrix.png)"]
        if kind == "images":
            lines += _image_figures(run_dir, data, probs, y_true, y_pred)
    return found, lines


def _image_figures(run_dir: Path, data: DataBundle, probs: np.ndarray, y_true: np.ndarray,
                   y_pred: np.ndarray) -> list[str]:
    """Report D's inspection grids: random training images, first predictions, first and worst mistakes."""
    names = data.class_names
    images = as_pixels(data.test.images.cpu()).numpy()

    def caption(i: int) -> str:
        return f"{names[y_pred[i]]}\n(true {names[y_true[i]]})" if y_pred[i] != y_true[i] else names[y_pred[i]]

    def grid(indices: np.ndarray, file: str, heading: str) -> None:
        if len(indices):
            plot_image_grid(images[indices], [caption(i) for i in indices],
                            ["green" if y_pred[i] == y_true[i] else "red" for i in indices],
                            run_dir / file, heading=heading)

    wrong = np.flatnonzero(y_pred != y_true)
    confident = wrong[np.argsort(-probs[wrong, y_pred[wrong]])][:CONFIDENT_WRONG]
    grid(np.arange(min(GRID_SIZE, len(y_true))), "first_predictions.png", "first test predictions")
    grid(wrong[:GRID_SIZE], "first_mistakes.png", "first test mistakes (prediction, true label)")
    grid(confident, "confident_mistakes.png", "most confidently wrong")

    train = data.train
    shown = torch.randperm(len(train), generator=torch.Generator().manual_seed(SAMPLE_SEED))[:GRID_SIZE]
    plot_image_grid(as_pixels(train.images[shown.to(train.images.device)].cpu()).numpy(),
                    [names[i] for i in train.labels[shown.to(train.labels.device)].tolist()],
                    ["black"] * len(shown), run_dir / "training_samples.png",
                    heading="random training images with their labels")
    figures = ("training_samples.png", "first_predictions.png", "first_mistakes.png", "confident_mistakes.png")
    return [f"![{f[:-4].replace('_', ' ')}]({f})" for f in figures if (run_dir / f).exists()]


def _reconstruction(run_dir: Path, model: nn.Module, data: DataBundle, cfg: ExperimentConfig,
                    figures: bool) -> tuple[dict[str, Any], list[str]]:
    clean = as_pixels(data.test.images)
    gen = torch.Generator(device=clean.device).manual_seed(DENOISE_SEED)
    always_noisy = cfg.replace(noise_probability=1.0, flip=False, rotation_degrees=0.0, brightness=0.0,
                               contrast=0.0, saturation=0.0, sharpness=0.0)
    _, noisy = augment_batch(clean, always_noisy, gen)
    with torch.inference_mode():
        model.eval()
        out_clean = torch.cat([model(clean[i: i + cfg.eval_batch_size])
                               for i in range(0, len(clean), cfg.eval_batch_size)])
        out_noisy = torch.cat([model(noisy[i: i + cfg.eval_batch_size])
                               for i in range(0, len(noisy), cfg.eval_batch_size)])
    metrics = {
        "test_mse": torch.mean((out_clean - clean) ** 2).item(),
        "test_denoise_mse": torch.mean((out_noisy - clean) ** 2).item(),
        "test_noisy_input_mse": torch.mean((noisy - clean) ** 2).item(),
    }
    k = min(RECONSTRUCTIONS, len(clean))
    if figures:
        plot_reconstructions([("noisy input", noisy[:k].cpu().numpy()),
                              ("reconstruction", out_noisy[:k].cpu().numpy()),
                              ("clean target", clean[:k].cpu().numpy())], run_dir / "reconstructions.png")
    lines = [f"Test MSE (clean input): **{metrics['test_mse']:.5f}**; denoising: noisy input MSE "
             f"{metrics['test_noisy_input_mse']:.5f} -> output MSE {metrics['test_denoise_mse']:.5f}, "
             f"on {len(clean):,} test images."] + (["", "![reconstructions](reconstructions.png)"] if figures else [])
    return metrics, lines


def _heldout_lines(heldout: dict[str, Any]) -> list[str]:
    k, n = heldout["folds"], sum(r["size"] for r in heldout["per_fold"])
    how = "leave-one-out" if all(r["size"] == 1 for r in heldout["per_fold"]) else f"{k}-fold"
    if "heldout_accuracy" in heldout:
        figure = (f"accuracy **{_pct(heldout['heldout_accuracy'])}** "
                  f"({round(heldout['heldout_accuracy'] * n)}/{n} right)")
    else:
        figure = f"MSE **{heldout['heldout_mse']:.5f}**"
    return [f"## Held-out ({how} cross-validation on the training split)", "",
            f"Each of the {k} folds trained from the same start on the other folds, for the same epochs, and "
            f"scored the examples it never saw: {figure}."]


def write_report(run_dir: Path, model: nn.Module, data: DataBundle, cfg: ExperimentConfig,
                 history: list[dict], facts: dict[str, Any], heldout: dict[str, Any] | None = None,
                 figures: bool = True) -> dict[str, Any]:
    """Write report.md and (unless `figures` is false) the figures; return the report's dict (the caller
    writes it as report.json once the run is over, exported and published).

    `heldout`: crossval.cross_validate's summary, when the experiment asks for one.
    """
    run_dir = Path(run_dir)
    curves = []
    if figures:
        plot_curves(history, run_dir / "curves.png")
        curves.append("![curves](curves.png)")
        if plot_loss_vs_examples(history, run_dir / "loss_vs_examples.png"):
            curves.append("![loss against examples seen](loss_vs_examples.png)")
    evaluate = _reconstruction if cfg.task == "reconstruct" else _classification
    metrics, body = evaluate(run_dir, model, data, cfg, figures)
    if heldout is not None:
        metrics["cross_validation"] = heldout
        body += ["", *_heldout_lines(heldout)]
    params = parameter_table(model)
    report = {"experiment": cfg.name, "report_figure": cfg.report_figure, "target": cfg.target,
              "metric": cfg.metric, "metrics": metrics, **facts,
              "parameters": sum(n for *_, n in params)}
    head = metrics.get("test_accuracy", metrics.get("test_mse"))
    verdict = ""
    if cfg.train_limit is not None or cfg.test_limit is not None:  # --quick and other cut runs
        verdict = " This run used part of the data (a smoke run): not comparable with the report."
    elif cfg.target is not None and head is not None:
        beats = beats_target(head, cfg.target, cfg.metric)
        verdict = f" Report figure {_pct(cfg.target)}: **{'beaten' if beats else 'not reached'}**."
    lines = [f"# {cfg.name}", "", cfg.description, "",
             f"Report: {cfg.report_figure}.{verdict}", "",
             f"Epochs {facts['epochs']}, wall time {facts['wall_time_s']:.0f} s on {facts['hardware']}"
             + (f" ({facts['speed']})" if facts.get("speed") and facts["speed"] not in facts["hardware"] else "")
             + ". "
             f"Data: {facts['data_source']} ({facts['train_size']:,} train / {facts['test_size']:,} test).",
             "", "## Test set", "", *body, "", "## Training curves", "", *curves, "",
             f"## Parameters ({report['parameters']:,})", "", "| layer | shape | count |", "|---|---|---:|"]
    lines += [f"| {name} | {tuple(shape)} | {n:,} |" for name, shape, n in params]
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    return report
