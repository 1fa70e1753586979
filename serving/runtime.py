"""Every published model on ONNX Runtime, and the inference the service and the demo share.

Usable without BentoML: ``models = load_models(Path("models_store"))`` then ``models.classify(...)``,
``models.reconstruct(...)``, ``models.predict_heart(...)``; each returns plain values and raises a
ServingError (with its HTTP status) for anything a client must change. Images are prepared by
training.preprocessing, the module training uses, with each model's ImageSpec from its manifest.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import onnxruntime as ort
from PIL import Image
from pydantic import ValidationError

from training.files import sha256_bytes
from training.preprocessing import (DEFAULT_MAX_PIXELS, ImageError, ImageHeader, ImageSpec, decode, prepare_image,
                                    read_header)
from training.store import MANIFEST_FILE, MODEL_FILE, latest, published_names, read_manifest

from .batching import Batcher
from .budget import MemoryBudget, give_big_blocks_back
from .errors import BadInput, InvalidField, NotReady, Overloaded, UnknownModel, describe_validation_errors
from .npy import read_npy
from .tabular import HeartRow, check_tabular_spec, encode_row

log = logging.getLogger(__name__)

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
HEART_MODEL = "heart"          # the one tabular model, served at POST /heart
MAX_PIXELS = DEFAULT_MAX_PIXELS  # decoded image size limit, checked from the header before decoding
MAX_BATCH_IMAGES = 1024        # images per /classify_batch request (1024 x 3x32x32 float32 = 12 MiB)
MAX_SHARED_BATCH = 64          # concurrent single images that may share one ONNX Runtime call
# Images up to this size, in pixels and in bytes, are prepared on the event loop: a 128x128 PNG takes
# 0.35 ms, a hop to a worker thread and back about 0.1 ms more, and inline /classify of a digit answered
# 13% more requests/s at 1 connection and 22% more at 32 (wrk, 2-core Xeon). Bigger ones (a 1000x1000
# photo: 21 ms) go to a thread, header and all: PIL reads some formats' headers in Python.
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
STORE_ENV, DEFAULT_STORE = "MODELS_STORE", "models_store"  # where the service and the demo read models
_ORT_WARNING, _ORT_FATAL = 2, 4  # onnxruntime log severities: 2 is its default, 4 shows only fatal errors


def usable_cpus() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cpus()  # one pool per model; small graphs rarely use them all
    options.inter_op_num_threads = 1              # our graphs are single chains: nothing to run in parallel
    # Idle pool threads sleep instead of spinning, so several models and the web server share the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3                # errors only, from this session
    return options


def create_session(model: bytes, try_cuda: bool) -> ort.InferenceSession:
    """A session on CUDA when it really works, else on CPU; get_providers()[0] says which.

    onnxruntime-gpu lists CUDA as available whenever it was built with it, even on a machine without a
    GPU or without cuDNN; creating the session is the real test. Its failure is logged in red by the
    process-wide logger, so that logger is muted for the attempt: the outcome is logged once by us.
    """
    if not try_cuda:
        return ort.InferenceSession(model, session_options(), providers=[CPU])
    ort.set_default_logger_severity(_ORT_FATAL)
    try:
        return ort.InferenceSession(model, session_options(), providers=[CUDA, CPU])
    finally:
        ort.set_default_logger_severity(_ORT_WARNING)


@dataclass
class ServedModel:
    """One published model: its manifest, and its session once verified and loaded."""

    name: str
    version: str | None
    manifest: dict[str, Any] = field(default_factory=dict)
    session: ort.InferenceSession | None = None
    error: str | None = None  # why it is not ready

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def provider(self) -> str | None:
        return self.session.get_providers()[0] if self.session else None

    @property
    def task(self) -> str | None:
        return self.manifest.get("task")

    @property
    def endpoint(self) -> str:
        """Where this model is served: /heart for the table model, /reconstruct, or /classify."""
        if "tabular" in self.manifest.get("preprocessing", {}):
            return "/heart"
        return "/reconstruct" if self.task == "reconstruct" else "/classify"

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels", []))

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec.from_dict(self.manifest["preprocessing"]["image"])

    @property
    def tabular(self) -> dict[str, Any]:
        return self.manifest["preprocessing"]["tabular"]

    @property
    def threshold(self) -> float:
        """A tabular model's probability from which labels[1] is answered (serving.tabular)."""
        return float(self.tabular.get("threshold", 0.5))

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The graph's one output for float32 `inputs`."""
        name_in, name_out = self.manifest["input"]["name"], self.manifest["output"]["name"]
        return self.session.run([name_out], {name_in: inputs})[0]

    def describe(self) -> dict[str, Any]:
        """The manifest facts a client needs, and whether and where the model runs."""
        m = self.manifest
        return {"name": self.name, "version": self.version, "ready": self.ready, "error": self.error,
                "provider": self.provider, "task": m.get("task"), "labels": m.get("labels"),
                "input": m.get("input"), "output": m.get("output"),
                "preprocessing": m.get("preprocessing"), "metrics": m.get("metrics"),
                "sha256": m.get("sha256"), "report_figure": m.get("report_figure")}


