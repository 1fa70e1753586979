"""The BentoML service: every model in models_store/ behind one HTTP API, on ONNX Runtime.

    bentoml serve serving.service:ModelService        # from the repository root; port 3000

The store is ./models_store, or the folder named by $MODELS_STORE. The Gradio demo (demo/) is mounted at
/ui over the same store; Swagger UI for the API is at /. The endpoints validate, call one
function of serving.runtime and shape the answer; serving.guard answers malformed requests before
BentoML parses them and turns every error into {"error": "..."}.

Upload endpoints (an @bentoml.api with a file field) are answered from the guard's own parse of the form:
each one's @bentoml.api method reads its files and calls the method of the same name plus UPLOAD_SUFFIX
with their bytes, and over HTTP the guard calls that method directly (ModelService.answer_form). So what
the guard checked is what is answered, and BentoML's second parse of the body, into a temporary file,
with its request machinery (half of a /classify request's time: docs/BENCHMARKS.md#serving) is skipped.
The @bentoml.api declarations stay, for the OpenAPI schema, Swagger UI and the BentoML client, and answer
calls made in Python. Skipped with BentoML's request machinery: its X-BentoML-Request-ID and Server headers.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import io
import ipaddress
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal
from urllib.parse import quote

import anyio
import bentoml
import numpy as np
import prometheus_client
import psutil
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel, BeforeValidator, Field, ValidationError, create_model
from starlette.responses import JSONResponse, RedirectResponse, Response

from serving import bentoml_compat, http_limits
from serving.auth import KEYS_ENV, KeyGuard, keys_from_env, metrics_open
from serving.devices import device_setting
from serving.overload import InFlightLimit, limit_from_env
from serving.errors import InvalidField, ServingError, WrongKind, describe_validation_errors
from serving.explain import describe, heat_picture
from serving.following import StoreFollower
from serving.monitoring import Monitor, observe_request
from serving.predictions import PredictionLog, record_answer
from serving.form import Form
from serving.guard import RequestGuard
from serving.loading import CLASSIFY, RECONSTRUCT, TABULAR
from serving.runtime import DEFAULT_TOP_K, HEART_MODEL, load_models
from serving.tabular import HeartRow
from serving.ui_app import ui_app
from serving.watchdog import Watchdog, stall_limit
from training.store import store_from_env

log = logging.getLogger("bentoml.serving")  # under "bentoml", so `bentoml serve` shows it

UI_PATH = "/ui"  # the demo
MAX_BODY_BYTES = 20 * 1024 * 1024  # a phone photo, or 1024 CIFAR-sized float32 images in one .npy
MAX_JSON_BYTES = 64 * 1024         # a heart row is about 250 bytes; nothing sent as JSON needs more
# Request bodies held at once by a worker (read, parsed and answered): with the decoding budget
# (serving.runtime.DECODE_BUDGET_BYTES) it bounds a worker's memory (docs/RELIABILITY.md#decoding-uploads).
MAX_BUFFERED_BYTES = 128 * 1024 * 1024

ModelName = Annotated[str, Field(description="a model name listed by GET /models, or name@vN for one of its "
                                             "versions", examples=["fashion"])]
# strict: a form's "true", "3.0" or "1e3" is not a count (form text is read as JSON first: "3" is 3)
TopK = Annotated[int, Field(ge=1, le=1000, strict=True, description="how many labels to return, best first")]
ImageFile = Annotated[Path, Field(description="PNG, JPEG, GIF, BMP or WebP; any size, greyscale or colour")]
NpyFile = Annotated[Path, Field(description="numpy.save of an (N, C, H, W) uint8 or float32 array in [0, 1]")]
# A label is text, but form text is read as JSON first: the digits' label "7" arrives as the number 7.
Label = Annotated[str | None, BeforeValidator(lambda v: str(v) if type(v) in (int, float) else v),
                  Field(description="the class to explain, one of the model's labels; default: its top class",
                        examples=["Trouser"])]
ExplainFormat = Annotated[Literal["json", "png"], Field(description="json: values per pixel; png: the heat "
                                                                    "over what the model sees")]


# Where each kind of model answers: the runtime speaks of kinds, only the service of routes.
ROUTES = {CLASSIFY: "/classify", RECONSTRUCT: "/reconstruct", TABULAR: "/tabular (or /heart)"}
TableRow = Annotated[dict[str, Any], Field(description="one row: the model's columns (GET /models, "
                                           "preprocessing.tabular.columns) and their values",
                                           examples=[{"Age": 54, "Sex": "M"}])]
UPLOAD_SUFFIX = "_upload"  # ModelService.<api>_upload(**fields as bytes and values) answers upload endpoint <api>
SYNC_THREADS = 2  # threads per worker for the synchronous endpoints (see @bentoml.service below)

API_KEYS = keys_from_env()  # None: keys are off (serving.auth); a bad keys file stops the service here
DEVICE = device_setting()  # SERVING_DEVICE: auto, cpu or cuda (serving.devices); a bad value stops it here too
LOOPBACK = "127.0.0.1"

# Images per ONNX Runtime call on /classify, by model: shows the adaptive batching at work in /metrics.
BATCH_SIZES = prometheus_client.Histogram("classify_onnx_batch_size", "images per shared ONNX Runtime call",
                                          ["model"], buckets=(1, 2, 4, 8, 16, 32, 64))

# The lifecycle of each model: its live version swapped in (or not) and which version is live now.
SWAPS = prometheus_client.Counter("model_swaps_total", "live versions loaded: started, ok (swapped in) or "
                                  "failed (the previous one kept serving)", ["model", "result"])
LIVE_VERSION = prometheus_client.Gauge("model_live_version", "the number N of the live version vN",
                                       ["model"], multiprocess_mode="liveall")


MODEL_READY = prometheus_client.Gauge("model_ready", "1 while the model's live version serves, 0 while it answers 503",
                                      ["model"], multiprocess_mode="liveall")


def record_swap(name: str, version: str | None, result: str) -> None:
    """A live version of `name` started, was swapped in ("ok"), or was not ("failed": the previous one serves)."""
    SWAPS.labels(model=name, result=result).inc()
    if result != "failed" and version:
        LIVE_VERSION.labels(model=name).set(int(version.removeprefix("v")))
        MODEL_READY.labels(model=name).set(1)


# Extra routes BentoML's @bentoml.api cannot declare (it makes POST routes only).
http = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def error_response(err: ServingError) -> JSONResponse:
    message = f"{err}: use POST {ROUTES[err.kind]}" if isinstance(err, WrongKind) else str(err)
    retry = getattr(err, "retry_after_s", None)  # errors that pass with time say when to come back
    return JSONResponse({"error": message}, status_code=err.status,
                        headers={"Retry-After": str(retry)} if retry else None)


def form_value(text: str) -> Any:
    """A text form field as BentoML reads it: JSON when it parses as JSON (its client sends "fashion"
    with the quotes), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def timed_answer(endpoint: str, answer: dict[str, Any], started: float) -> JSONResponse:
    """`answer` as sent, its time observed for the model and version that gave it (serving.monitoring)."""
    observe_request(endpoint, answer["model"], answer["version"], time.perf_counter() - started)
    return json_answer(answer)


