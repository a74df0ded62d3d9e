"""The call's datagrams through a lossy, jittery link: a UDP relay on 127.0.0.1, in user space.

The relay has two sockets. The agent is told (in the SDP answer) that the emulator's ICE candidate is the
relay's `agent_side`; the emulator is told (in the SDP offer it applies) that the agent's candidate is the
relay's `emulator_side`. So every datagram of the call (ICE checks and consent, DTLS, SRTP, SRTCP) crosses
the relay, each through the profile's schedule for its direction (`profiles.Impairment`): lost, or held
for its drawn delay (reordered when a later one draws less). Both peers see only the relay, so ICE pairs
form through it whatever either side gathers. Loopback only: both sockets bind 127.0.0.1 and forward only
to the addresses the SDPs named, which the emulator has already restricted to loopback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .network import LinkCounters, Network
from .profiles import Impairment

log = logging.getLogger(__name__)

Address = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Any) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._on_datagram = on_datagram

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._on_datagram(data, addr)


class UdpRelay:
    """One call's relay. `open()` it, rewrite the SDPs with `relay_offer` / `relay_answer`, `close()` it."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self._down, self._up = network.impairments()
        self._agent_side: _Side | None = None
        self._emulator_side: _Side | None = None
        self.agent: Address | None = None  # the agent's real address (from its offer, then as seen)
        self.emulator: Address | None = None  # the emulator's real address (from its answer)
        self._pending: set[asyncio.TimerHandle] = set()
        self._closed = False

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._agent_side = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_agent), local_addr=("127.0.0.1", 0)
        )
        _, self._emulator_side = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_emulator), local_addr=("127.0.0.1", 0)
        )

    @staticmethod
    def _address(side: _Side | None) -> Address:
        assert side is not None and side.transport is not None, "open() the relay first"
        host, port = side.transport.get_extra_info("sockname")[:2]
        return host, port

    def relay_offer(self, offer: str) -> str:
        """The agent's offer as the emulator must see it: its candidate is the relay's emulator side."""
        sdp, self.agent = rewrite_candidates(offer, self._address(self._emulator_side))
        return sdp

    def relay_answer(self, answer: str) -> str:
        """The emulator's answer as the agent must see it: its candidate is the relay's agent side."""
        sdp, self.emulator = rewrite_candidates(answer, self._address(self._agent_side))
        return sdp

    def _from_agent(self, data: bytes, addr: Address) -> None:
        self.agent = addr
        self._forward(data, self._up, self.network.up, self._emulator_side, self.emulator)

    def _from_emulator(self, data: bytes, addr: Address) -> None:
        self._forward(data, self._down, self.network.down, self._agent_side, self.agent)

    def _forward(
        self, data: bytes, schedule: Impairment, counters: LinkCounters, out: _Side | None, to: Address | None
    ) -> None:
        if self._closed or out is None or out.transport is None or to is None:
            return
        counters.sent += 1
        dropping = self.network.dropping(time.monotonic())
        delay = schedule.next(dropping)
        if delay is None:
            counters.lost += 1
            counters.lost_in_drop += dropping
            return
        if delay <= 0:
            out.transport.sendto(data, to)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def send() -> None:
            self._pending.discard(handle)
            if not self._closed and out.transport is not None:
                out.transport.sendto(data, to)

        handle = loop.call_later(delay, send)
        self._pending.add(handle)

    def close(self) -> None:
        if not self._closed:
            self.network.release((self._down, self._up))
        self._closed = True
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        for side in (self._agent_side, self._emulator_side):
            if side is not None and side.transport is not None:
                side.transport.close()


def rewrite_candidates(sdp: str, relay: Address) -> tuple[str, Address | None]:
    """`sdp` with its first UDP ICE candidate moved to `relay` and the others left out (one path: the
    relay's), and the address that candidate had."""
    out: list[str] = []
    original: Address | None = None
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if original is not None or len(fields) < 8 or fields[2].lower() != "udp":
                continue
            original = (fields[4], int(fields[5]))
            fields[4], fields[5] = relay[0], str(relay[1])
            line = " ".join(fields)
        out.append(line)
    return "\r\n".join(out) + "\r\n", original
