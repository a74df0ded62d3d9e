"""Wake word detection with openWakeWord: models by name or path, threshold, trigger level, refractory.

openWakeWord scores 80 ms frames (1280 samples at 16 kHz). This wrapper feeds it from capture blocks of
any size and rate (resampling once with PyAV), and turns scores into detections:
- a model fires after `trigger_level` consecutive frames at or over its `threshold` (`ScoreGate`);
- then it stays quiet for `refractory_s`, since one utterance can cross the threshold twice;
- `Model()` and `reset()` fill the feature buffer with random noise, so the first ~1.2 s after either can
  score high (0.56-0.81 seen): the detector primes the model with silence before it listens;
- while the assistant speaks (`assistant_speaking`), its voice reaches the microphone: the detector then
  ignores the wake word, or asks for the higher `speaking_threshold` (`wake.suppress_while_speaking`).

The models run on the lean path (`oww_lean`): openWakeWord's own model files (melspectrogram,
embedding, the wake word classifiers) fed frame by frame, with the same scores as openWakeWord's `Model`
for about 60% of its CPU and without importing the openwakeword package. Options only openWakeWord's
Model has make the detector use it instead (`lean_unsupported`; `engine` says which runs): its Silero
VAD gate (`wake.vad_threshold`; the VAD model is taken from the models folder, not from openWakeWord's
package, which ships none) and Speex noise suppression. TFLite models run on ai-edge-litert (see
`tflite_compat`).

Each detection carries an estimate of when the wake phrase ended (`Detection.t_phrase_end`), for the
call's pre-roll: openWakeWord fires a few hundred ms after the phrase, and what the user said in between
belongs to the command. See `phrase_end_offset_s` for how it was calibrated and how far off it can be.

Inference runs on one worker thread, so the event loop never waits on ONNX.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.frames import PcmBlock
from ..audio.resample import StreamResampler
from ..config import WakeConfig, WakeModelConfig
from ..errors import ConfigError
from ..memory import trim_heap
from .oww_import import model_class, without_cpu_arena

log = logging.getLogger(__name__)

RATE = 16000
CHUNK = 1280  # 80 ms
FRAME_S = CHUNK / RATE
PRIME_CHUNKS = 16  # 1.28 s of silence flushes the random start-up features

#: The score crosses a threshold some time after the wake phrase ended, later for higher thresholds.
#: Measured on espeak-ng "hey jarvis" (8 voices x 3 speeds x 6 endings: silence, or the command after
#: 0, 50, 100, 200, 300 ms), the median delay of the (interpolated) crossing of level L was about
#: -2 ms at 0.1, 82 at 0.3, 151 at 0.5, 204 at 0.7 and 310 at 0.9: a line fits it.
PHRASE_END_BASE_S = -0.03
PHRASE_END_PER_THRESHOLD_S = 0.37
#: How far the estimate can be late: 90% of the calibration clips ended no more than this before
#: `t_phrase_end` (the spread is mostly between voices). Start pre-roll this much earlier to keep the
#: first word of a command whole, at the price of the wake word's last syllable.
PHRASE_END_MARGIN_S = 0.25

_FEATURE_MODELS = {"melspectrogram", "embedding_model", "silero_vad"}


def phrase_end_offset_s(threshold: float) -> float:
    """How long after the wake phrase's end the score typically crosses `threshold` (seconds)."""
    return PHRASE_END_BASE_S + PHRASE_END_PER_THRESHOLD_S * threshold


@dataclass(frozen=True)
class Detection:
    """One wake word, on the capture clock (monotonic seconds, or seconds into a file)."""

    model: str
    score: float  # the score of the frame that fired
    t_end: float  # end of the 80 ms frame that fired
    t_cross: float  # when the score crossed the threshold (interpolated between frames)
    t_phrase_end: float  # estimated end of the wake phrase: t_cross - phrase_end_offset_s(threshold)
    threshold: float  # the threshold in force (higher while the assistant spoke)


