"""The emulated model's tool calls (`EmulatorSettings.tool_script`): it asks for tools as a real model
would, where the documented routing puts the events, and holds the client to the protocol.

After the user's Nth turn (a `speech_stopped`), the script's steps for N become one response whose
output is their function calls: `response.created` and `response.done` (with the calls in its `output`)
on the data channel, and the tool events on the WebSocket (voicelive-webrtc.md §1.5):
`response.output_item.added`, `response.function_call_arguments.delta` and `.done`,
`response.output_item.done`. Strict by default: `response.done` goes first and the tool events after it
(the order a client is most likely to get wrong); `tool_events_first` sends them the other way round;
`tool_duplicate` also sends each tool event on the data channel with the same event_id (the service's
duplicates). The client must answer each call with a `function_call_output` of a `call_id` it was given
(else an `error`) and only then send `response.create` (before: an `error`); the answer is a spoken reply
that says what the tools returned (espeak-ng's voice where it is installed, else a tone, and the text
in the transcript).

A part of `session.EmulatorCall` (a mixin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..voicelive.protocol import new_event_id
from . import events
from .replies import Reply, beep_reply
from .toolscript import ToolStep
from .tracks import RATE

log = logging.getLogger("agent.emulator.session")


def spoken(text: str) -> np.ndarray | None:
    """`text` in espeak-ng's voice at 48 kHz, or None without espeak-ng."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        wav = subprocess.run([exe, "--stdout", "-s", "170", text], capture_output=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    # espeak-ng writes a 22050 Hz mono WAV; its header's sizes are not to be trusted on a pipe
    data = np.frombuffer(wav[44 : 44 + (len(wav) - 44) // 2 * 2], dtype="<i2")
    n = int(len(data) * RATE / 22050)
    return np.interp(np.linspace(0, len(data) - 1, n), np.arange(len(data)), data).astype(np.int16)


@dataclass
class _ToolTurn:
    response_id: str
    calls: dict[str, str]  # call_id -> name
    outputs: dict[str, str] = field(default_factory=dict)


class CallFunctions:
    """`EmulatorCall`'s tool calls."""

    def _tool_steps(self, turn: int) -> list[ToolStep]:
        return [s for s in self._settings.tool_script if s.after_turn == turn]

    def _start_tool_response(self, steps: list[ToolStep]) -> None:
        rid = new_event_id("resp")
        items = []
        for i, step in enumerate(steps):
            call_id = new_event_id("call")
            items.append({
                "id": new_event_id("item"), "object": "realtime.item", "type": "function_call",
                "status": "completed", "name": step.name, "call_id": call_id,
                "arguments": json.dumps(step.arguments), "output_index": i,
            })  # fmt: skip
        self._tool_turn = _ToolTurn(rid, {it["call_id"]: it["name"] for it in items})
        self.tool_calls_sent.append((rid, [it["call_id"] for it in items]))
        self._emit(events.response_created(rid))
        done = events.response_done(rid, "completed", {"total_tokens": 0}, output=items)
        if not self._settings.tool_events_first:
            self._emit(done)
        for item in items:
            for event in events.function_call_events(rid, item):
                self._emit(event)
                if self._settings.tool_duplicate:
                    self._send_data(event)
        self.tool_events_t.append(time.monotonic())
        if self._settings.tool_events_first:
            self._emit(done)
        log.info("the model calls %s", ", ".join(s.name for s in steps))

    def _on_function_output(self, item: dict[str, Any], event_id: str | None) -> bool:
        """A `function_call_output` item: True if it answers a call this call was given."""
        call_id = item.get("call_id")
        turn = self._tool_turn
        if turn is None or call_id not in turn.calls:
            self._emit(
                events.error(
                    "invalid_call_id", f"No function call with call_id {call_id!r} awaits an output.", event_id,
                    param="item.call_id",
                )
            )  # fmt: skip
            return False
        output = item.get("output")
        turn.outputs[call_id] = output if isinstance(output, str) else json.dumps(output)
        self.tool_outputs.append((call_id, turn.outputs[call_id]))
        return True

    def _tool_response_refused(self, event_id: str | None) -> bool:
        """`response.create` while calls still wait for their outputs: refused, as a strict service would."""
        turn = self._tool_turn
        if turn is None or set(turn.outputs) == set(turn.calls):
            return False
        missing = ", ".join(sorted(set(turn.calls) - set(turn.outputs)))
        self._emit(events.error("function_call_output_missing", f"No output yet for call(s) {missing}.", event_id))
        return True

    async def _tool_answer(self) -> Reply | None:
        """The spoken answer to the outputs given (None: no tool turn to answer)."""
        turn, self._tool_turn = self._tool_turn, None
        if turn is None:
            return None
        self.tool_answer_t.append(time.monotonic())
        said = []
        for call_id, name in turn.calls.items():
            try:
                result = json.loads(turn.outputs.get(call_id, "{}"))
            except ValueError:
                result = turn.outputs.get(call_id)
            if isinstance(result, dict) and "error" in result:
                said.append(f"{name.replace('_', ' ')} failed: {result['error']}")
            else:
                said.append(f"{name.replace('_', ' ')} returned {_plain(result)}")
        text = "Done. " + ". ".join(said) + "."
        samples = await asyncio.to_thread(spoken, text)
        if samples is None or not len(samples):
            samples = beep_reply(0.6, 880.0).samples
        return Reply(samples, text)


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " and ".join(_plain(v) for v in value) or "nothing"
    return str(value)
