"""What the emulator hears of the caller: the mic's Opus packets decoded as a real receiver decodes them.

A service's receiver decodes what arrives in order as soon as it can (speech recognition wants it at
once, and a client catching up after connecting sends faster than real time), waits a little for a packet
that is missing (it may only be late: jitter reorders), and then takes it as lost: decoded from the
in-band FEC of the packet after it where that one carries FEC (as libwebrtc's NetEq does), concealed by
libopus otherwise. aiortc's receiver does none of that (it skips a lost packet), so the emulator's
receiver is taken over like the agent's (`voicelive.receive`), and counts what it lost and recovered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..audio import libopus
from ..audio.frames import is_audible
from ..voicelive.jitter import SequenceNumbers
from ..voicelive.receive import PacketTap

#: How long a missing packet is waited for before it counts as lost.
REORDER_S = 0.08
#: A gap longer than this many packets is skipped, not concealed frame by frame.
RESYNC_FRAMES = 25


@dataclass
class UplinkStats:
    packets: int = 0
    lost: int = 0
    """Packets never received in time (gaps in the sequence)."""
    single_lost: int = 0
    """Lost packets whose neighbours both arrived: what in-band FEC can recover."""
    fec_recovered: int = 0
    #: The same two within speech (the frame before the loss was audible): libopus codes FEC only for
    #: active speech, so a lost packet of silence has none to recover, and needs none.
    single_lost_speech: int = 0
    fec_recovered_speech: int = 0
    concealed: int = 0
    late: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int | float | None]:
        return {
            "packets": self.packets,
            "lost": self.lost,
            "single_lost": self.single_lost,
            "fec_recovered": self.fec_recovered,
            "fec_recovered_pct": round(100 * self.fec_recovered / self.single_lost, 1) if self.single_lost else None,
            "single_lost_speech": self.single_lost_speech,
            "fec_recovered_speech": self.fec_recovered_speech,
            "fec_recovered_speech_pct": (
                round(100 * self.fec_recovered_speech / self.single_lost_speech, 1) if self.single_lost_speech else None
            ),
            "concealed": self.concealed,
            "late": self.late,
        }


class ArrivalDecoder:
    """Packets in (`put`); decoded 20 ms frames at 48 kHz out through `on_frame`, in order: interleaved
    stereo (a mono stream's two channels are the same; a client reference is the second)."""

    def __init__(self, on_frame: Callable[[np.ndarray], None], reorder_s: float = REORDER_S) -> None:
        self.stats = UplinkStats()
        self._decoder = libopus.Decoder(48000, 2)
        self._on_frame = on_frame
        self._reorder_s = reorder_s
        self._buffer: dict[int, bytes] = {}
        self._next: int | None = None
        self._seq = SequenceNumbers()
        self._gap_since: float | None = None
        self._speech = False  # the last frame out was audible

    def put(self, seq16: int, payload: bytes, now: float) -> None:
        seq = self._seq.extend(seq16)
        self.stats.packets += 1
        if self._next is None or self._next - seq > RESYNC_FRAMES * 2:  # the first, or a stream started over
            self._buffer.clear()
            self._next = seq
            self._gap_since = None
        if seq < self._next or seq in self._buffer:
            self.stats.late += seq < self._next
            return
        self._buffer[seq] = payload
        self.drain(now)

    def due(self) -> float | None:
        """When a missing packet will be given up on (for a timer), if one is awaited."""
        return None if self._gap_since is None else self._gap_since + self._reorder_s

    def drain(self, now: float) -> None:
        while self._buffer and self._next is not None:
            payload = self._buffer.pop(self._next, None)
            if payload is not None:
                self._next += 1
                self._gap_since = None
                self._emit(self._decoder.decode(payload))
                continue
            if self._gap_since is None:
                self._gap_since = now
            if now - self._gap_since < self._reorder_s:
                return
            earliest = min(self._buffer)
            missing = earliest - self._next
            self.stats.lost += missing
            if missing > RESYNC_FRAMES:
                self.stats.skipped += missing
                self._next = earliest
                continue
            if missing == 1:
                self.stats.single_lost += 1
                self.stats.single_lost_speech += self._speech
            for _ in range(missing - 1):  # a burst: all but its last are concealed
                self.stats.concealed += 1
                self._emit(self._decoder.conceal())
            following = self._buffer[earliest]
            if libopus.packet_has_fec(following):  # the last lost one, from the FEC of the one after it
                self.stats.fec_recovered += missing == 1
                self.stats.fec_recovered_speech += missing == 1 and self._speech
                self._emit(self._decoder.decode_fec(following))
            else:
                self.stats.concealed += 1
                self._emit(self._decoder.conceal())
            self._next = earliest
            self._gap_since = None

    def _emit(self, frame: np.ndarray) -> None:
        self._speech = is_audible(frame[0::2])
        self._on_frame(frame)

    def close(self) -> None:
        self._decoder.close()


class UplinkReceiver:
    """Takes over one aiortc receiver's packets for an `ArrivalDecoder`, with a timer for gaps."""

    def __init__(
        self,
        receiver: Any,
        on_frame: Callable[[np.ndarray], None],
        on_packet: Callable[[float], None] | None = None,
    ) -> None:
        self.decoder = ArrivalDecoder(on_frame)
        self._on_packet = on_packet
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        PacketTap.install(receiver, self._packet)

    @property
    def stats(self) -> UplinkStats:
        return self.decoder.stats

    def _packet(self, seq: int, payload: bytes, now: float) -> None:
        if self._closed:
            return
        if self._on_packet is not None:
            self._on_packet(now)
        self.decoder.put(seq, payload, now)
        self._arm()

    def _arm(self) -> None:
        due = self.decoder.due()
        if due is not None and self._timer is None:
            self._timer = self._loop.call_at(due + 0.001, self._expire)

    def _expire(self) -> None:
        self._timer = None
        if not self._closed:
            self.decoder.drain(time.monotonic())
            self._arm()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.decoder.close()
