"""What this machine lends a process: torch-free, for training's process pools and the service's thread pools."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
