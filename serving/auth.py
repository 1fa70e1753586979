"""API keys: off by default; with $SERVING_API_KEYS_FILE set, every endpoint but /livez and /readyz needs one.

The file holds one key per line, or `sha256:<hex digest of the key>` so that the file need not hold the
key itself; blank lines and lines starting with # are skipped. A request shows its key in
`Authorization: Bearer KEY`; without a valid one it gets 401 with `WWW-Authenticate: Bearer` and
{"error": ...}. Keys are compared as sha256 digests, in constant time, against every stored digest.
A key in the URL's query string is refused (it would sit in logs and browser histories). /metrics stays
open when $SERVING_METRICS_OPEN is 1, for a scraper inside a cluster. The demo under /ui is guarded by
Gradio's own login page instead (a browser cannot send the header): any user name, an API key as the
password.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from .asgi import App, Message, Receive, Send, header, send_json

log = logging.getLogger("bentoml.serving")

KEYS_ENV = "SERVING_API_KEYS_FILE"
METRICS_OPEN_ENV = "SERVING_METRICS_OPEN"
HASHED = "sha256:"
OPEN_PATHS = frozenset({"/livez", "/readyz"})  # probes of an orchestrator, which holds no key
MAX_AUTHORIZATION_CHARS = 512  # "Bearer " and a key; a longer header is refused without hashing it
KEY_PARAMETERS = frozenset({"key", "api_key", "apikey", "token", "access_token", "authorization"})
CHALLENGE = (b"www-authenticate", b'Bearer realm="classic-dl"')


class KeyFileError(ValueError):
    """The keys file cannot be used; the message says why."""


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKeys:
    """The sha256 digests of the accepted keys."""

    digests: tuple[bytes, ...]

    @classmethod
    def read(cls, path: Path) -> "ApiKeys":
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise KeyFileError(f"cannot read the API keys file {path}: {err}") from None
        digests = []
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith(HASHED):
                try:
                    value = bytes.fromhex(line.removeprefix(HASHED))
                except ValueError:
                    value = b""
                if len(value) != hashlib.sha256().digest_size:
                    raise KeyFileError(f"{path}, line {number}: {HASHED} must be followed by 64 hex digits")
                digests.append(value)
            else:
                digests.append(digest(line))
        if not digests:
            raise KeyFileError(f"the API keys file {path} holds no key")
        return cls(tuple(digests))

    def valid(self, key: str) -> bool:
        """Whether `key` is one of the keys; compared with every stored digest, in constant time each."""
        presented = digest(key)
        found = False
        for stored in self.digests:
            found |= hmac.compare_digest(presented, stored)
        return found


def keys_from_env() -> ApiKeys | None:
    """The keys named by $SERVING_API_KEYS_FILE, or None when it is unset (keys are off)."""
    path = os.environ.get(KEYS_ENV)
    return ApiKeys.read(Path(path)) if path else None


def metrics_open() -> bool:
    return os.environ.get(METRICS_OPEN_ENV) == "1"


class KeyGuard:
    """The middleware: requests without a valid key get 401, except OPEN_PATHS, paths under `own_login`
    (an app with a login of its own) and, when `metrics_open`, /metrics."""

    def __init__(self, app: App, keys: ApiKeys | None, own_login: tuple[str, ...] = (), metrics_open: bool = False):
        self.app, self.keys = app, keys
        self.open_paths = OPEN_PATHS | ({"/metrics"} if metrics_open else set())
        self.own_login = tuple(prefix.rstrip("/") for prefix in own_login)

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if self.keys is None or scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        if any(scope["path"] == p or scope["path"].startswith(p + "/") for p in self.own_login):
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"").decode("latin-1")
        if any(name.lower() in KEY_PARAMETERS for name, _ in parse_qsl(query, keep_blank_values=True)):
            return await send_json(send, 400, {"error": "a key in the URL is refused: send it in the header "
                                                        "Authorization: Bearer KEY"})
        refusal = self._refusal(header(scope, b"authorization"))
        if refusal is not None:
            return await send_json(send, 401, {"error": refusal}, [CHALLENGE])
        await self.app(scope, receive, send)

    def _refusal(self, authorization: str) -> str | None:
        """Why `authorization` does not let the request in, or None when it holds a valid key."""
        if not authorization:
            return "this service needs an API key: send the header Authorization: Bearer KEY"
        scheme, _, key = authorization.partition(" ")
        if len(authorization) > MAX_AUTHORIZATION_CHARS or scheme.lower() != "bearer" or not key.strip():
            return "send the API key as Authorization: Bearer KEY"
        if not self.keys.valid(key.strip()):
            return "the API key is not valid"
        return None
