"""Report figures as PNG files. Matplotlib's Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and, when present, accuracy per epoch, train against test."""
    epochs = [r["epoch"] for r in history]
    panels = [("loss", ["train_loss", "val_loss", "test_loss", "test_mse", "val_mse"])]
    if "train_accuracy" in history[0]:
        panels.append(("accuracy", ["train_accuracy", "val_accuracy", "test_accuracy"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            if key in history[0]:
                ax.plot(epochs, [r[key] for r in history], marker="o", label=key.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_loss_vs_examples(history: list[dict], path: Path) -> bool:
    """Training loss against training examples seen (Reports C and D), test loss at each epoch's end.

    Returns False, drawing nothing, when the history holds no loss traces (runs from before they existed).
    """
    if not all(r.get("loss_trace") for r in history):
        return False
    fig, ax = plt.subplots(figsize=(7, 3.6))
    offset, xs, ys, ends, test = 0, [], [], [], []
    for r in history:
        xs += [offset + seen for seen, _ in r["loss_trace"]]
        ys += [loss for _, loss in r["loss_trace"]]
        offset += r["examples"]
        if "test_loss" in r:
            ends.append(offset)
            test.append(r["test_loss"])
    ax.plot(xs, ys, label="train loss", lw=1)
    if test:
        ax.plot(ends, test, "o", color="red", label="test loss (end of epoch)")
    ax.set_xlabel("training examples seen")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def plot_study(labels: Sequence[str], values: Sequence[float], errors: Sequence[float], metric: str,
               path: Path, title: str) -> None:
    """One horizontal bar per trial, best at the top, with the spread across folds where there is one."""
    order = np.argsort(values)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.28 * len(labels)))
    ax.barh(np.arange(len(labels)), np.asarray(values)[order], xerr=np.asarray(errors)[order],
            color="tab:blue", alpha=0.8)
    ax.set_yticks(np.arange(len(labels)), [labels[i] for i in order], fontsize=7)
    low, high = min(values), max(values)
    span = (high - low) or abs(high) or 1.0
    ax.set_xlim(low - 0.5 * span, high + 0.25 * span)
    ax.set_xlabel(metric.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black")
    _save(fig, path)


def _show(ax: plt.Axes, image: np.ndarray) -> None:
    """image: (C, H, W) floats in [0, 1]."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.transpose(1, 2, 0).clip(0, 1))
    ax.axis("off")


def plot_image_grid(images: np.ndarray, titles: Sequence[str], colors: Sequence[str], path: Path,
                    columns: int = 10, heading: str = "") -> None:
    """Images with a coloured caption each (green right, red wrong)."""
    n = len(images)
    rows = max(1, -(-n // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.75 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, color in zip(axes.flat, images, titles, colors):
        _show(ax, image)
        ax.set_title(title, fontsize=7, color=color)
    if heading:
        fig.suptitle(heading, fontsize=10)
    _save(fig, path)


def plot_reconstructions(rows: Sequence[tuple[str, np.ndarray]], path: Path) -> None:
    """One labelled row per stage (noisy input, output, clean target), same images per column."""
    columns = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.4 * columns, 1.5 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, image in enumerate(images):
            _show(axes[r, c], image)
        axes[r, 0].set_title(label, fontsize=8, loc="left")
    _save(fig, path)
