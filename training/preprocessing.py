"""Image preparation shared by training, the service and the demo.

Deliberately free of torch: the service imports this module alone. Every model takes float32
(B, C, H, W) pixels in [0, 1]; greyscale models expect a light object on a dark background, as in
MNIST and FashionMNIST. Normalisation, where an experiment uses it, lives inside the model graph.
"""

from __future__ import annotations

import contextlib
import io
import re
import struct
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
from PIL import Image, PngImagePlugin

# Refuse anything larger before decoding it: 4096 x 4096 is far beyond any drawing or photo we need.
DEFAULT_MAX_PIXELS = 4096 * 4096
# The formats people draw, photograph and save in. PIL reads a dozen more (TIFF, ICO, PPM, TGA, ...), each
# one more parser facing uploads; a float TIFF even carries NaN pixels, which no model answers.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
LAYOUTS = ("digit", "garment", "photo")
# Bigger pictures are shrunk to this longer side, in their own 8- or 16-bit form, before the float work:
# the prepared input is at most 32 pixels a side, and full-size float arrays of a big upload cost hundreds
# of MiB (docs/RELIABILITY.md#decoding-uploads).
WORKING_SIDE = 1024
# What makes a decode expensive, counted in the bytes before Pillow reads them; more is refused (400). Each
# limit keeps the worst upload we could construct near a second of CPU (docs/RELIABILITY.md#decoding-uploads).
MAX_JPEG_SCANS = 32      # each scan of a progressive JPEG is a pass over every block; libjpeg writes 10
MAX_SEGMENTS = 10_000    # JPEG segments, PNG or WebP chunks: Pillow reads each in Python (a 20 MiB PNG has 2,560)
MAX_GIF_BLOCKS = 1000    # extension sub-blocks before a GIF's picture: Pillow joins a comment's in quadratic time
MAX_STRAY_BYTES = 1024   # fill or junk bytes between JPEG segments before the first scan: read one by one in Python
MAX_PNG_BYTES = 4096 * 4096 * 4  # pixel data once inflated, from its header: 16-bit samples take twice the time
MAX_PNG_TEXTS = 16       # text chunks: Pillow keeps each, up to 1 MiB inflated (PngImagePlugin.MAX_TEXT_CHUNK)
MAX_WEBP_PIXELS = 4096 * 3072  # libwebp decodes a picture whole, never scaled, and slower than JPEG or PNG
MAX_RLE_PIXELS = 1024 * 1024  # a run-length BMP is decoded in Python, pixel by pixel
MAX_RLE_BYTES = 2 * MAX_RLE_PIXELS  # two bytes a command; a command may also draw nothing
JPEG_CODINGS = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman: what cameras and browsers write
# Peak memory of decoding and preparing one picture, beyond its decoded pixels: the float arrays of the
# (at most WORKING_SIDE a side) working picture, per pixel, and what every decode holds. Measured
# (docs/RELIABILITY.md#decoding-uploads); the estimate must stay above every measured peak.
WORKING_BYTES_PER_PIXEL = 56
DECODE_OVERHEAD_BYTES = 2 * 2**20
_WEBP_FRAME_BYTES = 512  # libwebp's index entry per frame, rounded up from the measured (RELIABILITY.md)
_BAND_ROWS = 64  # rows of the result per band when reducing: a band of a 4096-wide RGBA picture is 4 MiB
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


@dataclass(frozen=True)
class ImageHeader:
    """An upload opened, its pixels not read yet: what decoding it will take."""

    image: Image.Image  # Pillow's image, set to decode at most what preparing needs (JPEG draft mode)
    peak_bytes: int     # estimated memory to decode and prepare it


def open_image(data: bytes) -> Image.Image:
    """`data` opened as one of FORMATS, its header read and its pixels not yet; PIL's errors as they come.

    Raises ImageError first for a file whose structure would make Pillow's header parser or the decoder
    slow (check_structure)."""
    check_structure(data)
    return Image.open(io.BytesIO(data), formats=FORMATS)


