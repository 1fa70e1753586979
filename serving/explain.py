"""Where a classifier looks: occlusion sensitivity (Zeiler and Fergus, 2014) on the graph the service runs.

Each window of the prepared input is covered in turn with the model's own background, every covered copy
that differs from the picture is run through ONNX Runtime in one batch (or a few bounded ones), and each
pixel gets how much covering it lowered the explained class's probability, averaged over the windows that
covered it, as Captum's `Occlusion` computes it (tests/test_explain.py checks the two agree). Positive:
covering the pixel lowers the class (the model looked there for it); negative: covering it raises the
class (it counted against). Free of torch and of HTTP: serving.runtime calls it for the service and the
demo alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .errors import InvalidField

# The window is a seventh of the input's side: 4 pixels of a 28x28 digit (its ink fills a 20-pixel box,
# strokes are 2-3 pixels wide), so one window hides a piece of one stroke; 5 pixels of a 32x32 photo (a
# wheel, a head). Smaller windows hide too little for a CNN's pooled features to notice (a flat, noisy
# map); larger ones blur the parts together.
WINDOWS_ACROSS = 7
# Windows overlap by about half (stride = half the window, rounded up): each pixel is covered by up to 2x2
# windows, so the map has about twice the windows' resolution and no seams. 28x28 takes 13x13 = 169 covered
# copies at most, 32x32 10x10 = 100 (docs/BENCHMARKS.md#occlusion-maps has their times).
STRIDE_PER_WINDOW = 2
MAX_COPIES_PER_RUN = 256  # covered copies per ONNX Runtime call: 256 CIFAR-sized copies are 3 MiB of float32
# The picture: red where covering lowers the class, blue where it raises it, over what the model sees
# (dimmed so the colours stand out), each pixel shown ENLARGE times larger, as the demo shows its input.
ENLARGE = 8
UNDER_HEAT = 0.5  # brightness of the input under the heat
DROP_COLOUR, RISE_COLOUR = (255, 40, 20), (30, 90, 255)
# Drawn against the map's own largest change, so a confident model's small changes still show where it
# looks; a map whose largest change is under this (float32 rounding of a saturated probability) stays faint.
MIN_SCALE = 1e-6
DECIMALS = 7  # values answered in JSON: probabilities to 1e-7, about float32's resolution near 1


@dataclass(frozen=True)
class Windows:
    """The occluding windows for one input size: (height, width) of each window and of the steps between them."""

    size: tuple[int, int]
    stride: tuple[int, int]

    @classmethod
    def for_input(cls, height: int, width: int) -> "Windows":
        """WINDOWS_ACROSS windows per side, overlapping by half (see the constants)."""
        size = tuple(max(1, round(side / WINDOWS_ACROSS)) for side in (height, width))
        return cls(size, tuple(math.ceil(s / STRIDE_PER_WINDOW) for s in size))

    def boxes(self, height: int, width: int) -> list[tuple[slice, slice]]:
        """Every window as (rows, columns), row by row; the last in a row or column is cut at the edge when
        the steps do not end flush with it (as Captum places them)."""
        def starts(side: int, size: int, stride: int) -> range:
            return range(0, math.ceil(max(side - size, 0) / stride) * stride + 1, stride)

        return [(slice(top, min(top + self.size[0], height)), slice(left, min(left + self.size[1], width)))
                for top in starts(height, self.size[0], self.stride[0])
                for left in starts(width, self.size[1], self.stride[1])]


@dataclass(frozen=True)
class Sensitivity:
    """One occlusion map: the class it explains, and per pixel the fall of that class's probability."""

    index: int              # the class explained
    probability: float      # its probability for the uncovered input
    values: np.ndarray      # (H, W) float32: probability lost when the pixel is covered (negative: gained)
    windows: Windows
    copies: int             # covered copies run (a window holding the cover value already is not)
    cover: tuple[float, ...]  # the value each channel is covered with


