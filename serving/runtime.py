"""Every published model on ONNX Runtime, and the inference the service and the demo share.

Usable without BentoML: ``models = load_models(Path("models_store"))`` then ``models.classify(...)``,
``models.reconstruct(...)``, ``models.predict_heart(...)``; each returns plain values and raises a
ServingError (with its HTTP status) for anything a client must change. Images are prepared by
training.preprocessing, the module training uses, with each model's ImageSpec from its manifest.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnxruntime as ort
from PIL import Image
from pydantic import ValidationError

from training.preprocessing import (DEFAULT_MAX_PIXELS, ImageError, ImageHeader, ImageSpec, decode, prepare_image,
                                    read_header)
from training.store import StoreError, live, published_names, read_manifest, version_dir, versions

from .batching import Batcher
from .budget import MemoryBudget, give_big_blocks_back
from .errors import BadInput, InvalidField, NotReady, Overloaded, UnknownModel, WrongKind, describe_validation_errors
from .explain import Sensitivity, label_index, occlusion
from .loading import CLASSIFY, CUDA, RECONSTRUCT, TABULAR, ServedModel, files_key, load_model
from .npy import read_npy
from .tabular import HeartRow, encode_row, heart_columns_missing, validate_row

log = logging.getLogger(__name__)

HEART_MODEL = "heart"          # the table model POST /heart answers by default (any table model: /tabular)
MAX_PIXELS = DEFAULT_MAX_PIXELS  # decoded image size limit, checked from the header before decoding
MAX_BATCH_IMAGES = 1024        # images per /classify_batch request (1024 x 3x32x32 float32 = 12 MiB)
MAX_SHARED_BATCH = 64          # concurrent single images that may share one ONNX Runtime call
# Images up to this size, in pixels and in bytes, are prepared on the event loop: for them a hop to a
# worker thread costs more than the work (docs/BENCHMARKS.md#figures-behind-the-services-constants).
# Bigger ones go to a thread, header and all: PIL reads some formats' headers in Python.
INLINE_MAX_PIXELS = 128 * 128
INLINE_MAX_BYTES = 64 * 1024
# Every decode of an upload in a worker holds its estimated peak memory (training.preprocessing's
# estimate) from this one budget; the burst ceiling it gives is measured in docs/RELIABILITY.md#decoding-uploads.
DECODE_BUDGET_BYTES = 256 * 2**20
DECODE_WAIT_S = 5.0  # how long a decode may wait for its share (queued included) before a 503
# Pictures estimated under this are prepared in the light lane (or by the synchronous caller itself), bigger
# ones in the big lane, so a normal picture never queues behind big ones: a photo of a megapixel is light,
# a 2048x2048 PNG big. Each lane has its own threads; the default executor's run the ONNX Runtime
# batches, which a burst of big uploads must not queue behind either.
LIGHT_DECODE_BYTES = 64 * 2**20
PREPARE_THREADS = 2      # the light lane, for /classify's event loop
BIG_PREPARE_THREADS = 2  # the big lane, for every caller
MALLOC_MMAP_BYTES = 2**20  # allocations this big go back to the system when freed (serving.budget)
DEFAULT_TOP_K = 3
MAX_PINNED = 4  # versions other than the live one a process keeps loaded for `name@vN` requests, at most


def load_models(store: Path, on_batch: Callable[[str, int], None] | None = None) -> "ServedModels":
    """Every published model of `store`, its live version each; the names found are the allow-list.

    `on_batch(name, size)` is told the size of every shared ONNX Runtime call (for metrics).
    """
    store = Path(store)
    give_big_blocks_back(MALLOC_MMAP_BYTES)  # a decoded picture's memory is returned once prepared (serving.budget)
    try_cuda = CUDA in ort.get_available_providers()
    models: dict[str, ServedModel] = {}
    for name in published_names(store):
        models[name] = load_model(store, name, try_cuda)  # after a failure on CUDA, straight to CPU (serving.devices)
    return ServedModels(store, models, on_batch, try_cuda=try_cuda)


# -- preparing images: every upload a process decodes goes through here (the API and the demo alike)

DECODE_BUDGET = MemoryBudget(DECODE_BUDGET_BYTES)
_light_lane = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="prepare")  # threads start on first use
_big_lane = ThreadPoolExecutor(BIG_PREPARE_THREADS, thread_name_prefix="prepare-big")


def _header(image: bytes) -> ImageHeader:
    """The upload opened, its decoding cost checked (400 if too slow or too big to ever fit the budget)."""
    try:
        header = read_header(image, MAX_PIXELS)
    except ImageError as err:
        raise BadInput(str(err)) from err
    DECODE_BUDGET.check(header.peak_bytes)
    return header


def _prepared(header: ImageHeader, spec: ImageSpec, deadline: float) -> np.ndarray:
    """`header`'s picture decoded and prepared for `spec`, holding its estimated memory meanwhile."""
    with DECODE_BUDGET.hold(header.peak_bytes, deadline):
        try:
            img = decode(header)
        except ImageError as err:
            raise BadInput(str(err)) from err
        return prepare_image(img, spec)


