"""The playback's write records in rings allocated once (agent.audio.writelog)."""

from __future__ import annotations

import numpy as np

from agent.audio.writelog import TimeRing, WriteLog


def test_the_write_log_finds_the_first_write_after_a_mark_across_the_wrap() -> None:
    log = WriteLog(size=8)
    for k in range(20):  # 20 writes of 960 frames; only the last 8 are kept
        log.add((k + 1) * 960, 100.0 + k * 0.02, k * 960, 100.04 + k * 0.02)
    assert log.first_after(3 * 960)[0] == 13 * 960  # type: ignore[index]  # (forgotten: the oldest kept, as before)
    end, t, start, t_plays = log.first_after(14 * 960 + 5)  # type: ignore[misc]
    assert (end, start) == (15 * 960, 14 * 960) and t == 100.0 + 14 * 0.02 and t_plays == 100.04 + 14 * 0.02
    assert log.first_after(19 * 960 + 10)[0] == 20 * 960  # type: ignore[index]
    assert log.first_after(20 * 960) is None  # nothing written after it yet


def test_the_time_ring_reads_oldest_first_and_keeps_its_size() -> None:
    ring = TimeRing(size=4)
    for t in range(6):
        ring.append(float(t))
    assert list(ring) == [2.0, 3.0, 4.0, 5.0] and len(ring) == 4 and max(ring) == 5.0
    np.testing.assert_array_equal(ring.times(), [2.0, 3.0, 4.0, 5.0])
    ring.clear()
    assert list(ring) == [] and len(ring) == 0
