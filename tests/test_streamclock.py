"""The capture's stamps (agent.audio.streamclock) from read-return times that a busy scheduler delays."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio.streamclock import STEP_WINDOW_S, StreamClock

RATE, N = 16000, 320


def reads(seconds: float, *, ppm: float = 0.0, late_ms: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True capture times of each block's last sample (a device clock `ppm` off ours, starting at 5 s),
    and when each read returned: 0.2 ms after, plus, for a third of the reads, up to `late_ms` more (and
    never before the read before it: the next read starts when one returns)."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, int(seconds * RATE / N) + 1)
    truth = 5.0 + k * N / RATE * (1 + ppm * 1e-6)
    late = np.where(rng.random(len(k)) < 1 / 3, rng.random(len(k)) * late_ms, 0.0)
    return truth, np.maximum.accumulate(truth + 0.0002 + late / 1000)


def stamps(clock: StreamClock, returned: np.ndarray) -> np.ndarray:
    return np.array([clock.stamp(float(t), N) for t in returned])


def test_a_late_read_does_not_move_the_stamps() -> None:
    truth, returned = reads(20, late_ms=30)
    got = stamps(StreamClock(RATE), returned)
    assert np.all(got <= returned)  # never after the read returned
    assert np.all(np.diff(got) >= 0)
    err = np.abs(got - truth)[50:]  # after the first second
    assert err.max() < 0.0015  # the reads themselves were up to 30 ms late
    assert np.abs(np.diff(got)[50:] - N / RATE).max() < 0.0005  # a steady 20 ms a block


@pytest.mark.parametrize("ppm", [-200.0, 200.0])
def test_a_device_clock_that_drifts_is_followed(ppm: float) -> None:
    truth, returned = reads(120, ppm=ppm, late_ms=20, seed=1)
    got = stamps(StreamClock(RATE), returned)
    assert np.abs(got - truth)[-500:].max() < 0.002  # after two minutes (24 ms of drift)


def test_a_stream_that_moved_later_is_followed_and_an_overrun_starts_anew() -> None:
    truth, returned = reads(10, late_ms=5, seed=2)
    half = len(truth) // 2
    truth[half:] += 0.08  # 80 ms of samples lost without an overrun said
    returned[half:] += 0.08
    clock = StreamClock(RATE)
    got = stamps(clock, returned)
    assert clock.steps == 1
    settle = half + int((STEP_WINDOW_S + 0.1) * RATE / N)
    assert np.abs(got - truth)[settle:].max() < 0.002
    clock.reset()
    assert clock.stamp(100.0, N) == pytest.approx(100.0)
