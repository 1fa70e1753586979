"""TensorBoard logs of runs and study trials, so `tensorboard --logdir runs` compares them side by side.

A run writes its event files into its own folder (runs/NAME/events.out.tfevents.*): per-epoch losses and
metrics, learning rate and epoch time as scalars; the confusion matrix, the most confident mistakes or the
autoencoder's reconstructions as images (the report's own PNGs); and its configuration with its final
figures as one HParams entry. A study writes one HParams entry per trial under its folder. Logging never
stops training: the first write that fails (a full disk, say) is reported once and logging ends there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

log = logging.getLogger("training")

EVENTS = "events.out.tfevents.*"  # TensorBoard's event file names
EPOCH_SCALARS = ("train_", "val_", "test_", "lr")  # the per-epoch record keys logged as curves
IMAGES = ("confusion_matrix.png", "confident_mistakes.png", "reconstructions.png")  # from the run's report


def _hparam_value(value: Any) -> bool | int | float | str:
    """What HParams can show: numbers, booleans and strings; anything else as its text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class Board:
    """One TensorBoard event stream in `folder`, opened at the first write; nothing at all when `enabled`
    is false (under torchrun, every rank but 0)."""

    def __init__(self, folder: Path, enabled: bool = True):
        self.folder, self._writer, self._failed = Path(folder), None, not enabled
        self._first_step: int | None = None

    def resume_at(self, step: int) -> None:
        """A resumed run goes on at `step`: events at that step or later, left by the killed run, are
        dropped by TensorBoard (its purge step), so the curves continue without duplicates."""
        self._first_step = step

    def _write(self, action: str, fn, *args: Any) -> None:
        if self._failed:
            return
        try:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when logging

                self._writer = SummaryWriter(str(self.folder), purge_step=self._first_step, flush_secs=30)
            fn(self._writer, *args)
        except Exception as err:  # noqa: BLE001  (logging is a convenience: the run goes on)
            self._failed = True
            log.warning("TensorBoard logging in %s stopped (%s): %s: %s; the run goes on", self.folder, action,
                        type(err).__name__, err)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        def write(w, values, step):
            for key, value in values.items():
                w.add_scalar(key, value, step)
        self._write("scalars", write, values, step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's record from the metrics file: its losses and metrics, learning rate and time."""
        values = {k: v for k, v in record.items() if k.startswith(EPOCH_SCALARS) and isinstance(v, (int, float))}
        self.scalars({**values, "epoch_seconds": record["seconds"]}, record["epoch"])

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._write("text", lambda w: w.add_text(tag, text, step))

    def images(self, run_dir: Path, step: int) -> None:
        """The report's figures that exist in `run_dir`, as images."""
        def write(w):
            for name in IMAGES:
                path = Path(run_dir) / name
                if path.is_file():
                    with Image.open(path) as picture:
                        pixels = np.asarray(picture.convert("RGB"))
                    w.add_image(name[:-4], pixels, step, dataformats="HWC")
        self._write("images", write)

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float], step: int = 0) -> None:
        """One HParams entry in this very folder (SummaryWriter.add_hparams would open a subfolder)."""
        def write(w):
            from torch.utils.tensorboard.summary import hparams

            shown = {k: _hparam_value(v) for k, v in params.items()}
            for summary in hparams(shown, dict(metrics)):
                w.file_writer.add_summary(summary, step)
            for key, value in metrics.items():
                w.add_scalar(key, value, step)
        self._write("hparams", write)

    def close(self) -> None:
        self._write("close", lambda w: w.close())
        self._failed = True


def clear_events(folder: Path) -> None:
    """Delete an earlier run's event files: a new run's curves must not continue an old one's."""
    for stale in Path(folder).glob(EVENTS):
        stale.unlink(missing_ok=True)


def run_hparams(config: Mapping[str, Any], smoke: bool) -> dict[str, Any]:
    """A run's configuration as HParams shows it: every field, model settings flattened, and whether it is
    a smoke run (on part of the data), so such runs can be filtered out ("yes": HParams would show a
    boolean as the number 1)."""
    params = {k: v for k, v in config.items() if k not in ("description", "report_figure", "failed_recipe",
                                                            "model_kwargs")}
    params.update({f"model.{k}": v for k, v in dict(config.get("model_kwargs") or {}).items()})
    return {**params, "smoke_run": "yes" if smoke else "no"}


def final_metrics(report: Mapping[str, Any], history: list[Mapping[str, Any]]) -> dict[str, float]:
    """A finished run's headline figures, under final/ so they sort apart from the per-epoch curves."""
    found = {k: v for k, v in report["metrics"].items() if isinstance(v, (int, float)) and k.startswith("test_")}
    heldout = report["metrics"].get("cross_validation") or {}
    found.update({k: v for k, v in heldout.items() if k.startswith("heldout_") and isinstance(v, float)})
    if history:
        found.update({k: v for k, v in history[-1].items() if k.startswith("val_") and isinstance(v, float)})
    return {f"final/{k}": float(v) for k, v in found.items()}