class ScoreGate:
    """The decision for one model: fire after `trigger_level` consecutive frames at or over the
    threshold, then stay quiet for `refractory_s`. Pure bookkeeping over (time, score) pairs, so
    `detect --sweep` replays recorded scores through exactly the logic the service uses."""

    def __init__(self, threshold: float, trigger_level: int = 1, refractory_s: float = 2.0) -> None:
        self.threshold = threshold
        self.trigger_level = trigger_level
        self.refractory_s = refractory_s
        self.reset()

    def reset(self) -> None:
        self.streak = 0
        self.quiet_until = -math.inf
        self._t_cross = 0.0
        self._prev: tuple[float, float] | None = None  # the previous frame's (t_end, score)

    def update(self, t_end: float, score: float, threshold: float | None = None) -> float | None:
        """Add one frame's score; returns the interpolated crossing time when the gate fires.
        `threshold` overrides the gate's own for this frame (math.inf: nothing counts)."""
        thr = self.threshold if threshold is None else threshold
        prev, self._prev = self._prev, (t_end, score)
        if score < thr:
            self.streak = 0
            return None
        if self.streak == 0:
            self._t_cross = _crossing(prev, t_end, score, thr)
        self.streak += 1
        if self.streak >= self.trigger_level and t_end >= self.quiet_until:
            self.quiet_until = t_end + self.refractory_s
            self.streak = 0
            return self._t_cross
        return None


def _crossing(prev: tuple[float, float] | None, t_end: float, score: float, thr: float) -> float:
    """When the score crossed `thr`, interpolated linearly between the previous frame and this one."""
    if prev is None or prev[1] >= thr or t_end - prev[0] > 1.5 * FRAME_S:
        return t_end
    t0, s0 = prev
    return t0 + (thr - s0) / (score - s0) * (t_end - t0)


@dataclass
class _ModelState:
    cfg: WakeModelConfig
    key: str  # openWakeWord's name for it
    gate: ScoreGate


def resolve_model_path(name: str, models_dir: Path, framework: str, *, any_format: bool = False) -> Path:
    """A model by path (`/x/y.onnx`), or by name in the models folder (`hey_jarvis` finds
    `hey_jarvis_v0.1.onnx`). A path must be of `framework`'s format unless `any_format` (the lean path
    runs each classifier on its own format's runtime)."""
    ext = ".tflite" if framework == "tflite" else ".onnx"
    candidate = Path(name).expanduser()
    if candidate.suffix in (".onnx", ".tflite") or "/" in name:
        if not candidate.is_file():
            raise ConfigError("wake.models.name", f"model file {candidate} does not exist")
        if candidate.suffix != ext and not (any_format and candidate.suffix in (".onnx", ".tflite")):
            raise ConfigError("wake.models.name", f"{candidate} is not a {ext} model (inference_framework)")
        return candidate
    exact = models_dir / f"{name}{ext}"
    if exact.is_file():
        return exact
    matches = sorted(models_dir.glob(f"{name}_v*{ext}"))
    if matches:
        return matches[-1]
    available = sorted(
        p.name.removesuffix(ext) for p in models_dir.glob(f"*{ext}") if p.stem not in _FEATURE_MODELS
    )
    raise ConfigError(
        "wake.models.name",
        f"no model {name!r} in {models_dir}; available: {', '.join(available) or 'none (run install.sh)'}",
    )


def _feature_paths(cfg: WakeConfig) -> dict[str, Path]:
    models_dir = cfg.resolved_models_dir()
    ext = ".tflite" if cfg.inference_framework == "tflite" else ".onnx"
    paths = {n: models_dir / f"{n}{ext}" for n in ("melspectrogram", "embedding_model")}
    for path in paths.values():
        if not path.is_file():
            raise ConfigError("wake.models_dir", f"{path} is missing: run install.sh to fetch the openWakeWord models")
    return paths


def lean_unsupported(cfg: WakeConfig) -> str | None:
    """Why `cfg` needs openWakeWord's own Model (None: the lean path runs it)."""
    if cfg.vad_threshold > 0:
        return "wake.vad_threshold (openWakeWord's Silero VAD gate)"
    if cfg.speex_noise_suppression:
        return "wake.speex_noise_suppression"
    return None


def load_model(cfg: WakeConfig) -> tuple[Any, list[Path]]:
    """The scorer for `cfg` and the wake word model files it runs: the lean path (`oww_lean.LeanModel`,
    the same model files and scores without openWakeWord's Python wrapper) unless an option needs
    openWakeWord's own Model (`lean_unsupported`), or a classifier is of a kind the lean path does not
    run. Raises ConfigError for anything the user can fix (a missing model, a missing optional package)."""
    feature_paths = _feature_paths(cfg)
    why = lean_unsupported(cfg)
    models_dir = cfg.resolved_models_dir()
    framework = cfg.inference_framework
    paths = [resolve_model_path(m.name, models_dir, framework, any_format=why is None) for m in cfg.models]
    if why is None:
        from .oww_lean import LeanModel

        try:
            model = LeanModel(feature_paths["melspectrogram"], feature_paths["embedding_model"], paths,
                              cfg.inference_framework)  # fmt: skip
        except ValueError as exc:  # a classifier the lean path does not run (several output classes)
            why = str(exc)
        else:
            trim_heap()
            return model, paths
    log.info("wake word: openWakeWord's Model runs the models, for %s", why)
    return load_openwakeword_model(cfg), paths


