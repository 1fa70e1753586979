"""What each tab shows, computed through serving.runtime: plain functions from inputs to displayable values.

No Gradio here, so every answer can be checked without a browser. Images arrive as encoded bytes (Gradio
hands the demo file paths; the bytes go to the runtime, which decodes them with the service's limits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from serving.errors import ServingError
from serving.explain import heat_picture
from serving.loading import RECONSTRUCT
from serving.runtime import HEART_MODEL, ServedModel, ServedModels
from training.preprocessing import is_blank
from training.registry import EXPERIMENTS, beats_target
from training.tabular import HEART_FEATURES

EVERY_LABEL = 1000     # a top_k past any model's label count: every label, best first
UNSURE_BELOW = 0.5     # top probability under which the demo says the model is unsure instead of answering
ENLARGE = 8            # "what the model sees" is shown 8x larger (28 -> 224, 32 -> 256 pixels), pixel for pixel
FLAT_BELOW = 0.05      # a colour input whose values span less than this (of full range) shows nothing
DEFAULT_NOISE = 0.2    # uniform noise amplitude for the reconstruction tab when a manifest names none
NOISE_SEED = 0         # the same picture always gets the same noise, so the error can be compared
EXAMPLES_DIR = Path(__file__).parent / "examples"
INDEX_FILE = "examples.json"  # written by demo.make_examples
EXAMPLES_INDEX = EXAMPLES_DIR / INDEX_FILE
DRAWABLE_FIRST = ("digit", "garment", "photo")  # image layouts, from most to least like a drawing on the canvas

DRAW_SOMETHING = "**Draw something** on the canvas, or upload a picture: there is nothing to classify yet."
RECONSTRUCT_SOMETHING = "Upload or draw a clothing item, or pick an example."
BLANK_PICTURE = "**Nothing to see**: the picture is blank. Draw something or upload a picture with an object."
LOOKS = "Where it looks (for the class named below)"
LOOKS_HOW = ("**Where it looks:** red where covering that part of the picture lowers the model's probability of a "
             "class, blue where covering it raises it; click a class in the list to see where it looks for that one.")
LOOKS_FOR = ("**Where it looks for {label}:** red where covering that part of the picture lowers its probability "
             "({lowers}), blue where covering it raises it; click another class in the list to see that one.")
HEART_DISCLAIMER = ("A small neural network that learned patterns in {rows} rows of the heart failure prediction "
                    "data set: a teaching example, **not medical advice**; it cannot diagnose anyone.")


# -- models and their manifests

def image_classifiers(models: ServedModels) -> list[str]:
    """Names of the loaded image classifiers, in DRAWABLE_FIRST order of their layouts, then store order.

    The classify tab opens on its canvas with the first of them chosen: a drawing shown to a photo model
    (CIFAR-10) gets a confident but meaningless answer.
    """
    names = [n for n, m in models.models.items() if m.ready and m.task == "classify" and "image" in _prep(m)]
    return sorted(names, key=lambda n: DRAWABLE_FIRST.index(models.models[n].image_spec.layout))


def takes_photos(served: ServedModel) -> bool:
    """Whether the model was trained on photos, which a drawing on the canvas is not."""
    return served.image_spec.layout == "photo"


def reconstructors(models: ServedModels) -> list[str]:
    return [n for n, m in models.models.items() if m.ready and m.task == "reconstruct"]


def unavailable(models: ServedModels) -> dict[str, str]:
    """Model name -> why the demo cannot offer it: served models not published yet, or failing to load."""
    expected = {cfg.served_as: name for name, cfg in EXPERIMENTS.items() if cfg.served_as}
    missing = {served_as: f"not published yet (`python -m training.fit {experiment}` publishes it)"
               for served_as, experiment in sorted(expected.items()) if served_as not in models.models}
    broken = {n: f"failed to load: {m.error}" for n, m in models.models.items() if not m.ready}
    return {**missing, **broken}


def _prep(served: ServedModel) -> Mapping[str, Any]:
    return served.manifest.get("preprocessing", {})


def dataset_of(served: ServedModel) -> str | None:
    """The data set a model was trained on, as its experiment's config names it (fashion_mnist, mnist, ...)."""
    return served.manifest.get("provenance", {}).get("config", {}).get("dataset")


