"""Pre-roll: the ring keeps the last seconds, and a call's audio starts at the pause after the wake
word when there is one, or just before the phrase's estimated end when there is none."""

from __future__ import annotations

import asyncio

import numpy as np

from agent.audio.frames import PcmBlock
from agent.audio.preroll import CallAudio, PrerollBuffer, quiet_start

RATE = 16000
BLOCK = 320


def blocks(levels: list[int], t0: float = 0.0) -> list[PcmBlock]:
    """20 ms blocks of a tone at the given peak levels (0 = silence)."""
    out = []
    t = np.arange(BLOCK) / RATE
    for i, level in enumerate(levels):
        samples = (level * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        out.append(PcmBlock(samples, RATE, t0 + (i + 1) * BLOCK / RATE, i))
    return out


class Live:
    def __init__(self, items: list[PcmBlock]) -> None:
        self.items = list(items)

    def get_nowait(self) -> PcmBlock | None:
        return self.items.pop(0) if self.items else None

    async def get(self) -> PcmBlock:
        while not self.items:
            await asyncio.sleep(0.001)
        return self.items.pop(0)


def test_ring_keeps_the_last_seconds() -> None:
    ring = PrerollBuffer(0.1)
    for b in blocks([100] * 20):
        ring.add(b)
    kept = ring.since(0.0)
    assert 5 <= len(kept) <= 6 and kept[-1].t_end == 0.4


def test_quiet_start_finds_the_pause_and_ignores_late_ones() -> None:
    speech = [8000] * 10 + [0] * 6 + [8000] * 10  # a pause from 0.20 s to 0.32 s
    bs = blocks(speech)
    assert quiet_start(bs, 0.0, begin_before=0.25) == 0.2
    assert quiet_start(bs, 0.0, begin_before=0.15) is None  # began too late: the command's own pause
    assert quiet_start(blocks([8000] * 10 + [0] * 3 + [8000] * 10), 0.0, 0.3) is None  # 60 ms: not a pause


async def test_call_audio_skips_the_wake_word_tail_before_a_pause() -> None:
    wake_tail, pause, command = [8000] * 10, [0] * 10, [6000] * 20
    everything = blocks(wake_tail + pause + command)
    backlog, live = everything[:12], Live(everything[12:])
    audio = CallAudio(backlog, live, pause_before=0.3)
    first = await audio.get()
    assert first.t_start == 0.2  # the pause's first block: the tail is gone
    assert round(audio.skipped_s, 2) == 0.2


async def test_call_audio_keeps_everything_when_there_is_no_pause() -> None:
    run_on = blocks([8000] * 10 + [6000] * 30)
    audio = CallAudio(run_on[:12], Live(run_on[12:]), pause_before=0.3)
    got = [await audio.get() for _ in range(len(run_on))]
    assert [b.seq for b in got] == list(range(len(run_on)))  # nothing skipped, nothing repeated


async def test_call_audio_waits_for_the_pause_window_before_deciding() -> None:
    everything = blocks([8000] * 10 + [0] * 10 + [6000] * 5)
    live = Live([])
    audio = CallAudio(everything[:11], live, pause_before=0.3)
    assert audio.get_nowait() is None  # the window is not captured yet: undecided, nothing given out
    live.items.extend(everything[11:])
    first = audio.get_nowait()
    assert first is not None and first.t_start == 0.2
