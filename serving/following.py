"""Following the store: when a live pointer moves (python -m training.store promote/rollback, or a training
run's promotion), each worker serves the new version within FOLLOW_WITHIN_S.

A thread per process watches the store with watchfiles (inotify where the filesystem sends events) and
looks again every POLL_S whatever happens, for filesystems that send none (NFS, some container volumes) and
for a store that was deleted or renamed and comes back. Each look is ServedModels.refresh(), which loads,
verifies and warms up a new version before it swaps it in, and keeps the old one serving if anything fails.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import watchfiles

from .runtime import ServedModels

log = logging.getLogger("bentoml.serving")

FOLLOW_WITHIN_S = 2.0  # the promise: a change is served this soon (docs/SERVING.md#versions-promotion-and-rollback)
POLL_S = 0.5           # looked at this often without events; events are taken after DEBOUNCE_MS
DEBOUNCE_MS = 50       # a promotion writes one file; a publication renames one folder


class StoreFollower:
    """Calls `models.refresh()` whenever `models.store` changes, and every POLL_S, until stop()."""

    def __init__(self, models: ServedModels, poll_s: float = POLL_S):
        self.models, self.poll_s = models, poll_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="store-follower", daemon=True)

    def start(self) -> "StoreFollower":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _follow(self) -> None:
        while not self.stopped.is_set():
            try:
                for _ in watchfiles.watch(Path(self.models.store), stop_event=self.stopped, debounce=DEBOUNCE_MS,
                                          rust_timeout=int(self.poll_s * 1000), yield_on_timeout=True,
                                          raise_interrupt=False, watch_filter=None):
                    self._refresh()
            except (OSError, RuntimeError) as err:  # no store to watch (deleted, renamed, not there yet): poll
                log.debug("cannot watch %s (%s): looking every %.1f s", self.models.store, err, self.poll_s)
                self._refresh()
                self.stopped.wait(self.poll_s)

    def _refresh(self) -> None:
        try:
            self.models.refresh()
        except Exception:  # a bug of ours must not end the following: logged, and tried again at the next look
            log.exception("looking at the store %s failed", self.models.store)
