"""The emulator's outbound audio: one track that sends 20 ms frames for the whole call, replies or silence.

The real service sends RTP continuously, silence included (voicelive-webrtc.md, section 1.5), so a
client cannot take "RTP is flowing" to mean "the model is speaking". This track does the same: it is
paced at real time like aiortc's own `AudioStreamTrack`, plays one `Playback` at a time (the others
wait their turn, like the service's output buffer), and otherwise sends digital silence. The
`stop_rtp_after_s` fault makes `recv()` hang mid-reply, which stops RTP for good, the way a stalled media
server would.

The track encodes its own Opus (libopus, one channel of speech, as a libwebrtc-based service sends), so
that it can put in-band FEC into its packets when the client's offer asks for it (`useinbandfec=1`), sized
by the loss the client's receiver reports, as libwebrtc's encoder does; aiortc's own encoder can do
neither. aiortc only packetises the packets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..audio.opus import OpusUplinkEncoder
from ..voicelive.media import FRAME_SAMPLES, RATE
from .settings import Faults

log = logging.getLogger(__name__)

#: The reply's bitrate: one channel of speech at 48 kHz. At 40 kbit/s libopus (1.5, 1.6) carries in-band
#: FEC at every expected loss; at 32 kbit/s full-band it drops FEC below about 7 %.
REPLY_BITRATE = 40000

class Playback:
    """One reply's audio in the emulator's output buffer. Events tell the session when its first and last
    frames went out; `end` (samples) can be lowered while it plays, when generation stopped early."""

    def __init__(self, samples: np.ndarray, tag: str = "") -> None:
        self.samples = np.ascontiguousarray(samples, dtype=np.int16)
        self.tag = tag  # the response id
        self.position = 0  # samples handed to aiortc so far
        self.end = len(self.samples)  # samples that will be sent in all
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.first_frame_t: float | None = None
        #: Dropped from the buffer (cleared or cancelled) before its end went out.
        self.cancelled = False

    @property
    def played_s(self) -> float:
        return min(self.position, self.end) / RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE

    def _finish(self, cancelled: bool) -> None:
        self.cancelled = cancelled
        self.started.set()
        self.finished.set()


class ReplyTrack(MediaStreamTrack):
    """An audio track of 48 kHz mono s16 frames of 960 samples, with proper pts, forever.

    Replies queue up (the service's output buffer): each plays after the one before it ends.
    """

    kind = "audio"

    def __init__(
        self,
        faults: Faults,
        on_reply_start: Callable[[], None] | None = None,
        on_sent: Callable[[np.ndarray], None] | None = None,
    ) -> None:
        #: Each frame as it leaves (the service's own echo reference).
        self.on_sent = on_sent
        super().__init__()
        self._faults = faults
        self._on_reply_start = on_reply_start
        #: Encodes what is sent; `use_fec` turns in-band FEC on once the offer asked for it.
        self.encoder = OpusUplinkEncoder(RATE, bitrate=REPLY_BITRATE)
        self._queue: deque[Playback] = deque()
        self._start: float | None = None
        self._timestamp = 0
        self._stopped = asyncio.Event()
        self.frames_sent = 0
        #: monotonic time RTP was stopped by the `stop_rtp_after_s` fault, if it was.
        self.rtp_stopped_t: float | None = None

    @property
    def playing(self) -> Playback | None:
        """The playback streaming now (or next), if any."""
        return self._queue[0] if self._queue else None

    def play(self, samples: np.ndarray, tag: str = "") -> Playback:
        """Queue `samples`: they start with the next frame after everything queued before them."""
        playback = Playback(samples, tag)
        self._queue.append(playback)
        return playback

    def truncate(self, playback: Playback, samples: int) -> None:
        """Send no more than `samples` of `playback` (never less than what already went out)."""
        playback.end = min(playback.end, max(samples, playback.position))
        if playback.position >= playback.end and playback in self._queue:
            self._queue.remove(playback)
            playback._finish(cancelled=False)

    def clear(self) -> list[Playback]:
        """Drop everything queued, the playback streaming now included; the next frame is silence."""
        dropped = list(self._queue)
        self._queue.clear()
        for playback in dropped:
            playback._finish(cancelled=True)
        return dropped

    def cancel(self) -> Playback | None:
        """Drop everything queued; returns the playback that was streaming, if any."""
        dropped = self.clear()
        return dropped[0] if dropped else None

    def stop(self) -> None:
        self._stopped.set()
        self.cancel()
        super().stop()

    async def _halt(self) -> None:
        """The `stop_rtp_after_s` fault: return no frame until the track is stopped."""
        if self.rtp_stopped_t is None:
            self.rtp_stopped_t = time.monotonic()
            log.info("fault stop_rtp_after_s: RTP stopped mid-reply")
        await self._stopped.wait()
        raise MediaStreamError

    def use_fec(self, on: bool, packet_loss: float = 0.01) -> None:
        self.encoder.set_fec(on, packet_loss)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if self.rtp_stopped_t is not None:
            await self._halt()
        if self._start is None:
            self._start = time.monotonic()
            self._timestamp = 0
        else:
            self._timestamp += FRAME_SAMPLES
            wait = self._start + self._timestamp / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.readyState != "live":
            raise MediaStreamError

        playback = self.playing
        now = time.monotonic()
        stop_after = self._faults.stop_rtp_after_s
        if (
            playback is not None
            and playback.first_frame_t is not None
            and stop_after is not None
            and now - playback.first_frame_t >= stop_after
        ):
            await self._halt()

        chunk = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        if playback is not None:
            part = playback.samples[playback.position : min(playback.position + FRAME_SAMPLES, playback.end)]
            chunk[: len(part)] = part
            playback.position += len(part)
            if playback.first_frame_t is None:
                playback.first_frame_t = now
                playback.started.set()
                if self._on_reply_start is not None:
                    self._on_reply_start()
            if playback.position >= playback.end:
                self._queue.popleft()
                playback.finished.set()

        self.encoder.pts = self._timestamp
        if self.on_sent is not None:
            self.on_sent(chunk)
        packet = self.encoder.encode(chunk)
        self.frames_sent += 1
        return packet
