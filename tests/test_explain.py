"""Occlusion maps (serving/explain.py, POST /explain), checked against Captum and against models whose answer is known.

Captum is a test-only dependency: it needs torch, which the service never imports.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
import torch
from captum.attr import Occlusion
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from starlette.testclient import TestClient

from bench.naive_app import torch_model_from_store
from serving import explain, runtime
from serving.explain import Windows, occlusion
from serving.loading import load_model
from serving.runtime import ServedModels, load_models
from serving.service import ModelService
from test_serving import BLACK_PNG, PHOTO_PNG, client, image_form, serve, served_root, store  # noqa: F401 (fixtures)
from training.build import model_from_checkpoint
from training.checkpoint import CHECKPOINT, load_checkpoint
from training.store import STORE_ENV, publish_model

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "models_store"  # the committed models: real MNIST and CIFAR-10 classifiers
DIGITS = sorted((REPO / "demo" / "examples" / "mnist").glob("*.png"))  # ten real MNIST test digits
BIRD = REPO / "demo" / "examples" / "cifar10" / "bird-0000.png"  # 99% a bird: not saturated
TOLERANCE = 1e-6  # probabilities: ONNX Runtime and PyTorch agree to about 1e-7 on these graphs
REGION = (slice(10, 16), slice(12, 18))  # the only pixels the hand-made model reads


def published(name: str) -> Any:
    served = load_model(PUBLISHED, name, try_cuda=False)
    assert served.ready, served.error
    return served


def probabilities_of(served: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda batch: runtime._probabilities(served, batch)


def captum_map(net: torch.nn.Module, pixels: np.ndarray, windows: Windows, cover: tuple[float, ...],
               target: int) -> np.ndarray:
    """captum.attr.Occlusion of softmax(net) with the same windows (across every channel) and baseline, (H, W)."""
    channels = len(pixels)
    attributions = Occlusion(lambda x: torch.softmax(net(x), dim=1)).attribute(
        torch.from_numpy(pixels[None]), sliding_window_shapes=(channels, *windows.size),
        strides=(channels, *windows.stride), baselines=torch.tensor(cover).reshape(1, channels, 1, 1), target=target,
        perturbations_per_eval=64)
    per_channel = attributions[0].detach().numpy()
    np.testing.assert_array_equal(per_channel, per_channel[:1].repeat(channels, 0))  # windows span every channel
    return per_channel[0]


# -- the windows


def test_windows_are_a_seventh_of_the_side_and_overlap_by_half() -> None:
    assert Windows.for_input(28, 28) == Windows((4, 4), (2, 2))
    assert Windows.for_input(32, 32) == Windows((5, 5), (3, 3))
    for side, count in ((28, 13 * 13), (32, 10 * 10)):
        boxes = Windows.for_input(side, side).boxes(side, side)
        covered = np.zeros((side, side), int)
        for rows, cols in boxes:
            covered[rows, cols] += 1
        assert len(boxes) == count and covered.min() >= 1  # every pixel, none left out at the edges


# -- correctness against Captum, on torch copies of the published models


@pytest.mark.parametrize("name, picture, rank", [
    ("digits", DIGITS[3], 0),   # a 3 the model is 94% sure of: its top class
    ("digits", DIGITS[3], 1),   # ... and its runner-up, asked for by name
    ("cifar10", BIRD, 0),      # a photo: covered with its mean colour
])
def test_the_map_equals_captums_occlusion_on_a_torch_copy_of_the_published_model(name: str, picture: Path,
                                                                                 rank: int) -> None:
    served = published(name)
    net, _ = torch_model_from_store(PUBLISHED, name)
    pixels = runtime._prepare(picture.read_bytes(), served.image_spec)
    target = int(np.argsort(-runtime._probabilities(served, pixels[None])[0])[rank])
    ours = occlusion(pixels, probabilities_of(served), served.image_spec.layout, target)
    expected = captum_map(net, pixels, ours.windows, ours.cover, target)
    assert ours.index == target and np.abs(ours.values).max() > 100 * TOLERANCE  # a map, not zeros
    np.testing.assert_allclose(ours.values, expected, atol=TOLERANCE)


def test_the_map_equals_captums_on_a_tiny_model_rebuilt_from_its_checkpoint(store: Path) -> None:
    """The serving tests' fashion model, trained here, rebuilt by training.build from its own checkpoint."""
    net, _ = model_from_checkpoint(load_checkpoint(store.parent / "runs" / "fashion_cnn" / CHECKPOINT))
    served = load_models(store).get("fashion", "classify")
    pixels = runtime._prepare(PHOTO_PNG, served.image_spec)
    ours = occlusion(pixels, probabilities_of(served), served.image_spec.layout)
    assert ours.cover == (0.0,)  # a garment's background is black
    np.testing.assert_allclose(ours.values, captum_map(net, pixels, ours.windows, ours.cover, ours.index),
                               atol=TOLERANCE)


