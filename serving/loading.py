"""Loading a published version onto ONNX Runtime: verified, checked against its manifest, shared in a process.

A ServedModel is one version of one model. serving.runtime serves them; serving.following replaces the live
one when the store's live pointer moves (training.store).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnxruntime as ort

from training.files import sha256_bytes
from training.machine import usable_cpus
from training.preprocessing import ImageSpec
from training.store import MANIFEST_FILE, MODEL_FILE, StoreError, live, read_manifest

from .devices import CPU, CUDA, cuda_session, refuse_cpu_if_required, why_not_cuda  # noqa: F401 (CUDA: for importers)
from .tabular import check_tabular_spec

CLASSIFY, RECONSTRUCT, TABULAR = "classify", "reconstruct", "tabular"
KINDS = (CLASSIFY, RECONSTRUCT, TABULAR)  # what a model does with an input: the runtime's words, not routes


def session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cpus()  # one pool per model; small graphs rarely use them all
    options.inter_op_num_threads = 1              # our graphs are single chains: nothing to run in parallel
    # Idle pool threads sleep instead of spinning, so several models and the web server share the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3                # errors only, from this session
    return options


def create_session(model: bytes, try_cuda: bool) -> ort.InferenceSession:
    """A session on CUDA when it really works, else on CPU; get_providers()[0] says which, and
    serving.devices.why_not_cuda() why. With SERVING_DEVICE=cuda, CUDA or devices.CudaRequired.

    onnxruntime-gpu lists CUDA as available whenever it was built with it, even on a machine without a
    GPU or without cuDNN; creating the session is the real test (serving.devices).
    """
    session = cuda_session(model, session_options()) if try_cuda and why_not_cuda() is None else None
    refuse_cpu_if_required(session)
    return session or ort.InferenceSession(model, session_options(), providers=[CPU])


@dataclass(eq=False)  # one object per loaded version: compared and hashed by identity
class ServedModel:
    """One published version of a model: its manifest, and its session once verified and loaded."""

    name: str
    version: str | None
    manifest: dict[str, Any] = field(default_factory=dict)
    session: ort.InferenceSession | None = None
    error: str | None = None  # why it is not ready
    files: tuple | None = field(default=None, repr=False)  # what it was loaded from (files_key)
    batcher: Any = field(default=None, repr=False)  # its shared ONNX Runtime calls (serving.batching), once used

    @property
    def ready(self) -> bool:
        return self.session is not None

    @property
    def provider(self) -> str | None:
        return self.session.get_providers()[0] if self.session else None

    @property
    def provider_note(self) -> str | None:
        """Why the model runs on the CPU, in ONNX Runtime's words where CUDA was tried (serving.devices)."""
        return why_not_cuda() if self.provider == CPU else None

    @property
    def task(self) -> str | None:
        return self.manifest.get("task")

    @property
    def kind(self) -> str:
        """What the model does with an input: one of KINDS (a table model is "tabular", whatever its task)."""
        return TABULAR if "tabular" in self.manifest.get("preprocessing", {}) else str(self.task)

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
                "provider": self.provider, "provider_note": self.provider_note, "task": m.get("task"),
                "labels": m.get("labels"), "input": m.get("input"), "output": m.get("output"),
                "preprocessing": m.get("preprocessing"), "metrics": m.get("metrics"),
                "sha256": m.get("sha256"), "report_figure": m.get("report_figure")}

    def warm_up(self) -> None:
        """One inference of zeros, as a request would run it: a version that cannot answer is found here."""
        shape = [1, *(d if isinstance(d, int) and d > 0 else 1 for d in self.manifest["input"]["shape"][1:])]
        out = self.run(np.zeros(shape, np.float32))
        if not np.isfinite(out).all():
            raise ValueError(f"the graph answers {out.ravel()[:4]} for an input of zeros: not finite")


def check_manifest(manifest: Mapping[str, Any], session: ort.InferenceSession) -> None:
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


def load_model(store: Path, name: str, try_cuda: bool, folder: Path | None = None) -> ServedModel:
    """Version `folder` of `name` (default: the live one), its file verified against the manifest's sha256
    and its manifest against the graph before it serves.

    The bytes that were hashed are the bytes given to ONNX Runtime, so a file swapped after the
    check cannot be loaded unverified. Never raises: a failure is kept as the model's error.
    Models already loaded in this process from the same unchanged files are shared, not loaded again.
    """
    if folder is None:
        try:
            folder = live(store, name)
        except StoreError as err:
            return ServedModel(name, None, error=str(err))
    key = files_key(name, folder, try_cuda)
    with _loading:
        served = _loaded.get(key) if key else None
        if served is None:
            served = _load(store, name, folder, try_cuda)
            served.files = key
            if key and served.ready:  # a failure is retried by the next load
                _loaded[key] = served
    return served


def files_key(name: str, version_dir: Path | None, try_cuda: bool) -> tuple | None:
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
        check_manifest(served.manifest, session)
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


