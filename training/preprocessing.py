"""Image preparation shared by training, the service and the demo.

Deliberately free of torch: the service imports this module alone. Every model takes float32
(B, C, H, W) pixels in [0, 1]; greyscale models expect a light object on a dark background, as in
MNIST and FashionMNIST. Normalisation, where an experiment uses it, lives inside the model graph.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

# Refuse anything larger before decoding it: 4096 x 4096 is far beyond any drawing or photo we need.
DEFAULT_MAX_PIXELS = 4096 * 4096
# The formats people draw, photograph and save in. PIL reads a dozen more (TIFF, ICO, PPM, TGA, ...), each
# one more parser facing uploads; a float TIFF even carries NaN pixels, which no model answers.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
LAYOUTS = ("digit", "garment", "photo")
# Bigger pictures are shrunk to this longer side, in their own 8- or 16-bit form, before the float work:
# the prepared input is at most 32 pixels a side, and a 4096 x 4096 PNG took 640 MiB of float32 arrays.
WORKING_SIDE = 1024
_INK_THRESHOLD = 0.2  # share of full intensity above which a pixel counts as ink when cropping
_MIN_CONTRAST = 0.2   # ink standing at least this far above the background is stretched to full intensity
_DIGIT_BOX = 20 / 28  # MNIST fits each digit's longer side into 20 of its 28 pixels


class ImageError(ValueError):
    """An image we cannot or will not decode; the message is meant for the client."""


@dataclass(frozen=True)
class ImageSpec:
    """The input a model was trained on, and how to bring any picture into that form."""

    height: int
    width: int
    channels: int  # 1 greyscale, 3 RGB
    layout: str    # digit: crop ink, 20 px box, centre of mass; garment: crop, fill frame; photo: resize

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImageSpec":
        spec = cls(int(data["height"]), int(data["width"]), int(data["channels"]), str(data["layout"]))
        if spec.layout not in LAYOUTS or spec.channels not in (1, 3):
            raise ValueError(f"bad image spec {data}")
        return spec


def open_image(data: bytes) -> Image.Image:
    """`data` opened as one of FORMATS, its header read and its pixels not yet; PIL's errors as they come."""
    return Image.open(io.BytesIO(data), formats=FORMATS)


def png_bytes(image: np.ndarray) -> bytes:
    """A (C, H, W) uint8 data-set image as PNG bytes, greyscale or RGB: what a client uploads."""
    buffer = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one of FORMATS (first frame of animations); size is checked before pixels are read."""
    if not data:
        raise ImageError("empty image: the upload has no bytes")
    try:
        img = open_image(data)
        width, height = img.size  # read from the header only
        if width == 0 or height == 0:
            raise ImageError(f"image has zero size ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
        img.seek(0)
        img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"image refused as a decompression bomb: {err}") from err
    except Image.UnidentifiedImageError as err:  # its message names only the BytesIO object
        raise ImageError(f"cannot decode image: not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file") from err
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(f"cannot decode image: {type(err).__name__}: {err}") from err
    return img


def _to_float_rgb_or_grey(img: Image.Image) -> np.ndarray:
    """(H, W) or (H, W, 3) float32 in [0, 1]; transparency composited over white like paper."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0, 1)
    if img.mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    if img.mode in ("RGBA", "LA", "PA", "P", "La", "RGBa") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def _grey(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    return pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma, as PIL's "L"


def _border_level(grey: np.ndarray) -> float:
    return float(np.median(np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])))


def _background_is_light(grey: np.ndarray) -> bool:
    return _border_level(grey) > 0.5


def _flatten_background(grey: np.ndarray) -> np.ndarray:
    """Background to black, ink to full intensity, as in MNIST.

    Scanned or photographed paper is grey, not white (the Greek letters' paper is about 0.81), so once
    inverted it would sit at about 0.19 and count as ink; faint pencil would stay faint. The border's
    median is taken as the background level and subtracted; clear ink is then stretched to reach 1.
    """
    ink = grey - _border_level(grey)
    top = float(ink.max())
    if top <= 0:
        return np.zeros_like(grey)
    return np.clip(ink / top if top >= _MIN_CONTRAST else ink, 0, 1).astype(np.float32)


