"""The WebSocket through the same link: a TCP proxy on 127.0.0.1 that stalls while the link is down.

A Wi-Fi outage does not close a TCP connection: its segments stop, both ends' sends pile up, and
nothing arrives until the link is back (or a side gives up). So the proxy forwards bytes both ways and,
while `Network.websocket_down()`, forwards nothing and accepts no new connection's bytes; what was
sent meanwhile arrives after, in order, as TCP delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .network import Network

log = logging.getLogger(__name__)


class TcpStall:
    """Listens on `host:port` (0: a free port) and forwards each connection to `target_port`."""

    def __init__(self, network: Network, target_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.network = network
        self.target_port = target_port
        self.host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self._port)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self.network.websocket_up()
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for w in (writer, up_writer):
            with contextlib.suppress(Exception):
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await self.network.websocket_up()
            writer.write(data)
            await writer.drain()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
