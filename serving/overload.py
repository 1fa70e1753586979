"""Overload answered at once: past MAX_IN_FLIGHT requests in a worker, 429 with Retry-After.

Without a limit, a worker above its capacity queues every request: each waits longer, until all of them
time out together (504 after 60 s). With it, the requests admitted keep their latency and the others are
told at once to come back (docs/BENCHMARKS.md#overload has the measurements the default was chosen from).
The probes and /metrics are never refused, nor the demo under /ui, whose Gradio queue holds long-lived
event streams and limits its own work.
"""

from __future__ import annotations

import os

from .asgi import App, Message, Receive, Send, send_json

LIMIT_ENV = "SERVING_MAX_IN_FLIGHT"
MAX_IN_FLIGHT = 64   # requests at once per worker (0: no limit); see the module's docstring
RETRY_AFTER_S = 1    # a worker clears its in-flight requests within about a second at capacity
ALWAYS_ANSWERED = frozenset({"/livez", "/readyz", "/metrics"})


def limit_from_env() -> int:
    """$SERVING_MAX_IN_FLIGHT, else MAX_IN_FLIGHT; 0 turns the limit off."""
    return int(os.environ.get(LIMIT_ENV, MAX_IN_FLIGHT))


class InFlightLimit:
    """The middleware: at most `limit` requests in the app at once (0: no limit); the rest get 429."""

    def __init__(self, app: App, limit: int, exempt_prefixes: tuple[str, ...] = ()):
        self.app, self.limit, self.in_flight = app, limit, 0
        self.exempt = tuple(prefix.rstrip("/") for prefix in exempt_prefixes)

    def _exempt(self, path: str) -> bool:
        return path in ALWAYS_ANSWERED or any(path == p or path.startswith(p + "/") for p in self.exempt)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if not self.limit or scope["type"] != "http" or self._exempt(scope["path"]):
            return await self.app(scope, receive, send)
        if self.in_flight >= self.limit:
            return await send_json(send, 429, {"error": f"the service is at capacity ({self.limit} requests at "
                                                        f"once per worker): retry in {RETRY_AFTER_S} s"},
                                   [(b"retry-after", str(RETRY_AFTER_S).encode())])
        self.in_flight += 1  # one event loop per worker: no lock needed
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
