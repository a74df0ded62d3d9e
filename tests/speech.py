"""Test speech: espeak-ng (installed by install.sh) through the same helpers the benchmarks use."""

from __future__ import annotations

from agent.bench.speech import espeak, quiet

brown_noise = quiet

__all__ = ["brown_noise", "espeak"]
