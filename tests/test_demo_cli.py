"""`voice-agent demo` end to end, and the command line's handling of bad configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "agent"]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("VOICELIVE_API_KEY", "VOICE_AGENT_CONFIG")}
    full_env.update(env or {})
    return subprocess.run(CLI + args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.mark.timeout(120)
def test_demo_json_completes_the_loop(tmp_path: Path) -> None:
    proc = run(["demo", "--json", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # stdout is one JSON object; everything else went to stderr
    out = json.loads(lines[0])
    assert out["ok"] is True
    assert out["wake_word"] == "hey_jarvis"
    assert 0 < out["connect_ms"] < 2000
    assert 0 < out["first_reply_audio_ms"] < 1000
    assert out["responses"] == ["completed"]
    assert out["led_states"][:4] == ["idle", "wake", "connecting", "listening"]
    assert {"user_speaking", "thinking", "speaking"} <= set(out["led_states"])
    assert out["led_states"][-1] == "idle"
    # the reply WAV holds the parrot reply: audible, and about as long as "what time is it?"
    assert out["reply_rms_dbfs"] > -40
    with wave.open(out["reply_wav"]) as w:
        assert (w.getframerate(), w.getnchannels()) == (48000, 1)
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 300)
    assert 0.6 < (loud[-1] - loud[0]) / 48000 < 2.5


def test_demo_text_summary(tmp_path: Path) -> None:
    proc = run(["demo", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in ("result             OK", "wake -> connected", "speech end -> reply", "LED states"):
        assert label in proc.stdout


def test_config_error_exits_78_and_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("voicelive:\n  endpoint: wss://x.services.ai.azure.com\naudio:\n  capture:\n    rate: 44100\n")
    proc = run(["run", "--config", str(cfg)])
    assert proc.returncode == 78
    assert "audio.capture.rate: 44100 is not one of 16000, 48000" in proc.stderr


def test_missing_endpoint_and_key_are_config_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("logging:\n  level: INFO\n")
    proc = run(["run", "--config", str(cfg)])
    assert proc.returncode == 78 and "voicelive.endpoint: required" in proc.stderr
    cfg.write_text("voicelive:\n  endpoint: wss://x.services.ai.azure.com\n")
    proc = run(["run", "--config", str(cfg)])
    assert proc.returncode == 78 and "no API key" in proc.stderr


def test_check_config_never_prints_the_key(tmp_path: Path) -> None:
    canary = "canary-cli-4f2a9d1b7e"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("voicelive:\n  endpoint: wss://x.services.ai.azure.com\n")
    proc = run(["run", "--config", str(cfg), "--check-config"], env={"VOICELIVE_API_KEY": canary})
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout
    assert canary not in proc.stdout + proc.stderr


def test_documented_config_is_valid_for_run(tmp_path: Path) -> None:
    text = (REPO / "config" / "voice-agent.yaml").read_text().replace('endpoint: ""', "endpoint: wss://r.services.ai.azure.com")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    proc = run(["run", "--config", str(cfg), "--check-config"], env={"VOICELIVE_API_KEY": "k" * 32})
    assert proc.returncode == 0, proc.stderr
