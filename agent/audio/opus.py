"""The call's Opus encoder: the microphone's own rate, mono, speech settings, no resampling.

aiortc encodes whatever a track hands it as 48 kHz stereo at 96 kbit/s: it resamples every frame to 48 kHz
stereo, computes the RTP audio level in a Python loop over every sample, and hops to a thread pool and
back for each 20 ms packet. A microphone for a speech service needs none of that: libopus takes 8, 12,
16, 24 and 48 kHz input as it is, and one channel of speech is what browsers send too. So the track
encodes here, on the event loop (one small encode, no hand-over), and gives aiortc the encoded packet,
which it then only packetises (`RTCRtpSender` sends an `av.Packet` from a track as it is). What this
costs and saves is measured by `voice-agent bench` (the call's CPU against the bare aiortc client).

The settings are libwebrtc's for speech on phones: the "voip" application, complexity 5 (libwebrtc's
default on Android and iOS; 9 or 10 cost about a fifth more here), and 32 kbit/s, which Chrome sends for
one channel of speech. The RTP clock stays Opus's 48 kHz whatever the input rate.
"""

from __future__ import annotations

import fractions

import av
import numpy as np

from ..voicelive.media import FRAME_SAMPLES, TIME_BASE
from .resample import frame_from_pcm

#: The rates libopus encodes without resampling.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: Bits per second of the uplink (one channel of speech).
BITRATE = 32000
#: libopus complexity, 0 (cheapest) to 10.
COMPLEXITY = 5


class OpusUplinkEncoder:
    """Encodes 20 ms mono int16 frames at `rate` (one of `OPUS_RATES`) into one Opus packet each,
    stamped on the 48 kHz RTP clock. Not thread-safe: the event loop's."""

    def __init__(self, rate: int, bitrate: int = BITRATE, complexity: int = COMPLEXITY, pts: int = 0) -> None:
        if rate not in OPUS_RATES:
            raise ValueError(f"Opus encodes {', '.join(map(str, OPUS_RATES))} Hz, not {rate}")
        self.rate = rate
        self.frame_samples = rate // 50
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.sample_rate = rate
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.bit_rate = bitrate
        self._codec.time_base = fractions.Fraction(1, rate)
        self._codec.options = {"application": "voip", "compression_level": str(complexity)}
        self.pts = pts
        """The next packet's timestamp in TIME_BASE (48 kHz): one FRAME_SAMPLES per packet."""

    def encode(self, samples: np.ndarray) -> av.Packet:
        """One 20 ms frame (`frame_samples` samples) to one packet."""
        if len(samples) != self.frame_samples:
            raise ValueError(f"a frame is {self.frame_samples} samples at {self.rate} Hz, not {len(samples)}")
        packets = self._codec.encode(frame_from_pcm(samples, self.rate, pts=self.pts * self.rate // 48000))
        if len(packets) != 1:  # libopus gives one packet per 20 ms frame, with no delay
            raise RuntimeError(f"the Opus encoder returned {len(packets)} packets for one frame")
        packet = packets[0]
        packet.pts = self.pts
        packet.time_base = TIME_BASE
        self.pts += FRAME_SAMPLES
        return packet
