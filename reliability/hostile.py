"""Uploads built to make decoding slow or big: the worst accepted picture we could construct per format, and
files that training.preprocessing refuses before decoding (scan bombs, padded headers, run-length BMPs).

Used by the tests (a scan bomb to every endpoint) and by `python -m reliability.decoding`, which measures
what each costs (docs/RELIABILITY.md#decoding-uploads). Every file fits the service's 20 MiB body limit.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from typing import Any, Callable

import numpy as np
from PIL import Image

from training.preprocessing import (MAX_GIF_BLOCKS, MAX_JPEG_SCANS, MAX_PNG_TEXTS, MAX_RLE_BYTES, MAX_RLE_PIXELS,
                                    MAX_SEGMENTS, MAX_STRAY_BYTES, MAX_WEBP_PIXELS)

BODY_BYTES = 20 * 2**20 - 64 * 1024  # under the service's body limit, with room for the form around it
SIDE = 4096                          # the longest side the pixel limit (4096 x 4096) allows for a square
_SCAN = re.compile(rb"\xff\xda")
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def encoded(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _texture(width: int, height: int, levels: int, seed: int = 0) -> np.ndarray:
    """(height, width) uint8 noise of `levels` grey levels: costly to decode, yet compressible."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, levels, (height, width), dtype=np.uint8) * (255 // max(1, levels - 1))).astype(np.uint8)


def scans(jpeg: bytes) -> list[bytes]:
    """Each scan of a JPEG: its SOS segment and entropy-coded data, up to the next marker."""
    out = []
    for found in _SCAN.finditer(jpeg):
        start = found.start()
        end = _SCAN_END.search(jpeg, start + 2 + int.from_bytes(jpeg[start + 2: start + 4], "big"))
        out.append(jpeg[start: end.start() if end else len(jpeg) - 2])
    return out


def with_scans(jpeg: bytes, total: int, which: int = -1) -> bytes:
    """`jpeg` (progressive) with scan `which` repeated until it has `total` scans: libjpeg decodes each again."""
    extra = scans(jpeg)[which] * (total - len(scans(jpeg)))
    return jpeg[:-2] + extra + b"\xff\xd9"


def scan_bomb_jpeg(side: int = 64, total: int = 3300) -> bytes:
    """A small flat progressive JPEG whose last scan is repeated: the issue's 47-second upload is this at 4096."""
    return with_scans(encoded(Image.new("RGB", (side, side), (128, 100, 50)), "JPEG", progressive=True), total)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _before_idat(png: bytes, extra: bytes) -> bytes:
    at = png.index(b"IDAT") - 4
    return png[:at] + extra + png[at:]


def _rle_bmp(width: int, height: int, body: bytes) -> bytes:
    """An 8-bit run-length (BI_RLE8) BMP of `body`'s commands, grey palette."""
    palette = b"".join(bytes((k, k, k, 0)) for k in range(256))
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


# -- the worst accepted upload per format: each right under a limit of training.preprocessing

def png_worst() -> bytes:
    """8-bit RGBA 4096 x 4096 (MAX_PNG_BYTES of pixels) of noise, Paeth-filtered on every row (the costliest
    filter), with MAX_PNG_TEXTS zlib-bombed text chunks and empty chunks up to the chunk limit."""
    rows = _texture(SIDE * 4, SIDE, 3).reshape(SIDE, SIDE * 4)
    raw = np.concatenate([np.full((SIDE, 1), 4, np.uint8), rows], axis=1)  # filter type 4: Paeth
    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 6, 0, 0, 0)
    data = zlib.compress(raw.tobytes(), 1)
    idat = b"".join(_png_chunk(b"IDAT", data[i: i + 2**16]) for i in range(0, len(data), 2**16))
    text = _png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b" " * (2**20 - 1), 9))  # Pillow inflates 1 MiB each
    empty = _png_chunk(b"zzZz", b"")  # ancillary and private: read and skipped, one by one
    fill = MAX_SEGMENTS - 3 - MAX_PNG_TEXTS - idat.count(b"IDAT")
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + text * MAX_PNG_TEXTS + empty * fill + idat
            + _png_chunk(b"IEND", b""))


def jpeg_worst() -> bytes:
    """Progressive 4096 x 4096 4:4:4 texture with its last scan (a refinement of every luma coefficient, the
    costliest per byte we found) repeated as often as the body limit and MAX_JPEG_SCANS allow."""
    img = Image.fromarray(np.stack([_texture(SIDE, SIDE, 16, seed) for seed in range(3)], axis=-1), "RGB")
    for quality in (95, 90, 75, 50):
        try:
            jpeg = _padded_jpeg(encoded(img, "JPEG", quality=quality, progressive=True, subsampling=0))
        except OSError:  # Pillow's progressive encoder runs out of its buffer on the biggest files
            continue
        found, last = len(scans(jpeg)), len(scans(jpeg)[-1])
        total = min(MAX_JPEG_SCANS, found + (BODY_BYTES - len(jpeg)) // last)
        if total > found:
            return with_scans(jpeg, total)
    raise AssertionError("no progressive JPEG of this size fits the body limit")


def _padded_jpeg(jpeg: bytes) -> bytes:
    """`jpeg` with empty comments and fill bytes before its first scan, right under the limits."""
    comments = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS - 40 - MAX_JPEG_SCANS * 2)
    return jpeg[:2] + comments + b"\xff" * (MAX_STRAY_BYTES - 1) + jpeg[2:]


