"""The test pages over HTTP on 127.0.0.1, and the relay that lets a page play Voice Live's side of a call.

One websockets server does both: a plain GET for a file of this folder gets the file (so the pages have
an http://127.0.0.1 origin, a secure context where getUserMedia works), and WebSocket upgrades are
relayed. The relay pairs a caller on `/voice-live/realtime/calls` (the agent's client, which must present
the relay's key like it would Voice Live's) with the page connected on `/service`, and forwards every
message both ways unchanged: the caller's `rtc.call.sdp.create` reaches the page, the page's
`session.created` and `rtc.call.sdp.created` reach the caller.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import mimetypes
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agent.voicelive.protocol import CALLS_PATH

HERE = Path(__file__).parent
PAGE_FILES = ("client.html", "service.html", "common.js")
SERVICE_PATH = "/service"

#: websockets logs request headers at DEBUG, the caller's key among them: this logger stops at INFO.
WS_LOG = logging.getLogger("tests.browser.server")
WS_LOG.setLevel(logging.INFO)


def _response(status: int, body: bytes, content_type: str = "text/plain") -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class PageServer:
    """`async with PageServer(key) as server:` then `server.page_url("client.html")`."""

    def __init__(self, relay_key: str | None = None) -> None:
        self.relay_key = relay_key
        self._server: Server | None = None
        self._page: ServerConnection | None = None
        self._page_ready = asyncio.Event()
        #: What the relay forwarded, for the test to check: (direction, message).
        self.relayed: list[tuple[str, str | bytes]] = []

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def page_url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    @property
    def ws_origin(self) -> str:
        return self.origin.replace("http://", "ws://")

    async def __aenter__(self) -> PageServer:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._process_request, logger=WS_LOG, compression=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if path == SERVICE_PATH:
                return None
            if path.rstrip("/") == CALLS_PATH and self.relay_key is not None:
                given = request.headers.get("api-key", "")
                if hmac.compare_digest(given.encode(), self.relay_key.encode()):
                    return None
                return _response(401, b'{"error": {"code": "Unauthorized"}}', "application/json")
            return _response(404, b"no such WebSocket")
        name = path.lstrip("/")
        if name not in PAGE_FILES:
            return _response(404, b"not found")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return _response(200, (HERE / name).read_bytes(), f"{content_type}; charset=utf-8")

    async def wait_page(self, timeout: float = 5.0) -> None:
        """Until the service page has connected to `/service`."""
        await asyncio.wait_for(self._page_ready.wait(), timeout)

    async def _handle(self, connection: ServerConnection) -> None:
        if urlsplit(connection.request.path).path == SERVICE_PATH:  # type: ignore[union-attr]
            self._page = connection
            self._page_ready.set()
            await connection.wait_closed()
            return
        await self.wait_page()
        page = self._page
        assert page is not None

        async def pump(source: ServerConnection, sink: ServerConnection, direction: str) -> None:
            try:
                async for message in source:
                    self.relayed.append((direction, message))
                    await sink.send(message)
            except ConnectionClosed:
                pass

        tasks = [
            asyncio.create_task(pump(connection, page, "to page")),
            asyncio.create_task(pump(page, connection, "to caller")),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
