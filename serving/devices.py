"""Where ONNX Runtime runs: the SERVING_DEVICE setting, CUDA's libraries, and why a session is on the CPU.

    SERVING_DEVICE=auto   # default: CUDA where a session really starts on it, else the CPU
    SERVING_DEVICE=cpu    # the CPU only: CUDA is never tried, nothing of it is loaded
    SERVING_DEVICE=cuda   # CUDA or nothing: a model that would run on the CPU is not ready (/readyz 503)

onnxruntime-gpu 1.31.1 is built for CUDA 13: its CUDA provider needs cuBLAS, cuRAND, cuFFT, the CUDA runtime
and cuDNN 9, which here live only in the nvidia-* Python packages (bentofile.yaml lists them for a Bento).
The dynamic loader does not look there, and the service never imports torch (which would load them), so
onnxruntime.preload_dlls() loads them before the first CUDA session, once per process, and only where an
NVIDIA driver is installed: a machine without one loads nothing and logs nothing. The GPU is the first one
CUDA_VISIBLE_DEVICES leaves visible (BentoML sets it for a service that asks for GPUs).

ONNX Runtime never raises when it cannot start its CUDA provider: it logs why to the process's stderr
and puts the session on the CPU. Its words are read from there (file descriptor 2, for the attempt) so
that /models and the log can say why, in them. The first failure holds for the process: the sessions after
it go straight to the CPU, and the log says it once.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import io
import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import onnxruntime as ort

log = logging.getLogger(__name__)

DEVICE_ENV = "SERVING_DEVICE"
AUTO, CPU_ONLY, CUDA_REQUIRED = "auto", "cpu", "cuda"
SETTINGS = (AUTO, CPU_ONLY, CUDA_REQUIRED)
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
# CUDA provider options (onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html), for small conv
# nets on batches whose size changes with every request; their speed is still to be measured on a GPU
# (python -m bench.gpu, docs/BENCHMARKS.md).
CUDA_OPTIONS = {
    "device_id": "0",  # the first GPU CUDA_VISIBLE_DEVICES leaves visible
    # EXHAUSTIVE, the default, benchmarks every cuDNN algorithm for each new input shape, and every batch
    # size is a new shape: HEURISTIC asks cuDNN's heuristics instead, at no cost per shape.
    "cudnn_conv_algo_search": "HEURISTIC",
    # Several models, and the workers of a replica, share one GPU: grow the memory arena by what is asked
    # for, not by powers of two (the default), whose rounding holds up to twice the memory in use.
    "arena_extend_strategy": "kSameAsRequested",
}
NVIDIA_DRIVER_PROC = Path("/proc/driver/nvidia/version")  # present where the driver's kernel module runs
_ORT_WARNING = 2  # onnxruntime's log severities: 2 (warning) is its default
_ORT_LINE = re.compile(r"\[([EW]):onnxruntime:[^\]]*\]\s*(.*)")  # "[E:onnxruntime:Default, file.cc:12 f] text"
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r".*\[ONNXRuntimeError\] : \d+ : \w+ : ")  # where a message starts after its source location

_fallback: str | None = None  # why CUDA failed in this process, once it has
_reading_stderr = threading.Lock()  # one redirection of file descriptor 2 at a time


class CudaRequired(RuntimeError):
    """SERVING_DEVICE=cuda, and this session would run on the CPU."""


def device_setting() -> str:
    """SERVING_DEVICE: auto (default), cpu or cuda; ValueError for anything else."""
    value = os.environ.get(DEVICE_ENV, "").strip().lower() or AUTO
    if value not in SETTINGS:
        raise ValueError(f"{DEVICE_ENV}={value!r}: expected one of {', '.join(SETTINGS)}")
    return value


def why_not_cuda() -> str | None:
    """Why this process's sessions run on the CPU without trying CUDA; None when CUDA is to be tried (its
    libraries are then loaded)."""
    if device_setting() == CPU_ONLY:
        return f"{DEVICE_ENV}=cpu"
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime has no {CUDA} (onnxruntime-gpu has one)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    return cuda_libraries() or _fallback


def driver_present() -> bool:
    """Whether an NVIDIA driver is installed: its kernel module's /proc entry, or libcuda.so.1 where the
    dynamic loader finds it (looked up, not loaded)."""
    return NVIDIA_DRIVER_PROC.exists() or ctypes.util.find_library("cuda") is not None


@functools.cache
def cuda_libraries() -> str | None:
    """Load CUDA's and cuDNN's libraries from the nvidia-* packages, once per process, where a driver is
    installed; None when done, else why not."""
    if not driver_present():
        return f"no NVIDIA driver on this machine (no {NVIDIA_DRIVER_PROC}, no libcuda.so.1)"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # preload_dlls prints each library it cannot load
        ort.preload_dlls()
    if printed.getvalue().strip():
        log.warning("onnxruntime.preload_dlls(): %s", " ".join(printed.getvalue().split()))
    return None


def cuda_session(model: bytes, options: ort.SessionOptions) -> ort.InferenceSession:
    """A session on CUDA where ONNX Runtime can start one, else on the CPU; the first failure is kept, with
    ONNX Runtime's reason, for why_not_cuda() and the log."""
    global _fallback
    with _onnxruntime_log() as said:
        session = ort.InferenceSession(model, options, providers=[(CUDA, CUDA_OPTIONS), CPU])
    if session.get_providers()[0] != CUDA and _fallback is None:
        _fallback = _reason(said.getvalue())
        log.warning("CUDA does not work here: every model runs on the CPU. ONNX Runtime says: %s", _fallback)
    return session


def refuse_cpu_if_required(session: ort.InferenceSession | None) -> None:
    """With SERVING_DEVICE=cuda, raise CudaRequired for a session that is not on CUDA (None: none was made)."""
    if device_setting() == CUDA_REQUIRED and (session is None or session.get_providers()[0] != CUDA):
        raise CudaRequired(f"{DEVICE_ENV}=cuda, and CUDA does not work here: {why_not_cuda()}")


@contextlib.contextmanager
def _onnxruntime_log() -> Iterator[io.StringIO]:
    """What ONNX Runtime logs meanwhile, at warning level and above, taken from file descriptor 2 (its logger
    writes there, past sys.stderr); anything else written there meanwhile is passed on."""
    said = io.StringIO()
    with _reading_stderr, tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        ort.set_default_logger_severity(_ORT_WARNING)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode("utf-8", "replace").splitlines(keepends=True):
                if _ORT_LINE.search(line) or not _COLOUR.sub("", line).strip():  # its colour reset ends a message
                    said.write(line)
                else:
                    os.write(2, line.encode())


def _reason(logged: str) -> str:
    """ONNX Runtime's errors, then its warnings, from its log lines; without its colours, times and paths."""
    found = [_ORT_LINE.search(_COLOUR.sub("", line)) for line in logged.splitlines()]
    messages = [m.group(2) for level in "EW" for m in found if m and m.group(1) == level]
    package = str(Path(ort.__file__).parent)
    cleaned = [_STATUS.sub("", m).replace(package + os.sep, "onnxruntime/").strip() for m in messages]
    return "; ".join(dict.fromkeys(cleaned)) or f"ONNX Runtime put the session on {CPU} and logged no reason"
