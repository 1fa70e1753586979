"""The service in-process through its ASGI app, on tiny models published by the real training code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import io
import json
import math
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from starlette.testclient import TestClient

from reliability import hostile
from serving import bentoml_compat, loading, runtime
from serving.batching import Batcher
from serving.budget import MemoryBudget
from serving.errors import BadInput, InvalidField, Overloaded
from serving.npy import read_npy
from serving.runtime import (INLINE_MAX_BYTES, INLINE_MAX_PIXELS, MAX_BATCH_IMAGES, ServedModel,
                             ServedModels, load_models, top_labels, validate_heart_row)
from serving.service import MAX_BODY_BYTES, ModelService
from serving.tabular import HeartRow, encode_row
from serving_store import HEART_ROW, HEART_TABULAR, TINY, build_store, expected_provider, heart_net
from training.build import model_from_checkpoint
from training.checkpoint import load_checkpoint
from training.data import load_data
from training.preprocessing import ImageSpec, decode_image, prepare_image
from training.registry import get_config
from training.store import MODEL_FILE, STORE_ENV, latest, publish_model, published_names, read_manifest


# -- fixtures and helpers


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "serving"
    build_store(root)
    return root


@pytest.fixture(scope="session")
def store(served_root: Path) -> Path:
    return served_root / "store"


@pytest.fixture(scope="session")
def provider(store: Path) -> str:
    return expected_provider(store)


@pytest.fixture(scope="session")
def test_split(served_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fashion model's own test images, (N, 1, 28, 28) uint8, and labels in its label order."""
    bundle = load_data(get_config("fashion_cnn").replace(**TINY), served_root / "data")
    return bundle.test.images.numpy(), bundle.test.labels.numpy()


@contextlib.contextmanager
def serve(store: Path, **config: Any) -> Iterator[TestClient]:
    """The service's ASGI app on `store` with BentoML `config`, started (models loaded) and stopped around the block."""
    # Each app registers its request metrics in prometheus' one global registry, so a second app in
    # this process would collide: in-process apps go without; the end-to-end test checks /metrics.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENTOML_CONFIG_OVERRIDES", json.dumps({"services": {"classic-dl": {"metrics": {"enabled": False},
                                                                                     **config}}}))
        mp.setenv(STORE_ENV, str(store))
        with TestClient(ModelService.to_asgi()) as client:
            yield client


@pytest.fixture(scope="module")
def client(store: Path) -> Iterator[TestClient]:
    with serve(store) as c:
        yield c


