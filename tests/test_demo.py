"""The Gradio demo over a tiny store: each tab's API through gradio_client against a launched app."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import gradio as gr
import httpx
import numpy as np
import pytest
import uvicorn
from gradio_client import Client, handle_file
from PIL import Image

from demo import views
from serving.ui_guard import DemoGuard
from demo.screenshots import launched
from demo.ui import build_demo
from demo_store import build_demo_store, digit_drawing, garment, png
from reliability import hostile
from serving import explain, runtime
from serving.runtime import HEART_MODEL, ServedModel, ServedModels, load_models
from serving_store import HEART_ROW

SHOWN = 5  # classes the label lists, best first


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_store(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def models(demo_store: Path) -> ServedModels:
    models = load_models(demo_store)
    assert models.ready and set(models.models) == {"cifar10", "digits", "fashion", "fashion_reconstruction", "heart"}
    return models


@pytest.fixture(scope="module")
def client(models: ServedModels) -> Iterator[Client]:
    with launched(build_demo(models)) as url:
        yield Client(url, verbose=False)


def saved(tmp_path: Path, img: Image.Image, name: str) -> str:
    path = tmp_path / name
    img.save(path)
    return str(path)


def sketch(path: str | None) -> dict[str, Any]:
    """A Sketchpad value as the browser sends it: the flattened drawing is the composite."""
    return {"background": None, "layers": [], "composite": handle_file(path) if path else None}


def confidences(label: dict[str, Any]) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label.get("confidences", [])}


# -- classify


def test_classify_drawing_answers_as_the_runtime(client: Client, models: ServedModels, tmp_path: Path) -> None:
    drawing = digit_drawing()
    label, seen, _, _, verdict = client.predict("digits", sketch(saved(tmp_path, drawing, "seven.png")),
                                                api_name="/classify_drawing")
    expected = models.classify("digits", png(drawing), top_k=SHOWN)  # the label shows the best five
    assert confidences(label) == pytest.approx({t["label"]: t["probability"] for t in expected["top"]}, abs=1e-6)
    assert label["label"] == expected["label"] and expected["label"] in verdict
    # What the model sees: the prepared 28x28 input, enlarged pixel for pixel.
    prepared = models.prepare("digits", png(drawing))
    shown = np.asarray(Image.open(seen).convert("L"), dtype=np.float32) / 255
    assert shown.shape == (28 * views.ENLARGE, 28 * views.ENLARGE)
    np.testing.assert_allclose(shown[:: views.ENLARGE, :: views.ENLARGE], prepared[0], atol=1 / 255)


def test_beside_what_the_model_sees_is_where_it_looks_for_the_top_class(client: Client, models: ServedModels,
                                                                      tmp_path: Path) -> None:
    drawing = png(digit_drawing())
    label, _, looks, note, _ = client.predict("digits", sketch(saved(tmp_path, digit_drawing(), "seven.png")),
                                              api_name="/classify_drawing")
    pixels, expected, _ = models.explain("digits", drawing)  # the top class's map, over the same input
    shown = np.asarray(Image.open(looks).convert("RGB"))
    np.testing.assert_array_equal(shown, np.asarray(explain.heat_picture(pixels, expected.values)))
    assert models.models["digits"].labels[expected.index] == label["label"]
    assert note.startswith(f"**Where it looks for {label['label']}:**")


def test_where_it_looks_for_another_class_names_it(models: ServedModels) -> None:
    image = png(garment())
    labels = models.models["fashion"].labels
    top = views.classify(models, "fashion", image)
    other = next(name for name in labels if name != max(top.confidences, key=top.confidences.get))
    looks = views.where_it_looks(models, "fashion", image, other)
    pixels, expected, _ = models.explain("fashion", image, other)
    assert f"for {other}:" in looks.note and top.looks.note != looks.note
    assert np.array_equal(np.asarray(looks.picture), np.asarray(explain.heat_picture(pixels, expected.values)))
    unknown = views.where_it_looks(models, "fashion", image, "Spaceship")  # said, not raised
    assert unknown.picture is None and "Spaceship" in unknown.note


def test_blank_canvas_asks_for_a_drawing(client: Client, tmp_path: Path) -> None:
    empty = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    for value in (sketch(saved(tmp_path, empty, "empty.png")), sketch(None)):
        label, _, looks, note, verdict = client.predict("fashion", value, api_name="/classify_drawing")
        assert "Draw something" in verdict and not confidences(label or {}) and looks is None
        assert note == views.LOOKS_HOW


def test_classify_upload_and_model_choice(client: Client, models: ServedModels, tmp_path: Path) -> None:
    path = saved(tmp_path, garment(), "trouser.png")
    for name in ("fashion", "digits"):
        label, _, _, _, verdict = client.predict(name, handle_file(path), api_name="/classify_upload")
        expected = models.classify(name, Path(path).read_bytes(), top_k=SHOWN)
        assert label["label"] == expected["label"]
        assert list(confidences(label)) == [t["label"] for t in expected["top"]]


def test_models_made_for_drawings_come_first(models: ServedModels) -> None:
    assert list(models.models)[0] == "cifar10"  # the store's order: by name
    assert views.image_classifiers(models) == ["digits", "fashion", "cifar10"]
    page = demo_config(build_demo(models))
    menu = next(c for c in page["components"] if c["props"].get("elem_id") == "classify-model")
    assert menu["props"]["value"] == "digits"  # what the canvas opens with


def test_classify_says_what_it_cannot_read(client: Client, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png(garment())[:60])  # a PNG header, then nothing: Gradio passes it on unread
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 5000)).save(huge)     # 25 megapixels in a few KB: refused before decoding
    for path, reason in ((truncated, "cannot decode image"), (huge, "the limit is")):
        *_, verdict = client.predict("fashion", handle_file(str(path)), api_name="/classify_upload")
        assert verdict.startswith("**Cannot classify this picture:**") and reason in verdict


@pytest.mark.parametrize("unsure_below, unsure", [(0.0, False), (1.01, True)])
def test_low_confidence_is_said(models: ServedModels, monkeypatch: pytest.MonkeyPatch,
                                unsure_below: float, unsure: bool) -> None:
    monkeypatch.setattr(views, "UNSURE_BELOW", unsure_below)
    result = views.classify(models, "fashion", png(garment()))
    best = max(result.confidences, key=result.confidences.get)
    assert ("unsure" in result.verdict) == unsure and best in result.verdict


# -- reconstruction


def test_reconstruction_shows_original_noisy_and_output(client: Client, models: ServedModels,
                                                        tmp_path: Path) -> None:
    path = saved(tmp_path, garment(), "garment.png")
    original, noisy, rebuilt, report = client.predict("fashion_reconstruction", handle_file(path), 0.2,
                                                      api_name="/reconstruct_upload")
    small = [np.asarray(Image.open(p).convert("L"))[:: views.ENLARGE, :: views.ENLARGE] for p in
             (original, noisy, rebuilt)]
    assert all(s.shape == (28, 28) for s in small)
    np.testing.assert_array_equal(small[0], np.asarray(garment()))  # already in training form: unchanged
    assert 0 < np.abs(small[1].astype(int) - small[0]).max() <= round(0.2 * 255) + 1  # uniform noise, at most 0.2
    expected = np.asarray(models.reconstruct("fashion_reconstruction", Image.fromarray(small[1]))[0])
    np.testing.assert_array_equal(small[2], expected)  # the runtime's reconstruction of the noisy input
    error = np.mean((small[2] / 255 - small[0] / 255) ** 2)
    assert f"**{error:.4f}**" in report


def test_both_tabs_decode_through_the_runtime_and_refuse_a_scan_bomb(models: ServedModels,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime holds the process's decoding budget and limits (serving.runtime._prepare)."""
    decoded: list[bytes | Image.Image] = []
    prepare = runtime._prepare
    monkeypatch.setattr(runtime, "_prepare", lambda image, spec: decoded.append(image) or prepare(image, spec))
    upload = png(garment())
    assert views.reconstruct(models, "fashion_reconstruction", upload, 0.2).reconstruction is not None
    assert views.classify(models, "fashion", upload).confidences
    assert decoded[0] == upload and decoded[-1] == upload  # the noisy picture goes in between, decoded already
    bomb = hostile.scan_bomb_jpeg()
    assert "scans" in views.classify(models, "digits", bomb).verdict
    assert "scans" in views.reconstruct(models, "fashion_reconstruction", bomb, 0.2).report


