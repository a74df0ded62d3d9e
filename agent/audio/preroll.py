"""Pre-roll: no word said after the wake word (or the button press) is lost while the call connects.

`PrerollBuffer` always holds the last few seconds of capture. When a conversation starts, `CallAudio`
gives the mic track the buffered blocks from the trigger time on, then the live blocks, with neither a
gap nor a repeat between the two: the snapshot and the live subscription are taken in the same event
loop step, and capture blocks only arrive through that loop.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from .frames import PcmBlock


class LiveBlocks(Protocol):
    async def get(self) -> PcmBlock: ...

    def get_nowait(self) -> PcmBlock | None: ...


class PrerollBuffer:
    """A ring of the most recent `seconds` of blocks."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._blocks: deque[PcmBlock] = deque()

    def add(self, block: PcmBlock) -> None:
        self._blocks.append(block)
        while self._blocks and block.t_end - self._blocks[0].t_end > self.seconds:
            self._blocks.popleft()

    def since(self, t: float) -> list[PcmBlock]:
        """Blocks whose audio ends after `t` (the block holding `t` is included whole)."""
        return [b for b in self._blocks if b.t_end > t]

    def clear(self) -> None:
        self._blocks.clear()


class CallAudio:
    """The audio source of one call: the pre-roll from the trigger on, then live capture."""

    def __init__(self, backlog: list[PcmBlock], live: LiveBlocks) -> None:
        self._backlog = deque(backlog)
        self._live = live
        self.preroll_s = sum(b.duration_s for b in backlog)

    async def get(self) -> PcmBlock:
        if self._backlog:
            return self._backlog.popleft()
        return await self._live.get()

    def get_nowait(self) -> PcmBlock | None:
        if self._backlog:
            return self._backlog.popleft()
        return self._live.get_nowait()
