"""Sound on one clock: mono samples kept by their absolute index, `index(t) = round((t - t0) * rate)`.

Two parts of the project keep what a speaker played by the time it plays and read it back from
another thread by the time a microphone hears it: the echo canceller's reference (agent.audio.echo,
written by the playback thread, read by the capture thread) and the simulated room's speaker
(agent.room, written by its DAC thread, read by its microphone thread). Both need the same ring: a
write lands where its samples play, a read returns what lies there, and what the reader has gone past
is forgotten (zeroed), so the ring never hands out old sound once it wraps.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class SampleTimeline:
    """A ring of `seconds` of mono samples at `rate`, by absolute index. One writer thread and one
    reader thread; every method takes the lock."""

    def __init__(self, rate: int, seconds: float, t0: float | None = None, dtype: type = np.float32) -> None:
        self.rate = rate
        self.t0 = time.monotonic() if t0 is None else t0
        self._buf = np.zeros(int(seconds * rate), dtype)
        self._lock = threading.Lock()
        self._read = 0  # the reader has gone past every index below this: those are zero

    @property
    def size(self) -> int:
        return len(self._buf)

    def index(self, t: float) -> int:
        return round((t - self.t0) * self.rate)

    def put(self, start: int, samples: np.ndarray) -> None:
        """`samples` from index `start`. What the reader has already gone past is not written (it was
        played before anyone could hear it)."""
        with self._lock:
            skip = max(0, self._read - start)
            if skip < len(samples):
                self._buf[np.arange(start + skip, start + len(samples)) % self.size] = samples[skip:]

    def read(self, start: int, count: int, forget_until: int) -> np.ndarray:
        """A copy of samples [start, start + count); then everything before `forget_until` is forgotten
        (a reader that reads overlapping windows forgets only what it will not read again)."""
        with self._lock:
            out = self._buf[np.arange(start, start + count) % self.size]
            self._forget(forget_until)
        return out

    def zero(self, a: int, b: int) -> None:
        """Forget [a, b) (a flush: what was to play there never will)."""
        with self._lock:
            self._zero(max(a, self._read, b - self.size), b)

    def _forget(self, until: int) -> None:
        if until > self._read:
            # more than half the ring behind: only its last half can still hold anything (a writer
            # is never that far ahead of the reader), and the newest written may lie past `until`
            self._zero(max(self._read, until - self.size // 2), until)
            self._read = until

    def _zero(self, a: int, b: int) -> None:
        if b > a:
            self._buf[np.arange(a, b) % self.size] = 0
