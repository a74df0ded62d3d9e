"""The WebSocket control channel of a Voice Live WebRTC call.

It carries the SDP offer and answer (`rtc.call.sdp.create` / `rtc.call.sdp.created`), session control and
every client event, and some server events. This module builds the URL, authenticates the upgrade, sorts
connection failures into transient and permanent ones (see `errors.py`), and sends and receives JSON.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .auth import CredentialError, Credentials
from .errors import AuthError, PermanentError, RateLimitedError, TransientError, redact
from .protocol import CALLS_PATH

log = logging.getLogger(__name__)

#: Larger than any message the agent will parse (the parser skips anything over MAX_EVENT_BYTES), so an
#: oversized event is logged and skipped instead of websockets closing the whole call with 1009.
WS_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """Where and how to call: everything but the credential."""

    endpoint: str
    api_version: str
    model: str | None = None
    agent_name: str | None = None
    agent_project_name: str | None = None
    agent_version: str | None = None
    ca_file: Path | None = None
    #: More query parameters and upgrade headers (preview features behind a header, a newer api-version's
    #: needs), so a user can follow the service without a new release. Never a credential.
    extra_query: tuple[tuple[str, str], ...] = ()
    extra_headers: tuple[tuple[str, str], ...] = ()

    def url(self) -> str:
        """`wss://host/voice-live/realtime/calls?api-version=...&model=...` (or the agent parameters).

        An `https://` endpoint (as the Azure portal shows it) becomes `wss://`. Plain `ws://` is accepted
        only for a loopback host (the emulator): a key must never cross a network in clear text.
        """
        parts = urlsplit(self.endpoint.strip())
        scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
        if scheme not in ("wss", "ws") or not parts.hostname:
            raise PermanentError(f"endpoint {self.endpoint!r} is not a wss:// or https:// URL")
        if scheme == "ws" and not _is_loopback(parts.hostname):
            raise PermanentError(f"endpoint {self.endpoint!r}: ws:// is only allowed to a loopback host")
        path = parts.path.rstrip("/")
        if not path.endswith(CALLS_PATH):
            path += CALLS_PATH
        query: dict[str, str] = {"api-version": self.api_version}
        if self.agent_name:
            query["agent-name"] = self.agent_name
            query["agent-project-name"] = self.agent_project_name or ""
            if self.agent_version:
                query["agent-version"] = self.agent_version
        if self.model:
            query["model"] = self.model
        for name, value in self.extra_query:
            query.setdefault(name, value)
        return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))

    def ssl_context(self) -> ssl.SSLContext | None:
        """Certificates are always verified; `ca_file` adds a private CA (the emulator's, or a proxy's)."""
        if not self.url().startswith("wss://"):
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger handed to websockets: at DEBUG it logs every request header, `api-key` and
    `Authorization` included, so each line is rendered and stripped of the secrets first."""

    def __init__(self, logger: logging.Logger, secrets: list[str]) -> None:
        super().__init__(logger, {})
        self._secrets = secrets

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            kwargs.setdefault("stacklevel", 2)
            self.logger.log(level, "%s", redact(text, self._secrets), **kwargs)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ControlChannel:
    """One WebSocket to `/voice-live/realtime/calls`. Open it with `ControlChannel.connect`."""

    def __init__(self, ws: ClientConnection, request_id: str | None) -> None:
        self._ws = ws
        self.request_id = request_id
        self._send_lock = asyncio.Lock()

    @classmethod
    async def connect(
        cls,
        target: Target,
        credentials: Credentials,
        timeout_s: float,
        send_request_id: bool = True,
    ) -> ControlChannel:
        """Open and authenticate the WebSocket, or raise a classified `VoiceLiveError`."""
        url = target.url()
        try:
            headers = await credentials.headers()
        except CredentialError as exc:
            raise AuthError(str(exc)) from None
        secrets = [v.removeprefix("Bearer ") for v in headers.values()]
        request_id = str(uuid.uuid4()) if send_request_id else None
        for name, value in target.extra_headers:
            headers.setdefault(name, value)
        if request_id:
            headers["x-ms-client-request-id"] = request_id
        host = urlsplit(url).hostname
        log.info(
            "connecting to %s (%s%s)",
            url,
            credentials.describe(),
            f", x-ms-client-request-id {request_id}" if request_id else "",
        )
        try:
            ws = await asyncio.wait_for(
                websockets.connect(
                    url,
                    additional_headers=headers,
                    ssl=target.ssl_context(),
                    open_timeout=None,
                    max_size=WS_MAX_MESSAGE_BYTES,
                    ping_interval=20,
                    ping_timeout=20,
                    user_agent_header="voice-agent (Raspberry Pi; aiortc)",
                    logger=RedactingLogger(logging.getLogger("agent.voicelive.websocket"), secrets),
                ),
                timeout_s,
            )
        except InvalidStatus as exc:
            raise _status_error(exc, secrets) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentError(
                f"TLS certificate of {host} not trusted ({exc.verify_message}); "
                "set voicelive.ca_file if it is signed by a private CA"
            ) from None
        except socket.gaierror as exc:
            raise TransientError(f"cannot resolve {host}: {exc.strerror}") from None
        except TimeoutError:
            raise TransientError(f"no connection to {host} within {timeout_s:g} s") from None
        except (OSError, InvalidHandshake) as exc:
            raise TransientError(f"cannot connect to {host}: {redact(str(exc), secrets)}") from None
        return cls(ws, request_id)

    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event. Raises TransientError if the channel is closed."""
        text = json.dumps(event, separators=(",", ":"))
        try:
            async with self._send_lock:
                await self._ws.send(text)
        except ConnectionClosed as exc:
            raise TransientError(f"control channel closed ({_close_text(exc)})") from None
        log.debug("sent %s %s", event.get("type"), event.get("event_id"))

    async def messages(self) -> AsyncIterator[str | bytes]:
        """Raw messages until the channel closes (normally or not)."""
        try:
            async for message in self._ws:
                yield message
        except ConnectionClosed as exc:
            log.info("control channel closed: %s", _close_text(exc))

    @property
    def close_reason(self) -> str:
        code = self._ws.close_code
        return f"code {code} {self._ws.close_reason or ''}".strip() if code is not None else "open"

    async def close(self) -> None:
        await self._ws.close()


def _close_text(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    return f"code {rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"


def _status_error(exc: InvalidStatus, secrets: list[str]) -> Exception:
    """An HTTP refusal of the upgrade, with the service's own error text (its `error.code` and
    `error.message` when the body is JSON) so the user sees the pattern Azure documents."""
    response = exc.response
    status = response.status_code
    body = bytes(response.body or b"")[:2000].decode("utf-8", "replace")
    detail = body.strip()
    try:
        err = json.loads(body).get("error", {})
        if isinstance(err, dict) and (err.get("code") or err.get("message")):
            detail = f"{err.get('code', '')}: {err.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    detail = redact(detail[:300], secrets)
    message = f"HTTP {status} {response.reason_phrase}" + (f" ({detail})" if detail else "")
    if status in (401, 403):
        return AuthError(f"credentials refused: {message}; check the API key or token and its role")
    if status == 429:
        retry = response.headers.get("Retry-After")
        try:
            retry_s = float(retry) if retry else None
        except ValueError:
            retry_s = None
        return RateLimitedError(f"rate limited: {message}", retry_s)
    if status in (400, 404):
        return PermanentError(f"endpoint refused the call: {message}; check endpoint, api_version and model")
    return TransientError(f"service error: {message}")
