"""Wake word detection with openWakeWord: models by name or path, threshold, trigger level, refractory.

openWakeWord scores 80 ms frames (1280 samples at 16 kHz). This wrapper feeds it from capture blocks of
any size and rate (resampling once with PyAV), and turns scores into detections:
- a model fires after `trigger_level` consecutive frames at or over its `threshold`;
- then it stays quiet for `refractory_s`, since one utterance can cross the threshold twice;
- `Model()` and `reset()` fill the feature buffer with random noise, so the first ~1.2 s after either can
  score high (0.56-0.81 seen): the detector primes the model with silence before it listens.

Inference runs on one worker thread, so the event loop never waits on ONNX.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio.frames import PcmBlock
from .audio.resample import StreamResampler
from .config import WakeConfig, WakeModelConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

RATE = 16000
CHUNK = 1280  # 80 ms
PRIME_CHUNKS = 16  # 1.28 s of silence flushes the random start-up features


@dataclass(frozen=True)
class Detection:
    model: str
    score: float
    t_end: float  # capture time (monotonic, or seconds into a file) of the end of the frame that fired


@dataclass
class _ModelState:
    cfg: WakeModelConfig
    key: str  # openWakeWord's name for it
    streak: int = 0
    quiet_until: float = float("-inf")


def resolve_model_path(name: str, models_dir: Path, framework: str) -> Path:
    """A model by path (`/x/y.onnx`), or by name in the models folder (`hey_jarvis` finds
    `hey_jarvis_v0.1.onnx`)."""
    ext = ".tflite" if framework == "tflite" else ".onnx"
    candidate = Path(name).expanduser()
    if candidate.suffix in (".onnx", ".tflite") or "/" in name:
        if not candidate.is_file():
            raise ConfigError("wake.models.name", f"model file {candidate} does not exist")
        if candidate.suffix != ext:
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


_FEATURE_MODELS = {"melspectrogram", "embedding_model", "silero_vad"}


class WakeWordDetector:
    """Feed it capture blocks; it returns detections. Not thread-safe: one feeder."""

    def __init__(self, cfg: WakeConfig) -> None:
        from openwakeword.model import Model  # imports scipy and sklearn: only when a detector is made

        models_dir = cfg.resolved_models_dir()
        ext = ".tflite" if cfg.inference_framework == "tflite" else ".onnx"
        feature_paths = {n: models_dir / f"{n}{ext}" for n in ("melspectrogram", "embedding_model")}
        for path in feature_paths.values():
            if not path.is_file():
                raise ConfigError(
                    "wake.models_dir", f"{path} is missing: run install.sh to fetch the openWakeWord models"
                )
        paths = [resolve_model_path(m.name, models_dir, cfg.inference_framework) for m in cfg.models]
        self._model = Model(
            wakeword_models=[str(p) for p in paths],
            inference_framework=cfg.inference_framework,
            melspec_model_path=str(feature_paths["melspectrogram"]),
            embedding_model_path=str(feature_paths["embedding_model"]),
        )
        self._states = [_ModelState(m, p.stem) for m, p in zip(cfg.models, paths, strict=True)]
        self._pending = np.zeros(0, dtype=np.int16)
        self._pending_t_end = 0.0
        self._resampler: StreamResampler | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="wakeword")
        self.suppressed = False
        self.last_scores: dict[str, float] = {}
        self._prime()
        log.info("wake word models loaded: %s", ", ".join(s.key for s in self._states))

    @property
    def names(self) -> list[str]:
        return [s.cfg.name for s in self._states]

    def _prime(self) -> None:
        silence = np.zeros(CHUNK, dtype=np.int16)
        for _ in range(PRIME_CHUNKS):
            self._model.predict(silence)

    def reset(self) -> None:
        """Forget the audio so far (after a conversation), without a false wake from the reset noise."""
        self._model.reset()
        self._prime()
        self._pending = np.zeros(0, dtype=np.int16)
        for state in self._states:
            state.streak = 0
            state.quiet_until = float("-inf")

    def _to_16k(self, block: PcmBlock) -> np.ndarray:
        if self._resampler is None or self._resampler.rate_in != block.rate:
            self._resampler = StreamResampler(block.rate, RATE)
        return self._resampler.process(block.samples)

    def process(self, block: PcmBlock) -> list[Detection]:
        """Synchronous: add a block, score every whole 80 ms chunk, return the detections."""
        samples = self._to_16k(block)
        self._pending = np.concatenate((self._pending, samples)) if self._pending.size else samples
        self._pending_t_end = block.t_end
        detections: list[Detection] = []
        while self._pending.size >= CHUNK:
            chunk, self._pending = self._pending[:CHUNK], self._pending[CHUNK:]
            # the chunk's end lies before the block's end by what is still pending
            t_end = self._pending_t_end - self._pending.size / RATE
            scores = self._model.predict(chunk)
            self.last_scores = {s.cfg.name: float(scores.get(s.key, 0.0)) for s in self._states}
            detections.extend(self._decide(t_end))
        return detections

    def _decide(self, t_end: float) -> list[Detection]:
        fired = []
        for state in self._states:
            score = self.last_scores[state.cfg.name]
            if score >= state.cfg.threshold and not self.suppressed:
                state.streak += 1
            else:
                state.streak = 0
            if state.streak >= state.cfg.trigger_level and t_end >= state.quiet_until:
                state.quiet_until = t_end + state.cfg.refractory_s
                state.streak = 0
                fired.append(Detection(state.cfg.name, score, t_end))
        return fired

    async def process_async(self, block: PcmBlock) -> list[Detection]:
        """`process` on the detector's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.process, block)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
