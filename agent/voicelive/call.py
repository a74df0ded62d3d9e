"""One Voice Live WebRTC call: the peer connection, its tracks and data channel, and its liveness.

The call is a client offer: one sendrecv audio transceiver restricted to Opus, and the data channel
`voice-live-events` created before the offer, so both are in the SDP (there is no trickle ICE). The offer
goes out on the control channel as `rtc.call.sdp.create` together with the session configuration, and
the call is up once the answer is applied, the peer connection is connected and the data channel is
open. The WebSocket is opened while aiortc gathers candidates, so neither waits for the other.

Server events from both channels are parsed, de-duplicated by `event_id` and handed out in order of
arrival by `events()`. A call is over when the WebSocket closes, the peer connection fails, the data
channel closes, RTP stops during a reply for longer than `media_timeout_s`, or `hangup()` is called;
`ended` is then set and `end_reason` says why. aiortc never reports "disconnected" and its receive queue
is unbounded, hence the agent's own RTP watchdog. Whether a reply is under way is the conversation's
knowledge (agent.reply), passed in as `reply_active`: the call keeps no response bookkeeping of its own.

Before the answer, only `rtc.call.error`, a closed WebSocket or the answer timeout end an attempt: a
plain `error` event on the way (an unknown session field, a rejected `session.update`) is logged and the
attempt goes on waiting. A data channel that never opens does not fail the call either: the service
also sends much on the WebSocket, and the audio works without it (a warning says so, once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCDataChannel, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..audio.resample import frame_from_pcm
from . import protocol
from .auth import Credentials
from .control import ControlChannel, Target
from .errors import NegotiationError, TransientError, VoiceLiveError
from .ice import host_addresses, rtc_configuration
from .jitter import JitterSettings, JitterStats
from .opus_sdp import decodes_fec, with_opus_params
from .receive import AudioReceiver, LossEstimator, watch_loss_reports

log = logging.getLogger(__name__)

EVENT_QUEUE_MAX = 1024


@dataclass(frozen=True)
class CallOptions:
    """What a call needs besides the target and the credential (from `voicelive.*` and `network.*`)."""

    session: dict[str, Any] = field(default_factory=dict)
    ice_servers: Sequence[dict[str, Any]] = ()
    ice_pin: Sequence[str] | None = None
    connect_timeout_s: float = 10.0
    answer_timeout_s: float = 20.0
    data_channel_timeout_s: float = 5.0
    media_timeout_s: float = 5.0
    send_request_id: bool = True
    #: Our jitter buffer, FEC and loss concealment for the reply, and FEC on the uplink (asked for in the
    #: offer). False: aiortc's fixed jitter buffer and plain decoder, no FEC either way (the code before).
    concealment: bool = True
    jitter_max_ms: float = 400.0
    #: The microphone's audio goes up as stereo Opus, its second channel what the speaker played
    #: (`audio.echo: client-reference`); the offer says so (`stereo=1; sprop-stereo=1`, RFC 7587).
    uplink_reference: bool = False


@dataclass
class CallTimings:
    """Monotonic times of the call's milestones, for logs, the demo and the benchmarks."""

    start: float = 0.0
    offer_ready: float | None = None
    ws_open: float | None = None
    answer: float | None = None
    connected: float | None = None
    data_channel_open: float | None = None
    first_rtp: float | None = None
    ended: float | None = None

    def since_start_ms(self, t: float | None) -> float | None:
        return None if t is None else round((t - self.start) * 1000, 1)


_END = object()

#: A prepared offer older than this is made afresh (the host's addresses may have changed).
OFFER_MAX_AGE_S = 600.0


