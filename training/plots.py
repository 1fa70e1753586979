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
    panels = [("loss", ["train_loss", "test_loss", "test_mse"])]
    if "train_accuracy" in history[0]:
        panels.append(("accuracy", ["train_accuracy", "test_accuracy"]))
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
