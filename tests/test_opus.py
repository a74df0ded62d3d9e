"""The uplink's own Opus encoder: the microphone's rate, one channel, one packet per 20 ms, on the 48 kHz
RTP clock, and what a WebRTC peer decodes from it is the speech that went in."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from agent.audio.frames import PcmBlock
from agent.audio.mictrack import MicTrack
from agent.audio.opus import OpusUplinkEncoder
from agent.audio.resample import convert_pcm, pcm_of
from tests.speech import espeak


def decode(packets: list[av.Packet]) -> np.ndarray:
    """What a WebRTC peer hears: aiortc's decoder (48 kHz stereo), the left channel."""
    decoder = OpusDecoder()
    out = [pcm_of(f).reshape(-1, 2)[:, 0] for p in packets for f in decoder.decode(JitterFrame(bytes(p), p.pts))]
    return np.concatenate(out)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of `b` with `a` at the lag (0 to 20 ms: the codec's delay) where it is best."""
    n = min(len(a), len(b)) - 960
    x, y = a[:n].astype(np.float64), b.astype(np.float64)
    lags = np.correlate(y[: n + 960], x, mode="valid")  # one value per lag 0..960
    lag = int(np.argmax(lags))
    return float(np.corrcoef(x, y[lag : lag + n])[0, 1])


@pytest.mark.parametrize("rate", [16000, 48000])
def test_one_packet_per_frame_on_the_48k_clock_and_the_speech_survives(rate: int) -> None:
    speech16 = espeak("the weather will be mild tomorrow")
    speech = convert_pcm(speech16, 16000, rate)
    enc = OpusUplinkEncoder(rate)
    n = rate // 50
    packets = [enc.encode(speech[i : i + n]) for i in range(0, len(speech) // n * n, n)]
    assert [p.pts for p in packets] == [960 * k for k in range(len(packets))]
    assert all(p.time_base.denominator == 48000 for p in packets)
    # one channel of speech at 32 kbit/s, not aiortc's 96 kbit/s stereo
    kbps = sum(p.size for p in packets) * 8 / (len(packets) * 0.02) / 1000
    assert 20 < kbps < 40
    heard = decode(packets)
    assert correlation(convert_pcm(speech16, 16000, 48000), heard) > 0.9


def test_wrong_rate_or_frame_size_is_refused() -> None:
    with pytest.raises(ValueError, match="Opus encodes"):
        OpusUplinkEncoder(44100)
    with pytest.raises(ValueError, match="320 samples"):
        OpusUplinkEncoder(16000).encode(np.zeros(960, np.int16))


class Blocks:
    """A source that has all its blocks at once (the pre-roll after a wake word)."""

    def __init__(self, blocks: list[PcmBlock]) -> None:
        self.blocks = blocks

    def get_nowait(self) -> PcmBlock | None:
        return self.blocks.pop(0) if self.blocks else None

    async def get(self) -> PcmBlock:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")


async def test_track_hands_aiortc_packets_at_the_capture_rate_and_keeps_the_clock_across_a_rate_change() -> None:
    tone16 = (np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16)
    tone48 = convert_pcm(tone16, 16000, 48000)
    blocks = [PcmBlock(tone16[i : i + 320], 16000, 0.0, i // 320 + 1) for i in range(0, 3200, 320)]
    blocks += [PcmBlock(tone48[i : i + 960], 48000, 0.0, 11 + i // 960) for i in range(0, 9600, 960)]
    track = MicTrack(Blocks(blocks), rate=16000, catchup_speed=50.0)
    packets = [await track.recv() for _ in range(20)]
    assert all(isinstance(p, av.Packet) for p in packets)
    assert [p.pts for p in packets] == [960 * k for k in range(20)]  # one RTP clock, no jump at the change
    assert track.silence_frames == 0
    heard = decode(packets)
    assert correlation(tone48[: len(heard) // 2], heard[: len(heard) // 2]) > 0.9
