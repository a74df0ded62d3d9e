"""The emulated call's media side: the peer connection's events, the caller's audio in (decoded as a
real receiver decodes it: `uplink`), the reply's FEC, and turn detection on what was heard.

A part of `session.EmulatorCall` (a mixin: it works on the call's own state), kept apart so that each
room stays small; it holds no state of its own.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from ..voicelive.opus_sdp import decodes_fec
from ..voicelive.protocol import DATA_CHANNEL_LABEL, new_event_id
from ..voicelive.receive import watch_loss_reports
from . import events
from .echo import ServiceCanceller, reference_source
from .replies import Reply, beep_reply, file_reply, parrot_reply
from .tracks import RATE
from .uplink import UplinkReceiver
from .vad import VadEvent

log = logging.getLogger("agent.emulator.session")  # the call's logger, as before the split

Event = dict[str, Any]

#: Mic audio kept for `received_audio()` and parrot replies (at 96 kB/s, a long demo would grow forever).
MAX_RECORDED_AUDIO_S = 600.0


class CallMedia:
    """`EmulatorCall`'s peer connection, audio in, and turn detection."""

    # ----------------------------------------------------------------------------------------------
    # Peer connection

    def _on_connection_state(self, pc: RTCPeerConnection) -> None:
        log.debug("peer connection %s", pc.connectionState)
        if pc.connectionState == "failed" and not self._closing:
            log.info("peer connection failed: ending the call")
            self._spawn(self.close(1011, "media connection failed"), "close-failed")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self._settings.faults.no_data_channel:
            log.info("fault no_data_channel: ignoring the client's data channel %r", channel.label)
            return
        if channel.label != DATA_CHANNEL_LABEL:
            # The service lets a channel with another label open, and never uses it.
            log.info("ignoring a data channel labelled %r (expected %r)", channel.label, DATA_CHANNEL_LABEL)
            return
        self._channel = channel

        @channel.on("message")
        def _on_message(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            if not self.data_channel_messages:
                log.info("ignoring client messages on the data channel (client events go on the WebSocket)")
            self.data_channel_messages.append(text)

        # aiortc emits "datachannel" for a remote channel once it is already open.
        log.debug("data channel %r open", channel.label)
        self._send_fault_messages("data")
        self._flush_data_queue()

    def _flush_data_queue(self) -> None:
        while self._data_queue and self._channel is not None and self._channel.readyState == "open":
            self._channel_send(*self._data_queue.popleft())

    def _use_fec(self, pc: RTCPeerConnection, offer: str) -> None:
        """FEC in the reply when the offer asks for it (and `fec` is on), sized by the client's reports."""
        self.downlink_fec = self._settings.fec and decodes_fec(offer)
        self._track.use_fec(self.downlink_fec, self._loss.rate)
        sender = next((t.sender for t in pc.getTransceivers() if t.sender.track is self._track), None)
        if sender is not None and self.downlink_fec:
            watch_loss_reports(sender, self._on_downlink_loss)

    def _on_downlink_loss(self, fraction: float) -> None:
        self._track.encoder.set_packet_loss(self._loss.update(fraction, time.monotonic()))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        pc = self._pc
        receiver = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None) if pc else None
        if receiver is None:  # aiortc's remote tracks always belong to a transceiver's receiver
            log.error("no receiver for the caller's audio track: nothing will be heard")
            return
        self._uplink = UplinkReceiver(receiver, self._on_decoded, self._on_packet)

    def _on_packet(self, now: float) -> None:
        """The caller's RTP packets as they arrive: the first is what a latency figure "at the service"
        means (the first decoded frame, `first_rtp_t`, can come later when a packet is missing)."""
        if self.first_packet_t is None:
            self.first_packet_t = now

    def _on_decoded(self, stereo: np.ndarray) -> None:
        if self.first_rtp_t is None:
            self.first_rtp_t = time.monotonic()
        mic = stereo[0::2]
        source = reference_source(self.effective_session) if self._settings.echo_canceller == "session" else None
        if source is None:
            self._canceller = None
        else:
            if self._canceller is None or self._canceller.source != source:
                self._canceller = ServiceCanceller(source)
            mic = self._canceller.heard(np.ascontiguousarray(mic), stereo[1::2] if source == "client" else None)
        self._on_audio(np.ascontiguousarray(mic))

    def _on_sent(self, frame: np.ndarray) -> None:
        """A reply frame leaving (the server reference of the service's canceller)."""
        if self._canceller is not None:
            self._canceller.sent(frame)

    # ----------------------------------------------------------------------------------------------
    # Turn detection

    def _on_audio(self, mono: np.ndarray) -> None:
        self._audio.append(mono)
        self._audio_samples += len(mono)
        limit = int(MAX_RECORDED_AUDIO_S * RATE)
        while self._audio_samples - self._audio_dropped > limit and len(self._audio) > 1:
            self._audio_dropped += len(self._audio.popleft())
        vad_event = self._vad.process(mono)
        if vad_event is not None and self._turn_detection() is not None:
            self._on_vad(vad_event)

    def _on_vad(self, vad_event: VadEvent) -> None:
        td = self._turn_detection() or {}
        if vad_event.kind == "start":
            self._speech_item = new_event_id("item")
            self._speech_start_ms = vad_event.ms
            self.speech_started_t.append(time.monotonic())
            self._emit(events.speech_started(vad_event.ms, self._speech_item))
            if td.get("interrupt_response", True):
                self._barge_in()
            return
        item_id = self._speech_item or new_event_id("item")
        self._speech_item = None
        self.speech_stopped_t.append(time.monotonic())
        self._emit(events.speech_stopped(vad_event.ms, item_id))
        self._commit(item_id)
        self._utterance = (self._speech_start_ms, vad_event.ms)
        self._user_turns += 1
        steps = self._tool_steps(self._user_turns)
        if td.get("create_response", True) and self._active is None:
            if steps:
                self._start_tool_response(steps)
            else:
                self._start_response(self._reply_to_utterance(), input_s=self._utterance_s())

    def _utterance_s(self) -> float:
        if self._utterance is None:
            return 0.0
        return (self._utterance[1] - self._utterance[0]) / 1000

    def _reply_to_utterance(self) -> Reply:
        if self._settings.reply_mode == "file":
            return self._file_reply()
        if self._utterance is None:
            return beep_reply()
        return self._parrot_reply(*self._utterance)

    def _parrot_reply(self, start_ms: int, end_ms: int) -> Reply:
        td = self._turn_detection() or {}
        prefix = td.get("prefix_padding_ms", self._settings.prefix_padding_ms)
        prefix = prefix if isinstance(prefix, int) and prefix >= 0 else self._settings.prefix_padding_ms
        first = max(0, (start_ms - prefix) * RATE // 1000 - self._audio_dropped)
        last = max(first, end_ms * RATE // 1000 - self._audio_dropped)
        return parrot_reply(self._recorded(first, last), (end_ms - start_ms) / 1000)

    def _recorded(self, first: int, last: int) -> np.ndarray:
        """Samples [first, last) of the kept mic audio, without joining all of it."""
        parts: list[np.ndarray] = []
        pos = 0
        for chunk in self._audio:
            end = pos + len(chunk)
            if end > first and pos < last:
                parts.append(chunk[max(0, first - pos) : min(len(chunk), last - pos)])
            if end >= last:
                break
            pos = end
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def _file_reply(self) -> Reply:
        assert self._settings.reply_wav is not None
        return file_reply(self._settings.reply_wav)
