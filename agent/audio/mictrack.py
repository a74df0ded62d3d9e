"""The call's microphone track: captured blocks in, 20 ms Opus packets out to aiortc.

aiortc sends a packet each time `recv()` returns, so this track sets the pace of the uplink:
- live audio goes out as soon as a whole 20 ms frame is there (capture paces it);
- audio that piled up before the call connected (the pre-roll after the wake word) goes out at a bounded
  speed-up, `catchup_speed` times real time, until the track is back to real time: no word is dropped
  and the far side's jitter buffer never sees a burst;
- when capture stalls (device lost, muted), silence goes out, because the service keeps a session alive
  only while RTP flows.

The track encodes the microphone's own rate (16 or 48 kHz) to Opus itself (`opus.OpusUplinkEncoder`: no
resampling, one channel, speech settings) and hands aiortc the packet; a rate libopus does not take is
resampled to 48 kHz first. `recv()` is what aiortc's examples show a track to be: await the next frame
with a deadline, else silence; the source's `get()` is cancellation-safe, so the deadline never loses a
block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..voicelive.media import FRAME_S, RATE
from .capture import SubscriptionClosed
from .frames import PcmBlock
from .opus import OPUS_RATES, OpusUplinkEncoder
from .resample import StreamResampler

log = logging.getLogger(__name__)



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
        rate: int = 16000,
        catchup_speed: float = 2.0,
        stall_s: float = 0.06,
        on_frame: Callable[[float | None, int], None] | None = None,
        muted: Callable[[], bool] | None = None,
        stereo: bool = False,
    ) -> None:
        super().__init__()
        #: Send two channels: the microphone, and the speaker's reference each block carries.
        self._stereo = stereo
        if stereo and rate not in OPUS_RATES:
            raise ValueError(f"a stereo uplink takes the microphone's rate as it is: {rate} Hz is not Opus's")
        self._source = source
        self._catchup_speed = catchup_speed
        self._stall_s = stall_s
        self._on_frame = on_frame
        self._muted = muted or (lambda: False)
        self._resampler: StreamResampler | None = None  # only for a rate libopus does not take
        self._encoder = OpusUplinkEncoder(rate if rate in OPUS_RATES else RATE, channels=2 if stereo else 1)
        self._carry = np.zeros(0, dtype=np.int16)  # short of a whole frame
        self._rate = self._encoder.rate  # of the frames being cut (the carry's)
        # (samples, their rate, t_end of the capture block they came from)
        self._ready: deque[tuple[np.ndarray, int, float]] = deque()
        self._source_done = False
        self._last_sent: float | None = None
        self.frames_sent = 0
        self.silence_frames = 0

    def _resample(self, block: PcmBlock) -> None:
        """A capture block into 20 ms frames at the encoder's rate, each with the capture time of the
        block that completed it."""
        rate = block.rate if block.rate in OPUS_RATES else RATE
        if rate != self._rate:  # the capture's rate changed (a reopened device): a new stream
            self._rate = rate
            self._carry = np.zeros(0, dtype=np.int16)
        samples = block.samples
        if self._stereo:  # the microphone and the reference, interleaved
            ref = block.reference if block.reference is not None else np.zeros_like(samples)
            samples = np.column_stack([samples, ref]).reshape(-1)
        elif block.rate != rate:
            if self._resampler is None or self._resampler.rate_in != block.rate:
                self._resampler = StreamResampler(block.rate, rate)
            samples = self._resampler.process(samples)
        if self._carry.size:
            samples = np.concatenate([self._carry, samples])
        n = rate // 50 * (2 if self._stereo else 1)
        whole = len(samples) // n * n
        for start in range(0, whole, n):
            self._ready.append((samples[start : start + n], rate, block.t_end))
        self._carry = samples[whole:]

    async def _next_frame(self, timeout: float) -> tuple[np.ndarray, int, float] | None:
        """The next frame, waiting at most `timeout` for capture; None if none came in time. The
        source's `get()` takes a block only once it is there, so a timeout loses no audio."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            while (block := self._source.get_nowait()) is not None:
                self._resample(block)
            if self._ready or self._source_done:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):
                    block = await self._source.get()
            except TimeoutError:
                return None
            except SubscriptionClosed:
                self._source_done = True  # capture stopped: silence from now on
                break
            self._resample(block)
        return self._ready.popleft() if self._ready else None

    @property
    def backlog_s(self) -> float:
        """How far behind real time the uplink is (audio ready but not yet sent)."""
        return len(self._ready) * FRAME_S

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._last_sent is None:
            self._last_sent = now - FRAME_S
        while (block := self._source.get_nowait()) is not None:
            self._resample(block)
        if len(self._ready) > 1:
            # Behind real time (the pre-roll): faster than real time, but at most `catchup_speed`
            # times, so the far side's jitter buffer never sees a burst.
            delay = self._last_sent + FRAME_S / self._catchup_speed - now
            if delay > 0:
                await asyncio.sleep(delay)
        # Live: a frame goes out the moment capture delivers it (capture sets the pace); if none
        # comes in time, silence goes out instead, so RTP never stops.
        deadline = self._last_sent + FRAME_S + self._stall_s
        got = await self._next_frame(max(0.0, deadline - time.monotonic()))
        if got is not None:
            samples, rate, t_capture = got
            if self._muted():
                samples = np.zeros(len(samples), dtype=np.int16)
        else:
            rate, t_capture = self._rate, None
            samples = np.zeros(rate // 50 * self._encoder.channels, dtype=np.int16)
            self.silence_frames += 1
        self._last_sent = time.monotonic()
        if rate != self._encoder.rate:
            old = self._encoder
            self._encoder = OpusUplinkEncoder(
                rate, pts=old.pts, fec=old.fec, packet_loss=old.packet_loss, channels=old.channels
            )
        packet = self._encoder.encode(samples)
        self.frames_sent += 1
        if self._on_frame is not None:
            self._on_frame(t_capture, self.frames_sent)
        return packet

    @property
    def encoder(self) -> OpusUplinkEncoder:
        """The Opus encoder: the call turns its FEC on when the far end decodes it, and sets the expected
        loss from the far end's reports."""
        return self._encoder

    def stop(self) -> None:
        self._source_done = True
        super().stop()
