"""One emulator's network: its profile, the link's state (up, or dropped for a while) and what it took.

The emulator owns one `Network`; each call gets a `udp.UdpRelay` from it (both directions of the call's
datagrams pass through it), and with a profile that drops the WebSocket too the emulator's port is a
`tcp.TcpStall` in front of the real one. A link drop starts when the emulator says a reply began
(`reply_started`), once per `Network` (the first reply), so a bench or test knows when it comes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .profiles import Impairment, Profile, profile

log = logging.getLogger(__name__)


@dataclass
class LinkCounters:
    """What the network did to one direction of the calls' datagrams (all calls of this network)."""

    sent: int = 0
    lost: int = 0
    lost_in_drop: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "lost": self.lost, "lost_in_drop": self.lost_in_drop}


class Network:
    """Shared by the emulator's relays: the profile, the seed, the drop and the counters."""

    def __init__(self, name: str | Profile = "clean", seed: int = 1) -> None:
        self.profile: Profile = name if isinstance(name, Profile) else profile(name)
        self.seed = seed
        self.drop_start: float | None = None
        self.drop_end: float | None = None
        self._calls = 0
        self._live: list[Impairment] = []  # the open relays' schedules, for `switch`
        #: to the agent (the reply) and from it (the microphone), over all calls
        self.down = LinkCounters()
        self.up = LinkCounters()

    @property
    def impaired(self) -> bool:
        return self.profile.impaired

    def impairments(self) -> tuple[Impairment, Impairment]:
        """A new call's two schedules (to the agent, from the agent), each seeded for this call."""
        self._calls += 1
        base = self.seed * 1000 + self._calls * 2
        pair = Impairment(self.profile, base), Impairment(self.profile, base + 1)
        self._live.extend(pair)
        return pair

    def release(self, schedules: tuple[Impairment, ...]) -> None:
        """A relay closed: its schedules no longer follow `switch`."""
        self._live = [s for s in self._live if all(s is not x for x in schedules)]

    def switch(self, name: str | Profile) -> None:
        """The network changes (a microwave oven starts, or stops): new datagrams of every open call and
        every later one follow `name`. The link's drop, if one was scheduled, is left as it is."""
        self.profile = name if isinstance(name, Profile) else profile(name)
        for schedule in self._live:
            schedule.switch(self.profile)
        log.info("network switched to %s (%s)", self.profile.name, self.profile.description)

    def dropping(self, now: float | None = None) -> bool:
        if self.drop_start is None or self.drop_end is None:
            return False
        now = time.monotonic() if now is None else now
        return self.drop_start <= now < self.drop_end

    def websocket_down(self) -> bool:
        return self.profile.drop_websocket and self.dropping()

    async def websocket_up(self) -> None:
        """Wait while the link (the WebSocket's too) is down."""
        while self.websocket_down():
            assert self.drop_end is not None
            await asyncio.sleep(max(0.01, self.drop_end - time.monotonic()))

    def reply_started(self) -> None:
        """A reply's first frame went out: the first one schedules the profile's drop."""
        p = self.profile
        if p.drop_s <= 0 or self.drop_start is not None:
            return
        self.drop_start = time.monotonic() + p.drop_after_s
        self.drop_end = self.drop_start + p.drop_s
        log.info(
            "network %s: link drop of %.1f s in %.1f s%s",
            p.name,
            p.drop_s,
            p.drop_after_s,
            " (the WebSocket too)" if p.drop_websocket else "",
        )
