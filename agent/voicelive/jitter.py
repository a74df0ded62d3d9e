"""An adaptive jitter buffer for the call's Opus packets, with FEC recovery and loss concealment.

Why not aiortc's: its audio jitter buffer has a fixed depth, skips a packet that never came, and its
decoder decodes only what arrived, so over Wi-Fi each lost packet is 20 ms missing from the reply. A
browser's NetEq (libwebrtc) is the model here, in its simplest honest form:

- The buffer is played out on a steady 20 ms clock (`tick`), one frame a tick, by RTP sequence number.
- The packet due is decoded. A packet missing while a later one is there is lost: it is decoded from the
  in-band FEC (LBRR) of the packet after it where that one carries FEC, else concealed by libopus (PLC).
- A tick with nothing buffered at all "expands" (PLC) without moving on: the packet may be late, not lost.
  So a late packet makes the buffer deeper by one frame, which is how the delay grows with the jitter.
- The delay shrinks back when the network calms: when all but the latest few percent of the packets of
  the last few seconds waited at least a frame more than they needed, one quiet frame is dropped
  ("accelerate"), never a frame of speech. So, like NetEq's target level (a high quantile of the
  measured delay, not its maximum), the delay follows the bulk of the jitter and lets the rare outlier
  be concealed, instead of growing for every spike. Recovering packet n from FEC needs packet n+1 in
  hand at n's turn: when it is not yet, the buffer expands once and then decodes n from n+1.
- Only whole quiet frames are taken out. Moving the clock a few ms earlier instead would only move the
  wait from this buffer into the playout buffer behind it (both are queues in front of one device clock):
  the sound would come out no sooner, with less margin for the next late packet.
- A long gap (a link drop) is not played through frame by frame: once packets come again after more
  than `resync_frames` missing ones, playout jumps to them.

Everything here is plain logic on a clock passed in, so the tests drive it packet by packet; `receive.py`
wires it to aiortc's receiver and the event loop. Not thread-safe: the event loop's.
"""

from __future__ import annotations

import collections
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ..audio.frames import is_audible
from .media import FRAME_S, FRAME_SAMPLES

FrameKind = Literal["normal", "fec", "plc", "expand"]


class OpusDecoding(Protocol):
    def decode(self, packet: bytes) -> np.ndarray: ...
    def decode_fec(self, next_packet: bytes, frame_samples: int | None = None) -> np.ndarray: ...
    def conceal(self, frame_samples: int | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class JitterSettings:
    """Bounds of the buffer's delay, in ms of audio held before play."""

    #: Delay held before the first frame plays (it then follows the jitter): a frame and a half, so a
    #: clean network settles at about half a frame (the first shrink takes a frame off) and a jittery one
    #: grows from there.
    initial_ms: float = 30.0
    #: The most it may hold; packets beyond are dropped (the oldest first, by moving the playout on).
    max_ms: float = 400.0
    #: Spare wait the latest packets keep (those at `late_quantile`).
    keep_ms: float = 5.0
    #: How far back the buffer looks at packets' waits before it shrinks.
    window_s: float = 3.0
    #: The share of packets the delay may leave to concealment (NetEq aims at the 95th percentile).
    late_quantile: float = 0.05
    #: Missing frames after which playout jumps to the next packet instead of concealing each.
    resync_frames: int = 10
    #: A packet this many frames behind the playout is no late packet but a stream that started over
    #: (new sequence numbers): playout starts over from it.
    restart_frames: int = 50


@dataclass
class JitterStats:
    """What the buffer did, for logs, the call's result and `bench network`."""

    packets: int = 0
    duplicates: int = 0
    late: int = 0
    """Packets that came after their frame had been played (concealed): too late to use."""
    lost: int = 0
    """Frames whose packet never came in time (FEC-recovered and concealed ones)."""
    fec_recovered: int = 0
    concealed: int = 0
    """Frames made by packet-loss concealment (lost packets without FEC, and expansions)."""
    expanded: int = 0
    """Concealed frames played while nothing was buffered (the delay grew a frame)."""
    accelerated: int = 0
    """Quiet frames dropped to bring the delay down."""
    skipped: int = 0
    """Frames jumped over after a long gap (not concealed one by one)."""
    restarts: int = 0
    """The stream's sequence numbers started over (far behind the playout): playout followed them."""
    overflow: int = 0
    #: Per packet: ms from its arrival to its play (the delay the buffer added). Bounded.
    hold_ms: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=3000))

    def summary(self) -> dict[str, float | int]:
        holds = sorted(self.hold_ms)

        def q(p: float) -> float:
            return round(holds[min(len(holds) - 1, int(p * len(holds)))], 1) if holds else 0.0

        return {
            "packets": self.packets,
            "lost": self.lost,
            "late": self.late,
            "fec_recovered": self.fec_recovered,
            "concealed": self.concealed,
            "expanded": self.expanded,
            "accelerated": self.accelerated,
            "skipped": self.skipped,
            "hold_ms_p50": q(0.5),
            "hold_ms_p95": q(0.95),
        }


class SequenceNumbers:
    """RTP's 16-bit sequence numbers, unwrapped to a count that keeps rising (a packet up to half the
    range behind the newest is taken as old, not as a wrap)."""

    def __init__(self) -> None:
        self.newest: int | None = None

    def extend(self, seq16: int) -> int:
        if self.newest is None:
            self.newest = seq16
            return seq16
        delta = (seq16 - self.newest) & 0xFFFF
        if delta >= 0x8000:
            delta -= 0x10000
        seq = self.newest + delta
        self.newest = max(self.newest, seq)
        return seq


@dataclass(slots=True)
class _Packet:
    payload: bytes
    arrival: float


