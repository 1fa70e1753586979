"""models_store/: published models, one folder per version, each appearing whole or not at all.

Layout: models_store/<name>/v<N>/{model.onnx, manifest.json, MODEL_CARD.md}, and <name>/live.json. A
version folder is assembled under a hidden temporary name and renamed into place, so a reader that lists
v* folders never sees a half-written one. live.json names the version that is live (what the service
serves) and the promotions before it, for rollback; it is replaced atomically, under a lock for writers,
so a reader sees the old pointer or the new one. Without it the highest version is live, as before
pointers existed. `python -m training.store` (training/store_cli.py) lists, promotes, rolls back,
verifies and cleans up.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .files import DIR_MODE, atomic_write_json, atomic_write_text, fsync_dir, sha256_file

MODEL_FILE, MANIFEST_FILE, CARD_FILE = "model.onnx", "manifest.json", "MODEL_CARD.md"
LIVE_FILE, LOCK_FILE = "live.json", ".live.lock"
STORE_ENV, DEFAULT_STORE = "MODELS_STORE", "models_store"  # where the service, the demo and the store CLI look
_VERSION = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def store_from_env() -> Path:
    """The store: $MODELS_STORE, else ./models_store."""
    return Path(os.environ.get(STORE_ENV, DEFAULT_STORE))


def versions(store: Path, name: str) -> list[Path]:
    """Complete version folders of `name`, oldest first."""
    folder = Path(store) / name
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _VERSION.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest(store: Path, name: str) -> Path | None:
    found = versions(store, name)
    return found[-1] if found else None


def published_names(store: Path) -> list[str]:
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if _NAME.match(p.name) and versions(store, p.name))


def read_manifest(version_dir: Path) -> dict[str, Any]:
    return json.loads((Path(version_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))


def publish_model(store: Path, name: str, onnx_file: Path, manifest: dict[str, Any], card: str) -> Path:
    """Copy `onnx_file` into a new version of `name`; the manifest gains name, version, sha256."""
    if not _NAME.match(name):
        raise ValueError(f"bad model name {name!r}: lowercase letters, digits and _ only")
    folder = Path(store) / name
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".incoming-"))
    try:
        staging.chmod(DIR_MODE)
        target = staging / MODEL_FILE
        shutil.copyfile(onnx_file, target)
        with open(target, "rb") as f:
            os.fsync(f.fileno())
        manifest = {**manifest, "name": name, "file": MODEL_FILE, "sha256": sha256_file(target)}
        while True:  # another publisher may take a number first: then take the next one
            existing = versions(store, name)
            number = int(existing[-1].name[1:]) + 1 if existing else 1
            manifest["version"] = f"v{number}"
            atomic_write_json(staging / MANIFEST_FILE, manifest)
            atomic_write_text(staging / CARD_FILE, card.replace("{version}", manifest["version"]))
            try:
                os.rename(staging, folder / f"v{number}")
                break
            except OSError:
                if not (folder / f"v{number}").exists():
                    raise
        fsync_dir(folder)
        return folder / f"v{number}"
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# -- which version is live


class StoreError(ValueError):
    """A store operation that cannot be done; the message says why. Nothing was changed."""


def read_pointer(store: Path, name: str) -> dict[str, Any] | None:
    """`name`'s live.json, checked; None when there is none (the highest version is live). StoreError when
    it cannot be read or does not say which version is live."""
    path = Path(store) / name / LIVE_FILE
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise StoreError(f"{name}/{LIVE_FILE} cannot be read: {type(err).__name__}: {err}") from None
    stack = pointer.get("stack") if isinstance(pointer, dict) else None
    if not (isinstance(stack, list) and stack and all(isinstance(v, str) and _VERSION.match(v) for v in stack)
            and pointer.get("live") == stack[-1]):
        raise StoreError(f"{name}/{LIVE_FILE} does not name a live version (want {{\"live\": \"vN\", "
                         f"\"stack\": [..., \"vN\"]}})")
    return pointer


def live(store: Path, name: str) -> Path | None:
    """The live version folder of `name`: the one live.json names, else the highest; None when none is
    published. StoreError when live.json is damaged or names a version that is not in the store."""
    pointer = read_pointer(store, name)
    if pointer is None:
        return latest(store, name)
    folder = Path(store) / name / pointer["live"]
    if not folder.is_dir():
        raise StoreError(f"{name}/{LIVE_FILE} names {pointer['live']}, which is not in the store")
    return folder


def version_dir(store: Path, name: str, version: str) -> Path:
    """The folder of `name`'s `version` (vN); StoreError when it is not in the store."""
    folder = Path(store) / name / version
    if not (_VERSION.match(version) and folder.is_dir()):
        known = ", ".join(p.name for p in versions(store, name)) or "none"
        raise StoreError(f"{name} has no version {version!r}; its versions: {known}")
    return folder


@contextlib.contextmanager
def _locked(store: Path, name: str) -> Iterator[None]:
    """One writer of `name`'s pointer at a time, across processes."""
    with open(Path(store) / name / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_pointer(store: Path, name: str, stack: list[str], action: str, log: list[dict[str, Any]]) -> None:
    entry = {"at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "action": action, "live": stack[-1]}
    atomic_write_json(Path(store) / name / LIVE_FILE, {"live": stack[-1], "stack": stack, "log": [*log, entry]})


def promote(store: Path, name: str, version: str) -> None:
    """Make `version` of `name` live, remembering the one live before for rollback. The caller verifies it."""
    version_dir(store, name, version)
    with _locked(store, name):
        pointer = read_pointer(store, name)
        if pointer is None:  # the highest version was live: it is what a rollback goes back to
            current = latest(store, name)
            stack = [current.name] if current is not None and current.name != version else []
            log: list[dict[str, Any]] = []
        else:
            stack, log = list(pointer["stack"]), list(pointer.get("log", []))
            if stack[-1] == version:
                return  # live already
        _write_pointer(store, name, [*stack, version], "promote", log)


def rollback(store: Path, name: str) -> str:
    """Make the version live before the current one live again; the version now live."""
    with _locked(store, name):
        pointer = read_pointer(store, name)
        stack = list(pointer["stack"]) if pointer else []
        while len(stack) > 1 and not (Path(store) / name / stack[-2]).is_dir():
            del stack[-2]  # deleted since (gc, or by hand): go further back
        if len(stack) < 2:
            raise StoreError(f"{name} has no earlier live version to roll back to")
        stack.pop()
        _write_pointer(store, name, stack, "rollback", pointer.get("log", []))
        return stack[-1]


def rollback_target(store: Path, name: str) -> str | None:
    """The version a rollback of `name` would make live, if any."""
    pointer = read_pointer(store, name)
    return pointer["stack"][-2] if pointer and len(pointer["stack"]) > 1 else None


def delete_version(store: Path, name: str, version: str) -> None:
    """Remove a version folder: renamed out of sight first, so that no reader sees it half deleted."""
    folder = version_dir(store, name, version)
    hidden = folder.with_name(f".deleting-{version}-{os.getpid()}")
    os.rename(folder, hidden)
    fsync_dir(folder.parent)
    shutil.rmtree(hidden, ignore_errors=True)


if __name__ == "__main__":  # python -m training.store: the command line is training/store_cli.py
    from training.store_cli import main

    raise SystemExit(main())