def png_bytes(image: np.ndarray) -> bytes:
    """A (C, H, W) uint8 data-set image as PNG bytes, greyscale or RGB: what a client uploads."""
    buffer = io.BytesIO()
    Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def read_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageHeader:
    """`data` opened, its cost checked and its peak memory estimated, before any pixel is decoded."""
    if not data:
        raise ImageError("empty image: the upload has no bytes")
    with _pil_errors():
        img = open_image(data)
        width, height = img.size  # read from the header only
        if width == 0 or height == 0:
            raise ImageError(f"image has zero size ({width}x{height})")
        if width * height > max_pixels:
            raise ImageError(f"image is {width}x{height} pixels; the limit is {max_pixels} pixels")
        if img.format == "WEBP" and width * height > MAX_WEBP_PIXELS:
            raise ImageError(f"WebP image is {width}x{height} pixels; the limit for WebP is {MAX_WEBP_PIXELS} pixels")
        if img.format == "PNG" and (size := _png_bytes(data)) > MAX_PNG_BYTES:
            raise ImageError(f"PNG holds {size} bytes of pixels once inflated; the limit is {MAX_PNG_BYTES} bytes "
                             "(4096x4096 pixels of 8-bit RGBA)")
        if img.format == "JPEG" and max(img.size) > WORKING_SIDE:  # decode at 1/2, 1/4 or 1/8 by the DCT
            scale = WORKING_SIDE / max(img.size)
            img.draft(None, (max(1, round(width * scale)), max(1, round(height * scale))))
        return ImageHeader(img, estimate_peak_bytes(img, (width, height), data))


def decode(header: ImageHeader) -> Image.Image:
    """The pixels of `header`'s image (first frame of animations), decoded."""
    with _pil_errors():
        header.image.seek(0)
        header.image.load()
    return header.image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode one of FORMATS (first frame of animations); size and cost are checked before pixels are read."""
    return decode(read_header(data, max_pixels))


@contextlib.contextmanager
def _pil_errors() -> Iterator[None]:
    """PIL's exceptions as ImageError, with a message for the client."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"image refused as a decompression bomb: {err}") from err
    except Image.UnidentifiedImageError as err:  # its message names only the BytesIO object
        raise ImageError(f"cannot decode image: not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file") from err
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(f"cannot decode image: {type(err).__name__}: {err}") from err


# -- what a decode will cost, from the bytes alone

def _bytes_per_pixel(mode: str) -> int:
    """What Pillow stores per pixel of `mode`: one byte, two for 16-bit grey, else four (RGB is padded)."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def estimate_peak_bytes(img: Image.Image, stored: tuple[int, int], data: bytes = b"") -> int:
    """Memory that decoding and preparing `img` (opened, not decoded) takes at its peak, an upper bound.

    `stored` is the size in the file; img.size is what will be decoded (smaller for a JPEG in draft mode).
    """
    pixels = img.width * img.height
    decoded = pixels * _bytes_per_pixel(img.mode)
    if img.format == "WEBP":  # libwebp's canvas and previous frame, and its output bytes, beside the image,
        decoded = decoded * 4 + _riff_chunks(data) * _WEBP_FRAME_BYTES  # and its index of every frame
    averaged_as_rgba = img.mode in ("1", "P", "PA", "LA", "RGBA") or "transparency" in img.info
    if WORKING_SIDE < max(img.size) < 2 * WORKING_SIDE and averaged_as_rgba:  # shrunk whole, not in bands
        decoded += pixels * 8  # (_shrunk): made RGBA and premultiplied at full size, two copies at most
    if img.format == "JPEG" and "progressive" in img.info:  # every DCT coefficient is held, 2 bytes each
        h_max, v_max = max(c[1] for c in img.layer), max(c[2] for c in img.layer)
        share = sum(c[1] * c[2] for c in img.layer) / (h_max * v_max)
        decoded += int(stored[0] * stored[1] * 2 * share)
    if img.format == "PNG":
        decoded += _png_texts(data) * PngImagePlugin.MAX_TEXT_CHUNK
    working = min(pixels, WORKING_SIDE * WORKING_SIDE) * WORKING_BYTES_PER_PIXEL
    return decoded + working + DECODE_OVERHEAD_BYTES


def check_structure(data: bytes) -> None:
    """ImageError for a file built to make decoding slow: too many JPEG scans or segments, PNG or WebP
    chunks, GIF blocks, or a big run-length BMP. Reads only the file's framing, never its pixels."""
    if data.startswith(b"\xff\xd8"):
        _check_jpeg(data)
    elif data.startswith(b"\x89PNG\r\n\x1a\n"):
        _count(_png_chunks(data), "PNG chunks")
        if (texts := _png_texts(data)) > MAX_PNG_TEXTS:
            raise ImageError(f"PNG has {texts} text chunks; at most {MAX_PNG_TEXTS} are read")
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        if _gif_blocks(data) > MAX_GIF_BLOCKS:
            raise ImageError(f"GIF has more than {MAX_GIF_BLOCKS} extension blocks before its picture: refused, "
                             "it would be slow to read")
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        _count(_riff_chunks(data), "WebP chunks (frames)")
    elif data.startswith(b"BM"):
        _check_bmp(data)


def _count(found: int, what: str) -> None:
    if found > MAX_SEGMENTS:
        raise ImageError(f"image has more than {MAX_SEGMENTS} {what}: refused, it would be slow to read")


