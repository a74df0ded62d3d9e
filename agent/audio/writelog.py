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
from collections.abc import Iterator

import numpy as np

#: Audio writes remembered (80 s of 20 ms periods).
WRITES_KEPT = 4096
#: Times of audible writes remembered (160 s of 20 ms periods).
AUDIBLE_KEPT = 8192


class _Ring:
    """The last `size` rows of `columns` float64 values, oldest first when read."""

    def __init__(self, size: int, columns: int) -> None:
        self._rows = np.zeros((size, columns), np.float64)
        self._n = 0  # rows added in all
        self._lock = threading.Lock()

    def append(self, *values: float) -> None:
        with self._lock:
            self._rows[self._n % len(self._rows)] = values
            self._n += 1

    def clear(self) -> None:
        with self._lock:
            self._n = 0

    def ordered(self) -> np.ndarray:
        """A copy of the rows kept, oldest first."""
        with self._lock:
            size = len(self._rows)
            if self._n <= size:
                return self._rows[: self._n].copy()
            i = self._n % size
            return np.concatenate([self._rows[i:], self._rows[:i]])

    def __len__(self) -> int:
        return min(self._n, len(self._rows))


class WriteLog:
    """The last `size` audio writes: the stream position after each (rising), the time right after
    it, the position of its first sample and when that plays (positions stay exact as float64 up to
    2**53). Written by the playback thread, read from any."""

    def __init__(self, size: int = WRITES_KEPT) -> None:
        self._ring = _Ring(size, 4)

    def add(self, end_pos: int, t: float, start_pos: int, t_plays: float) -> None:
        self._ring.append(end_pos, t, start_pos, t_plays)

    def first_after(self, mark: int) -> tuple[int, float, int, float] | None:
        """The first write kept whose end lies after `mark` (end_pos, t, start_pos, t_plays), or None."""
        rows = self._ring.ordered()
        k = int(np.searchsorted(rows[:, 0], mark, side="right"))
        if k >= len(rows):
            return None
        end, t, start, t_plays = rows[k]
        return int(end), float(t), int(start), float(t_plays)


class TimeRing:
    """The last `size` times something happened (monotonic seconds), oldest first when read."""

    def __init__(self, size: int = AUDIBLE_KEPT) -> None:
        self._ring = _Ring(size, 1)

    def append(self, t: float) -> None:
        self._ring.append(t)

    def clear(self) -> None:
        self._ring.clear()

    def times(self) -> np.ndarray:
        return self._ring.ordered()[:, 0]

    def __iter__(self) -> Iterator[float]:
        return iter(self.times().tolist())

    def __len__(self) -> int:
        return len(self._ring)
