"""ICE settings for aiortc: which servers to ask, and which host addresses to offer.

aioice leaves 127.0.0.1 out when it gathers host candidates, so two aiortc peers on one machine cannot
reach each other over loopback. The emulator, the demo, the tests and the benchmarks must talk over
127.0.0.1 only (never the machine's other addresses), so the project pins host candidates to loopback
behind one explicit setting (`network.ice_loopback`), never as a hidden default.

aioice reads its host addresses from a module function, so the pin is a patch of that function. It is
reference-counted and undone when the last user leaves: a process that pins for one call (a test) and
then makes a normal call gets normal candidates again.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

LOOPBACK = ("127.0.0.1",)


class _HostAddressPin:
    """The one patch of `aioice.ice.get_host_addresses`, shared by every pinned user in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._addresses: tuple[str, ...] = ()
        self._original = aioice.ice.get_host_addresses

    def _pinned(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in self._addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    @contextlib.contextmanager
    def pin(self, addresses: Sequence[str]) -> Iterator[None]:
        with self._lock:
            if self._users and tuple(addresses) != self._addresses:
                raise RuntimeError(
                    f"ICE host addresses already pinned to {self._addresses}, cannot pin to {tuple(addresses)}"
                )
            self._addresses = tuple(addresses)
            self._users += 1
            aioice.ice.get_host_addresses = self._pinned
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    aioice.ice.get_host_addresses = self._original


_PIN = _HostAddressPin()


def host_addresses(pinned: Sequence[str] | None) -> contextlib.AbstractContextManager[None]:
    """Context in which aiortc gathers host candidates only on `pinned` (or normally, if None).

    Gathering happens inside `setLocalDescription`, so hold this around that call.
    """
    if not pinned:
        return contextlib.nullcontext()
    return _PIN.pin(pinned)


def rtc_configuration(ice_servers: Sequence[dict[str, object]]) -> RTCConfiguration:
    """An RTCConfiguration with exactly the configured ICE servers. An empty list means none at all:
    aiortc would otherwise ask a public STUN server, which a device should not do unasked."""
    servers = [
        RTCIceServer(
            urls=list(s["urls"]) if isinstance(s["urls"], list | tuple) else str(s["urls"]),  # type: ignore[arg-type]
            username=s.get("username"),  # type: ignore[arg-type]
            credential=s.get("credential"),  # type: ignore[arg-type]
        )
        for s in ice_servers
    ]
    return RTCConfiguration(iceServers=servers)