def load_openwakeword_model(cfg: WakeConfig) -> Any:
    """openWakeWord's own Model for `cfg` (the options the lean path has not, and the benchmarks'
    baseline)."""
    Model = model_class()  # openWakeWord's class, imported only when one is made

    models_dir = cfg.resolved_models_dir()
    feature_paths = _feature_paths(cfg)
    paths = [resolve_model_path(m.name, models_dir, cfg.inference_framework) for m in cfg.models]
    if cfg.speex_noise_suppression and importlib.util.find_spec("speexdsp_ns") is None:
        raise ConfigError(
            "wake.speex_noise_suppression", "needs the speexdsp-ns package: pip install 'voice-agent[speex]'"
        )
    vad_path = models_dir / "silero_vad.onnx"
    if cfg.vad_threshold > 0 and not vad_path.is_file():
        raise ConfigError("wake.vad_threshold", f"{vad_path} is missing: run install.sh to fetch the models")
    kwargs: dict[str, Any] = {
        "wakeword_models": [str(p) for p in paths],
        "inference_framework": cfg.inference_framework,
        "melspec_model_path": str(feature_paths["melspectrogram"]),
        "embedding_model_path": str(feature_paths["embedding_model"]),
        "enable_speex_noise_suppression": cfg.speex_noise_suppression,
    }
    if cfg.inference_framework == "tflite":
        from .tflite_compat import litert_as_tflite_runtime

        with litert_as_tflite_runtime():
            model = Model(**kwargs)
    else:
        with without_cpu_arena():
            model = Model(**kwargs)
    if cfg.vad_threshold > 0:
        from openwakeword.vad import VAD

        # Model(vad_threshold=...) would load the VAD from openWakeWord's own package folder, which the
        # wheel leaves empty: set it up from the models folder instead.
        with without_cpu_arena():
            model.vad = VAD(model_path=str(vad_path))
        model.vad_threshold = cfg.vad_threshold
    trim_heap()  # the models' start-up peak, freed: give it back (see oww_import)
    return model


