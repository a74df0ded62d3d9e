"""Voice Live WebRTC event shapes: parsing, typing and de-duplication.

Both sides of the protocol use this module: the client (`agent.voicelive.call`) and the local emulator
(`agent.emulator`). Events reach the client on two channels (the WebSocket control channel and the
`voice-live-events` data channel), some on both, so every parsed event remembers its channel and the
client de-duplicates by `event_id` (see shared/voicelive-webrtc.md, section 1.5).

Parsing never raises: a malformed message is logged and skipped, an unknown type is logged once and
passed on as a plain `ServerEvent`, so a server that grows new events never breaks a device in the field.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

log = logging.getLogger(__name__)

Channel = Literal["control", "data"]

DATA_CHANNEL_LABEL = "voice-live-events"
CALLS_PATH = "/voice-live/realtime/calls"
DEFAULT_API_VERSION = "2026-01-01-preview"

#: A server message larger than this is skipped unread. Voice Live's own events are small (the largest,
#: an SDP answer, is a few kB); 1 MiB leaves room for long transcripts while keeping a broken or hostile
#: peer from making the device parse megabytes of JSON.
MAX_EVENT_BYTES = 1024 * 1024

#: Session keys the `/calls` endpoint must never receive: they make the service fail to allocate the RTP
#: media client (shared/voicelive-webrtc.md, section 1.7). Audio is Opus over RTP, so they do not apply.
FORBIDDEN_SESSION_KEYS = frozenset({"model", "input_audio_format", "input_audio_sampling_rate"})


def new_event_id(prefix: str = "evt") -> str:
    """A fresh event id in the service's style (`evt_` and 24 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


# --------------------------------------------------------------------------------------------------
# Server events


