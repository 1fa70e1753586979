"""serving/bentoml_compat.py's assumptions about BentoML's private modules, checked against the installed BentoML."""

from __future__ import annotations

import logging
import os
import tempfile

import bentoml
import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.server.http import instruments, traffic

from serving import bentoml_compat as compat
from serving.service import ModelService


def test_it_was_written_for_the_installed_bentoml(caplog: pytest.LogCaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert bentoml.__version__ == compat.WRITTEN_FOR
    compat.check_version()
    assert "written for" not in caplog.text
    monkeypatch.setattr(bentoml, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING, logger="bentoml.serving"):
        compat.check_version()
    assert "written for bentoml 1.4.39; 9.9.9 is installed" in caplog.text


def test_an_apis_file_fields_and_input_model_are_read_from_its_input_spec() -> None:
    classify, heart = ModelService.apis["classify"], ModelService.apis["heart"]
    assert compat.file_fields(classify) == {"image"} and compat.file_fields(heart) == frozenset()
    assert {"image", "model", "top_k"} <= set(compat.input_model(classify).model_fields)


def test_the_service_app_is_built_with_the_replaced_middlewares() -> None:
    """The timeout and the metrics middleware are module globals that BentoML reads when it builds an app."""
    assert traffic.TimeoutMiddleware is compat.TimeoutMiddleware
    assert instruments.RunnerTrafficMetricsMiddleware.__name__ == "KnownRouteMetrics"
    assert instruments.RunnerTrafficMetricsMiddleware.wrapped.__module__ == instruments.__name__
    built = [m.cls for m in ModelService.to_asgi().user_middleware]
    assert compat.TimeoutMiddleware in built


def test_route_labels_name_routes_mounts_and_nothing_else() -> None:
    label = compat.route_labeller(["/classify", "/models"], prefixes=["/ui"])
    assert [label(p) for p in ("/classify", "/models", "/metrics", "/ui", "/ui/x/y", "/uix", "/a" * 50)] == [
        "/classify", "/models", "/metrics", "/ui", "/ui", compat.OTHER_PATHS, compat.OTHER_PATHS]


def test_the_prometheus_folder_is_named_after_the_serving_process() -> None:
    assert BentoMLContainer.prometheus_multiproc_dir.get() == os.path.join(
        tempfile.gettempdir(), f"bentoml-prometheus-{os.getpid()}")


def test_validation_tracebacks_are_filtered_on_bentomls_own_logger() -> None:
    from bentoml._internal.server import http_app  # its log_exception logs every refused request

    assert http_app.logger.name == compat.HTTP_APP_LOGGER

    assert compat.HTTP_APP_LOGGER in logging.Logger.manager.loggerDict
    assert any(isinstance(f, compat._ClientErrorsAreNotServerErrors)
               for f in logging.getLogger(compat.HTTP_APP_LOGGER).filters)
