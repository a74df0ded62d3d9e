"""The emulator's WebSocket server: `Emulator` listens on 127.0.0.1 and runs one `EmulatorCall` per upgrade.

Upgrades are checked in `process_request`, before anything is accepted, so a refused client gets the
HTTP status the real service would send (see `handshake`). `stop()` ends every call and the server and
leaves no task behind, so tests can start and stop an emulator per test.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from ..netsim.network import Network
from ..netsim.tcp import TcpStall
from ..voicelive.protocol import CALLS_PATH
from .handshake import Rejection, Upgrade, check_upgrade
from .record import write_call_record
from .session import EmulatorCall
from .settings import EmulatorSettings, Faults

log = logging.getLogger(__name__)

#: Incoming WebSocket message limit. Client events are small; the SDK uses 4 MiB, so do we.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

#: websockets logs every request line and header at DEBUG, credentials included (`api-key`, `Authorization`,
#: `?api-key=`). The emulator hands it a logger of its own that drops everything below INFO, so no debug
#: setting ever writes a key or token into a log (and above INFO it follows the root level as usual).
WS_LOG = logging.getLogger(__name__ + ".websockets")
WS_LOG.addFilter(lambda record: record.levelno >= logging.INFO)


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    """Take `realtime` if the client offers it (the browser sample does), and go without otherwise."""
    return Subprotocol("realtime") if "realtime" in offered else None


class Emulator:
    """A local stand-in for Voice Live's WebRTC `/calls` endpoint."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.calls: list[EmulatorCall] = []
        self._server: Server | None = None
        self._upgrades: dict[ServerConnection, Upgrade] = {}
        #: The simulated network between the clients and the emulator (`settings.network`).
        self.network = Network(settings.network, settings.network_seed)
        self._stall: TcpStall | None = None

    @property
    def faults(self) -> Faults:
        return self.settings.faults

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        if self._stall is not None:
            return self._stall.port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """`ws://HOST:PORT`: the client appends the calls path and its query."""
        scheme = "wss" if self.settings.tls_cert else "ws"
        return f"{scheme}://{self.settings.host}:{self.port}"

    @property
    def calls_url(self) -> str:
        """The full `/calls` URL without a query."""
        return self.url + CALLS_PATH

    async def start(self) -> None:
        if self._server is not None:
            return
        stalls = self.network.profile.drop_websocket
        self._server = await serve(
            self._handle,
            self.settings.host,
            0 if stalls else self.settings.port,
            process_request=self._process_request,
            select_subprotocol=_select_subprotocol,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            logger=WS_LOG,
            ssl=self._ssl_context(),
        )
        if stalls:  # the WebSocket crosses the simulated link too
            inner = int(self._server.sockets[0].getsockname()[1])
            self._stall = TcpStall(self.network, inner, self.settings.host, self.settings.port)
            await self._stall.start()
        if self.network.impaired:
            log.info("simulated network: %s (%s)", self.network.profile.name, self.network.profile.description)
        log.info("Voice Live emulator listening on %s", self.url)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.settings.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        return ctx

    async def stop(self) -> None:
        """Close every call, then the server."""
        await asyncio.gather(*(call.close(1001, "emulator stopping") for call in self.calls))
        if self._stall is not None:
            await self._stall.stop()
            self._stall = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._upgrades.clear()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        decision = check_upgrade(request.path, request.headers, self.settings)
        if isinstance(decision, Rejection):
            log.info("upgrade refused with HTTP %d (%s)", decision.status, decision.code)
            return decision.response()
        self._upgrades[connection] = decision
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        upgrade = self._upgrades.pop(connection)
        call = EmulatorCall(connection, upgrade, self.settings, self.network)
        self.calls.append(call)
        try:
            await call.run()
        except Exception:  # never let websockets log a handler failure for a call the emulator ends
            log.exception("emulated call failed")
            await call.close(1011, "emulator error")
        finally:
            if self.settings.record_dir is not None:
                path = write_call_record(call, self.settings.record_dir, self.calls.index(call))
                log.info("call recorded in %s", path)


async def serve_forever(settings: EmulatorSettings) -> None:
    """Run an emulator until cancelled (the `voice-agent emulator` command)."""
    async with Emulator(settings) as emulator:
        log.info(
            "Voice Live emulator ready: %s%s?api-version=%s&model=...",
            emulator.url,
            CALLS_PATH,
            settings.api_versions[0],
        )
        await asyncio.Event().wait()
