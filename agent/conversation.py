"""One conversation: from a trigger (wake word or button) to hang-up, driven by the service's events.

The conversation turns the service's events and its audio into inputs for the device's state owner
(agent.state): the user speaking (`speech_started` / `speech_stopped`), a response under way
(`response.created`), and the assistant audible from its reply's first sound until the service's
output buffer stopped (agent.reply) and the local playout has played its last sample. `response.done`
only ends generation: over WebRTC the reply's audio may stream for seconds after it. When the reply
has played, a follow-up window lets the user speak again without the wake word; when it passes, or the
call reaches its maximum length, the agent hangs up. Every way out of `run()` ends the call and returns a
result, so the device always goes back to listening for the wake word.

Interrupting (the user's voice, the button, the stop word): the playout buffer is flushed at once, the
service is told (`response.cancel` while it generates, `output_audio_buffer.clear` while it streams),
and the rest of that reply's audio is dropped until the service confirms (agent.reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

import av
import numpy as np

from .audio.frames import is_audible
from .audio.mictrack import BlockSource, MicTrack
from .config import ConversationConfig
from .observe import Observer
from .reply import Interruption, ReplyTracker
from .state import Input, State, StateOwner
from .tools.calls import CallTools
from .tools.registry import ToolBox
from .voicelive import protocol
from .voicelive.auth import Credentials
from .voicelive.call import CallOptions, PreparedOffer, VoiceLiveCall
from .voicelive.control import Target
from .voicelive.errors import TransientError, VoiceLiveError

log = logging.getLogger(__name__)

#: The speaker counts as still talking this long after the write that carried the reply's last sound
#: (ALSA's own buffer lies between that write and the loudspeaker).
AUDIBLE_TAIL_S = 0.25

#: After the model asked to hang up, how long its goodbye may take to come and play.
END_WAIT_S = 15.0

#: After the user stops speaking, how long to wait for the service to start a response before hanging up.
RESPONSE_WAIT_S = 15.0

#: How often the conversation looks at the reply between events: its first sound may come before any
#: event (or with none, from a service without a data channel) and its end is a moment in the playout,
#: not an event. Twenty wake-ups a second are nothing next to the call's hundred RTP packets.
TICK_S = 0.05


class Speaker(Protocol):
    """What a conversation needs of playback."""

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """The frame at the speaker's rate and channels, as `write_samples` takes it."""
        ...

    def write_samples(self, samples: np.ndarray, audible: bool) -> None:
        """Queue converted audio; a silent frame may be dropped to bring the latency down."""
        ...

    def flush(self) -> float:
        """Drop the queued reply audio at once (barge-in); returns the milliseconds dropped."""
        ...

    def mark(self) -> int:
        """The position of the next sample queued (for `first_write_after`)."""
        ...

    def first_write_after(self, mark: int) -> float | None:
        """When the write that carried the first sample queued after `mark` went to ALSA (None: not yet)."""
        ...

    @property
    def buffered_s(self) -> float:
        """Audio queued and not yet handed to ALSA."""
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
    #: The error itself, for the retry policy (Retry-After, refusals in a row).
    exception: VoiceLiveError | None = field(default=None, repr=False)
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
    #: When each reply ended for the user: its last sample played, or it was stopped.
    t_reply_ends: list[float] = field(default_factory=list)
    #: Replies heard (a service without a data channel sends no `response.done`: they still count).
    replies_heard: int = 0
    #: When the call ended (monotonic), and what the reply's jitter buffer did (None: concealment off).
    t_ended: float | None = None
    jitter: dict[str, float | int] | None = None
    #: The uplink carried in-band FEC (the service's answer asked for it), for this expected loss at the end.
    uplink_fec: bool = False
    uplink_loss: float = 0.0
    #: The tools the model called: {"name", "call_id", "ok", "ms"}, with when each call came and was
    #: answered (monotonic), and when the model was asked to speak after them.
    tool_calls: list[dict[str, object]] = field(default_factory=list)
    t_tool_calls: list[tuple[float, float | None]] = field(default_factory=list)
    t_tool_response_create: list[float] = field(default_factory=list)


