"""What the emulator says back: the caller's own words (parrot) or a WAV file, with a transcript and usage.

Parrot mode makes the audio path testable end to end: what the client hears must match what it sent, which
a cross-correlation can check. File mode gives the demo a fixed answer. Token counts follow the documented
rule of thumb (about 10 input and 20 output audio tokens per second, voicelive-webrtc.md section 6), so
cost accounting in the client sees plausible numbers.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from .tracks import FRAME_SAMPLES, RATE

log = logging.getLogger(__name__)

INPUT_TOKENS_PER_S = 10
OUTPUT_TOKENS_PER_S = 20


@dataclass(frozen=True)
class Reply:
    """One reply's audio (48 kHz mono int16, at least one frame long) and its transcript."""

    samples: np.ndarray
    transcript: str

    @property
    def duration_s(self) -> float:
        return len(self.samples) / RATE


def _at_least_one_frame(samples: np.ndarray) -> np.ndarray:
    if len(samples) >= FRAME_SAMPLES:
        return samples
    return np.concatenate([samples, np.zeros(FRAME_SAMPLES - len(samples), dtype=np.int16)])


def parrot_reply(utterance: np.ndarray, speech_s: float) -> Reply:
    """Replay the caller's utterance (with its prefix padding)."""
    return Reply(
        _at_least_one_frame(utterance.astype(np.int16, copy=False)),
        f"You said something {speech_s:.1f} seconds long.",
    )


def beep_reply(seconds: float = 0.4, hz: float = 660.0) -> Reply:
    """What parrot mode says to `response.create` before the caller has said anything."""
    t = np.arange(int(seconds * RATE)) / RATE
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
    samples = (0.3 * 32767 * np.sin(2 * np.pi * hz * t) * fade).astype(np.int16)
    return Reply(_at_least_one_frame(samples), "You have not said anything yet.")


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int) -> np.ndarray:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    parts: list[np.ndarray] = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
    for out in resampler.resample(None):
        parts.append(out.to_ndarray().reshape(-1))
    samples = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, dtype=np.int16)
    samples.setflags(write=False)
    return samples


def load_audio_48k_mono(path: Path) -> np.ndarray:
    """Any audio file PyAV can read (WAV of any rate and channel count), as 48 kHz mono int16."""
    return _load_cached(str(path), path.stat().st_mtime_ns)


def file_reply(path: Path) -> Reply:
    samples = load_audio_48k_mono(path)
    return Reply(_at_least_one_frame(samples), f"This is the recorded reply from {path.name}.")


def usage(input_s: float, output_s: float, transcript: str) -> dict[str, Any]:
    """A `response.done` usage block: audio tokens by duration, text tokens by words."""
    audio_in = round(input_s * INPUT_TOKENS_PER_S)
    audio_out = round(output_s * OUTPUT_TOKENS_PER_S)
    text_out = len(transcript.split())
    input_tokens = audio_in
    output_tokens = audio_out + text_out
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {"cached_tokens": 0, "text_tokens": 0, "audio_tokens": audio_in},
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def transcript_deltas(transcript: str, parts: int = 4) -> list[str]:
    """Split a transcript into a few deltas that join back to it exactly."""
    words = transcript.split(" ")
    size = max(1, -(-len(words) // parts))
    chunks = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [c if i == 0 else " " + c for i, c in enumerate(chunks)]
