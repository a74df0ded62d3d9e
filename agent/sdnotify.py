"""systemd's notify protocol (sd_notify), spoken directly over a unix datagram socket.

A `Type=notify` service tells systemd it is READY, feeds the watchdog (`WATCHDOG=1`), reports STOPPING
and a one-line STATUS that `systemctl status` shows. The protocol is one datagram of newline-separated
`KEY=VALUE` lines to the socket named by `$NOTIFY_SOCKET`; a name starting with '@' is in the abstract
namespace (the '@' becomes a NUL byte). That is all libsystemd does for this, so no dependency is needed.

Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op, so the service runs the same by hand.
A failed send is logged once and never raised: losing a notification must not stop the agent (systemd
then restarts it through the watchdog, which is the right outcome for a wedged notify path anyway).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


def socket_address(name: str) -> str | bytes:
    """The `connect()` address for a `$NOTIFY_SOCKET` value: a path, or an abstract name ('@...')."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


@dataclass
class Notifier:
    """Sends sd_notify messages to `socket_name` (None: do nothing)."""

    socket_name: str | None
    sent: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    """The last messages sent, in order (for tests and `--verbose` runs): a ring, since the watchdog
    pings every few seconds for as long as the service runs."""
    _sock: socket.socket | None = field(default=None, repr=False)
    _warned: bool = field(default=False, repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.socket_name)

    def notify(self, **fields: str | int) -> bool:
        """Send `KEY=VALUE` lines (keys upper-cased); True if systemd got the datagram."""
        if not self.socket_name:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(1.0)  # the manager reads at once; never hang the event loop on it
            self._sock.sendto(message.encode(), socket_address(self.socket_name))
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd on %s: %s", self.socket_name, exc.strerror or exc)
                self._warned = True
            return False
        self.sent.append(message)
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready=1, status=status)

    def watchdog(self) -> bool:
        return self.notify(watchdog=1)

    def status(self, status: str) -> bool:
        return self.notify(status=status)

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify(stopping=1, status=status)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ProgressCheck:
    """True only when a counter moved since the last call and the state is one of `alive_states`: "the
    audio loop is alive" means something keeps happening in it, not merely that a timer fired.

    The service counts capture blocks and reopen attempts, and takes "error" as alive while the
    attempts go on: a USB microphone pulled out must not make systemd restart the service (five
    restarts and the unit would stay failed after the microphone came back); the agent shows the error
    and reopens the device itself. A capture thread stuck in the driver moves nothing, and is restarted.
    """

    def __init__(self, read: Callable[[], tuple[str, int]], alive_states: tuple[str, ...] = ("running",)) -> None:
        self._read = read
        self._alive_states = alive_states
        self._last: int | None = None
        self.reason = ""

    def __call__(self) -> bool:
        state, count = self._read()
        moved = self._last is None or count > self._last
        self._last = count
        if state not in self._alive_states:
            self.reason = f"capture is {state}"
            return False
        if not moved:
            self.reason = f"no capture block or reopen attempt since the last check ({count} in all)"
            return False
        self.reason = ""
        return True


async def feed_watchdog(notifier: Notifier, alive: ProgressCheck, interval_s: float) -> None:
    """Send WATCHDOG=1 every `interval_s` while `alive()` says so; when it does not, skip the ping
    (systemd then kills and restarts the service after WatchdogSec) and say why in the log and STATUS.
    Runs on the event loop, so a blocked loop also stops the pings. Cancel it to stop."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        if alive():
            if failing:
                log.info("audio loop alive again: feeding the watchdog")
                notifier.status("listening")
            failing = False
            notifier.watchdog()
        elif not failing:
            failing = True
            log.error("audio loop stalled (%s): not feeding the systemd watchdog", alive.reason)
            notifier.status(f"audio stalled: {alive.reason}")
