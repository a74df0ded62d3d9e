"""A plain energy VAD, standing in for the service's `server_vad` turn detection.

The agent only needs the service's turn events at realistic moments (speech_started soon after the caller
starts, speech_stopped after `silence_duration_ms` of quiet), not a good speech detector: loudness per
20 ms frame against a dBFS threshold is enough, deterministic, and cheap on two cores. Times are counted
in samples of the audio received so far, so `audio_start_ms`/`audio_end_ms` are positions in the caller's
audio stream, as in the service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return -math.inf
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64)))))
    return 20.0 * math.log10(rms / 32768.0) if rms > 0 else -math.inf


@dataclass(frozen=True)
class VadEvent:
    """`start`: speech began at `ms`; `stop`: speech ended at `ms` (where the closing silence began)."""

    kind: Literal["start", "stop"]
    ms: int


class EnergyVad:
    """Speech after `speech_start_ms` above the threshold; its end after `silence_ms` below it.

    The reported times mark the boundaries themselves, not the moments of detection: `start` is the
    onset of the loud run (so minus the detection lag), `stop` is where the silence began.
    """

    def __init__(self, threshold_dbfs: float, speech_start_ms: int, silence_ms: int, rate: int = 48000) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.speech_start_ms = speech_start_ms
        self.silence_ms = silence_ms
        self.rate = rate
        self.in_speech = False
        self._pos = 0  # samples seen
        self._run_start: int | None = None  # sample where the current loud (or quiet) run began

    @property
    def position_ms(self) -> int:
        return self._ms(self._pos)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self.rate

    def process(self, frame: np.ndarray) -> VadEvent | None:
        """Feed one frame of mono int16 samples; returns an event when the state changes."""
        start = self._pos
        self._pos += len(frame)
        loud = rms_dbfs(frame) > self.threshold_dbfs
        if not self.in_speech:
            if not loud:
                self._run_start = None
                return None
            if self._run_start is None:
                self._run_start = start
            if self._ms(self._pos - self._run_start) >= self.speech_start_ms:
                self.in_speech = True
                onset, self._run_start = self._run_start, None
                return VadEvent("start", self._ms(onset))
            return None
        if loud:
            self._run_start = None
            return None
        if self._run_start is None:
            self._run_start = start
        if self._ms(self._pos - self._run_start) >= self.silence_ms:
            self.in_speech = False
            end, self._run_start = self._run_start, None
            return VadEvent("stop", self._ms(end))
        return None
