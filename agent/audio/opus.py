"""The call's Opus encoder: the microphone's own rate, mono, speech settings, no resampling, in-band FEC.

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

In-band FEC (`fec`): each packet carries a low-bitrate copy of the one before, so a receiver that decodes
FEC recovers a single lost packet from the next. How much of the bitrate goes to it follows the loss the
receiver reports (`set_packet_loss`, fed from RTCP by the call). The encoder is libopus itself
(`libopus.Encoder`): FFmpeg's wrapper reads the expected loss only when it opens.
"""

from __future__ import annotations

import av
import numpy as np

from ..voicelive.media import FRAME_SAMPLES, TIME_BASE
from . import libopus

#: The rates libopus encodes without resampling.
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
#: Bits per second of the uplink (one channel of speech).
BITRATE = 32000
#: libopus complexity, 0 (cheapest) to 10.
COMPLEXITY = 5


class OpusUplinkEncoder:
    """Encodes 20 ms mono int16 frames at `rate` (one of `OPUS_RATES`) into one Opus packet each,
    stamped on the 48 kHz RTP clock. Not thread-safe: the event loop's."""

    def __init__(
        self,
        rate: int,
        bitrate: int = BITRATE,
        complexity: int = COMPLEXITY,
        pts: int = 0,
        fec: bool = False,
        packet_loss: float = 0.0,
        channels: int = 1,
    ) -> None:
        if rate not in OPUS_RATES:
            raise ValueError(f"Opus encodes {', '.join(map(str, OPUS_RATES))} Hz, not {rate}")
        self.rate = rate
        self.channels = channels
        #: Samples in a frame, all channels (interleaved).
        self.frame_samples = rate // 50 * channels
        self._codec = libopus.Encoder(
            rate,
            channels,
            bitrate=bitrate * channels,
            complexity=complexity,
            inband_fec=fec,
            packet_loss_perc=round(packet_loss * 100),
        )
        self.pts = pts
        """The next packet's timestamp in TIME_BASE (48 kHz): one FRAME_SAMPLES per packet."""

    def encode(self, samples: np.ndarray) -> av.Packet:
        """One 20 ms frame (`frame_samples` samples) to one packet."""
        if len(samples) != self.frame_samples:
            raise ValueError(f"a frame is {self.frame_samples} samples at {self.rate} Hz, not {len(samples)}")
        packet = av.Packet(self._codec.encode(np.asarray(samples, dtype=np.int16)))
        packet.pts = self.pts
        packet.time_base = TIME_BASE
        self.pts += FRAME_SAMPLES
        return packet

    @property
    def fec(self) -> bool:
        return self._codec.inband_fec

    @property
    def packet_loss(self) -> float:
        """The expected loss the encoder protects against now (0..1)."""
        return self._codec.packet_loss_perc / 100

    def set_fec(self, on: bool, packet_loss: float | None = None) -> None:
        """In-band FEC on or off (the far end said it decodes it, or not), and the expected loss."""
        self._codec.set_inband_fec(on)
        if packet_loss is not None:
            self.set_packet_loss(packet_loss)

    def set_packet_loss(self, fraction: float) -> None:
        self._codec.set_packet_loss(round(fraction * 100))