@dataclass(frozen=True)
class ServerEvent:
    """One event from the service, as received. `data` is the whole JSON object, for fields the typed
    subclasses do not name."""

    type: str
    event_id: str | None
    channel: Channel
    data: dict[str, Any] = field(repr=False, compare=False)

    TYPE: ClassVar[str] = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Extra typed fields of a subclass, read leniently from `data`."""
        return {}

    def str_field(self, name: str) -> str | None:
        value = self.data.get(name)
        return value if isinstance(value, str) else None


def _str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _int(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class SessionCreated(ServerEvent):
    TYPE: ClassVar[str] = "session.created"
    session_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"session_id": _str(_dict(data, "session"), "id")}


@dataclass(frozen=True)
class SessionUpdated(ServerEvent):
    TYPE: ClassVar[str] = "session.updated"


@dataclass(frozen=True)
class RtcCallSdpCreated(ServerEvent):
    TYPE: ClassVar[str] = "rtc.call.sdp.created"
    rtc_call_id: str | None = None
    sdp_answer: str | None = field(default=None, repr=False)

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"rtc_call_id": _str(data, "rtc_call_id"), "sdp_answer": _str(data, "sdp_answer")}


@dataclass(frozen=True)
class ErrorDetails:
    type: str | None
    code: str | None
    message: str | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> ErrorDetails:
        err = _dict(data, "error")
        return cls(type=_str(err, "type"), code=_str(err, "code"), message=_str(err, "message"))

    def __str__(self) -> str:
        parts = [p for p in (self.type, self.code) if p]
        head = "/".join(parts) if parts else "error"
        return f"{head}: {self.message or 'no message'}"


@dataclass(frozen=True)
class RtcCallError(ServerEvent):
    TYPE: ClassVar[str] = "rtc.call.error"
    error: ErrorDetails = ErrorDetails(None, None, None)
    operation: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"error": ErrorDetails.of(data), "operation": _str(data, "operation")}


@dataclass(frozen=True)
class Error(ServerEvent):
    TYPE: ClassVar[str] = "error"
    error: ErrorDetails = ErrorDetails(None, None, None)

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"error": ErrorDetails.of(data)}


@dataclass(frozen=True)
class SpeechStarted(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int | None = None
    item_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"audio_start_ms": _int(data, "audio_start_ms"), "item_id": _str(data, "item_id")}


@dataclass(frozen=True)
class SpeechStopped(ServerEvent):
    TYPE: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int | None = None
    item_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"audio_end_ms": _int(data, "audio_end_ms"), "item_id": _str(data, "item_id")}


@dataclass(frozen=True)
class ResponseCreated(ServerEvent):
    TYPE: ClassVar[str] = "response.created"
    response_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"response_id": _str(_dict(data, "response"), "id")}


@dataclass(frozen=True)
class ResponseDone(ServerEvent):
    TYPE: ClassVar[str] = "response.done"
    response_id: str | None = None
    status: str | None = None
    usage: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        response = _dict(data, "response")
        return {
            "response_id": _str(response, "id"),
            "status": _str(response, "status"),
            "usage": _dict(response, "usage"),
        }


@dataclass(frozen=True)
class OutputAudioStarted(ServerEvent):
    TYPE: ClassVar[str] = "output_audio_buffer.started"
    response_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"response_id": _str(data, "response_id")}


@dataclass(frozen=True)
class OutputAudioStopped(ServerEvent):
    TYPE: ClassVar[str] = "output_audio_buffer.stopped"
    response_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"response_id": _str(data, "response_id")}


@dataclass(frozen=True)
class OutputAudioCleared(ServerEvent):
    """The service dropped what was left of a response's audio: after `output_audio_buffer.clear`, or by
    itself when the user spoke over the reply (server VAD with `interrupt_response`)."""

    TYPE: ClassVar[str] = "output_audio_buffer.cleared"
    response_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"response_id": _str(data, "response_id")}


@dataclass(frozen=True)
class TranscriptDelta(ServerEvent):
    TYPE: ClassVar[str] = "response.audio_transcript.delta"
    delta: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"delta": _str(data, "delta") or ""}


@dataclass(frozen=True)
class TranscriptDone(ServerEvent):
    TYPE: ClassVar[str] = "response.audio_transcript.done"
    transcript: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"transcript": _str(data, "transcript") or ""}


@dataclass(frozen=True)
class InputTranscriptCompleted(ServerEvent):
    TYPE: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    transcript: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {"transcript": _str(data, "transcript") or ""}


EVENT_TYPES: dict[str, type[ServerEvent]] = {
    cls.TYPE: cls
    for cls in (
        SessionCreated,
        SessionUpdated,
        RtcCallSdpCreated,
        RtcCallError,
        Error,
        SpeechStarted,
        SpeechStopped,
        ResponseCreated,
        ResponseDone,
        OutputAudioStarted,
        OutputAudioStopped,
        OutputAudioCleared,
        TranscriptDelta,
        TranscriptDone,
        InputTranscriptCompleted,
    )
}

#: Types the protocol reference lists that the agent passes on without a class of its own; they are not
#: "unknown" and are not logged as such.
KNOWN_UNTYPED = frozenset(
    {
        "warning",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "conversation.item.created",
        "conversation.item.retrieved",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.failed",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.text.delta",
        "response.text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "rate_limits.updated",
    }
)


class EventParser:
    """Turns raw channel messages into `ServerEvent`s without ever raising.

    Holds the set of unknown types already reported, so each is logged once per parser (one parser per
    call), not once per message.
    """

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self._unknown_seen: set[str] = set()
        self.skipped = 0

    def parse(self, raw: str | bytes, channel: Channel) -> ServerEvent | None:
        """Parse one message; None (after a log line) if it is not a usable event."""
        size = len(raw)
        if size > self.max_bytes:
            self.skipped += 1
            log.warning("skipped an oversized %s message (%d bytes > %d)", channel, size, self.max_bytes)
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            self.skipped += 1
            log.warning("skipped a malformed %s message (%s): %.80r", channel, exc, raw)
            return None
        if not isinstance(data, dict):
            self.skipped += 1
            log.warning("skipped a %s message that is not a JSON object: %.80r", channel, raw)
            return None
        etype = data.get("type")
        if not isinstance(etype, str) or not etype:
            self.skipped += 1
            log.warning("skipped a %s message without a string 'type': %.80r", channel, raw)
            return None
        event_id = data.get("event_id")
        if not isinstance(event_id, str):
            event_id = None
        cls = EVENT_TYPES.get(etype, ServerEvent)
        if cls is ServerEvent and etype not in KNOWN_UNTYPED and etype not in self._unknown_seen:
            self._unknown_seen.add(etype)
            log.info("unknown event type %r on the %s channel (passed on; logged once)", etype, channel)
        return cls(type=etype, event_id=event_id, channel=channel, data=data, **cls._fields(data))


class EventDeduper:
    """Remembers the last `capacity` event ids, so an event that arrives on both channels is handled
    once. Events without an id are never treated as duplicates."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, event: ServerEvent) -> bool:
        if event.event_id is None:
            return True
        if event.event_id in self._seen:
            self._seen.move_to_end(event.event_id)
            self.duplicates += 1
            return False
        self._seen[event.event_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True


# --------------------------------------------------------------------------------------------------
# Client events (all sent on the WebSocket control channel; see voicelive-webrtc.md section 1.6)


def _client_event(etype: str, **fields: Any) -> dict[str, Any]:
    return {"type": etype, "event_id": new_event_id(), **fields}


def check_session(session: dict[str, Any]) -> dict[str, Any]:
    """Reject session keys that break `/calls` media allocation. Config validation reports them to the
    user first; this is the last guard before anything goes on the wire."""
    bad = sorted(FORBIDDEN_SESSION_KEYS & session.keys())
    if bad:
        raise ValueError(f"session keys not allowed on /calls: {', '.join(bad)}")
    return session


def sdp_create(sdp_offer: str, session: dict[str, Any] | None) -> dict[str, Any]:
    event = _client_event("rtc.call.sdp.create", sdp_offer=sdp_offer)
    if session:
        event["session"] = check_session(dict(session))
    return event


def session_update(session: dict[str, Any]) -> dict[str, Any]:
    return _client_event("session.update", session=check_session(dict(session)))


def response_create(response: dict[str, Any] | None = None) -> dict[str, Any]:
    return _client_event("response.create", **({"response": response} if response else {}))


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    return _client_event("response.cancel", **({"response_id": response_id} if response_id else {}))


def output_audio_buffer_clear() -> dict[str, Any]:
    """Cut off the audio of the response that is streaming (WebRTC only): `response.cancel` stops
    generation, this stops what was already generated from streaming on."""
    return _client_event("output_audio_buffer.clear")


def conversation_item_create(item: dict[str, Any], previous_item_id: str | None = None) -> dict[str, Any]:
    extra = {"previous_item_id": previous_item_id} if previous_item_id else {}
    return _client_event("conversation.item.create", item=item, **extra)


CLIENT_EVENT_TYPES = frozenset(
    {
        "rtc.call.sdp.create",
        "session.update",
        "response.create",
        "response.cancel",
        "conversation.item.create",
        "conversation.item.truncate",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
        "output_audio_buffer.clear",
    }
)