# -- models whose answer is known


def one_region_model(path: Path) -> Path:
    """An ONNX classifier of 28x28 pictures that reads only REGION: its mean brightness there decides."""
    weights = np.zeros((28, 28), np.float32)
    weights[REGION] = 2.0 / weights[REGION].size  # logit of "lit" minus "dark": 4 x the region's mean
    matrix = np.stack([weights.ravel(), -weights.ravel()], axis=1)  # (784, 2)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "one_region", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(matrix, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)  # ORT 1.31: <= 13
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def publish_one_region_model(store: Path, labels: tuple[str, str] = ("lit", "dark")) -> None:
    manifest = {"task": "classify", "labels": list(labels),
                "input": {"name": "pixels", "shape": [None, 1, 28, 28], "dtype": "float32"},
                "output": {"name": "probabilities", "shape": [None, 2], "dtype": "float32"},
                "preprocessing": {"image": {"height": 28, "width": 28, "channels": 1, "layout": "garment"}},
                "metrics": {}, "report_figure": "none: a test model"}
    publish_model(store, "region", one_region_model(store.parent / "region.onnx"), manifest, "# region\n")


def test_a_model_that_reads_one_region_is_explained_there_and_nowhere_else(tmp_path: Path) -> None:
    publish_one_region_model(tmp_path / "store")
    models = load_models(tmp_path / "store")
    pixels = np.full((1, 28, 28), 0.5, np.float32)
    pixels[0][REGION] = 1.0
    seen, sensitivity, served = models.explain("region", pixels)
    values = sensitivity.values
    assert served.name == "region" and seen is not pixels and np.array_equal(seen, pixels)
    assert models.models["region"].labels[sensitivity.index] == "lit"
    assert sensitivity.probability == pytest.approx(1 / (1 + np.exp(-4)), abs=1e-6)
    assert (values[REGION] > 0.01).all() and np.unravel_index(values.argmax(), values.shape) in region_pixels()
    reach = np.zeros((28, 28), bool)  # pixels sharing a window with the region
    for rows, cols in sensitivity.windows.boxes(28, 28):
        if region_mask()[rows, cols].any():
            reach[rows, cols] = True
    np.testing.assert_array_equal(values[~reach], 0.0)  # covered elsewhere, the answer does not move at all
    dark = models.explain("region", pixels, label="dark")[1]
    np.testing.assert_allclose(dark.values, -values, atol=1e-6)  # two classes: one's loss is the other's gain


def region_mask() -> np.ndarray:
    mask = np.zeros((28, 28), bool)
    mask[REGION] = True
    return mask


def region_pixels() -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in zip(*np.nonzero(region_mask()))}


