"""Test speech from espeak-ng, for the benchmarks and the tests: real speech, so Opus and the wake word
model treat it as they treat a voice (a synthetic tone with a gliding pitch loses its waveform in
Opus's pitch filter)."""

from __future__ import annotations

import functools
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from ..audio.resample import convert_pcm


@functools.lru_cache(maxsize=64)
def _espeak(text: str, voice: str, wpm: int) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(out), text], check=True, timeout=30)
        with wave.open(str(out)) as w:
            rate = w.getframerate()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    speech = convert_pcm(data, rate, 16000).astype(np.float64)
    loud = np.flatnonzero(np.abs(speech) > 0.02 * np.max(np.abs(speech)))
    speech = speech[loud[0] : loud[-1] + 1]  # espeak pads its output with silence: trim it
    speech *= (10 ** (-3 / 20)) * 32767 / max(1.0, float(np.max(np.abs(speech))))  # -3 dBFS peak
    return speech.astype("<i2").tobytes()


def espeak(text: str, voice: str = "en-us", wpm: int = 150) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz mono int16, trimmed, peak-normalised to -3 dBFS."""
    return np.frombuffer(_espeak(text, voice, wpm), dtype=np.int16).copy()


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """Mono int16 samples as a 16-bit PCM WAV (a reply for the emulator's `--reply file`)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def quiet(seconds: float, level: float = 0.01, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """Low brown noise, a quiet room far below any VAD threshold, to pad speech with."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.standard_normal(max(1, int(seconds * rate))))
    walk -= np.linspace(walk[0], walk[-1], walk.size)
    walk /= max(1e-9, float(np.max(np.abs(walk))))
    return (walk * level * 32767).astype(np.int16)
