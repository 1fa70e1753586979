"""BentoML's request timeout, as serving.bentoml_compat replaces it: no timer left behind per answered request."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from typing import Any

import httpx
import pytest
import uvloop
from bentoml._internal.server.http import traffic
from starlette.responses import PlainTextResponse

from serving import bentoml_compat as compat

REQUEST_STATE: contextvars.ContextVar[Any] = contextvars.ContextVar("request_state")


class Span:
    """Stands for what a request's context holds: BentoML's OpenTelemetry span."""


async def call(middleware_cls: type, app: Any, seconds: float = 60, spans: list | None = None) -> httpx.Response:
    """GET / through the middleware; with `spans`, a span is in the request's context first, as BentoML's
    tracing middleware (outside the timeout's) puts it, and a weak reference to it is kept there."""
    inner = middleware_cls(app, timeout=seconds)

    async def traced(scope: dict, receive: Any, send: Any) -> None:
        if spans is not None:
            span = Span()
            spans.append(weakref.ref(span))
            REQUEST_STATE.set(span)
        await inner(scope, receive, send)

    transport = httpx.ASGITransport(app=traced)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/")


BENTOML_TIMEOUT = compat.TimeoutMiddleware.__base__  # traffic.TimeoutMiddleware until install_timeout()


REQUESTS = 300  # more than asyncio lets cancelled timers pile up before it drops them (100, half its heap)


@pytest.mark.parametrize("run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])  # uvloop: as served
@pytest.mark.parametrize("middleware_cls, kept", [(compat.TimeoutMiddleware, False), (BENTOML_TIMEOUT, True)])
def test_answered_requests_leave_nothing_behind(middleware_cls: type, kept: bool, run: Any) -> None:
    """BentoML's own timers stay armed, each keeping its request's context (the span) for the whole
    timeout; ours are cancelled, and the loop lets them go."""
    spans: list[weakref.ref] = []

    async def main() -> None:
        for _ in range(REQUESTS):
            assert (await call(middleware_cls, PlainTextResponse("ok"), spans=spans)).text == "ok"
        await asyncio.sleep(0)
        gc.collect()
        alive = sum(span() is not None for span in spans)
        assert alive == REQUESTS if kept else alive < REQUESTS / 2
        scheduled = getattr(asyncio.get_running_loop(), "_scheduled", None)  # asyncio's own loop shows its timers
        if scheduled is not None:
            armed = [timer for timer in scheduled if not timer.cancelled()]
            assert len(armed) >= REQUESTS if kept else not armed

    run(main())


def test_a_request_with_no_answer_in_time_gets_504() -> None:
    async def slow(scope: dict, receive: Any, send: Any) -> None:
        await asyncio.sleep(10)

    response = asyncio.run(call(compat.TimeoutMiddleware, slow, seconds=0.05))
    assert response.status_code == 504 and "0.05 seconds" in response.json()["error"]


def test_an_app_that_fails_before_answering_fails_at_once() -> None:
    """BentoML's version waits out the whole timeout, then sends nothing."""
    async def broken(scope: dict, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):  # not asyncio.TimeoutError from wait_for
        asyncio.run(asyncio.wait_for(call(compat.TimeoutMiddleware, broken, seconds=3600), 30))


def test_the_service_is_built_with_it() -> None:
    import serving.service  # noqa: F401  (installs it)

    assert traffic.TimeoutMiddleware is compat.TimeoutMiddleware
    app = serving.service.ModelService.to_asgi()
    assert compat.TimeoutMiddleware in [m.cls for m in app.user_middleware]