def gif_worst() -> bytes:
    """4096 x 4096 of noise (LZW gains nothing), as long as it fits, after MAX_GIF_BLOCKS comment sub-blocks."""
    side = SIDE
    while True:
        gif = encoded(Image.fromarray(_texture(side, side, 256), "L").convert("P"), "GIF")
        comment = b"!\xfe" + (b"\xff" + b"c" * 255) * (MAX_GIF_BLOCKS - 1) + b"\x00"
        at = gif.index(b",", 13 + 3 * 256)
        if len(gif) + len(comment) <= BODY_BYTES:
            return gif[:at] + comment + gif[at:]
        side -= 256


def bmp_worst() -> bytes:
    """4096 x 4096 of 8-bit palette pixels (24-bit would not fit the body limit)."""
    return encoded(Image.fromarray(_texture(SIDE, SIDE, 256), "L").convert("P"), "BMP")


def bmp_rle_worst() -> bytes:
    """A run-length BMP of MAX_RLE_PIXELS: rows of one-pixel runs, as many as MAX_RLE_BYTES hold, the rest padded."""
    side = int(MAX_RLE_PIXELS ** 0.5)
    row = b"\x01\x80" * side + b"\x00\x00"  # a run of one pixel each, then end of line
    short = b"\x01\x80\x00\x00"            # one pixel, then end of line: Pillow pads the row byte by byte
    rows = (MAX_RLE_BYTES - 1100 - len(short) * side) // (len(row) - len(short))
    return _rle_bmp(side, side, row * rows + short * (side - rows) + b"\x00\x01")


def webp_worst() -> bytes:
    """Lossy WebP of MAX_WEBP_PIXELS, noise at quality 100 (the slowest we found to decode)."""
    width = SIDE
    height = MAX_WEBP_PIXELS // width
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8))
    return encoded(noise.resize((width, height)), "WEBP", quality=100)


def webp_frames_worst() -> bytes:
    """An animated WebP of tiny frames up to the chunk limit: libwebp indexes every frame when it opens one."""
    frames = [Image.new("RGB", (16, 16), (60 * i, 0, 0)) for i in range(3)]
    animation = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    chunks, pos = [], 12
    while pos < len(animation):
        (length,) = struct.unpack_from("<I", animation, pos + 4)
        chunks.append(animation[pos: pos + 8 + length + (length & 1)])
        pos += 8 + length + (length & 1)
    body = b"".join(chunks) + chunks[-1] * (MAX_SEGMENTS - len(chunks))
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


WORST_ACCEPTED: dict[str, Callable[[], bytes]] = {
    "PNG": png_worst, "JPEG": jpeg_worst, "GIF": gif_worst, "BMP": bmp_worst, "BMP (run-length)": bmp_rle_worst,
    "WebP": webp_worst, "WebP (frames)": webp_frames_worst,
}


# -- refused before decoding: each one past a limit (docs/RELIABILITY.md has what Pillow alone took)

def _small(fmt: str) -> bytes:
    return encoded(Image.new("RGB" if fmt == "JPEG" else "L", (16, 16), 128), fmt)


def _gif_comment() -> bytes:
    gif = _small("GIF")
    at = gif.index(b",", 13)
    return gif[:at] + b"!\xfe" + (b"\xff" + b"c" * 255) * (BODY_BYTES // 256) + b"\x00" + gif[at:]


REFUSED: dict[str, Callable[[], bytes]] = {
    "JPEG, last scan repeated (3,300 scans, 4096 x 4096)": lambda: scan_bomb_jpeg(SIDE, 3300),
    "JPEG padded with 5 million empty comments":
        lambda: _small("JPEG")[:2] + b"\xff\xfe\x00\x02" * (BODY_BYTES // 4) + _small("JPEG")[2:],
    "JPEG padded with 20 MB of fill bytes": lambda: _small("JPEG")[:2] + b"\xff" * BODY_BYTES + _small("JPEG")[2:],
    "PNG of 1.7 million empty chunks":
        lambda: _before_idat(_small("PNG"), _png_chunk(b"zzZz", b"") * (BODY_BYTES // 12)),
    "GIF with a 20 MB comment": _gif_comment,
    "run-length BMP, 4096 x 4096, one pixel per row":
        lambda: _rle_bmp(SIDE, SIDE, b"\x01\x80\x00\x00" * SIDE + b"\x00\x01"),
}
