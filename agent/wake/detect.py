"""`voice-agent detect`: the service's wake word path on WAV files, and threshold tuning from them.

A recording goes through exactly what the microphone's audio goes through: cut into capture-sized
blocks (`audio.capture.period_ms` at the file's own rate, stamped with seconds from the file's start),
fed to `WakeWordDetector.process`, which resamples to 16 kHz and decides with the configured threshold,
trigger level and refractory period. Stereo files are averaged to mono (or one channel is picked). One
second of silence follows each file, so a wake word at the very end is still scored (openWakeWord fires
a few hundred ms after the phrase).

`--sweep` scores each file once, then replays the recorded scores through the same `ScoreGate` at each
threshold, and counts per threshold the wake files detected (hits), the wake files missed, and the
detections in files marked `--negative` (false wakes): the numbers a user needs to pick a threshold
from recordings of their own room.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import wave
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from ..audio.frames import PcmBlock
from ..config import Config, WakeConfig, WakeModelConfig
from ..errors import ConfigError
from .wakeword import Detection, ScoreGate, WakeWordDetector

log = logging.getLogger(__name__)

TAIL_S = 1.0
DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


class WavError(Exception):
    """A file that is not a WAV this command can read."""


def read_wav(path: Path, channel: int | None = None) -> tuple[np.ndarray, int]:
    """A PCM WAV file as mono int16 at its own rate: channels averaged, or `channel` picked (0-based).
    8, 16, 24 and 32-bit integer samples are accepted."""
    try:
        with wave.open(str(path)) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc})") from None
    except OSError as exc:
        raise WavError(f"{path}: {exc.strerror or exc}") from None
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        data = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8) >> 16  # sign-extend, keep the top 16 bits
    else:
        data = np.frombuffer(raw, dtype="<i4").astype(np.int64) >> 16
    frames = data[: len(data) // channels * channels].reshape(-1, channels)
    if channel is not None:
        if not 0 <= channel < channels:
            raise WavError(f"{path}: has {channels} channel(s), no channel {channel}")
        mono = frames[:, channel]
    else:
        mono = frames.mean(axis=1)
    return np.clip(np.rint(mono), -32768, 32767).astype(np.int16), rate


def file_blocks(samples: np.ndarray, rate: int, period_ms: int, tail_s: float = TAIL_S) -> Iterator[PcmBlock]:
    """Capture-sized blocks of `samples` (then `tail_s` of silence), `t_end` in seconds from the start."""
    period = max(1, rate * period_ms // 1000)
    padded = np.concatenate([samples, np.zeros(int(tail_s * rate), dtype=np.int16)])
    for seq, i in enumerate(range(0, len(padded), period)):
        chunk = padded[i : i + period]
        yield PcmBlock(chunk, rate, (i + len(chunk)) / rate, seq)


@dataclass
class FileResult:
    path: str
    negative: bool = False
    duration_s: float = 0.0
    detections: list[Detection] = field(default_factory=list)
    peaks: dict[str, float] = field(default_factory=dict)
    #: every frame's (t_end, {model: score}), kept for a sweep
    frames: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.path, "error": self.error}
        return {
            "file": self.path,
            "detections": [
                {"model": d.model, "t": round(d.t_end, 3), "score": round(d.score, 4),
                 "t_phrase_end": round(d.t_phrase_end, 3)}
                for d in self.detections
            ],
        }


def detect_file(
    detector: WakeWordDetector,
    path: Path,
    *,
    period_ms: int = 20,
    channel: int | None = None,
    negative: bool = False,
    keep_frames: bool = False,
) -> FileResult:
    """Run one file through a (reset) detector."""
    result = FileResult(str(path), negative)
    try:
        samples, rate = read_wav(path, channel)
    except WavError as exc:
        result.error = str(exc)
        return result
    result.duration_s = len(samples) / rate
    detector.reset()
    peaks = dict.fromkeys(detector.names, 0.0)

    def on_scores(t_end: float, scores: dict[str, float]) -> None:
        for name, score in scores.items():
            peaks[name] = max(peaks[name], score)
        if keep_frames:
            result.frames.append((t_end, dict(scores)))

    detector.on_scores = on_scores
    try:
        for block in file_blocks(samples, rate, period_ms):
            result.detections += detector.process(block)
    finally:
        detector.on_scores = None
    result.peaks = peaks
    return result


# --------------------------------------------------------------------------------------------------
# Threshold sweep


@dataclass(frozen=True)
class SweepRow:
    threshold: float
    hits: int
    misses: int
    false_wakes: int
    missed_files: tuple[str, ...]
    false_wake_files: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"missed_files": list(self.missed_files)}


def count_detections(frames: Sequence[tuple[float, dict[str, float]]], model: WakeModelConfig, threshold: float) -> int:
    """How many times `model` fires over recorded frames at `threshold` (its trigger level and
    refractory period kept): the service's decision, replayed."""
    gate = ScoreGate(threshold, model.trigger_level, model.refractory_s)
    return sum(gate.update(t, scores.get(model.name, 0.0)) is not None for t, scores in frames)