def describe(sensitivity: Sensitivity, labels: Sequence[str]) -> dict[str, Any]:
    """The map as POST /explain answers it: the class explained, the input size, values row by row, how it was made."""
    height, width = sensitivity.values.shape
    return {"label": labels[sensitivity.index], "index": sensitivity.index, "probability": sensitivity.probability,
            "height": height, "width": width,
            "values": np.round(sensitivity.values.astype(np.float64), DECIMALS).tolist(),
            "window": list(sensitivity.windows.size), "stride": list(sensitivity.windows.stride),
            "cover": list(sensitivity.cover)}


def label_index(labels: Sequence[str], label: str | None) -> int | None:
    """The index of `label` among a model's `labels` (None: the top class); InvalidField (422) naming them."""
    if label is None:
        return None
    if label not in labels:
        raise InvalidField(f"label: {label[:64]!r} is not one of the model's labels: {', '.join(labels)}")
    return list(labels).index(label)


def cover_value(pixels: np.ndarray, layout: str) -> np.ndarray:
    """(C, 1, 1): what a window is covered with. Greyscale layouts (digit, garment) were trained on a dark
    background, 0.0; a photo has none, so the picture's own mean colour, which adds no colour or edge of
    its own the way a black or grey square would."""
    if layout == "photo":
        return pixels.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    return np.zeros((len(pixels), 1, 1), np.float32)


def occlusion(pixels: np.ndarray, probabilities: Callable[[np.ndarray], np.ndarray], layout: str,
              target: int | None = None, windows: Windows | None = None) -> Sensitivity:
    """The occlusion map of prepared `pixels` ((C, H, W) float32 in [0, 1]) for class `target` (default: the
    top class), `probabilities` giving (N, K) for (N, C, H, W); at most MAX_COPIES_PER_RUN copies per call."""
    _, height, width = pixels.shape
    windows = windows or Windows.for_input(height, width)
    boxes = windows.boxes(height, width)
    cover = cover_value(pixels, layout)
    # A window that holds the cover value already (a digit's black background) would give back the picture
    # itself, whose fall is exactly 0: it is not run. A drawn digit leaves about half the windows to run.
    covering = [i for i, (rows, cols) in enumerate(boxes) if (pixels[:, rows, cols] != cover).any()]
    copies = np.repeat(pixels[None], len(covering) + 1, axis=0)  # the first stays uncovered: the reference
    for copy, i in zip(copies[1:], covering):
        copy[:, boxes[i][0], boxes[i][1]] = cover
    out = np.concatenate([probabilities(copies[start:start + MAX_COPIES_PER_RUN])
                          for start in range(0, len(copies), MAX_COPIES_PER_RUN)])
    index = int(np.argmax(out[0])) if target is None else target
    drops = np.zeros(len(boxes), np.float64)  # one per window
    drops[covering] = out[0, index] - out[1:, index]
    total, count = np.zeros((height, width), np.float64), np.zeros((height, width), np.float64)
    for drop, (rows, cols) in zip(drops, boxes):
        total[rows, cols] += drop
        count[rows, cols] += 1
    return Sensitivity(index, float(out[0, index]), (total / count).astype(np.float32), windows, len(covering),
                       tuple(float(c) for c in cover.ravel()))


def heat_picture(pixels: np.ndarray, values: np.ndarray) -> Image.Image:
    """The map over what the model sees, as RGB ENLARGE times larger: red where covering lowered the class,
    blue where it raised it, as strong as the change against the map's largest (MIN_SCALE at least)."""
    rgb = np.repeat(pixels, 3, axis=0) if len(pixels) == 1 else pixels
    under = np.clip(rgb.transpose(1, 2, 0), 0, 1) * (UNDER_HEAT * 255)  # (H, W, 3)
    strength = np.clip(values / max(float(np.abs(values).max()), MIN_SCALE), -1, 1)[..., None]  # (H, W, 1)
    colour = np.where(strength > 0, np.array(DROP_COLOUR, np.float32), np.array(RISE_COLOUR, np.float32))
    alpha = np.abs(strength)
    picture = Image.fromarray(np.round(under * (1 - alpha) + colour * alpha).astype(np.uint8), "RGB")
    return picture.resize((picture.width * ENLARGE, picture.height * ENLARGE), Image.Resampling.NEAREST)
