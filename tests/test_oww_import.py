"""openWakeWord's Model loads without scipy and scikit-learn in memory (agent.oww_import), and the
part of openWakeWord that needs them still works when something uses it."""

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
import openwakeword
from openwakeword.custom_verifier_model import train_custom_verifier
import openwakeword.custom_verifier_model as real
print(heavy, real.LogisticRegression.__module__.split(".")[0], callable(openwakeword.train_custom_verifier))
"""


def test_model_loads_without_scipy_and_sklearn_and_the_verifier_still_imports() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "sklearn", "True"], proc.stdout
