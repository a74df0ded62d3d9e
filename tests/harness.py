"""The whole agent on this machine: the emulator on 127.0.0.1, a real ALSA capture device fed in real time
from a FIFO (alsa-lib's file plugin), a real ALSA playback device writing a WAV, gpiozero mock pins."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from agent.agent import Agent
from agent.audio.fileplugin import FifoFeeder, use_file_plugin
from agent.config import Config
from agent.demo import demo_config
from agent.emulator.server import Emulator
from agent.observe import Observer
from agent.voicelive.auth import ApiKey, Secret

KEY = "canary-harness-93c1d0e8a7"


def agent_config(tmp_path: Path, emulator: Emulator | str, **conversation: Any) -> Config:
    """The demo's configuration (file-plugin devices, mock pins, ICE on loopback) for `emulator` (or
    its URL, for one that is not started yet)."""
    use_file_plugin(tmp_path)
    url = emulator if isinstance(emulator, str) else emulator.url
    config = demo_config(Config(), url, tmp_path / "mic.fifo", tmp_path / "reply.wav")
    return dataclasses.replace(config, conversation=dataclasses.replace(config.conversation, **conversation))


@dataclasses.dataclass
class Rig:
    agent: Agent
    mic: FifoFeeder  # `mic.feed(samples)` speaks more into the running microphone


async def run_agent(
    tmp_path: Path,
    emulator: Emulator,
    audio: np.ndarray,
    during: Callable[[Rig], Awaitable[None]] | None = None,
    conversations: int = 1,
    timeout: float = 40,
    config: Config | None = None,
    observer: Observer | None = None,
    **conversation: Any,
) -> Agent:
    """Run the agent on `audio` (16 kHz mono, real time) until `conversations` ended; `during` runs
    alongside (to press the button, speak more, flip a fault)."""
    config = config or agent_config(tmp_path, emulator, **conversation)
    feeder = FifoFeeder(tmp_path / "mic.fifo", audio, rate=16000, period_frames=320, then="silence")
    feeder.start()
    if isinstance(Device.pin_factory, MockFactory):
        Device.pin_factory.reset()  # fresh mock pins: their state history is this run's alone
    agent = Agent(config, ApiKey(Secret(KEY)), observer)
    side: asyncio.Task[None] | None = None
    try:
        await agent.start()
        if during is not None:
            side = asyncio.create_task(during(Rig(agent, feeder)))
        await asyncio.wait_for(agent.run(max_conversations=conversations), timeout)
        if side is not None:
            await asyncio.wait_for(side, 10)
    finally:
        if side is not None and not side.done():
            side.cancel()
        await agent.stop()
        feeder.stop()
    return agent


async def wait_for_state(agent: Agent, name: str, timeout: float = 15) -> None:
    async def poll() -> None:
        while agent.state.value != name:
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


@contextlib.contextmanager
def logs_like_the_service() -> Iterator[None]:
    """pytest keeps every log record for its report; the service writes each to journald and keeps
    none. Log records are formatted and written (to /dev/null) as in the service, and not kept."""
    root = logging.getLogger()
    kept = [h for h in root.handlers if type(h).__name__ == "LogCaptureHandler"]
    with open(os.devnull, "w") as devnull:
        sink = logging.StreamHandler(devnull)
        sink.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        for handler in kept:
            root.removeHandler(handler)
        root.addHandler(sink)
        try:
            yield
        finally:
            root.removeHandler(sink)
            for handler in kept:
                root.addHandler(handler)