def test_reconstruction_from_a_drawing(client: Client, tmp_path: Path) -> None:
    *images, report = client.predict("fashion_reconstruction", sketch(saved(tmp_path, digit_drawing(), "d.png")),
                                     0.0, api_name="/reconstruct_drawing")
    assert all(images) and "Reconstruction error" in report


# -- heart


def test_heart_answers_as_the_runtime(client: Client, models: ServedModels) -> None:
    label, explanation = client.predict(*[HEART_ROW[f] for f in views.HEART_FIELDS], api_name="/heart")
    expected = models.predict_heart(HEART_ROW)
    p = expected["probability"]
    assert confidences(label) == pytest.approx({"HeartDisease": p, "Normal": 1 - p}, abs=1e-6)
    assert f"**{p:.0%}**" in explanation and f"**{expected['label']}**" in explanation
    assert "not medical advice" in explanation


def test_heart_form_offers_only_valid_values(client: Client) -> None:
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/heart"]["parameters"]
    by_name = {p["label"]: p for p in info}
    assert len(info) == 11
    assert set(by_name["Sex"]["type"]["enum"]) == {"M", "F"}
    assert set(by_name["Chest pain type"]["type"]["enum"]) == {"TA", "ATA", "NAP", "ASY"}


# -- what the page offers, for any store


