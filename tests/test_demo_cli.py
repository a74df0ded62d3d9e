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
    # the reply WAV holds the wake and goodbye earcons and the parrot reply: audible, and about as long
    # as "what time is it?" (0.9 s)
    assert out["reply_rms_dbfs"] > -40
    assert 0.6 < out["reply_s"] < 2.0
    from agent.demo import loud_regions

    with wave.open(out["reply_wav"]) as w:
        assert (w.getframerate(), w.getnchannels()) == (48000, 1)
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    lengths = [(e - s) / 48000 for s, e in loud_regions(audio, 48000)]
    assert len(lengths) == 3, lengths  # wake sound, reply, goodbye sound
    assert lengths[0] < 0.3 and lengths[2] < 0.3


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
    text = (
        (REPO / "config" / "voice-agent.yaml")
        .read_text()
        .replace('endpoint: ""', "endpoint: wss://r.services.ai.azure.com")
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    proc = run(["run", "--config", str(cfg), "--check-config"], env={"VOICELIVE_API_KEY": "k" * 32})
    assert proc.returncode == 0, proc.stderr


def test_fault_flags_parse_to_their_types() -> None:
    from agent.cli import parse_faults
    from agent.errors import ConfigError

    faults = parse_faults(
        ["refuse_auth", "reject_status=429", "close_after_s=2.5", "call_error_code=x", "never_answer=0"]
    )
    assert (faults.refuse_auth, faults.reject_status, faults.close_after_s) == (True, 429, 2.5)
    assert (faults.call_error_code, faults.never_answer) == ("x", False)
    with pytest.raises(ConfigError, match="unknown fault 'nope'"):
        parse_faults(["nope"])
    with pytest.raises(ConfigError, match="close_after_s needs a value"):
        parse_faults(["close_after_s"])


@pytest.mark.timeout(60)
def test_emulator_command_serves_calls(tmp_path: Path) -> None:
    import asyncio
    import re

    key = tmp_path / "key"
    key.write_text("canary-emulator-cli-5d8e\n")
    env = {k: v for k, v in os.environ.items() if k != "VOICELIVE_API_KEY"}
    proc = subprocess.Popen(
        [*CLI, "emulator", "--port", "0", "--api-key-file", str(key)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = None
        output = ""
        for line in proc.stdout:  # type: ignore[union-attr]  # bounded by the test's timeout
            output += line
            m = re.search(r"listening on (ws://127\.0\.0\.1:\d+)", line)
            if m:
                url = m.group(1)
                break
        assert url, output

        from agent.audio.mictrack import MicTrack
        from agent.voicelive.auth import ApiKey, Secret
        from agent.voicelive.call import CallOptions, VoiceLiveCall
        from agent.voicelive.control import Target

        from .test_call import PacedSource

        async def call_once() -> str | None:
            call = VoiceLiveCall(
                Target(url, "2026-01-01-preview", model="gpt-realtime"),
                ApiKey(Secret("canary-emulator-cli-5d8e")),
                MicTrack(PacedSource(np.zeros(16000, np.int16))),
                CallOptions(ice_pin=("127.0.0.1",)),
            )
            async with call:
                return call.rtc_call_id

        assert asyncio.run(call_once())
    finally:
        proc.terminate()
        proc.wait(10)
