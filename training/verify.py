"""Check a published classifier the way a client would use it: official test images as PNG bytes,
decoded and prepared by the shared preprocessing, run by ONNX Runtime; compare with the manifest.

    python -m training.verify fashion [--store models_store] [--data-root data]     # in this process
    python -m training.verify fashion --url http://127.0.0.1:3000                   # through a running service

In this process the live version's graph is run on CPU; with --url every image goes to the service's
POST /classify as a PNG (the whole path: upload, preprocessing, batching, ONNX Runtime), and every
answer must name the live version.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from .data import load_data
from .answers import answer_profile
from .files import atomic_write_json, sha256_file
from .preprocessing import ImageSpec, decode_image, png_bytes, prepare_image
from .registry import config_from_dict
from .store import MANIFEST_FILE, MODEL_FILE, StoreError, live, read_manifest, store_from_env

TOLERANCE = 0.001  # accuracy may differ from the manifest by at most 0.1 point
HTTP_THREADS = 8   # requests in flight over HTTP; the service batches them


class VerifyError(RuntimeError):
    """A model that cannot be verified as asked; the message says why."""


def verify_published(store: Path, name: str, data_root: Path, client: httpx.Client | None = None,
                     batch: int = 500) -> dict[str, Any]:
    """Recompute an image classifier's test accuracy from PNG bytes, in this process or, given a `client`
    of a running service, through its POST /classify; the dict says whether it matches the manifest."""
    try:
        version = live(store, name)
    except StoreError as err:
        raise VerifyError(str(err)) from None
    if version is None:
        raise VerifyError(f"no published model {name!r} in {store}")
    manifest = read_manifest(version)
    if manifest["task"] != "classify" or "image" not in manifest["preprocessing"]:
        raise VerifyError(f"{name} is not an image classifier: only those are re-scored from PNG bytes")
    if sha256_file(version / MODEL_FILE) != manifest["sha256"]:
        raise VerifyError(f"{version / MODEL_FILE}: sha256 does not match its manifest")
    cfg = config_from_dict(manifest["provenance"]["config"]).replace(test_limit=manifest["metrics"]["test_size"])
    test = load_data(cfg, data_root).test
    images, labels = test.images.numpy(), test.labels.numpy()  # (N, C, H, W) uint8
    profile = None
    if client is None:
        probabilities = _in_process(version, manifest, images, batch)
        predicted, answered_by = probabilities.argmax(1), {manifest["version"]}
        profile = answer_profile(probabilities, manifest["labels"])
    else:
        predicted, answered_by = _over_http(client, name, images)
    accuracy = float(np.mean(predicted == labels))
    claimed = manifest["metrics"]["test_accuracy"]
    return {"model": name, "version": manifest["version"], "folder": version, "images": len(images),
            "accuracy": accuracy, "manifest_accuracy": claimed, "answered_by": sorted(answered_by),
            "answers": profile,
            "matches": abs(accuracy - claimed) <= TOLERANCE and answered_by == {manifest["version"]}}


def record_profile(result: dict[str, Any]) -> None:
    """Write a verified version's test-split answer profile (training.answers) into its manifest, for a
    version published before training recorded it: the drift signal's reference (serving.monitoring)."""
    if not result["matches"] or result["answers"] is None:
        raise VerifyError("only a version that verifies in this process gets its profile recorded")
    manifest = read_manifest(result["folder"])
    manifest["metrics"]["answers"] = result["answers"]
    atomic_write_json(result["folder"] / MANIFEST_FILE, manifest)


def _in_process(version: Path, manifest: dict[str, Any], images: np.ndarray, batch: int) -> np.ndarray:
    """(N, K) class probabilities of the images, sent through PNG and the shared preprocessing."""
    spec = ImageSpec.from_dict(manifest["preprocessing"]["image"])
    session = ort.InferenceSession(str(version / MODEL_FILE), providers=["CPUExecutionProvider"])
    found = []
    for start in range(0, len(images), batch):
        pixels = np.stack([prepare_image(decode_image(png_bytes(img)), spec) for img in images[start: start + batch]])
        (probs,) = session.run(None, {manifest["input"]["name"]: pixels})
        found.append(probs if probs.shape[1] > 1 else np.concatenate([1 - probs, probs], axis=1))
    return np.concatenate(found)


def _over_http(client: httpx.Client, name: str, images: np.ndarray) -> tuple[np.ndarray, set[str]]:
    def classify(image: np.ndarray) -> tuple[int, str]:
        response = client.post("/classify", files={"image": ("test.png", png_bytes(image), "image/png")},
                               data={"model": name, "top_k": "1"})
        if response.status_code != 200:
            raise VerifyError(f"POST /classify answered {response.status_code}: {response.text[:200]}")
        return response.json()["index"], response.json()["version"]

    with ThreadPoolExecutor(HTTP_THREADS) as pool:
        answers = list(pool.map(classify, images))
    return np.array([index for index, _ in answers]), {version for _, version in answers}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.verify", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="served model name, e.g. fashion")
    p.add_argument("--store", type=Path, default=None, help="the store (default: $MODELS_STORE, else ./models_store)")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--url", help="a running service to send the images to (default: score in this process)")
    p.add_argument("--profile", action="store_true",
                   help="once verified in this process, record the test split's answer profile in the manifest "
                        "(for a version published before training recorded it: the drift signal's reference)")
    args = p.parse_args(argv)
    try:
        if args.url:
            with httpx.Client(base_url=args.url, timeout=120) as client:
                result = verify_published(args.store or store_from_env(), args.name, args.data_root, client)
        else:
            result = verify_published(args.store or store_from_env(), args.name, args.data_root)
    except (VerifyError, httpx.HTTPError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = f"over HTTP ({args.url}), answered by {'/'.join(result['answered_by'])}" if args.url else "in process"
    print(f"{result['model']} {result['version']}: {100 * result['accuracy']:.2f}% on {result['images']:,} "
          f"test images sent as PNG, {where} (manifest says {100 * result['manifest_accuracy']:.2f}%): "
          f"{'OK' if result['matches'] else 'MISMATCH'}")
    if args.profile and not args.url and result["matches"]:
        record_profile(result)
        print(f"recorded its answer profile in {result['folder'] / MANIFEST_FILE}")
    return 0 if result["matches"] else 1


if __name__ == "__main__":
    sys.exit(main())
