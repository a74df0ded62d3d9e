"""The repository's own promises: ruff clean, and .ci/run runs exactly the README's test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean() -> None:
    ruff = Path(sys.executable).with_name("ruff")
    proc = subprocess.run([str(ruff), "check", "agent", "tests"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"^(\./install\.sh[^#\n]*?)\s*(?:#.*)?$", readme, flags=re.MULTILINE)
    assert len(commands) == 2, commands
    demo, test = commands
    assert "voice-agent demo" in demo and "pytest" in test
    ci_lines = [ln for ln in (REPO / ".ci" / "run").read_text().splitlines() if ln and not ln.startswith("#")]
    assert test in ci_lines