def model_choice(served: ServedModel, shown_labels: int = 5) -> str:
    """'fashion: Trouser, Dress, Sandal, Sneaker, Ankle boot' for the model menu."""
    labels = served.labels
    listed = ", ".join(labels[:shown_labels]) + (f", ... ({len(labels)} classes)" if len(labels) > shown_labels else "")
    return f"{served.name}: {listed}"


def about_markdown(served: ServedModel) -> str:
    """The manifest's facts about one model: task, data, result, the report figure it answers, version."""
    m, prov = served.manifest, served.manifest.get("provenance", {})
    metrics = m.get("metrics", {})
    lines = [f"**{served.name} {served.version or ''}**"
             + (f": {prov['config']['description']}" if prov.get("config", {}).get("description") else "")]
    if not served.ready:
        lines.append(f"- **Not available:** {served.error}")
    if "test_accuracy" in metrics:
        size = metrics.get("test_size")
        on = f" on {size:,} test items" if isinstance(size, int) and size else ""
        lines.append(f"- **Test accuracy:** {metrics['test_accuracy']:.2%}{on}")
    if "test_mse" in metrics:
        lines.append(f"- **Test reconstruction error (MSE):** {metrics['test_mse']:.4f}"
                     + (f"; noisy input {metrics['test_noisy_input_mse']:.4f} -> output "
                        f"{metrics['test_denoise_mse']:.4f}" if "test_denoise_mse" in metrics else ""))
    if m.get("report_figure"):
        target, accuracy = m.get("target"), metrics.get("test_accuracy")
        verdict = "" if target is None or accuracy is None else \
            " (beaten)" if beats_target(accuracy, target) else " (not reached yet)"
        lines.append(f"- **Report figure to beat:** {m['report_figure']}{verdict}")
    if served.labels:
        lines.append(f"- **Labels:** {', '.join(served.labels)}")
    if prov.get("data_source"):
        sizes = ", ".join(f"{prov[k]:,} {k.split('_')[0]}" for k in ("train_size", "test_size") if k in prov)
        lines.append(f"- **Data:** {prov['data_source']}" + (f" ({sizes})" if sizes else ""))
    spec = _prep(served)
    if "image" in spec:
        image = spec["image"]
        colour = "greyscale" if image["channels"] == 1 else "colour"
        lines.append(f"- **Input:** {image['height']}x{image['width']} pixels; "
                     + (spec.get("description") or f"{colour}, {image['layout']} layout"))
    if prov.get("command"):
        took = f", {prov['epochs']} epochs in {prov['wall_time_s'] / 60:.0f} min on {prov.get('hardware', '?')}" \
            if "wall_time_s" in prov and "epochs" in prov else ""
        lines.append(f"- **Trained by:** `{prov['command']}`{took}")
    if prov.get("finished_at"):
        lines.append(f"- **Published:** {prov['finished_at'][:10]}, sha256 `{str(m.get('sha256', ''))[:12]}...`")
    return "\n".join(lines)


# -- images

def read_upload(path: str | Path | None) -> bytes | None:
    """The bytes of a file Gradio saved for us, or None when there is none."""
    return Path(path).read_bytes() if path else None


def sketch_bytes(sketch: Mapping[str, Any] | None) -> bytes | None:
    """The flattened drawing of a Sketchpad value ({"background", "layers", "composite"}), as encoded bytes."""
    return read_upload((sketch or {}).get("composite"))


def enlarged(pixels: np.ndarray | Image.Image) -> Image.Image:
    """A prepared (C, H, W) input in [0, 1], or its picture, shown ENLARGE times larger, pixel for pixel."""
    img = pixels if isinstance(pixels, Image.Image) else as_image(pixels)
    return img.resize((img.width * ENLARGE, img.height * ENLARGE), Image.Resampling.NEAREST)


