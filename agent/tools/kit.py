"""The device's tool kit: the tools the config turns on, built for one agent, and the timers' ringing.

`DeviceTools` owns what outlives a call: the timers (and the task that rings a due one: the timer
earcon every `RING_EVERY_S` until silenced, with the device's `ringing` flag up, which the LEDs show),
the volume, the GPIO outputs. A call's function calls are run against `box` (agent.tools.calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..config import Config
from ..state import Input, StateOwner
from .device import end_tool, mute_tool, time_tool
from .gpio_out import Outputs
from .http import HttpTool
from .registry import ToolBox
from .store import state_dir
from .timers import Timers
from .volume import Volume

log = logging.getLogger(__name__)

RING_EVERY_S = 2.0


class Speaker(Protocol):
    volume: float

    def write_pcm(self, samples: np.ndarray, rate: int) -> None: ...


class Chimes(Protocol):
    def play(self, name: str, sink: Speaker) -> None: ...  # type: ignore[misc]


class DeviceTools:
    def __init__(
        self,
        config: Config,
        speaker: Speaker,
        chimes: Chimes,
        states: StateOwner,
        end_conversation: Callable[[], None],
        mute: Callable[[], None],
    ) -> None:
        cfg = config.tools
        self.box = ToolBox()
        self.directory = state_dir(cfg.state_dir)
        self._speaker = speaker
        self._chimes = chimes
        self._states = states
        self._ring_task: asyncio.Task[None] | None = None
        self.timers: Timers | None = None
        self.volume: Volume | None = None
        self.outputs: Outputs | None = None
        if cfg.timers:
            self.timers = Timers(self.directory, self._ring, self._silenced, ring_s=cfg.timer_ring_s)
            for tool in self.timers.tools():
                self.box.add(tool)
        if cfg.volume:
            self.volume = Volume(self.directory, speaker, cfg.volume_mixer, cfg.volume_card, cfg.volume_step)
            for tool in self.volume.tools():
                self.box.add(tool)
        if cfg.time:
            self.box.add(time_tool())
        if cfg.end_conversation:
            self.box.add(end_tool(end_conversation))
        if cfg.mute:
            self.box.add(mute_tool(mute))
        if config.gpio.outputs:
            self.outputs = Outputs(config.gpio.outputs)
            for tool in self.outputs.tools():
                self.box.add(tool)
        for http in cfg.http:
            self.box.add(HttpTool(http).tool())

    def declarations(self) -> list[dict[str, object]]:
        return self.box.declarations()

    def start(self) -> None:
        if self.timers is not None:
            self.timers.start()
        if len(self.box):
            log.info("tools for the model: %s", ", ".join(self.box.names))

    async def stop(self) -> None:
        if self.timers is not None:
            self.timers.stop()
        await self._stop_ringing()
        if self.outputs is not None:
            self.outputs.close()

    @property
    def ringing(self) -> bool:
        return self.timers is not None and bool(self.timers.ringing)

    def silence(self) -> bool:
        """A press or the stop word: silence a ringing timer; True if one rang."""
        return self.timers is not None and self.timers.silence()

    def _ring(self, names: list[str]) -> None:
        self._states.apply(Input.RING, cause=f"timer {', '.join(names)}")
        if self._ring_task is None or self._ring_task.done():
            self._ring_task = asyncio.create_task(self._ring_loop(), name="timer ringing")

    def _silenced(self) -> None:
        self._states.apply(Input.SILENCE, cause="timer silenced")
        if self._ring_task is not None:
            self._ring_task.cancel()
            self._ring_task = None

    async def _ring_loop(self) -> None:
        while True:
            self._chimes.play("timer", self._speaker)
            await asyncio.sleep(RING_EVERY_S)

    async def _stop_ringing(self) -> None:
        task, self._ring_task = self._ring_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
