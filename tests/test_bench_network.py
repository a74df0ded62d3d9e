"""`voice-agent bench network` runs end to end and its report hangs together (a smoke test on one
profile: what each behaviour does on the simulated network is tested in test_netsim.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.bench.heard import compare
from agent.bench.speech import espeak

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_bench_network_json() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOICELIVE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "network", "--profile", "wifi", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=110, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and list(report["profiles"]) == ["wifi"]
    wifi = report["profiles"]["wifi"]
    assert wifi["packets_lost_down"] > 0 and wifi["uplink_lost"] > 0  # the network took some, both ways
    assert wifi["concealed_frames"] + wifi["fec_recovered_down"] >= 1
    assert wifi["downlink_fec"] and wifi["uplink_fec"]
    assert 0.5 < wifi["heard_correlation"] <= 1.0
    assert 0 <= wifi["jitter_delay_ms_p50"] <= wifi["jitter_delay_ms_p95"]
    assert isinstance(wifi["goals_missed"], list)


def test_heard_finds_holes_and_forgives_a_stretch() -> None:
    """The reply against itself: a 40 ms hole of zeros in its sound is counted; a 20 ms pause inserted
    (what a jitter buffer's expansion does) is not, and barely moves the correlation."""
    sent = np.asarray(espeak("the lighthouse keeper lit the lamp"), dtype=np.int16)
    loud = int(np.argmax(np.abs(sent)))
    holed = sent.copy()
    holed[loud : loud + 640] = 0
    result = compare(sent, np.concatenate([np.zeros(8000, np.int16), holed]), 16000)
    assert result.holes == 1 and result.start == 8000
    stretched = np.concatenate([sent[:loud], np.full(320, 3, np.int16), sent[loud:]])
    result = compare(sent, stretched, 16000)
    assert result.holes == 0 and result.correlation is not None and result.correlation > 0.95
