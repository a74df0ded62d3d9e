"""`voice-agent bench audio` runs end to end and its numbers hang together (a smoke test: the numbers
themselves are for the benchmark's own output, not for a timed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_bench_audio_json() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOICELIVE_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "audio", "--seconds", "18", "--json", "--output-order", "webrtc"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (out,) = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert out["output_order"] == "webrtc"
    assert out["ok"] and len(out["responses"]) >= 2  # two replies, the second stopped by the barge-in
    for key in ("uplink_ms_p50", "uplink_ms_p95", "downlink_ms_p50", "downlink_ms_p95", "speaker_ms_p50",
                "speaker_ms_p95", "catchup_s", "cpu_pct"):  # fmt: skip
        assert isinstance(out[key], int | float) and out[key] >= 0, key
    assert out["uplink_ms_p50"] <= out["uplink_ms_p95"] and out["downlink_ms_p50"] <= out["downlink_ms_p95"]
    # a frame is heard at or after its write, not more than the device's lead plus a period after it
    assert out["downlink_ms_p50"] <= out["speaker_ms_p50"] <= out["downlink_ms_p50"] + 80
    assert out["preroll_lost_ms"] == 0.0  # no word lost while the emulator answered 500 ms late
    assert out["connect_ms"] >= 500
    assert out["reply_audible_until_barge_in_ms"] is not None  # the barge-in interrupted sound
    assert out["reply_cut_ms"] is not None and out["reply_cut_ms"] <= 100  # the first reply played whole
    assert out["after_stop_audible_ms"] == 0.0  # nothing of the stopped reply after one period
