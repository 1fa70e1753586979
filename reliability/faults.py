"""Fault injection against `bentoml serve`: each check returns {"check", "passed", "figures", "problems"}.

    sigkill_worker      the worker serving requests is SIGKILLed under load
    damaged_models      a truncated and a byte-flipped model.onnx in the store
    missing_model       a published version without its model.onnx at start-up
    sigterm_in_flight   SIGTERM while slow requests are in flight
    hot_swap_under_load versions published, promoted, rolled back and damaged while the service is under load

Each works on a copy of the store it is given, in `work`, and stops every process it started.
"""

from __future__ import annotations

import io
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
from PIL import Image

from serving.following import FOLLOW_WITHIN_S
from training.store import MODEL_FILE, latest, live, promote, publish_model, read_manifest, rollback

from .load import HEART_ROW, Load, drawing_png, mixed_calls
from .server import serve_store

FAIL_FAST_S = 2.0        # a request cut by a killed worker must fail within this of the kill
SLOW_IMAGE_SIDE = 4000   # pixels: a 4000x4000 PNG takes seconds to decode and prepare on one core
Result = dict[str, Any]


def _result(check: str, problems: list[str], **figures: Any) -> Result:
    return {"check": check, "passed": not problems, "figures": figures, "problems": problems}


def _copy(store: Path, work: Path) -> Path:
    copy = work / "store"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    return copy


def _classify(url: str, model: str = "fashion") -> httpx.Response:
    return httpx.post(url + "/classify", files={"image": ("t.png", drawing_png())}, data={"model": model}, timeout=60)


def _others(url: str, skip: set[str]) -> dict[str, int]:
    """Status of one request to every ready model not in `skip`, by name."""
    statuses = {}
    for name, facts in httpx.get(url + "/models", timeout=10).json()["models"].items():
        if name in skip:
            continue
        if name == "heart":
            statuses[name] = httpx.post(url + "/heart", json=HEART_ROW, timeout=60).status_code
        elif facts["task"] == "reconstruct":
            statuses[name] = httpx.post(url + "/reconstruct", files={"image": ("t.png", drawing_png())},
                                        data={"model": name}, timeout=60).status_code
        else:
            statuses[name] = _classify(url, name).status_code
    return statuses


def sigkill_worker(store: Path, work: Path, concurrency: int = 8, before_s: float = 3.0,
                   after_recovery_s: float = 3.0) -> Result:
    """In-flight requests fail fast, the arbiter starts a new worker, and every request sent after it is up succeeds."""
    work.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with serve_store(store, work / "sigkill.log") as server:
        (worker,) = server.workers()
        with Load(server.url, concurrency=concurrency) as load:
            time.sleep(before_s)
            killed_at = time.monotonic()
            worker.send_signal(signal.SIGKILL)
            recovered_at = None
            deadline = killed_at + 120
            while time.monotonic() < deadline and recovered_at is None:
                time.sleep(0.2)
                done = [o for o in load.outcomes if o.ok and o.start > killed_at]
                recovered_at = min((o.end for o in done), default=None)
            time.sleep(after_recovery_s)
        new = server.workers()
        if recovered_at is None:
            problems.append("no request succeeded within 120 s of the kill")
            recovered_at = float("inf")
        if not new or new[0].pid == worker.pid:
            problems.append("no new worker process")
        failed = load.failures()
        slow_failures = [o for o in failed if o.end - killed_at > FAIL_FAST_S or o.start > killed_at + FAIL_FAST_S]
        if slow_failures:
            problems.append(f"{len(slow_failures)} requests failed later than {FAIL_FAST_S} s after the kill: "
                            f"{slow_failures[0]}")
        later = [o for o in load.outcomes if o.start >= recovered_at]
        if not later or not all(o.ok for o in later):
            problems.append(f"requests sent after recovery: {sum(o.ok for o in later)}/{len(later)} succeeded")
        before = [o for o in load.outcomes if o.end < killed_at]
        if not all(o.ok for o in before):
            problems.append("requests failed before the kill")
        ready = httpx.get(server.url + "/readyz", timeout=10).status_code
        if ready != 200:
            problems.append(f"/readyz {ready} after the restart")
        return _result("sigkill_worker", problems, requests=len(load.outcomes), failed=len(failed),
                       failed_latest_s_after_kill=round(max((o.end - killed_at for o in failed), default=0), 2),
                       recovery_s=round(recovered_at - killed_at, 1), succeeded_after_recovery=len(later),
                       old_worker=worker.pid, new_worker=new[0].pid if new else None)


