"""The emulated model's tool script: after the user's Nth turn, call NAME with ARGUMENTS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolStep:
    """After the user's `after_turn`-th turn, call `name` with `arguments`."""

    after_turn: int
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


def parse_tool_script(data: Any) -> tuple[ToolStep, ...]:
    """A script from JSON/YAML data: a list of {after_turn, name, arguments}; ValueError says what is wrong."""
    if not isinstance(data, list):
        raise ValueError("a tool script is a list of {after_turn, name, arguments}")
    steps = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"step {i}: needs a name")
        turn = item.get("after_turn", 1)
        args = item.get("arguments", {})
        if not isinstance(turn, int) or turn < 1 or not isinstance(args, dict):
            raise ValueError(f"step {i}: after_turn is a turn number from 1, arguments an object")
        steps.append(ToolStep(turn, item["name"], args))
    return tuple(steps)
