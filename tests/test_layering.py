"""Which modules may import what: the service and the demo never import torch, and the Bento packs what they import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import training

REPO = Path(__file__).resolve().parents[1]


def imports_torch(module: str) -> bool:
    probe = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 3), done.stderr[-2000:]
    return done.returncode == 3


@pytest.mark.parametrize("module", ["serving.service", "demo.app", *(f"training.{m}" for m in training.TORCH_FREE)])
def test_the_service_side_never_imports_torch(module: str) -> None:
    assert not imports_torch(module)


def test_the_training_side_does() -> None:  # the probe itself can see torch
    assert imports_torch("training.run")


def test_the_bento_packs_exactly_the_torch_free_training_modules() -> None:
    packed = {line.strip().strip('-" ') for line in (REPO / "bentofile.yaml").read_text().splitlines()
              if line.strip().startswith('- "training/')}
    assert packed == {"training/__init__.py", *(f"training/{m}.py" for m in training.TORCH_FREE)}


def test_the_service_imports_only_torch_free_training_modules() -> None:
    probe = "import sys, serving.service; print(' '.join(m for m in sys.modules if m.startswith('training.')))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300)
    imported = {name.removeprefix("training.") for name in done.stdout.split()}
    assert imported and imported <= set(training.TORCH_FREE), imported