@dataclass
class PreparedOffer:
    """Everything of a call that can be made before the wake word without the service knowing: the peer
    connection with its Opus-only transceiver and the `voice-live-events` data channel, its gathered
    candidates and the offer. Nothing is sent anywhere; it holds a few local UDP sockets. Used by one
    call only (a peer connection cannot be reused), so the agent prepares the next after each call."""

    pc: RTCPeerConnection
    transceiver: Any
    channel: RTCDataChannel
    sdp: str
    options: CallOptions
    t: float

    def usable(self, options: CallOptions) -> bool:
        return (
            self.pc.signalingState == "have-local-offer"
            and time.monotonic() - self.t < OFFER_MAX_AGE_S
            and (options.ice_servers, options.ice_pin, options.concealment, options.uplink_reference)
            == (self.options.ice_servers, self.options.ice_pin, self.options.concealment, self.options.uplink_reference)
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()


async def prepare_offer(options: CallOptions) -> PreparedOffer:
    """A peer connection and its offer, ICE gathered (no trickle ICE: the candidates go in the offer)."""
    pc = RTCPeerConnection(rtc_configuration(options.ice_servers))
    channel = pc.createDataChannel(protocol.DATA_CHANNEL_LABEL)
    transceiver = pc.addTransceiver("audio", direction="sendrecv")
    opus = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
    transceiver.setCodecPreferences(opus)
    with host_addresses(options.ice_pin):
        await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    if options.concealment:
        sdp = with_opus_params(sdp)  # minptime=10;useinbandfec=1, as Chrome offers
    if options.uplink_reference:
        sdp = with_opus_params(sdp, {"stereo": "1", "sprop-stereo": "1"})
    return PreparedOffer(pc, transceiver, channel, sdp, options, time.monotonic())


class VoiceLiveCall:
    """Start with `await call.start()`, read `call.events()`, send client events with `call.send()`,
    end with `await call.hangup()`. Usable as an async context manager."""

    def __init__(
        self,
        target: Target,
        credentials: Credentials,
        mic: MediaStreamTrack,
        options: CallOptions,
        on_remote_audio: Callable[[av.AudioFrame], None] | None = None,
        reply_active: Callable[[], bool] | None = None,
        prepared: PreparedOffer | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.mic = mic
        self.options = options
        self.on_remote_audio = on_remote_audio
        self.timings = CallTimings()
        self.rtc_call_id: str | None = None
        self.session_id: str | None = None
        self.request_id: str | None = None
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.end_error: VoiceLiveError | None = None
        self.frames_received = 0
        self._parser = protocol.EventParser()
        self._deduper = protocol.EventDeduper()
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._events_dropped = 0
        self._control: ControlChannel | None = None
        self._pc: RTCPeerConnection | None = None
        self._channels: list[RTCDataChannel] = []
        self._answer: asyncio.Future[protocol.ServerEvent] | None = None
        self._connected = asyncio.Event()
        self._dc_open = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reply_active = reply_active or (lambda: False)
        self._prepared = prepared
        self._last_rtp = 0.0
        self._last_reply_t = 0.0
        #: The data channel did not open in time: events come on the WebSocket only.
        self.data_channel_missing = False
        #: Set once RTP arrived while no response was under way: this service sends audio all the time
        #: (silence between replies), so any gap in it, not only one during a reply, means trouble.
        self.rtp_continuous = False
        self._frames_between_replies = 0
        self._closed = False
        self._receiver: AudioReceiver | None = None
        self._loss = LossEstimator()
        #: The far end decodes in-band FEC (its answer said useinbandfec=1): the uplink carries it.
        self.uplink_fec = False

    # ------------------------------------------------------------------------------------------
    # Setting up

    async def __aenter__(self) -> VoiceLiveCall:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hangup()

    async def start(self) -> None:
        """Connect the call, or raise a `VoiceLiveError` after cleaning up everything it opened."""
        self.timings.start = time.monotonic()
        opts = self.options
        ws_task = asyncio.create_task(
            ControlChannel.connect(self.target, self.credentials, opts.connect_timeout_s, opts.send_request_id)
        )
        try:
            offer_sdp = await self._prepare_offer()
            self._control = await ws_task
            self.request_id = self._control.request_id
            self.timings.ws_open = time.monotonic()
            self._answer = asyncio.get_running_loop().create_future()
            self._spawn(self._read_control(self._control), "control reader")
            await self._control.send(protocol.sdp_create(offer_sdp, opts.session))
            answer = await self._wait(self._answer, opts.answer_timeout_s, "no SDP answer")
            self.timings.answer = time.monotonic()
            assert isinstance(answer, protocol.RtcCallSdpCreated) and answer.sdp_answer
            self.rtc_call_id = answer.rtc_call_id
            self._use_answer_fec(answer.sdp_answer)
            log.info("call %s answered (request id %s)", self.rtc_call_id, self.request_id)
            assert self._pc is not None
            try:
                await self._pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp_answer, type="answer"))
            except ValueError as exc:
                raise NegotiationError(f"unusable SDP answer: {exc}", "bad_answer") from None
            await self._wait(self._connected.wait(), opts.connect_timeout_s, "peer connection not connected")
            await self._wait_data_channel(opts.data_channel_timeout_s)
        except BaseException as exc:
            ws_task.cancel()
            reason = str(exc) if isinstance(exc, VoiceLiveError) else f"setup failed: {exc!r}"
            await self._teardown(reason, exc if isinstance(exc, VoiceLiveError) else None)
            raise
        self._last_rtp = time.monotonic()
        self._spawn(self._watch_media(), "media watchdog")
        log.info(
            "call %s up: connected in %.0f ms", self.rtc_call_id, (time.monotonic() - self.timings.start) * 1000
        )

    async def _prepare_offer(self) -> str:
        offer = self._prepared
        self._prepared = None
        if offer is None or not offer.usable(self.options):
            if offer is not None:
                await offer.close()
            offer = await prepare_offer(self.options)
        pc = self._pc = offer.pc
        pc.on("connectionstatechange", self._on_connection_state)
        pc.on("datachannel", self._adopt_channel)
        pc.on("track", self._on_track)
        self._adopt_channel(offer.channel)
        offer.transceiver.sender.replaceTrack(self.mic)
        if self.options.concealment:
            self._receiver = AudioReceiver(
                offer.transceiver.receiver,
                self._on_decoded,
                JitterSettings(max_ms=self.options.jitter_max_ms),
                on_packet=self._on_packet,
            )
            watch_loss_reports(offer.transceiver.sender, self._on_uplink_loss)
        self.timings.offer_ready = time.monotonic()
        return offer.sdp

    async def _wait_data_channel(self, timeout: float) -> None:
        try:
            await self._wait(self._dc_open.wait(), timeout, "data channel")
        except NegotiationError:
            if self.ended.is_set():
                raise
            self.data_channel_missing = True
            log.warning(
                "data channel %s did not open within %g s: going on with the events the service sends on "
                "the WebSocket (voice activity and reply events may be missing)",
                protocol.DATA_CHANNEL_LABEL,
                timeout,
            )

    async def _wait(self, aw: Any, timeout: float, what: str) -> Any:
        """Wait for `aw`, but give up when the call ends first or the timeout passes."""
        task = asyncio.ensure_future(aw)
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            done, _ = await asyncio.wait({task, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if task in done:
            return task.result()
        task.cancel()
        if self.end_error is not None:
            raise self.end_error
        if self.ended.is_set():
            raise TransientError(f"{what}: call ended ({self.end_reason})")
        raise NegotiationError(f"{what} within {timeout:g} s", "timeout")

    # ------------------------------------------------------------------------------------------
    # Channels

    def _adopt_channel(self, channel: RTCDataChannel) -> None:
        """Our own channel, or one the service announces: both carry events (some backends open their
        own). Only the `voice-live-events` label counts for readiness."""
        if channel in self._channels:
            return
        self._channels.append(channel)
        label = channel.label

        def on_open() -> None:
            if label == protocol.DATA_CHANNEL_LABEL and not self._dc_open.is_set():
                self.timings.data_channel_open = time.monotonic()
                self._dc_open.set()
                log.debug("data channel %s open", label)

        def on_close() -> None:
            if label == protocol.DATA_CHANNEL_LABEL and self._dc_open.is_set():
                self._end("data channel closed", TransientError("the service closed the data channel"))

        channel.on("open", on_open)
        channel.on("close", on_close)
        channel.on("message", lambda message: self._on_message(message, "data"))
        if channel.readyState == "open":
            on_open()

    async def _read_control(self, control: ControlChannel) -> None:
        async for message in control.messages():
            self._on_message(message, "control")
        if not self._closed:
            self._end(
                f"control channel closed by the service ({control.close_reason})",
                TransientError(f"the service closed the control channel ({control.close_reason})"),
            )

    def _on_message(self, raw: str | bytes, channel: protocol.Channel) -> None:
        event = self._parser.parse(raw, channel)
        if event is None or not self._deduper.first_time(event):
            return
        log.debug("%s event %s %s", channel, event.type, event.event_id)
        if isinstance(event, protocol.SessionCreated):
            self.session_id = event.session_id
        if self._answer is not None and not self._answer.done():
            if isinstance(event, protocol.RtcCallSdpCreated):
                if event.sdp_answer:
                    self._answer.set_result(event)
                else:
                    self._answer.set_exception(NegotiationError("rtc.call.sdp.created without an sdp_answer"))
                return
            if isinstance(event, protocol.RtcCallError):
                code = event.error.code
                self._answer.set_exception(
                    NegotiationError(f"the service refused the call: {event.error}", code, refused=True)
                )
                return
            if isinstance(event, protocol.Error):
                log.warning("service error while waiting for the answer (still waiting): %s", event.error)
        if self._events.qsize() >= EVENT_QUEUE_MAX:
            self._events.get_nowait()
            self._events_dropped += 1
            log.warning("event consumer too slow: dropped the oldest event (%d so far)", self._events_dropped)
        self._events.put_nowait(event)

    def _on_connection_state(self) -> None:
        assert self._pc is not None
        state = self._pc.connectionState
        log.debug("peer connection %s", state)
        if state == "connected":
            self.timings.connected = self.timings.connected or time.monotonic()
            self._connected.set()
        elif state == "failed":
            self._end("peer connection failed", TransientError("the WebRTC connection failed"))
        elif state == "closed" and not self._closed:
            self._end("peer connection closed", TransientError("the WebRTC connection closed"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._receiver is None:  # else its packets go to our jitter buffer
            self._spawn(self._read_remote_audio(track), "remote audio")

    # ------------------------------------------------------------------------------------------
    # Audio

    @property
    def jitter(self) -> JitterStats | None:
        """What the jitter buffer did (None with `concealment` off)."""
        return self._receiver.buffer.stats if self._receiver is not None else None

    @property
    def uplink_loss(self) -> float:
        """The expected uplink loss the encoder protects against (from the far end's reports)."""
        return self._loss.rate

    def _use_answer_fec(self, answer: str) -> None:
        encoder = getattr(self.mic, "encoder", None)
        self.uplink_fec = self.options.concealment and decodes_fec(answer)
        if encoder is not None:
            encoder.set_fec(self.uplink_fec, self._loss.rate)
        log.debug("uplink in-band FEC %s", "on" if self.uplink_fec else "off (the answer does not ask for it)")

    def _on_uplink_loss(self, fraction: float) -> None:
        rate = self._loss.update(fraction, time.monotonic())
        encoder = getattr(self.mic, "encoder", None)
        if encoder is not None and self.uplink_fec and abs(encoder.packet_loss - rate) > 0.001:
            log.debug("uplink loss %.1f %% reported: FEC for %.0f %%", fraction * 100, rate * 100)
            encoder.set_packet_loss(rate)

    def _on_packet(self, now: float) -> None:
        """An RTP packet of the service's audio arrived (what the media watchdog watches)."""
        self._last_rtp = now
        if self._reply_active():
            self._last_reply_t = now
        elif now - self._last_reply_t > 1.0:
            # a second of audio outside any reply (not the head of a reply that beat its event)
            self._frames_between_replies += 1
            self.rtp_continuous = self._frames_between_replies >= 50
        if self.timings.first_rtp is None:
            self.timings.first_rtp = now

    def _on_decoded(self, samples: Any) -> None:
        """A 20 ms frame out of the jitter buffer (decoded, FEC-recovered or concealed)."""
        self.frames_received += 1
        if self.on_remote_audio is not None:
            self.on_remote_audio(frame_from_pcm(samples, 48000))

    async def _read_remote_audio(self, track: MediaStreamTrack) -> None:
        """aiortc's decoded frames (with `concealment` off)."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self._on_packet(time.monotonic())
            self.frames_received += 1
            if self.on_remote_audio is not None:
                self.on_remote_audio(frame)  # type: ignore[arg-type]

    async def _watch_media(self) -> None:
        """RTP must keep coming while the service is answering, and all the time from a service that
        sends it all the time: a peer whose audio stops is a dead call (aiortc reports nothing)."""
        limit = self.options.media_timeout_s
        was_active = False
        while not self.ended.is_set():
            await asyncio.sleep(min(0.25, limit / 4))
            active = self._reply_active()
            if active and not was_active:
                self._last_rtp = max(self._last_rtp, time.monotonic() - 0.25)  # the reply's clock starts now
            was_active = active
            silent = time.monotonic() - self._last_rtp
            if (active or self.rtp_continuous) and silent > limit:
                during = " during a reply" if active else ""
                self._end(
                    f"no audio from the service for {silent:.1f} s{during}",
                    TransientError(f"RTP stopped for {silent:.1f} s{during}"),
                )

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("call task %s failed: %r", task.get_name(), exc)
            self._end(f"internal error in {task.get_name()}", TransientError(repr(exc)))

    # ------------------------------------------------------------------------------------------
    # Using and ending

    async def next_event(self) -> protocol.ServerEvent | None:
        """The next server event, de-duplicated; None once the call has ended. Safe to cancel (a
        timeout around it loses no event), unlike an async generator, which a cancellation closes."""
        item = await self._events.get()
        if item is _END:
            self._events.put_nowait(_END)  # for any other reader
            return None
        assert isinstance(item, protocol.ServerEvent)
        return item

    async def events(self) -> AsyncIterator[protocol.ServerEvent]:
        """Server events, de-duplicated, until the call ends."""
        while (event := await self.next_event()) is not None:
            yield event

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event on the control channel (where Voice Live reads them)."""
        if self._control is None or self.ended.is_set():
            raise TransientError("the call is not up")
        await self._control.send(event)

    def _end(self, reason: str, error: VoiceLiveError | None = None) -> None:
        if self.ended.is_set():
            return
        self.end_reason = reason
        self.end_error = error
        self.timings.ended = time.monotonic()
        self.ended.set()
        self._events.put_nowait(_END)
        (log.warning if error else log.info)("call %s over: %s", self.rtc_call_id or "(not set up)", reason)
        if not self._closed:
            self._spawn(self._teardown(reason, error), "teardown")

    async def hangup(self, reason: str = "hang-up") -> None:
        """Close the WebSocket (which ends the session at the service), then the peer connection."""
        await self._teardown(reason, None)

    async def _teardown(self, reason: str, error: VoiceLiveError | BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        if self._prepared is not None:  # never used: the call failed before its offer
            await self._prepared.close()
            self._prepared = None
        self._end(reason, error if isinstance(error, VoiceLiveError) else None)
        if self._control is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._control.close(), 2.0)
        for channel in self._channels:
            channel.close()
        if self._receiver is not None:
            self._receiver.close()
        if self._pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pc.close(), 3.0)
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