class JitterBuffer:
    """Packets in (`put`), one 20 ms mono frame out per `tick`."""

    def __init__(
        self,
        decoder: OpusDecoding,
        settings: JitterSettings | None = None,
        has_fec: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.settings = settings or JitterSettings()
        self.stats = JitterStats()
        self._decoder = decoder
        self._has_fec = has_fec or (lambda _payload: False)
        self._buffer: dict[int, _Packet] = {}
        self._seq = SequenceNumbers()
        self._next: int | None = None  # the extended sequence to play next
        self._first_arrival: float | None = None
        self._highest = -1
        # (arrival time, hold ms, shift when recorded): the shrink decision looks back over these
        self._holds: collections.deque[tuple[float, float, float]] = collections.deque()
        self._shift_ms = 0.0  # delay taken out by accelerating since the start (holds recorded before count less)
        self.last_kind: FrameKind | None = None
        self._ticks = 0

    # -------------------------------------------------------------------------------------------
    # Packets in

    def put(self, seq16: int, payload: bytes, arrival: float) -> None:
        """One RTP packet's sequence number (16 bits), its Opus payload and when it arrived."""
        seq = self._seq.extend(seq16)
        self.stats.packets += 1
        if self._first_arrival is None:
            self._first_arrival = arrival
        if self._next is not None and self._next - seq > self.settings.restart_frames:
            self.stats.restarts += 1
            self._buffer.clear()
            self._next = seq
            self._highest = seq
        if self._next is not None and seq < self._next:
            self.stats.late += 1
            self._record_hold(arrival, -FRAME_S * 1000 * (self._next - seq))
            return
        if seq in self._buffer:
            self.stats.duplicates += 1
            return
        self._buffer[seq] = _Packet(payload, arrival)
        self._highest = max(self._highest, seq)
        limit = int(self.settings.max_ms / (FRAME_S * 1000))
        if self._next is not None and self._highest - min(self._buffer) >= limit:
            # More audio than the buffer may hold: the oldest is given up, and playout moves on to what is
            # kept (a gap before the buffered packets, a link drop, is not counted here: see `_frame`).
            new_next = self._highest - limit + 1
            old = [s for s in self._buffer if s < new_next]
            for s in old:
                del self._buffer[s]
            self.stats.overflow += len(old)
            self._next = max(self._next, new_next)

    # -------------------------------------------------------------------------------------------
    # Frames out

    def buffered_ms(self) -> float:
        if self._next is None or not self._buffer:
            return 0.0
        return (self._highest - self._next + 1) * FRAME_S * 1000

    def tick(self, now: float) -> np.ndarray | None:
        """The next 20 ms frame (mono int16 at 48 kHz), or None before playout has started."""
        if self._next is None:
            if not self._buffer or self._first_arrival is None:
                return None
            if now - self._first_arrival < self.settings.initial_ms / 1000:
                return None
            self._next = min(self._buffer)
        frame, kind = self._frame(now)
        self._ticks += 1
        spare = self._spare_ms(now) if kind == "normal" and self._ticks % 5 == 0 else 0.0
        if spare >= FRAME_S * 1000 and not is_audible(frame):
            following = self._buffer.pop(self._next, None)
            if following is not None:
                # Drop the quiet frame; play the next one in its slot (decoded, so the decoder stays in step).
                self._record_hold(following.arrival, (now - following.arrival) * 1000)
                frame = self._decoder.decode(following.payload)
                self._next += 1
                self._shift_ms += FRAME_S * 1000
                self.stats.accelerated += 1
        self.last_kind = kind
        return frame

    def _frame(self, now: float) -> tuple[np.ndarray, FrameKind]:
        assert self._next is not None
        packet = self._buffer.pop(self._next, None)
        if packet is not None:
            self._next += 1
            self._record_hold(packet.arrival, (now - packet.arrival) * 1000)
            return self._decoder.decode(packet.payload), "normal"
        if not self._buffer:
            # Nothing at all: late or lost, we cannot tell yet. Conceal and wait for it (the delay grows).
            self.stats.concealed += 1
            self.stats.expanded += 1
            return self._decoder.conceal(FRAME_SAMPLES), "expand"
        # A later packet is here: this one is lost.
        earliest = min(self._buffer)
        if earliest - self._next > self.settings.resync_frames:
            self.stats.skipped += earliest - self._next
            self._next = earliest
            return self._frame(now)
        self.stats.lost += 1
        following = self._buffer.get(self._next + 1)
        self._next += 1
        if following is not None and self._has_fec(following.payload):
            self.stats.fec_recovered += 1
            return self._decoder.decode_fec(following.payload, FRAME_SAMPLES), "fec"
        self.stats.concealed += 1
        return self._decoder.conceal(FRAME_SAMPLES), "plc"

    # -------------------------------------------------------------------------------------------
    # Delay control

    def _record_hold(self, arrival: float, hold_ms: float) -> None:
        self.stats.hold_ms.append(hold_ms)
        self._holds.append((arrival, hold_ms, self._shift_ms))

    def _spare_ms(self, now: float) -> float:
        """How much less the packets of the last `window_s` could have waited, all but `late_quantile` of
        them still keeping `keep_ms` (their waits less what shrinking took out since)."""
        s = self.settings
        holds = self._holds
        while holds and now - holds[0][0] > s.window_s:
            holds.popleft()
        if not holds or now - holds[0][0] < s.window_s / 2:  # too little seen yet to judge
            return 0.0
        shift = self._shift_ms
        k = int(len(holds) * s.late_quantile) + 1
        least = heapq.nsmallest(k, (h - (shift - at) for _, h, at in holds))[-1]
        return max(0.0, least - s.keep_ms)

