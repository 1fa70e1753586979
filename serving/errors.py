"""What the service answers a request it cannot serve: an HTTP status and a message for the client."""

from __future__ import annotations

from typing import Any, Iterable


class ServingError(Exception):
    """A request refused with `status`; str(error) says what to change."""

    status = 400


class BadInput(ServingError):
    status = 400


class UnknownModel(ServingError):
    status = 404


class InvalidField(ServingError):
    """A request field with a wrong value; the message starts with the field's name."""

    status = 422


class NotReady(ServingError):
    """The model exists but failed to load or verify."""

    status = 503


def describe_validation_errors(errors: Iterable[dict[str, Any]]) -> str:
    """'Age: Input should be ...; Extra: Extra inputs are not permitted', from pydantic's error list."""
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'root') or 'body'}: {e.get('msg', 'invalid')}"
                     for e in errors)