def _prepare(image: bytes | Image.Image, spec: ImageSpec) -> np.ndarray:
    """(C, H, W) float32 for `spec`, in the calling thread (never the event loop's): a big upload is decoded
    in the big lane while the caller waits."""
    if isinstance(image, Image.Image):  # decoded already, by our own code
        return prepare_image(image, spec)
    deadline = time.monotonic() + DECODE_WAIT_S
    header = _header(image)
    if header.peak_bytes <= LIGHT_DECODE_BYTES:
        return _prepared(header, spec, deadline)
    return _big_lane.submit(_prepared, header, spec, deadline).result()


def _prepare_light(image: bytes, spec: ImageSpec, deadline: float) -> np.ndarray | ImageHeader:
    """In the light lane: the prepared pixels, or the header of a picture for the big lane."""
    header = _header(image)
    return header if header.peak_bytes > LIGHT_DECODE_BYTES else _prepared(header, spec, deadline)


async def _prepare_async(image: bytes | Image.Image, spec: ImageSpec) -> np.ndarray:
    """_prepare() for an event loop: a small picture on the loop itself (see INLINE_MAX_PIXELS), never
    waiting there for the budget; others in the light lane, and big ones in the big lane."""
    loop = asyncio.get_running_loop()
    if isinstance(image, Image.Image):
        if image.width * image.height <= INLINE_MAX_PIXELS:
            return prepare_image(image, spec)
        return await loop.run_in_executor(_light_lane, prepare_image, image, spec)
    deadline = time.monotonic() + DECODE_WAIT_S
    if len(image) <= INLINE_MAX_BYTES:
        header = _header(image)  # quick for a file this small: read_header has checked its framing
        if header.image.width * header.image.height <= INLINE_MAX_PIXELS:
            try:
                return _prepared(header, spec, 0.0)  # the budget only if free now: never wait on the loop
            except Overloaded:
                pass
        result: np.ndarray | ImageHeader = header
    else:
        result = await loop.run_in_executor(_light_lane, _prepare_light, image, spec, deadline)
    if isinstance(result, ImageHeader):
        lane = _light_lane if result.peak_bytes <= LIGHT_DECODE_BYTES else _big_lane
        result = await loop.run_in_executor(lane, _prepared, result, spec, deadline)
    return result


def top_labels(served: ServedModel, probabilities: np.ndarray, top_k: int) -> list[dict[str, Any]]:
    """The answer for each row of (N, K) probabilities: best label, its index, the top_k labels with probabilities."""
    # One argsort for the whole batch, then plain Python numbers: a per-row loop over numpy scalars showed
    # in py-spy's profile of /classify_batch (docs/BENCHMARKS.md#figures-behind-the-services-constants).
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    best = np.take_along_axis(probabilities, order, axis=1).tolist()
    labels = served.labels
    return [{"label": labels[row[0]], "index": row[0],
             "top": [{"label": labels[i], "probability": p} for i, p in zip(row, chances)]}
            for row, chances in zip(order.tolist(), best)]


