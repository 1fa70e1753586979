"""Where ONNX Runtime runs (serving.devices): nothing extra without a GPU driver, CUDA's libraries loaded
before the first session where there is one, a fallback explained in ONNX Runtime's words, and
SERVING_DEVICE=cuda refusing readiness on the CPU. This machine has no driver; where a test needs one,
it is made to believe there is one, and then ONNX Runtime's real attempt at CUDA fails here."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from packaging.requirements import Requirement

from bench.gpu import gpu_packages
from serving import devices
from serving.loading import CPU, CUDA, create_session
from serving.runtime import load_models
from training.preprocessing import ImageSpec
from training.store import publish_model

REPO = Path(__file__).resolve().parents[1]
CUDA_LIBRARIES = ("libcublas", "libcublasLt", "libcudnn", "libcurand", "libcufft", "libcudart")


SIDE = 16  # the tiny classifier's images: 1 x SIDE x SIDE


def tiny_classifier(path: Path) -> Path:
    """A two-class classifier of 1 x SIDE x SIDE images as ONNX: Flatten, MatMul, Softmax."""
    weights = numpy_helper.from_array(np.linspace(-1, 1, 2 * SIDE**2, dtype=np.float32).reshape(-1, 2), "weights")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "weights"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "tiny", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)  # ORT 1.31: 13 at most
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store of its own per test (loaded sessions are shared per file in a process): models a and b."""
    onnx_file = tiny_classifier(tmp_path / "tiny.onnx")
    manifest = {"task": "classify", "labels": ["no", "yes"],
                "input": {"name": "pixels", "shape": [None, 1, SIDE, SIDE], "dtype": "float32"},
                "output": {"name": "probabilities", "shape": [None, 2], "dtype": "float32"},
                "preprocessing": {"image": ImageSpec(SIDE, SIDE, 1, "digit").to_dict()}}
    for name in ("a", "b"):
        publish_model(tmp_path / "store", name, onnx_file, manifest, "# {version}\n")
    return tmp_path / "store"


