"""Where the assistant's reply stands, from the service's events and its audio.

Over WebRTC the service generates a reply faster than real time and streams its audio from a buffer of
its own: `response.done` says that *generation* ended, while the audio may go on streaming for seconds;
`output_audio_buffer.stopped` says the last of it went out (voicelive-webrtc.md, section 9). So the reply
is audible from `output_audio_buffer.started` (or its first audible RTP frame, which may beat the event)
until `output_audio_buffer.stopped` or `output_audio_buffer.cleared`, whichever order the events come in:

- WebRTC order: created, started, done (generation over), ... audio ..., stopped;
- audio-first order (some service versions, the emulator's option): created, started, stopped, done;
- no `output_audio_buffer.*` at all: the reply is over once generation ended and its audio has been quiet
  for `quiet_end_s` (pauses between sentences are shorter), a bounded fallback.

Interrupting (the button, the stop word, the user's voice): `response.cancel` only while the response is
generating (the service answers a cancel without an active response with an error), then
`output_audio_buffer.clear` while its audio streams; the audio of that reply still arriving is dropped
until the service confirms (`cleared` or `stopped`), or a new response starts, or, if the service never
confirms (a version that does not know `output_audio_buffer.clear`), until its audio has been quiet for
`drop_quiet_s` after generation ended, never merely at the first quiet frame (a pause between sentences).
The confirmation outruns the audio that was already on its way (the network, the jitter buffer): after
it, the reply's tail is dropped until the first quiet frame, for at most `tail_s`.

`ReplyTracker` is pure bookkeeping with the time passed in, so every order of events can be tested
without a call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .voicelive import protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interruption:
    """What to tell the service when the user stops a reply."""

    cancel: bool  # `response.cancel`: the response is still generating
    clear: bool  # `output_audio_buffer.clear`: its audio is (or may be) still streaming


@dataclass(frozen=True)
class ReplyLimits:
    """The bounded waits, for when the service's events do not come."""

    #: Fallback without output-buffer events: the reply is over this long after its audio went quiet
    #: (longer than any pause between sentences).
    quiet_end_s: float = 1.0
    #: `started` came but `stopped` never does: over this long after generation ended and the audio
    #: went quiet (a lost event must not keep the device "speaking").
    stopped_wait_s: float = 4.0
    #: After an interruption the service never confirmed: drop until its audio was quiet this long
    #: after generation ended, and never longer than `drop_max_s` in all.
    drop_quiet_s: float = 2.0
    drop_max_s: float = 60.0
    #: After the service confirmed, the audio already on its way still arrives for this long at most.
    tail_s: float = 0.5


