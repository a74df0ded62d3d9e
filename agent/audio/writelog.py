"""What the playback wrote, and when, in memory taken once.

The playback remembers its recent audio writes (for the latency a reply took to reach the speaker, and
for the benchmarks' view of what was audible). Kept as deques of tuples and floats, that memory grew
with every conversation until the deques filled: a soak under tracemalloc found the two deques the
largest growth after warm-up (about 90 writes a conversation, a deque of 4096 four-tuples full only
after some 50 conversations, one of 8192 floats after some 100: about 1 MB, read by RSS as a creep).
Here the same records live in numpy rings allocated at start (192 KB in all), so the process's memory
after warm-up is what it stays.
"""

from __future__ import annotations

import threading

import numpy as np

#: Audio writes remembered (80 s of 20 ms periods).
WRITES_KEPT = 4096
#: Times of audible writes remembered (160 s of 20 ms periods).
AUDIBLE_KEPT = 8192


class WriteLog:
    """The last `size` audio writes: the stream position after each (rising), the time right after
    it, the position of its first sample and when that plays. Written by the playback thread, read
    from any (under a lock)."""

    def __init__(self, size: int = WRITES_KEPT) -> None:
        self._end = np.zeros(size, np.int64)
        self._start = np.zeros(size, np.int64)
        self._t = np.zeros(size, np.float64)
        self._t_plays = np.zeros(size, np.float64)
        self._n = 0  # writes logged in all
        self._lock = threading.Lock()

    def add(self, end_pos: int, t: float, start_pos: int, t_plays: float) -> None:
        with self._lock:
            i = self._n % len(self._end)
            self._end[i], self._t[i], self._start[i], self._t_plays[i] = end_pos, t, start_pos, t_plays
            self._n += 1

    def first_after(self, mark: int) -> tuple[int, float, int, float] | None:
        """The first write kept whose end lies after `mark` (end_pos, t, start_pos, t_plays), or None."""
        with self._lock:
            size = len(self._end)
            kept = min(self._n, size)
            first = (self._n - kept) % size  # the oldest kept
            order = (first + np.arange(kept)) % size
            k = int(np.searchsorted(self._end[order], mark, side="right"))
            if k >= kept:
                return None
            i = int(order[k])
            return int(self._end[i]), float(self._t[i]), int(self._start[i]), float(self._t_plays[i])


class TimeRing:
    """The last `size` times something happened (monotonic seconds), oldest first when read."""

    def __init__(self, size: int = AUDIBLE_KEPT) -> None:
        self._t = np.zeros(size, np.float64)
        self._n = 0
        self._lock = threading.Lock()

    def append(self, t: float) -> None:
        with self._lock:
            self._t[self._n % len(self._t)] = t
            self._n += 1

    def clear(self) -> None:
        with self._lock:
            self._n = 0

    def times(self) -> np.ndarray:
        with self._lock:
            size = len(self._t)
            if self._n <= size:
                return self._t[: self._n].copy()
            i = self._n % size
            return np.concatenate([self._t[i:], self._t[:i]])

    def __iter__(self):
        return iter(self.times().tolist())

    def __len__(self) -> int:
        return min(self._n, len(self._t))