_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")  # a marker: not fill (0xff 0xff) nor a stuffed 0xff (0xff 0x00)
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # a marker ending entropy-coded data (restarts do not)
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})  # markers without a length: TEM, RSTn, SOI, EOI


def _check_jpeg(data: bytes) -> None:
    """Walk the JPEG's marker segments to its first EOI, counting scans, segments and stray bytes."""
    pos, scans, segments, stray = 2, 0, 0, 0
    while pos < len(data):
        if scans:  # after a scan's header: entropy-coded data up to the next marker, which libjpeg reads in C
            found = _SCAN_END.search(data, pos)
            if found is None:
                return
            pos = found.start()
        else:  # before the first scan Pillow reads fill and junk bytes one by one, in Python
            found = _NEXT_MARKER.search(data, pos, pos + MAX_STRAY_BYTES - stray + 2)
            if found is None:
                if len(data) - pos > MAX_STRAY_BYTES - stray + 1:
                    raise ImageError(f"JPEG has more than {MAX_STRAY_BYTES} stray bytes between its segments")
                return
            stray, pos = stray + found.start() - pos, found.start()
        if pos + 1 >= len(data):
            return
        marker = data[pos + 1]
        if marker == 0xD9:  # end of image: what follows (another picture of an MPO) is not decoded
            return
        if marker in _STANDALONE:
            pos += 2
            continue
        segments += 1
        if segments > MAX_SEGMENTS:
            raise ImageError(f"JPEG has more than {MAX_SEGMENTS} marker segments: refused, it would be slow to read")
        if pos + 4 > len(data):
            return
        length = int.from_bytes(data[pos + 2: pos + 4], "big")
        body = data[pos + 4: pos + 2 + length]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and marker not in JPEG_CODINGS:
            raise ImageError("JPEG is lossless, hierarchical or arithmetic-coded: only baseline and progressive "
                             "JPEG are decoded")
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError(f"JPEG has more than {MAX_JPEG_SCANS} scans: refused, each is a pass over the "
                                 "whole picture")
        elif (marker == 0xE1 and body.startswith(b"Exif\x00\x00")) or (marker == 0xE2 and body.startswith(b"MPF\x00")):
            _check_tiff_directory(body[6 if marker == 0xE1 else 4:])  # Pillow parses both when it opens the file
        pos += 2 + max(length, 2)


_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def _tiff_directory(block: bytes) -> tuple[str, list[tuple[int, int, int, bytes]]]:
    """The byte order and the (tag, type, count, value field) entries of an EXIF block's first directory."""
    order = {b"II": "<", b"MM": ">"}.get(block[:2])
    if order is None or len(block) < 8:
        return "<", []
    (offset,) = struct.unpack_from(order + "I", block, 4)
    if offset + 2 > len(block):
        return order, []
    (count,) = struct.unpack_from(order + "H", block, offset)
    entries = block[offset + 2: offset + 2 + 12 * count]
    return order, list(struct.iter_unpack(order + "HHI4s", entries[: len(entries) // 12 * 12]))


def _check_tiff_directory(block: bytes) -> None:
    """ImageError when the directory's values add up to more than the block holds: Pillow reads each
    value, so entries pointing at the same bytes again and again read gigabytes from a small file."""
    order, entries = _tiff_directory(block)
    claimed = sum(_TIFF_UNIT.get(kind, 0) * count for _, kind, count, _ in entries
                  if _TIFF_UNIT.get(kind, 0) * count > 4)
    if claimed > len(block):
        raise ImageError(f"image metadata (EXIF) claims {claimed} bytes of values in a {len(block)}-byte block")


def exif_orientation(exif: bytes | None) -> int:
    """The EXIF Orientation (1-8) of an EXIF block, 1 when there is none or the block does not parse.

    Read here, not through Pillow's getexif, which reads every value of the directory (see
    _check_tiff_directory) to find this one."""
    block = (exif or b"").removeprefix(b"Exif\x00\x00")
    order, entries = _tiff_directory(block)
    for tag, kind, count, value in entries:
        if tag == 0x0112 and kind == 3 and count == 1:
            (orientation,) = struct.unpack_from(order + "H", value)
            return orientation if 1 <= orientation <= 8 else 1
    return 1


def _png_walk(data: bytes) -> Iterator[bytes]:
    """(chunk type) for each PNG chunk, at most MAX_SEGMENTS + 1 of them."""
    pos = 8
    for _ in range(MAX_SEGMENTS + 1):
        if pos + 8 > len(data):
            return
        length, kind = struct.unpack_from(">I4s", data, pos)
        yield kind
        if kind == b"IEND":
            return
        pos += 12 + length


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by IHDR colour type: grey, RGB, palette, grey + alpha, RGBA


def _png_bytes(data: bytes) -> int:
    """Bytes of pixel data a PNG's header promises, 0 if it has no header we can read."""
    if len(data) < 29 or data[12:16] != b"IHDR":
        return 0
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    return width * height * _PNG_CHANNELS.get(colour, 4) * depth // 8


def _png_chunks(data: bytes) -> int:
    return sum(1 for _ in _png_walk(data))


def _png_texts(data: bytes) -> int:
    """Text chunks in a PNG (0 for any other file); each may hold a megabyte once inflated."""
    if not data.startswith(b"\x89PNG"):
        return 0
    return sum(kind in (b"tEXt", b"zTXt", b"iTXt") for kind in _png_walk(data))


def _gif_blocks(data: bytes) -> int:
    """Sub-blocks of the extensions before a GIF's first picture, up to MAX_GIF_BLOCKS + 1."""
    pos, blocks = 13, 0
    if len(data) > 10 and data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 7) + 1)
    while pos < len(data) and data[pos] == 0x21 and blocks <= MAX_GIF_BLOCKS:  # an extension: label, sub-blocks
        pos += 2
        while pos < len(data) and data[pos] and blocks <= MAX_GIF_BLOCKS:
            blocks += 1
            pos += 1 + data[pos]
        pos += 1
    return blocks


def _riff_chunks(data: bytes) -> int:
    """Top-level chunks of a WebP file (an animation has one per frame), up to MAX_SEGMENTS + 1."""
    pos, chunks = 12, 0
    while pos + 8 <= len(data) and chunks <= MAX_SEGMENTS:
        (length,) = struct.unpack_from("<I", data, pos + 4)
        chunks += 1
        pos += 8 + length + (length & 1)
    return chunks


def _check_bmp(data: bytes) -> None:
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:  # OS/2 headers have no compression
        return
    width, height, _, _, compression = struct.unpack_from("<iiHHI", data, 18)
    if compression in (1, 2) and (abs(width * height) > MAX_RLE_PIXELS or len(data) > MAX_RLE_BYTES):
        raise ImageError(f"run-length BMP of {abs(width)}x{abs(height)} pixels in {len(data)} bytes: at most "
                         f"{MAX_RLE_PIXELS} pixels in {MAX_RLE_BYTES} bytes are decoded (save it as PNG)")


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


_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}  # by EXIF Orientation, as ImageOps.exif_transpose turns


