"""TFLite inference for openWakeWord on ai-edge-litert, without a global import hack.

openWakeWord runs `import tflite_runtime.interpreter as tflite` inside `Model()` (and inside its feature
extractor) when `inference_framework="tflite"`. The `tflite-runtime` wheel it depends on (2.14) was
built against numpy 1 and fails with numpy 2 as soon as an interpreter is created; Google's successor,
`ai-edge-litert`, has the same `Interpreter` API, numpy 2 support and aarch64 cp311 wheels.

`litert_as_tflite_runtime()` puts a small module named `tflite_runtime.interpreter` (whose `Interpreter`
is ai-edge-litert's) into `sys.modules` for the duration of a `with` block, and restores what was there
before on the way out. openWakeWord keeps the interpreter objects it made, so nothing else in the
process, and no later import of `tflite_runtime`, ever sees the substitute. Use it around `Model()`
only. If openWakeWord cannot import a TFLite runtime it silently falls back to ONNX; this module makes
that case an error instead, so the configuration says what actually runs.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import types
from collections.abc import Iterator

from ..errors import ConfigError

_NAMES = ("tflite_runtime", "tflite_runtime.interpreter")
_lock = threading.Lock()  # two detectors built at once must not restore each other's entries


def litert_interpreter() -> type:
    """ai-edge-litert's Interpreter class, or a ConfigError that says how to install it."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ConfigError(
            "wake.inference_framework",
            "tflite needs the ai-edge-litert package: pip install 'voice-agent[tflite]' (or use onnx)",
        ) from None
    return Interpreter


@contextlib.contextmanager
def litert_as_tflite_runtime() -> Iterator[None]:
    """Within the block, `import tflite_runtime.interpreter` gives ai-edge-litert's Interpreter."""
    interpreter_cls = litert_interpreter()
    package = types.ModuleType("tflite_runtime")
    package.__path__ = []  # a package, so the submodule import resolves
    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = interpreter_cls  # type: ignore[attr-defined]
    package.interpreter = module  # type: ignore[attr-defined]
    with _lock:
        saved = {name: sys.modules.get(name) for name in _NAMES}
        sys.modules.update({"tflite_runtime": package, "tflite_runtime.interpreter": module})
        try:
            yield
        finally:
            for name, previous in saved.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous
