"""What the wake word detector brings into memory.

- The lean path (the default) runs openWakeWord's model files without importing openwakeword at all
  (nor scipy and scikit-learn); on TFLite (the default) it does not import onnxruntime either, and on
  ONNX its sessions have one thread, sequential execution and no CPU arena.
- openWakeWord's own Model (for the options only it has) loads without scipy and scikit-learn in memory
  and without onnxruntime's CPU arena (agent.wake.oww_import), and the part of openWakeWord that needs scipy
  still works when used.
"""

from __future__ import annotations

import subprocess
import sys

DEFAULT = """
import sys
from agent.config import WakeConfig
from agent.wake.wakeword import WakeWordDetector
detector = WakeWordDetector(WakeConfig())
assert detector.engine == "lean" and detector.cfg.inference_framework == "tflite"
print(sorted(m for m in ("openwakeword", "onnxruntime", "scipy", "sklearn", "tflite_runtime") if m in sys.modules))
"""

LEAN_ONNX = """
import sys
import onnxruntime
from agent.config import WakeConfig
from agent.wake.wakeword import WakeWordDetector
detector = WakeWordDetector(WakeConfig(inference_framework="onnx"))
assert detector.engine == "lean", detector.engine
model = detector.model
for runner in (model._mel, model._embedding, *model.models.values()):
    opts = runner.session.get_session_options()
    assert not opts.enable_cpu_mem_arena and opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert opts.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
print(sorted(m for m in ("openwakeword", "scipy", "sklearn", "tflite_runtime") if m in sys.modules))
"""

MODEL = """
import sys
from agent.config import WakeConfig
from agent.wake.wakeword import load_openwakeword_model
model = load_openwakeword_model(WakeConfig(inference_framework="onnx"))
heavy = sorted(m for m in ("scipy", "sklearn") if m in sys.modules)
import onnxruntime
sessions = [model.preprocessor.melspec_model, *model.models.values()]
assert not any(s.get_session_options().enable_cpu_mem_arena for s in sessions)
assert onnxruntime.SessionOptions().enable_cpu_mem_arena  # the patch is undone
import openwakeword
from openwakeword.custom_verifier_model import train_custom_verifier
import openwakeword.custom_verifier_model as real
print(heavy, real.LogisticRegression.__module__.split(".")[0], callable(openwakeword.train_custom_verifier))
"""


def run(script: str) -> str:
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_default_detector_imports_neither_openwakeword_nor_onnxruntime() -> None:
    assert run(DEFAULT).split() == ["[]"]


def test_lean_onnx_imports_no_openwakeword_and_runs_one_thread_without_arena() -> None:
    assert run(LEAN_ONNX).split() == ["[]"]


def test_model_loads_without_scipy_and_sklearn_and_the_verifier_still_imports() -> None:
    assert run(MODEL).split() == ["[]", "sklearn", "True"]
