"""A worker whose event loop stops running is ended, so that BentoML's arbiter starts a fresh one.

The arbiter replaces a worker that exits, not one that is alive but stuck: a request that held the event
loop (before serving/ui_guard.py, Gradio hashing /dev/zero) left /livez unanswered and a core busy until
someone killed the process by hand. A thread asks the loop to run a callback every BEAT_S; when none has
run for the stall limit ($SERVING_STALL_SECONDS, default DEFAULT_STALL_S: far beyond anything the service
does on its loop), it logs where every thread is and ends the process.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
from typing import Callable

log = logging.getLogger("bentoml.serving")

STALL_ENV = "SERVING_STALL_SECONDS"
DEFAULT_STALL_S = 30.0
BEAT_S = 1.0
EXIT_STATUS = 70  # EX_SOFTWARE


def stall_limit() -> float:
    """Seconds without a run of the event loop after which the worker is ended ($SERVING_STALL_SECONDS)."""
    return float(os.environ.get(STALL_ENV, DEFAULT_STALL_S))


def end_worker(stalled_s: float) -> None:
    log.critical("the event loop has not run for %.0f s: ending this worker so that a fresh one replaces it; "
                 "where each thread was follows", stalled_s)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    os._exit(EXIT_STATUS)


class Watchdog:
    """Watches `loop` from a thread of its own until stop(); calls `on_stall(seconds)` once if it stalls."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stall_s: float,
                 on_stall: Callable[[float], None] = end_worker, beat_s: float = BEAT_S):
        self.loop, self.stall_s, self.on_stall, self.beat_s = loop, stall_s, on_stall, beat_s
        self.last_run = time.monotonic()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="event-loop-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _beat(self) -> None:
        self.last_run = time.monotonic()

    def _watch(self) -> None:
        while not self.stopped.wait(self.beat_s):
            try:
                self.loop.call_soon_threadsafe(self._beat)
            except RuntimeError:  # the loop is closed: nothing left to watch
                return
            stalled = time.monotonic() - self.last_run
            if stalled > self.stall_s and not self.stopped.is_set():
                self.on_stall(stalled)
                return
