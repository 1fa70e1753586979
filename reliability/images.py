"""Hypothesis strategies for uploaded pictures: any size, mode, bit depth and format, whole or damaged.

`uploads()` draws (bytes, whole): `whole` is False for a truncated or byte-flipped file, which the
service may refuse (400) but must never fail on (5xx). A whole file in a format the service documents
(PNG, JPEG, GIF, BMP, WebP) must be answered 200; TIFF (float and 16-bit pixels, NaN included) may be
refused but never crash anything.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image

# Modes each format can write, as Pillow does; the service documents the first five formats.
WRITABLE = {
    "PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I"),
    "JPEG": ("L", "RGB", "CMYK"),
    "GIF": ("L", "P"),
    "BMP": ("1", "L", "P", "RGB"),
    "WEBP": ("RGB", "RGBA"),
    "TIFF": ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"),
}
DOCUMENTED = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
MAX_SIDE = 600  # pixels; big enough to be resized, small enough to draw hundreds per second


def pixels(rng: np.random.Generator, mode: str, width: int, height: int, special: bool) -> Image.Image:
    """A picture of `mode`: random noise over a dark-on-light blob, NaN and infinities in float ones if `special`."""
    if mode == "F":
        values = rng.normal(128, 200, (height, width)).astype(np.float32)
        if special:
            values.flat[rng.integers(0, values.size, max(1, values.size // 10))] = rng.choice(
                [np.nan, np.inf, -np.inf, 1e38])
        return Image.fromarray(values, mode="F")
    if mode in ("I;16", "I"):
        top = 65535 if mode == "I;16" else 2 ** 31 - 1
        values = rng.integers(0, top, (height, width), dtype=np.int64 if mode == "I" else np.uint16)
        return Image.fromarray(values.astype(np.int32) if mode == "I" else values)  # mode I or I;16
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[height // 4: 3 * height // 4 + 1, width // 4: 3 * width // 4 + 1, :3] //= 8  # dark blob
    return Image.fromarray(rgba, mode="RGBA").convert(mode)


@st.composite
def uploads(draw: st.DrawFn, formats: tuple[str, ...] = tuple(WRITABLE)) -> tuple[bytes, bool, str]:
    """(file bytes, whole, description) for one picture; see the module docstring."""
    fmt = draw(st.sampled_from(formats))
    mode = draw(st.sampled_from(WRITABLE[fmt]))
    width, height = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    image = pixels(rng, mode, width, height, special=draw(st.booleans()))
    buffer = io.BytesIO()
    options = {"quality": draw(st.integers(1, 95))} if fmt in ("JPEG", "WEBP") else {}
    image.save(buffer, format=fmt, **options)
    data = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data), damage == "none", f"{fmt} {mode} {width}x{height} {damage}"
