"""The BentoML service: every model in models_store/ behind one HTTP API, on ONNX Runtime.

    bentoml serve serving.service:ModelService        # from the repository root; port 3000

The store is ./models_store, or the folder named by $MODELS_STORE. The Gradio demo (demo/) is mounted at
/ui over the same store; Swagger UI for the API is at /. The endpoints validate, call one
function of serving.runtime and shape the answer; serving.guard answers malformed requests before
BentoML parses them and turns every error into {"error": "..."}.

POST /classify, the one-image path that takes the traffic, is answered from the guard's own parse of
the form (ModelService.classify_form): BentoML's second parse of the body, into a temporary file, and
its request machinery were half of a request's time (py-spy, bench.serve). Its @bentoml.api
declaration stays, for the OpenAPI schema, Swagger UI and the BentoML client, and answers calls
made in Python. Skipped with BentoML's request machinery: its X-BentoML-Request-ID and Server headers.
"""

from __future__ import annotations

import gc
import io
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import bentoml
import prometheus_client
from bentoml._internal.configuration.containers import BentoMLContainer
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel, Field, ValidationError, create_model
from starlette.responses import JSONResponse, RedirectResponse, Response

from demo.mount import ui_app
from serving import timeout
from serving.errors import InvalidField, ServingError, describe_validation_errors
from serving.form import Form
from serving.guard import RequestGuard
from serving.runtime import DEFAULT_TOP_K, load_models, store_from_env
from serving.tabular import HeartRow

log = logging.getLogger("bentoml.serving")  # under "bentoml", so `bentoml serve` shows it

UI_PATH = "/ui"  # the demo
MAX_BODY_BYTES = 20 * 1024 * 1024  # a phone photo, or 1024 CIFAR-sized float32 images in one .npy
MAX_JSON_BYTES = 64 * 1024         # a heart row is about 250 bytes; nothing sent as JSON needs more

ModelName = Annotated[str, Field(description="a model name listed by GET /models", examples=["fashion"])]
TopK = Annotated[int, Field(ge=1, le=1000, description="how many labels to return, best first")]
ImageFile = Annotated[Path, Field(description="PNG, JPEG, GIF, BMP or WebP; any size, greyscale or colour")]
NpyFile = Annotated[Path, Field(description="numpy.save of an (N, C, H, W) uint8 or float32 array in [0, 1]")]


# Images per ONNX Runtime call on /classify, by model: shows the adaptive batching at work in /metrics.
BATCH_SIZES = prometheus_client.Histogram("classify_onnx_batch_size", "images per shared ONNX Runtime call",
                                          ["model"], buckets=(1, 2, 4, 8, 16, 32, 64))

# Extra routes BentoML's @bentoml.api cannot declare (it makes POST routes only).
http = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