def demo_config(demo: gr.Blocks) -> dict[str, Any]:
    return demo.get_config_file()


def page_text(demo: gr.Blocks) -> str:
    return json.dumps(demo_config(demo), default=str)


def test_missing_and_broken_models_are_explained(models: ServedModels) -> None:
    broken = ServedModel("greek", "v1", error="ValueError: model.onnx does not match the sha256 in its manifest")
    others = {n: m for n, m in models.models.items() if n != HEART_MODEL}
    text = page_text(build_demo(ServedModels(models.store, {**others, "greek": broken})))
    assert "heart-disease model is not published yet" in text
    assert re.search(r"Not available yet.*heart.*greek", text)
    assert "greek`: failed to load: ValueError: model.onnx does not match" in text


def test_an_empty_store_gives_a_page_that_says_so(tmp_path: Path) -> None:
    text = page_text(build_demo(load_models(tmp_path / "no-store")))
    for phrase in ("none yet", "No image classifier is published yet", "No autoencoder is published yet",
                   "heart-disease model is not published yet", "No models are published yet"):
        assert phrase in text


def test_about_panels_come_from_manifests(models: ServedModels) -> None:
    text = page_text(build_demo(models))
    for served in models.models.values():
        assert f"{served.name} {served.version}" in text
    manifest = models.models["fashion"].manifest
    assert f"{manifest['metrics']['test_accuracy']:.2%}" in text and manifest["report_figure"] in text


def test_python_m_demo_serves_the_guarded_app_on_loopback(monkeypatch: pytest.MonkeyPatch, demo_store: Path) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setenv("MODELS_STORE", str(demo_store))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs, app=app))
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: pytest.fail("Gradio's own server has no guard"))
    from demo.__main__ import main

    main([])
    assert served["host"] == "127.0.0.1" and served["port"] == 7860
    assert DemoGuard in [m.cls for m in served["app"].user_middleware]


def test_screenshots_serve_the_demo_over_the_store(monkeypatch: pytest.MonkeyPatch, demo_store: Path,
                                                   tmp_path: Path) -> None:
    from demo import screenshots

    pages: list[str] = []
    monkeypatch.setenv("MODELS_STORE", str(demo_store))
    monkeypatch.setattr(screenshots, "take", lambda url, out, profile: pages.append(httpx.get(url).text) or [])
    screenshots.main(["--out", str(tmp_path)])  # the browser's part is the browser tests'
    assert len(pages) == 1 and "classic-dl demo" in pages[0]


def test_examples_are_small_real_test_images() -> None:
    index = views.examples_index()
    assert {"fashion_mnist", "mnist", "cifar10", "greek", "heart"} <= set(index)
    for dataset, entries in index.items():
        for entry in entries:
            if "file" in entry:
                path = views.EXAMPLES_DIR / entry["file"]
                assert path.stat().st_size < 10_000, path
                Image.open(path).verify()
            else:
                assert set(entry["row"]) == set(views.HEART_FIELDS)