def _damage(store: Path, name: str, how: str) -> None:
    model = latest(store, name) / MODEL_FILE
    data = model.read_bytes()
    if how == "truncate":
        model.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        flipped = bytearray(data)
        flipped[len(flipped) // 3] ^= 0xFF
        model.write_bytes(bytes(flipped))
    else:  # "delete"
        model.unlink()


def _one_store_fault(check: str, store: Path, work: Path, damage: dict[str, str], word: str,
                     extra: Callable[[Any, list[str]], None] | None = None) -> Result:
    """Damage models of a store copy, start: the damaged ones 503 with `word` in the error, the others serve."""
    work.mkdir(parents=True, exist_ok=True)
    copy = _copy(store, work)
    for name, how in damage.items():
        _damage(copy, name, how)
    problems: list[str] = []
    with serve_store(copy, work / f"{check}.log", wait="/livez") as server:
        facts = httpx.get(server.url + "/models", timeout=10).json()
        statuses = {"livez": httpx.get(server.url + "/livez").status_code,
                    "readyz": httpx.get(server.url + "/readyz").status_code}
        if statuses != {"livez": 200, "readyz": 503}:
            problems.append(f"health {statuses}, expected livez 200 and readyz 503")
        for name in damage:
            model = facts["models"][name]
            if model["ready"] or word not in (model["error"] or ""):
                problems.append(f"{name}: ready {model['ready']}, error {model['error']!r}")
            answer = (_classify(server.url, name) if model["task"] == "classify" else
                      httpx.post(server.url + "/reconstruct", files={"image": ("t.png", drawing_png())},
                                 data={"model": name}, timeout=60))
            if answer.status_code != 503:
                problems.append(f"{name} answered {answer.status_code}, expected 503")
        others = _others(server.url, set(damage))
        if not others or set(others.values()) != {200}:
            problems.append(f"the other models answered {others}")
        if extra:
            extra(server, problems)
    return _result(check, problems, damaged=damage, health=statuses, others=others)


def damaged_models(store: Path, work: Path) -> Result:
    """A truncated fashion model.onnx and a byte-flipped fashion_reconstruction one: both 503, the rest serve."""
    return _one_store_fault("damaged_models", store, work,
                            {"fashion": "truncate", "fashion_reconstruction": "flip"}, "sha256")


def missing_model(store: Path, work: Path) -> Result:
    """fashion's model.onnx missing at start-up: /livez 200, /readyz 503, a log line naming the file."""
    def logged(server: Any, problems: list[str]) -> None:
        lines = [line for line in server.log.read_text().splitlines() if "not serving fashion" in line]
        if not lines or "FileNotFoundError" not in lines[0] or MODEL_FILE not in lines[0]:
            problems.append(f"no clear log line about the missing file: {lines}")

    return _one_store_fault("missing_model", store, work, {"fashion": "delete"}, "No such file", logged)


def slow_png(side: int = SLOW_IMAGE_SIDE) -> bytes:
    """A side x side photo-like PNG under the 20 MiB body limit, seconds of work for /classify."""
    y, x = np.mgrid[0:side, 0:side]
    noise = np.random.default_rng(0).integers(0, 20, (side, side))
    grey = ((np.sin(x / 37.0) + np.cos(y / 23.0)) * 60 + 128 + noise).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG")
    return out.getvalue()


def sigterm_in_flight(store: Path, work: Path, slow_requests: int = 3) -> Result:
    """SIGTERM with slow requests in flight: they complete with 200, a new one is not served, exit status 0."""
    work.mkdir(parents=True, exist_ok=True)
    png, problems = slow_png(), []
    with serve_store(store, work / "sigterm.log") as server:
        statuses: list[Any] = []

        def slow() -> None:
            try:
                statuses.append(httpx.post(server.url + "/classify", files={"image": ("big.png", png)},
                                           data={"model": "fashion"}, timeout=120).status_code)
            except httpx.HTTPError as err:
                statuses.append(type(err).__name__)

        threads = [threading.Thread(target=slow) for _ in range(slow_requests)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # uploaded and being prepared
        term_at = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        try:
            late = httpx.get(server.url + "/models", timeout=60).status_code
        except httpx.HTTPError as err:
            late = type(err).__name__
        for t in threads:
            t.join(timeout=120)
        exit_status = server.process.wait(timeout=60)
        stopped_s = time.monotonic() - term_at
    if statuses != [200] * slow_requests:
        problems.append(f"in-flight requests answered {statuses}")
    if late == 200:
        problems.append("a request sent after SIGTERM was served")
    if exit_status != 0:
        problems.append(f"exit status {exit_status}")
    return _result("sigterm_in_flight", problems, in_flight=statuses, new_request=late, exit_status=exit_status,
                   stopped_s=round(stopped_s, 1))


def publish_new_version(store: Path, name: str) -> Path:
    """Publish the latest version of `name` again, as a new version, with the real publishing code."""
    source = latest(store, name)
    manifest = {k: v for k, v in read_manifest(source).items() if k not in ("name", "version", "sha256", "file")}
    card = (source / "MODEL_CARD.md").read_text() if (source / "MODEL_CARD.md").exists() else "# {version}\n"
    return publish_model(store, name, source / MODEL_FILE, manifest, card)


def hot_swap_under_load(store: Path, work: Path, concurrency: int = 16, load_s: float = 60.0,
                        settle_s: float = FOLLOW_WITHIN_S) -> Result:
    """Versions change under load without a restart: a new one published and promoted, then rolled back, then
    a damaged one promoted by a bare pointer write. No request fails; every answer from `settle_s` after a
    change names the version live since; the damaged one never answers."""
    work.mkdir(parents=True, exist_ok=True)
    copy = _copy(store, work)
    first = live(copy, "fashion").name
    promote(copy, "fashion", first)  # a pointer, so that publishing alone changes nothing
    problems: list[str] = []
    expected: list[tuple[float, str]] = [(0.0, first)]  # (from when, the version every answer must name)
    phase = load_s / 4
    with serve_store(copy, work / "hot_swap.log") as server:
        calls = [c for c in mixed_calls() if c.endpoint == "/classify"]
        with Load(server.url, calls=calls, concurrency=concurrency) as load:
            time.sleep(phase)
            fresh = publish_new_version(copy, "fashion").name
            time.sleep(min(1.0, phase / 3))  # published, not promoted: still the first
            promote(copy, "fashion", fresh)
            expected.append((time.monotonic(), fresh))
            time.sleep(phase)
            expected.append((time.monotonic(), rollback(copy, "fashion")))
            time.sleep(phase)
            damaged = publish_new_version(copy, "fashion")
            data = bytearray((damaged / MODEL_FILE).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (damaged / MODEL_FILE).write_bytes(bytes(data))
            promote(copy, "fashion", damaged.name)  # not verified, as a hand-edited live.json would be
            time.sleep(phase)
        listed = httpx.get(server.url + "/models", timeout=10).json()["models"]["fashion"]
    failed = load.failures()
    if failed:
        problems.append(f"{len(failed)} of {len(load.outcomes)} requests failed: {failed[0]}")
    wrong = []
    for outcome in load.outcomes:
        since, version = max((e for e in expected if e[0] <= outcome.start), key=lambda e: e[0])
        if outcome.ok and outcome.start >= since + settle_s and outcome.version != version:
            wrong.append((round(outcome.start - since, 2), outcome.version, version))
    if wrong:
        problems.append(f"{len(wrong)} answers named another version than the live one {settle_s} s after a "
                        f"change, e.g. {wrong[:3]} (seconds after, answered, live)")
    answered = sorted({o.version for o in load.outcomes if o.ok})
    if damaged.name in answered:
        problems.append(f"the damaged {damaged.name} answered")
    if listed["live"] != first or damaged.name not in str(listed["failed"]):
        problems.append(f"/models says live {listed['live']}, failed {listed['failed']}")
    return _result("hot_swap_under_load", problems, requests=len(load.outcomes), failed=len(failed),
                   versions_answered=answered, damaged=damaged.name, live_at_end=listed["live"],
                   answers_off_the_live_version=len(wrong))


CHECKS: dict[str, Callable[[Path, Path], Result]] = {
    "sigkill_worker": sigkill_worker, "damaged_models": damaged_models, "missing_model": missing_model,
    "sigterm_in_flight": sigterm_in_flight, "hot_swap_under_load": hot_swap_under_load,
}
