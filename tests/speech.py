"""Test speech: espeak-ng (installed by install.sh) through the same helpers the benchmarks use, and reply
WAVs for the emulator's `--reply file` with pauses between sentences.

A real reply has quiet stretches between sentences. Replies built here have 0.4 to 0.8 s of digital
silence between espeak-ng sentences, so a client bug such as "drop the rest of the reply until the first
quiet frame" (instead of until the reply really ended) shows up as missing sentences.
"""

from __future__ import annotations

import itertools
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.bench.speech import espeak, quiet

brown_noise = quiet

RATE = 16000
#: A short reply: three sentences, about 8 s with its pauses.
REPLY_SENTENCES = (
    "It is a quarter past ten in the morning.",
    "The weather is mild, with a light breeze from the west.",
    "Is there anything else I can do for you?",
)
#: The silence after each sentence, in turn.
PAUSES_S = (0.4, 0.6, 0.8)
#: Sentences repeated (cycled) to make a long reply.
LONG_SENTENCES = (
    "Here is the news for this morning.",
    "The trains are running on time on every line.",
    "A band of rain moves in from the coast this afternoon.",
    "Temperatures stay between eight and fourteen degrees.",
    "The market opened a little higher than yesterday.",
    "That is all for now.",
)


@dataclass(frozen=True)
class PausingReply:
    """16 kHz mono int16 speech, and where its pauses are (seconds from the start, end excluded)."""

    samples: np.ndarray
    pauses: tuple[tuple[float, float], ...]

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE

    def write(self, path: Path) -> Path:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(self.samples.astype("<i2").tobytes())
        return path


def sentences_with_pauses(
    sentences: tuple[str, ...] = REPLY_SENTENCES,
    pauses_s: tuple[float, ...] = PAUSES_S,
    voice: str = "en-us",
    wpm: int = 160,
) -> PausingReply:
    """`sentences` spoken by espeak-ng, each followed by digital silence (`pauses_s` in turn, cycled),
    except the last."""
    parts: list[np.ndarray] = []
    pauses: list[tuple[float, float]] = []
    n = 0
    for i, (sentence, pause) in enumerate(zip(sentences, itertools.cycle(pauses_s), strict=False)):
        speech = espeak(sentence, voice, wpm)
        parts.append(speech)
        n += len(speech)
        if i < len(sentences) - 1:
            gap = np.zeros(int(pause * RATE), dtype=np.int16)
            pauses.append((n / RATE, (n + len(gap)) / RATE))
            parts.append(gap)
            n += len(gap)
    return PausingReply(np.concatenate(parts), tuple(pauses))


def long_reply(seconds: float = 20.0) -> PausingReply:
    """A reply of at least `seconds`, `LONG_SENTENCES` cycled, with `PAUSES_S` between them."""
    sentences: list[str] = []
    total = 0.0
    for sentence in itertools.cycle(LONG_SENTENCES):
        sentences.append(sentence)
        total += len(espeak(sentence, "en-us", 160)) / RATE + max(PAUSES_S)
        if total >= seconds + 2 * max(PAUSES_S):
            break
    return sentences_with_pauses(tuple(sentences))


def write_reply_wav(path: Path, *, long: bool = False) -> PausingReply:
    """Write the short reply (or the 20 s one) as a 16 kHz mono WAV for `EmulatorSettings.reply_wav`."""
    reply = long_reply() if long else sentences_with_pauses()
    reply.write(path)
    return reply


__all__ = ["PausingReply", "brown_noise", "espeak", "long_reply", "sentences_with_pauses", "write_reply_wav"]
