"""`voice-agent status` against `voice-agent run` as systemd runs it (NOTIFY_SOCKET and RUNTIME_DIRECTORY
set, a real datagram socket standing in for systemd): the command's first line and systemd's STATUS line
are the same text from the same snapshot; exit code 0 while it works, 1 once it shows an error (a refused
key), 2 when no service runs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from agent.audio.fileplugin import FifoFeeder, write_file_plugin_conf
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.status import SCHEMA, read_status
from agent.voicelive.auth import Secret

from .speech import espeak, quiet
from .test_signals import REPO, write_config

pytestmark = pytest.mark.timeout(120)
KEY = "canary-status-4e1a77"
VOICE_AGENT = str(Path(sys.executable).with_name("voice-agent"))


async def status_cmd(run_dir: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "RUNTIME_DIRECTORY": str(run_dir)}
    proc = await asyncio.create_subprocess_exec(
        VOICE_AGENT, "status", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def until(check: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_status_and_systemd_status_line_tell_the_same_story(tmp_path: Path) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    sent: list[str] = []

    def statuses() -> list[str]:
        while True:
            try:
                sent.extend(notify.recv(4096).decode().splitlines())
            except BlockingIOError:
                return [line.removeprefix("STATUS=") for line in sent if line.startswith("STATUS=")]

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    audio = np.concatenate([quiet(6.0), espeak("hey jarvis"), quiet(0.5, seed=1), espeak("lights on"), quiet(1.0)])
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        emu.faults.refuse_auth = True
        config = tmp_path / "config.yaml"
        write_config(config, emu.url, tmp_path, device={"name": "test-pi"}, metrics={"interval_s": 1.0})
        conf = write_file_plugin_conf(tmp_path)
        env = {**os.environ, "VOICELIVE_API_KEY": "wrong-" + KEY, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
               "RUNTIME_DIRECTORY": str(run_dir), "ALSA_CONFIG_PATH": f"/usr/share/alsa/alsa.conf:{conf}"}  # fmt: skip
        env.pop("WATCHDOG_USEC", None)
        feeder = FifoFeeder(tmp_path / "mic.fifo", audio, rate=16000, period_frames=320, then="silence").start()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent", "run", "--config", str(config), cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await until(lambda: statuses() is not None and "READY=1" in sent)
            await until(lambda: (run_dir / "status.json").exists())
            code, out = await status_cmd(run_dir)
            assert code == 0, out
            assert out.splitlines()[0] == "test-pi: idle"
            assert "0 wake words, 0 conversations" in out
            # the wake word, a refused key: the auth error blocks the wake word
            await until(lambda: statuses() and "auth error" in statuses()[-1])
            await until(lambda: (read_status(run_dir / "status.json")[0] or {}).get("blocked") == "auth")
            code, out = await status_cmd(run_dir, "--json")
            doc = json.loads(out)
            assert code == 1, out
            assert doc["status"] == statuses()[-1] == "test-pi: idle, auth error: reload or hold the button to retry"
            assert doc["schema"] == SCHEMA and doc["state"] == "idle" and doc["shown_error"] == "auth"
            assert doc["counters"]["wake_detections"] == 1 and doc["counters"]["call_failures_by_kind"]["auth"] == 1
            assert doc["last_errors"][-1]["kind"] == "auth" and "401" in doc["last_errors"][-1]["reason"]
            code, out = await status_cmd(run_dir)
            assert code == 1 and out.splitlines()[0] == statuses()[-1]
            assert "error " in out and "auth" in out
            proc.terminate()
            assert await asyncio.wait_for(proc.wait(), 10) == 0
        finally:
            feeder.stop()
            if proc.returncode is None:
                proc.kill()
    code, out = await status_cmd(run_dir)
    assert code == 2 and "no service running" in out, out
    assert KEY not in (run_dir / "status.json").read_text()
    code, out = await status_cmd(tmp_path / "nowhere", "--json")
    assert code == 2 and json.loads(out) == {"running": False, "message": json.loads(out)["message"]}
    assert "does not exist" in json.loads(out)["message"]


def test_a_file_not_rewritten_is_stale(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    doc = {"schema": SCHEMA, "running": True, "pid": os.getpid(), "written": time.time() - 60, "interval_s": 15}
    path.write_text(json.dumps(doc))
    got, why = read_status(path)
    assert got is None and why.startswith("stale:") and "hangs" in why
    path.write_text(json.dumps({**doc, "written": time.time()}))
    assert read_status(path)[0] is not None
    path.write_text(json.dumps({**doc, "written": time.time(), "pid": 2**22 + 7}))  # above pid_max: never a process
    got, why = read_status(path)
    assert got is None and "is gone" in why
