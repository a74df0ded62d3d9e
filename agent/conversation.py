"""One conversation: from a trigger (wake word or button) to hang-up, driven by the service's events.

The state follows the events (`speech_started` / `speech_stopped`, `response.created`,
`output_audio_buffer.started` / `stopped`, `response.done`) and local playback. After a reply, a
follow-up window lets the user speak again without the wake word; when it passes, or the call reaches
its maximum length, the agent hangs up. Every way out of `run()` ends the call and returns a result, so
the device always goes back to listening for the wake word.

Barge-in: when the user speaks over a reply (`speech_started`, the button, or the stop word), the
playout buffer is flushed at once, and the reply's tail that is still on its way (up to a jitter
buffer's worth of RTP) is dropped until the service ends that response, so the assistant really stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import av

from .audio.frames import is_audible
from .audio.mictrack import BlockSource, MicTrack
from .config import ConversationConfig
from .leds import State
from .voicelive import protocol
from .voicelive.auth import Credentials
from .voicelive.call import CallOptions, VoiceLiveCall
from .voicelive.control import Target
from .voicelive.errors import TransientError, VoiceLiveError

log = logging.getLogger(__name__)

#: The speaker counts as still talking this long after its last audible write (its lead into ALSA).
AUDIBLE_TAIL_S = 0.25

#: After the user stops speaking, how long to wait for the service to start a response before hanging up.
RESPONSE_WAIT_S = 15.0


class Speaker(Protocol):
    """What a conversation needs of playback."""

    def write_frame(self, frame: av.AudioFrame) -> None: ...

    def flush(self) -> float:
        """Drop the queued reply audio at once (barge-in); returns the milliseconds dropped."""
        ...

    @property
    def buffered_s(self) -> float: ...

    def mark(self) -> int:
        """The position of the next sample queued (for `first_write_after`)."""
        ...

    @property
    def last_audible_t(self) -> float | None:
        """When the speaker last wrote a sound (the service sends silence between replies, so queued
        audio alone does not mean the assistant is talking)."""
        ...


@dataclass
class ConversationResult:
    """How one conversation went, for logs, the demo and the benchmarks."""

    trigger: str
    t_trigger: float
    ok: bool = False
    end_reason: str = ""
    error_kind: str | None = None
    error: str | None = None
    rtc_call_id: str | None = None
    connect_ms: float | None = None
    preroll_s: float = 0.0
    responses: list[str] = field(default_factory=list)  # response.done statuses
    transcripts: list[str] = field(default_factory=list)
    barge_ins: int = 0
    t_barge_ins: list[float] = field(default_factory=list)  # when the agent flushed the reply
    t_speech_started: list[float] = field(default_factory=list)  # when the agent got speech_started
    t_speech_stopped: list[float] = field(default_factory=list)  # when the agent got speech_stopped
    #: For each reply, the playout position of its first audible sample: with the speaker's
    #: `first_write_after` it gives when the assistant's voice reached ALSA.
    reply_marks: list[int] = field(default_factory=list)


class Conversation:
    def __init__(
        self,
        target: Target,
        credentials: Credentials,
        options: CallOptions,
        cfg: ConversationConfig,
        speaker: Speaker,
        set_state: Callable[[State], None],
        on_uplink_frame: Callable[[float | None, int], None] | None = None,
        muted: Callable[[], bool] | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.options = options
        self.cfg = cfg
        self.speaker = speaker
        self.set_state = set_state
        self.on_uplink_frame = on_uplink_frame
        self.muted = muted
        self.call: VoiceLiveCall | None = None
        self.state = State.CONNECTING
        turn = options.session.get("turn_detection")
        #: The service interrupts its reply when the user speaks (turn_detection.interrupt_response,
        #: on by default): then the speaker goes quiet at once too; if not, only the button or the
        #: stop word stop a reply.
        self.interrupt_on_speech = not isinstance(turn, dict) or turn.get("interrupt_response", True) is not False
        self._result: ConversationResult | None = None
        self._awaiting_reply_audio = False
        self._dropping_reply = False
        self._hangup_reason: str | None = None

    def _set(self, state: State) -> None:
        self.state = state
        self.set_state(state)

    # ------------------------------------------------------------------------------------------
    # Commands (from the button or the stop word)

    async def stop_reply(self, why: str = "stop") -> bool:
        """Stop the assistant mid-reply: `response.cancel`, flush, drop the rest of the reply."""
        if self.call is None or not self.assistant_audible():
            return False
        self._barge_in(why)
        with contextlib.suppress(TransientError):  # the call is ending anyway
            await self.call.send(protocol.response_cancel())
        self._set(State.LISTENING)
        return True

    async def hang_up(self, why: str = "hang-up") -> None:
        """End the conversation now; `run()` returns with `why` as its end reason."""
        self._hangup_reason = why
        if self.call is not None:
            await self.call.hangup(why)

    def assistant_audible(self) -> bool:
        """The assistant is talking: the service says its audio is playing, or the speaker made a
        sound a moment ago (the reply's local tail)."""
        if self.state is State.SPEAKING:
            return True
        last = self.speaker.last_audible_t
        return last is not None and time.monotonic() - last < AUDIBLE_TAIL_S

    def _barge_in(self, why: str) -> None:
        dropped_ms = self.speaker.flush()
        self._dropping_reply = True
        if self._result is not None:
            self._result.barge_ins += 1
            self._result.t_barge_ins.append(time.monotonic())
        log.info("barge-in (%s): dropped %.0f ms of reply audio", why, dropped_ms)

    # ------------------------------------------------------------------------------------------

    def _on_remote_frame(self, frame: av.AudioFrame) -> None:
        """Queue the service's audio; note where each reply's first audible sample lands. The service
        sends RTP all the time (silence between replies), so audibility, not arrival, marks a reply."""
        if self._dropping_reply:
            if is_audible(frame.to_ndarray()):
                return  # the cancelled reply's tail, still arriving: never play it
            self._dropping_reply = False  # silence again: the tail has passed
        result = self._result
        if self._awaiting_reply_audio and result is not None and is_audible(frame.to_ndarray()):
            result.reply_marks.append(self.speaker.mark())
            self._awaiting_reply_audio = False
        self.speaker.write_frame(frame)

    async def run(
        self, trigger: str, t_trigger: float, audio: BlockSource, preroll_s: float = 0.0
    ) -> ConversationResult:
        result = self._result = ConversationResult(trigger=trigger, t_trigger=t_trigger, preroll_s=preroll_s)
        self._set(State.CONNECTING)
        mic = MicTrack(audio, on_frame=self.on_uplink_frame, muted=self.muted)
        call = self.call = VoiceLiveCall(self.target, self.credentials, mic, self.options, self._on_remote_frame)
        try:
            await call.start()
        except VoiceLiveError as exc:
            mic.stop()
            result.end_reason, result.error_kind, result.error = "call failed", exc.kind, str(exc)
            log.warning("call failed (%s): %s", exc.kind, exc)
            return result
        result.rtc_call_id = call.rtc_call_id
        result.connect_ms = round((time.monotonic() - t_trigger) * 1000, 1)
        self._set(State.LISTENING)
        try:
            await self._converse(call, result)
        finally:
            mic.stop()
            await call.hangup(result.end_reason or "hang-up")
            self.speaker.flush()  # nothing of this call plays after it
        if call.end_error is not None and not result.ok:
            result.error_kind, result.error = call.end_error.kind, str(call.end_error)
        return result

    async def _converse(self, call: VoiceLiveCall, result: ConversationResult) -> None:
        cfg = self.cfg
        now = time.monotonic()
        max_end = now + cfg.max_call_s
        # Before the first reply the user may still be talking (pre-roll); the window starts on connect.
        followup_end: float | None = now + max(cfg.followup_s, 0.1)
        server_audio_done = True
        response_open = False
        events = call.events().__aiter__()
        while True:
            deadline = min(max_end, followup_end) if followup_end is not None else max_end
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives as the event does, and a SIGTERM would then not stop the conversation
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    event = await events.__anext__()
            except TimeoutError:
                if time.monotonic() >= max_end:
                    result.end_reason = "maximum call length reached"
                elif response_open or not result.responses:
                    result.end_reason = "no response from the service"
                else:
                    result.end_reason = "follow-up window passed"
                result.ok = bool(result.responses)
                return
            except StopAsyncIteration:
                result.end_reason = self._hangup_reason or call.end_reason or "call ended"
                result.ok = call.end_error is None and bool(result.responses)
                return
            match event:
                case protocol.SpeechStarted():
                    result.t_speech_started.append(time.monotonic())
                    followup_end = None
                    if self.assistant_audible() and self.interrupt_on_speech:
                        self._barge_in("user speech")
                    self._set(State.USER_SPEAKING)
                case protocol.SpeechStopped():
                    result.t_speech_stopped.append(time.monotonic())
                    self._awaiting_reply_audio = True
                    if not response_open:
                        followup_end = time.monotonic() + RESPONSE_WAIT_S
                    self._set(State.THINKING)
                case protocol.ResponseCreated():
                    response_open = True
                    server_audio_done = False
                    self._dropping_reply = False  # a new response: play it
                    followup_end = None
                    if self.state is not State.USER_SPEAKING:
                        self._set(State.THINKING)
                case protocol.OutputAudioStarted():
                    server_audio_done = False
                    if not self._dropping_reply:
                        self._set(State.SPEAKING)
                case protocol.OutputAudioStopped():
                    server_audio_done = True
                case protocol.ResponseDone():
                    response_open = False
                    server_audio_done = True
                    result.responses.append(event.status or "unknown")
                case protocol.TranscriptDone():
                    result.transcripts.append(event.transcript)
                case protocol.Error():
                    log.warning("service error (call goes on): %s", event.error)
                case _:
                    pass
            if not response_open and server_audio_done and followup_end is None and result.responses:
                # The reply is out; what is still in the playout buffer plays before the window opens.
                followup_end = time.monotonic() + self.speaker.buffered_s + cfg.followup_s
                if self.state is not State.USER_SPEAKING:
                    self._set(State.LISTENING)