def _check_manifest(manifest: Mapping[str, Any], session: ort.InferenceSession) -> None:
    """Raise ValueError when the manifest does not describe the graph or how to feed it."""
    (graph_in,), outputs = session.get_inputs(), [o.name for o in session.get_outputs()]
    if manifest["input"]["name"] != graph_in.name or manifest["output"]["name"] not in outputs:
        raise ValueError(f"manifest names input {manifest['input']['name']!r} / output "
                         f"{manifest['output']['name']!r}; the graph has {graph_in.name!r} / {outputs}")
    if manifest.get("task") == "classify":  # every class the graph answers needs its label, and no more
        (answer,) = [o for o in session.get_outputs() if o.name == manifest["output"]["name"]]
        classes, labels = answer.shape[-1], len(manifest.get("labels", []))
        if isinstance(classes, int) and labels != (2 if classes == 1 else classes):  # 1: one probability of two
            raise ValueError(f"the manifest lists {labels} labels for a graph of {classes} outputs")
    if "tabular" in manifest.get("preprocessing", {}):
        width = graph_in.shape[1] if isinstance(graph_in.shape[1], int) else None
        check_tabular_spec(manifest["preprocessing"]["tabular"], width)
    else:
        spec = ImageSpec.from_dict(manifest["preprocessing"]["image"])
        if list(manifest["input"]["shape"][1:]) != [spec.channels, spec.height, spec.width]:
            raise ValueError(f"input shape {manifest['input']['shape']} does not match the image spec {spec}")


# Loaded models by the files they were loaded from: the service and the demo it mounts read the same
# store in one process, and share one session per model instead of loading each twice. Weak values: a
# session lives as long as something serves it; a file changed since gets a new entry.
_loaded: weakref.WeakValueDictionary[tuple, ServedModel] = weakref.WeakValueDictionary()
_loading = threading.Lock()


def load_model(store: Path, name: str, try_cuda: bool) -> ServedModel:
    """The latest version of `name`, its file verified against the manifest's sha256 before loading.

    The bytes that were hashed are the bytes given to ONNX Runtime, so a file swapped after the
    check cannot be loaded unverified. Never raises: a failure is kept as the model's error.
    Models already loaded in this process from the same unchanged files are shared, not loaded again.
    """
    version_dir = latest(store, name)
    key = _files_key(name, version_dir, try_cuda)
    with _loading:
        served = _loaded.get(key) if key else None
        if served is None:
            served = _load(store, name, version_dir, try_cuda)
            if key and served.ready:  # a failure is retried by the next load
                _loaded[key] = served
    return served