def _resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    out = Image.fromarray(grey.astype(np.float32), mode="F").resize((width, height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(out, dtype=np.float32), 0, 1)


def _crop_to_ink(grey: np.ndarray) -> np.ndarray | None:
    ink = grey > _INK_THRESHOLD * grey.max() if grey.max() > 0 else np.zeros_like(grey, dtype=bool)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if rows.size == 0:
        return None
    return grey[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def _fit(grey: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    """Scale so the image fits in box_h x box_w, keeping its aspect ratio."""
    h, w = grey.shape
    scale = min(box_h / h, box_w / w)
    return _resize(grey, max(1, round(w * scale)), max(1, round(h * scale)))


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> np.ndarray:
    """Paste `patch` at (top, left), clipped to the canvas."""
    h, w = patch.shape
    H, W = canvas.shape
    top, left = min(max(top, 0), H - h), min(max(left, 0), W - w)
    canvas[top: top + h, left: left + w] = patch
    return canvas


def _layout_digit(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    crop = _crop_to_ink(grey)
    canvas = np.zeros((height, width), np.float32)
    if crop is None:
        return canvas
    box = max(1, round(_DIGIT_BOX * min(height, width)))
    patch = _fit(crop, box, box)
    ys, xs = np.indices(patch.shape)
    mass = patch.sum() or 1.0
    cy, cx = (ys * patch).sum() / mass, (xs * patch).sum() / mass
    return _paste(canvas, patch, round(height / 2 - cy), round(width / 2 - cx))


def _layout_garment(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    crop = _crop_to_ink(grey)
    canvas = np.zeros((height, width), np.float32)
    if crop is None:
        return canvas
    patch = _fit(crop, height, width)
    return _paste(canvas, patch, (height - patch.shape[0]) // 2, (width - patch.shape[1]) // 2)


def _upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (phone photos); a broken EXIF block is ignored, since
    the pixels themselves decoded fine."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # PIL parses EXIF lazily, here: SyntaxError, struct.error, ValueError, KeyError...
        return img


def prepare_image(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """(C, H, W) float32 in [0, 1], in the form the model was trained on.

    An image already in that form (the right size, and for greyscale a dark background) passes
    through unchanged, so official test images score the same over HTTP as offline.
    """
    pixels = _to_float_rgb_or_grey(_shrunk(_upright(img)))
    if spec.channels == 3:
        rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
        if rgb.shape[:2] != (spec.height, spec.width):
            as_uint8 = Image.fromarray(np.round(rgb * 255).astype(np.uint8), mode="RGB")
            rgb = np.asarray(as_uint8.resize((spec.width, spec.height), Image.Resampling.BILINEAR),
                             dtype=np.float32) / 255.0
        return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32)

    grey = _grey(pixels)
    light = _background_is_light(grey)
    if grey.shape == (spec.height, spec.width) and not light:
        return grey[None].astype(np.float32)
    if light:
        grey = 1.0 - grey
    layout = _layout_digit if spec.layout == "digit" else _layout_garment
    return layout(_flatten_background(grey), spec.height, spec.width)[None]


def _shrunk(img: Image.Image) -> Image.Image:
    """`img` with its longer side at most WORKING_SIDE, averaged down (an image that fits is returned as is)."""
    if max(img.size) <= WORKING_SIDE:
        return img
    if img.mode in ("P", "PA") or "transparency" in img.info:  # palettes and colour keys do not average
        img = img.convert("RGBA")
    elif img.mode == "1":  # resized by picking pixels, not averaging them
        img = img.convert("L")
    scale = WORKING_SIDE / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BOX)


def is_blank(x: np.ndarray, threshold: float = 0.05) -> bool:
    """True when a prepared greyscale input holds no ink worth classifying."""
    return float(np.max(x, initial=0.0)) < threshold