class WakeWordDetector:
    """Feed it capture blocks; it returns detections. Not thread-safe: one feeder.

    Flags the owner sets (read at each frame, so a flag set on the event loop takes effect at the next
    80 ms frame on the worker thread):
    - `suppressed`: ignore every frame (the device's own sound is playing, or the mic is muted);
    - `assistant_speaking`: the assistant's voice is playing: apply `wake.suppress_while_speaking` /
      `wake.speaking_threshold`.
    `on_scores(t_end, {model: score})`, if set, gets every frame's scores (for `detect --sweep`).
    """

    def __init__(self, cfg: WakeConfig) -> None:
        self.cfg = cfg
        self._model, paths = load_model(cfg)
        self._states = [
            _ModelState(m, p.stem, ScoreGate(m.threshold, m.trigger_level, m.refractory_s))
            for m, p in zip(cfg.models, paths, strict=True)
        ]
        self._pending = np.zeros(0, dtype=np.int16)  # 16 kHz samples not yet scored
        self._pending_t_end = 0.0
        self._raw: list[np.ndarray] = []  # blocks at another rate, not yet resampled
        self._raw_n = 0
        self._raw_rate = RATE
        self._raw_t_end = 0.0
        self._resampler: StreamResampler | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wakeword")
        self.suppressed = False
        self.assistant_speaking = False
        self.on_scores: Callable[[float, dict[str, float]], None] | None = None
        self.last_scores: dict[str, float] = {}
        self._prime()
        log.info(
            "wake word models loaded (%s, %s%s%s): %s",
            self.engine,
            self.cfg.inference_framework,
            f", VAD {cfg.vad_threshold}" if cfg.vad_threshold > 0 else "",
            ", Speex noise suppression" if cfg.speex_noise_suppression else "",
            ", ".join(s.key for s in self._states),
        )

    @property
    def names(self) -> list[str]:
        return [s.cfg.name for s in self._states]

    @property
    def model(self) -> Any:
        """What scores the frames: `oww_lean.LeanModel`, or openWakeWord's Model (see `engine`)."""
        return self._model

    @property
    def engine(self) -> str:
        """"lean" (openWakeWord's model files run directly) or "openwakeword" (its Model)."""
        from .oww_lean import LeanModel

        return "lean" if isinstance(self._model, LeanModel) else "openwakeword"

    def _prime(self) -> None:
        silence = np.zeros(CHUNK, dtype=np.int16)
        for _ in range(PRIME_CHUNKS):
            self._model.predict(silence)

    def reset(self) -> None:
        """Forget the audio so far (after a conversation, or between files), without a false wake from
        the reset noise."""
        self._model.reset()
        self._prime()
        self._pending = np.zeros(0, dtype=np.int16)
        self._raw, self._raw_n = [], 0
        self._resampler = None
        for state in self._states:
            state.gate.reset()

    def process(self, block: PcmBlock) -> list[Detection]:
        """Synchronous: add a block, score every whole 80 ms chunk, return the detections."""
        self._append(block)
        return self._score_pending()

    async def process_async(self, block: PcmBlock) -> list[Detection]:
        """`process`, with the scoring on the detector's worker thread. Await each call before the next.

        Resampling and buffering (tens of microseconds) happen here on the event loop; the thread hop
        (about 0.1 ms of CPU on its own) is taken only when a whole 80 ms chunk is ready, once per
        chunk instead of once per capture block: that keeps the listening path close to openWakeWord's
        own cost (`voice-agent bench wake`)."""
        self._append(block)
        if self._pending.size < CHUNK:
            return []
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._score_pending)

    def _append(self, block: PcmBlock) -> None:
        """Buffer a block at 16 kHz. Blocks at another rate are collected until they make up the rest of
        an 80 ms chunk and resampled together: one PyAV call per chunk instead of one per block, with
        no added delay, since the chunk could not be scored before its last block anyway."""
        if self._raw and block.rate != self._raw_rate:
            self._resample_raw()
        if block.rate == RATE:
            self._push(block.samples, block.t_end)
            return
        self._raw.append(block.samples)
        self._raw_rate, self._raw_t_end = block.rate, block.t_end
        self._raw_n += len(block.samples)
        if self._pending.size + self._raw_n * RATE / block.rate >= CHUNK:
            self._resample_raw()

    def _resample_raw(self) -> None:
        if self._resampler is None or self._resampler.rate_in != self._raw_rate:
            self._resampler = StreamResampler(self._raw_rate, RATE)
        raw = self._raw[0] if len(self._raw) == 1 else np.concatenate(self._raw)
        self._raw, self._raw_n = [], 0
        self._push(self._resampler.process(raw), self._raw_t_end)

    def _push(self, samples: np.ndarray, t_end: float) -> None:
        self._pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        self._pending_t_end = t_end

    def _score_pending(self) -> list[Detection]:
        detections: list[Detection] = []
        while self._pending.size >= CHUNK:
            chunk, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            # the chunk's end lies before the last block's end by what is still pending
            t_end = self._pending_t_end - self._pending.size / RATE
            scores = self._model.predict(chunk)
            self.last_scores = {s.cfg.name: float(scores.get(s.key, 0.0)) for s in self._states}
            if self.on_scores is not None:
                self.on_scores(t_end, self.last_scores)
            detections.extend(self._decide(t_end))
        return detections

    def threshold_for(self, model: WakeModelConfig) -> float:
        """The threshold in force now (math.inf: the model cannot fire)."""
        if self.suppressed:
            return math.inf
        if self.assistant_speaking:
            if self.cfg.suppress_while_speaking:
                return math.inf
            return max(model.threshold, self.cfg.speaking_threshold)
        return model.threshold

    def _decide(self, t_end: float) -> list[Detection]:
        fired = []
        for state in self._states:
            score = self.last_scores[state.cfg.name]
            threshold = self.threshold_for(state.cfg)
            t_cross = state.gate.update(t_end, score, threshold)
            if t_cross is not None:
                t_phrase_end = t_cross - phrase_end_offset_s(threshold)
                fired.append(Detection(state.cfg.name, score, t_end, t_cross, t_phrase_end, threshold))
        return fired

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
