"""The device's own small tools: the local time and date, ending the conversation, the microphone."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .registry import Tool

EMPTY: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def time_tool(clock: Callable[[], float] = time.time) -> Tool:
    async def get_time(args: dict[str, Any]) -> dict[str, Any]:
        now = time.localtime(clock())
        return {
            "time": time.strftime("%H:%M", now),
            "date": time.strftime("%A %d %B %Y", now),
            "time_zone": time.strftime("%Z (UTC%z)", now),
        }

    return Tool("get_time", "The local time and date where the device is, in its time zone.", EMPTY, get_time)


def end_tool(end: Callable[[], None]) -> Tool:
    async def end_conversation(args: dict[str, Any]) -> dict[str, Any]:
        end()
        return {"ending": True, "note": "say a short goodbye; the device hangs up after it"}

    return Tool(
        "end_conversation",
        "Hang up: call it when the user says goodbye or is done; the device hangs up after your reply.",
        EMPTY,
        end_conversation,
    )


def mute_tool(mute: Callable[[], None]) -> Tool:
    async def mute_microphone(args: dict[str, Any]) -> dict[str, Any]:
        mute()
        return {"muted": True, "note": "the microphone is off until the user holds the button"}

    return Tool(
        "mute_microphone",
        "Turn the device's microphone off (privacy), as holding its button does; only the button turns it on.",
        EMPTY,
        mute_microphone,
    )
