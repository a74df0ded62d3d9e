"""Pins the user wired (a relay, a lamp), switched by name: `gpio.outputs` in the config, through gpiozero."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..config import GpioOutputConfig
from .registry import Tool

log = logging.getLogger(__name__)


class Outputs:
    def __init__(self, outputs: dict[str, GpioOutputConfig]) -> None:
        from gpiozero import DigitalOutputDevice

        self.cfg = outputs
        self.devices = {
            name: DigitalOutputDevice(o.pin, active_high=o.active_high, initial_value=o.initial)
            for name, o in outputs.items()
        }

    def close(self) -> None:
        for dev in self.devices.values():
            dev.close()

    def _switch(self, name: str, state: str) -> bool:
        dev = self.devices[name]
        if state == "toggle":
            dev.toggle()
        elif state == "on":
            dev.on()
        else:
            dev.off()
        return bool(dev.value)

    def tools(self) -> list[Tool]:
        async def set_output(args: dict[str, Any]) -> dict[str, Any]:
            on = await asyncio.to_thread(self._switch, args["name"], args["state"])
            log.info("output %s %s", args["name"], "on" if on else "off")
            return {"name": args["name"], "state": "on" if on else "off"}

        described = "; ".join(f"{n}: {o.description}" for n, o in self.cfg.items() if o.description)
        return [
            Tool(
                "set_output",
                "Switch one of the device's outputs on, off, or toggle it. The outputs: "
                + (described or ", ".join(self.cfg)),
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "enum": list(self.cfg)},
                        "state": {"type": "string", "enum": ["on", "off", "toggle"]},
                    },
                    "required": ["name", "state"],
                    "additionalProperties": False,
                },
                set_output,
            )
        ]
