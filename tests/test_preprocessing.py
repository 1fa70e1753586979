"""The shared preprocessing: decoding safely, and bringing any picture into training form."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from reliability import hostile
from training.preprocessing import (MAX_JPEG_SCANS, WORKING_SIDE, ImageError, ImageSpec, decode_image, is_blank,
                                    prepare_image, read_header)

DIGIT = ImageSpec(28, 28, 1, "digit")
GARMENT = ImageSpec(28, 28, 1, "garment")
PHOTO = ImageSpec(32, 32, 3, "photo")


def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _training_form_digit() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = np.zeros((28, 28), np.uint8)
    a[6:22, 12:16] = rng.integers(150, 256, size=(16, 4))
    return a


@pytest.mark.parametrize("spec", [DIGIT, GARMENT])
def test_training_form_passes_through_unchanged(spec: ImageSpec) -> None:
    a = _training_form_digit()
    out = prepare_image(decode_image(_png(Image.fromarray(a))), spec)
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], a / np.float32(255))


def test_dark_ink_on_white_paper_is_inverted_cropped_and_centred() -> None:
    paper = np.full((300, 200), 255, np.uint8)
    paper[20:120, 10:40] = 0  # an off-centre vertical stroke
    out = prepare_image(decode_image(_png(Image.fromarray(paper))), DIGIT)[0]
    assert out[0, 0] == 0 and out.max() > 0.9  # light ink on a dark background now
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() - rows.min() + 1 in (19, 20, 21)  # the longer side fills MNIST's 20-pixel box
    ys, xs = np.indices(out.shape)
    cy, cx = (ys * out).sum() / out.sum(), (xs * out).sum() / out.sum()
    assert abs(cy - 14) < 1.5 and abs(cx - 14) < 1.5


def test_grey_paper_becomes_black_and_faint_ink_bright() -> None:
    """A scan: paper at 207 of 255 (the Greek letters'), strokes at 80; neither may stay grey."""
    scan = np.full((133, 133), 207, np.uint8)
    scan[30:100, 60:70] = 80
    out = prepare_image(decode_image(_png(Image.fromarray(scan))), DIGIT)[0]
    assert out.max() == pytest.approx(1.0, abs=0.02) and out[0, 0] == 0
    assert (out > 0.1).sum() < 0.3 * out.size  # only the stroke, not a grey square of paper
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() - rows.min() + 1 in (19, 20, 21)


def test_canvas_rgba_strokes_on_transparent_background() -> None:
    """Gradio's Sketchpad: black strokes, transparent elsewhere."""
    rgba = np.zeros((400, 400, 4), np.uint8)
    rgba[100:300, 180:220] = (0, 0, 0, 255)
    out = prepare_image(decode_image(_png(Image.fromarray(rgba, "RGBA"))), DIGIT)[0]
    assert out[0, 0] == 0 and out.max() > 0.9 and not is_blank(out)


def test_blank_canvas_is_blank() -> None:
    white = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    out = prepare_image(decode_image(_png(white)), DIGIT)
    assert is_blank(out) and out.shape == (1, 28, 28)


def test_garment_fills_the_frame() -> None:
    photo = np.full((100, 60, 3), 250, np.uint8)
    photo[10:90, 20:40] = (20, 30, 40)
    out = prepare_image(decode_image(_png(Image.fromarray(photo), "JPEG", quality=95)), GARMENT)[0]
    rows = np.nonzero(out.max(1) > 0.5)[0]
    assert rows.min() <= 1 and rows.max() >= 26


# Every mode each format can store: JPEG has no alpha, palette or 16 bits; BMP no alpha or 16 bits.
_MODES = {"PNG": ["L", "RGB", "RGBA", "P", "I;16", "1", "LA"], "GIF": ["L", "RGB", "P", "1"],
          "BMP": ["L", "RGB", "P", "1"], "WEBP": ["L", "RGB", "RGBA"], "JPEG": ["L", "RGB"]}


@pytest.mark.parametrize("fmt, mode", [(f, m) for f, modes in _MODES.items() for m in modes])
def test_common_formats_and_modes_decode(fmt: str, mode: str) -> None:
    if mode == "I;16":
        img = Image.fromarray(_training_form_digit().astype(np.uint16) * 257)
    else:
        img = Image.fromarray(_training_form_digit()).convert(mode)
    data = _png(img, fmt)
    out = prepare_image(decode_image(data), DIGIT)
    assert out.shape == (1, 28, 28) and 0 <= out.min() and out.max() <= 1 and out.max() > 0.5


def test_sixteen_bit_keeps_its_scale() -> None:
    a = _training_form_digit().astype(np.uint16) * 257
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    out = prepare_image(decode_image(_png(img)), DIGIT)
    np.testing.assert_allclose(out[0], _training_form_digit() / 255, atol=1e-6)


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.fromarray(_training_form_digit()), Image.new("L", (28, 28), 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert prepare_image(decode_image(buf.getvalue()), DIGIT).max() > 0.5


def test_photo_is_resized_to_rgb() -> None:
    img = Image.new("RGB", (64, 48), (200, 10, 10))
    out = prepare_image(decode_image(_png(img)), PHOTO)
    assert out.shape == (3, 32, 32)
    np.testing.assert_allclose(out[:, 5, 5], [200 / 255, 10 / 255, 10 / 255], atol=1e-6)


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not an image at all", "cannot decode"),
    (_png(Image.new("L", (64, 64)))[:40], "cannot decode"),
])
def test_bad_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
@pytest.mark.parametrize("spec", [DIGIT, GARMENT, PHOTO])
def test_a_big_picture_is_prepared_like_its_smaller_copy_without_big_float_arrays(mode: str, spec: ImageSpec) -> None:
    import tracemalloc

    paper = np.full((3000, 2000), 255, np.uint8)
    paper[600:2400, 800:1100] = 0  # a thick stroke: the same shape at either size
    big = Image.fromarray(paper).convert(mode)
    small = big.resize((1000, 1500), Image.Resampling.BOX) if mode != "P" else big.resize((1000, 1500))
    tracemalloc.start()  # numpy's arrays are traced; 3000 x 2000 in float32 RGB alone would be 69 MiB
    out = prepare_image(decode_image(_png(big)), spec)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB"
    same = prepare_image(decode_image(_png(small)), spec)
    assert np.abs(out - same).mean() < 0.02  # rounding may place the stroke a pixel apart


