"""What a tool is, and how a call to one is checked, run and answered.

A `Tool` is a name, a description and a JSON schema for its arguments (what the session declares to the
model), and an async function that does the work. `ToolBox.run(name, arguments)` never raises and never
hangs: an unknown tool, arguments that are not JSON or do not match the schema, a tool that fails or
that takes longer than its timeout each come back as an error the model can read (`{"error": ...}`),
and are logged. A tool that blocks (a file, a socket, a pin) runs its blocking part with
`asyncio.to_thread`, so the event loop (and the call's audio) never waits on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

log = logging.getLogger(__name__)

#: What a tool returns: a JSON-able mapping the model reads.
Result = dict[str, Any]
Handler = Callable[[dict[str, Any]], Awaitable[Result]]

DEFAULT_TIMEOUT_S = 5.0


class ToolError(Exception):
    """A tool could not do what was asked; the message is for the model (and the log)."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler = field(repr=False, compare=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    def declaration(self) -> dict[str, Any]:
        """As the session's `tools` lists it."""
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolOutcome:
    """One call's answer: `output` is the string sent as the `function_call_output`."""

    name: str
    ok: bool
    output: str
    ms: float
    result: Result = field(default_factory=dict)


def check_schema(schema: dict[str, Any]) -> None:
    """Raise `jsonschema.SchemaError` if `schema` is no valid JSON schema (for tools from the config)."""
    jsonschema.Draft202012Validator.check_schema(schema)


class ToolBox:
    """The tools the device offers, by name."""

    def __init__(self, tools: list[Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}
        for tool in tools or []:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} exists already")
        check_schema(tool.parameters)
        self._tools[tool.name] = tool
        self._validators[tool.name] = jsonschema.Draft202012Validator(tool.parameters)

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def declarations(self) -> list[dict[str, Any]]:
        return [t.declaration() for t in self._tools.values()]

    async def run(self, name: str, arguments: str | dict[str, Any] | None) -> ToolOutcome:
        t0 = time.monotonic()

        def done(ok: bool, result: Result) -> ToolOutcome:
            return ToolOutcome(name, ok, json.dumps(result), round((time.monotonic() - t0) * 1000, 1), result)

        tool = self._tools.get(name)
        if tool is None:
            log.warning("the model called an unknown tool %r", name)
            return done(False, {"error": f"unknown tool {name!r}; the tools are: {', '.join(self._tools)}"})
        try:
            args = arguments if isinstance(arguments, dict) else json.loads(arguments or "{}")
        except ValueError as exc:
            log.warning("tool %s: arguments are not JSON (%s)", name, exc)
            return done(False, {"error": f"the arguments are not JSON: {exc}"})
        if not isinstance(args, dict):
            return done(False, {"error": "the arguments must be a JSON object"})
        problems = sorted(self._validators[name].iter_errors(args), key=lambda e: list(e.path))
        if problems:
            where = lambda e: "/".join(str(p) for p in e.path) or "arguments"  # noqa: E731
            text = "; ".join(f"{where(e)}: {e.message}" for e in problems[:3])
            log.warning("tool %s: bad arguments: %s", name, text)
            return done(False, {"error": f"bad arguments: {text}"})
        try:
            async with asyncio.timeout(tool.timeout_s):
                result = await tool.handler(args)
        except TimeoutError:
            log.warning("tool %s timed out after %.1f s", name, tool.timeout_s)
            return done(False, {"error": f"{name} did not finish within {tool.timeout_s:g} s"})
        except ToolError as exc:
            log.warning("tool %s could not do it: %s", name, exc)
            return done(False, {"error": str(exc)})
        except Exception as exc:  # a tool's bug is the model's to hear about, not the call's to die of
            log.exception("tool %s failed", name)
            return done(False, {"error": f"{name} failed: {type(exc).__name__}"})
        log.info("tool %s done in %.0f ms", name, (time.monotonic() - t0) * 1000)
        return done(True, result)
