"""The call's media format, in one place: what the client sends, the emulator answers and the benchmarks
measure. Voice Live's WebRTC audio is Opus at 48 kHz; aiortc's encoder takes 20 ms frames (one Opus
frame each) and the decoder hands out the same."""

from __future__ import annotations

import fractions

#: Samples per second of the call's audio, both ways.
RATE = 48000
#: One 20 ms frame: one Opus packet, one RTP packet.
FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / RATE
#: The pts unit of an audio frame at RATE.
TIME_BASE = fractions.Fraction(1, RATE)
