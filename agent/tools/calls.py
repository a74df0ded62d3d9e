"""One call's function calls: each run once, answered, and the model asked to go on.

Per call (`CallTools`): every event that may carry a function call goes to `on_event`. A call is run the
first time any form of it arrives with its name (a name may come first in `response.output_item.added`);
the other forms, and the same event on the other channel, are the same `call_id` and run nothing. The
tool runs as a task (the conversation's event loop goes on); its answer goes back as
`conversation.item.create` with a `function_call_output`. Once every call of a response is answered and
that response is done (`response.done` may come before or after its calls), one `response.create` asks
the model to speak: several calls in one response get one spoken answer. A service that never sends
`response.done` for it gets the `response.create` `RESPONSE_DONE_WAIT_S` after the last answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..voicelive import protocol
from ..voicelive.functions import FunctionCall, function_call_output, function_calls, names_in
from .registry import ToolBox, ToolOutcome

log = logging.getLogger(__name__)

#: How long to wait for the `response.done` of a response whose calls are all answered.
RESPONSE_DONE_WAIT_S = 1.5
#: A call whose name never comes is run (and answered as unknown) after this long.
NAME_WAIT_S = 1.0


@dataclass
class ToolCallRecord:
    name: str
    call_id: str
    t_event: float  # when the call arrived
    t_output: float | None = None  # when its answer was sent
    outcome: ToolOutcome | None = None

    def as_dict(self) -> dict[str, Any]:
        o = self.outcome
        return {"name": self.name, "call_id": self.call_id, "ok": bool(o and o.ok), "ms": o.ms if o else None}


@dataclass
class _Response:
    calls: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    done: bool = False
    created: bool = False  # response.create sent for it


class CallTools:
    def __init__(
        self,
        box: ToolBox,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        on_busy: Callable[[str], None] | None = None,
        on_create: Callable[[], None] | None = None,
    ) -> None:
        self.box = box
        self._send = send
        self._on_busy = on_busy
        self._on_create = on_create
        self._started: set[str] = set()
        self._names: dict[str, str] = {}
        self._waiting: dict[str, FunctionCall] = {}  # calls without a name yet
        self._responses: dict[str, _Response] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.records: list[ToolCallRecord] = []
        #: When the last `response.create` after tool answers went out (for the bench).
        self.t_response_create: list[float] = []

    @property
    def busy(self) -> bool:
        """A tool runs, or its answer waits for the model to be asked to speak."""
        return bool(self._tasks) or any(r.calls and not r.created for r in self._responses.values())

    def on_event(self, event: protocol.ServerEvent) -> None:
        self._names.update(names_in(event))
        for call in function_calls(event):
            self._take(call)
        for call_id in [c for c in self._waiting if c in self._names]:
            self._take(self._waiting.pop(call_id))
        if event.type == "response.done":
            rid = event.data.get("response", {}).get("id") if isinstance(event.data.get("response"), dict) else None
            if isinstance(rid, str):
                self._response(rid).done = True
                self._maybe_create(rid)

    def _response(self, rid: str) -> _Response:
        resp = self._responses.get(rid)
        if resp is None:
            resp = self._responses[rid] = _Response()
            if len(self._responses) > 64:  # a long call: forget the oldest answered ones
                for old in [k for k, r in self._responses.items() if r.created][:32]:
                    del self._responses[old]
        return resp

    def _take(self, call: FunctionCall) -> None:
        if call.call_id in self._started:
            return
        name = call.name or self._names.get(call.call_id)
        if name is None:
            if call.call_id not in self._waiting:
                self._waiting[call.call_id] = call
                asyncio.get_running_loop().call_later(NAME_WAIT_S, self._give_up_name, call.call_id)
            return
        self._started.add(call.call_id)
        self._waiting.pop(call.call_id, None)
        rid = call.response_id or f"no-response:{call.call_id}"
        self._response(rid).calls.add(call.call_id)
        record = ToolCallRecord(name, call.call_id, time.monotonic())
        self.records.append(record)
        del self.records[:-64]
        log.info("the model calls %s (%s)", name, call.call_id)
        if self._on_busy is not None:
            self._on_busy(name)
        task = asyncio.create_task(self._run(call, name, rid, record), name=f"tool {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _give_up_name(self, call_id: str) -> None:
        call = self._waiting.pop(call_id, None)
        if call is not None:
            self._take(FunctionCall(call.call_id, "(unnamed)", call.arguments, call.response_id))

    async def _run(self, call: FunctionCall, name: str, rid: str, record: ToolCallRecord) -> None:
        outcome = await self.box.run(name, call.arguments)
        record.outcome = outcome
        try:
            await self._send(protocol.conversation_item_create(function_call_output(call.call_id, outcome.output)))
        except Exception as exc:  # the call is ending: nobody to answer
            log.info("could not answer %s (%s): %r", name, call.call_id, exc)
            return
        record.t_output = time.monotonic()
        self._response(rid).answered.add(call.call_id)
        self._maybe_create(rid)
        if rid.startswith("no-response:"):
            return
        resp = self._responses.get(rid)
        if resp is not None and not resp.done:
            asyncio.get_running_loop().call_later(RESPONSE_DONE_WAIT_S, self._late_create, rid)

    def _late_create(self, rid: str) -> None:
        resp = self._responses.get(rid)
        if resp is not None and not resp.done:
            log.info("no response.done for %s: asking for the answer anyway", rid)
            resp.done = True
            self._maybe_create(rid)

    def _maybe_create(self, rid: str) -> None:
        resp = self._responses.get(rid)
        if resp is None or resp.created or not resp.calls or resp.answered != resp.calls:
            return
        if not (resp.done or rid.startswith("no-response:")):
            return
        resp.created = True
        self.t_response_create.append(time.monotonic())
        if self._on_create is not None:
            self._on_create()
        task = asyncio.create_task(self._send_create(), name="response.create after tools")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_create(self) -> None:
        with contextlib.suppress(Exception):
            await self._send(protocol.response_create())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