def shows_nothing(pixels: np.ndarray) -> bool:
    """True when a prepared input holds nothing to classify: no ink (greyscale) or one flat colour."""
    return is_blank(pixels) if len(pixels) == 1 else float(np.ptp(pixels)) < FLAT_BELOW


@dataclass
class Looks:
    """Where the model looks for one class: the heat over what it sees, and how to read it."""

    picture: Image.Image | None
    note: str = LOOKS_HOW


@dataclass
class Classification:
    """One classify-tab answer: label confidences, the input the model saw, a sentence for the visitor, and
    where the model looks for its top class."""

    confidences: dict[str, float] | None
    seen: Image.Image | None
    verdict: str
    looks: Looks = field(default_factory=lambda: Looks(None))


def where_it_looks(models: ServedModels, name: str, image: bytes | np.ndarray, label: str | None = None) -> Looks:
    """The occlusion map (serving.explain) of `image`, bytes or the input prepared already, for `label`
    (default: the top class), drawn over what the model sees."""
    try:
        pixels, sensitivity, served = models.explain(name, image, label)
    except ServingError as err:
        return Looks(None, f"**Cannot say where it looks:** {err}")
    biggest = float(sensitivity.values.max())
    lowers = "no part does here" if biggest <= 0 else f"by up to {biggest:.1%}" if biggest >= 0.001 else \
        "by under 0.1% for any one part"
    return Looks(heat_picture(pixels, sensitivity.values),
                 LOOKS_FOR.format(label=served.labels[sensitivity.index], lowers=lowers))


def classify(models: ServedModels, name: str, image: bytes | None) -> Classification:
    """Classify one picture with model `name`; blank pictures and unsure answers are said as such."""
    if image is None:
        return Classification(None, None, DRAW_SOMETHING)
    try:  # pixels: what the model saw, (C, H, W) float32 in [0, 1]; the answer names the version that saw it
        pixels, answer = models.classify_seen(name, image, top_k=EVERY_LABEL)
    except ServingError as err:
        return Classification(None, None, f"**Cannot classify this picture:** {err}")
    if shows_nothing(pixels):
        return Classification(None, enlarged(pixels), DRAW_SOMETHING if is_blank(pixels) else BLANK_PICTURE)
    labels = models.models[name].labels
    confidences = {t["label"]: t["probability"] for t in answer["top"]}
    best, p = answer["label"], answer["top"][0]["probability"]
    if p < UNSURE_BELOW:
        verdict = (f"**The model is unsure.** Its best guess is {best} at only {p:.0%}. It only knows: "
                   f"{', '.join(labels)}.")
    else:
        verdict = f"**{best}** ({p:.0%})"
    return Classification(confidences, enlarged(pixels), verdict, where_it_looks(models, name, pixels))


@dataclass
class Reconstruction:
    """The reconstruction tab: the prepared original, its noisy version, the output, and how far off it is."""

    original: Image.Image | None
    noisy: Image.Image | None
    reconstruction: Image.Image | None
    report: str


def noise_level(served: ServedModel) -> float:
    """The uniform noise amplitude the autoencoder was trained to remove (its config's), else DEFAULT_NOISE."""
    return float(served.manifest.get("provenance", {}).get("config", {}).get("uniform_noise") or DEFAULT_NOISE)


