"""The device's own tools, run for the model through Voice Live function calling.

Voice Live runs the model; only the device has the speaker, the clock, the pins and the home network, so
the device runs the tools: `registry` (what a tool is, how a call to one is checked, run and answered),
`timers`, `volume`, `device` (time, ending the conversation, the microphone), `gpio_out` and `http` (the
tools the config names), and `calls` (one call's function-call events to tool runs and answers).
"""

from .registry import Tool, ToolBox, ToolOutcome

__all__ = ["Tool", "ToolBox", "ToolOutcome"]