class Conversation:
    def __init__(
        self,
        target: Target,
        credentials: Credentials,
        options: CallOptions,
        cfg: ConversationConfig,
        speaker: Speaker,
        states: StateOwner,
        observer: Observer | None = None,
        prepared: PreparedOffer | None = None,
        tools: ToolBox | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.options = options
        self.cfg = cfg
        self.speaker = speaker
        self.states = states
        self.observer = observer or Observer()
        self.prepared = prepared
        self.toolbox = tools
        #: This call's function calls (agent.tools.calls), once it is up.
        self.tools: CallTools | None = None
        #: The model asked to hang up (`end_conversation`): after the reply that follows (replies heard
        #: then, and when it was asked).
        self._end_after: tuple[int, float] | None = None
        self.call: VoiceLiveCall | None = None
        self.reply = ReplyTracker()
        turn = options.session.get("turn_detection")
        #: The service interrupts its reply when the user speaks (turn_detection.interrupt_response,
        #: on by default): then the speaker goes quiet at once too; if not, only the button or the
        #: stop word stop a reply.
        self.interrupt_on_speech = not isinstance(turn, dict) or turn.get("interrupt_response", True) is not False
        self._result: ConversationResult | None = None
        self._hangup_reason: str | None = None
        #: Playout position just past the last audible reply sample queued (None: nothing to play).
        self._reply_end_mark: int | None = None
        self._awaiting_reply_audio = False
        self._awaiting_response = False
        #: `assistant_audible()` as of the last look (at least 20 times a second): for the stop word's
        #: thread, which must not call into the conversation.
        self.audible = False

    # ------------------------------------------------------------------------------------------
    # Commands (from the button or the stop word)

    async def stop_reply(self, why: str = "stop") -> bool:
        """Stop the assistant mid-reply: flush the speaker, drop the rest of the reply, and tell the
        service (`response.cancel` while it generates, `output_audio_buffer.clear` while it streams)."""
        if self.call is None or not self.assistant_audible():
            return False
        what = self._interrupt(why)
        tell = ((what.cancel, protocol.response_cancel), (what.clear, protocol.output_audio_buffer_clear))
        for needed, event in tell:
            if needed:
                with contextlib.suppress(TransientError):  # the call is ending anyway
                    await self.call.send(event())
        return True

    def end_after_reply(self) -> None:
        """Hang up once the model's next reply (its goodbye) has played; `END_WAIT_S` if none comes."""
        heard = self._result.replies_heard if self._result is not None else 0
        self._end_after = (heard, time.monotonic())

    async def hang_up(self, why: str = "hang-up") -> None:
        """End the conversation now; `run()` returns with `why` as its end reason."""
        self._hangup_reason = why
        if self.call is not None:
            await self.call.hangup(why)

    @property
    def barge_ins(self) -> int:
        """Replies barged in on so far in this conversation (its result, while it still runs)."""
        return self._result.barge_ins if self._result is not None else 0

    def assistant_audible(self, now: float | None = None) -> bool:
        """The assistant is talking: its reply's audio is still coming from the service, or the speaker
        has not yet played the last of it."""
        now = time.monotonic() if now is None else now
        if self.reply.dropping:
            return False
        if not self.reply.audio_over(now):
            return True
        if self._reply_end_mark is None:
            return False
        t_written = self.speaker.first_write_after(self._reply_end_mark - 1)
        if t_written is not None:
            playing = now - t_written < AUDIBLE_TAIL_S
        else:
            # not written yet: it plays within what is queued, unless the speaker does not play at all
            # (a device that failed): the wait is bounded by the queue's length
            last = self.reply.last_audible_t or now
            playing = now - last < self.speaker.buffered_s + AUDIBLE_TAIL_S + 0.5
        if not playing:
            self._reply_end_mark = None
        return playing

    def _interrupt(self, why: str, service_clears: bool = False) -> Interruption:
        what = self.reply.interrupt(time.monotonic(), service_clears=service_clears)
        dropped_ms = self.speaker.flush()
        self._reply_end_mark = None
        if self._result is not None:
            self._result.barge_ins += 1
            self._result.t_barge_ins.append(time.monotonic())
        log.info("barge-in (%s): dropped %.0f ms of reply audio", why, dropped_ms)
        self._refresh()
        return what

    # ------------------------------------------------------------------------------------------

    def _on_remote_frame(self, frame: av.AudioFrame) -> None:
        """Queue the service's audio, unless it is the tail of a reply that was stopped. The service
        may send RTP all the time (silence between replies), so audibility, not arrival, marks a reply."""
        now = time.monotonic()
        samples = self.speaker.convert(frame)  # once: what is played is what is tested
        audible = is_audible(samples)
        if not self.reply.on_frame(audible, now):
            return  # the stopped reply's tail, still arriving: never play it
        result = self._result
        if audible and self._awaiting_reply_audio and result is not None:
            result.reply_marks.append(self.speaker.mark())
            self._awaiting_reply_audio = False
        self.observer.reply_frame(now, self.speaker.mark(), audible)
        self.speaker.write_samples(samples, audible)
        if audible:
            self._reply_end_mark = self.speaker.mark()
            if self.states.state is not State.SPEAKING:
                self._refresh(now)

    def _refresh(self, now: float | None = None) -> None:
        """Bring the device's state in line with the reply: speaking while it is audible, listening
        once it has played (or a response ended without a sound)."""
        now = time.monotonic() if now is None else now
        state = self.states.state
        self.audible = self.assistant_audible(now)
        if self.audible:
            speaking = state is not State.SPEAKING and self.states.apply(Input.ASSISTANT_SPEAKING, cause="a reply")
            if speaking and self._result is not None:
                self._result.replies_heard += 1
                self._awaiting_response = False  # the answer is here, whatever its events say
        elif state is State.SPEAKING or (
            state is State.THINKING
            and self.reply.settled
            and not self._awaiting_response
            and not (self.tools is not None and self.tools.busy)
        ):
            if state is State.SPEAKING and self._result is not None:
                self._result.t_reply_ends.append(now)
            self.states.apply(Input.ASSISTANT_DONE, cause="the reply has played")

    async def run(
        self, trigger: str, t_trigger: float, audio: BlockSource, preroll_s: float = 0.0, mic_rate: int = 16000
    ) -> ConversationResult:
        result = self._result = ConversationResult(trigger=trigger, t_trigger=t_trigger, preroll_s=preroll_s)
        self.states.apply(Input.DIAL, cause=trigger)
        mic = MicTrack(
            audio,
            rate=mic_rate,
            on_frame=self.observer.uplink_frame,
            muted=lambda: self.states.snapshot.muted,
            stereo=self.options.uplink_reference,
        )
        call = self.call = VoiceLiveCall(
            self.target, self.credentials, mic, self.options, self._on_remote_frame,
            reply_active=self._reply_active, prepared=self.prepared,
        )  # fmt: skip
        self.prepared = None
        try:
            await call.start()
        except VoiceLiveError as exc:
            mic.stop()
            result.end_reason, result.error_kind, result.error = "call failed", exc.kind, str(exc)
            result.exception = exc
            log.warning("call failed (%s): %s", exc.kind, exc)
            return result
        result.rtc_call_id = call.rtc_call_id
        result.connect_ms = round((time.monotonic() - t_trigger) * 1000, 1)
        self.states.apply(Input.CONNECTED, cause=f"call {call.rtc_call_id}")
        if self.toolbox is not None:
            self.tools = CallTools(self.toolbox, call.send, on_busy=self._tool_busy, on_create=self._tool_answered)
        try:
            await self._converse(call, result)
        finally:
            mic.stop()
            if self.tools is not None:
                await self.tools.close()
                result.tool_calls = [r.as_dict() for r in self.tools.records]
                result.t_tool_calls = [(r.t_event, r.t_output) for r in self.tools.records]
                result.t_tool_response_create = list(self.tools.t_response_create)
            await call.hangup(result.end_reason or "hang-up")
            self.speaker.flush()  # nothing of this call plays after it
            result.t_ended = call.timings.ended
            result.jitter = call.jitter.summary() if call.jitter is not None else None
            result.uplink_fec, result.uplink_loss = call.uplink_fec, call.uplink_loss
        if call.end_error is not None and not result.ok:
            result.error_kind, result.error = call.end_error.kind, str(call.end_error)
            result.exception = call.end_error
        return result

    def _reply_active(self) -> bool:
        """For the call's media watchdog: RTP must keep coming while a reply is generating or streaming."""
        return self.reply.generating or self.reply.streaming

    @staticmethod
    async def _next_event(call: VoiceLiveCall, timeout: float) -> protocol.ServerEvent | None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives as
        # the event does, and a SIGTERM would then not stop the conversation
        async with asyncio.timeout(max(0.0, timeout)):
            return await call.next_event()

    async def _converse(self, call: VoiceLiveCall, result: ConversationResult) -> None:
        cfg = self.cfg
        now = time.monotonic()
        max_end = now + cfg.max_call_s
        # The first turn has a window of its own, from the connection on: the user may still be talking
        # (the pre-roll) or, after a press, about to start, and the service needs a moment of speech
        # before it says so. A short follow-up window (0 turns follow-ups off) must not end the call
        # before the service has heard the command.
        window_end: float | None = now + cfg.first_turn_s
        while True:
            now = time.monotonic()
            self._refresh(now)
            answered = bool(result.responses or result.replies_heard)
            if self._end_after is not None and self._ended_by_model(result, now):
                result.end_reason, result.ok = "the assistant ended the conversation", True
                return
            if self.states.state is State.SPEAKING:
                window_end = None  # never while the assistant talks, whatever the events said
            elif window_end is None and answered and self._quiet():
                # the reply has played: the follow-up window opens now
                window_end = now + cfg.followup_s
            deadline = min(max_end, window_end) if window_end is not None else max_end
            try:
                event = await self._next_event(call, min(deadline - now, TICK_S))
            except TimeoutError:
                now = time.monotonic()
                if now >= max_end:
                    result.end_reason = "maximum call length reached"
                elif window_end is not None and now >= window_end:
                    waiting = self._awaiting_response or not answered
                    result.end_reason = "no response from the service" if waiting else "follow-up window passed"
                else:
                    continue  # a tick: the reply may have finished playing
                result.ok = answered
                return
            if event is None:
                result.end_reason = self._hangup_reason or call.end_reason or "call ended"
                result.ok = call.end_error is None and answered
                return
            now = time.monotonic()
            self.reply.on_event(event, now)
            match event:
                case protocol.SpeechStarted():
                    result.t_speech_started.append(now)
                    window_end = None
                    if self.interrupt_on_speech and self.assistant_audible(now):
                        # the service stops its reply by itself (interrupt_response); the speaker stops now
                        self._interrupt("user speech", service_clears=True)
                    self.states.apply(Input.USER_SPEAKING, cause="speech_started")
                case protocol.SpeechStopped():
                    result.t_speech_stopped.append(now)
                    self._awaiting_reply_audio = True
                    self._awaiting_response = True
                    window_end = now + RESPONSE_WAIT_S  # a response must start by then
                    self.states.apply(Input.USER_DONE, cause="speech_stopped")
                case protocol.ResponseCreated():
                    self._awaiting_response = False
                    window_end = None
                    self.states.apply(Input.REPLY_PENDING, cause="response.created")
                case protocol.ResponseDone():
                    self._awaiting_response = False
                    result.responses.append(event.status or "unknown")
                case protocol.TranscriptDone():
                    result.transcripts.append(event.transcript)
                case protocol.Error():
                    log.warning("service error (call goes on): %s", event.error)
                case _:
                    pass
            if self.tools is not None:  # after: a response.done may ask for the tools' spoken answer
                self.tools.on_event(event)

    def _tool_busy(self, name: str) -> None:
        """A tool runs: the device is thinking (the LEDs say so), and a response is coming after it."""
        self._awaiting_response = True
        self.states.apply(Input.REPLY_PENDING, cause=f"tool {name}")

    def _tool_answered(self) -> None:
        """The tools' answers are in and the model was asked to speak: a response is coming."""
        self._awaiting_response = True

    def _ended_by_model(self, result: ConversationResult, now: float) -> bool:
        """The model's goodbye after `end_conversation` has played (or never came)."""
        assert self._end_after is not None
        heard, asked = self._end_after
        if now - asked > END_WAIT_S:
            return True
        return result.replies_heard > heard and self._quiet()

    def _quiet(self) -> bool:
        """Nothing is being said or generated: the user is not speaking, no response is expected or
        under way, no tool runs, and the reply has played to its end."""
        return (
            not (self.tools is not None and self.tools.busy)
            and self.states.state is not State.USER_SPEAKING
            and not self._awaiting_response
            and self.reply.settled
            and not self.audible  # as `_refresh` found it at the top of this loop step
        )
