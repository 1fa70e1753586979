"""One byte budget per worker process for decoding uploads, shared by every thread that decodes one.

The API's preparation lanes, BentoML's threads for its synchronous endpoints and Gradio's for the demo all
take from the same budget (serving.runtime holds it): a decode holds its estimated peak memory while it
runs, so a burst of big uploads is decoded a few at a time and the worker stays under the ceiling
measured in docs/RELIABILITY.md#decoding-uploads. A decode that could never fit is refused at once; one
that cannot get its share before its deadline gets a 503 to retry.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from typing import Iterator

from .errors import BadInput, Overloaded

_MIB = 2 ** 20


class MemoryBudget:
    """`capacity` bytes, held by `hold()` blocks and given back when they end."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.free = capacity
        self._changed = threading.Condition()

    def check(self, nbytes: int) -> None:
        """BadInput (400) when `nbytes` is more than the whole budget: waiting would never help."""
        if nbytes > self.capacity:
            raise BadInput(f"decoding this picture takes about {nbytes / _MIB:.0f} MiB and a worker decodes at most "
                           f"{self.capacity / _MIB:.0f} MiB at once: send a smaller picture")

    @contextlib.contextmanager
    def hold(self, nbytes: int, deadline: float) -> Iterator[None]:
        """`nbytes` of the budget for the block, waited for until `deadline` (time.monotonic()); Overloaded
        (503) if they are not free by then. A deadline already past takes them only if free now."""
        self.check(nbytes)
        with self._changed:
            if not self._changed.wait_for(lambda: self.free >= nbytes, timeout=max(0.0, deadline - time.monotonic())):
                raise Overloaded(f"the worker is decoding other pictures and has no memory free for this one "
                                 f"(about {nbytes / _MIB:.0f} MiB): retry in a moment")
            self.free -= nbytes
        try:
            yield
        finally:
            with self._changed:
                self.free += nbytes
                self._changed.notify_all()


_M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's malloc.h


def give_big_blocks_back(threshold_bytes: int) -> bool:
    """Make glibc's malloc map every allocation of `threshold_bytes` or more on its own, so freeing it
    returns the memory to the system at once. glibc's default threshold rises to the size of the largest
    block freed (up to 32 MiB), after which a decoded picture's buffers come from heaps that keep their
    pages. False where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    except (OSError, AttributeError):
        return False
