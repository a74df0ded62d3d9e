"""openWakeWord's Model loads without scipy and scikit-learn in memory and without onnxruntime's CPU
arena (agent.oww_import), and the part of openWakeWord that needs scipy still works when used."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from agent.config import WakeConfig
from agent.wakeword import WakeWordDetector
detector = WakeWordDetector(WakeConfig())
assert detector.names, detector.names
heavy = sorted(m for m in ("scipy", "sklearn") if m in sys.modules)
import onnxruntime
sessions = [detector.model.preprocessor.melspec_model, *detector.model.models.values()]
assert not any(s.get_session_options().enable_cpu_mem_arena for s in sessions)
assert onnxruntime.SessionOptions().enable_cpu_mem_arena  # the patch is undone
import openwakeword
from openwakeword.custom_verifier_model import train_custom_verifier
import openwakeword.custom_verifier_model as real
print(heavy, real.LogisticRegression.__module__.split(".")[0], callable(openwakeword.train_custom_verifier))
"""


def test_model_loads_without_scipy_and_sklearn_and_the_verifier_still_imports() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "sklearn", "True"], proc.stdout
