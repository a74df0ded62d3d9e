"""The call's microphone track: captured blocks in, 20 ms 48 kHz frames out to aiortc's Opus encoder.

aiortc sends a packet each time `recv()` returns, so this track sets the pace of the uplink:
- live audio goes out as soon as a whole 20 ms frame is there (capture paces it);
- audio that piled up before the call connected (the pre-roll after the wake word) goes out at a bounded
  speed-up, `catchup_speed` times real time, until the track is back to real time: no word is dropped
  and the far side's jitter buffer never sees a burst;
- when capture stalls (device lost, muted), silence goes out, because the service keeps a session alive
  only while RTP flows.

Resampling to 48 kHz happens once, here, with PyAV's resampler (the Opus encoder then only upmixes).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from .frames import PcmBlock
from .resample import frame_from_pcm

log = logging.getLogger(__name__)

RATE = 48000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz, one Opus frame
FRAME_S = FRAME_SAMPLES / RATE
TIME_BASE = fractions.Fraction(1, RATE)


class BlockSource(Protocol):
    async def get(self) -> PcmBlock: ...

    def get_nowait(self) -> PcmBlock | None:
        """A block that is already waiting, or None."""
        ...


class MicTrack(MediaStreamTrack):
    """An aiortc audio track fed from a `BlockSource` (a capture subscription, with pre-roll in front)."""

    kind = "audio"

    def __init__(
        self,
        source: BlockSource,
        *,
        catchup_speed: float = 2.0,
        stall_s: float = 0.06,
        on_frame: Callable[[float | None, int], None] | None = None,
        muted: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._catchup_speed = catchup_speed
        self._stall_s = stall_s
        self._on_frame = on_frame
        self._muted = muted or (lambda: False)
        self._resampler: av.AudioResampler | None = None
        self._resampler_rate = 0
        # (samples, t_end of the capture block they came from)
        self._ready: deque[tuple[np.ndarray, float]] = deque()
        self._pending: asyncio.Future[PcmBlock] | None = None
        self._source_done = False
        self._pts = 0
        self._last_sent: float | None = None
        self.frames_sent = 0
        self.silence_frames = 0

    def _resample(self, block: PcmBlock) -> None:
        if self._resampler is None or block.rate != self._resampler_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE, frame_size=FRAME_SAMPLES)
            self._resampler_rate = block.rate
        for out in self._resampler.resample(frame_from_pcm(block.samples, block.rate)):
            self._ready.append((out.to_ndarray().reshape(-1), block.t_end))

    def _drain_available(self) -> None:
        """Move every block that is already waiting into the ready frames, without blocking, in order:
        a finished `get()` first, then whatever else is queued (while a `get()` is still pending it
        owns the next block, so nothing is taken around it)."""
        if self._pending is not None:
            if not self._pending.done():
                return
            pending, self._pending = self._pending, None
            if pending.cancelled() or pending.exception() is not None:
                self._source_done = True  # capture stopped: silence from now on
                return
            self._resample(pending.result())
        while (block := self._source.get_nowait()) is not None:
            self._resample(block)

    def _ensure_pending(self) -> asyncio.Future[PcmBlock]:
        if self._pending is None:
            if self._source_done:
                return asyncio.get_running_loop().create_future()  # never completes: wait times out
            self._pending = asyncio.ensure_future(self._source.get())
        return self._pending

    async def _wait_for_frame(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._ready:
            self._drain_available()
            if self._ready:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait({self._ensure_pending()}, timeout=remaining)
        return True

    @property
    def backlog_s(self) -> float:
        """How far behind real time the uplink is (audio ready but not yet sent)."""
        return len(self._ready) * FRAME_S

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._last_sent is None:
            self._last_sent = now - FRAME_S
        self._drain_available()
        if len(self._ready) > 1:
            # Behind real time (the pre-roll): faster than real time, but at most `catchup_speed`
            # times, so the far side's jitter buffer never sees a burst.
            delay = self._last_sent + FRAME_S / self._catchup_speed - now
            if delay > 0:
                await asyncio.sleep(delay)
        # Live: a frame goes out the moment capture delivers it (capture sets the pace); if none
        # comes in time, silence goes out instead, so RTP never stops.
        deadline = self._last_sent + FRAME_S + self._stall_s
        got = await self._wait_for_frame(max(0.0, deadline - time.monotonic()))
        if got:
            samples, t_capture = self._ready.popleft()
            if self._muted():
                samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        else:
            samples, t_capture = np.zeros(FRAME_SAMPLES, dtype=np.int16), None
            self.silence_frames += 1
        self._last_sent = time.monotonic()
        frame = frame_from_pcm(samples, RATE, pts=self._pts)
        self._pts += FRAME_SAMPLES
        self.frames_sent += 1
        if self._on_frame is not None:
            self._on_frame(t_capture, self.frames_sent)
        return frame

    def stop(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        super().stop()