@dataclass
class ServedModels:
    """The models of one store, by name; the only way a request reaches a model.

    `models` holds each name's live version. refresh() (called by serving.following when the store
    changes) loads a new live version beside the old one and swaps it in only once it has verified and
    answered; a request holds the version it started with until it is answered. "name@vN" asks for a
    version by name: loaded on first use, MAX_PINNED of them kept, least recently used let go.
    """

    store: Path
    models: dict[str, ServedModel]
    on_batch: Callable[[str, int], None] | None = None
    on_swap: Callable[[str, str | None, str], None] | None = None  # (name, version, "ok" or "failed")
    monitor: Any = None  # serving.monitoring.Monitor: told of preparation and inference times, answers, swaps
    try_cuda: bool = False
    failures: dict[str, str] = field(default_factory=dict)  # name -> why its live pointer is not served
    _pinned: collections.OrderedDict = field(default_factory=collections.OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        """True when every published model loaded (and there is at least one)."""
        return bool(self.models) and all(m.ready for m in self.models.values())

    def describe(self) -> dict[str, Any]:
        return {"ready": self.ready, "models": {name: {**m.describe(), **self._lifecycle(name, m)}
                                                for name, m in self.models.items()}}

    def _lifecycle(self, name: str, served: ServedModel) -> dict[str, Any]:
        """Where `name` stands in the store: its versions with their figures, what is loaded, what failed."""
        pinned = sorted(v for (n, v) in self._pinned if n == name)
        listed = []
        for folder in versions(self.store, name):
            manifest = _manifest_or_none(folder)
            metrics = (manifest or {}).get("metrics", {})
            listed.append({"version": folder.name, "test_figure": _figure(metrics),
                           "published": (manifest or {}).get("provenance", {}).get("finished_at"),
                           "loaded": folder.name == served.version or folder.name in pinned})
        return {"live": served.version, "versions": listed, "pinned": pinned, "failed": self.failures.get(name)}

    def get(self, model: str, kind: str) -> ServedModel:
        """The loaded model `model` ("name", or "name@vN" for a version), which must be a `kind` model (KINDS);
        404 for a name or version not in the store, 503 if it failed to load or verify."""
        name, _, version = model.partition("@")
        served = self.models.get(name)
        if served is None:
            known = ", ".join(sorted(self.models)) or "none (the store is empty)"
            raise UnknownModel(f"unknown model {name[:64]!r}; models served: {known}")
        if version and version != served.version:
            served = self._pinned_version(name, version)
        if not served.ready:
            raise NotReady(f"model {name!r} ({served.version}) is not available: {served.error}")
        if served.kind != kind:
            raise WrongKind(f"model {name!r} is a {served.kind} model, not a {kind} one", served.kind)
        return served

    def _pinned_version(self, name: str, version: str) -> ServedModel:
        with self._lock:
            served = self._pinned.pop((name, version), None)
            if served is None:
                try:
                    folder = version_dir(self.store, name, version)
                except StoreError as err:
                    raise UnknownModel(str(err)[:300]) from None
                served = load_model(self.store, name, self.try_cuda, folder)
            self._pinned[(name, version)] = served  # the most recently used last
            while len(self._pinned) > MAX_PINNED:
                self._pinned.popitem(last=False)
            return served

    # -- following the store's live pointers

    def refresh(self) -> list[str]:
        """Serve each name's live version as the store now says: a changed one is loaded, verified and
        warmed up beside the old, and swapped in only then. Names swapped, in order."""
        swapped = []
        for name in sorted(set(published_names(self.store)) | set(self.models)):
            current = self.models.get(name)
            try:
                folder = live(self.store, name)
            except StoreError as err:
                self._failed(name, None, str(err))
                continue
            if folder is None or (current is not None and current.files is not None
                                  and current.files == files_key(name, folder, self.try_cuda)):
                continue  # nothing published (the folder went: keep serving), or unchanged
            candidate = load_model(self.store, name, self.try_cuda, folder)
            try:
                if not candidate.ready:
                    raise ValueError(candidate.error)
                candidate.warm_up()
            except Exception as err:  # the old version keeps serving
                self._failed(name, folder.name, f"{type(err).__name__}: {err}" if candidate.ready else str(err))
                continue
            self.models[name] = candidate  # one assignment: a request sees the old version or the new
            self.failures.pop(name, None)
            if self.monitor is not None:
                self.monitor.live(candidate)
            swapped.append(name)
            log.info("now serving %s %s (was %s)", name, candidate.version, current.version if current else "none")
            if self.on_swap is not None:
                self.on_swap(name, candidate.version, "ok")
        return swapped

    def _failed(self, name: str, version: str | None, why: str) -> None:
        message = f"{version or 'the live version'} was not swapped in: {why}"
        if self.failures.get(name) != message:  # said once, not at every look at the store
            self.failures[name] = message
            log.error("%s: %s; still serving %s", name, message,
                      getattr(self.models.get(name), "version", None) or "nothing")
            if self.on_swap is not None:
                self.on_swap(name, version, "failed")

    # -- images

    def prepare(self, name: str, image: bytes | Image.Image, kind: str = CLASSIFY) -> np.ndarray:
        """(C, H, W) float32 in [0, 1]: `image` in the form model `name`, a `kind` model, was trained on.

        Decoded within the process's decoding budget, like every upload (DECODE_BUDGET_BYTES)."""
        return _prepare(image, self.get(name, kind).image_spec)

    def probabilities(self, name: str, pixels: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities for (N, C, H, W) float32 pixels in [0, 1]: one ONNX Runtime call."""
        return self._infer(self.get(name, CLASSIFY), pixels)

    def classify(self, name: str, image: bytes | Image.Image, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify one image (encoded bytes or a PIL image) with model `name`."""
        return self.classify_seen(name, image, top_k)[1]

    def classify_seen(self, name: str, image: bytes | Image.Image,
                      top_k: int = DEFAULT_TOP_K) -> tuple[np.ndarray, dict[str, Any]]:
        """classify()'s answer and the prepared input it was given, (C, H, W) (what the demo shows)."""
        served = self.get(name, CLASSIFY)
        started = time.perf_counter()
        pixels = _prepare(image, served.image_spec)
        self._prepared(served, started)
        return pixels, self._answer(served, self._infer(served, pixels[None])[0], top_k)

    async def classify_shared(self, name: str, image: bytes | Image.Image, top_k: int = DEFAULT_TOP_K,
                              seen: list[np.ndarray] | None = None) -> dict[str, Any]:
        """classify() for an event loop: the image is prepared in a lane thread unless it is small, and
        the ONNX Runtime call is shared with the concurrent requests for the same version (serving.batching).
        The prepared input is appended to `seen` when one is given (the prediction log may keep it)."""
        served = self.get(name, CLASSIFY)
        started = time.perf_counter()
        pixels = await _prepare_async(image, served.image_spec)
        self._prepared(served, started)
        if seen is not None:
            seen.append(pixels)
        if served.batcher is None:
            observe = None if self.on_batch is None else (lambda size: self.on_batch(served.name, size))
            served.batcher = Batcher(lambda batch: self._infer(served, batch), MAX_SHARED_BATCH, observe)
        return self._answer(served, await served.batcher(pixels), top_k)

    def _prepared(self, served: ServedModel, started: float) -> None:
        if self.monitor is not None:
            self.monitor.prepared(served, time.perf_counter() - started)

    def _infer(self, served: ServedModel, pixels: np.ndarray) -> np.ndarray:
        """(N, K) probabilities from one ONNX Runtime call, timed for the monitor."""
        started = time.perf_counter()
        probabilities = _probabilities(served, pixels)
        if self.monitor is not None:
            self.monitor.inferred(served, time.perf_counter() - started)
        return probabilities

    def _answer(self, served: ServedModel, probabilities: np.ndarray, top_k: int) -> dict[str, Any]:
        """POST /classify's answer for one image's probabilities, naming the version that gave them."""
        (best,) = top_labels(served, probabilities[None], _top_k(top_k))
        if self.monitor is not None:
            self.monitor.answered(served, probabilities[None])
        return {"model": served.name, "version": served.version, **best, "provider": served.provider}

    def classify_array(self, name: str, array: np.ndarray | bytes, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify (N, C, H, W) images already in training form: uint8 0-255 or float32 in [0, 1].

        `array` may be the bytes of an .npy file. No preprocessing is applied: this is the path for
        test sets and throughput, so the pixels must already be what the model was trained on.
        """
        served = self.get(name, CLASSIFY)
        pixels = _batch_pixels(read_npy(array) if isinstance(array, bytes) else np.asarray(array), served)
        k = _top_k(top_k)
        probabilities = self._infer(served, pixels)
        if self.monitor is not None:
            self.monitor.answered(served, probabilities)
        return {"model": served.name, "version": served.version, "provider": served.provider,
                "count": len(pixels), "results": top_labels(served, probabilities, k)}

    def reconstruct(self, name: str, image: bytes | Image.Image) -> tuple[Image.Image, ServedModel]:
        """The autoencoder's output for `image`, as an 8-bit greyscale or RGB image, and the version that made it."""
        served = self.get(name, RECONSTRUCT)
        started = time.perf_counter()
        pixels = _prepare(image, served.image_spec)
        self._prepared(served, started)
        started = time.perf_counter()
        out = np.clip(served.run(pixels[None])[0], 0.0, 1.0)  # (C, H, W)
        if self.monitor is not None:
            self.monitor.inferred(served, time.perf_counter() - started)
        as_uint8 = np.round(out * 255).astype(np.uint8)
        picture = Image.fromarray(as_uint8[0], mode="L") if len(as_uint8) == 1 else \
            Image.fromarray(as_uint8.transpose(1, 2, 0), mode="RGB")
        return picture, served

    def explain(self, name: str, image: bytes | Image.Image | np.ndarray,
                label: str | None = None) -> tuple[np.ndarray, Sensitivity, ServedModel]:
        """Where classifier `name` looks in `image` for `label` (default: its top class): the input as prepared,
        its occlusion map (serving.explain) and the version that made it. One ONNX Runtime batch of covered
        copies, run in the calling thread; `image` may be a prepared (C, H, W) input already (classify_seen's)."""
        served = self.get(name, CLASSIFY)
        target = label_index(served.labels, label)  # an unknown label is refused before any decoding
        pixels = _batch_pixels(image[None], served)[0] if isinstance(image, np.ndarray) else \
            _prepare(image, served.image_spec)
        return pixels, occlusion(pixels, lambda batch: _probabilities(served, batch), served.image_spec.layout,
                                 target), served

    # -- tabular

    def predict_heart(self, row: HeartRow | Mapping[str, Any], model: str = HEART_MODEL) -> dict[str, Any]:
        """Probability of heart disease for one row with the data set's columns (see HeartRow)."""
        if model.partition("@")[0] not in self.models:
            raise NotReady("no heart model is published yet: train and publish one (python -m training.fit "
                           "heart_mlp); the service serves it within seconds")
        served = self.get(model, TABULAR)
        missing = heart_columns_missing(served.tabular)
        if missing:
            raise NotReady(f"model {served.name!r} ({served.version}) takes columns the heart form has not "
                           f"({', '.join(missing)}): send its rows to POST /tabular")
        return self._predict_row(served, row if isinstance(row, HeartRow) else validate_heart_row(row))

    def predict_row(self, model: str, row: Any) -> dict[str, Any]:
        """The answer of table model `model` for one row of its columns, checked against its manifest."""
        served = self.get(model, TABULAR)
        return self._predict_row(served, validate_row(row, served.tabular))

    def _predict_row(self, served: ServedModel, row: HeartRow | Mapping[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        probability = float(served.run(encode_row(row, served.tabular)).reshape(-1)[0])
        label = int(probability >= served.threshold)
        if self.monitor is not None:
            self.monitor.inferred(served, time.perf_counter() - started)
            self.monitor.answered(served, np.array([[1 - probability, probability]]), np.array([label]))
        return {"model": served.name, "probability": probability, "label": served.labels[label],
                "version": served.version, "provider": served.provider}


def _probabilities(served: ServedModel, pixels: np.ndarray) -> np.ndarray:
    out = served.run(np.ascontiguousarray(pixels, dtype=np.float32))
    if out.shape[1] == 1:  # a binary graph answers one probability, of the second label (loading.check_manifest)
        out = np.concatenate([1 - out, out], axis=1)
    return out


def _figure(metrics: Mapping[str, Any]) -> float | None:
    """A version's headline test figure: accuracy for a classifier, MSE for an autoencoder."""
    return next((metrics[k] for k in ("test_accuracy", "test_mse") if isinstance(metrics.get(k), (int, float))), None)


def _manifest_or_none(folder: Path) -> dict[str, Any] | None:
    try:
        return read_manifest(folder)
    except (OSError, ValueError):
        return None


def validate_heart_row(row: Mapping[str, Any]) -> HeartRow:
    """A HeartRow from a plain mapping; InvalidField (422) names every wrong, missing or extra field."""
    try:
        return HeartRow.model_validate(row)
    except ValidationError as err:
        raise InvalidField(describe_validation_errors(err.errors())) from err


def _top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidField(f"top_k: must be a positive integer, got {top_k!r}")
    return top_k


def _batch_pixels(array: np.ndarray, served: ServedModel) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from a client's uint8 or float32 batch, or BadInput saying why not."""
    spec = served.image_spec
    expected = (spec.channels, spec.height, spec.width)
    if array.ndim != 4 or tuple(array.shape[1:]) != expected:
        raise BadInput(f"batch shape {tuple(array.shape)} does not fit model {served.name!r}: "
                       f"expected (N, {', '.join(map(str, expected))})")
    if not 1 <= len(array) <= MAX_BATCH_IMAGES:
        raise BadInput(f"batch of {len(array)} images: send between 1 and {MAX_BATCH_IMAGES} per request")
    if array.dtype == np.uint8:
        return np.divide(array, np.float32(255), dtype=np.float32)  # one pass, no float32 copy divided into another
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise BadInput(f"dtype {array.dtype} refused: send uint8 (0-255) or float32 (0-1) pixels")
    pixels = array.astype(np.float32)  # native byte order, and a copy we may keep
    if not np.isfinite(pixels).all():
        raise BadInput("float32 pixels must be finite: the batch holds NaN or infinity")
    if pixels.min() < 0.0 or pixels.max() > 1.0:
        raise BadInput(f"float32 pixels must lie in [0, 1] (got {pixels.min():g} to {pixels.max():g}); "
                       "send uint8 for 0-255 values")
    return pixels

