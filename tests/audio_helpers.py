"""Helpers for the audio tests: signals, WAV reading, frequency checks, bounded waits, fake PCMs."""

from __future__ import annotations

import asyncio
import errno
import fractions
import time
import wave
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import alsaaudio
import av
import numpy as np


def sine(freq: float, seconds: float, rate: int, amplitude: float = 10000.0, phase_samples: int = 0) -> np.ndarray:
    """A mono int16 sine."""
    n = round(seconds * rate)
    t = (np.arange(n) + phase_samples) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def noise(seconds: float, rate: int, seed: int = 1) -> np.ndarray:
    """Mono int16 white noise over the full range: every sample value matters for byte-exact checks."""
    rng = np.random.default_rng(seed)
    return rng.integers(-32768, 32768, round(seconds * rate), dtype=np.int16)


def interleave(*channels: np.ndarray) -> np.ndarray:
    return np.stack(channels, axis=1).reshape(-1)


def av_frames(
    samples: np.ndarray, rate: int = 48000, channels: int = 2, frame_samples: int = 960, pts0: int = 0
) -> list[av.AudioFrame]:
    """Mono int16 samples as a list of s16 packed frames, like aiortc's remote audio (48 kHz stereo, 960)."""
    layout = {1: "mono", 2: "stereo"}[channels]
    out = []
    for i in range(0, len(samples) - frame_samples + 1, frame_samples):
        chunk = samples[i : i + frame_samples]
        data = np.repeat(chunk, channels).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
        frame.sample_rate = rate
        frame.pts = pts0 + i
        frame.time_base = fractions.Fraction(1, rate)
        out.append(frame)
    return out


def read_wav(path: Path) -> tuple[int, int, np.ndarray]:
    """(rate, channels, int16 frames shaped (n, channels))."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        assert width == 2, f"{path}: {8 * width}-bit, expected 16"
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return rate, channels, data.reshape(-1, channels)


def active_span(samples: np.ndarray, threshold: int = 200) -> tuple[int, int]:
    """[first, last] index where |sample| exceeds threshold (mono); (0, -1) if none."""
    idx = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    return (int(idx[0]), int(idx[-1])) if len(idx) else (0, -1)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency of the strongest FFT bin (Hann window), refined by parabolic interpolation."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    k = int(np.argmax(spectrum[1:])) + 1
    if 1 <= k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return k * rate / len(samples)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll `predicate` every 5 ms; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.005)


class FakePcm:
    """A stand-in for `alsaaudio.PCM` that plays a script, for the cases the file plugin cannot
    produce (overruns, xruns, a device that fails mid-stream). Each script item is a read result
    `(n, bytes)`, an exception to raise, or for writes a return value / exception."""

    def __init__(self, script: Iterable[Any], period_s: float, info: dict[str, Any]) -> None:
        self._script = list(script)
        self._period_s = period_s
        self._info = info
        self.closed = False
        self.written: list[bytes] = []

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    def _next(self) -> Any:
        time.sleep(self._period_s)  # a live device blocks about a period per call
        if not self._script:
            return None
        item = self._script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def read(self) -> tuple[int, bytes]:
        item = self._next()
        if item is None:
            n = self._info["period_size"]
            return n, bytes(2 * n * self._info["channels"])
        return item

    def write(self, data: bytes | np.ndarray) -> int:
        item = self._next()
        self.written.append(bytes(data))  # alsaaudio takes any C-contiguous buffer, as AlsaPlayback gives
        return len(self.written[-1]) // (2 * self._info["channels"]) if item is None else item

    def avail(self) -> int:
        return self._info["buffer_size"]

    def drop(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakePcmFactory:
    """Returns scripted FakePcms in turn (an exception in the list makes that open fail)."""

    def __init__(self, opens: list[Any], period_s: float, pcm_type: type[FakePcm] | None = None) -> None:
        self._opens = list(opens)
        self._period_s = period_s
        self._pcm_type = pcm_type or FakePcm  # what the opens that are not probes return
        self.opened: list[FakePcm] = []

    def __call__(self, **kw: Any) -> FakePcm:
        probe = kw.get("mode") == alsaaudio.PCM_NONBLOCK  # open_pcm's busy probe: fails like the open
        item = (self._opens[0] if probe else self._opens.pop(0)) if self._opens else []
        if isinstance(item, BaseException):
            if probe:
                self._opens.pop(0)
            raise item
        if probe:
            item = []
        info = {
            "rate": kw["rate"],
            "channels": kw["channels"],
            "format": kw["format"],
            "format_name": "S16_LE",
            "period_size": kw["periodsize"],
            "buffer_size": kw["periodsize"] * kw.get("periods", 4),
        }
        if probe:
            return FakePcm(item, self._period_s, info)
        pcm = self._pcm_type(item, self._period_s, info)
        self.opened.append(pcm)
        return pcm


EPIPE = -errno.EPIPE
