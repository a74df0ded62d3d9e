"""The acoustics of a small room with the speaker a few centimetres from the microphone.

A room response (`impulse_response`) is a direct path 1 to 10 ms after the sound leaves the speaker,
a few early reflections, and an exponentially decaying noise tail (a reverberation time of a few hundred
ms), normalised to unit energy so that `RoomSpec.echo_db` is the level of the echo against the signal
played: at 0 dB a reply reaches the microphone about as loud as a user speaking at the reply's level, at
+6 dB louder (the speaker beside the microphones on a HAT), at -20 dB a speaker across the room.
Seeded: the same spec gives the same response and the same noise.

`Convolver` runs the response over a stream, a period at a time (FFT overlap-save with numpy: a 300 ms
tail at 16 kHz is 4800 taps, too many for a direct convolution 50 times a second on two cores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoomSpec:
    """One room. Levels in dB; times in ms."""

    #: The echo's level against what the speaker plays (the response has unit energy).
    echo_db: float = 0.0
    #: The direct path: the speaker's sound reaches the microphone this long after it is played.
    direct_ms: float = 4.0
    #: How long the reverberant tail lasts (the response's length).
    tail_ms: float = 300.0
    #: Reverberation time: the tail decays by 60 dB in this long.
    rt60_ms: float = 250.0
    #: The tail's energy against the direct path's, in dB (a small speaker near the mics: mostly direct).
    reverb_db: float = -6.0
    #: Room noise (white), in dBFS; None for none.
    noise_dbfs: float | None = -60.0
    #: The DAC's and amplifier's latency the device does not know: played audio leaves the speaker this
    #: long after alsa-lib handed it on.
    device_latency_ms: float = 5.0
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.direct_ms < self.tail_ms:
            raise ValueError("direct_ms must be positive and shorter than tail_ms")
        if not -60 <= self.echo_db <= 20:
            raise ValueError("echo_db must be within -60 and +20 dB")
        if self.device_latency_ms < 0:
            raise ValueError("device_latency_ms must be >= 0")


def impulse_response(spec: RoomSpec, rate: int) -> np.ndarray:
    """The speaker-to-microphone response at `rate`, float64, unit energy times the echo's gain."""
    rng = np.random.default_rng(spec.seed)
    n = round(spec.tail_ms * rate / 1000)
    h = np.zeros(n)
    d = round(spec.direct_ms * rate / 1000)
    h[d] = 1.0
    # early reflections: off the table and the nearest walls, 2 to 20 ms after the direct path
    for _ in range(4):
        k = d + int(rng.uniform(0.002, 0.020) * rate)
        if k < n:
            h[k] += rng.uniform(-0.5, 0.5)
    # the reverberant tail, from the first reflection on
    start = d + int(0.002 * rate)
    t = np.arange(n - start) / rate
    tail = rng.standard_normal(n - start) * np.exp(-6.9 * t / (spec.rt60_ms / 1000))
    direct_energy = float(np.sum(h**2))
    tail *= np.sqrt(direct_energy * 10 ** (spec.reverb_db / 10) / float(np.sum(tail**2)))
    h[start:] += tail
    h /= np.sqrt(float(np.sum(h**2)))
    return h * 10 ** (spec.echo_db / 20)


class Convolver:
    """A response run over a stream one block at a time: `block(history)` takes the last
    `len(h) - 1 + n` input samples and returns the `n` newest output samples (overlap-save)."""

    def __init__(self, h: np.ndarray, block: int) -> None:
        self.taps = len(h)
        self.block_len = block
        size = 1
        while size < self.taps + block - 1:
            size *= 2
        self._size = size
        self._H = np.fft.rfft(h, size)

    @property
    def history(self) -> int:
        """Input samples each call needs: the block and the response's length before it."""
        return self.taps - 1 + self.block_len

    def block(self, history: np.ndarray) -> np.ndarray:
        y = np.fft.irfft(np.fft.rfft(history, self._size) * self._H, self._size)
        return y[self.taps - 1 : self.taps - 1 + self.block_len]
