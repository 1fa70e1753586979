"""What the service answers a request it cannot serve: an HTTP status and a message for the client."""

from __future__ import annotations

from typing import Any, Iterable


class ServingError(Exception):
    """A request refused with `status`; str(error) says what to change."""

    status = 400


class BadInput(ServingError):
    status = 400


class WrongKind(BadInput):
    """A model asked to do what it does not (a classifier given a reconstruction); `kind` is what it does."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class UnknownModel(ServingError):
    status = 404


class InvalidField(ServingError):
    """A request field with a wrong value; the message starts with the field's name."""

    status = 422


class NotReady(ServingError):
    """The model exists but failed to load or verify."""

    status = 503


class Overloaded(ServingError):
    """Too much at once for the worker (its decoding memory): the same request may succeed in a moment."""

    status = 503
    retry_after_s = 1  # for a Retry-After header


MAX_NAME_CHARS = 100  # a field name quoted back to the client is cut to this many characters


def describe_validation_errors(errors: Iterable[dict[str, Any]]) -> str:
    """'Age: Input should be ...; Extra: Extra inputs are not permitted', from pydantic's error list (field
    names a client made up are cut: a JSON body may hold one of 60 KB)."""
    def where(error: dict[str, Any]) -> str:
        name = ".".join(str(p) for p in error.get("loc", ()) if p != "root") or "body"
        return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "..."

    return "; ".join(f"{where(e)}: {e.get('msg', 'invalid')}" for e in errors)
