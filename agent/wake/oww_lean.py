"""openWakeWord's models run directly: the streaming melspectrogram -> embedding -> classifier chain
that `openwakeword.Model.predict` runs, without its Python wrapper (and without importing openwakeword).

The same three model files (`melspectrogram`, `embedding_model`, one classifier per wake word, ONNX or
TFLite) and the same arithmetic as `Model.predict` fed 80 ms chunks, frame for frame:

- the melspectrogram of the chunk plus the 480 samples before it (8 new 10 ms mel frames; the first
  chunk after a reset has no history and gives 5), scaled as openWakeWord does (`mel / 10 + 2`);
- one embedding of the last 76 mel frames (the mel history starts as ones, as openWakeWord's does);
- each classifier on the last 16 (or whatever its input asks for) embeddings;
- a score of 0 for the first 5 frames after a reset (openWakeWord's own rule).

What it leaves out is what costs in the wrapper: a 10 s history of raw samples kept as a deque of
Python ints and copied to a list every frame, growing and re-slicing mel and feature arrays every
frame, and 4 s of random noise pushed through the embedding model at start-up and at every reset (its
peak is what needed onnxruntime's arena off, see `oww_import`). Here every buffer has a fixed size.
Features openWakeWord has that this does not: its Silero VAD gate, Speex noise suppression, custom
verifier models and multi-class classifiers; `wakeword.load_model` uses openWakeWord's Model for those.

Runtimes, by each file's format: ONNX on onnxruntime with one thread, sequential execution and no CPU
arena; TFLite on ai-edge-litert (`tflite_compat.litert_interpreter`) with one thread. A process that
runs only TFLite files never imports onnxruntime (about 20 MB resident), and the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 1280  # samples per frame (80 ms at 16 kHz)
MEL_CONTEXT = 480  # samples of the previous chunk the mel model also sees (3 x 160)
MEL_WINDOW = 76  # mel frames per embedding
MEL_BINS = 32
EMBEDDING = 96
QUIET_FRAMES = 5  # openWakeWord scores the first frames after a reset as 0


def onnx_session_options() -> Any:
    """onnxruntime options for small models fed one frame at a time: one thread (no thread pool
    spinning between frames), sequential execution, no CPU arena (no high-water mark kept)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False
    return opts


class _OnnxRunner:
    """One model on onnxruntime: `run(x)` gives the first output."""

    def __init__(self, path: Path, options: Any) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name
        self.input_shape = tuple(self.session.get_inputs()[0].shape)
        self.output_shape = tuple(self.session.get_outputs()[0].shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: x})[0]


class _TfliteRunner:
    """One model on ai-edge-litert, resized when the input's shape changes."""

    def __init__(self, path: Path, interpreter_cls: type, shape: tuple[int, ...] | None = None) -> None:
        self.interpreter = interpreter_cls(model_path=str(path), num_threads=1)
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self._in, self._out = inp["index"], out["index"]
        if shape is not None:
            self.interpreter.resize_tensor_input(self._in, list(shape), strict=False)
        self.interpreter.allocate_tensors()
        self._shape = tuple(int(d) for d in self.interpreter.get_input_details()[0]["shape"])
        self.input_shape = self._shape
        self.output_shape = tuple(int(d) for d in out["shape"])

    def run(self, x: np.ndarray) -> np.ndarray:
        if x.shape != self._shape:
            self.interpreter.resize_tensor_input(self._in, list(x.shape), strict=False)
            self.interpreter.allocate_tensors()
            self._shape = x.shape
        self.interpreter.set_tensor(self._in, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._out)


class LeanModel:
    """Scores 80 ms chunks of 16 kHz int16 audio with openWakeWord's model files.

    `predict(chunk)` returns {classifier file stem: score}, as `openwakeword.Model.predict` does for
    the same files; `reset()` forgets the audio so far."""

    def __init__(self, melspec: Path, embedding: Path, classifiers: Sequence[Path], framework: str) -> None:
        if framework not in ("onnx", "tflite"):
            raise ValueError(f"unknown inference framework {framework!r}")

        def runner(path: Path, shape: tuple[int, ...] | None = None) -> Any:
            """Each file on its own format's runtime (a custom .onnx classifier with TFLite features)."""
            if path.suffix == ".tflite":
                from .tflite_compat import litert_interpreter

                return _TfliteRunner(path, litert_interpreter(), shape)
            return _OnnxRunner(path, onnx_session_options())

        self.framework = framework
        self._mel = runner(melspec, (1, MEL_CONTEXT + CHUNK))
        self._embedding = runner(embedding)
        self.models: dict[str, Any] = {}
        self._inputs: dict[str, int] = {}
        for path in classifiers:
            model = runner(path)
            shape = model.input_shape
            if len(shape) != 3 or shape[2] != EMBEDDING or not isinstance(shape[1], int):
                raise ValueError(f"{path.name}: not an openWakeWord classifier (input shape {shape})")
            if int(np.prod([d for d in model.output_shape if isinstance(d, int)])) != 1:
                raise ValueError(f"{path.name}: more than one output class is not supported here")
            self.models[path.stem] = model
            self._inputs[path.stem] = int(shape[1])
        self._n_features = max(self._inputs.values(), default=16)
        self._raw = np.zeros((1, MEL_CONTEXT + CHUNK), np.float32)
        self._mels = np.ones((MEL_WINDOW, MEL_BINS), np.float32)
        self._features = np.zeros((self._n_features, EMBEDDING), np.float32)
        self._window = np.empty((1, MEL_WINDOW, MEL_BINS, 1), np.float32)
        self.reset()

    def reset(self) -> None:
        self._raw[:] = 0
        self._has_history = False
        self._mels[:] = 1.0
        self._features[:] = 0
        self._frames = 0

    def predict(self, chunk: np.ndarray) -> dict[str, float]:
        if chunk.shape != (CHUNK,):
            raise ValueError(f"LeanModel.predict takes {CHUNK} samples, not {chunk.shape}")
        raw = self._raw
        raw[0, :MEL_CONTEXT] = raw[0, CHUNK:]
        raw[0, MEL_CONTEXT:] = chunk
        mel = self._mel.run(raw if self._has_history else raw[:, MEL_CONTEXT:])
        self._has_history = True
        mel = mel.reshape(-1, MEL_BINS) / 10 + 2
        n = min(len(mel), MEL_WINDOW)
        mels = self._mels
        mels[:-n] = mels[n:]
        mels[-n:] = mel[-n:]
        self._window[0, :, :, 0] = mels
        embedding = self._embedding.run(self._window).reshape(EMBEDDING)
        features = self._features
        features[:-1] = features[1:]
        features[-1] = embedding
        self._frames += 1
        if self._frames <= QUIET_FRAMES:
            return dict.fromkeys(self.models, 0.0)
        return {
            name: float(model.run(features[None, -self._inputs[name] :]).reshape(-1)[0])
            for name, model in self.models.items()
        }