@dataclass
class ReplyTracker:
    limits: ReplyLimits = field(default_factory=ReplyLimits)
    response_id: str | None = None
    generating: bool = False
    #: Between `output_audio_buffer.started` and `stopped` / `cleared`.
    streaming: bool = False
    #: The reply's audio has begun (its `started`, or its first audible frame) and is not over yet.
    active: bool = False
    #: `output_audio_buffer.started` came for the current reply.
    started_seen: bool = False
    done_t: float | None = None
    last_audible_t: float | None = None
    dropping: bool = False
    drop_t: float = 0.0
    #: When the service confirmed the interruption (None: not yet).
    confirmed_t: float | None = None
    frames_dropped: int = 0
    #: Responses whose output buffer is known to be over (stopped or cleared): late events about them
    #: change nothing.
    _finished: set[str] = field(default_factory=set)

    # -- the service's events --------------------------------------------------------------------

    def on_event(self, event: protocol.ServerEvent, now: float) -> None:
        match event:
            case protocol.ResponseCreated():
                self._new_response(event.response_id)
                self.generating = True
            case protocol.OutputAudioStarted():
                if event.response_id is not None and event.response_id in self._finished:
                    return
                if event.response_id != self.response_id and event.response_id is not None:
                    self._new_response(event.response_id)
                self.streaming = self.started_seen = True
                if self.dropping:
                    self._stop_dropping("a new reply started")
                else:
                    self.active = True
            case protocol.ResponseDone():
                if event.response_id is None or event.response_id == self.response_id:
                    self.generating = False
                    self.done_t = now
            case protocol.OutputAudioStopped() | protocol.OutputAudioCleared():
                if event.response_id is not None:
                    self._finished.add(event.response_id)
                if event.response_id not in (None, self.response_id):
                    return  # an earlier reply's late news
                self.streaming = False
                self.active = False
                if self.dropping and self.confirmed_t is None:
                    self.confirmed_t = now  # what is still on its way is dropped up to a quiet frame
            case _:
                pass

    def _new_response(self, response_id: str | None) -> None:
        if self.dropping:
            self._stop_dropping("a new response")
        self.response_id = response_id
        self.generating = self.streaming = self.active = self.started_seen = False
        self.done_t = None
        if len(self._finished) > 64:
            self._finished.clear()

    # -- its audio -------------------------------------------------------------------------------

    def on_frame(self, audible: bool, now: float) -> bool:
        """One frame of the service's audio arrived: True to play it, False to drop it."""
        if self.dropping:
            if not self._drop_over(audible, now):
                self.frames_dropped += 1
                if audible:
                    self.last_audible_t = now
                return False
            self._stop_dropping("the interrupted reply's audio went quiet")
        if audible:
            self.last_audible_t = now
            self.active = True  # the reply's first audible frame may beat its `started`
        return True

    def _drop_over(self, audible: bool, now: float) -> bool:
        if now - self.drop_t >= self.limits.drop_max_s:
            return True
        if self.confirmed_t is not None:
            return not audible or now - self.confirmed_t >= self.limits.tail_s
        if audible or self.generating:
            return False  # (streaming may never end: a `stopped` lost, or never sent after a clear)
        quiet_since = max(self.last_audible_t or self.drop_t, self.done_t or self.drop_t, self.drop_t)
        return now - quiet_since >= self.limits.drop_quiet_s

    # -- questions -------------------------------------------------------------------------------

    def audio_over(self, now: float) -> bool:
        """The service has sent all of the current reply's audio (True when there is no reply)."""
        if not self.active:
            return True
        if self._over(now):
            self.active = False
            return True
        return False

    def _over(self, now: float) -> bool:
        if self.generating:
            return False
        quiet_since = max(self.last_audible_t or 0.0, self.done_t or 0.0)
        if self.streaming:
            if self.done_t is not None and now - quiet_since >= self.limits.stopped_wait_s:
                log.warning("no output_audio_buffer.stopped %.0f s after the reply went quiet: taken as over",
                            now - quiet_since)
                self.streaming = False
                return True
            return False
        if self.started_seen:
            return True  # stopped or cleared came
        # no output-buffer events (nor, without a data channel, any response events): the audio decides
        return now - quiet_since >= self.limits.quiet_end_s

    @property
    def settled(self) -> bool:
        """No response is generating and none is streaming: the follow-up window may open."""
        return not self.generating and not self.active

    # -- interrupting ----------------------------------------------------------------------------

    def interrupt(self, now: float, *, service_clears: bool = False) -> Interruption:
        """Stop the current reply: drop the rest of its audio from now on. Returns what to send
        (nothing when `service_clears`: the service interrupts by itself on the user's voice)."""
        what = Interruption(cancel=self.generating, clear=self.streaming or self.active or self.generating)
        self.dropping = True
        self.drop_t = now
        self.confirmed_t = None
        self.active = False
        if service_clears:
            return Interruption(cancel=False, clear=False)
        return what

    def _stop_dropping(self, why: str) -> None:
        log.debug("reply audio plays again (%s) after %d dropped frames", why, self.frames_dropped)
        self.dropping = False
        self.confirmed_t = None
