"""A BentoML service that only installs serving.http_limits: shows the limits reach `bentoml serve`'s uvicorn.

    bentoml serve tests.http_limits_service:HeadLimitsService      # from the repository root
"""

from __future__ import annotations

import bentoml

from serving import http_limits

http_limits.install()  # where serving.service calls it too, at import, before the worker builds uvicorn's Config


@bentoml.service(name="head-limits")
class HeadLimitsService:
    """POST /echo answers the JSON it is given."""

    @bentoml.api(route="/echo")
    def echo(self, text: str) -> str:
        return text