def _upright(img: Image.Image, orientation: int) -> Image.Image:
    """`img` turned as its EXIF `orientation` says (phone photos); unchanged, not copied, for 1."""
    return img.transpose(_TURNS[orientation]) if orientation in _TURNS else img


def prepare_image(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """(C, H, W) float32 in [0, 1], in the form the model was trained on.

    An image already in that form (the right size, and for greyscale a dark background) passes
    through unchanged, so official test images score the same over HTTP as offline.
    """
    # Shrunk before it is turned, converted or made float: each step then copies at most WORKING_SIDE a side.
    # A broken EXIF block counts as no orientation, since the pixels themselves decoded fine.
    pixels = _to_float_rgb_or_grey(_upright(_shrunk(img), exif_orientation(img.info.get("exif"))))
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
    """`img` with its longer side at most WORKING_SIDE, averaged down (an image that fits is returned as is).

    Reduced by a whole factor a band of rows at a time first, so that expanding a palette and Pillow's
    premultiplied alpha copy a band, never the whole picture."""
    if max(img.size) <= WORKING_SIDE:
        return img
    scale = WORKING_SIDE / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    factor = max(img.size) // WORKING_SIDE
    if factor > 1 and not img.mode.startswith("I;16"):  # Pillow cannot reduce 16-bit grey; it takes 2 bytes a pixel
        img = _reduced(img, factor)
    img = _averageable(img)
    return img if img.size == size else img.resize(size, Image.Resampling.BOX)


def _averageable(img: Image.Image) -> Image.Image:
    if img.mode in ("P", "PA") or "transparency" in img.info:  # palettes and colour keys do not average
        return img.convert("RGBA")
    if img.mode == "1":  # resized by picking pixels, not averaging them
        return img.convert("L")
    return img


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """`img` averaged over `factor` x `factor` blocks, _BAND_ROWS rows of the result at a time."""
    rows = factor * _BAND_ROWS
    out: Image.Image | None = None
    for top in range(0, img.height, rows):
        band = _averageable(img.crop((0, top, img.width, min(top + rows, img.height)))).reduce(factor)
        if out is None:
            out = Image.new(band.mode, (band.width, -(-img.height // factor)))
        out.paste(band, (0, top // factor))
    return out
def is_blank(x: np.ndarray, threshold: float = 0.05) -> bool:
    """True when a prepared greyscale input holds no ink worth classifying."""
    return float(np.max(x, initial=0.0)) < threshold