def test_pixel_limit_is_checked_before_decoding() -> None:
    big = _png(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match="limit"):
        decode_image(big, max_pixels=1000 * 1000)


def test_spec_round_trips_and_rejects_nonsense() -> None:
    assert ImageSpec.from_dict(DIGIT.to_dict()) == DIGIT
    with pytest.raises(ValueError):
        ImageSpec.from_dict({"height": 28, "width": 28, "channels": 2, "layout": "digit"})


def test_exif_orientation_turns_the_photo_upright() -> None:
    photo = np.zeros((32, 32, 3), np.uint8)
    photo[:8, :, 0] = 255  # a red band on top
    exif = Image.Exif()
    exif[0x0112] = 3  # Orientation: stored upside down
    turned = prepare_image(decode_image(_png(Image.fromarray(photo), exif=exif.tobytes())), PHOTO)
    upright = prepare_image(decode_image(_png(Image.fromarray(photo[::-1, ::-1].copy()))), PHOTO)
    np.testing.assert_array_equal(turned, upright)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_a_broken_exif_block_is_ignored(fmt: str) -> None:
    """PIL reads EXIF lazily, after decoding succeeded: a garbage block must not refuse good pixels."""
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    broken = prepare_image(decode_image(_png(photo, fmt, exif=b"garbage!garbage!", lossless=True)), PHOTO)
    plain = prepare_image(decode_image(_png(photo, fmt, lossless=True)), PHOTO)
    np.testing.assert_array_equal(broken, plain)


# -- what decoding costs, checked before decoding (docs/RELIABILITY.md#decoding-uploads)


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    """The issue's bomb: a progressive JPEG whose last scan is repeated (47 s at 4096 x 4096 before)."""
    with pytest.raises(ImageError, match="scans"):
        decode_image(hostile.scan_bomb_jpeg())
    allowed = hostile.with_scans(_png(Image.new("RGB", (64, 64), (9, 99, 199)), "JPEG", progressive=True),
                                 MAX_JPEG_SCANS)
    assert decode_image(allowed).size == (64, 64)


@pytest.mark.parametrize("case", list(hostile.REFUSED))
def test_uploads_built_to_be_slow_are_refused_from_their_framing(case: str) -> None:
    with pytest.raises(ImageError):
        read_header(hostile.REFUSED[case]())


def test_an_exif_directory_that_repeats_its_values_is_refused_in_a_jpeg_and_ignored_elsewhere() -> None:
    """1,000 entries each claiming the same 50 KB (a JPEG segment holds 64 KB): Pillow would read 50 MB."""
    entries = b"".join(struct.pack("<HHII", 0x9000 + i, 3, 25_000, 8) for i in range(1000))
    exif = b"II*\x00" + struct.pack("<IH", 8, 1000) + entries + bytes(4) + bytes(50_000)
    photo = Image.new("RGB", (32, 32), (200, 10, 10))
    with pytest.raises(ImageError, match="EXIF"):
        read_header(_png(photo, "JPEG", exif=b"Exif\x00\x00" + exif))
    out = prepare_image(decode_image(_png(photo, exif=exif)), PHOTO)  # PNG: Pillow never parses it, nor do we
    np.testing.assert_allclose(out[:, 5, 5], [200 / 255, 10 / 255, 10 / 255], atol=1e-6)


def test_a_big_jpeg_is_decoded_at_a_fraction_of_its_size() -> None:
    """Draft mode: libjpeg scales by 1/2, 1/4 or 1/8 while decoding, to at least WORKING_SIDE a side."""
    paper = np.full((3072, 4096), 255, np.uint8)
    paper[500:2500, 1800:2300] = 0
    img = decode_image(_png(Image.fromarray(paper), "JPEG", quality=90))
    assert img.size == (WORKING_SIDE, WORKING_SIDE * 3 // 4)
    small = _png(Image.fromarray(paper).resize((1024, 768), Image.Resampling.BOX), "JPEG", quality=90)
    assert np.abs(prepare_image(img, GARMENT) - prepare_image(decode_image(small), GARMENT)).mean() < 0.02


def test_the_memory_estimate_grows_with_what_is_decoded() -> None:
    grey, rgb, rgba = (read_header(_png(Image.new(mode, (2048, 2048)))).peak_bytes for mode in ("L", "RGB", "RGBA"))
    jpeg = read_header(_png(Image.new("RGB", (2048, 2048)), "JPEG")).peak_bytes  # decoded at half size
    assert grey < rgba and jpeg < rgb