def _files_key(name: str, version_dir: Path | None, try_cuda: bool) -> tuple | None:
    """What identifies model `name`'s files on disk, or None. The name is in it because one folder reached
    under two names (a link) is two models; the change time because no one can set it back: a file
    rewritten in place, modification time restored, is read and verified again."""
    if version_dir is None:
        return None
    try:
        stats = [os.stat(version_dir / file) for file in (MANIFEST_FILE, MODEL_FILE)]
    except OSError:  # a file missing: nothing to share, and loading says what is wrong
        return None
    return (name, str(version_dir.resolve()), try_cuda,
            *((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in stats))


def _load(store: Path, name: str, version_dir: Path | None, try_cuda: bool) -> ServedModel:
    served = ServedModel(name, version_dir.name if version_dir else None)
    try:
        served.manifest = read_manifest(version_dir)
        model = (version_dir / MODEL_FILE).read_bytes()
        if sha256_bytes(model) != served.manifest.get("sha256"):
            raise ValueError(f"{version_dir / MODEL_FILE} does not match the sha256 in its manifest "
                             "(corrupted or replaced)")
        session = create_session(model, try_cuda)
        _check_manifest(served.manifest, session)
        served.session = session
    except Exception as err:  # one bad model must not stop the others: it is reported instead
        served.error = _without_store_path(f"{type(err).__name__}: {err}", store)
    return served


def _without_store_path(message: str, store: Path) -> str:
    """`message` with the store's location on this server cut out of file paths, as clients read it in
    /models and 503s: "digits/v2/model.onnx" says what is wrong without mapping the server's disk."""
    for prefix in sorted({str(store.resolve()), str(store.absolute()), str(store)}, key=len, reverse=True):
        message = message.replace(prefix + os.sep, "")
    return message


def store_from_env() -> Path:
    """The store to serve: $MODELS_STORE, else ./models_store."""
    return Path(os.environ.get(STORE_ENV, DEFAULT_STORE))


def load_models(store: Path, on_batch: Callable[[str, int], None] | None = None) -> "ServedModels":
    """Every published model of `store`, latest version each; the names found are the allow-list.

    `on_batch(name, size)` is told the size of every shared ONNX Runtime call (for metrics).
    """
    store = Path(store)
    give_big_blocks_back(MALLOC_MMAP_BYTES)  # a decoded picture's memory is returned once prepared (serving.budget)
    try_cuda = CUDA in ort.get_available_providers()
    models: dict[str, ServedModel] = {}
    for name in published_names(store):
        served = models[name] = load_model(store, name, try_cuda)
        if try_cuda and served.ready and served.provider != CUDA:
            log.info("CUDA is listed by onnxruntime but does not work here; serving on CPU")
            try_cuda = False  # found out once; the other models go straight to CPU
    return ServedModels(store, models, on_batch)


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
    # One argsort for the whole batch, then plain Python numbers: a per-row loop over numpy scalars
    # cost 6% of a 256-image /classify_batch request (py-spy, bench.serve).
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    best = np.take_along_axis(probabilities, order, axis=1).tolist()
    labels = served.labels
    return [{"label": labels[row[0]], "index": row[0],
             "top": [{"label": labels[i], "probability": p} for i, p in zip(row, chances)]}
            for row, chances in zip(order.tolist(), best)]


@dataclass
class ServedModels:
    """The models of one store, by name; the only way a request reaches a model."""

    store: Path
    models: dict[str, ServedModel]
    on_batch: Callable[[str, int], None] | None = None
    _batchers: dict[str, Batcher] = field(default_factory=dict, repr=False)

    @property
    def ready(self) -> bool:
        """True when every published model loaded (and there is at least one)."""
        return bool(self.models) and all(m.ready for m in self.models.values())

    def describe(self) -> dict[str, Any]:
        return {"ready": self.ready, "models": {name: m.describe() for name, m in self.models.items()}}

    def get(self, name: str, endpoint: str) -> ServedModel:
        """The loaded model `name` served at `endpoint`; 404 for a name not in the store, 503 if it failed to load."""
        served = self.models.get(name)
        if served is None:
            known = ", ".join(sorted(self.models)) or "none (the store is empty)"
            raise UnknownModel(f"unknown model {name!r}; models served: {known}")
        if not served.ready:
            raise NotReady(f"model {name!r} ({served.version}) is not available: {served.error}")
        if served.endpoint != endpoint:
            raise BadInput(f"model {name!r} is a {served.task} model: use POST {served.endpoint}")
        return served

    # -- images

    def prepare(self, name: str, image: bytes | Image.Image, endpoint: str = "/classify") -> np.ndarray:
        """(C, H, W) float32 in [0, 1]: `image` in the form model `name`, served at `endpoint`, was trained on.

        Decoded within the process's decoding budget, like every upload (DECODE_BUDGET_BYTES)."""
        return _prepare(image, self.get(name, endpoint).image_spec)

    def probabilities(self, name: str, pixels: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities for (N, C, H, W) float32 pixels in [0, 1]: one ONNX Runtime call."""
        out = self.get(name, "/classify").run(np.ascontiguousarray(pixels, dtype=np.float32))
        if out.shape[1] == 1:  # a binary graph answers one probability, of the second label (_check_manifest)
            out = np.concatenate([1 - out, out], axis=1)
        return out

    def answer(self, name: str, probabilities: np.ndarray, top_k: int) -> dict[str, Any]:
        """POST /classify's answer shape for one image's probabilities."""
        served = self.get(name, "/classify")
        (best,) = top_labels(served, probabilities[None], _top_k(top_k))
        return {"model": name, "version": served.version, **best, "provider": served.provider}

    def classify(self, name: str, image: bytes | Image.Image, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify one image (encoded bytes or a PIL image) with model `name`."""
        pixels = self.prepare(name, image)
        return self.answer(name, self.probabilities(name, pixels[None])[0], top_k)

    async def classify_shared(self, name: str, image: bytes | Image.Image,
                              top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """classify() for an event loop: the image is prepared in a lane thread unless it is small, and
        the ONNX Runtime call is shared with the concurrent requests for the same model (serving.batching)."""
        pixels = await _prepare_async(image, self.get(name, "/classify").image_spec)
        if name not in self._batchers:
            observe = None if self.on_batch is None else (lambda size: self.on_batch(name, size))
            self._batchers[name] = Batcher(lambda batch: self.probabilities(name, batch), MAX_SHARED_BATCH, observe)
        return self.answer(name, await self._batchers[name](pixels), top_k)

    def classify_array(self, name: str, array: np.ndarray | bytes, top_k: int = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify (N, C, H, W) images already in training form: uint8 0-255 or float32 in [0, 1].

        `array` may be the bytes of an .npy file. No preprocessing is applied: this is the path for
        test sets and throughput, so the pixels must already be what the model was trained on.
        """
        served = self.get(name, "/classify")
        pixels = _batch_pixels(read_npy(array) if isinstance(array, bytes) else np.asarray(array), served)
        probabilities = self.probabilities(name, pixels)
        k = _top_k(top_k)
        return {"model": name, "version": served.version, "provider": served.provider, "count": len(pixels),
                "results": top_labels(served, probabilities, k)}

    def reconstruct(self, name: str, image: bytes | Image.Image) -> Image.Image:
        """The autoencoder's output for `image`, as an 8-bit greyscale or RGB image."""
        served = self.get(name, "/reconstruct")
        pixels = self.prepare(name, image, "/reconstruct")
        out = np.clip(served.run(pixels[None])[0], 0.0, 1.0)  # (C, H, W)
        as_uint8 = np.round(out * 255).astype(np.uint8)
        return Image.fromarray(as_uint8[0], mode="L") if len(as_uint8) == 1 else \
            Image.fromarray(as_uint8.transpose(1, 2, 0), mode="RGB")

    # -- tabular

    def predict_heart(self, row: HeartRow | Mapping[str, Any]) -> dict[str, Any]:
        """Probability of heart disease for one row with the data set's columns (see HeartRow)."""
        if HEART_MODEL not in self.models:
            raise NotReady("no heart model is published yet: train and publish one, then restart the service")
        served = self.get(HEART_MODEL, "/heart")
        if not isinstance(row, HeartRow):
            row = validate_heart_row(row)
        probability = float(served.run(encode_row(row, served.tabular)).reshape(-1)[0])
        return {"probability": probability, "label": served.labels[int(probability >= served.threshold)],
                "version": served.version, "provider": served.provider}


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
        return array.astype(np.float32) / 255.0
    if array.dtype.kind != "f" or array.dtype.itemsize != 4:
        raise BadInput(f"dtype {array.dtype} refused: send uint8 (0-255) or float32 (0-1) pixels")
    pixels = array.astype(np.float32)  # native byte order, and a copy we may keep
    if not np.isfinite(pixels).all():
        raise BadInput("float32 pixels must be finite: the batch holds NaN or infinity")
    if pixels.min() < 0.0 or pixels.max() > 1.0:
        raise BadInput(f"float32 pixels must lie in [0, 1] (got {pixels.min():g} to {pixels.max():g}); "
                       "send uint8 for 0-255 values")
    return pixels

