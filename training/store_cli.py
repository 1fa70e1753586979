"""python -m training.store: list, promote, roll back, verify and clean up the models a store publishes.

    python -m training.store list                       # every model, its versions, which one is live
    python -m training.store promote fashion v3         # verified first; the service serves it within seconds
    python -m training.store rollback fashion           # back to the version live before
    python -m training.store verify                     # every version of every model against its manifest
    python -m training.store gc fashion --keep 3        # delete old versions (never the live one or its rollback)

--store PATH, else $MODELS_STORE, else ./models_store (where the service looks). Torch-free. A version is
verified as the service loads it (serving.loading): its file's sha256 against its manifest, and the
manifest against the graph, on ONNX Runtime's CPU provider. Anything refused changes nothing and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .store import (StoreError, delete_version, live, promote, published_names, read_manifest, read_pointer,
                    rollback, rollback_target, store_from_env, version_dir, versions)


def verify(store: Path, name: str, folder: Path) -> str | None:
    """Why version `folder` of `name` would not serve, or None when it would."""
    from serving.loading import load_model  # onnxruntime, only for the commands that verify

    served = load_model(store, name, try_cuda=False, folder=folder)
    return None if served.ready else served.error


def figure(folder: Path) -> str:
    """'98.42% accuracy, 2026-12-02' or 'MSE 0.0091, ...' from a version's manifest."""
    try:
        manifest = read_manifest(folder)
    except (OSError, ValueError) as err:
        return f"(manifest unreadable: {type(err).__name__})"
    metrics, provenance = manifest.get("metrics", {}), manifest.get("provenance", {})
    if isinstance(metrics.get("test_accuracy"), (int, float)):
        shown = f"{metrics['test_accuracy']:.2%} test accuracy"
    elif isinstance(metrics.get("test_mse"), (int, float)):
        shown = f"test MSE {metrics['test_mse']:.4f}"
    else:
        shown = "no test figure"
    return f"{shown}, {str(provenance.get('finished_at', 'undated'))[:10]}"


def list_models(store: Path) -> int:
    names = published_names(store)
    if not names:
        print(f"no model is published in {store}")
    for name in names:
        try:
            current = live(store, name)
            target = rollback_target(store, name)
        except StoreError as err:
            current, target = None, None
            print(f"{name}: {err}")
        else:
            print(f"{name}:" + ("" if read_pointer(store, name) else " (no live.json: the highest version is live)"))
        for folder in versions(store, name):
            mark = "live" if current and folder.name == current.name else "rollback" if folder.name == target else ""
            print(f"  {mark:>8} {folder.name:<5} {figure(folder)}")
    return 0


def promote_version(store: Path, name: str, version: str) -> int:
    folder = version_dir(store, name, version)
    problem = verify(store, name, folder)
    if problem:
        raise StoreError(f"{name} {version} is refused, nothing changed: {problem}")
    promote(store, name, version)
    print(f"{name} {version} is live (verified); the service serves it within seconds")
    return 0


def rollback_version(store: Path, name: str) -> int:
    target = rollback_target(store, name)
    if target is not None and (problem := verify(store, name, version_dir(store, name, target))):
        raise StoreError(f"{name} {target}, the version to roll back to, is refused, nothing changed: {problem}")
    print(f"{name} {rollback(store, name)} is live again")
    return 0


def verify_all(store: Path) -> int:
    problems = 0
    for name in published_names(store):
        for folder in versions(store, name):
            problem = verify(store, name, folder)
            problems += problem is not None
            print(f"{'FAIL' if problem else 'ok':>4} {name} {folder.name}" + (f": {problem}" if problem else ""))
    print(f"{problems} damaged version(s)" if problems else "every version verifies")
    return 1 if problems else 0


def collect_garbage(store: Path, name: str, keep: int) -> int:
    if keep < 1:
        raise StoreError("--keep must be at least 1")
    current = live(store, name)
    spared = {current.name if current else None, rollback_target(store, name)}
    old = versions(store, name)[:-keep]
    for folder in old:
        if folder.name not in spared:
            delete_version(store, name, folder.name)
            print(f"deleted {name} {folder.name}")
    print(f"{name}: {len(versions(store, name))} version(s) kept")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.store", description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=None, help="the store (default: $MODELS_STORE, else ./models_store)")
    commands = p.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every model, its versions with their test figures, which is live")
    promoting = commands.add_parser("promote", help="verify a version, then make it live")
    promoting.add_argument("name")
    promoting.add_argument("version", help="vN")
    commands.add_parser("rollback", help="make the version live before the current one live again").add_argument("name")
    commands.add_parser("verify", help="check every version of every model against its manifest")
    collecting = commands.add_parser("gc", help="delete old versions, never the live one or its rollback target")
    collecting.add_argument("name")
    collecting.add_argument("--keep", type=int, required=True, help="how many of the newest versions to keep")
    args = p.parse_args(argv)
    store = args.store or store_from_env()
    try:
        if args.command == "list":
            return list_models(store)
        if args.command == "promote":
            return promote_version(store, args.name, args.version)
        if args.command == "rollback":
            return rollback_version(store, args.name)
        if args.command == "verify":
            return verify_all(store)
        return collect_garbage(store, args.name, args.keep)
    except (StoreError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