def json_answer(answer: dict[str, Any]) -> JSONResponse:
    """The answer as sent: BentoML would validate a returned dict against the declared output and build its
    JSON schema on every request (12% of a /classify request's event-loop time, py-spy, bench.serve)."""
    return JSONResponse(answer)


def demo_login() -> Callable[[str, str], bool] | None:
    """With API keys on, the demo asks for a login (Gradio's own page): any user name, a key as the password."""
    return None if API_KEYS is None else (lambda _user, password: API_KEYS.valid(password))


def warn_if_open() -> None:
    """Log a warning when this worker listens beyond the loopback interface with no API keys."""
    if API_KEYS is not None:
        return
    exposed = sorted({c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
                      if c.status == psutil.CONN_LISTEN and not ipaddress.ip_address(c.laddr.ip).is_loopback})
    if exposed:
        log.warning("listening on %s, beyond this machine, with no API keys: anyone who reaches the port may use "
                    "every model and the demo; set %s (docs/SERVING.md#api-keys)", ", ".join(exposed), KEYS_ENV)


def started() -> Callable[[], None]:
    """Called once the demo serves: a worker builds it after creating the service, so start-up is done.
    Returns what to call when the worker stops."""
    # What start-up loaded (ONNX sessions, the Gradio demo, BentoML's app) lives as long as the process:
    # moved out of the cyclic GC's reach, its full collections stop scanning it (p99 figures:
    # docs/BENCHMARKS.md#figures-behind-the-services-constants).
    gc.freeze()
    warn_if_open()
    return Watchdog(asyncio.get_running_loop(), stall_limit()).start().stop


