"""Check a published classifier the way a client would use it: official test images as PNG bytes,
decoded and prepared by the shared preprocessing, run by ONNX Runtime; compare with the manifest.

    python -m training.verify fashion [--store models_store] [--data-root data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .data import load_data
from .files import sha256_file
from .preprocessing import ImageSpec, decode_image, png_bytes, prepare_image
from .registry import config_from_dict
from .store import MODEL_FILE, latest, read_manifest

TOLERANCE = 0.001  # accuracy may differ from the manifest by at most 0.1 point


class VerifyError(RuntimeError):
    """A model that cannot be verified as asked; the message says why."""


def verify_published(store: Path, name: str, data_root: Path, batch: int = 500) -> dict[str, Any]:
    """Recompute an image classifier's test accuracy from PNG bytes; the dict says whether it matches."""
    version = latest(store, name)
    if version is None:
        raise VerifyError(f"no published model {name!r} in {store}")
    manifest = read_manifest(version)
    if manifest["task"] != "classify" or "image" not in manifest["preprocessing"]:
        raise VerifyError(f"{name} is not an image classifier: only those are re-scored from PNG bytes")
    if sha256_file(version / MODEL_FILE) != manifest["sha256"]:
        raise VerifyError(f"{version / MODEL_FILE}: sha256 does not match its manifest")
    cfg = config_from_dict(manifest["provenance"]["config"]).replace(test_limit=manifest["metrics"]["test_size"])
    test = load_data(cfg, data_root).test
    spec = ImageSpec.from_dict(manifest["preprocessing"]["image"])
    session = ort.InferenceSession(str(version / MODEL_FILE), providers=["CPUExecutionProvider"])
    images = test.images.numpy()  # (N, C, H, W) uint8
    correct = 0
    for start in range(0, len(images), batch):
        chunk = images[start: start + batch]
        pixels = np.stack([prepare_image(decode_image(png_bytes(img)), spec) for img in chunk])
        (probs,) = session.run(None, {manifest["input"]["name"]: pixels})
        correct += int((probs.argmax(1) == test.labels[start: start + batch].numpy()).sum())
    accuracy = correct / len(images)
    claimed = manifest["metrics"]["test_accuracy"]
    return {"model": name, "version": manifest["version"], "images": len(images), "accuracy": accuracy,
            "manifest_accuracy": claimed, "matches": abs(accuracy - claimed) <= TOLERANCE}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="served model name, e.g. fashion")
    p.add_argument("--store", type=Path, default=Path("models_store"))
    p.add_argument("--data-root", type=Path, default=Path("data"))
    args = p.parse_args(argv)
    try:
        result = verify_published(args.store, args.name, args.data_root)
    except VerifyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{result['model']} {result['version']}: {100 * result['accuracy']:.2f}% on {result['images']:,} "
          f"test images sent as PNG (manifest says {100 * result['manifest_accuracy']:.2f}%): "
          f"{'OK' if result['matches'] else 'MISMATCH'}")
    return 0 if result["matches"] else 1


if __name__ == "__main__":
    sys.exit(main())
