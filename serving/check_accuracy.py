"""python -m serving.check_accuracy NAME: the official test images, sent one by one as PNG files to a running
service's POST /classify, must score the test accuracy the model's manifest claims (within 0.1 point).

A client-side check of the whole path (PNG encoding, upload, preprocessing, ONNX Runtime); it reads the
test split with training.data, so it needs torch, unlike the service itself.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from training.data import load_data
from training.preprocessing import png_bytes
from training.registry import config_from_dict
from training.store import latest, read_manifest

TOLERANCE = 0.001  # 0.1 percentage point
THREADS = 8        # requests in flight; the service batches them


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.check_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="a classifier in the store, e.g. fashion")
    p.add_argument("--url", default="http://127.0.0.1:3000", help="the running service")
    p.add_argument("--store", type=Path, default=Path("models_store"), help="where the model's manifest is")
    p.add_argument("--data-root", type=Path, default=Path("data"), help="the data sets, as training reads them")
    args = p.parse_args(argv)

    manifest = read_manifest(latest(args.store, args.name))
    cfg = config_from_dict(manifest["provenance"]["config"])
    test = load_data(cfg, args.data_root).test
    images, labels = test.images.numpy(), test.labels.numpy()

    with httpx.Client(base_url=args.url, timeout=120) as client:
        def predict(image: np.ndarray) -> tuple[int, str]:
            response = client.post("/classify", files={"image": ("test.png", png_bytes(image), "image/png")},
                                   data={"model": args.name, "top_k": "1"})
            response.raise_for_status()
            return response.json()["index"], response.json()["version"]

        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(predict, images))
    accuracy = float(np.mean([index == label for (index, _), label in zip(answers, labels)]))
    claimed = manifest["metrics"]["test_accuracy"]
    versions = {version for _, version in answers}
    print(f"{args.name} {'/'.join(sorted(versions))}: {100 * accuracy:.2f}% over HTTP on {len(labels):,} test PNGs; "
          f"the manifest ({manifest['version']}) claims {100 * claimed:.2f}%")
    ok = abs(accuracy - claimed) <= TOLERANCE and versions == {manifest["version"]}
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
