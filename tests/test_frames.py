"""What counts as sound (`frames.is_audible`): the peak against a threshold, either sign."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio.frames import AUDIBLE, is_audible


@pytest.mark.parametrize(
    ("peak", "audible"),
    [(0, False), (AUDIBLE, False), (-AUDIBLE, False), (AUDIBLE + 1, True), (-AUDIBLE - 1, True),
     (32767, True), (-32768, True)],
)  # fmt: skip
def test_the_peak_of_either_sign_decides(peak: int, audible: bool) -> None:
    samples = np.zeros(960, np.int16)
    samples[123] = peak
    assert is_audible(samples) is audible
    assert is_audible(samples.reshape(-1, 2)) is audible  # interleaved frames too


def test_nothing_is_not_audible() -> None:
    assert not is_audible(np.zeros(0, np.int16))
    assert not is_audible(np.full(960, -32768, np.int16)[:0])
    assert is_audible(np.full(960, -32768, np.int16))  # np.abs(-32768) is -32768 in int16: not a quiet frame
