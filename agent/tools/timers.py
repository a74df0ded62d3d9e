"""Kitchen timers: set, cancel, list; they outlive the call and a restart, and ring until silenced.

Each timer is kept in `timers.json` under the state directory with its due time on the wall clock (the
monotonic clock starts again at boot), so a restart finds it; one that fell due while the device was
down rings as soon as the agent is back. Only the next due timer has a wake-up scheduled on the event
loop (`loop.call_at`), so pending timers cost nothing until then: no polling, not even once a second.

When one falls due, `on_ring(names)` is told (the agent sets the device's `ringing` flag, which the LEDs
show, and plays the timer earcon every few seconds); `silence()` (a press of the button, the stop word,
the model's `cancel_timer`) ends it, and so does `ring_s` without anyone there.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import store
from .registry import Tool, ToolError

log = logging.getLogger(__name__)

MAX_TIMERS = 20
MAX_SECONDS = 24 * 3600


@dataclass
class Timer:
    id: int
    name: str
    seconds: float
    due: float  # time.time()

    def left_s(self, now: float) -> float:
        return max(0.0, self.due - now)


def spoken_duration(seconds: float) -> str:
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    parts = [f"{h} hour{'s' * (h != 1)}"] * bool(h) + [f"{m} minute{'s' * (m != 1)}"] * bool(m)
    parts += [f"{s} second{'s' * (s != 1)}"] * bool(s or not parts)
    return " ".join(parts)


class Timers:
    def __init__(
        self,
        directory: Path,
        on_ring: Callable[[list[str]], None],
        on_silenced: Callable[[], None],
        ring_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = directory / "timers.json"
        self.on_ring = on_ring
        self.on_silenced = on_silenced
        self.ring_s = ring_s
        self._clock = clock
        self._timers: dict[int, Timer] = {}
        self._ids = itertools.count(1)
        self._handle: asyncio.TimerHandle | None = None
        self._ring_end: asyncio.TimerHandle | None = None
        self.ringing: list[str] = []
        self.rang: list[tuple[str, float]] = []  # (name, when it rang, time.time()), for the demo and tests

    # -- life cycle (event loop) --------------------------------------------------------------------

    def start(self) -> None:
        """Load the timers kept across a restart and schedule the next."""
        data = store.load(self.path, [])
        for item in data if isinstance(data, list) else []:
            try:
                timer = Timer(int(item["id"]), str(item["name"]), float(item["seconds"]), float(item["due"]))
            except (KeyError, TypeError, ValueError):
                continue
            self._timers[timer.id] = timer
        self._ids = itertools.count(max(self._timers, default=0) + 1)
        if self._timers:
            names = ", ".join(t.name for t in self._timers.values())
            log.info("%d timer(s) kept from before: %s", len(self._timers), names)
        self._schedule()

    def stop(self) -> None:
        for handle in (self._handle, self._ring_end):
            if handle is not None:
                handle.cancel()
        self._handle = self._ring_end = None

    # -- what the tools do ----------------------------------------------------------------------------

    def set(self, seconds: float, name: str | None = None) -> Timer:
        if len(self._timers) >= MAX_TIMERS:
            raise ToolError(f"there are {MAX_TIMERS} timers already; cancel one first")
        timer_id = next(self._ids)
        timer = Timer(timer_id, name or f"timer {timer_id}", float(seconds), self._clock() + float(seconds))
        if any(t.name == timer.name for t in self._timers.values()):
            timer.name = f"{timer.name} {timer_id}"
        self._timers[timer.id] = timer
        self._save()
        self._schedule()
        log.info("timer %r set for %s", timer.name, spoken_duration(seconds))
        return timer

    def cancel(self, name: str | None) -> list[Timer]:
        """The timers named `name` (all of them for None or "all"); ringing ones are silenced too."""
        if self.ringing and (name in (None, "all") or name in self.ringing):
            self.silence()
        gone = [t for t in self._timers.values() if name in (None, "all") or t.name == name]
        if not gone and name not in (None, "all"):
            names = ", ".join(t.name for t in self._timers.values()) or "none"
            raise ToolError(f"no timer named {name!r}; the timers are: {names}")
        for t in gone:
            del self._timers[t.id]
        self._save()
        self._schedule()
        return gone

    def pending(self) -> list[Timer]:
        return sorted(self._timers.values(), key=lambda t: t.due)

    def silence(self) -> bool:
        """Stop the ringing; True if something rang."""
        if not self.ringing:
            return False
        log.info("timer silenced: %s", ", ".join(self.ringing))
        self.ringing = []
        if self._ring_end is not None:
            self._ring_end.cancel()
            self._ring_end = None
        self.on_silenced()
        return True

    # -- due timers ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        nxt = min(self._timers.values(), key=lambda t: t.due, default=None)
        if nxt is None:
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_at(loop.time() + nxt.left_s(self._clock()), self._due)

    def _due(self) -> None:
        self._handle = None
        now = self._clock()
        due = [t for t in self._timers.values() if t.due <= now + 0.01]
        for t in due:
            del self._timers[t.id]
            self.rang.append((t.name, now))
            self.rang[:] = self.rang[-32:]
        if due:
            self._save()
            self.ringing = sorted({*self.ringing, *(t.name for t in due)})
            log.info("timer due: %s", ", ".join(t.name for t in due))
            loop = asyncio.get_running_loop()
            if self._ring_end is not None:
                self._ring_end.cancel()
            self._ring_end = loop.call_later(self.ring_s, self.silence)
            self.on_ring(list(self.ringing))
        self._schedule()

    def _save(self) -> None:
        try:
            store.save(self.path, [asdict(t) for t in self._timers.values()])
        except OSError as exc:
            log.warning("cannot keep the timers in %s (%s): they will not outlive a restart", self.path, exc)

    # -- the tools ----------------------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        async def set_timer(args: dict[str, Any]) -> dict[str, Any]:
            seconds = 3600 * float(args.get("hours", 0)) + 60 * float(args.get("minutes", 0))
            seconds += float(args.get("seconds", 0))
            if not 1 <= seconds <= MAX_SECONDS:
                raise ToolError("a timer runs from 1 second to 24 hours")
            timer = self.set(seconds, args.get("name"))
            return {"set": timer.name, "duration": spoken_duration(seconds), "timers_running": len(self._timers)}

        async def cancel_timer(args: dict[str, Any]) -> dict[str, Any]:
            gone = self.cancel(args.get("name"))
            return {"cancelled": [t.name for t in gone], "timers_running": len(self._timers)}

        async def list_timers(args: dict[str, Any]) -> dict[str, Any]:
            now = self._clock()
            return {
                "timers": [{"name": t.name, "left": spoken_duration(t.left_s(now))} for t in self.pending()],
                "ringing": self.ringing,
            }

        duration = {
            "hours": {"type": "number", "minimum": 0, "maximum": 24},
            "minutes": {"type": "number", "minimum": 0, "maximum": 1440},
            "seconds": {"type": "number", "minimum": 0, "maximum": MAX_SECONDS},
            "name": {"type": "string", "maxLength": 40, "description": "what the timer is for, e.g. pasta"},
        }
        obj = {"type": "object", "additionalProperties": False}
        return [
            Tool(
                "set_timer",
                "Start a countdown timer on the device; it rings when it is done. Give the duration in hours,"
                " minutes and/or seconds.",
                {**obj, "properties": duration},
                set_timer,
            ),
            Tool(
                "cancel_timer",
                "Cancel a timer by its name (or all timers: name omitted or 'all'); also silences a ringing timer.",
                {**obj, "properties": {"name": {"type": "string"}}},
                cancel_timer,
            ),
            Tool(
                "list_timers",
                "List the running timers and the time each has left.",
                {**obj, "properties": {}},
                list_timers,
            ),
        ]