def error_response(err: ServingError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


def form_value(text: str) -> Any:
    """A text form field as BentoML reads it: JSON when it parses as JSON (its client sends "fashion"
    with the quotes), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def json_answer(answer: dict[str, Any]) -> JSONResponse:
    """The answer as sent: BentoML would validate a returned dict against the declared output and build its
    JSON schema on every request (12% of a /classify request's event-loop time, py-spy, bench.serve)."""
    return JSONResponse(answer)


def started() -> None:
    """Called once the demo serves: a worker builds it after creating the service, so start-up is done."""
    # What start-up loaded (ONNX sessions, the Gradio demo, BentoML's app) lives as long as the process:
    # moved out of the cyclic GC's reach, its full collections stop scanning it. On an idle 2-core Xeon
    # this cut /classify's p99 from 172 to 68 ms at 1 connection and 314 to 197 ms at 32 (bench.serve).
    gc.freeze()


# threads: BentoML runs the synchronous APIs (/heart, /classify_batch, /reconstruct) one at a time by
# default, so a /heart answer of microseconds waited behind a 1024-image batch; two, for the machine's cores,
# and few enough to keep big /reconstruct uploads bounded in memory.
@bentoml.service(name="classic-dl", traffic={"timeout": 60}, threads=2)
@bentoml.asgi_app(http, path="/")
@bentoml.asgi_app(ui_app(started=started), path=UI_PATH)
class ModelService:
    """Classifiers, the autoencoder and the heart model of models_store/, one ONNX Runtime session each."""

    def __init__(self) -> None:
        store = store_from_env()  # read when the service starts
        self.models = load_models(store, on_batch=lambda name, size: BATCH_SIZES.labels(model=name).observe(size))
        for served in self.models.models.values():
            if served.ready:
                log.info("serving %s %s on %s", served.name, served.version, served.provider)
            else:
                log.error("not serving %s %s from %s: %s", served.name, served.version, store.resolve(), served.error)
        if not self.models.models:
            log.warning("no models published in %s: train one with python -m training.fit", store.resolve())

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
        return await self.classify_image(image.read_bytes(), model, top_k)

    async def classify_form(self, form: Form) -> JSONResponse:
        """POST /classify from serving.guard's parse of the form (see the module's docstring)."""
        try:
            image = form.file("image")
            values = {name: form_value(form.text(name)) for name in ClassifyFields.model_fields if name in form.parts}
            missing = ["image: Field required"] if image is None else []
            try:
                fields = ClassifyFields.model_validate(values)
            except ValidationError as err:
                raise InvalidField("; ".join([*missing, describe_validation_errors(err.errors())])) from None
            if missing:
                raise InvalidField(missing[0])
        except ServingError as err:
            return error_response(err)
        return await self.classify_image(image, fields.model, fields.top_k)

    async def classify_image(self, image: bytes, model: str, top_k: int) -> JSONResponse:
        """/classify's answer, whichever parse the fields came from."""
        try:
            return json_answer(await self.models.classify_shared(model, image, top_k))
        except ServingError as err:
            return error_response(err)

    @bentoml.api(route="/classify_batch")
    def classify_batch(self, images: NpyFile, model: ModelName, top_k: TopK = DEFAULT_TOP_K) -> dict[str, Any]:
        """Classify an .npy upload of (N, C, H, W) images already in training form (uint8 or float32 in [0, 1])."""
        try:
            return json_answer(self.models.classify_array(model, images.read_bytes(), top_k))
        except ServingError as err:
            return error_response(err)

    @bentoml.api(route="/reconstruct")
    def reconstruct(self, image: ImageFile, model: ModelName = "fashion_reconstruction") -> Image.Image:
        """The autoencoder's reconstruction of an image, as a PNG."""
        try:
            served, output = self.models.get(model, "/reconstruct"), self.models.reconstruct(model, image.read_bytes())
        except ServingError as err:
            return error_response(err)
        png = io.BytesIO()
        output.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png",
                        headers={"X-Model-Version": str(served.version), "X-Provider": str(served.provider)})

    @bentoml.api(route="/heart")
    def heart(self, row: HeartRow, /) -> dict[str, Any]:
        """Probability of heart disease for one row of heart.csv's columns, as a JSON object."""
        try:
            return json_answer(self.models.predict_heart(row))
        except ServingError as err:
            return error_response(err)


def text_fields(api_name: str) -> type[BaseModel]:
    """The text fields of API `api_name`'s declared input, as a model that validates them as BentoML does;
    its file fields are left out (BentoML's would write each upload to a temporary file)."""
    spec = ModelService.apis[api_name].input_spec
    return create_model(f"{spec.__name__}Text", **{name: (info.annotation, info) for name, info
                                                    in spec.model_fields.items() if name not in spec.multipart_fields})


ClassifyFields = text_fields("classify")


@http.get("/docs", include_in_schema=False)
def docs() -> RedirectResponse:
    """BentoML's Swagger UI, at /, lists every endpoint with its schema."""
    return RedirectResponse("/")


def answered_from_the_guards_parse() -> dict[str, Any]:
    """The endpoints serving.guard answers itself, once the service has started (see the module's docstring).

    BentoML's CORS middleware runs inside the guard, so with CORS switched on in BentoML's configuration
    /classify goes through BentoML, whose answers then carry the CORS headers.
    """
    if BentoMLContainer.http.cors.enabled.get():
        return {}
    return {"/classify": bentoml.get_current_service().classify_form}


class _ClientErrorsAreNotServerErrors(logging.Filter):
    """BentoML logs a traceback for every request its validation refuses; those are the client's, not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ValidationError))


logging.getLogger("bentoml._internal.server.http_app").addFilter(_ClientErrorsAreNotServerErrors())
timeout.install()
ModelService.add_asgi_middleware(
    RequestGuard, max_body_bytes=MAX_BODY_BYTES, max_json_bytes=MAX_JSON_BYTES,
    uploads={api.route: frozenset(api.input_spec.multipart_fields)
             for api in ModelService.apis.values() if api.input_spec.multipart_fields},
    json_routes=frozenset(api.route for api in ModelService.apis.values() if not api.input_spec.multipart_fields),
    answers=answered_from_the_guards_parse, own_errors=(UI_PATH,))
