"""`voice-agent run` as systemd runs it, against the emulator: SIGTERM mid-call hangs up cleanly within
2 s and exits 0; SIGHUP reloads the configuration (a bad one is reported by its key and changes
nothing)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.audio.fileplugin import FifoFeeder, capture_device, playback_device, write_file_plugin_conf
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.voicelive.auth import Secret

from .speech import espeak, quiet

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parents[1]
KEY = "canary-signals-0b6e2f"


def write_config(path: Path, url: str, tmp: Path, followup_s: float = 30.0, **extra: object) -> None:
    data: dict = {
        "voicelive": {"endpoint": url},
        "network": {"ice_loopback": True},
        "audio": {
            "capture": {"device": capture_device(tmp / "mic.fifo")},
            "playback": {"device": playback_device(tmp / "out.wav")},
        },
        "gpio": {"pin_factory": "mock"},
        "conversation": {"followup_s": followup_s},
    }
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)  # type: ignore[union-attr]
    path.write_text(yaml.safe_dump(data))


async def start_service(tmp: Path, config: Path) -> asyncio.subprocess.Process:
    conf = write_file_plugin_conf(tmp)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env.update(VOICELIVE_API_KEY=KEY, ALSA_CONFIG_PATH=f"/usr/share/alsa/alsa.conf:{conf}")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent",
        "run",
        "--config",
        str(config),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


async def read_until(proc: asyncio.subprocess.Process, text: str, seen: list[str], timeout: float = 30) -> None:
    async def read() -> None:
        assert proc.stdout is not None
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"the service ended before {text!r}:\n" + "".join(seen))
            seen.append(line)
            if text in line:
                return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {text!r} within {timeout} s:\n" + "".join(seen)) from None


async def test_sigterm_mid_call_hangs_up_within_2_s_and_exits_0(tmp_path: Path) -> None:
    audio = np.concatenate([quiet(1.5), espeak("hey jarvis"), quiet(0.5, seed=1), espeak("lights on"), quiet(1.0)])
    seen: list[str] = []
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        config = tmp_path / "config.yaml"
        write_config(config, emu.url, tmp_path)
        feeder = FifoFeeder(tmp_path / "mic.fifo", audio, rate=16000, period_frames=320, then="silence")
        feeder.start()
        proc = await start_service(tmp_path, config)
        try:
            await read_until(proc, "listening for hey_jarvis", seen)
            await read_until(proc, "state thinking -> speaking", seen)  # mid-call, the reply playing
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 10)
            elapsed = time.monotonic() - t
        finally:
            feeder.stop()
            if proc.returncode is None:
                proc.kill()
        await asyncio.wait_for(emu.calls[0].closed.wait(), 2)  # the call was hung up, not left dangling
    assert rc == 0, "".join(seen)
    assert elapsed < 2.0, elapsed
    rest = (await proc.stdout.read()).decode() if proc.stdout else ""
    text = "".join(seen) + rest
    assert "Traceback" not in text
    assert KEY not in text


async def test_sighup_reloads_and_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    seen: list[str] = []
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        config = tmp_path / "config.yaml"
        write_config(config, emu.url, tmp_path)
        feeder = FifoFeeder(tmp_path / "mic.fifo", quiet(1.0), rate=16000, period_frames=320, then="silence")
        feeder.start()
        proc = await start_service(tmp_path, config)
        try:
            await read_until(proc, "listening for hey_jarvis", seen)
            write_config(config, emu.url, tmp_path, followup_s=5.0)
            proc.send_signal(signal.SIGHUP)
            await read_until(proc, "configuration reloaded", seen)
            write_config(config, emu.url, tmp_path, logging={"level": "LOUD"})
            proc.send_signal(signal.SIGHUP)
            await read_until(proc, "configuration not reloaded", seen)
            assert "logging.level: 'LOUD' is not one of" in seen[-1]
            write_config(config, emu.url, tmp_path, wake={"inference_framework": "onnx"})
            proc.send_signal(signal.SIGHUP)
            await read_until(proc, "restart the service to apply them", seen)
            assert proc.returncode is None  # still running
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(proc.wait(), 10)
        finally:
            feeder.stop()
            if proc.returncode is None:
                proc.kill()
    assert rc == 0