def sweep(
    results: Sequence[FileResult], models: Sequence[WakeModelConfig], thresholds: Sequence[float]
) -> list[SweepRow]:
    """Hits, misses and false wakes at each threshold (every model at the same threshold)."""
    rows = []
    readable = [r for r in results if r.error is None]
    for thr in thresholds:
        counts = {r.path: sum(count_detections(r.frames, m, thr) for m in models) for r in readable}
        positives = [r for r in readable if not r.negative]
        missed = tuple(r.path for r in positives if counts[r.path] == 0)
        false = {r.path: counts[r.path] for r in readable if r.negative and counts[r.path]}
        rows.append(SweepRow(thr, len(positives) - len(missed), len(missed), sum(false.values()), missed, false))
    return rows


def suggest_threshold(rows: Sequence[SweepRow]) -> float | None:
    """The middle of the thresholds with no false wake and the most hits (margin both ways), or None
    if every threshold has false wakes."""
    clean = [r for r in rows if r.false_wakes == 0]
    if not clean:
        return None
    best = max(r.hits for r in clean)
    candidates = [r.threshold for r in clean if r.hits == best]
    return candidates[len(candidates) // 2]


# --------------------------------------------------------------------------------------------------
# The command


def wake_config_for(
    config: Config, models: Sequence[str], threshold: float | None, framework: str | None
) -> WakeConfig:
    """The configured wake section, with the command line's models, threshold and framework over it."""
    wake = config.wake
    chosen = tuple(WakeModelConfig(name) for name in models) if models else wake.models
    if threshold is not None:
        chosen = tuple(dataclasses.replace(m, threshold=threshold) for m in chosen)
    return dataclasses.replace(wake, models=chosen, inference_framework=framework or wake.inference_framework)


def run_detect(
    config: Config,
    files: Sequence[Path],
    negatives: Sequence[Path] = (),
    *,
    as_json: bool = False,
    do_sweep: bool = False,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    channel: int | None = None,
    out: TextIO | None = None,
) -> int:
    """Print detections (or the sweep) for the files; 0 if every file was read, 2 if some were not."""
    out = out or sys.stdout
    if not files and not negatives:
        raise ConfigError("detect", "name at least one WAV file")
    detector = WakeWordDetector(config.wake)
    period_ms = config.audio.capture.period_ms
    results: list[FileResult] = []
    try:
        for path, negative in [(f, False) for f in files] + [(f, True) for f in negatives]:
            result = detect_file(detector, path, period_ms=period_ms, channel=channel, negative=negative,
                                 keep_frames=do_sweep)
            results.append(result)
            if result.error is not None:
                print(f"voice-agent detect: {result.error}", file=sys.stderr)
            if not do_sweep:
                _print_file(result, as_json, out)
    finally:
        detector.close()
    if do_sweep:
        rows = sweep(results, config.wake.models, thresholds)
        _print_sweep(results, rows, as_json, out)
    return 2 if any(r.error for r in results) else 0


def _print_file(result: FileResult, as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(result.to_json()), file=out, flush=True)
        return
    if result.error is not None:
        return
    if not result.detections:
        peaks = ", ".join(f"{m} {s:.2f}" for m, s in result.peaks.items())
        print(f"{result.path}: no wake word (peak score {peaks})", file=out)
    for d in result.detections:
        print(
            f"{result.path}: {d.model} at {d.t_end:.2f} s (score {d.score:.2f}; phrase ended ~{d.t_phrase_end:.2f} s)",
            file=out,
        )


def _print_sweep(results: Sequence[FileResult], rows: Sequence[SweepRow], as_json: bool, out: TextIO) -> None:
    readable = [r for r in results if r.error is None]
    suggested = suggest_threshold(rows)
    if as_json:
        print(json.dumps({
            "thresholds": [r.to_json() for r in rows],
            "files": [{"file": r.path, "negative": r.negative, "peak": {m: round(s, 4) for m, s in r.peaks.items()}}
                      for r in readable],
            "suggested_threshold": suggested,
        }), file=out)
        return
    n_pos = sum(not r.negative for r in readable)
    n_neg = len(readable) - n_pos
    print(f"{n_pos} wake file(s), {n_neg} negative file(s)", file=out)
    print(f"{'threshold':>9}  {'hits':>6}  {'misses':>6}  {'false wakes':>11}", file=out)
    for r in rows:
        print(f"{r.threshold:>9.2f}  {r.hits:>6}  {r.misses:>6}  {r.false_wakes:>11}", file=out)
    if suggested is None:
        print("every threshold has false wakes: record more negatives, or try trigger_level 2-3", file=out)
    else:
        print(f"suggested threshold: {suggested:.2f} (most hits without a false wake, in the middle of the range)",
              file=out)
