"""Function calls in the service's events, in each form the service may send one.

The model asks for a tool in any of three events, over either channel (voicelive-webrtc.md §1.5, §1.6):
`response.function_call_arguments.done` (`call_id`, `arguments`, and `name` in newer versions),
`response.output_item.done` whose item is a `function_call` (`call_id`, `name`, `arguments`), and
`response.done` whose `response.output` lists the same items. `response.done` may come before the others.
`function_calls(event)` reads whichever it is; a call is the same call in every form (its `call_id`).
`response.output_item.added` names a call before its arguments are done (`names_in`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .protocol import ServerEvent


@dataclass(frozen=True)
class FunctionCall:
    call_id: str
    name: str | None
    arguments: str
    response_id: str | None


def _item_call(item: Any, response_id: str | None) -> FunctionCall | None:
    if not isinstance(item, dict) or item.get("type") != "function_call":
        return None
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        return None
    name = item.get("name")
    args = item.get("arguments")
    return FunctionCall(
        call_id, name if isinstance(name, str) else None, args if isinstance(args, str) else "{}", response_id
    )


def function_calls(event: ServerEvent) -> list[FunctionCall]:
    data = event.data
    if event.type == "response.function_call_arguments.done":
        call_id = data.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            return []
        name = data.get("name")
        args = data.get("arguments")
        rid = data.get("response_id")
        return [
            FunctionCall(
                call_id,
                name if isinstance(name, str) else None,
                args if isinstance(args, str) else "{}",
                rid if isinstance(rid, str) else None,
            )
        ]
    if event.type == "response.output_item.done":
        rid = data.get("response_id")
        call = _item_call(data.get("item"), rid if isinstance(rid, str) else None)
        return [call] if call is not None else []
    if event.type == "response.done":
        response = data.get("response")
        if not isinstance(response, dict):
            return []
        rid = response.get("id") if isinstance(response.get("id"), str) else None
        output = response.get("output")
        calls = [_item_call(item, rid) for item in output] if isinstance(output, list) else []
        return [c for c in calls if c is not None]
    return []


def names_in(event: ServerEvent) -> dict[str, str]:
    """call_id -> name, from a `response.output_item.added` (or `.done`) function_call item."""
    if event.type not in ("response.output_item.added", "response.output_item.done"):
        return {}
    item = event.data.get("item")
    if isinstance(item, dict) and item.get("type") == "function_call":
        call_id, name = item.get("call_id"), item.get("name")
        if isinstance(call_id, str) and isinstance(name, str):
            return {call_id: name}
    return {}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    """The item that answers a call (`conversation.item.create`)."""
    return {"type": "function_call_output", "call_id": call_id, "output": output}
