"""The ALSA edge, shared by capture and playback: opening a PCM safely, and a device thread that
reopens it with backoff when it fails.

A device thread must never end because of the device: a USB microphone pulled out, a HAT whose
driver hiccups, a device another program holds. `run_reopening` opens, uses, and on any error logs
once per distinct message, closes and tries again with exponential backoff, jitter and a cap.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import alsaaudio

from ..backoff import Backoff

log = logging.getLogger(__name__)

State = Literal["stopped", "starting", "running", "error"]

PcmFactory = Callable[..., Any]
"""Opens a PCM: `alsaaudio.PCM` with its keyword arguments; tests pass a fake."""


class ErrorReporter:
    """Logs an error once per distinct message, not once per retry: a missing microphone must not fill
    the journal every few seconds, but a new kind of failure must show."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._last: str | None = None
        self.repeats = 0

    def report(self, message: str) -> None:
        if message != self._last:
            self._log.error("%s", message)
            self._last = message
            self.repeats = 0
        else:
            self.repeats += 1
            self._log.debug("%s (again, %d times)", message, self.repeats)

    def clear(self) -> None:
        self._last = None
        self.repeats = 0


class RateLimitedCounter:
    """Counts an event (an overrun) and logs at most once per `interval_s` with the count since."""

    def __init__(self, logger: logging.Logger, what: str, interval_s: float = 10.0) -> None:
        self._log = logger
        self._what = what
        self._interval_s = interval_s
        self._last_log = -float("inf")
        self._since = 0

    def hit(self, detail: str = "") -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last_log >= self._interval_s:
            self._log.warning("%s: %d since last report%s", self._what, self._since, detail)
            self._last_log = now
            self._since = 0


class AlsaFormatError(Exception):
    """The device opened with other parameters than asked for (no `plughw:` / `plug` conversion)."""


def open_pcm(
    factory: PcmFactory, kind: int, device: str, rate: int, channels: int, period_frames: int, periods: int = 4
) -> Any:
    """Open an S16_LE interleaved PCM in blocking mode and check it runs at what we asked.

    Runs in the ALSA thread: the open can block (see below, and a file-plugin FIFO with no writer).

    pyalsaaudio takes the nearest values a device offers without failing; a `hw:` device that only does
    48 kHz stereo would then deliver audio we misread. Better to fail with a message that says what to
    change (use `plughw:` or the `default` device, or set the rate the device does).
    """
    params = dict(
        type=kind,
        device=device,
        rate=rate,
        channels=channels,
        format=alsaaudio.PCM_FORMAT_S16_LE,
        periodsize=period_frames,
        periods=periods,
    )
    # A blocking open of a busy device (another program has it) waits until the device is free, and
    # pyalsaaudio holds the GIL meanwhile: the whole process would freeze. A non-blocking open fails
    # at once with EBUSY instead, so probe with one. (A program grabbing the device in the instant
    # between the two opens would still make us wait; that race is accepted.)
    factory(mode=alsaaudio.PCM_NONBLOCK, **params).close()
    pcm = factory(mode=alsaaudio.PCM_NORMAL, **params)
    info = pcm.info() if hasattr(pcm, "info") else {}
    got = (info.get("rate", rate), info.get("channels", channels), info.get("format", alsaaudio.PCM_FORMAT_S16_LE))
    if got != (rate, channels, alsaaudio.PCM_FORMAT_S16_LE):
        with contextlib.suppress(Exception):
            pcm.close()
        raise AlsaFormatError(
            f"device {device!r} runs at {got[0]} Hz, {got[1]} channel(s), format {info.get('format_name')}"
            f" instead of {rate} Hz, {channels} channel(s), S16_LE: use a plughw: or plug device,"
            " or configure what the device supports"
        )
    return pcm


# --------------------------------------------------------------------------------------------------
# Fan-out on the asyncio side


def run_reopening(
    stop: threading.Event,
    what: str,
    open_device: Callable[[], Any],
    use: Callable[[Any, threading.Event], None],
    close: Callable[[Any], None],
    fail: Callable[[str], None],
    backoff: Backoff,
    on_reopen: Callable[[], None],
) -> None:
    """Open, `use` until it returns (stop) or raises (device error), close; on an error report it with
    `fail`, wait the next backoff delay and open again, until `stop` is set. `use` resets the backoff
    once the device works."""
    first = True
    while not stop.is_set():
        if not first:
            on_reopen()
        first = False
        try:
            pcm = open_device()
        except Exception as exc:
            fail(f"cannot open {what}: {exc}")
            stop.wait(backoff.next_delay())
            continue
        try:
            use(pcm, stop)
        except Exception as exc:
            fail(f"{what} failed: {exc}")
            close(pcm)
            stop.wait(backoff.next_delay())
            continue
        close(pcm)
