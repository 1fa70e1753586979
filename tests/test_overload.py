"""serving.overload: past the in-flight limit a worker answers 429 with Retry-After at once."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from serving.overload import InFlightLimit


def burst(limit: int, paths: list[str]) -> list[httpx.Response]:
    """Send a request to each of `paths` at once, to an app that answers only when all have arrived."""
    arrived, release = [0], asyncio.Event()

    async def slow_app(scope: dict, receive: Any, send: Any) -> None:
        arrived[0] += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=InFlightLimit(slow_app, limit, exempt_prefixes=("/ui",)))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            pending = [asyncio.create_task(client.get(path)) for path in paths]
            for _ in range(100):  # until every request is either admitted or answered
                await asyncio.sleep(0.01)
                if arrived[0] + sum(task.done() for task in pending) == len(paths):
                    break
            release.set()
            return await asyncio.gather(*pending)

    return asyncio.run(main())


def test_requests_past_the_limit_get_429_with_retry_after() -> None:
    answers = burst(2, ["/classify"] * 5)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429, 429]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1" and "capacity" in refused.json()["error"]


def test_probes_metrics_and_the_demo_are_never_refused() -> None:
    paths = ["/classify", "/livez", "/readyz", "/metrics", "/ui/gradio_api/queue/data", "/ui"]
    assert [a.status_code for a in burst(1, paths)] == [200] * len(paths)


def test_a_limit_of_zero_is_no_limit() -> None:
    assert {a.status_code for a in burst(0, ["/classify"] * 20)} == {200}


def test_bodies_held_at_once_are_bounded() -> None:
    """serving.guard counts the bodies of the requests it is answering; past its budget, 503 at once."""
    from serving.guard import RequestGuard

    release = asyncio.Event()

    async def slow_app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(slow_app, max_body_bytes=1000, uploads={}, max_buffered_bytes=2500)

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=guard)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            pending = [asyncio.create_task(client.post("/x", content=b"a" * 1000)) for _ in range(3)]
            while guard.buffered < 2000 and not any(task.done() for task in pending):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            release.set()
            answers = await asyncio.gather(*pending)
        assert guard.buffered == 0  # every request gave its bytes back
        return answers

    answers = asyncio.run(main())
    assert sorted(a.status_code for a in answers) == [200, 200, 503]
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["retry-after"] == "1" and "in flight" in refused.json()["error"]
