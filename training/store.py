"""models_store/: published models, one folder per version, each appearing whole or not at all.

Layout: models_store/<name>/v<N>/{model.onnx, manifest.json, MODEL_CARD.md}. A version folder is
assembled under a hidden temporary name and renamed into place, so a reader that lists v* folders
never sees a half-written one; the newest complete version is the highest N.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .files import DIR_MODE, atomic_write_json, atomic_write_text, fsync_dir, sha256_file

MODEL_FILE, MANIFEST_FILE, CARD_FILE = "model.onnx", "manifest.json", "MODEL_CARD.md"
_VERSION = re.compile(r"^v(\d+)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


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
