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
from training.preprocessing import (DEFAULT_MAX_PIXELS, ImageError, ImageSpec, decode_image, open_image,
                                    prepare_image)
from training.store import MANIFEST_FILE, MODEL_FILE, latest, published_names, read_manifest

from .batching import Batcher
from .errors import BadInput, InvalidField, NotReady, UnknownModel, describe_validation_errors
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
# photo: 21 ms) go to a thread, header and all: PIL reads some formats' headers in Python, and a 20 MiB
# JPEG of 16x16 pixels padded with empty markers took 2.8 s to open.
INLINE_MAX_PIXELS = 128 * 128
INLINE_MAX_BYTES = 64 * 1024
# Bigger images are prepared by this many threads of their own per worker: each may hold about 200 MiB
# while a 4096 x 4096 RGBA upload is decoded, and the default executor's threads run the ONNX Runtime
# batches, which a burst of big uploads must not queue behind.
PREPARE_THREADS = 2
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
    try_cuda = CUDA in ort.get_available_providers()
    models: dict[str, ServedModel] = {}
    for name in published_names(store):
        served = models[name] = load_model(store, name, try_cuda)
        if try_cuda and served.ready and served.provider != CUDA:
            log.info("CUDA is listed by onnxruntime but does not work here; serving on CPU")
            try_cuda = False  # found out once; the other models go straight to CPU
    return ServedModels(store, models, on_batch)


def _image(image: bytes | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    try:
        return decode_image(image, MAX_PIXELS)
    except ImageError as err:
        raise BadInput(str(err)) from err


def _small(image: bytes | Image.Image) -> bool:
    """Whether `image` is cheap enough to prepare on the event loop (see INLINE_MAX_PIXELS). An upload
    that does not open counts as small: preparing it fails at once, saying why."""
    if isinstance(image, Image.Image):
        return image.width * image.height <= INLINE_MAX_PIXELS
    if len(image) > INLINE_MAX_BYTES:
        return False
    try:
        with open_image(image) as header:
            return header.width * header.height <= INLINE_MAX_PIXELS
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for what is not an image
        return True


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
    _preparers: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="prepare"), repr=False)

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

    def prepare(self, name: str, image: bytes | Image.Image) -> np.ndarray:
        """(C, H, W) float32 in [0, 1]: `image` in the form model `name` was trained on."""
        served = self.get(name, "/classify")
        return prepare_image(_image(image), served.image_spec)

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
        """classify() for an event loop: the image is prepared in a worker thread unless it is small, and
        the ONNX Runtime call is shared with the concurrent requests for the same model (serving.batching)."""
        if _small(image):
            pixels = self.prepare(name, image)
        else:
            pixels = await asyncio.get_running_loop().run_in_executor(self._preparers, self.prepare, name, image)
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
        pixels = prepare_image(_image(image), served.image_spec)
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

