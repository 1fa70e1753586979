"""The framework ceiling for POST /classify: a BentoML service with the same upload signature that only decodes.

    bentoml serve bench.ceiling_service:CeilingService --port 3001     # from the repository root

What one BentoML worker can answer when inference, preprocessing and our middleware cost nothing:
`bench.serve` compares serving.service against it. /classify sends its constant answer as a ready
JSONResponse, as serving.service does; /classify_dict returns it as a dict, the idiomatic way, which
makes BentoML validate it and build its JSON schema on every request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bentoml
from PIL import Image
from starlette.responses import JSONResponse

# The shape of serving's /classify answer, with fixed values: JSON encoding costs about the same.
CONSTANT_ANSWER = {"model": "digits", "version": "v1", "label": "7", "index": 7,
                   "top": [{"label": "7", "probability": 1.0}], "provider": "CPUExecutionProvider"}


def decode(image: Path) -> None:
    with Image.open(image) as picture:
        picture.load()  # decode the pixels, as any real model must


@bentoml.service(name="classify-ceiling", traffic={"timeout": 60})
class CeilingService:
    """POST /classify and /classify_dict: multipart image, model, top_k -> a constant answer after decoding."""

    @bentoml.api(route="/classify")
    async def classify(self, image: Path, model: str, top_k: int = 3) -> dict[str, Any]:
        decode(image)
        return JSONResponse(CONSTANT_ANSWER)

    @bentoml.api(route="/classify_dict")
    async def classify_dict(self, image: Path, model: str, top_k: int = 3) -> dict[str, Any]:
        decode(image)
        return CONSTANT_ANSWER