# threads: BentoML runs the synchronous APIs (/heart, /classify_batch, /reconstruct) one at a time by
# default, so a /heart answer of microseconds waited behind a 1024-image batch; two, for the machine's cores,
# and few enough to keep big /reconstruct uploads bounded in memory. Answered from the guard's parse, the
# upload endpoints among them run in as many threads of ModelService.answer_form.
# http.host: only this machine can connect unless asked (`--host 0.0.0.0` or BENTOML_HOST=0.0.0.0).
@bentoml.service(name="classic-dl", traffic={"timeout": 60}, threads=SYNC_THREADS, http={"host": LOOPBACK})
@bentoml.asgi_app(http, path="/")
@bentoml.asgi_app(ui_app(started=started, login=demo_login(), models=lambda: bentoml.get_current_service().models),
                  path=UI_PATH)
class ModelService:
    """Classifiers, the autoencoder and the heart model of models_store/, one ONNX Runtime session each."""

    def __init__(self) -> None:
        store = store_from_env()  # read when the service starts
        self.models = load_models(store, on_batch=lambda name, size: BATCH_SIZES.labels(model=name).observe(size))
        self.models.on_swap, self.models.monitor = record_swap, Monitor()
        self.follower: StoreFollower | None = None
        self.predictions = PredictionLog.from_env()  # None: off
        for name, served in self.models.models.items():
            record_swap(name, served.version, "started" if served.ready else "failed")
            if served.ready:
                self.models.monitor.live(served)
            else:
                MODEL_READY.labels(model=name).set(0)
        for served in self.models.models.values():
            if served.ready:
                log.info("serving %s %s on %s", served.name, served.version, served.provider)
            else:
                log.error("not serving %s %s from %s: %s", served.name, served.version, store.resolve(), served.error)
        if not self.models.models:
            log.warning("no models published in %s: train one with python -m training.fit", store.resolve())

    @bentoml.on_startup
    def follow_the_store(self) -> None:
        """Serve each model's live version as the store's pointers move (serving.following)."""
        self.follower = StoreFollower(self.models).start()

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.predictions is not None:
            self.predictions.close()

    def __is_ready__(self) -> bool:
        """GET /readyz: true only when every published model is loaded and verified."""
        return self.models.ready

    @http.get("/models")
    def list_models(self) -> dict[str, Any]:
        """Every published model: manifest facts, version, sha256, provider, and why not ready if so."""
        return self.models.describe()

    @bentoml.api(route="/classify")
    async def classify(self, image: ImageFile, model: ModelName, top_k: TopK = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify one image; concurrent requests for a model share ONNX Runtime calls (adaptive batching)."""
        return await self.classify_upload(image.read_bytes(), model, top_k)

    async def classify_upload(self, image: bytes, model: str, top_k: int) -> Response:
        started, seen = time.perf_counter(), []
        try:
            answer = await self.models.classify_shared(model, image, top_k, seen)
        except ServingError as err:
            return error_response(err)
        return self.answered("/classify", answer, started, image, seen)

    @bentoml.api(route="/classify_batch")
    def classify_batch(self, images: NpyFile, model: ModelName, top_k: TopK = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify an .npy upload of (N, C, H, W) images already in training form (uint8 or float32 in [0, 1])."""
        return self.classify_batch_upload(images.read_bytes(), model, top_k)

    def classify_batch_upload(self, images: bytes, model: str, top_k: int) -> Response:
        started = time.perf_counter()
        try:
            answer = self.models.classify_array(model, images, top_k)
        except ServingError as err:
            return error_response(err)
        return self.answered("/classify_batch", answer, started, images)

    @bentoml.api(route="/reconstruct")
    def reconstruct(self, image: ImageFile, model: ModelName = "fashion_reconstruction") -> Image.Image:
        """The autoencoder's reconstruction of an image, as a PNG."""
        return self.reconstruct_upload(image.read_bytes(), model)

    def reconstruct_upload(self, image: bytes, model: str) -> Response:
        started = time.perf_counter()
        try:
            output, served = self.models.reconstruct(model, image)
        except ServingError as err:
            return error_response(err)
        png = io.BytesIO()
        output.save(png, format="PNG")
        observe_request("/reconstruct", served.name, served.version, time.perf_counter() - started)
        return Response(png.getvalue(), media_type="image/png",
                        headers={"X-Model-Version": str(served.version), "X-Provider": str(served.provider)})

    @bentoml.api(route="/explain")
    def explain(self, image: ImageFile, model: ModelName, label: Label = None,
                format: ExplainFormat = "json") -> dict[str, Any]:
        """Where a classifier looks in an image: how much covering each part lowers the probability of a class
        (occlusion sensitivity, per pixel), as JSON or, with format=png, as a picture."""
        return self.explain_upload(image.read_bytes(), model, label, format)

    def explain_upload(self, image: bytes, model: str, label: str | None, format: str) -> Response:
        started = time.perf_counter()  # one batch of covered copies, in the synchronous endpoints' threads
        try:
            pixels, sensitivity, served = self.models.explain(model, image, label)
        except ServingError as err:
            return error_response(err)
        answer = {"model": served.name, "version": served.version, **describe(sensitivity, served.labels),
                  "provider": served.provider}
        if format == "json":
            return timed_answer("/explain", answer, started)
        png = io.BytesIO()
        heat_picture(pixels, sensitivity.values).save(png, format="PNG")
        observe_request("/explain", served.name, served.version, time.perf_counter() - started)
        return Response(png.getvalue(), media_type="image/png", headers={
            "X-Model-Version": str(served.version), "X-Provider": str(served.provider),
            "X-Label": quote(answer["label"], safe=" "), "X-Probability": repr(sensitivity.probability)})

    @bentoml.api(route="/heart")
    def heart(self, row: HeartRow, /, ctx: bentoml.Context) -> dict[str, Any]:
        """Probability of heart disease for one row of heart.csv's columns, as a JSON object
        (`?model=heart@vN` asks a version by name)."""
        started = time.perf_counter()
        try:
            model = ctx.request.query_params.get("model", HEART_MODEL) if ctx.request is not None else HEART_MODEL
            return self.answered("/heart", self.models.predict_heart(row, model), started, None)
        except ServingError as err:
            refused = error_response(err)
            ctx.response.status_code = refused.status_code  # BentoML answers with the context's status
            return refused

    @bentoml.api(route="/tabular")
    def tabular(self, model: ModelName, row: TableRow) -> dict[str, Any]:
        """A table model's answer for one row of its columns (GET /models lists them under
        preprocessing.tabular): `{"model": "heart", "row": {...}}`. The heart model takes its rows at /heart too."""
        started = time.perf_counter()
        try:
            return self.answered("/tabular", self.models.predict_row(model, row), started, None)
        except ServingError as err:
            return error_response(err)

    def answered(self, endpoint: str, answer: dict[str, Any], started: float, upload: bytes | None,
                 seen: list[np.ndarray] | None = None) -> JSONResponse:
        """`answer` as sent, with its request id; timed (serving.monitoring) and, when the prediction log is
        on, recorded (serving.predictions)."""
        response, request_id = timed_answer(endpoint, answer, started), uuid.uuid4().hex
        response.headers["X-Request-ID"] = request_id
        if self.predictions is not None:
            record_answer(self.predictions, endpoint, answer, upload, request_id, time.perf_counter() - started, seen)
        return response

    async def answer_form(self, api_name: str, form: Form) -> Response:
        """Upload endpoint `api_name`'s answer from serving.guard's parse of its form (see the module's docstring)."""
        try:
            values = UPLOADS[api_name].values(form)
        except ServingError as err:
            return error_response(err)
        answer = functools.partial(getattr(self, api_name + UPLOAD_SUFFIX), **values)
        if inspect.iscoroutinefunction(answer.func):
            return await answer()
        return await anyio.to_thread.run_sync(answer, limiter=self.sync_threads)

    @functools.cached_property
    def sync_threads(self) -> anyio.CapacityLimiter:
        return anyio.CapacityLimiter(SYNC_THREADS)


@dataclass(frozen=True)
class Upload:
    """An upload endpoint's declared fields: files (read as bytes) and text fields (validated as BentoML would)."""

    files: tuple[str, ...]
    text: type[BaseModel]

    @classmethod
    def of(cls, api: Any) -> "Upload":
        spec, files = bentoml_compat.input_model(api), bentoml_compat.file_fields(api)
        text = create_model(f"{spec.__name__}Text", **{name: (info.annotation, info) for name, info
                                                        in spec.model_fields.items() if name not in files})
        return cls(tuple(sorted(files)), text)

    def values(self, form: Form) -> dict[str, Any]:
        """The endpoint's arguments from `form`; InvalidField (422) naming every missing or wrong field."""
        missing = [f"{name}: Field required" for name in self.files if form.file(name) is None]
        texts = {name: form_value(form.text(name)) for name in self.text.model_fields if name in form.parts}
        try:
            fields = self.text.model_validate(texts)
        except ValidationError as err:
            raise InvalidField("; ".join([*missing, describe_validation_errors(err.errors())])) from None
        if missing:
            raise InvalidField("; ".join(missing))
        return {**{name: form.file(name) for name in self.files}, **dict(fields)}


def _uploads() -> dict[str, Upload]:
    """Every upload endpoint by API name; each must have its <name>_upload method (a new one fails here)."""
    uploads = {name: Upload.of(api) for name, api in ModelService.apis.items() if bentoml_compat.file_fields(api)}
    for name in uploads:
        if not callable(getattr(ModelService.inner, name + UPLOAD_SUFFIX, None)):
            raise TypeError(f"upload endpoint {name} needs a method {name}{UPLOAD_SUFFIX} taking its files as bytes")
    return uploads


UPLOADS = _uploads()


@http.get("/docs", include_in_schema=False)
def docs() -> RedirectResponse:
    """BentoML's Swagger UI, at /, lists every endpoint with its schema."""
    return RedirectResponse("/")


def answered_from_the_guards_parse() -> dict[str, Any]:
    """The upload endpoints serving.guard answers itself, once the service has started (see the module's docstring).

    BentoML's CORS middleware runs inside the guard, so with CORS switched on in BentoML's configuration
    the uploads go through BentoML, whose answers then carry the CORS headers; the guard's checks (one
    charset, strictly decoded names) make BentoML's parse of a form the same as the guard's.
    """
    if bentoml_compat.cors_enabled():
        return {}
    service = bentoml.get_current_service()
    return {ModelService.apis[name].route: functools.partial(service.answer_form, name) for name in UPLOADS}


def metrics_label() -> Any:
    """Request metrics are labelled with the service's routes; a mounted app's paths count as its mount point."""
    routes = [api.route for api in ModelService.apis.values()] + list(http.openapi()["paths"]) + \
        [route.path for route in http.routes if hasattr(route, "path")]  # /docs is not in the schema
    return bentoml_compat.route_labeller(routes, prefixes=[UI_PATH])


bentoml_compat.check_version()
bentoml_compat.quiet_validation_tracebacks()
bentoml_compat.install_timeout()
bentoml_compat.install_route_labels(metrics_label())
bentoml_compat.separate_prometheus_dir()
http_limits.install()  # request heads limited in size, field count and time, before the worker builds uvicorn
ModelService.add_asgi_middleware(InFlightLimit, limit=limit_from_env(), exempt_prefixes=(UI_PATH,))
ModelService.add_asgi_middleware(KeyGuard, keys=API_KEYS, own_login=(UI_PATH,), metrics_open=metrics_open())
ModelService.add_asgi_middleware(
    RequestGuard, max_body_bytes=MAX_BODY_BYTES, max_json_bytes=MAX_JSON_BYTES, max_buffered_bytes=MAX_BUFFERED_BYTES,
    uploads={api.route: bentoml_compat.file_fields(api) for api in ModelService.apis.values()
             if bentoml_compat.file_fields(api)},
    json_routes=frozenset(api.route for api in ModelService.apis.values() if not bentoml_compat.file_fields(api)),
    answers=answered_from_the_guards_parse, own_errors=(UI_PATH,))
