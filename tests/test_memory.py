"""agent.memory: the malloc arena cap is applied on glibc, and an explicit MALLOC_ARENA_MAX wins."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = "from agent.memory import limit_malloc_arenas, trim_heap; trim_heap(); print(limit_malloc_arenas())"


def run(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env_extra
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_arena_cap_applies_unless_the_environment_sets_one() -> None:
    assert run({}) == "True"  # glibc (Debian, Raspberry Pi OS): mallopt accepted
    assert run({"MALLOC_ARENA_MAX": "4"}) == "False"  # the operator's setting is left alone
