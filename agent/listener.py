"""The wake word listener: every captured block into the pre-roll ring, and into the detectors.

While the device accepts a trigger (idle, not muted, not blocked) blocks go to the wake word detector;
a detection becomes a `Trigger` whose audio starts just before the estimated end of the wake phrase, so
the call's pre-roll carries the command and not the wake word. While the assistant's reply is audible
the optional stop word detector listens instead, and a detection stops the reply.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .audio.capture import AlsaCapture
from .audio.preroll import PrerollBuffer
from .state import StateOwner
from .wakeword import PHRASE_END_MARGIN_S, WakeWordDetector

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
    capture: AlsaCapture
    preroll: PrerollBuffer
    detector: WakeWordDetector
    states: StateOwner
    on_trigger: Callable[[Trigger], bool]
    #: When the speaker last made a sound (the echo guard).
    last_audible_t: Callable[[], float | None]
    send_wake_word: bool = False
    stop_detector: WakeWordDetector | None = None
    reply_audible: Callable[[], bool] = lambda: False
    stop_reply: Callable[[str], Awaitable[bool]] | None = None
    detections: deque[Detection] = field(default_factory=lambda: deque(maxlen=DETECTIONS_KEPT))
    detections_total: int = 0

    async def run(self) -> None:
        sub = self.capture.hub.subscribe("listen", max_blocks=100)
        detector = self.detector
        async for block in sub:
            self.preroll.add(block)
            snap = self.states.snapshot
            if self.stop_detector is not None and self.stop_reply is not None and snap.in_call:
                if not snap.muted and self.reply_audible() and await self.stop_detector.process_async(block):
                    log.info("stop word: stopping the reply")
                    await self.stop_reply("stop word")
                continue
            if not snap.accepts_trigger:
                continue
            # The device's own sounds (an earcon, the end of a reply) must not wake it: while they play
            # the detector applies wake.suppress_while_speaking / wake.speaking_threshold.
            audible = self.last_audible_t()
            detector.assistant_speaking = audible is not None and block.t_end - audible < ECHO_GUARD_S
            for det in await detector.process_async(block):
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