@pytest.fixture
def with_a_driver(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """This process believes an NVIDIA driver is installed; preload_dlls calls are recorded (and really made)."""
    calls: list[str] = []
    preload = ort.preload_dlls
    monkeypatch.setattr(devices, "driver_present", lambda: True)
    monkeypatch.setattr(ort, "preload_dlls", lambda *a, **k: calls.append("preload_dlls") or preload(*a, **k))
    monkeypatch.setattr(devices, "_fallback", None)
    devices.cuda_libraries.cache_clear()
    yield calls
    devices.cuda_libraries.cache_clear()


@pytest.fixture(autouse=True)
def auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_without_a_driver_the_service_side_loads_nothing_of_cuda_and_says_nothing(store: Path) -> None:
    """In a torch-free process, as the service runs: no CUDA session is attempted, no CUDA library mapped."""
    probe = f"""
import json, sys
import onnxruntime as ort
asked = []
class Recording(ort.InferenceSession):
    def __init__(self, model, options=None, providers=None, **kw):
        asked.extend(p if isinstance(p, str) else p[0] for p in providers or [])
        super().__init__(model, options, providers=providers, **kw)
ort.InferenceSession = Recording
from serving.runtime import load_models
facts = load_models({str(store)!r}).describe()["models"]
mapped = sorted({{line.rsplit("/", 1)[-1].strip() for line in open("/proc/self/maps")
                 if any(name + ".so" in line for name in {CUDA_LIBRARIES!r})}})
print(json.dumps({{"asked": sorted(set(asked)), "mapped": mapped, "torch": "torch" in sys.modules,
                  "models": {{n: [m["provider"], m["provider_note"]] for n, m in facts.items()}}}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in (devices.DEVICE_ENV, "CUDA_VISIBLE_DEVICES")}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["asked"] == [CPU] and seen["mapped"] == [] and not seen["torch"]
    assert {name: provider for name, (provider, _) in seen["models"].items()} == {"a": CPU, "b": CPU}
    assert all("no NVIDIA driver" in note for _, note in seen["models"].values())
    assert done.stderr == ""  # no error, no warning: a CPU machine is no fault


def test_with_a_driver_cuda_libraries_are_loaded_once_before_the_first_session(
        store: Path, with_a_driver: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: with_a_driver.append("session") or session(*a, **k))
    load_models(store)
    load_models(Path(shutil.copytree(store, store.parent / "copy")))  # later loads in the process: no preload
    assert with_a_driver == ["preload_dlls"] + ["session"] * 4


def test_a_fallback_to_the_cpu_is_explained_in_onnx_runtimes_words_and_logged_once(
        store: Path, with_a_driver: list[str], caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO, logger="serving"):
        models = load_models(store)
    facts = models.describe()["models"]
    assert models.ready and [facts[n]["provider"] for n in ("a", "b")] == [CPU, CPU]
    note = facts["a"]["provider_note"]
    # ONNX Runtime's message on this driverless machine: its CUDA provider library cannot be loaded
    assert "Failed to load library" in note and "libonnxruntime_providers_cuda.so" in note
    assert "cannot open shared object file" in note
    assert str(Path(ort.__file__).parent) not in note  # the server's paths stay out of /models
    assert facts["b"]["provider_note"] == note  # found out once: b went straight to the CPU, for the same reason
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and note in said[0].getMessage()
    assert "onnxruntime" not in capfd.readouterr().err  # its own red lines were read, not shown


def test_other_writes_to_stderr_during_the_attempt_are_passed_on(
        with_a_driver: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    session = ort.InferenceSession

    def noisy(*args, **kwargs):
        os.write(2, b"another thread's line\n")
        return session(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", noisy)
    create_session(tiny_classifier(tmp_path / "m.onnx").read_bytes(), try_cuda=True)
    assert "another thread's line" in capfd.readouterr().err


def test_cuda_is_asked_for_with_the_options_chosen_for_small_conv_nets(
        with_a_driver: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    session = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda model, options, providers: asked.append(providers)
                        or session(model, options, providers=providers))
    create_session(tiny_classifier(tmp_path / "m.onnx").read_bytes(), try_cuda=True)
    (cuda, options), cpu = asked[0]
    assert cuda == CUDA and cpu == CPU
    assert options == {"device_id": "0", "cudnn_conv_algo_search": "HEURISTIC",
                       "arena_extend_strategy": "kSameAsRequested"}


@pytest.mark.parametrize("setting, visible, why", [
    ("cpu", None, "SERVING_DEVICE=cpu"),
    ("auto", "", "CUDA_VISIBLE_DEVICES=''"),
    ("auto", "-1", "CUDA_VISIBLE_DEVICES='-1'"),
])
def test_cpu_only_or_no_visible_gpu_never_tries_cuda(
        setting: str, visible: str | None, why: str, store: Path, with_a_driver: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.DEVICE_ENV, setting)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    models = load_models(store)
    assert models.ready and with_a_driver == []
    assert why in models.describe()["models"]["a"]["provider_note"]


def test_cuda_required_without_cuda_refuses_readiness_and_says_why(store: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from test_serving import serve  # the service in-process

    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")
    with serve(store) as client:
        assert client.get("/readyz").status_code == 503
        facts = client.get("/models").json()
        assert client.get("/livez").status_code == 200
    for name in ("a", "b"):
        assert facts["models"][name]["ready"] is False and facts["models"][name]["provider"] is None
        assert "SERVING_DEVICE=cuda" in facts["models"][name]["error"]
        assert "no NVIDIA driver" in facts["models"][name]["error"]


def test_cuda_required_refuses_a_session_that_fell_back(store: Path, with_a_driver: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")
    models = load_models(store)
    assert not models.ready
    assert all("cannot open shared object file" in m.error for m in models.models.values())


def test_an_unknown_setting_is_refused_with_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(devices.DEVICE_ENV, "gpu")
    with pytest.raises(ValueError, match="SERVING_DEVICE='gpu'.*auto, cpu, cuda"):
        devices.device_setting()


# -- what a GPU node needs, in the Bento


def test_the_bentofile_carries_cuda_cudnn_and_cublas_as_installed_here() -> None:
    packages = gpu_packages()
    extras = [Requirement(r) for r in metadata.requires("onnxruntime-gpu")]
    needed = {r.name for r in extras if r.marker and any(r.marker.evaluate({"extra": e}) for e in ("cuda", "cudnn"))}
    assert needed and needed | {"nvidia-cublas"} <= set(packages)  # cuBLAS is not among onnxruntime-gpu's extras
    for name, version in packages.items():  # and what those need in turn
        assert {Requirement(r).name for r in metadata.requires(name) or []} <= set(packages), name
        assert metadata.version(name) == version, f"{name}: pinned {version}, installed {metadata.version(name)}"
    libraries = re.findall(r"lib\w+\.so\.\d+", " ".join(
        " ".join(str(f) for f in metadata.files(name) or []) for name in packages))
    assert {lib.split(".so")[0] for lib in libraries} >= set(CUDA_LIBRARIES)


# -- the batch path's input, on its way to the device


def test_a_uint8_batch_becomes_float32_pixels_in_one_pass(store: Path) -> None:
    """The float32 batch given to ONNX Runtime (which copies it to the GPU) is the only copy made of it."""
    import tracemalloc

    from serving.runtime import MAX_BATCH_IMAGES, _batch_pixels

    served = load_models(store).get("a", "classify")
    batch = np.random.default_rng(0).integers(0, 256, (MAX_BATCH_IMAGES, 1, SIDE, SIDE), dtype=np.uint8)
    tracemalloc.start()
    try:
        pixels = _batch_pixels(batch, served)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.dtype == np.float32 and np.array_equal(pixels, batch.astype(np.float32) / 255)
    assert peak < 1.5 * pixels.nbytes