def reconstruct(models: ServedModels, name: str, image: bytes | None, noise: float) -> Reconstruction:
    """Prepare `image` as the model's data set, add uniform noise of amplitude `noise`, and reconstruct it."""
    if image is None:
        return Reconstruction(None, None, None, RECONSTRUCT_SOMETHING)
    served = models.models.get(name)
    if served is None or not served.ready or served.task != "reconstruct":
        return Reconstruction(None, None, None, f"**Cannot reconstruct:** {name!r} is not a loaded autoencoder; "
                                                f"these are: {', '.join(reconstructors(models)) or 'none'}")
    try:
        clean = models.prepare(name, image, RECONSTRUCT)  # (C, H, W) in [0, 1], within the decoding budget
    except ServingError as err:
        return Reconstruction(None, None, None, f"**Cannot read this picture:** {err}")
    if shows_nothing(clean):
        return Reconstruction(enlarged(clean), None, None, BLANK_PICTURE)
    rng = np.random.default_rng(NOISE_SEED)
    noisy = np.clip(clean + noise * rng.random(clean.shape, dtype=np.float32), 0, 1)  # as training adds it
    noisy_image = as_image(noisy)
    try:
        # In training form already (the model's size, dark background), so preprocessing passes it through.
        rebuilt, served = models.reconstruct(name, noisy_image)
    except ServingError as err:
        return Reconstruction(None, None, None, f"**Cannot reconstruct:** {err}")
    noisy = np.asarray(noisy_image, dtype=np.float32) / 255.0  # what the model got, to 8 bits
    clean_hwc, output = _hwc(clean), np.asarray(rebuilt, dtype=np.float32) / 255.0
    error, noisy_error = float(np.mean((output - clean_hwc) ** 2)), float(np.mean((noisy - clean_hwc) ** 2))
    test_mse = served.manifest.get("metrics", {}).get("test_denoise_mse")
    report = (f"**Reconstruction error** (mean squared difference from the original, pixels in [0, 1]): "
              f"**{error:.4f}**; the noisy input was {noisy_error:.4f} away."
              + (f" On noisy test images the model averages {test_mse:.4f}." if test_mse is not None else ""))
    return Reconstruction(enlarged(clean), enlarged(noisy_image), enlarged(rebuilt), report)


def _hwc(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) for greyscale, (H, W, C) for colour: the layout of a decoded picture."""
    return pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0)


def as_image(pixels: np.ndarray) -> Image.Image:
    """A prepared (C, H, W) input in [0, 1] as an 8-bit greyscale or RGB picture of the same size."""
    return Image.fromarray(np.round(np.clip(_hwc(pixels), 0, 1) * 255).astype(np.uint8))


# -- heart

HEART_FIELDS = HEART_FEATURES  # the form's fields, in the table's order


def heart_status(models: ServedModels) -> str | None:
    """Why the heart tab cannot answer, or None when it can."""
    served = models.models.get(HEART_MODEL)
    if served is None:
        return ("**The heart-disease model is not published yet.** Once it is trained and published "
                "(`python -m training.fit heart_mlp`), restart the demo and this tab shows its form.")
    if not served.ready:
        return f"**The heart-disease model ({served.version}) failed to load:** {served.error}"
    return None


def predict_heart(models: ServedModels, row: Mapping[str, Any]) -> tuple[dict[str, float] | None, str]:
    """Label confidences and a one-line explanation for one patient row."""
    try:
        answer = models.predict_heart(dict(row))
    except ServingError as err:
        return None, f"**Cannot answer:** {err}"
    served = models.models[HEART_MODEL]
    negative, positive = served.labels[:2]
    p = answer["probability"]
    threshold = served.threshold
    rows = served.manifest.get("provenance", {}).get("train_size")
    return ({positive: p, negative: 1 - p},
            f"Estimated probability of heart disease: **{p:.0%}**, so the model answers **{answer['label']}** "
            f"(it answers {positive} from {threshold:.0%}). " + HEART_DISCLAIMER.format(rows=f"{rows:,}" if rows else "a few hundred"))


# -- examples

def examples_index() -> dict[str, list[dict[str, Any]]]:
    """demo/examples/examples.json: per data set, files (or heart rows) with their true labels."""
    return json.loads(EXAMPLES_INDEX.read_text()) if EXAMPLES_INDEX.is_file() else {}


def example_files(dataset: str | None) -> list[tuple[str, str]]:
    """(absolute path, true label) of the example pictures for `dataset`."""
    return [(str(EXAMPLES_DIR / e["file"]), e["label"]) for e in examples_index().get(dataset or "", [])
            if "file" in e]
