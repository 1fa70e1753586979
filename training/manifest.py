"""What a published model says about itself: the manifest and a short model card."""

from __future__ import annotations

from typing import Any

from .data import IMAGE_SPECS
from .export import input_name, output_name
from .registry import ExperimentConfig, config_to_dict

_LAYOUT_WORDS = {
    "digit": "greyscale; dark-on-light images are inverted and the background flattened to black; the ink "
             "is cropped, scaled into a 20x20 box and centred by its centre of mass in 28x28, as MNIST digits are",
    "garment": "greyscale; dark-on-light images are inverted and the background flattened to black; the object "
               "is cropped and scaled to fill the frame, centred, as FashionMNIST images are",
    "photo": "RGB; resized to the model's size",
}

# Headline metrics copied into the manifest; the full report stays in the run folder.
_HEADLINE = ("test_accuracy", "test_loss", "test_mse", "test_denoise_mse", "test_noisy_input_mse", "test_roc_auc",
             "answers")
_TABLE_WORDS = ("one row of the table's columns; numbers scaled by (x - mean) / std with the training rows' "
                "statistics, categories one-hot in the order listed. A numeric column's missing_value (0 for "
                "RestingBP and Cholesterol) means not measured: the graph puts the training mean in its place "
                "and adds a not-measured input, so send the row as it is")


def _preprocessing(cfg: ExperimentConfig, tabular: dict[str, Any] | None) -> dict[str, Any]:
    if tabular is not None:
        return {"tabular": tabular, "description": _TABLE_WORDS}
    spec = IMAGE_SPECS[cfg.dataset]
    return {"image": spec.to_dict(), "description": _LAYOUT_WORDS[spec.layout] +
            "; pixels scaled to [0, 1]. Any normalisation is inside the graph."}


def headline_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """A run report's metrics without per-sample detail: what manifests and docs/results/ keep."""
    metrics = {k: v for k, v in report["metrics"].items() if k in _HEADLINE}
    if "classification" in report["metrics"]:
        c = report["metrics"]["classification"]
        metrics["macro_f1"] = c["macro_avg"]["f1"]
        metrics["per_class_accuracy"] = {row["class"]: row["accuracy"] for row in c["per_class"]}
    if "cross_validation" in report["metrics"]:
        cv = report["metrics"]["cross_validation"]
        metrics["heldout_accuracy"], metrics["heldout_folds"] = cv.get("heldout_accuracy"), cv["folds"]
    metrics["test_size"] = report["test_size"]
    return metrics


def build_manifest(cfg: ExperimentConfig, report: dict[str, Any], export_check: dict[str, Any],
                   class_names: tuple[str, ...], input_shape: tuple[int, ...],
                   provenance: dict[str, Any], tabular: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything a server or a person needs to use the model; store.publish_model adds the rest.

    `tabular`: the data's fitted table encoding (serving/tabular.py reads it from preprocessing.tabular).
    """
    metrics = headline_metrics(report)
    name = output_name(cfg)
    out_shape = ([None, 1] if name == "probability" else [None, len(class_names)] if cfg.task == "classify"
                 else [None, *input_shape])
    model_input = {"name": input_name(input_shape), "shape": [None, *input_shape], "dtype": "float32"}
    if tabular is None:
        model_input["range"] = [0.0, 1.0]
    return {
        "task": cfg.task,
        "labels": list(class_names) if cfg.task == "classify" else [],
        "input": model_input,
        "output": {"name": name, "shape": out_shape, "dtype": "float32"},
        "preprocessing": _preprocessing(cfg, tabular),
        "metrics": metrics,
        "report_figure": cfg.report_figure,
        "target": cfg.target,
        "export_check": export_check,
        "provenance": {"experiment": cfg.name, "config": config_to_dict(cfg), **provenance},
    }


def model_card(manifest: dict[str, Any], name: str, description: str) -> str:
    """A short Markdown card; `{version}` is filled in by the store when the version is known."""
    p, m = manifest["provenance"], manifest["metrics"]
    table = "tabular" in manifest["preprocessing"]
    things = "rows" if table else "images"
    if manifest["task"] == "classify":
        if p.get("test_note"):  # no test split (the Greek letters): scored on the training images
            result = (f"accuracy {100 * m['test_accuracy']:.2f}% on its {m['test_size']:,} training {things} "
                      "(there is no test split)")
        else:
            split = "test" if table else "official test"
            result = f"test accuracy {100 * m['test_accuracy']:.2f}% on {m['test_size']:,} {split} {things}"
        if m.get("heldout_accuracy") is not None:
            result += (f"; {100 * m['heldout_accuracy']:.2f}% held out by {m['heldout_folds']}-fold "
                       "cross-validation on the training split")
        limits = "anything else (photos, other objects) still gets one of these labels"
    else:
        result = (f"test reconstruction MSE {m['test_mse']:.5f}; denoising {m['test_noisy_input_mse']:.5f} "
                  f"-> {m['test_denoise_mse']:.5f} on {m['test_size']:,} official test images")
        limits = "anything else is redrawn as the nearest thing it knows"
    labels = ", ".join(manifest["labels"]) or "none (image to image)"
    decay = p.get("config", {}).get("ema_decay")
    averaged = f"; the weights are their moving average over training (decay {decay:g} per step)" if decay else ""
    return "\n".join([
        f"# {name} {{version}}", "",
        description + ".", "",
        f"- **Result:** {result}.",
        f"- **Report figure:** {manifest['report_figure']}.",
        f"- **Labels:** {labels}.",
        f"- **Input:** `{manifest['input']['name']}`, float32 {manifest['input']['shape']}"
        f"{'' if table else ' in [0, 1]'}; {manifest['preprocessing']['description']}",
        f"- **Trained by:** `{p['command']}` ({p['epochs']} epochs, {p['wall_time_s']:.0f} s on {p['hardware']})"
        f"{averaged}.",
        f"- **Data:** {p['data_source']}; {p['train_size']:,} training {things}.",
        ("- **Limits:** a small public teaching table of heart patients; not for any clinical decision."
         if table else f"- **Limits:** trained on small images of a few classes; {limits}. "
         "A teaching model, not a product decision."),
        "",
    ])
