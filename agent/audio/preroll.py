"""Pre-roll: no word said after the wake word (or the button press) is lost while the call connects.

`PrerollBuffer` always holds the last few seconds of capture. When a conversation starts, `CallAudio`
gives the mic track the buffered blocks from the trigger time on, then the live blocks, with neither a
gap nor a repeat between the two: the capture thread fills the ring (a capture tap), and the snapshot
and the live subscription are taken under the capture's `tap_lock`, the subscription skipping what the
snapshot holds.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Protocol

import numpy as np

from .frames import PcmBlock

log = logging.getLogger(__name__)


class LiveBlocks(Protocol):
    async def get(self) -> PcmBlock: ...

    def get_nowait(self) -> PcmBlock | None: ...


class PrerollBuffer:
    """A ring of the most recent `seconds` of blocks, filled from the capture thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._blocks: deque[PcmBlock] = deque()
        self._lock = threading.Lock()
        #: The sequence number of the last block added (0: none yet).
        self.last_seq = 0

    def add(self, block: PcmBlock) -> None:
        with self._lock:
            self._blocks.append(block)
            self.last_seq = block.seq
            while self._blocks and block.t_end - self._blocks[0].t_end > self.seconds:
                self._blocks.popleft()

    def since(self, t: float) -> list[PcmBlock]:
        """Blocks whose audio ends after `t` (the block holding `t` is included whole)."""
        with self._lock:
            return [b for b in self._blocks if b.t_end > t]

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()


#: The shortest quiet that counts as a pause after the wake word.
MIN_QUIET_S = 0.08


def quiet_start(
    blocks: list[PcmBlock], t_from: float, begin_before: float, min_quiet_s: float = MIN_QUIET_S, rel_db: float = -20.0
) -> float | None:
    """Where a quiet stretch of at least `min_quiet_s` begins, after `t_from` and before `begin_before`,
    or None. Quiet is `rel_db` below the loudest block after `t_from`."""
    span = [b for b in blocks if b.t_end > t_from]
    if not span:
        return None
    levels = [float(np.sqrt(np.mean(b.samples.astype(np.float64) ** 2))) for b in span]
    floor = max(levels) * 10 ** (rel_db / 20)
    run_start: float | None = None
    for block, level in zip(span, levels, strict=True):
        if level < floor:
            if run_start is None:
                if block.t_start >= begin_before:
                    return None
                run_start = block.t_start
            if block.t_end - run_start >= min_quiet_s:
                return run_start
        else:
            run_start = None
    return None


class CallAudio:
    """The audio source of one call: the pre-roll from the trigger on, then live capture.

    With `pause_before` (a wake word trigger), the start is settled when the call first asks for audio,
    which is after it connected, so some audio after the wake word is already there. The audio starts a
    little before the estimated end of the wake phrase, so a command said with no pause is never
    clipped; when the user did pause, and the pause began before `pause_before` (just after the
    estimated phrase end, so a pause between the command's own words never counts), the call starts at
    that pause instead of with the wake word's last syllable, which the service would otherwise take
    for an utterance of its own.
    """

    def __init__(self, backlog: list[PcmBlock], live: LiveBlocks, pause_before: float | None = None) -> None:
        self._backlog = deque(backlog)
        self._live = live
        self._pause_before = pause_before
        self.preroll_s = sum(b.duration_s for b in backlog)
        self.skipped_s = 0.0

    def _ready(self) -> bool:
        """Settle the start once the audio up to the end of the pause window has been captured (a few
        hundred ms after the wake word at most: the call takes that long to connect anyway)."""
        if self._pause_before is None:
            return True
        while (block := self._live.get_nowait()) is not None:
            self._backlog.append(block)
        if not self._backlog or self._backlog[-1].t_end < self._pause_before + MIN_QUIET_S:
            return False
        self._settle()
        return True

    def _settle(self) -> None:
        """Look for the pause; drop what comes before it."""
        before, self._pause_before = self._pause_before, None
        assert before is not None
        pause = quiet_start(list(self._backlog), self._backlog[0].t_start, before)
        log.debug(
            "call audio from %.3f to %.3f (pause before %.3f): %s",
            self._backlog[0].t_start,
            self._backlog[-1].t_end,
            before,
            f"pause at {pause:.3f}" if pause is not None else "no pause",
        )
        if pause is None:
            return
        while self._backlog and self._backlog[0].t_end <= pause:
            self.skipped_s += self._backlog.popleft().duration_s

    async def get(self) -> PcmBlock:
        while not self._ready():
            self._backlog.append(await self._live.get())
        if self._backlog:
            return self._backlog.popleft()
        return await self._live.get()

    def get_nowait(self) -> PcmBlock | None:
        if not self._ready():
            return None
        if self._backlog:
            return self._backlog.popleft()
        return self._live.get_nowait()