def encode(img: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def npy(array: np.ndarray, **options: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims width x height (CRC fixed up), as a decompression bomb's does."""
    data = bytearray(encode(Image.new("L", (1, 1))))
    data[16:24] = struct.pack(">II", width, height)             # IHDR data starts after signature, length, type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type and data
    return bytes(data)


def image_form(image: bytes, model: str = "fashion", **fields: str) -> dict[str, Any]:
    return {"files": {"image": ("drawing.png", image, "image/png")}, "data": {"model": model, **fields}}


def batch_form(array_bytes: bytes, model: str = "fashion", **fields: str) -> dict[str, Any]:
    return {"files": {"images": ("batch.npy", array_bytes, "application/octet-stream")},
            "data": {"model": model, **fields}}


def drawing(size: tuple[int, int] = (300, 200), mode: str = "RGB") -> Image.Image:
    """Dark ink on a light background, off-centre: what the demo canvas or a phone photo gives."""
    img = Image.new("RGB", size, (250, 250, 245))
    img.paste((20, 20, 30), (40, 30, 120, 150))
    return img.convert(mode)


BLACK_PNG = encode(Image.new("L", (28, 28)))
PHOTO_PNG = encode(drawing())


# -- every endpoint


def test_models_reports_every_published_model_with_its_manifest_facts(client: TestClient, store: Path,
                                                                     provider: str) -> None:
    answer = client.get("/models").json()
    assert answer["ready"] is True
    assert sorted(answer["models"]) == published_names(store) == ["fashion", "fashion_reconstruction", "heart"]
    for name, facts in answer["models"].items():
        manifest = read_manifest(latest(store, name))
        assert facts["ready"] and facts["error"] is None
        assert facts["version"] == manifest["version"] == "v1"
        assert facts["sha256"] == manifest["sha256"]
        assert facts["provider"] == provider
        for key in ("task", "labels", "input", "output", "metrics"):
            assert facts[key] == manifest[key], key


def test_start_up_objects_are_kept_out_of_the_cyclic_gc(client: TestClient) -> None:
    assert gc.get_freeze_count() > 0  # see ModelService.__init__: full collections were the p99 tail


def test_health_endpoints(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/docs", follow_redirects=False).headers["location"] == "/"
    spec = client.get("/docs.json").json()
    for path in [*(api.route for api in ModelService.apis.values()), "/models"]:
        assert path in spec["paths"], path


def test_classify_answers_in_the_documented_shape(client: TestClient, store: Path, provider: str) -> None:
    labels = read_manifest(latest(store, "fashion"))["labels"]
    response = client.post("/classify", **image_form(PHOTO_PNG, top_k="5"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model", "version", "label", "index", "top", "provider"}
    assert (answer["model"], answer["version"], answer["provider"]) == ("fashion", "v1", provider)
    probabilities = [t["probability"] for t in answer["top"]]
    assert [t["label"] for t in answer["top"]][0] == answer["label"] == labels[answer["index"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-5)
    assert len(client.post("/classify", **image_form(PHOTO_PNG)).json()["top"]) == 3  # the default top_k
    assert len(client.post("/classify", **image_form(PHOTO_PNG, top_k="50")).json()["top"]) == len(labels)


def _rgba() -> Image.Image:
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # transparent, as the demo canvas
    img.paste((0, 0, 0, 255), (20, 10, 44, 54))
    return img


def _animated_gif() -> bytes:
    frames = [drawing((60, 60), "P"), Image.new("P", (60, 60), 7)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:])


@pytest.mark.parametrize("image", [
    pytest.param(lambda: encode(drawing(mode="L")), id="png-grey"),
    pytest.param(lambda: encode(drawing(), "JPEG", quality=80), id="jpeg-rgb"),
    pytest.param(_animated_gif, id="gif-animated"),
    pytest.param(lambda: encode(drawing(), "BMP"), id="bmp"),
    pytest.param(lambda: encode(drawing(), "WEBP"), id="webp"),
    pytest.param(lambda: encode(_rgba()), id="png-rgba"),
    pytest.param(lambda: encode(drawing(mode="P")), id="png-palette"),
    pytest.param(lambda: encode(Image.fromarray(np.full((40, 30), 60000, np.uint16))), id="png-16-bit"),
    pytest.param(lambda: encode(drawing((2000, 1500))), id="large-photo"),
    pytest.param(lambda: encode(Image.new("L", (1, 1), 255)), id="one-pixel"),
    pytest.param(lambda: encode(drawing(), exif=b"garbage!garbage!"), id="png-broken-exif"),
    pytest.param(lambda: encode(drawing(), "WEBP", exif=b"garbage!garbage!"), id="webp-broken-exif"),
])
def test_classify_takes_any_common_image(client: TestClient, image: Callable[[], bytes]) -> None:
    response = client.post("/classify", **image_form(image()))
    assert response.status_code == 200, response.text
    assert response.json()["label"]


def test_images_in_training_form_pass_through_unchanged(client: TestClient, store: Path,
                                                        test_split: tuple[np.ndarray, np.ndarray]) -> None:
    """An official test image sent as PNG is classified exactly as the same pixels offline."""
    version_dir = latest(store, "fashion")
    manifest = read_manifest(version_dir)
    spec = ImageSpec.from_dict(manifest["preprocessing"]["image"])
    images, _ = test_split
    pixels = images[:12].astype(np.float32) / 255
    session = ort.InferenceSession(str(version_dir / MODEL_FILE), providers=["CPUExecutionProvider"])
    offline = session.run(None, {"pixels": pixels})[0]
    for i, image in enumerate(images[:12]):
        png = encode(Image.fromarray(image[0], mode="L"))
        assert np.array_equal(prepare_image(decode_image(png), spec), pixels[i])
        answer = client.post("/classify", **image_form(png, top_k="10")).json()
        by_label = {t["label"]: t["probability"] for t in answer["top"]}
        assert answer["index"] == int(offline[i].argmax())
        np.testing.assert_allclose([by_label[label] for label in manifest["labels"]], offline[i], atol=1e-5)


def test_classify_batch_answers_one_result_per_image(client: TestClient,
                                                     test_split: tuple[np.ndarray, np.ndarray]) -> None:
    images = test_split[0][:10]
    as_uint8 = client.post("/classify_batch", **batch_form(npy(images))).json()
    as_float = client.post("/classify_batch", **batch_form(npy(images.astype(np.float32) / 255))).json()
    assert as_uint8["count"] == len(as_uint8["results"]) == 10
    assert (as_uint8["model"], as_uint8["version"]) == ("fashion", "v1")
    assert as_uint8["results"] == as_float["results"]
    singles = [client.post("/classify", **image_form(encode(Image.fromarray(im[0])))).json() for im in images[:3]]
    assert [s["label"] for s in singles] == [r["label"] for r in as_uint8["results"][:3]]


def test_concurrent_classify_requests_share_onnx_runtime_calls(client: TestClient,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Adaptive batching: 16 requests at once reach ONNX Runtime in fewer, larger calls."""
    sizes: list[int] = []
    original = runtime._probabilities

    def recording(served: ServedModel, pixels: np.ndarray) -> np.ndarray:
        sizes.append(len(pixels))
        return original(served, pixels)

    monkeypatch.setattr(runtime, "_probabilities", recording)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await asyncio.gather(*(http.post("/classify", **image_form(PHOTO_PNG)) for _ in range(16)))

    responses = client.portal.call(burst)
    assert [r.status_code for r in responses] == [200] * 16
    assert sum(sizes) == 16 and max(sizes) > 1, sizes


def test_uploads_are_answered_from_the_guards_parse_as_the_declared_apis_answer(
        client: TestClient, store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every upload endpoint skips BentoML's second parse of the body (serving.service's docstring) and
    answers as its @bentoml.api declaration does when called in Python."""
    parsed: list[str] = []
    serde = bentoml_compat.form_parser()
    parse = serde.parse_request

    async def recording(self: Any, request: Any, cls: type) -> Any:
        parsed.append(request.url.path)
        return await parse(self, request, cls)

    monkeypatch.setattr(serde, "parse_request", recording)
    over_http = client.post("/classify", **image_form(PHOTO_PNG, top_k="4"))
    assert client.post("/reconstruct", files={"image": ("x.png", PHOTO_PNG)}).status_code == 200
    assert client.post("/classify_batch", **batch_form(npy(np.zeros((2, 1, 28, 28), np.uint8)))).status_code == 200
    assert client.post("/explain", **image_form(PHOTO_PNG)).status_code == 200
    assert over_http.status_code == 200 and parsed == []

    monkeypatch.setenv(STORE_ENV, str(store))
    image = tmp_path / "photo.png"
    image.write_bytes(PHOTO_PNG)
    declared = asyncio.run(ModelService().classify(image=image, model="fashion", top_k=4))
    assert json.loads(declared.body) == over_http.json()


def test_a_bug_behind_classify_is_a_logged_500_in_json(client: TestClient, monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    async def broken(self: Any, image: bytes, model: str, top_k: int) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ModelService.inner, "classify_upload", broken)
    response = client.post("/classify", **image_form(PHOTO_PNG))
    assert response.status_code == 500 and "internal server error" in response.json()["error"]
    assert "RuntimeError: a bug" in caplog.text


def test_reconstruct_answers_a_png(client: TestClient, provider: str) -> None:
    response = client.post("/reconstruct", files={"image": ("x.png", PHOTO_PNG, "image/png")})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-version"] == "v1"
    assert response.headers["x-provider"] == provider
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (28, 28))


def test_heart_answers_probability_and_label(client: TestClient) -> None:
    response = client.post("/heart", json=HEART_ROW)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"model", "probability", "label", "version", "provider"} and answer["model"] == "heart"
    assert 0 < answer["probability"] < 1 and answer["version"] == "v1"
    assert answer["label"] == ("HeartDisease" if answer["probability"] >= 0.5 else "Normal")
    assert client.post("/heart", json={**HEART_ROW, "Oldpeak": -2.6, "Cholesterol": 0}).status_code == 200


def test_onnx_runtime_agrees_with_pytorch_on_every_served_model(
        client: TestClient, served_root: Path, test_split: tuple[np.ndarray, np.ndarray]) -> None:
    images = test_split[0][:16]
    pixels = torch.from_numpy(images.astype(np.float32) / 255)

    def trained(experiment: str) -> torch.nn.Module:
        return model_from_checkpoint(load_checkpoint(served_root / "runs" / experiment / "checkpoint.pt"))[0]

    with torch.inference_mode():
        expected = torch.softmax(trained("fashion_cnn")(pixels), dim=1).numpy()
        reconstruction = trained("fashion_autoencoder")(pixels[:1]).numpy()[0, 0]
        heart = heart_net()(torch.from_numpy(encode_row(HeartRow(**HEART_ROW), HEART_TABULAR))).item()

    labels = client.get("/models").json()["models"]["fashion"]["labels"]
    results = client.post("/classify_batch", **batch_form(npy(images), top_k="10")).json()["results"]
    served = np.array([[{t["label"]: t["probability"] for t in r["top"]}[label] for label in labels]
                       for r in results])
    assert np.abs(served - expected).max() < 1e-4

    png = client.post("/reconstruct", files={"image": ("x.png", encode(Image.fromarray(images[0, 0])))}).content
    served_pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.float32) / 255
    assert np.abs(served_pixels - reconstruction).max() <= 0.5 / 255 + 1e-4  # PNG rounds to 8 bits

    assert client.post("/heart", json=HEART_ROW).json()["probability"] == pytest.approx(heart, abs=1e-6)


# -- failures of one model, or of none


def test_a_corrupted_model_answers_503_while_the_others_serve(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    model_file = latest(copy, "fashion") / MODEL_FILE
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with serve(copy) as client:
        facts = client.get("/models").json()
        assert facts["ready"] is False
        assert facts["models"]["fashion"]["ready"] is False and "sha256" in facts["models"]["fashion"]["error"]
        response = client.post("/classify", **image_form(PHOTO_PNG))
        assert response.status_code == 503 and "sha256" in response.json()["error"]
        where = model_file.relative_to(copy).as_posix()  # which file, without the server's paths
        assert where in response.json()["error"] and str(tmp_path) not in response.json()["error"]
        assert client.get("/readyz").status_code == 503
        assert client.get("/livez").status_code == 200
        assert client.post("/reconstruct", files={"image": ("x.png", PHOTO_PNG)}).status_code == 200
        assert client.post("/heart", json=HEART_ROW).status_code == 200


def test_a_missing_model_file_is_reported_without_the_servers_paths(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    model_file = latest(copy, "fashion") / MODEL_FILE
    model_file.unlink()
    with serve(copy) as client:
        error = client.get("/models").json()["models"]["fashion"]["error"]
        answer = client.post("/classify", **image_form(PHOTO_PNG)).json()["error"]
    where = model_file.relative_to(copy).as_posix()
    assert where in error and where in answer
    assert str(tmp_path) not in error and str(tmp_path) not in answer


def test_a_manifest_that_cannot_feed_its_model_is_not_ready(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    manifest_file = latest(copy, "heart") / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["preprocessing"]["tabular"]["columns"].append({"name": "Smoker", "kind": "categorical",
                                                            "categories": ["N", "Y"]})
    manifest_file.write_text(json.dumps(manifest))
    with serve(copy) as client:
        assert "features but the model takes" in client.get("/models").json()["models"]["heart"]["error"]
        assert client.post("/heart", json=HEART_ROW).status_code == 503
        assert client.post("/classify", **image_form(PHOTO_PNG)).status_code == 200


def publish_table_model(store: Path, work: Path) -> None:
    """A second table model, "lungs": Age (numeric) and Smoker (N/Y) -> a probability, as its manifest says."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w"], ["z"]), helper.make_node("Add", ["z", "b"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["probability"])], "lungs",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [1.0, -2.0, 2.0]),
         helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])])
    work.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), work / "lungs.onnx")
    manifest = {"task": "classify", "labels": ["Healthy", "AtRisk"],
                "input": {"name": "features", "shape": [None, 3], "dtype": "float32"},
                "output": {"name": "probability", "shape": [None, 1], "dtype": "float32"},
                "preprocessing": {"tabular": {"columns": [
                    {"name": "Age", "kind": "numeric", "mean": 50.0, "std": 10.0},
                    {"name": "Smoker", "kind": "categorical", "categories": ["N", "Y"]}]}},
                "metrics": {"test_accuracy": 0.5, "test_size": 0}, "report_figure": "none: a test model"}
    publish_model(store, "lungs", work / "lungs.onnx", manifest, "# lungs {version}\n")


def test_any_table_model_is_served_from_its_manifest_alone(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    publish_table_model(copy, tmp_path / "lungs")
    with serve(copy) as client:
        smoker = client.post("/tabular", json={"model": "lungs", "row": {"Age": 60, "Smoker": "Y"}}).json()
        assert smoker["label"] == "AtRisk" and smoker["probability"] == pytest.approx(1 / (1 + math.exp(-3.0)))
        assert client.post("/tabular", json={"model": "lungs", "row": {"Age": 40, "Smoker": "N"}}).json()[
            "label"] == "Healthy"
        heart = client.post("/tabular", json={"model": "heart", "row": HEART_ROW}).json()
        assert heart == {**client.post("/heart", json=HEART_ROW).json(), "model": "heart"}
        wrong = client.post("/heart?model=lungs", json=HEART_ROW)
        assert wrong.status_code == 503 and "POST /tabular" in wrong.json()["error"]
        assert client.post("/tabular", json={"model": "fashion", "row": {}}).status_code == 400  # not a table
        for row, word in [({"Age": 60}, "Smoker: Field required"), ({"Age": True, "Smoker": "Y"}, "Age"),
                          ({"Age": 60, "Smoker": "maybe"}, "one of N, Y"), ({"Age": 60, "Smoker": "Y", "x": 1}, "x"),
                          ({"Age": "60", "Smoker": "Y"}, "finite number"), ([60, "Y"], "row")]:
            answer = client.post("/tabular", json={"model": "lungs", "row": row})
            assert answer.status_code == 422 and word in answer.json()["error"], (row, answer.text)


def test_a_manifest_with_too_few_labels_is_not_ready(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    manifest_file = latest(copy, "fashion") / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["labels"] = manifest["labels"][:-1]  # an answer of the last class would have no label: a 500
    manifest_file.write_text(json.dumps(manifest))
    with serve(copy) as client:
        assert "4 labels for a graph of 5 outputs" in client.get("/models").json()["models"]["fashion"]["error"]
        assert client.post("/classify", **image_form(PHOTO_PNG)).status_code == 503
        assert client.post("/heart", json=HEART_ROW).status_code == 200


def test_heart_without_a_heart_model_answers_503(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=lambda folder, names: ["heart"] if Path(folder) == store else [])
    with serve(copy) as client:
        response = client.post("/heart", json=HEART_ROW)
        assert response.status_code == 503
        assert "no heart model" in response.json()["error"]
        assert client.get("/readyz").status_code == 200  # nothing published failed
        assert client.post("/heart", json={"Age": "old"}).status_code == 422  # still validated first


def test_an_empty_store_serves_nothing_and_is_not_ready(tmp_path: Path) -> None:
    with serve(tmp_path / "no-store") as client:
        assert client.get("/models").json() == {"ready": False, "models": {}}
        assert client.get("/readyz").status_code == 503
        response = client.post("/classify", **image_form(PHOTO_PNG))
        assert response.status_code == 404 and "store is empty" in response.json()["error"]


def test_with_cors_on_every_answer_carries_its_headers(store: Path) -> None:
    cors = {"enabled": True, "access_control_allow_origins": ["https://example.org"]}
    # BentoML reads the CORS options once per process, and this process's first app had none.
    with bentoml_compat.cors_origins_patched(cors["access_control_allow_origins"]), \
            serve(store, http={"cors": cors}) as client:
        origin = {"origin": "https://example.org"}
        classified = client.post("/classify", **image_form(PHOTO_PNG), headers=origin)
        reconstructed = client.post("/reconstruct", files={"image": ("x.png", PHOTO_PNG)}, headers=origin)
    for response in (classified, reconstructed):
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://example.org"


# -- bad input: always a 4xx with {"error": "..."}, never a 500

HEART = "/heart"
ROW_TEXT = json.dumps(HEART_ROW)


def heart_json(**changes: Any) -> dict[str, Any]:
    return {"json": {**HEART_ROW, **changes}}


def heart_text(text: str) -> dict[str, Any]:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


def _streamed_oversize() -> dict[str, Any]:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 2):
            yield b"\0" * (1 << 20)
    return {"content": chunks(), "headers": {"content-type": "multipart/form-data; boundary=x"}}


def _nan_tiff() -> bytes:
    """A 28x28 float ("F" mode) TIFF with one NaN pixel: PIL decodes it, and NaN would reach the model."""
    pixels = np.zeros((28, 28), np.float32)
    pixels[3, 3] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="F").save(buffer, format="TIFF")
    return buffer.getvalue()


def _form_in(charset: str, name: bytes, value: bytes) -> dict[str, Any]:
    """A multipart body whose Content-Type names `charset`, with one text part named `name` (raw bytes)."""
    body = (b"--b\r\nContent-Disposition: form-data; name=\"" + name + b"\"\r\n\r\n" + value + b"\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nfashion_reconstruction\r\n--b--\r\n")
    return {"content": body, "headers": {"content-type": f"multipart/form-data; charset={charset}; boundary=b"}}


def _npy_header(header: bytes) -> bytes:
    """An .npy file of format 1.0 whose header is `header`, padded as numpy pads it, and 4 bytes of data."""
    padding = 64 - (10 + len(header) + 1) % 64
    header += b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(4)


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    """An .npy header for `shape` of uint8 followed by 784 bytes: a few KB pretending to be hundreds of GB."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(784)


BAD_INPUTS: list[tuple[str, str, str, Callable[[], dict[str, Any]], int, str]] = [
    # (case, method, path, request, status, a word the error must contain)
    ("undecodable image", "POST", "/classify", lambda: image_form(b"this is not an image"), 400, "decode"),
    ("float TIFF with a NaN pixel", "POST", "/classify", lambda: image_form(_nan_tiff()), 400, "PNG, JPEG"),
    ("float TIFF with a NaN pixel to /reconstruct", "POST", "/reconstruct",
     lambda: {"files": {"image": ("x.tif", _nan_tiff())}}, 400, "PNG, JPEG"),
    ("truncated png", "POST", "/classify", lambda: image_form(PHOTO_PNG[: len(PHOTO_PNG) // 2]), 400, "decode"),
    ("empty image file", "POST", "/classify", lambda: image_form(b""), 400, "empty"),
    ("zero-size image", "POST", "/classify", lambda: image_form(png_claiming(0, 0)), 400, "image"),
    ("decompression bomb", "POST", "/classify", lambda: image_form(png_claiming(100_000, 100_000)), 400, "limit"),
    ("JPEG with thousands of scans", "POST", "/classify", lambda: image_form(hostile.scan_bomb_jpeg()), 400, "scans"),
    ("JPEG with thousands of scans to /reconstruct", "POST", "/reconstruct",
     lambda: {"files": {"image": ("x.jpg", hostile.scan_bomb_jpeg())}}, 400, "scans"),
    ("unknown model", "POST", "/classify", lambda: image_form(BLACK_PNG, model="resnet"), 404, "resnet"),
    ("path as model", "POST", "/classify", lambda: image_form(BLACK_PNG, model="../models_store/fashion"), 404,
     "unknown model"),
    ("url as model", "POST", "/classify", lambda: image_form(BLACK_PNG, model="http://example.com/m.onnx"), 404,
     "unknown model"),
    ("autoencoder on /classify", "POST", "/classify", lambda: image_form(BLACK_PNG, model="fashion_reconstruction"),
     400, "/reconstruct"),
    ("heart model on /classify", "POST", "/classify", lambda: image_form(BLACK_PNG, model="heart"), 400, "/heart"),
    ("missing model field", "POST", "/classify", lambda: {"files": {"image": ("x.png", BLACK_PNG)}}, 422, "model"),
    ("missing image field", "POST", "/classify", lambda: {"files": {"model": (None, "fashion")}}, 422, "image"),
    ("image given as a url", "POST", "/classify",
     lambda: {"files": {"image": (None, "http://example.com/x.png"), "model": (None, "fashion")}}, 400, "upload"),
    ("image given as a server path", "POST", "/classify",
     lambda: {"files": {"image": (None, "/etc/passwd"), "model": (None, "fashion")}}, 400, "upload"),
    ("model given as a file", "POST", "/classify",
     lambda: {"files": {"image": ("x.png", BLACK_PNG), "model": ("m.txt", b"\xff\xfe")}}, 400, "model"),
    ("top_k given as a file", "POST", "/classify",
     lambda: {"files": {"image": ("x.png", BLACK_PNG), "model": (None, "fashion"), "top_k": ("k", b"\x80")}},
     400, "top_k"),
    ("top_k zero", "POST", "/classify", lambda: image_form(BLACK_PNG, top_k="0"), 422, "top_k"),
    ("top_k not a number", "POST", "/classify", lambda: image_form(BLACK_PNG, top_k="many"), 422, "top_k"),
    ("no image and no model", "POST", "/classify", lambda: {"files": {"top_k": (None, "3")}}, 422,
     "image: Field required; model: Field required"),
    ("text nested too deep as JSON", "POST", "/classify", lambda: image_form(BLACK_PNG, model="[" * 1000), 400,
     "nested"),
    ("text nested too deep to /reconstruct", "POST", "/reconstruct",
     lambda: {"files": {"image": ("x.png", BLACK_PNG)}, "data": {"model": "[" * 1000}}, 400, "nested"),
    ("text nested too deep to /classify_batch", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((1, 1, 28, 28), np.uint8)), top_k="{" * 1000), 400, "nested"),
    ("form-urlencoded", "POST", "/classify", lambda: {"data": {"image": "x", "model": "fashion"}}, 415, "multipart"),
    ("json to an upload endpoint", "POST", "/classify", lambda: {"json": {"image": "x", "model": "fashion"}}, 415,
     "multipart"),
    ("multipart without boundary", "POST", "/classify",
     lambda: {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "boundary"),
    ("malformed multipart", "POST", "/classify",
     lambda: {"content": b"--b\r\nContent-Disposition: form-data\r\n\r\n", "headers":
              {"content-type": "multipart/form-data; boundary=b"}}, 400, "multipart"),
    ("multipart boundary over 256 bytes", "POST", "/classify",
     lambda: {"content": b"--" + b"b" * 300 + b"\r\n", "headers":
              {"content-type": "multipart/form-data; boundary=" + "b" * 300}}, 400, "boundary"),
    ("form part without a name", "POST", "/classify",
     lambda: {"content": b"--b\r\nContent-Disposition: form-data; filename=x\r\n\r\nx\r\n--b--\r\n",
              "headers": {"content-type": "multipart/form-data; boundary=b"}}, 400, "name"),
    ("huge text field", "POST", "/classify", lambda: image_form(BLACK_PNG, model="x" * 2_000_000), 400, "limit"),
    ("too many form fields", "POST", "/classify",
     lambda: {"files": {"image": ("x.png", BLACK_PNG)}, "data": {f"f{i}": "1" for i in range(20)}}, 400, "fields"),
    ("pickle to /classify", "POST", "/classify",
     lambda: {"content": b"\x80\x04K\x01.", "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415,
     "pickle"),
    ("pickle to /heart", "POST", HEART,
     lambda: {"content": b"\x80\x04K\x01.", "headers": {"content-type": "application/vnd.bentoml+pickle"}}, 415,
     "pickle"),
    ("body over the size limit", "POST", "/classify", lambda: image_form(b"\0" * (MAX_BODY_BYTES + 1)), 413, "limit"),
    ("streamed body over the size limit", "POST", "/classify", _streamed_oversize, 413, "limit"),
    ("form in UTF-7, naming a text field image", "POST", "/reconstruct",
     lambda: _form_in("utf-7", b"+AGkAbQBhAGcAZQ-", b"/etc/hostname"), 400, "charset"),
    ("form in UTF-16 with NUL bytes in a name", "POST", "/classify_batch",
     lambda: _form_in("utf-16-le", "images".encode("utf-16-le"), b"/etc/hostname"), 400, "charset"),
    ("form in an unknown charset", "POST", "/classify",
     lambda: _form_in("x-no-such-charset", b"image", b"/etc/hostname"), 400, "charset"),
    ("a field name that is not UTF-8", "POST", "/classify", lambda: _form_in("utf-8", b"im\xffage", b"x"), 400,
     "name"),
    ("top_k true", "POST", "/classify", lambda: image_form(BLACK_PNG, top_k="true"), 422, "top_k"),
    ("top_k 3.0", "POST", "/classify", lambda: image_form(BLACK_PNG, top_k="3.0"), 422, "top_k"),
    ("top_k 1e3", "POST", "/classify", lambda: image_form(BLACK_PNG, top_k="1e3"), 422, "top_k"),
    ("top_k true to /classify_batch", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((1, 1, 28, 28), np.uint8)), top_k="true"), 422, "top_k"),
    # /classify_batch
    ("npy of the wrong rank", "POST", "/classify_batch", lambda: batch_form(npy(np.zeros((2, 28, 28), np.uint8))),
     400, "shape"),
    ("npy of the wrong channels", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((2, 3, 28, 28), np.uint8))), 400, "shape"),
    ("npy of int64", "POST", "/classify_batch", lambda: batch_form(npy(np.zeros((2, 1, 28, 28), np.int64))), 400,
     "dtype"),
    ("npy of float64", "POST", "/classify_batch", lambda: batch_form(npy(np.zeros((2, 1, 28, 28)))), 400, "dtype"),
    ("npy of pickled objects", "POST", "/classify_batch",
     lambda: batch_form(npy(np.array([{"x": 1}], dtype=object), allow_pickle=True)), 400, "dtype"),
    ("truncated npy", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((2, 1, 28, 28), np.uint8))[:-100]), 400, "truncated"),
    ("npy header with negative dimensions", "POST", "/classify_batch",
     lambda: batch_form(_npy_claiming((-1, -1, 28, 28))), 400, "negative"),
    ("npy header claiming 785 GB", "POST", "/classify_batch",
     lambda: batch_form(_npy_claiming((10 ** 9, 1, 28, 28))), 400, "truncated"),
    ("npy header of no elements, one dimension past numpy's index", "POST", "/classify_batch",
     lambda: batch_form(_npy_claiming((0, 10 ** 30, 28, 28))[:-784]), 400, "shape"),
    ("npy header of 70 dimensions", "POST", "/classify_batch",
     lambda: batch_form(_npy_claiming((1,) * 70)[:-783]), 400, "shape"),
    ("npy header whose shape holds booleans", "POST", "/classify_batch",
     lambda: batch_form(_npy_claiming((True, 1, 28, 28))[:-783]), 400, "whole numbers"),
    ("npy header that is not a Python literal", "POST", "/classify_batch",
     lambda: batch_form(_npy_header(b"-" * 50)), 400, ".npy"),
    ("npy header of unclosed brackets", "POST", "/classify_batch",
     lambda: batch_form(_npy_header(b"[" * 5000)), 400, ".npy"),
    ("npy with NaN", "POST", "/classify_batch",
     lambda: batch_form(npy(np.full((1, 1, 28, 28), np.nan, np.float32))), 400, "NaN"),
    ("npy out of range", "POST", "/classify_batch",
     lambda: batch_form(npy(np.full((1, 1, 28, 28), 255.0, np.float32))), 400, "[0, 1]"),
    ("more images than the batch limit", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((MAX_BATCH_IMAGES + 1, 1, 28, 28), np.uint8))), 400, str(MAX_BATCH_IMAGES)),
    ("zero images", "POST", "/classify_batch", lambda: batch_form(npy(np.zeros((0, 1, 28, 28), np.uint8))), 400,
     "between"),
    ("not an npy file", "POST", "/classify_batch", lambda: batch_form(PHOTO_PNG), 400, ".npy"),
    ("empty npy upload", "POST", "/classify_batch", lambda: batch_form(b""), 400, "empty"),
    ("batch for an unknown model", "POST", "/classify_batch",
     lambda: batch_form(npy(np.zeros((1, 1, 28, 28), np.uint8)), model="digits"), 404, "digits"),
    # /reconstruct
    ("classifier on /reconstruct", "POST", "/reconstruct", lambda: image_form(BLACK_PNG, model="fashion"), 400,
     "/classify"),
    ("undecodable image on /reconstruct", "POST", "/reconstruct",
     lambda: {"files": {"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken")}}, 400, "decode"),
    # /heart
    ("heart field missing", "POST", HEART, lambda: {"json": {k: v for k, v in HEART_ROW.items() if k != "Age"}},
     422, "Age"),
    ("heart extra field", "POST", HEART, lambda: heart_json(Smoker="Y"), 422, "Smoker"),
    ("heart NaN", "POST", HEART, lambda: heart_text(ROW_TEXT.replace('"Oldpeak": 1.2', '"Oldpeak": NaN')), 422,
     "Oldpeak"),
    ("heart Infinity", "POST", HEART,
     lambda: heart_text(ROW_TEXT.replace('"Cholesterol": 239', '"Cholesterol": Infinity')), 422, "Cholesterol"),
    ("heart negative age", "POST", HEART, lambda: heart_json(Age=-5), 422, "Age"),
    ("heart impossible heart rate", "POST", HEART, lambda: heart_json(MaxHR=900), 422, "MaxHR"),
    ("heart number as text", "POST", HEART, lambda: heart_json(Age="54"), 422, "Age"),
    ("heart unknown category", "POST", HEART, lambda: heart_json(Sex="X"), 422, "Sex"),
    ("heart lower-case category", "POST", HEART, lambda: heart_json(ChestPainType="asy"), 422, "ChestPainType"),
    ("heart boolean for 0/1", "POST", HEART, lambda: heart_json(FastingBS=True), 422, "FastingBS"),
    ("heart 2 for 0/1", "POST", HEART, lambda: heart_json(FastingBS=2), 422, "FastingBS"),
    ("heart null", "POST", HEART, lambda: heart_json(RestingBP=None), 422, "RestingBP"),
    ("heart body not json", "POST", HEART, lambda: heart_text('{"Age": 54,'), 400, "JSON"),
    ("heart as text/plain (a cross-site form may send it)", "POST", HEART,
     lambda: {"content": ROW_TEXT.encode(), "headers": {"content-type": "text/plain"}}, 415, "application/json"),
    ("heart with no content type", "POST", HEART, lambda: {"content": ROW_TEXT.encode()}, 415, "application/json"),
    ("heart body a list", "POST", HEART, lambda: {"json": [HEART_ROW]}, 422, "object"),
    ("heart empty body", "POST", HEART, lambda: heart_text(""), 422, "Age"),
    # routing
    ("unknown endpoint", "POST", "/predict", lambda: {"json": {}}, 404, "/predict"),
    ("wrong method", "GET", "/classify", lambda: {}, 405, "GET"),
]


