"""The call's audio on a lossy network: aiortc's receiver feeding our jitter buffer, and its sender told
the loss the far end reports.

aiortc keeps the parts that are right (SRTP, RTCP statistics and receiver reports, RTX, the transport),
and two are taken over, on the objects of one call only:
- the receive side: each depayloaded RTP packet goes to `jitter.JitterBuffer` instead of aiortc's fixed
  one (whose decoder thread is then never handed a frame), and frames are played out of it on the
  event loop's clock, 50 a second, decoded by libopus with FEC and concealment (`audio.libopus`);
- the send side: each receiver report the far end sends about our stream updates the encoder's expected
  loss, smoothed and stepped as libwebrtc does, so in-band FEC follows the network.

Both reach into aiortc's privates (a name-mangled attribute, a method replaced on the instance), pinned
by `aiortc>=1.16,<2` and checked here, so an aiortc that moved them fails loudly at the call's start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from ..audio import libopus
from .jitter import JitterBuffer, JitterSettings
from .media import FRAME_S

log = logging.getLogger(__name__)

JITTER_ATTR = "_RTCRtpReceiver__jitter_buffer"

#: A tick this late catches up at most this many frames at once; later than that, the clock restarts.
MAX_CATCH_UP = 5


class PacketTap:
    """Stands in for aiortc's audio `JitterBuffer` inside an `RTCRtpReceiver`: takes every packet and
    returns no frame, so aiortc decodes nothing.

    It runs inside aiortc's DTLS receive loop, where an exception would end the whole transport (audio,
    data channel and all): a packet whose handling fails is logged and dropped instead.

    `install` puts one in a receiver; `on_packet` gets each packet's 16-bit sequence number, its Opus
    payload and the moment it arrived (time.monotonic())."""

    def __init__(self, on_packet: Callable[[int, bytes, float], None]) -> None:
        self._on_packet = on_packet
        self.failures = 0

    @classmethod
    def install(cls, receiver: Any, on_packet: Callable[[int, bytes, float], None]) -> PacketTap:
        if not hasattr(receiver, JITTER_ATTR):
            raise RuntimeError(f"this aiortc's RTCRtpReceiver has no {JITTER_ATTR}: the receive path needs updating")
        tap = cls(on_packet)
        setattr(receiver, JITTER_ATTR, tap)
        return tap

    def add(self, packet: Any) -> tuple[bool, None]:
        try:
            payload = getattr(packet, "_data", None) or packet.payload
            self._on_packet(packet.sequence_number, bytes(payload), time.monotonic())
        except Exception:
            self.failures += 1
            if self.failures == 1 or self.failures % 500 == 0:
                log.exception("handling an RTP packet failed (%d so far): dropped", self.failures)
        return False, None


class AudioReceiver:
    """Plays one aiortc receiver's Opus packets out through a `JitterBuffer`: `on_frame` gets a 20 ms mono
    int16 frame at 48 kHz every 20 ms once the first packets are in; `on_packet` each packet's arrival."""

    def __init__(
        self,
        receiver: Any,
        on_frame: Callable[[np.ndarray], None],
        settings: JitterSettings | None = None,
        on_packet: Callable[[float], None] | None = None,
    ) -> None:
        self.decoder = libopus.Decoder(48000, 1)
        self.buffer = JitterBuffer(self.decoder, settings, has_fec=libopus.packet_has_fec)
        self._on_frame = on_frame
        self._on_packet = on_packet
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._t_next = 0.0
        self._closed = False
        self.failures = 0
        PacketTap.install(receiver, self._packet)

    def _packet(self, seq: int, payload: bytes, now: float) -> None:
        if self._closed:
            return
        self.buffer.put(seq, payload, now)
        if self._on_packet is not None:
            self._on_packet(now)
        if self._timer is None:
            self._t_next = self._loop.time() + self.buffer.settings.initial_ms / 1000
            self._timer = self._loop.call_at(self._t_next, self._tick)

    def _tick(self) -> None:
        if self._closed:
            return
        now = self._loop.time()
        behind = int((now - self._t_next) / FRAME_S)
        if behind > MAX_CATCH_UP:  # the loop stalled: restart the clock rather than burst
            self._t_next = now
        frames = 0
        try:
            while self._t_next <= now + 0.001 and frames <= MAX_CATCH_UP:
                self._t_next += FRAME_S
                frames += 1
                frame = self.buffer.tick(now)
                if frame is not None:
                    self._on_frame(frame)
        except Exception:  # the clock must go on: a stopped clock is a silent call
            self.failures += 1
            if self.failures == 1 or self.failures % 500 == 0:
                log.exception("playing out a frame failed (%d so far)", self.failures)
        finally:
            self._timer = self._loop.call_at(self._t_next, self._tick)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.decoder.close()


class LossEstimator:
    """The far end's reported loss, as libwebrtc's Opus encoder takes it: an exponential smoother with a
    time constant of about 10 s (`PacketLossFractionSmoother`, alpha 0.9999 a millisecond), then stepped
    to 1, 5, 10 or 20 % with hysteresis (`OptimizePacketLossRate`), never below `floor` (Chrome's minimum
    of 1 %, so FEC is on from the first packet, before any report)."""

    ALPHA_PER_MS = 0.9999

    def __init__(self, floor: float = 0.01) -> None:
        self.floor = floor
        self.smoothed = 0.0
        self.rate = floor
        self._t: float | None = None

    def update(self, fraction: float, now: float) -> float:
        if self._t is None:
            self.smoothed = fraction
        else:
            weight = self.ALPHA_PER_MS ** max(0.0, (now - self._t) * 1000)
            self.smoothed = weight * self.smoothed + (1 - weight) * fraction
        self._t = now
        self.rate = max(self.floor, _step(self.smoothed, self.rate))
        return self.rate


def _step(new: float, old: float) -> float:
    for level, margin in ((0.20, 0.02), (0.10, 0.01), (0.05, 0.01)):
        if new >= level + (margin if level > old else -margin):
            return level
    return 0.01 if new >= 0.01 else 0.0


def watch_loss_reports(sender: Any, on_fraction: Callable[[float], None]) -> None:
    """Call `on_fraction(lost)` (0..1) for each receiver report block about `sender`'s stream."""
    handle = sender._handle_rtcp_packet

    async def handle_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc == sender._ssrc:
                    on_fraction(report.fraction_lost / 256)
        await handle(packet)

    sender._handle_rtcp_packet = handle_rtcp
