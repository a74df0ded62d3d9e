"""The wake word listener: captured blocks into the detectors, in a thread of their own.

While the device accepts a trigger (idle, not muted, not blocked) blocks go to the wake word detector;
a detection becomes a `Trigger` whose audio starts just before the estimated end of the wake phrase, so
the call's pre-roll carries the command and not the wake word. While the assistant's reply is audible
the optional stop word detector listens instead, and a detection stops the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..audio.frames import CHUNK_S, PcmBlock, blocks_per_chunk
from ..state import Snapshot, StateOwner
from .wakeword import PHRASE_END_MARGIN_S, WakeWordDetector
from .wakeword import Detection as WakeDetection

log = logging.getLogger(__name__)

#: How long after the speaker last made a sound the wake word stays deaf: the device's own voice and
#: earcons must not wake it.
ECHO_GUARD_S = 0.3

#: A pause after the wake word is one that begins at most this long after the estimated end of the
#: phrase (the estimate's error is mostly within ±0.25 s); later pauses are the command's own.
PAUSE_AFTER_PHRASE_S = 0.2

#: Wake phrases are about a second long; with `audio.send_wake_word` the call audio starts this much
#: before the estimated end of the phrase.
WAKE_PHRASE_S = 1.5

#: Detections kept for the demo, the benchmarks and tests.
DETECTIONS_KEPT = 64

#: Capture blocks the wake word thread may fall behind by (2 s of 20 ms blocks) before it loses audio.
QUEUE_BLOCKS = 100

#: The capture thread hands blocks over in batches this long: openWakeWord scores 80 ms chunks, so the
#: thread wakes once a chunk instead of once a 20 ms block, and no later (batches and chunks both start
#: at the listener's start and after each reset, so a batch completes exactly when a chunk does). A
#: batch ends on a block whose sequence number is a multiple of the blocks in a chunk, where the
#: capture thread's idle bursts end too.
BATCH_S = CHUNK_S


@dataclass(frozen=True)
class Trigger:
    """What starts a conversation. `t_audio` is the capture time the call's audio starts from: just
    before the estimated end of the wake phrase (or its start, with `audio.send_wake_word`), or the
    moment of the button press. `t_detected` is when the trigger happened, for timing the connection."""

    source: str  # "wake:<model>" or "button"
    t_audio: float
    t_detected: float
    score: float | None = None


@dataclass(frozen=True)
class Detection:
    model: str
    score: float
    t_end: float  # capture time of the block that fired


@dataclass
class WakeListener:
    """The wake word (and the stop word) in a thread of its own, fed by a capture tap.

    Capture blocks reach it straight from the capture thread (`tap`), not through the event loop: while
    the device only listens, the loop sleeps. They come in batches of `BATCH_S`, one hand-over (and one
    wake-up of this thread) per chunk the model scores. The thread reads the state owner's current snapshot (an
    immutable object) to know whether to listen, and hands a detection to the loop, where `on_trigger`
    decides again (the snapshot may have moved on).
    """

    detector: WakeWordDetector
    states: StateOwner
    loop: asyncio.AbstractEventLoop
    on_trigger: Callable[[Trigger], bool]
    #: When the speaker last made a sound (the echo guard).
    last_audible_t: Callable[[], float | None]
    send_wake_word: bool = False
    stop_detector: WakeWordDetector | None = None
    #: The assistant's reply is audible (read in this thread: a plain flag the loop keeps up to date).
    reply_audible: Callable[[], bool] = lambda: False
    stop_reply: Callable[[str], Awaitable[bool]] | None = None
    detections: deque[Detection] = field(default_factory=lambda: deque(maxlen=DETECTIONS_KEPT))
    detections_total: int = 0
    #: Times the stop word stopped a reply.
    stop_words: int = 0
    #: Blocks dropped because the thread fell behind (the oldest go first).
    dropped: int = 0
    #: How far the thread may fall behind before it loses audio (the oldest first), in 20 ms blocks.
    queue_blocks: int = QUEUE_BLOCKS
    _queue: queue.Queue[list[PcmBlock] | None] = field(init=False)
    _batch: list[PcmBlock] = field(default_factory=list)  # the capture thread's
    _batch_s: float = 0.0
    _thread: threading.Thread | None = None
    _reset: threading.Event = field(default_factory=threading.Event)
    _tasks: set[asyncio.Task[bool]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._queue = queue.Queue(maxsize=max(1, int(self.queue_blocks * 0.02 / BATCH_S)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wake-word", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._put(None)
        await asyncio.to_thread(thread.join, 2.0)

    def reset(self) -> None:
        """Forget the audio so far (after a conversation): done by the thread before its next block."""
        self._reset.set()

    def tap(self, block: PcmBlock) -> None:
        """The capture thread's hand-over: never blocks; a full queue loses its oldest batch. While no
        detector may hear (in a call, muted, blocked) nothing is handed over and this thread sleeps: it
        would drop each block (`_listen`), but only after a wake-up 12.5 times a second."""
        if not self._may_hear():
            self._batch, self._batch_s = [], 0.0  # the next batch starts on a chunk's start again
            return
        n = blocks_per_chunk(block.duration_s)
        if n is not None and not self._batch and (block.seq - 1) % n:
            return  # started mid-chunk (not with the capture): the first batch starts on a chunk's start
        self._batch.append(block)
        self._batch_s += block.duration_s
        if (block.seq % n == 0) if n is not None else (self._batch_s >= BATCH_S - 1e-6):
            batch, self._batch, self._batch_s = self._batch, [], 0.0
            self._put(batch)

    def _may_hear(self) -> bool:
        """Whether a block captured now may reach a detector: the state accepts a wake word, or the
        stop word may stop a reply in this call (`_listen` decides again for each block)."""
        snap = self.states.snapshot
        return snap.accepts_trigger or (self._stop_word_listens(snap) and not snap.muted)

    def _stop_word_listens(self, snap: Snapshot) -> bool:
        """The stop word, not the wake word, is what this call (or a ringing timer) listens for (if one is
        configured)."""
        return self.stop_detector is not None and self.stop_reply is not None and (snap.in_call or snap.ringing)

    def _put(self, item: list[PcmBlock] | None) -> None:
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    lost = self._queue.get_nowait()
                    self.dropped += len(lost) if lost else 0

    def _run(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self._reset.is_set():  # at a batch's start only: the detector's chunks stay the batches
                self._reset.clear()
                try:
                    self.detector.reset()
                except Exception:
                    log.exception("wake word reset failed")
            for block in batch:
                try:
                    self._listen(block)
                except Exception:  # a model's bad day must not silence the device for good
                    log.exception("wake word processing failed for one block")

    def _listen(self, block: PcmBlock) -> None:
        if self._reset.is_set():
            return  # a reset is pending: the detector starts again at the next batch, never fed stale
        snap = self.states.snapshot
        if self._stop_word_listens(snap):
            assert self.stop_detector is not None
            if not snap.muted and (self.reply_audible() or snap.ringing) and self.stop_detector.process(block):
                log.info("stop word: stopping the reply")
                self.stop_words += 1
                self.loop.call_soon_threadsafe(self._stop_word)
            return
        if not snap.accepts_trigger:
            return
        # The device's own sounds (an earcon, the end of a reply) must not wake it: while they play
        # the detector applies wake.suppress_while_speaking / wake.speaking_threshold.
        audible = self.last_audible_t()
        self.detector.assistant_speaking = audible is not None and block.t_end - audible < ECHO_GUARD_S
        for det in self.detector.process(block):
            self.loop.call_soon_threadsafe(self._detected, det)

    def _stop_word(self) -> None:
        if self.stop_reply is not None:
            task = self.loop.create_task(self.stop_reply("stop word"), name="stop word")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _detected(self, det: WakeDetection) -> None:
        """On the event loop."""
        log.info("wake word %s (score %.2f)", det.model, det.score)
        self.detections.append(Detection(det.model, det.score, det.t_end))
        self.detections_total += 1
        # the call's audio starts just before the estimated end of the wake phrase: at worst the
        # service hears the wake word's last syllable, never a clipped command
        start = det.t_phrase_end - PHRASE_END_MARGIN_S
        if self.send_wake_word:
            start -= WAKE_PHRASE_S
        self.on_trigger(Trigger(f"wake:{det.model}", start, det.t_end, det.score))

    def pause_before(self, trigger: Trigger) -> float | None:
        """The capture time before which a pause counts as the one after the wake phrase (None: the
        trigger was not a wake word, or the wake word is sent along)."""
        if trigger.score is None or self.send_wake_word:
            return None
        return trigger.t_audio + PHRASE_END_MARGIN_S + PAUSE_AFTER_PHRASE_S
