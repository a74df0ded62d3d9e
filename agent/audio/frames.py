"""The unit of audio inside the agent: a block of mono int16 samples with its capture time.

One clock for audio: the capture thread stamps every block with `time.monotonic()` when the read that
produced it returned (the time of its last sample), and everything downstream measures latency from
that stamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class PcmBlock:
    """Mono signed 16-bit samples at `rate`, `t_end` the monotonic time of the last sample."""

    samples: np.ndarray
    rate: int
    t_end: float
    seq: int = 0
    #: What the speaker played behind this block, aligned with its echo (`audio.echo: client-reference`):
    #: the uplink's second channel.
    reference: np.ndarray | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    @property
    def t_start(self) -> float:
        return self.t_end - self.duration_s


#: openWakeWord scores 80 ms chunks. While the device only listens, the capture thread reads a chunk's
#: periods in one go and the wake word thread is handed them in one batch, both on chunk boundaries
#: counted in block sequence numbers, so neither wakes more often than the model needs audio.
CHUNK_S = 0.08


def blocks_per_chunk(duration_s: float) -> int | None:
    """How many blocks of `duration_s` make one `CHUNK_S` chunk, or None if they do not divide it."""
    n = round(CHUNK_S / duration_s)
    return n if n >= 1 and abs(n * duration_s - CHUNK_S) < 1e-6 else None


#: A block whose peak is above this (about -54 dBFS) is sound, not digital or near silence: the
#: service sends silent RTP between replies, so "audio arrived" and "the assistant is talking" differ.
AUDIBLE = 64


#: Clearly sound: twice `AUDIBLE` (6 dB above). Opus coding can move a frame whose peak is close to
#: `AUDIBLE` to the other side of it, but not one above this.
CLEARLY_AUDIBLE = 2 * AUDIBLE


def is_audible(samples: np.ndarray, threshold: int = AUDIBLE) -> bool:
    """Whether the peak of int16 `samples` is above `threshold`. Two reductions in place of abs and a
    reduction: no temporary array, no numpy wrapper in Python (it runs 50 times a second on the event
    loop), and -32768, whose int16 abs is itself, counts as the loudest sample it is."""
    return samples.size > 0 and (int(samples.max()) > threshold or int(samples.min()) < -threshold)


def audible_ms(samples: np.ndarray, rate: int, threshold: int = AUDIBLE) -> float:
    """Milliseconds of mono `samples` that are sound, counted in 20 ms frames (`is_audible`): a reply's
    length less its pauses, for comparing what a service streamed with what a speaker played."""
    n = rate // 50
    frames = np.asarray(samples)[: len(samples) // n * n].reshape(-1, n)
    return 20.0 * sum(1 for f in frames if is_audible(f, threshold))
