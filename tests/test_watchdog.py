"""serving.watchdog: a worker whose event loop stops running is ended, one whose loop runs is left alone."""

from __future__ import annotations

import asyncio
import time

from serving.watchdog import Watchdog

BEAT_S = 0.05


def stalls_seen(block_s: float, stall_s: float) -> list[float]:
    """Run an event loop for a second, blocking it for `block_s` seconds midway; the stalls reported."""
    seen: list[float] = []

    async def main() -> None:
        watchdog = Watchdog(asyncio.get_running_loop(), stall_s, on_stall=seen.append, beat_s=BEAT_S).start()
        await asyncio.sleep(0.3)
        time.sleep(block_s)  # the event loop held, as by a request hashing /dev/zero on it
        await asyncio.sleep(0.3)
        watchdog.stop()

    asyncio.run(main())
    return seen


def test_a_stalled_event_loop_is_reported_once() -> None:
    seen = stalls_seen(block_s=1.5, stall_s=0.5)
    assert len(seen) == 1 and seen[0] > 0.5


def test_a_running_event_loop_is_left_alone() -> None:
    assert stalls_seen(block_s=0.1, stall_s=0.5) == []


def test_it_ends_with_its_loop() -> None:
    """A loop closed without stop() (a test's server) is not taken for a stalled one."""
    seen: list[float] = []

    async def main() -> Watchdog:
        return Watchdog(asyncio.get_running_loop(), 0.2, on_stall=seen.append, beat_s=BEAT_S).start()

    watchdog = asyncio.run(main())
    watchdog.thread.join(timeout=5)
    assert not watchdog.thread.is_alive() and seen == []
