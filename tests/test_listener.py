"""The listener's hand-over from the capture thread: one batch per chunk the model scores."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from agent.audio.frames import PcmBlock
from agent.state import Input, StateOwner
from agent.wake.listener import BATCH_S, WakeListener


class Recorder:
    """Stands in for the detector: records which blocks reached the wake word thread, and resets."""

    def __init__(self, hold_at: int | None = None) -> None:
        self.blocks: list[int | str] = []
        self.arrived = threading.Event()
        self.assistant_speaking = False
        self.hold_at = hold_at
        self.holding = threading.Event()
        self.go_on = threading.Event()

    def process(self, block: PcmBlock) -> list[object]:
        self.blocks.append(block.seq)
        if block.seq == self.hold_at:
            self.holding.set()
            self.go_on.wait(5)
        self.arrived.set()
        return []

    def reset(self) -> None:
        self.blocks.append("reset")


def started_listener(rec: Recorder) -> WakeListener:
    """A running listener whose detector is `rec` (on the running event loop)."""
    listener = WakeListener(rec, StateOwner(), asyncio.get_running_loop(),  # type: ignore[arg-type]
                            on_trigger=lambda _t: True, last_audible_t=lambda: None)  # fmt: skip
    listener.start()
    return listener


async def wait_fed(rec: Recorder, n: int) -> None:
    """Until the detector has seen `n` entries (or 2 s went by: the assertion after says what came)."""
    for _ in range(100):
        if len(rec.blocks) >= n:
            return
        await asyncio.sleep(0.02)


def block(seq: int, rate: int = 16000, ms: int = 20) -> PcmBlock:
    return PcmBlock(np.zeros(rate * ms // 1000, np.int16), rate, float(seq), seq)


async def test_blocks_reach_the_thread_a_chunk_at_a_time_and_none_is_lost() -> None:
    assert BATCH_S == 0.08  # openWakeWord's chunk
    rec = Recorder()
    listener = started_listener(rec)
    try:
        for seq in range(1, 4):
            listener.tap(block(seq))
        await asyncio.sleep(0.1)
        assert rec.blocks == []  # three blocks are not a chunk yet: the thread was not woken
        listener.tap(block(4))
        assert await asyncio.to_thread(rec.arrived.wait, 2)
        await asyncio.sleep(0.05)
        assert rec.blocks == [1, 2, 3, 4]
        rec.arrived.clear()
        for seq in range(5, 7):  # 48 kHz blocks of 40 ms: two make a chunk
            listener.tap(block(seq, 48000, 40))
        assert await asyncio.to_thread(rec.arrived.wait, 2)
        await asyncio.sleep(0.05)
        assert rec.blocks == [1, 2, 3, 4, 5, 6]
    finally:
        await listener.stop()
    assert listener.dropped == 0


async def test_a_reset_asked_mid_batch_applies_at_the_next_batch() -> None:
    """The detector scores 80 ms chunks counted from its reset: a reset in the middle of a batch would
    leave every later chunk ending mid-batch, each detection up to 60 ms late."""
    rec = Recorder(hold_at=2)
    listener = started_listener(rec)
    try:
        for seq in range(1, 5):
            listener.tap(block(seq))
        assert await asyncio.to_thread(rec.holding.wait, 2)  # the thread is inside the first batch
        listener.reset()
        rec.go_on.set()
        for seq in range(5, 9):
            listener.tap(block(seq))
        await wait_fed(rec, 7)
    finally:
        await listener.stop()
    # the rest of the batch is not fed to a detector about to be reset (it would score stale audio);
    # the reset comes at the next batch's start, so its chunks still end where a batch does
    assert rec.blocks == [1, 2, "reset", 5, 6, 7, 8]


async def test_batches_end_where_the_captures_idle_bursts_do() -> None:
    """Batches end on a block whose sequence number is a multiple of a chunk's blocks (where the
    capture thread's idle bursts end); a listener started mid-chunk skips to the next chunk's start, so
    the detector's chunks stay the batches."""
    rec = Recorder()
    listener = started_listener(rec)
    try:
        for seq in range(3, 11):
            listener.tap(block(seq))
        await wait_fed(rec, 4)
        await asyncio.sleep(0.05)
    finally:
        await listener.stop()
    assert rec.blocks == [5, 6, 7, 8]  # 3 and 4 end a chunk begun before the start; 9, 10 are half one


async def test_nothing_is_handed_over_while_no_detector_may_hear() -> None:
    """In a call (or muted) the wake word cannot fire: the tap hands nothing over, so the thread sleeps
    instead of waking once a chunk to drop it; a batch cut short by the call is dropped, and listening
    starts again on the next chunk's start."""
    rec = Recorder()
    listener = started_listener(rec)
    states = listener.states
    handed: list[object] = []
    put = listener._put
    listener._put = lambda item: (handed.append(item), put(item))  # type: ignore[method-assign]
    try:
        listener.tap(block(1))
        listener.tap(block(2))
        assert states.apply(Input.WAKE) and states.apply(Input.DIAL) and states.snapshot.in_call
        for seq in range(3, 11):
            listener.tap(block(seq))
        assert states.apply(Input.HUNG_UP) and states.snapshot.accepts_trigger
        for seq in range(11, 17):
            listener.tap(block(seq))
        await wait_fed(rec, 4)
        assert states.apply(Input.MUTE) and not states.snapshot.accepts_trigger
        for seq in range(17, 21):
            listener.tap(block(seq))
        await asyncio.sleep(0.05)
    finally:
        await listener.stop()
    assert rec.blocks == [13, 14, 15, 16]
    assert len(handed) == 2 and handed[-1] is None  # one batch, then stop()'s end mark


async def test_the_stop_word_silences_a_ringing_timer_out_of_a_call() -> None:
    """A timer rings while the device is idle: the stop word listens (the wake word waits), and firing
    asks to stop, which silences the timer (agent.Agent._stop_reply)."""

    class Fires(Recorder):
        def process(self, block: PcmBlock) -> list[object]:
            super().process(block)
            return [object()]

    stops: list[str] = []

    async def stop_reply(why: str) -> bool:
        stops.append(why)
        return True

    wake, stop = Recorder(), Fires()
    states = StateOwner()
    listener = WakeListener(wake, states, asyncio.get_running_loop(), on_trigger=lambda _t: True,  # type: ignore[arg-type]
                            last_audible_t=lambda: None, stop_detector=stop, stop_reply=stop_reply)  # type: ignore[arg-type]  # fmt: skip
    listener.start()
    try:
        assert states.apply(Input.RING)
        for seq in range(1, 5):
            listener.tap(block(seq))
        for _ in range(100):
            if stops:
                break
            await asyncio.sleep(0.02)
    finally:
        await listener.stop()
    assert stops and set(stops) == {"stop word"} and listener.stop_words == len(stops)
    assert wake.blocks == []  # while it rang only the stop word listened