@pytest.mark.parametrize("case, method, path, request_kwargs, status, word", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_gets_a_4xx_json_error(client: TestClient, case: str, method: str, path: str,
                                         request_kwargs: Callable[[], dict[str, Any]], status: int, word: str) -> None:
    response = client.request(method, path, **request_kwargs())
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and word.lower() in error.lower(), error


def test_errors_quote_at_most_a_few_words_of_what_the_client_sent(client: TestClient) -> None:
    long_path = client.get("/" + "a" * 60_000)
    assert long_path.status_code == 404 and len(long_path.text) < 300, long_path.text[:300]
    made_up_field = client.post(HEART, json={**HEART_ROW, "x" * 50_000: 1})
    assert made_up_field.status_code == 422 and len(made_up_field.text) < 1000, made_up_field.text[:300]
    long_name = client.post("/classify", files={"image": ("x.png", BLACK_PNG), "b" * 5000: (None, "1")},
                            data={"model": "fashion"})
    assert long_name.status_code == 400 and len(long_name.text) < 300, long_name.text[:300]


@pytest.mark.parametrize("path, form", [
    ("/classify", lambda: image_form(PHOTO_PNG)), ("/reconstruct", lambda: {"files": {"image": ("x.png", PHOTO_PNG)}}),
    ("/classify_batch", lambda: batch_form(npy(np.zeros((1, 1, 28, 28), np.uint8))))])
def test_every_upload_endpoint_reads_the_content_type_alike(client: TestClient, path: str,
                                                            form: Callable[[], dict[str, Any]]) -> None:
    request = client.build_request("POST", path, **form())
    content_type = request.headers["content-type"]
    for shown in (content_type, content_type.replace("multipart/form-data", "MULTIPART/FORM-DATA"),
                  content_type + "; charset=UTF-8"):
        request.headers["content-type"] = shown
        answer = client.send(request)
        assert answer.status_code == 200, (shown, answer.text)


def test_the_service_is_healthy_after_the_bad_input_corpus(client: TestClient) -> None:
    assert len(BAD_INPUTS) >= 30
    for _, method, path, request_kwargs, _, _ in BAD_INPUTS:
        assert client.request(method, path, **request_kwargs()).status_code < 500
    assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
    assert client.post("/classify", **image_form(PHOTO_PNG)).status_code == 200


# -- the runtime alone, as the demo uses it


def test_runtime_serves_in_process_without_bentoml(store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    models = load_models(store)
    assert "CUDAExecutionProvider" not in capfd.readouterr().err  # a failed CUDA attempt stays quiet
    assert models.ready
    answer = models.classify("fashion", drawing(), top_k=2)
    assert answer["model"] == "fashion" and len(answer["top"]) == 2
    picture, served = models.reconstruct("fashion_reconstruction", drawing())
    assert picture.size == (28, 28) and served.version == "v1"
    assert models.predict_heart(HEART_ROW)["label"] in ("Normal", "HeartDisease")
    with pytest.raises(InvalidField, match="Sex"):
        models.predict_heart({**HEART_ROW, "Sex": "male"})
    with pytest.raises(InvalidField, match="Age: Field required"):
        validate_heart_row({k: v for k, v in HEART_ROW.items() if k != "Age"})


def test_a_process_loads_each_model_file_once(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    sessions: list[Any] = []
    create = loading.create_session
    monkeypatch.setattr(loading, "create_session", lambda *args: sessions.append(create(*args)) or sessions[-1])
    demo, service = load_models(copy), load_models(copy)  # as the service's module builds its demo, then starts
    assert len(sessions) == len(demo.models) == len(published_names(copy))
    assert all(service.models[name].session is demo.models[name].session for name in demo.models)
    os.utime(latest(copy, "fashion") / MODEL_FILE, ns=(1, 1))  # the same bytes, but touched: verified again
    touched = load_models(copy)
    assert len(sessions) == len(demo.models) + 1 and touched.models["fashion"].session is sessions[-1]
    del demo, service, touched
    gc.collect()
    load_models(copy)  # nothing served them any more: they were let go
    assert len(sessions) == 2 * len(published_names(copy)) + 1


def test_small_images_are_prepared_on_the_event_loop_and_big_ones_in_lanes_by_their_estimate(
        store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = load_models(store)
    side = int(INLINE_MAX_PIXELS ** 0.5)
    padded = PngInfo()
    padded.add_text("comment", "x" * INLINE_MAX_BYTES)  # few pixels, many bytes: its header is read in a thread
    pictures = [encode(drawing(size)) for size in ((28, 28), (side, side), (side + 1, side), (1000, 800))]
    pictures.append(encode(drawing((28, 28)), pnginfo=padded))
    pictures.append(encode(drawing((4096, 3000), "RGBA")))  # estimated over LIGHT_DECODE_BYTES
    labels = [models.classify("fashion", picture)["label"] for picture in pictures]
    threads: list[str] = []
    prepared = runtime._prepared

    def recording(*args: Any) -> np.ndarray:
        threads.append(threading.current_thread().name.split("_")[0])
        return prepared(*args)

    monkeypatch.setattr(runtime, "_prepared", recording)
    assert [asyncio.run(models.classify_shared("fashion", p))["label"] for p in pictures] == labels
    # Never in the default executor, whose threads run the ONNX Runtime batches; big ones in a lane of their own.
    assert threads == ["MainThread", "MainThread", "prepare", "prepare", "prepare", "prepare-big"]
    threads.clear()
    assert [models.classify("fashion", p)["label"] for p in pictures] == labels  # synchronous callers, as the demo
    assert threads == ["MainThread"] * 5 + ["prepare-big"]
    with pytest.raises(BadInput, match="decode"):
        asyncio.run(models.classify_shared("fashion", b"not an image"))


def test_the_decoding_budget_refuses_what_could_never_fit_and_serialises_big_decodes() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(BadInput, match="MiB"):
        with budget.hold(101, deadline=time.monotonic() + 60):
            pass
    inside, most = [0], [0]
    lock = threading.Lock()

    def decode() -> None:
        with budget.hold(60, deadline=time.monotonic() + 60):  # two never fit at once
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: decode(), range(8)))
    assert most == [1] and budget.free == 100
    with budget.hold(60, deadline=0.0):  # free now: taken at once, whatever the deadline
        with pytest.raises(Overloaded, match="retry"):
            with budget.hold(60, deadline=0.0):
                pass
        with budget.hold(40, deadline=0.0):
            assert budget.free == 0


def test_every_upload_path_shares_the_process_budget(client: TestClient, store: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    big = encode(drawing((2048, 2048), "RGBA"))  # about 74 MiB estimated
    monkeypatch.setattr(runtime, "DECODE_BUDGET", MemoryBudget(64 * 2**20))
    for path in ("/classify", "/reconstruct"):
        refused = client.post(path, **image_form(big, "fashion" if path == "/classify" else "fashion_reconstruction"))
        assert refused.status_code == 400 and "MiB" in refused.json()["error"]
    monkeypatch.setattr(runtime, "DECODE_WAIT_S", 0.0)
    with runtime.DECODE_BUDGET.hold(64 * 2**20, deadline=0.0):  # every byte taken, as by other decodes
        for path, model in (("/classify", "fashion"), ("/reconstruct", "fashion_reconstruction")):
            busy = client.post(path, **image_form(PHOTO_PNG, model))
            assert busy.status_code == 503 and "retry" in busy.json()["error"] and busy.headers["retry-after"] == "1"
        with pytest.raises(Overloaded):
            load_models(store).prepare("fashion", BLACK_PNG)  # the demo's way in, another ServedModels
    assert client.post("/classify", **image_form(PHOTO_PNG)).status_code == 200


def test_batcher_runs_a_lone_call_at_once_and_groups_the_ones_that_queue() -> None:
    calls: list[int] = []

    def double(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        time.sleep(0.02)
        return batch * 2

    async def traffic() -> tuple[np.ndarray, list[np.ndarray]]:
        batcher = Batcher(double, max_batch=4)
        alone = await batcher(np.ones(2))
        return alone, await asyncio.gather(*(batcher(np.full(2, i)) for i in range(10)))

    alone, together = asyncio.run(traffic())
    assert calls == [1, 4, 4, 2]
    np.testing.assert_array_equal(alone, [2, 2])
    np.testing.assert_array_equal(np.stack(together), 2 * np.repeat(np.arange(10), 2).reshape(10, 2))


def test_batcher_hands_a_failure_to_every_caller_of_the_batch() -> None:
    def broken(batch: np.ndarray) -> np.ndarray:
        raise RuntimeError("graph failed")

    async def traffic() -> list[Any]:
        batcher = Batcher(broken, max_batch=8)
        return await asyncio.gather(*(batcher(np.ones(1)) for _ in range(3)), return_exceptions=True)

    assert [str(e) for e in asyncio.run(traffic())] == ["graph failed"] * 3


def test_a_failing_batch_counter_fails_its_callers_instead_of_leaving_them_waiting() -> None:
    def count(size: int) -> None:
        raise RuntimeError("metrics failed")

    async def traffic() -> list[Any]:
        batcher = Batcher(lambda batch: batch, max_batch=8, on_batch=count)
        calls = asyncio.gather(*(batcher(np.ones(1)) for _ in range(3)), return_exceptions=True)
        return await asyncio.wait_for(calls, timeout=10)

    assert [str(e) for e in asyncio.run(traffic())] == ["metrics failed"] * 3


def test_read_npy_checks_the_header_before_allocating() -> None:
    with pytest.raises(BadInput, match="truncated"):
        read_npy(_npy_claiming((10 ** 12, 3, 32, 32)))
    fortran = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(2, 3, 4)[None] / 24)
    np.testing.assert_array_equal(read_npy(npy(fortran)), fortran)
    big_endian = np.linspace(0, 1, 8, dtype=">f4").reshape(2, 1, 2, 2)
    np.testing.assert_array_equal(read_npy(npy(big_endian)), big_endian)


def test_heart_is_answered_while_a_batch_is_running(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    classify_array = ServedModels.classify_array

    def slow(self: ServedModels, *args: Any, **kwargs: Any) -> dict[str, Any]:
        started.set()
        release.wait(30)
        return classify_array(self, *args, **kwargs)

    monkeypatch.setattr(ServedModels, "classify_array", slow)
    with serve(store) as client, concurrent.futures.ThreadPoolExecutor(1) as pool:
        batch = pool.submit(client.post, "/classify_batch", **batch_form(npy(np.zeros((4, 1, 28, 28), np.uint8))))
        assert started.wait(30)
        try:
            assert client.post("/heart", json=HEART_ROW).status_code == 200  # not queued behind the batch
            assert not batch.done()
        finally:
            release.set()
        assert batch.result(30).status_code == 200


def test_the_demo_under_ui_keeps_its_own_error_format(client: TestClient) -> None:
    ours, gradios = client.get("/no-such-page"), client.get("/ui/gradio_api/no-such-page")
    assert ours.status_code == gradios.status_code == 404
    assert "GET /docs" in ours.json()["error"]
    assert gradios.json() == {"detail": "Not Found"}  # what Gradio's page reads


def test_a_binary_graph_with_one_output_answers_the_label_it_means() -> None:
    """loading.check_manifest accepts one output for two labels: the probability of the second one."""
    class OneOutput:  # the session of such a graph
        def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [np.array([[0.9], [0.25]], np.float32)[:len(feeds["pixels"])]]

    manifest = {"task": "classify", "labels": ["cat", "dog"], "input": {"name": "pixels"}, "output": {"name": "p"},
                "preprocessing": {"image": {}}}
    served = ServedModel("pets", "v1", manifest=manifest, session=OneOutput())
    probabilities = ServedModels(Path("store"), {"pets": served}).probabilities("pets", np.zeros((2, 1, 28, 28)))
    (dog, cat) = top_labels(served, probabilities, top_k=2)  # what /classify, /classify_batch and the demo use
    assert dog["label"] == "dog" and dog["index"] == 1 and dog["top"][0]["probability"] == pytest.approx(0.9)
    assert cat["label"] == "cat" and [t["label"] for t in cat["top"]] == ["cat", "dog"]
    assert cat["top"][0]["probability"] == pytest.approx(0.75)
