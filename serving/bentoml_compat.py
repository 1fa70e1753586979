"""Every use of BentoML's private modules, in one place: upgrading BentoML means reading this file.

Written against bentoml 1.4.39 (WRITTEN_FOR); `check_version()` warns at start-up when another version is
installed, and tests/test_bentoml_compat.py checks each assumption below against the installed one.
Everything else in the project uses BentoML's public API (bentoml.service, api, asgi_app,
add_asgi_middleware, get_current_service). BentoML 1.4.40, the newest release on PyPI on 2026-12-06,
has the same timeout, metrics and Prometheus-folder code as 1.4.39: none of the hooks below is fixed there.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Iterable

import bentoml
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.server.http import instruments, traffic
from pydantic import BaseModel, ValidationError
from starlette.responses import JSONResponse

log = logging.getLogger("bentoml.serving")

WRITTEN_FOR = "1.4.39"
HTTP_APP_LOGGER = "bentoml._internal.server.http_app"  # logs a traceback for each request its validation refuses
OTHER_PATHS = "other"  # the metrics label of every path that is not a known route
PATH_KEY = "classic_dl.path"  # where KnownRouteMetrics keeps a request's real path in its scope


def check_version() -> None:
    """Warn when the installed BentoML is not the one this module was written against."""
    if bentoml.__version__ != WRITTEN_FOR:
        log.warning("serving/bentoml_compat.py was written for bentoml %s; %s is installed: run "
                    "tests/test_bentoml_compat.py", WRITTEN_FOR, bentoml.__version__)


# -- what an API declares

def file_fields(api: Any) -> frozenset[str]:
    """The names of an @bentoml.api method's file fields (what BentoML reads from a multipart form)."""
    return frozenset(api.input_spec.multipart_fields)


def input_model(api: Any) -> type[BaseModel]:
    """An @bentoml.api method's declared input, as the pydantic model BentoML validates requests with."""
    return api.input_spec


def cors_enabled() -> bool:
    return bool(BentoMLContainer.http.cors.enabled.get())


def cors_origins_patched(origins: list[str]) -> Any:
    """A context manager setting BentoML's CORS origins, which it reads once per process (tests use it)."""
    return BentoMLContainer.access_control_options.patch({"allow_origins": origins})


def form_parser() -> type:
    """The class whose parse_request BentoML uses to read an upload form (tests watch it)."""
    from _bentoml_impl.serde import MultipartSerde

    return MultipartSerde


# -- the server's behaviour

class TimeoutMiddleware(traffic.TimeoutMiddleware):
    """BentoML's request timeout (504 when no response has started within `timeout` seconds), with its
    timer cancelled when the request is answered.

    BentoML 1.4.39's TimeoutMiddleware arms `loop.call_later(timeout, ...)` for every request and never
    cancels it. Each timer keeps the request's contextvars context, and with it the request's
    OpenTelemetry span, for the whole timeout (60 s): under load a worker held a minute of spans, its RSS
    grew and /classify's p99 latency rose several times within a minute (docs/BENCHMARKS.md#serving). Its
    waiter also only completes when the app sends something, so an app that fails first was held for the
    whole timeout and then sent nothing.
    """

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


def install_timeout() -> None:
    """Make BentoML build every service app from now on with TimeoutMiddleware: the class is a module
    global that http_app.py reads when it builds the app, and BentoML has no setting to replace it."""
    traffic.TimeoutMiddleware = TimeoutMiddleware


def quiet_validation_tracebacks() -> None:
    """BentoML logs a traceback for every request its validation refuses; those are the client's, not ours."""
    logging.getLogger(HTTP_APP_LOGGER).addFilter(_ClientErrorsAreNotServerErrors())


class _ClientErrorsAreNotServerErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


def install_route_labels(label: Callable[[str], str]) -> None:
    """Label BentoML's request metrics with `label(path)` instead of the raw path.

    BentoML's RunnerTrafficMetricsMiddleware, the outermost middleware of the app, names each request's
    time series after its path, so every made-up path a client sends adds series to /metrics until a
    restart (docs/RELIABILITY.md#adversarial). http_app.py imports the class from its module when it builds
    the app, so the subclass below takes its place.
    """
    instruments.RunnerTrafficMetricsMiddleware = _known_route_metrics(label)


def _known_route_metrics(label: Callable[[str], str]) -> type:
    base = instruments.RunnerTrafficMetricsMiddleware
    base = getattr(base, "wrapped", base)  # installed twice (tests import the service again): wrap the original

    class KnownRouteMetrics(base):
        """BentoML's metrics, seeing each request's path as `label` gives it; the app below sees the real one."""

        wrapped = base

        def __init__(self, app: Any, *args: Any, **kwargs: Any):
            async def real_path(scope: dict, receive: Any, send: Any) -> None:
                if PATH_KEY in scope:
                    scope = {**scope, "path": scope[PATH_KEY]}
                await app(scope, receive, send)

            super().__init__(real_path, *args, **kwargs)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope = {**scope, "path": label(scope["path"]), PATH_KEY: scope["path"]}
            await super().__call__(scope, receive, send)

    return KnownRouteMetrics


def route_labeller(routes: Iterable[str], prefixes: Iterable[str]) -> Callable[[str], str]:
    """path -> its metrics label: the path itself for `routes`, the prefix for paths under `prefixes` (a
    mounted app's own paths), OTHER_PATHS for anything else. BentoML's own routes are known routes."""
    known = frozenset(routes) | {"/", "/docs.json", "/metrics", "/livez", "/readyz", "/healthz"}
    under = tuple(sorted(prefixes, key=len, reverse=True))

    def label(path: str) -> str:
        if path in known:
            return path
        for prefix in under:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return prefix
        return OTHER_PATHS

    return label


def separate_prometheus_dir() -> None:
    """Give this `bentoml serve` its own Prometheus folder.

    BentoML keeps the workers' metric files in $BENTOML_HOME/prometheus_multiproc_dir and empties it when a
    server starts, so a second server on the machine wiped the first's. The CLI imports the service before
    it prepares the folder, so the folder set here, named after this process, is the one its workers get
    (in $PROMETHEUS_MULTIPROC_DIR); it is removed when the process ends.
    """
    directory = os.path.join(tempfile.gettempdir(), f"bentoml-prometheus-{os.getpid()}")
    BentoMLContainer.prometheus_multiproc_dir.set(directory)
    pid = os.getpid()
    atexit.register(lambda: os.getpid() == pid and shutil.rmtree(directory, ignore_errors=True))
