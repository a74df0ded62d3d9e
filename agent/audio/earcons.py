"""Earcons: short sounds for wake, connected, error and goodbye, played through the normal playback
path (so they obey its volume and buffer, and a barge-in flush silences them too).

The sounds are loaded once at start-up, so a missing or unreadable custom file is a configuration error
at start, not a surprise at the first wake word.
"""

from __future__ import annotations

import logging
import wave
from importlib import resources
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..config import EarconConfig
from ..errors import ConfigError

log = logging.getLogger(__name__)

Name = Literal["wake", "connected", "error", "goodbye", "timer"]
NAMES: tuple[Name, ...] = ("wake", "connected", "error", "goodbye", "timer")


def chime(rate: int = 16000) -> np.ndarray:
    """The built-in timer sound: three short rising tones (a kitchen timer's, made here, not shipped)."""
    parts = []
    for f in (880.0, 1100.0, 1320.0):
        t = np.arange(int(0.12 * rate)) / rate
        env = np.minimum(1.0, t / 0.005) * np.exp(-t / 0.05)
        parts += [np.sin(2 * np.pi * f * t) * env * 12000, np.zeros(int(0.04 * rate))]
    return np.concatenate(parts).astype(np.int16)


class PcmSink(Protocol):
    def write_pcm(self, samples: np.ndarray, rate: int) -> None: ...


def read_wav(path: Path, key: str) -> tuple[np.ndarray, int]:
    """A 16-bit WAV as mono int16 and its rate; ConfigError naming `key` if it is not one."""
    try:
        with wave.open(str(path)) as w:
            if w.getsampwidth() != 2:
                raise ConfigError(key, f"{path} is {8 * w.getsampwidth()}-bit; use a 16-bit PCM WAV")
            rate, channels = w.getframerate(), w.getnchannels()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error) as exc:
        raise ConfigError(key, f"cannot read {path} as a WAV file: {exc}") from None
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data, rate


class Earcons:
    def __init__(self, cfg: EarconConfig) -> None:
        self._sounds: dict[str, tuple[np.ndarray, int]] = {}
        for name in NAMES:
            choice = getattr(cfg, name)
            if choice is None:
                continue
            key = f"audio.earcons.{name}"
            if choice == "builtin" and name == "timer":
                samples, rate = chime(), 16000
            elif choice == "builtin":
                with resources.as_file(resources.files("agent") / "assets" / f"{name}.wav") as p:
                    samples, rate = read_wav(p, key)
            else:
                samples, rate = read_wav(Path(choice).expanduser(), key)
            scaled = np.clip(samples.astype(np.float32) * cfg.volume, -32768, 32767).astype(np.int16)
            self._sounds[name] = (scaled, rate)

    def has(self, name: Name) -> bool:
        return name in self._sounds

    def duration_s(self, name: Name) -> float:
        samples, rate = self._sounds.get(name, (np.zeros(0), 1))
        return len(samples) / rate

    def play(self, name: Name, sink: PcmSink) -> None:
        sound = self._sounds.get(name)
        if sound is not None:
            sink.write_pcm(*sound)
