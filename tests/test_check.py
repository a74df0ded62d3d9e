"""`voice-agent check` and `voice-agent devices`, run as commands against the local emulator and real ALSA
devices (alsa-lib's file plugin): all rows pass with the right key; with a wrong key the auth row fails
and says why, and the key never shows."""

from __future__ import annotations

import asyncio
import json
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agent.audio.fileplugin import FifoFeeder, capture_device, playback_device, use_file_plugin
from agent.check import dbfs
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.voicelive.auth import Secret

KEY = "canary-check-0b7d3e91aa"
VOICE_AGENT = str(Path(sys.executable).with_name("voice-agent"))

pytestmark = pytest.mark.timeout(120)


def write_config(tmp: Path, url: str | None, key: str | None, name: str) -> Path:
    keyfile = tmp / f"{name}.key"
    if key is not None:
        keyfile.write_text(key + "\n")
        keyfile.chmod(0o600)
    voicelive = {"endpoint": url, "connect_timeout_s": 5.0, "auth": {"api_key_file": str(keyfile)}}
    config = {
        "device": {"name": "test-pi"},
        "voicelive": voicelive if url is not None else {},
        "network": {"ice_loopback": True},
        "audio": {
            "capture": {"device": capture_device(tmp / f"{name}.fifo"), "rate": 16000},
            "playback": {"device": playback_device(tmp / f"{name}.wav"), "rate": 48000},
        },
        "gpio": {"pin_factory": "mock", "leds": {"driver": "rgbled", "pins": [5, 6, 13]}},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def run_check(tmp: Path, url: str | None, key: str | None, name: str) -> tuple[int, dict[str, Any], str]:
    """The command in a child process, its microphone a FIFO fed here in real time (about -20 dBFS)."""
    config = write_config(tmp, url, key, name)
    noise = (np.random.default_rng(3).standard_normal(16000 * 5) * 3000).astype(np.int16)
    feeder = FifoFeeder(tmp / f"{name}.fifo", noise, rate=16000, period_frames=320, then="silence").start()
    try:
        proc = await asyncio.create_subprocess_exec(
            VOICE_AGENT, "check", "--json", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        feeder.stop()
    text = out.decode() + err.decode()
    assert proc.returncode is not None
    return proc.returncode, json.loads(out.decode().strip().splitlines()[-1]), text


def rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in report["checks"]}


async def test_check_passes_against_the_emulator(tmp_path: Path) -> None:
    use_file_plugin(tmp_path)
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        code, report, text = await run_check(tmp_path, emu.url, KEY, "good")
    checks = rows(report)
    assert code == 0 and report["ok"], text
    assert report["device"] == "test-pi"
    assert list(checks) == ["config", "credentials", "capture", "playback", "leds", "button", "dns", "tls", "auth",
                            "wake word"]  # fmt: skip
    assert {n: r["status"] for n, r in checks.items()} == {
        **{n: "pass" for n in checks}, "button": "skip",
    }
    level = float(checks["capture"]["detail"].split(": ")[1].split(" dBFS")[0])
    assert -25 < level < -15, checks["capture"]  # the fed noise is at about -20.8 dBFS
    assert "not applicable" in checks["dns"]["detail"]
    assert "hey_jarvis" in checks["wake word"]["detail"]
    assert "rgbled: walked wake > listening > thinking > speaking" in checks["leds"]["detail"]
    with wave.open(str(tmp_path / "good.wav")) as w:  # the tone reached the playback device
        tone = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert w.getframerate() == 48000 and len(tone) >= 48000
    assert -17 < dbfs(tone[2400:45600]) < -13  # a sine at -12 dBFS peak is -15 dBFS RMS
    assert KEY not in text


async def test_check_with_a_wrong_key_fails_the_auth_row(tmp_path: Path) -> None:
    use_file_plugin(tmp_path)
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        code, report, text = await run_check(tmp_path, emu.url, "wrong-key-7c1f", "bad")
        assert len(emu.calls) == 0  # refused at the upgrade
    checks = rows(report)
    assert code == 1 and not report["ok"]
    assert checks["auth"]["status"] == "fail"
    assert "credentials refused: HTTP 401" in checks["auth"]["detail"]
    assert "check the API key" in checks["auth"]["detail"]
    assert [n for n, r in checks.items() if r["status"] == "fail"] == ["auth"]
    assert "wrong-key-7c1f" not in text and KEY not in text


async def test_check_without_an_endpoint_checks_the_hardware_and_skips_the_rest(tmp_path: Path) -> None:
    """A newcomer before the Azure resource exists: no endpoint, no key."""
    use_file_plugin(tmp_path)
    code, report, text = await run_check(tmp_path, None, None, "new")
    checks = rows(report)
    assert code == 0 and report["ok"], text
    assert {n: r["status"] for n, r in checks.items()} == {
        "config": "warn", "credentials": "skip", "capture": "pass", "playback": "pass", "leds": "pass",
        "button": "skip", "dns": "skip", "tls": "skip", "auth": "skip", "wake word": "pass",
    }  # fmt: skip
    assert "voicelive.endpoint is not set" in checks["config"]["detail"]
    for name in ("credentials", "dns", "tls", "auth"):
        assert checks[name]["detail"].startswith("not checked: no endpoint configured"), checks[name]
    level = float(checks["capture"]["detail"].split(": ")[1].split(" dBFS")[0])
    assert -25 < level < -15, checks["capture"]
    assert (tmp_path / "new.wav").stat().st_size > 48000 * 2  # the tone was played


async def test_check_table_and_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("audio:\n  capture:\n    rate: 44100\n")
    proc = await asyncio.create_subprocess_exec(
        VOICE_AGENT, "check", "--config", str(bad), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    lines = out.decode().splitlines()
    assert lines[1].startswith("FAIL  config") and "audio.capture.rate: 44100 is not one of 16000, 48000" in lines[1]
    assert lines[-1] == "result: FAIL: config"


async def test_devices_lists_what_a_device_accepts() -> None:
    proc = await asyncio.create_subprocess_exec(
        VOICE_AGENT, "devices", "--json", "--device", "null", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    found = {(d["kind"], d["name"]): d for d in json.loads(out)}
    capture = found[("capture", "null")]
    assert {16000, 48000} <= set(capture["rates"]) and 1 in capture["channels"] and capture["error"] is None
    assert ("playback", "null") in found


async def test_a_stalled_microphone_fails_its_row_and_the_check_still_ends(tmp_path: Path) -> None:
    """A device that stops delivering (a FIFO held open with nothing written) blocks ALSA's read forever:
    the row fails after its limit and the command still finishes."""
    use_file_plugin(tmp_path)
    config = write_config(tmp_path, "ws://127.0.0.1:9", KEY, "stall")
    feeder = FifoFeeder(tmp_path / "stall.fifo", np.zeros(3200, np.int16), rate=16000, period_frames=320,
                        then="hold").start()  # fmt: skip
    try:
        proc = await asyncio.create_subprocess_exec(
            VOICE_AGENT, "check", "--json", "--no-tone", "--no-leds", "--timeout", "2", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        feeder.stop()
    checks = rows(json.loads(out.decode().strip().splitlines()[-1]))
    assert proc.returncode == 1
    assert checks["capture"]["status"] == "fail"
    assert "no answer from the device within 5 s" in checks["capture"]["detail"]
    assert checks["auth"]["status"] == "fail"  # nothing listens on port 9
