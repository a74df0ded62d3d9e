"""The metrics file as a fleet sees it: Debian's prometheus-node-exporter, started here on 127.0.0.1 with
only its textfile collector, scraped over HTTP while the agent runs a conversation against the emulator,
and parsed with prometheus_client's parser; then a day of writes in a few seconds, which must leave the
file the same size and the process's memory flat."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory
from prometheus_client.parser import text_string_to_metric_families

from agent.agent import Agent
from agent.bench.common import vm_rss_mb
from agent.config import Config, DeviceConfig, MetricsConfig
from agent.conversation import ConversationResult
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.metrics import END_REASONS, Health, Publisher, config_hash, end_reason_label
from agent.state import IN_CALL, ErrorKind, Input
from agent.status import read_status, status_text
from agent.voicelive.auth import ApiKey, Secret
from agent.wake.listener import Detection

from .harness import KEY, Rig, agent_config, run_agent
from .speech import brown_noise, espeak
from .test_longrun import clear_mock_history, logs_like_the_service

NODE_EXPORTER = shutil.which("prometheus-node-exporter")
pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if NODE_EXPORTER is None:
        pytest.fail("prometheus-node-exporter is not installed (install.sh --dev installs it)")
    textdir = tmp_path / "textfile"
    textdir.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={textdir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"node_exporter did not start: {proc.stderr.read().decode()}") from None
                time.sleep(0.05)
        yield textdir, url
    finally:
        proc.terminate()
        proc.wait(5)


def scrape(url: str) -> Samples:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    want = frozenset(labels.items())
    found = [v for (n, ls), v in samples.items() if n == name and want <= ls]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def wake_then_command() -> np.ndarray:
    parts = [brown_noise(1.0), espeak("hey jarvis"), brown_noise(0.7, seed=2), espeak("turn on the lights")]
    return np.concatenate([*parts, brown_noise(1.0)])


def with_metrics(config: Config, textfile: Path | None, run_dir: Path | None, interval_s: float = 15.0) -> Config:
    metrics = MetricsConfig(textfile=textfile, interval_s=interval_s, runtime_dir=run_dir)
    return dataclasses.replace(config, device=DeviceConfig(name="test-kitchen"), metrics=metrics)


async def test_node_exporter_scrapes_what_happened_in_a_conversation(
    tmp_path: Path, node_exporter: tuple[Path, str]
) -> None:
    textdir, url = node_exporter
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    seen: dict[str, Samples] = {}

    async def watch(rig: Rig) -> None:
        agent = rig.agent
        while not agent.snapshot.in_call:  # a scrape mid-call shows the call's state
            await asyncio.sleep(0.05)
        await asyncio.sleep(DEBOUNCE_WAIT)
        seen["call"] = await asyncio.to_thread(scrape, url)
        while agent.conversations_done < 1:
            await asyncio.sleep(0.05)
        for _ in range(100):  # the write after the conversation ended (debounced)
            seen["after"] = await asyncio.to_thread(scrape, url)
            if value(seen["after"], "voice_agent_call_attempts_total") == 1:
                break
            await asyncio.sleep(0.1)
        seen["status"] = read_status(run_dir / "status.json")[0]  # type: ignore[assignment]

    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        config = with_metrics(agent_config(tmp_path, emu, followup_s=1.0), textdir / "voice_agent.prom", run_dir)
        agent = await run_agent(tmp_path, emu, wake_then_command(), during=watch, config=config)
        after_stop = scrape(url)
    result = agent.results[0]
    assert result.ok and result.end_reason == "follow-up window passed", result

    during = seen["call"]
    assert sum(value(during, "voice_agent_state", state=s.value) for s in IN_CALL) == 1
    assert value(during, "voice_agent_state", state="idle") == 0

    s = seen["after"]
    assert value(s, "node_textfile_scrape_error") == 0  # node_exporter read the file without complaint
    assert value(s, "voice_agent_up", device="test-kitchen") == 1
    assert value(s, "voice_agent_wake_detections_total", model="hey_jarvis") == 1 == agent.listener.detections_total
    assert value(s, "voice_agent_call_attempts_total") == 1
    assert value(s, "voice_agent_conversations_total", end_reason="completed") == 1
    assert sum(value(s, "voice_agent_conversations_total", end_reason=r) for r in END_REASONS) == 1
    assert sum(v for (n, _), v in s.items() if n == "voice_agent_call_failures_total") == 0
    assert value(s, "voice_agent_last_connect_seconds") == pytest.approx(result.connect_ms / 1000)
    assert value(s, "voice_agent_replies_total") == len(result.responses) >= 1
    first_reply = value(s, "voice_agent_last_first_reply_seconds")
    assert 0 < first_reply < 2, first_reply
    assert 0 < value(s, "voice_agent_call_seconds_total") < 15
    assert value(s, "voice_agent_state", state="idle") == 1
    assert value(s, "voice_agent_ready") == 1 and value(s, "voice_agent_microphone_ok") == 1
    level = value(s, "voice_agent_microphone_level_dbfs")
    assert -60 < level < -3, level  # brown noise and speech, not silence and not clipping
    assert value(s, "voice_agent_info", config_sha256=config_hash(config)) == 1
    assert value(s, "voice_agent_resident_memory_bytes") > 50e6
    assert all(("device", "test-kitchen") in labels for (n, labels) in s if n.startswith("voice_agent_"))
    text = (textdir / "voice_agent.prom").read_text()
    assert KEY not in text and "lights" not in text  # nothing secret, nothing said
    assert stat.S_IMODE((textdir / "voice_agent.prom").stat().st_mode) == 0o644
    assert sorted(p.name for p in textdir.iterdir()) == ["voice_agent.prom"]  # no temporary file left
    # the status file was written with the same snapshot text systemd's STATUS line shows
    status = seen["status"]
    assert status is not None and status["counters"]["conversations"] == 1
    assert status["status"] == status_text("test-kitchen", agent.snapshot) == "test-kitchen: idle"
    assert status["last_call"]["end_reason"] == "completed"
    # after a clean stop the file says so
    assert value(after_stop, "voice_agent_up") == 0
    assert read_status(run_dir / "status.json")[0] is None


DEBOUNCE_WAIT = 1.5


def fold_conversation(agent: Agent, t: float, n: int, failed: bool) -> None:
    """What a conversation leaves behind in the agent, with the real state owner going through it."""
    states = agent.states
    for inp in (Input.WAKE, Input.DIAL):
        states.apply(inp, cause="wake:hey_jarvis")
    assert agent.listener is not None
    agent.listener.detections.append(Detection("hey_jarvis", 0.9, t))
    agent.listener.detections_total += 1
    result = ConversationResult(trigger="wake:hey_jarvis", t_trigger=t)
    if failed:
        states.apply(Input.FAILED, error=ErrorKind.NETWORK, cause="the WebRTC connection failed")
        result.end_reason, result.error_kind = "call failed", "network"
        states.apply(Input.RECOVERED)
    else:
        for inp in (Input.CONNECTED, Input.USER_SPEAKING, Input.USER_DONE, Input.ASSISTANT_SPEAKING,
                    Input.ASSISTANT_DONE, Input.HUNG_UP):  # fmt: skip
            states.apply(inp)
        result.ok, result.end_reason, result.connect_ms = True, "follow-up window passed", 120.0 + n % 7
        result.responses, result.barge_ins = ["completed"], n % 2
    agent.results.append(result)
    agent.conversations_done += 1


async def test_a_day_of_writes_leaves_the_file_the_same_size_and_memory_flat(tmp_path: Path) -> None:
    """A day at the default 15 s (5760 writes) with a conversation every five minutes (one in ten
    failing), through the real Publisher, Health, StateOwner and files, at full speed."""
    config = with_metrics(agent_config(tmp_path, "ws://127.0.0.1:9"), tmp_path / "voice_agent.prom", tmp_path)
    agent = Agent(config, ApiKey(Secret(KEY)))
    from agent.wake.listener import WakeListener

    agent.listener = WakeListener(None, agent.states, asyncio.get_running_loop(),  # type: ignore[arg-type]
                                  on_trigger=agent.trigger, last_audible_t=lambda: None)  # fmt: skip
    publisher = Publisher(Health(agent), config.metrics.textfile, tmp_path, 15.0)
    sizes: list[int] = []

    def hour(h: int) -> None:
        if isinstance(Device.pin_factory, MockFactory):
            clear_mock_history(Device.pin_factory)  # a test aid of gpiozero's mock pins, absent on a Pi
        for i in range(240):  # writes per hour at 15 s
            if i % 20 == 0:
                n = h * 12 + i // 20
                fold_conversation(agent, float(n), n, failed=n % 10 == 9)
            publisher.write(publisher.render())
        sizes.append(len((tmp_path / "voice_agent.prom").read_bytes()))

    with logs_like_the_service():
        hour(0)  # warm-up: every series exists from the first write
        series = [line.rsplit(" ", 1)[0] for line in (tmp_path / "voice_agent.prom").read_text().splitlines()]
        gc.collect()
        blocks, rss = sys.getallocatedblocks(), vm_rss_mb()
        for h in range(1, 24):
            hour(h)
        gc.collect()
    assert publisher.writes == 24 * 240
    assert agent.conversations_done == 288
    text = (tmp_path / "voice_agent.prom").read_text()
    assert 'voice_agent_conversations_total{device="test-kitchen",end_reason="call_failed"} 28' in text
    # the same series all day: only the digits of the counters grow
    assert [line.rsplit(" ", 1)[0] for line in text.splitlines()] == series
    assert max(sizes) - min(sizes) < 0.02 * min(sizes), sizes
    assert sys.getallocatedblocks() - blocks < 2000, sys.getallocatedblocks() - blocks
    assert vm_rss_mb() - rss < 2.0
    assert len(publisher.health.last_errors) == 5
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary file left behind


def test_end_reasons_fold_into_a_fixed_set() -> None:
    def label(reason: str) -> str:
        return end_reason_label(ConversationResult(trigger="x", t_trigger=0.0, end_reason=reason))

    assert label("follow-up window passed") == "completed"
    assert label("hung up by the button") == "hung_up"
    assert label("agent stopping") == "hung_up"
    assert label("call failed") == "call_failed"
    assert label("data channel closed") == "dropped"
    assert label("control channel closed by the service (1011 internal error)") == "dropped"
    assert label("maximum call length reached") == "max_length"
