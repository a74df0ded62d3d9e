"""The WebSocket upgrade check: path, api-version, model or agent, credentials, before anything is accepted.

Voice Live refuses a bad upgrade with a plain HTTP status (404, 400, 401, 429...) instead of accepting and
then closing, and the agent maps those statuses to different actions (fix the config, back off, retry).
The emulator answers the same way, from `process_request`, so the client's handling of each status can be
tested. Credentials are compared in constant time and never logged or stored.
"""

from __future__ import annotations

import email.utils
import hmac
import http
import json
import logging
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

from ..voicelive.auth import Secret
from ..voicelive.protocol import CALLS_PATH
from .settings import EmulatorSettings

log = logging.getLogger(__name__)

UNAUTHORIZED_MESSAGE = "Access denied due to invalid subscription key or wrong API endpoint."
#: Query keys never copied into the call record: they carry credentials.
SECRET_QUERY_KEYS = frozenset({"api-key", "authorization"})


@dataclass(frozen=True)
class Rejection:
    """An HTTP answer instead of the upgrade."""

    status: int
    code: str
    message: str
    retry_after_s: int | None = None

    def response(self) -> Response:
        body = json.dumps({"error": {"code": self.code, "message": self.message}}).encode()
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", "application/json"),
            ]
        )
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Error"
        return Response(self.status, reason, headers, body)


@dataclass(frozen=True)
class Upgrade:
    """What an accepted upgrade asked for, without its credential."""

    api_version: str
    model: str | None
    agent_name: str | None
    auth_kind: Literal["api-key", "bearer"]
    auth_via: Literal["header", "query"]
    #: The query, minus credential keys.
    query: dict[str, str] = field(default_factory=dict)


def _same(given: str, expected: Secret) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.reveal().encode("utf-8"))


def _credential(
    headers: Headers, query: dict[str, str]
) -> tuple[Literal["api-key", "bearer"], Literal["header", "query"], str] | None:
    """The credential the client presented (kind, where, value), header first, or None."""
    key = headers.get("api-key")
    if key:
        return "api-key", "header", key
    auth = headers.get("Authorization")
    if auth and auth[:7].lower() == "bearer " and auth[7:].strip():
        return "bearer", "header", auth[7:].strip()
    key = query.get("api-key")
    if key:
        return "api-key", "query", key
    auth = query.get("authorization")
    if auth and auth[:7].lower() == "bearer " and auth[7:].strip():
        return "bearer", "query", auth[7:].strip()
    return None


def _authorized(kind: str, value: str, settings: EmulatorSettings) -> bool:
    if settings.api_key is None and settings.bearer_token is None:
        return True  # any non-empty credential
    if kind == "api-key":
        return settings.api_key is not None and _same(value, settings.api_key)
    return settings.bearer_token is not None and _same(value, settings.bearer_token)


def missing_header(headers: Headers, required: dict[str, str]) -> tuple[str, str] | None:
    """The first required (name, value) the request lacks. Names match case-insensitively; a header
    satisfies a value if it equals it or lists it among comma-separated items ("a=V1Preview, b=V1Preview")."""
    for name, value in required.items():
        items = [item.strip() for given in headers.get_all(name) for item in given.split(",")]
        if value.strip() not in items:
            return name, value
    return None


def check_upgrade(target: str, headers: Headers, settings: EmulatorSettings) -> Rejection | Upgrade:
    """Decide on one upgrade request (`target` is the request path with its query)."""
    parts = urlsplit(target)
    if parts.path.rstrip("/") != CALLS_PATH:
        return Rejection(404, "NotFound", "Resource not found.")
    faults = settings.faults
    if faults.reject_status is not None:
        status = int(faults.reject_status)  # a CLI may hand over 429.0
        retry = 1 if status in (429, 503) else None
        return Rejection(status, "EmulatedFault", f"Emulated fault: HTTP {status}.", retry)
    # parse_qs decodes %20 and '+'; keys are matched case-insensitively like the service's.
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    cred = _credential(headers, query)
    if faults.refuse_auth or cred is None or not _authorized(cred[0], cred[2], settings):
        if faults.refuse_auth:
            why = "fault refuse_auth"
        elif cred is None:
            # A browser's page sees this refusal only as close code 1006, and cannot set headers.
            why = "no credential (a browser cannot set WebSocket headers: it puts api-key= in the query)"
        else:
            why = "wrong credential"
        log.info("upgrade refused: %s", why)
        return Rejection(401, "Unauthorized", UNAUTHORIZED_MESSAGE)
    version = query.get("api-version", "")
    if version not in settings.api_versions:
        supported = ", ".join(settings.api_versions)
        return Rejection(
            400,
            "BadRequest",
            f"The api-version '{version}' is not supported on {CALLS_PATH}. Supported: {supported}.",
        )
    missing = missing_header(headers, settings.require_headers)
    if missing is not None:
        name, value = missing
        return Rejection(
            400,
            "BadRequest",
            f"This endpoint needs the header '{name}: {value}' (api-version {version}); the request "
            f"{'had it with another value' if name in headers else 'did not send it'}.",
        )
    model = query.get("model") or None
    agent = query.get("agent-name") or None
    if model is None and not (agent and query.get("agent-project-name")):
        return Rejection(400, "BadRequest", "The query must name a model, or an agent-name and an agent-project-name.")
    return Upgrade(
        api_version=version,
        model=model,
        agent_name=agent,
        auth_kind=cred[0],
        auth_via=cred[1],
        query={k: v for k, v in query.items() if k not in SECRET_QUERY_KEYS},
    )
