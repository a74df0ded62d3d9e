"""One emulated call: the control WebSocket, the peer connection, turn detection and replies.

`EmulatorCall` plays the service's side of one `/calls` connection (voicelive-webrtc.md, sections 1.2 to
1.7): it answers the SDP offer, accepts the `voice-live-events` data channel, runs a VAD on the caller's
RTP audio, and speaks back on its own track, sending the lifecycle events on the channels the real service
uses (some on both, with one event_id). It also keeps a record of everything that happened (events both
ways, the audio, the moments that matter for latency), which is what tests and the demo look at.

A response follows `EmulatorSettings.output_order`: in the default "webrtc" order generation (which ends
with `response.done`) and the output audio buffer (which streams the reply's audio in real time and ends
with `output_audio_buffer.stopped`, or `cleared`) are two separate things, as over the real service's
WebRTC (voicelive-webrtc.md section 9): `response.cancel` stops the first, `output_audio_buffer.clear` the
second, and a barge-in under server VAD both.

Everything the call sends goes through `_emit`, which is synchronous: control messages are queued for one
writer task (so they leave in the order they were produced), data-channel messages are sent at once, or
queued until the channel opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, ClassVar, Literal

import numpy as np
from aiortc import RTCDataChannel, RTCPeerConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..netsim.network import Network
from ..netsim.udp import UdpRelay
from ..voicelive.ice import rtc_configuration
from ..voicelive.protocol import FORBIDDEN_SESSION_KEYS, new_event_id
from ..voicelive.receive import LossEstimator
from ..voicelive.session_fields import unknown_session_fields
from . import events
from .echo import ServiceCanceller
from .functions import CallFunctions
from .handshake import Upgrade
from .media import CallMedia
from .negotiation import OfferError, answer_offer
from .responses import CallResponses, _Response
from .settings import EmulatorSettings
from .tracks import ReplyTrack
from .uplink import UplinkReceiver, UplinkStats
from .vad import EnergyVad

log = logging.getLogger(__name__)

Event = dict[str, Any]

#: Data-channel events kept while the channel is not open yet; beyond this the oldest are dropped.
DATA_QUEUE_LIMIT = 1000
#: The client event that cuts the reply's audio (WebRTC only; voicelive-webrtc.md section 9).
OUTPUT_CLEAR = "output_audio_buffer.clear"


class EmulatorCall(CallMedia, CallResponses, CallFunctions):
    """The record and the logic of one accepted WebSocket."""

    def __init__(
        self, ws: ServerConnection, upgrade: Upgrade, settings: EmulatorSettings, network: Network | None = None
    ) -> None:
        self._ws = ws
        self._network = network
        self._settings = settings
        self.upgrade = upgrade
        self.rtc_call_id: str | None = None
        #: What the client sent in `rtc.call.sdp.create.session` and `session.update`, merged.
        self.session: dict[str, Any] = {}
        #: The session as the service would report it: defaults plus the client's changes.
        self.effective_session: dict[str, Any] = events.default_session(
            upgrade.model, settings.silence_ms, settings.prefix_padding_ms
        )
        self.client_events: list[Event] = []
        #: Client messages on the data channel (the service takes client events on the WebSocket only).
        self.data_channel_messages: list[str] = []
        self.sent_events: list[tuple[Literal["control", "data"], Event]] = []
        # Moments, all `time.monotonic()`, for latency measurements in tests and the demo:
        #: when the first decoded mic frame came out of the emulator's receiver (`uplink`: decoded on arrival,
        #: later only when a packet was missing);
        self.first_rtp_t: float | None = None
        #: When the caller's first RTP packet arrived (before decoding).
        self.first_packet_t: float | None = None
        #: when each speech_started / speech_stopped was sent;
        self.speech_started_t: list[float] = []
        self.speech_stopped_t: list[float] = []
        #: when each reply's first audio frame was handed to aiortc (cancelled-before-audio replies have none).
        self.first_reply_frame_t: list[float] = []
        #: Each reply's audio as queued for sending (48 kHz mono int16), cancelled ones whole.
        self.reply_audio: list[np.ndarray] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None

        self._pc: RTCPeerConnection | None = None
        self._track = ReplyTrack(
            settings.faults, network.reply_started if network is not None else None, on_sent=self._on_sent
        )
        #: The service's echo canceller, when `echo_canceller` is "session" and the session asks for one.
        self._canceller: ServiceCanceller | None = None
        self._relay: UdpRelay | None = None
        self._uplink: UplinkReceiver | None = None
        self._loss = LossEstimator()
        #: The client asked for in-band FEC (its offer's useinbandfec=1) and the emulator sends it.
        self.downlink_fec = False
        self._channel: RTCDataChannel | None = None
        self._data_queue: deque[tuple[str, Event | None]] = deque(maxlen=DATA_QUEUE_LIMIT)
        self._control_queue: asyncio.Queue[str] = asyncio.Queue()
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

        self._audio: deque[np.ndarray] = deque()
        self._audio_samples = 0  # received so far, absolute
        self._audio_dropped = 0  # samples dropped from the front of `_audio`
        self._vad = EnergyVad(settings.vad_threshold_dbfs, settings.speech_start_ms, settings.silence_ms)
        self._speech_item: str | None = None
        self._speech_start_ms = 0
        self._last_item_id: str | None = None
        self._utterance: tuple[int, int] | None = None  # (start_ms, end_ms) of the last one
        #: The response being generated (in the "audio-first" order: until its audio ended).
        self._active: _Response | None = None
        #: Items the conversation holds, for `conversation.item.retrieve`.
        self._items: dict[str, dict[str, Any]] = {}
        #: Tool calls (agent.emulator.functions): the user's turns so far, the calls awaiting outputs,
        #: and for tests and benchmarks what was sent and answered, and when.
        self._user_turns = 0
        self._tool_turn: Any = None
        self.tool_calls_sent: list[tuple[str, list[str]]] = []
        self.tool_outputs: list[tuple[str, str]] = []
        self.tool_events_t: list[float] = []
        self.tool_answer_t: list[float] = []  # when a response.create after the outputs came

    # ----------------------------------------------------------------------------------------------
    # Record

    def received_audio(self) -> np.ndarray:
        """The caller's audio so far (48 kHz mono int16, silence included), in arrival order.

        Only the last `MAX_RECORDED_AUDIO_S` seconds are kept.
        """
        if not self._audio:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._audio))

    @property
    def rtp_stopped_t(self) -> float | None:
        """When the `stop_rtp_after_s` fault stopped RTP, if it did."""
        return self._track.rtp_stopped_t

    def network_record(self) -> dict[str, Any] | None:
        """The simulated network's profile and counters (all its calls so far), or None without one."""
        net = self._network
        if net is None or not net.impaired:
            return None
        return {
            "profile": net.profile.name,
            "down": net.down.as_dict(),
            "up": net.up.as_dict(),
            "drop_start_t": net.drop_start,
            "drop_end_t": net.drop_end,
        }

    @property
    def uplink_stats(self) -> UplinkStats | None:
        """What the caller's packets lost, and what FEC and concealment made of it."""
        return self._uplink.stats if self._uplink is not None else None

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        return self._pc

    def events_of(self, etype: str) -> list[tuple[Literal["control", "data"], Event]]:
        return [(ch, ev) for ch, ev in self.sent_events if ev.get("type") == etype]

    # ----------------------------------------------------------------------------------------------
    # Life cycle

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=f"emulator-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("emulator task %s failed", task.get_name(), exc_info=task.exception())

    async def run(self) -> None:
        """Serve the call until the WebSocket closes; then tear everything down."""
        log.info(
            "call accepted (model=%s, auth=%s via %s)",
            self.upgrade.model,
            self.upgrade.auth_kind,
            self.upgrade.auth_via,
        )
        self._spawn(self._write_control(), "writer")
        self._spawn(self._dispatch(), "dispatch")
        self._emit(events.session_created(self.effective_session))
        self._send_fault_messages("control")
        try:
            async for message in self._ws:
                self._inbox.put_nowait(message)
        except ConnectionClosed:
            pass
        finally:
            await self.close()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the call: stop replies, close the peer connection and the WebSocket, set `closed`."""
        if self._closing:
            await self.closed.wait()
            return
        self._closing = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._track.stop()
        if self._uplink is not None:
            self._uplink.close()
        if self._relay is not None:
            self._relay.close()
        if self._pc is not None:
            try:
                await self._pc.close()
            except Exception:
                log.warning("closing the peer connection failed", exc_info=True)
        # Control events already produced still go out before the close frame (an error, say).
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1.0):
                while not self._control_queue.empty():
                    await self._ws.send(self._control_queue.get_nowait())
        with contextlib.suppress(Exception):
            await self._ws.close(code, reason)
        self.close_code = self._ws.close_code
        self.close_reason = self._ws.close_reason
        log.info("call %s closed (code %s)", self.rtc_call_id or "(no rtc call)", self.close_code)
        self.closed.set()

    async def _close_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        log.info("fault close_after_s: closing the WebSocket")
        await self.close(1011, "emulator fault: close_after_s")

    # ----------------------------------------------------------------------------------------------
    # Sending

    def _emit(self, event: Event) -> None:
        route = events.ROUTES.get(event["type"], "control")
        if route in ("control", "both"):
            self._send_control(event)
        if route in ("data", "both"):
            self._send_data(event)

    def _send_control(self, event: Event) -> None:
        log.debug("-> control %s", event["type"])
        self.sent_events.append(("control", event))
        self._control_queue.put_nowait(json.dumps(event))

    def _send_data(self, event: Event | str) -> None:
        """Send on the data channel, or queue until it opens. A str is sent as is (a fault message)."""
        if self._settings.faults.no_data_channel:
            return
        item = (event, None) if isinstance(event, str) else (json.dumps(event), event)
        if self._channel is not None and self._channel.readyState == "open":
            self._channel_send(*item)
        else:
            self._data_queue.append(item)

    def _channel_send(self, text: str, event: Event | None) -> None:
        assert self._channel is not None
        try:
            self._channel.send(text)
        except Exception as exc:  # the channel closed under us: the call is ending
            log.debug("data channel send failed: %s", exc)
            return
        if event is not None:  # None: a malformed-JSON fault message, not an event
            log.debug("-> data %s", event["type"])
            self.sent_events.append(("data", event))

    async def _write_control(self) -> None:
        while True:
            text = await self._control_queue.get()
            try:
                await self._ws.send(text)
            except ConnectionClosed:
                return

    def _send_fault_messages(self, channel: Literal["control", "data"]) -> None:
        """The malformed_json and unknown_events faults, at the moments they apply."""
        faults = self._settings.faults
        if faults.malformed_json:
            log.info("fault malformed_json on the %s channel", channel)
            if channel == "control":
                self._control_queue.put_nowait(events.MALFORMED_JSON)
            else:
                self._send_data(events.MALFORMED_JSON)
        if faults.unknown_events:
            event = events.unknown_event()
            if channel == "control":
                self._send_control(event)
            else:
                self._send_data(event)

    # ----------------------------------------------------------------------------------------------
    # Client events (WebSocket)

    async def _dispatch(self) -> None:
        """Handle client messages one at a time, in order (a slow offer holds back what follows it)."""
        while True:
            message = await self._inbox.get()
            try:
                await self._handle_message(message)
            except Exception:
                log.exception("emulator failed on a client message")
                self._emit(events.error("server_error", "The emulator failed on this event (see its log).", None))

    async def _handle_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self._emit(events.error("invalid_json", "The message is not valid JSON.", None))
            return
        if not isinstance(event, dict):
            self._emit(events.error("invalid_event", "The message is not a JSON object.", None))
            return
        self.client_events.append(event)
        etype = event.get("type")
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        log.debug("<- control %s", etype)
        handler = self._handlers().get(etype) if isinstance(etype, str) else None
        if etype == OUTPUT_CLEAR and self._settings.faults.unknown_output_clear:
            log.info("fault unknown_output_clear: answering %s as an unknown event", etype)
            handler = None
        if handler is None:
            self._emit(events.error("unknown_event", f"Unknown event type {etype!r}.", event_id, param="type"))
            return
        await handler(event, event_id)

    #: The client events the emulator handles, and the method that does. Anything else gets an `error`.
    HANDLERS: ClassVar[dict[str, str]] = {
        "rtc.call.sdp.create": "_on_sdp_create",
        "session.update": "_on_session_update",
        "response.create": "_on_response_create",
        "response.cancel": "_on_response_cancel",
        "conversation.item.create": "_on_item_create",
        "conversation.item.retrieve": "_on_item_retrieve",
        "conversation.item.truncate": "_on_item_truncate",
        "conversation.item.delete": "_on_item_delete",
        "input_audio_buffer.clear": "_on_input_clear",
        "input_audio_buffer.commit": "_on_input_commit",
        OUTPUT_CLEAR: "_on_output_clear",
    }

    def _handlers(self) -> dict[str, Any]:
        return {etype: getattr(self, name) for etype, name in self.HANDLERS.items()}

    def _forbidden(self, session: dict[str, Any]) -> list[str]:
        return sorted(FORBIDDEN_SESSION_KEYS & session.keys())

    def _refuse_unknown_fields(self, session: dict[str, Any], event_id: str | None) -> list[str]:
        """Send the service's `error` for session keys it does not know; returns them (empty: all known)."""
        unknown = unknown_session_fields(session)
        if unknown:
            names = ", ".join(f"session.{k}" for k in unknown)
            log.info("refused unknown session field(s): %s", names)
            self._emit(
                events.error(
                    "invalid_session_field",
                    f"Invalid session: {names}: extra fields not permitted.",
                    event_id,
                    param=f"session.{unknown[0]}",
                )
            )
        return unknown

    async def _on_sdp_create(self, event: Event, event_id: str | None) -> None:
        faults = self._settings.faults
        if self._pc is not None:
            self._emit(events.call_error("invalid_state", "This connection already has a call."))
            return
        session = event.get("session")
        if session is not None and not isinstance(session, dict):
            self._emit(events.call_error("invalid_session", "'session' must be an object."))
            return
        unknown = self._refuse_unknown_fields(session or {}, event_id)
        if unknown:
            # Strict: the session is invalid, so no call is set up either.
            self._emit(
                events.call_error(
                    "invalid_session_field",
                    f"The session has fields that are not permitted: {', '.join(unknown)}.",
                )
            )
            return
        bad = self._forbidden(session or {})
        if bad:
            # The real service fails with "Remote client allocation failed" here.
            self._emit(
                events.call_error(
                    "invalid_session",
                    f"Remote client allocation failed: session key(s) not allowed on /calls: {', '.join(bad)}.",
                )
            )
            return
        offer = event.get("sdp_offer")
        if not isinstance(offer, str) or not offer.strip():
            self._emit(events.call_error("missing_sdp", "SDP offer is required"))
            return
        if faults.never_answer:
            log.info("fault never_answer: the offer stays unanswered")
            return
        if faults.answer_delay_s > 0:
            log.info("fault answer_delay_s: answering in %.1f s", faults.answer_delay_s)
            await asyncio.sleep(faults.answer_delay_s)
        if faults.error_before_answer:
            log.info("fault error_before_answer: an error event before the answer")
            self._emit(
                events.error(
                    "emulated_error_before_answer",
                    "An error before the SDP answer (emulated fault); the answer follows.",
                    event_id,
                    error_type="server_error",
                )
            )
        if faults.call_error:
            log.info("fault call_error: answering with rtc.call.error")
            self._emit(events.call_error(faults.call_error_code, faults.call_error_message, error_type="server_error"))
            return

        pc = RTCPeerConnection(rtc_configuration([]))
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", lambda: self._on_connection_state(pc))
        self._pc = pc
        if self._network is not None and self._network.impaired:
            self._relay = UdpRelay(self._network)
            await self._relay.open()
        try:
            answer = await answer_offer(
                pc,
                offer,
                self._track,
                ice_loopback=self._settings.ice_loopback,
                relay=self._relay,
                fec=self._settings.fec,
            )
        except OfferError as exc:
            log.info("offer refused: %s", exc.message)
            self._pc = None
            await pc.close()
            self._emit(events.call_error(exc.code, exc.message))
            return
        if faults.no_data_channel and pc.sctp is not None:
            # Keep our SCTP end from ever starting: the client's association (and so its data channel)
            # never comes up, while ICE, DTLS and audio do. aiortc starts SCTP itself once DTLS is up,
            # so the fault replaces that one transport's start.
            async def never_start(*_args: Any, **_kwargs: Any) -> None:
                log.info("fault no_data_channel: SCTP not started")

            pc.sctp.start = never_start  # type: ignore[method-assign]
        self._use_fec(pc, offer)
        self.rtc_call_id = new_event_id("rtc")
        if session:
            self._apply_session(session)
            self._emit(events.session_updated(self.effective_session))
        self._emit(events.sdp_created(self.rtc_call_id, answer))
        log.info("call %s answered", self.rtc_call_id)
        self._send_fault_messages("control")
        if faults.oversized_event:
            log.info("fault oversized_event")
            self._send_control(events.oversized_event())
        if faults.close_after_s is not None:
            self._spawn(self._close_later(faults.close_after_s), "close-after")

    async def _on_session_update(self, event: Event, event_id: str | None) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            self._emit(events.error("invalid_session", "'session' must be an object.", event_id, param="session"))
            return
        if self._refuse_unknown_fields(session, event_id):
            return  # the session stays as it was; the call goes on
        bad = self._forbidden(session)
        if bad:
            self._emit(
                events.error(
                    "invalid_session",
                    f"Session key(s) not allowed on /calls: {', '.join(bad)}.",
                    event_id,
                    param=f"session.{bad[0]}",
                )
            )
            return
        self._apply_session(session)
        self._emit(events.session_updated(self.effective_session))

    def _apply_session(self, session: dict[str, Any]) -> None:
        self.session.update(session)
        for key, value in session.items():
            if key == "turn_detection" and isinstance(value, dict):
                base = self.effective_session.get("turn_detection")
                if not isinstance(base, dict):
                    base = events.default_session(None, self._settings.silence_ms, self._settings.prefix_padding_ms)[
                        "turn_detection"
                    ]
                self.effective_session[key] = {**base, **value}
            elif key not in ("id", "object"):
                self.effective_session[key] = value
        td = self._turn_detection()
        if td is not None:
            silence = td.get("silence_duration_ms")
            if isinstance(silence, int) and silence > 0:
                self._vad.silence_ms = silence

    def _turn_detection(self) -> dict[str, Any] | None:
        td = self.effective_session.get("turn_detection")
        return td if isinstance(td, dict) else None

    async def _on_response_create(self, event: Event, event_id: str | None) -> None:
        if self._pc is None:
            self._emit(events.error("invalid_state", "No call yet: send rtc.call.sdp.create first.", event_id))
            return
        if self._active is not None:
            self._emit(
                events.error(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response in progress.",
                    event_id,
                )
            )
            return
        if self._tool_response_refused(event_id):
            return
        answer = await self._tool_answer()
        if answer is not None:
            self._start_response(answer, input_s=0.0)
            return
        input_s = self._utterance_s() if self._settings.reply_mode == "parrot" else 0.0
        self._start_response(self._reply_to_utterance(), input_s=input_s)

    async def _on_response_cancel(self, event: Event, event_id: str | None) -> None:
        """Stops generation only (the audio already generated streams on), as the service does over
        WebRTC; with nothing generating, the service answers with an error and the call goes on."""
        response = self._active
        wanted = event.get("response_id")
        if response is None or (isinstance(wanted, str) and wanted != response.id):
            self._emit(
                events.error(
                    "response_cancel_not_active",
                    "Cancellation failed: no active response found.",
                    event_id,
                    param="response_id" if isinstance(wanted, str) else None,
                )
            )
            return
        if self._settings.output_order == "audio-first":
            self._cancel_response("client_cancelled")
        else:
            self._cancel_generation(response, "client_cancelled")

    async def _on_item_create(self, event: Event, event_id: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            self._emit(events.error("invalid_item", "'item' must be an object.", event_id, param="item"))
            return
        if item.get("type") == "function_call_output" and not self._on_function_output(item, event_id):
            return
        item = {"object": "realtime.item", "status": "completed", **item}
        item.setdefault("id", new_event_id("item"))
        previous = event.get("previous_item_id") or self._last_item_id
        self._last_item_id = item["id"]
        self._items[item["id"]] = item
        self._emit(events.item_created(item, previous))

    async def _on_item_retrieve(self, event: Event, event_id: str | None) -> None:
        item = self._items.get(event.get("item_id"))  # type: ignore[arg-type]
        if item is None:
            self._emit(
                events.error("item_not_found", f"Item {event.get('item_id')!r} not found.", event_id, param="item_id")
            )
            return
        self._emit(events.item_retrieved(item))

    async def _on_item_truncate(self, event: Event, event_id: str | None) -> None:
        self._emit(
            events.item_truncated(event.get("item_id"), event.get("content_index", 0), event.get("audio_end_ms", 0))
        )

    async def _on_item_delete(self, event: Event, event_id: str | None) -> None:
        self._items.pop(event.get("item_id"), None)  # type: ignore[arg-type]
        self._emit(events.item_deleted(event.get("item_id")))

    async def _on_input_clear(self, event: Event, event_id: str | None) -> None:
        self._emit(events.input_cleared())

    async def _on_input_commit(self, event: Event, event_id: str | None) -> None:
        """The input buffer always holds audio here (RTP flows all the time), so a commit makes an item."""
        self._commit(new_event_id("item"))

    def _commit(self, item_id: str) -> None:
        """`input_audio_buffer.committed`: the caller's audio becomes a user message item."""
        self._emit(events.committed(item_id, self._last_item_id))
        self._items[item_id] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._last_item_id = item_id

    async def _on_output_clear(self, event: Event, event_id: str | None) -> None:
        if self._settings.output_order == "audio-first":
            self._cancel_response("client_cancelled")
        else:
            self._clear_output()
