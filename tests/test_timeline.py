"""The ring both the echo reference and the room's speaker keep sound in (agent.audio.timeline)."""

from __future__ import annotations

import numpy as np

from agent.audio.timeline import SampleTimeline


def test_reads_forget_what_they_went_past_and_late_writes_are_not_kept() -> None:
    tl = SampleTimeline(1000, 1.0, t0=10.0)  # a 1000-sample ring
    assert tl.index(10.5) == 500
    tl.put(0, np.arange(1, 301, dtype=np.float32))
    # overlapping windows (the room's convolution history): only what lies before `forget_until` goes
    np.testing.assert_array_equal(tl.read(0, 200, forget_until=100), np.arange(1, 201))
    np.testing.assert_array_equal(tl.read(0, 200, forget_until=200)[100:], np.arange(101, 201))
    assert not tl.read(0, 200, forget_until=200).any()
    # a write partly before where the reader got to: only its part after it is kept
    tl.put(150, np.full(100, 7, np.float32))
    np.testing.assert_array_equal(tl.read(200, 60, forget_until=200), np.r_[np.full(50, 7), np.arange(251, 261)])
    # a flush forgets from where it came, never before what was read
    tl.put(400, np.full(100, 9, np.float32))
    tl.zero(450, 500)
    np.testing.assert_array_equal(tl.read(400, 100, forget_until=500), np.r_[np.full(50, 9), np.zeros(50)])
    # the ring wraps: an index a ring further on lands in the same slot, and what was read is gone
    tl.put(1400, np.full(10, 3, np.float32))
    assert tl.read(1400, 10, forget_until=1410).tolist() == [3.0] * 10
    assert not tl.read(400, 100, forget_until=400).any()
