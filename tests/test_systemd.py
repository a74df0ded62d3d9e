"""The systemd side: the sd_notify protocol on real unix datagram sockets, the service's READY / WATCHDOG /
STOPPING on a real capture device, and the unit file checked by the real systemd-analyze."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.audio.fileplugin import FifoFeeder, use_file_plugin
from agent.config import Config, SystemdEnv, systemd_env
from agent.demo import demo_config
from agent.sdnotify import Notifier, ProgressCheck, feed_watchdog
from agent.service import run_service
from agent.voicelive.auth import ApiKey, Secret

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "voice-agent.service"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")

pytestmark = pytest.mark.timeout(60)


class Listener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def fields(self) -> list[dict[str, str]]:
        return [dict(line.split("=", 1) for line in m.splitlines()) for m in self.drain()]

    async def wait_for(self, key: str, timeout: float, since: int = 0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for f in self.fields()[since:]:
                if key in f:
                    return f
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {key} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_listener(tmp_path: Path) -> Iterator[tuple[str, Listener]]:
    path = str(tmp_path / "notify.sock")
    listener = Listener(path)
    yield path, listener
    listener.close()


# --------------------------------------------------------------------------------------------------
# The protocol


def test_notify_to_a_path_socket(path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    notifier = Notifier(path)
    assert notifier.ready("listening for hey_jarvis")
    assert notifier.watchdog()
    assert notifier.stopping()
    notifier.close()
    assert listener.drain() == ["READY=1\nSTATUS=listening for hey_jarvis", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_notify_to_an_abstract_socket() -> None:
    name = f"@voice-agent-test-{uuid.uuid4().hex}"
    listener = Listener(b"\0" + name[1:].encode())
    try:
        notifier = Notifier(name)
        assert notifier.status("hello")
        notifier.close()
        assert listener.drain() == ["STATUS=hello"]
    finally:
        listener.close()


def test_no_socket_is_a_no_op_and_a_dead_socket_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not Notifier(None).ready("x")
    dead = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert not dead.watchdog() and not dead.watchdog()
    assert caplog.text.count("cannot notify systemd") == 1  # said once, not per ping


def test_systemd_env_reads_only_what_systemd_sets() -> None:
    env = systemd_env({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"})
    assert env == SystemdEnv("/run/systemd/notify", 30_000_000, 42)
    assert env.watchdog_interval_s(42) == 15.0
    assert env.watchdog_interval_s(43) is None  # meant for another process
    assert systemd_env({"WATCHDOG_USEC": "soon"}) == SystemdEnv()
    assert SystemdEnv().watchdog_interval_s(1) is None


def test_progress_check_needs_new_blocks_and_a_running_state() -> None:
    state = ["running", 0]
    check = ProgressCheck(lambda: (str(state[0]), int(state[1])))
    assert check()  # the first look has nothing to compare with
    assert not check() and "no capture block or reopen attempt" in check.reason
    state[1] = 5
    assert check()
    state[0], state[1] = "error", 9
    assert not check() and check.reason == "capture is error"
    # the service's check: a device in error whose reopen attempts go on is alive; a stuck one is not
    service_check = ProgressCheck(lambda: (str(state[0]), int(state[1])), alive_states=("running", "error"))
    assert service_check()
    state[1] = 10
    assert service_check()
    assert not service_check() and "no capture block or reopen attempt" in service_check.reason
    state[0], state[1] = "stopped", 11
    assert not service_check() and service_check.reason == "capture is stopped"


async def test_watchdog_pings_stop_when_progress_stops(path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    blocks = [0]
    check = ProgressCheck(lambda: ("running", blocks[0]))
    task = asyncio.create_task(feed_watchdog(Notifier(path), check, 0.05))
    try:
        for _ in range(40):  # blocks every 10 ms, checks every 50 ms
            blocks[0] += 1
            await asyncio.sleep(0.01)
        alive = list(listener.drain())
        await asyncio.sleep(0.4)  # no new blocks: no pings, one STATUS saying why
        after = listener.drain()[len(alive) :]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert alive.count("WATCHDOG=1") >= 3
    assert after.count("WATCHDOG=1") <= 1  # at most the one already in flight
    assert any(m.startswith("STATUS=audio stalled") for m in after)


# --------------------------------------------------------------------------------------------------
# The service under a fake systemd


async def test_service_ready_watchdog_and_stopping_follow_the_microphone(
    tmp_path: Path, path_listener: tuple[str, Listener]
) -> None:
    """READY only after real capture blocks arrive; WATCHDOG while they do, none once the microphone
    stalls; STOPPING on SIGTERM, and a clean exit 0."""
    path, listener = path_listener
    use_file_plugin(tmp_path)
    fifo = tmp_path / "mic.fifo"
    config = demo_config(Config(), "ws://127.0.0.1:9", fifo, tmp_path / "out.wav")
    config = dataclasses.replace(config, gpio=dataclasses.replace(config.gpio, leds=Config().gpio.leds))
    # 2 s of room noise, then the FIFO stays open and silent: reads block, like a stalled device
    feeder = FifoFeeder(fifo, (np.random.default_rng(1).standard_normal(32000) * 300).astype(np.int16),
                        rate=16000, period_frames=320, then="hold")
    feeder.start()
    sd = SystemdEnv(notify_socket=path, watchdog_usec=400_000)
    service = asyncio.create_task(run_service(config, ApiKey(Secret("k")), sd))
    try:
        ready = await listener.wait_for("READY", 30)
        assert ready["STATUS"].startswith("listening for hey_jarvis")
        assert feeder.periods_written > 0  # audio flowed before READY
        n = len(listener.messages)
        await asyncio.sleep(1.0)
        pings_while_alive = listener.drain()[n:].count("WATCHDOG=1")
        await asyncio.wait_for(asyncio.to_thread(feeder.data_done.wait, 5), 6)
        await listener.wait_for("STATUS", 3, since=n + pings_while_alive)
        n = len(listener.drain())
        await asyncio.sleep(1.0)
        pings_while_stalled = listener.drain()[n:].count("WATCHDOG=1")
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(service, 15) == 0
    finally:
        feeder.stop()
        if not service.done():
            service.cancel()
    assert pings_while_alive >= 3, listener.messages
    assert pings_while_stalled == 0, listener.messages
    assert any("audio stalled" in m for m in listener.messages)
    assert listener.drain()[-1].startswith("STOPPING=1")


# --------------------------------------------------------------------------------------------------
# The unit file


def analyze_verify(unit: Path, root: Path | None = None) -> subprocess.CompletedProcess[str]:
    args = [str(SYSTEMD_ANALYZE), "verify", "--man=no"]
    if root is not None:
        args.append(f"--root={root}")
    return subprocess.run([*args, str(unit)], capture_output=True, text=True, timeout=60)


def verify_problems(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """systemd-analyze exits 0 on unknown keys and bad values: read its output as well."""
    text = proc.stdout + proc.stderr
    bad = ("Unknown key", "Failed to parse", "Unknown section", "Invalid", "warning", "is not executable")
    problems = [line for line in text.splitlines() if any(b.lower() in line.lower() for b in bad)]
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}: {text.strip()}")
    return problems


@needs_analyze
def test_unit_verify_catches_a_bad_key(tmp_path: Path) -> None:
    """The check itself can fail: a misspelt key is reported although systemd-analyze exits 0."""
    bad = tmp_path / "voice-agent.service"
    bad.write_text(UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    proc = analyze_verify(bad)
    assert any("Unknown key" in p for p in verify_problems(proc)), proc.stderr


@needs_analyze
def test_unit_security_exposure_is_at_most_3() -> None:
    proc = subprocess.run(
        [str(SYSTEMD_ANALYZE), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60, cwd=UNIT.parent,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security: exposure {score}")
    assert score <= 3.0


def test_unit_promises() -> None:
    """What the fleet relies on, read from the file (the verified copy is checked in test_install)."""
    text = UNIT.read_text()
    lines = {ln.split("=", 1)[0]: ln.split("=", 1)[1] for ln in text.splitlines() if "=" in ln and ln[0] != "#"}
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    assert int(lines["WatchdogSec"]) > 0 and lines["Restart"] == "on-failure"
    assert lines["RestartPreventExitStatus"] == "78"
    assert lines["User"] == "voice-agent" and set(lines["SupplementaryGroups"].split()) == {"audio", "gpio", "spi"}
    assert lines["LoadCredential"] == "voicelive-api-key:/etc/voice-agent/credentials/voicelive-api-key"
    assert "VOICELIVE_API_KEY" not in text
    assert "StartLimitBurst" in lines and "StartLimitIntervalSec" in lines
