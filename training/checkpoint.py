"""Self-describing, self-verifying checkpoints, written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write_bytes, sha256_bytes

FORMAT = "classic-dl-checkpoint/1"
CHECKPOINT = "checkpoint.pt"  # in a run's folder; `init_from` names the run whose file it reads


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, damaged or not ours; never loaded silently."""


def _serialize(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` with a sha256 of its bytes, so a flipped byte is caught when loading.

    torch's zip container does not notice most corrupted tensor bytes, hence the envelope.
    """
    payload = _serialize(state)
    envelope = {"format": FORMAT, "sha256": sha256_bytes(payload), "payload": payload}
    atomic_write_bytes(path, _serialize(envelope))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The state saved by save_checkpoint, after checking its digest. Never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a {FORMAT} checkpoint")
        payload = envelope["payload"]
        if sha256_bytes(payload) != envelope["sha256"]:
            raise CheckpointError(f"{path} is corrupted: its sha256 does not match; refusing to load it")
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as err:  # truncated zip, bad pickle opcode, wrong types: all mean "damaged"
        raise CheckpointError(f"{path} is unreadable or corrupted ({type(err).__name__}: {err})") from err