@pytest.mark.parametrize("picture", DIGITS, ids=[p.stem for p in DIGITS])
def test_on_mnist_digits_the_heat_falls_on_the_ink(picture: Path) -> None:
    served = published("digits")
    models = ServedModels(PUBLISHED, {"digits": served})
    pixels, sensitivity, _ = models.explain("digits", picture.read_bytes())
    assert served.labels[sensitivity.index] == picture.name[0]  # the model gets these right
    ink = pixels[0] > 0.2
    near_ink = dilate(ink, 1)
    heat = np.clip(sensitivity.values, 0, None)
    assert heat.max() > 0 and near_ink[np.unravel_index(heat.argmax(), heat.shape)]  # hottest on a stroke
    assert heat[near_ink].sum() >= 0.8 * heat.sum()  # most of the heat on or beside the strokes
    far = ~dilate(ink, 2 * sensitivity.windows.size[0])  # no window there holds any ink
    np.testing.assert_array_equal(sensitivity.values[far], 0.0)  # covering black with black changes nothing
    assert sensitivity.copies < len(sensitivity.windows.boxes(28, 28))  # ... so those windows are not run


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` grown by `steps` pixels in every direction (Chebyshev distance)."""
    grown = np.pad(mask, steps)
    out = np.zeros_like(mask)
    for dr in range(2 * steps + 1):
        for dc in range(2 * steps + 1):
            out |= grown[dr:dr + mask.shape[0], dc:dc + mask.shape[1]]
    return out


def test_all_covered_copies_go_to_onnx_runtime_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    served = published("cifar10")
    pixels = runtime._prepare(BIRD.read_bytes(), served.image_spec)
    sizes: list[int] = []
    run = probabilities_of(served)
    whole = occlusion(pixels, lambda batch: sizes.append(len(batch)) or run(batch), "photo")
    assert sizes == [10 * 10 + 1] and whole.copies == 100  # the covered copies and the picture itself, one call
    monkeypatch.setattr(explain, "MAX_COPIES_PER_RUN", 40)
    sizes.clear()
    chunked = occlusion(pixels, lambda batch: sizes.append(len(batch)) or run(batch), "photo")
    assert sizes == [40, 40, 21]
    np.testing.assert_allclose(chunked.values, whole.values, atol=1e-6)


def test_the_heat_picture_is_red_where_covering_lowers_the_class_and_blue_where_it_raises_it() -> None:
    pixels = np.zeros((1, 4, 4), np.float32)
    values = np.zeros((4, 4), np.float32)
    values[0, 0], values[3, 3] = 0.4, -0.2
    picture = np.asarray(explain.heat_picture(pixels, values))
    assert picture.shape == (4 * explain.ENLARGE, 4 * explain.ENLARGE, 3)
    assert tuple(picture[0, 0]) == explain.DROP_COLOUR  # the largest change, at full strength
    red, green, blue = picture[-1, -1]
    assert blue > red and blue > green       # half as strong, the other way
    assert tuple(picture[0, -1]) == (0, 0, 0)  # nothing changed on a black pixel


# -- POST /explain


def test_explain_answers_the_map_in_the_documented_shape(client: TestClient, store: Path) -> None:
    response = client.post("/explain", **image_form(PHOTO_PNG))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model", "version", "label", "index", "probability", "height", "width", "values",
                           "window", "stride", "cover", "provider"}
    models = load_models(store)
    pixels, expected, served = models.explain("fashion", PHOTO_PNG)
    assert (answer["model"], answer["version"], answer["provider"]) == ("fashion", "v1", served.provider)
    assert (answer["height"], answer["width"]) == pixels.shape[1:] == (28, 28)
    assert answer["label"] == served.labels[answer["index"]] == client.post(
        "/classify", **image_form(PHOTO_PNG)).json()["label"]  # the top class by default
    assert answer["probability"] == pytest.approx(expected.probability, abs=1e-6)
    assert (answer["window"], answer["stride"], answer["cover"]) == ([4, 4], [2, 2], [0.0])
    np.testing.assert_allclose(answer["values"], expected.values, atol=1e-6)


def test_explain_answers_for_the_label_asked(client: TestClient, store: Path) -> None:
    labels = load_models(store).models["fashion"].labels
    top = client.post("/explain", **image_form(PHOTO_PNG)).json()
    other = next(label for label in labels if label != top["label"])
    answer = client.post("/explain", **image_form(PHOTO_PNG, label=other)).json()
    assert (answer["label"], answer["index"]) == (other, labels.index(other))
    assert answer["probability"] < top["probability"] and answer["values"] != top["values"]


def test_explain_draws_the_heat_over_what_the_model_sees_as_a_png(client: TestClient) -> None:
    answer = client.post("/explain", **image_form(PHOTO_PNG))
    response = client.post("/explain", **image_form(PHOTO_PNG, format="png"))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.headers["x-model-version"] == "v1" and response.headers["x-label"] == answer.json()["label"]
    assert float(response.headers["x-probability"]) == pytest.approx(answer.json()["probability"], abs=1e-6)
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (28 * explain.ENLARGE, 28 * explain.ENLARGE) and picture.mode == "RGB"


def test_a_label_that_looks_like_a_number_is_a_label(tmp_path: Path) -> None:
    """Form text is read as JSON first (as BentoML reads it): "1" must still name the label "1"."""
    publish_one_region_model(tmp_path / "store", labels=("0", "1"))
    with serve(tmp_path / "store") as c:
        answer = c.post("/explain", **image_form(PHOTO_PNG, model="region", label="1"))
        assert answer.status_code == 200, answer.text
        assert (answer.json()["label"], answer.json()["index"]) == ("1", 1)


@pytest.mark.parametrize("form, status, words", [
    (lambda: image_form(PHOTO_PNG, label="Spaceship"), 422, ("label", "Spaceship", "Trouser, Dress")),
    (lambda: image_form(PHOTO_PNG, format="gif"), 422, ("format", "json", "png")),
    (lambda: image_form(b"this is not an image"), 400, ("decode",)),
    (lambda: image_form(BLACK_PNG, model="resnet"), 404, ("resnet",)),
    (lambda: image_form(BLACK_PNG, model="fashion_reconstruction"), 400, ("/reconstruct",)),
    (lambda: image_form(BLACK_PNG, model="heart"), 400, ("/heart",)),
    (lambda: {"files": {"image": ("x.png", BLACK_PNG)}}, 422, ("model",)),
    (lambda: {"files": {"model": (None, "fashion")}}, 422, ("image",)),
    (lambda: {"data": {"image": "x", "model": "fashion"}}, 415, ("multipart",)),
], ids=["unknown label", "unknown format", "undecodable", "unknown model", "autoencoder", "heart model",
        "no image", "no model", "not a form"])
def test_explain_refuses_what_classify_refuses_and_an_unknown_label(client: TestClient, form: Callable[[], dict],
                                                                    status: int, words: tuple[str, ...]) -> None:
    response = client.post("/explain", **form())
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["error"], response.json()


def test_explain_answers_over_http_as_its_declaration_answers_in_python(
        client: TestClient, store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Over HTTP it is answered from the guard's parse (test_serving checks BentoML parses nothing)."""
    over_http = client.post("/explain", **image_form(PHOTO_PNG, label="Dress"))
    monkeypatch.setenv(STORE_ENV, str(store))
    image = tmp_path / "photo.png"
    image.write_bytes(PHOTO_PNG)
    declared = ModelService().explain(image=image, model="fashion", label="Dress")
    assert json.loads(declared.body) == over_http.json()


def test_classify_is_answered_while_an_explanation_runs(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/explain runs in the service's threads for synchronous work, never on the event loop /classify shares."""
    started, release = threading.Event(), threading.Event()

    def slow(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(30)
        return occlusion(*args, **kwargs)

    monkeypatch.setattr(runtime, "occlusion", slow)
    with serve(store) as c, concurrent.futures.ThreadPoolExecutor(1) as pool:
        explained = pool.submit(c.post, "/explain", **image_form(PHOTO_PNG))
        assert started.wait(30)
        try:
            assert c.post("/classify", **image_form(PHOTO_PNG)).status_code == 200
            assert not explained.done()
        finally:
            release.set()
        assert explained.result(30).status_code == 200


# -- bench.serve --explain: /classify measured with /explain loaded beside it


def test_bench_serve_measures_classify_with_explain_beside_it() -> None:
    from bench.serve import EXPLAIN_CONCURRENCY, ratios, render_ratios, scenarios, summarise

    plan = scenarios(["ours", "ceiling"], [1, 32], 1, explain=True)
    assert [(s.path, s.concurrency, s.beside) for s in plan if "/explain" in (s.path, s.beside)] == [
        ("/explain", EXPLAIN_CONCURRENCY, None), ("/classify", 32, "/explain")]
    rounds = [[{"label": s.label, "server": s.server, "path": s.path, "concurrency": s.concurrency, "images": 1,
                "beside": s.beside, "requests_per_s": 50.0 if s.beside else 100.0, "images_per_s": 100.0,
                "p50_ms": 5.0, "p99_ms": 30.0 if s.beside else 20.0, "non_2xx": 0, "socket_errors": 0,
                "peak_rss_mib": None, **({"beside_requests_per_s": 9.5, "beside_p99_ms": 210.0} if s.beside else {})}
               for s in plan]] * 3
    found = ratios(rounds, 32)
    assert found["classify_with_explain_vs_alone"] == 0.5 and found["p99_with_explain_vs_alone"] == 1.5
    (row,) = [r for r in summarise(rounds) if "beside" in r["label"]]
    assert row["label"].endswith("(9.5 /explain requests/s, p99 210 ms)")
    text = render_ratios(found, 0, 32)
    assert "ours /classify (c32) with /explain loaded beside / ours /classify (c32) | 0.50x" in text
