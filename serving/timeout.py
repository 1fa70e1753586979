"""BentoML's request timeout, with its timer cancelled when the request is answered.

BentoML 1.4.39's TimeoutMiddleware arms `loop.call_later(timeout, ...)` for every request and never
cancels it. Each timer keeps the request's contextvars context, and with it the request's OpenTelemetry
span, for the whole timeout (60 s): under 700 requests/s a worker held 60 s of spans, about 500,000
extra objects for the cyclic GC to scan, its RSS grew by about 240 MiB, and /classify's p99 latency
rose from 65 to 490 ms within a minute of load (bench.serve, docs/BENCHMARKS.md). Its waiter also only
completes when the app sends something, so an app that fails first was held for the whole timeout and
then sent nothing. `install()` puts this subclass in its place before BentoML builds the service's app.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse


class TimeoutMiddleware(traffic.TimeoutMiddleware):
    """504 when no response has started within `timeout` seconds; otherwise no trace once answered."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.create_future()  # done at the response's first message, or when the app ends

        async def send_and_mark(message: dict[str, Any]) -> None:
            if not started.done():
                started.set_result(None)
            await send(message)

        request = asyncio.ensure_future(self.app(scope, receive, send_and_mark))
        # An app that fails before sending would otherwise leave `started` pending for the whole timeout.
        request.add_done_callback(lambda _: started.done() or started.set_result(None))
        timer = loop.call_later(self.timeout, self._set_timer_out, started)
        try:
            await started
        except asyncio.TimeoutError:
            if request.cancel():
                await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                   status_code=504)(scope, receive, send)
                return
        finally:
            timer.cancel()
        await request  # the rest of the response, or the app's exception


def install() -> None:
    """Make BentoML build every service app from now on with this TimeoutMiddleware."""
    traffic.TimeoutMiddleware = TimeoutMiddleware
