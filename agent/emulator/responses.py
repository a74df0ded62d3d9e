"""The emulated call's responses: generation and the output audio buffer, in the order the settings say
(`EmulatorSettings.output_order`), cancellation, clearing and barge-in.

A part of `session.EmulatorCall` (a mixin: it works on the call's own state), kept apart so that each
room stays small.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from ..voicelive.protocol import new_event_id
from . import events
from .replies import Reply, transcript_deltas, usage
from .tracks import RATE, Playback

log = logging.getLogger("agent.emulator.session")  # the call's logger, as before the split

Event = dict[str, Any]


@dataclass
class _Response:
    id: str
    item_id: str
    playback: Playback
    reply: Reply
    input_s: float
    created_t: float = 0.0
    #: Seconds to generate the whole reply (the "webrtc" and "no-buffer-events" orders).
    generation_s: float = 0.0
    generating: bool = True
    task: asyncio.Task[None] | None = None

    def generated_samples(self, now: float) -> int:
        """How much of the reply's audio exists at `now`: the same fraction as the time spent generating."""
        total = len(self.reply.samples)
        if self.generation_s <= 0:
            return total
        return min(total, int(total * (now - self.created_t) / self.generation_s))


class CallResponses:
    """`EmulatorCall`'s responses."""

    # ----------------------------------------------------------------------------------------------
    # Responses

    def _start_response(self, reply: Reply, input_s: float) -> None:
        response_id = new_event_id("resp")
        order = self._settings.output_order
        response = _Response(
            id=response_id,
            item_id=new_event_id("item"),
            playback=self._track.play(reply.samples, response_id),
            reply=reply,
            input_s=input_s,
            created_t=time.monotonic(),
            generation_s=min(self._settings.generation_s, reply.duration_s),
        )
        self._active = response
        self.reply_audio.append(reply.samples)
        self._emit(events.response_created(response.id))
        if order == "audio-first":
            response.task = self._spawn(self._play_response(response), f"response-{response.id}")
            return
        response.task = self._spawn(self._generate(response), f"generate-{response.id}")
        self._spawn(self._stream(response, buffer_events=order == "webrtc"), f"stream-{response.id}")

    async def _sleep_until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - time.monotonic()))

    async def _generate(self, response: _Response) -> None:
        """The "webrtc" orders: transcript deltas while generating, then `response.done` at the end of
        generation, whatever the audio is doing (it streams on from the buffer)."""
        deltas = transcript_deltas(response.reply.transcript)
        for i, delta in enumerate(deltas):
            await self._sleep_until(response.created_t + response.generation_s * (i + 1) / (len(deltas) + 1))
            self._emit(events.transcript_delta(response.id, response.item_id, delta))
        await self._sleep_until(response.created_t + response.generation_s)
        self._emit(events.transcript_done(response.id, response.item_id, response.reply.transcript))
        self._end_generation(response, "completed")

    async def _stream(self, response: _Response, *, buffer_events: bool) -> None:
        """The "webrtc" orders: `output_audio_buffer.started` with the first frame sent, `stopped` after
        the last (none if the buffer was cleared first: the clear sent `cleared` instead)."""
        playback = response.playback
        await playback.started.wait()
        if playback.first_frame_t is None:
            return  # nothing of it was ever sent (cleared, or cancelled before any audio existed)
        self.first_reply_frame_t.append(playback.first_frame_t)
        if buffer_events:
            self._emit(events.output_started(response.id))
        await playback.finished.wait()
        if buffer_events and not playback.cancelled:
            self._emit(events.output_stopped(response.id))

    def _end_generation(self, response: _Response, status: Literal["completed", "cancelled"], reason: str = "") -> None:
        """`response.done`: generation is over. Cancelled, only the audio generated so far stays in the
        buffer (and streams on); the usage counts that much."""
        response.generating = False
        if self._active is response:
            self._active = None
        output_s = response.reply.duration_s
        if status == "cancelled":
            generated = response.generated_samples(time.monotonic())
            self._track.truncate(response.playback, generated)
            output_s = response.playback.end / RATE
            log.info(
                "response %s cancelled (%s) with %.2f of %.2f s generated",
                response.id,
                reason,
                output_s,
                response.reply.duration_s,
            )
        self._emit(
            events.response_done(
                response.id,
                status,
                usage(response.input_s, output_s, response.reply.transcript),
                reason=reason or None,
            )
        )

    def _cancel_generation(self, response: _Response, reason: str) -> None:
        if not response.generating:
            return
        if response.task is not None:
            response.task.cancel()
        self._end_generation(response, "cancelled", reason)

    def _clear_output(self) -> None:
        """Drop the whole output buffer at once: `output_audio_buffer.cleared` for the reply that was
        streaming. With nothing streaming there is nothing to clear and nothing is sent. A reply still
        generating keeps generating (only `response.cancel` stops that), but its audio is gone."""
        for playback in self._track.clear():
            if playback.first_frame_t is not None:
                log.info("output buffer cleared after %.2f s of %s", playback.played_s, playback.tag)
                if self._settings.output_order == "webrtc":
                    self._emit(events.output_cleared(playback.tag))

    def _barge_in(self) -> None:
        """Server VAD with `interrupt_response`: the service cancels generation and clears its buffer."""
        if self._settings.output_order == "audio-first":
            if self._active is not None:
                self._cancel_response("turn_detected")
            return
        if self._active is not None:
            self._cancel_generation(self._active, "turn_detected")
        self._clear_output()

    # "audio-first": the emulator before issue 9, generation in step with the audio.

    async def _play_response(self, response: _Response) -> None:
        playback = response.playback
        await playback.started.wait()
        if playback.cancelled or playback.first_frame_t is None:
            return
        self.first_reply_frame_t.append(playback.first_frame_t)
        self._emit(events.output_started(response.id))
        transcript = response.reply.transcript
        for delta in transcript_deltas(transcript):
            self._emit(events.transcript_delta(response.id, response.item_id, delta))
        self._emit(events.transcript_done(response.id, response.item_id, transcript))
        await playback.finished.wait()
        if playback.cancelled or self._active is not response:
            return
        self._active = None
        self._emit(events.output_stopped(response.id))
        self._emit(
            events.response_done(response.id, "completed", usage(response.input_s, playback.duration_s, transcript))
        )

    def _cancel_response(self, reason: str) -> None:
        """The "audio-first" order: stop the current reply at once (barge-in, response.cancel, output clear)."""
        response, self._active = self._active, None
        if response is None:
            return
        if response.task is not None:
            response.task.cancel()
        self._track.cancel()
        playback = response.playback
        log.info("response %s cancelled (%s) after %.2f s of audio", response.id, reason, playback.played_s)
        if playback.first_frame_t is not None:
            self._emit(events.output_cleared(response.id))
        self._emit(
            events.response_done(
                response.id,
                "cancelled",
                usage(response.input_s, playback.played_s, response.reply.transcript),
                reason=reason,
            )
        )
