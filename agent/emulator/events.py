"""Server events as the emulator sends them, shaped like Voice Live's (voicelive-webrtc.md, section 4.2).

One function per event, each returning a fresh JSON object with its own `event_id`, so the session logic
reads as a sequence of protocol steps. Which channel an event goes on is decided in `ROUTES`, in one
place, the way the real service splits them (section 1.5).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from ..voicelive import protocol as p
from ..voicelive.protocol import new_event_id

Route = Literal["control", "data", "both"]

#: Where each server event goes. Events on "both" carry the same event_id on both channels, as the
#: real service's duplicates do, so the client's de-duplication is exercised. Every type the emulator
#: sends is listed here (`_event` refuses others), and a test checks the client parses each of them.
ROUTES: dict[str, Route] = {
    p.SessionCreated.TYPE: "control",
    p.SessionUpdated.TYPE: "control",
    p.RtcCallSdpCreated.TYPE: "control",
    p.RtcCallError.TYPE: "control",
    p.Error.TYPE: "control",
    "warning": "control",
    "conversation.item.created": "control",
    "conversation.item.retrieved": "control",
    "conversation.item.truncated": "control",
    "conversation.item.deleted": "control",
    p.SpeechStarted.TYPE: "both",
    p.SpeechStopped.TYPE: "both",
    "input_audio_buffer.committed": "data",
    "input_audio_buffer.cleared": "control",
    p.ResponseCreated.TYPE: "data",
    p.ResponseDone.TYPE: "data",
    p.TranscriptDelta.TYPE: "data",
    p.TranscriptDone.TYPE: "both",
    p.OutputAudioStarted.TYPE: "data",
    p.OutputAudioStopped.TYPE: "data",
    p.OutputAudioCleared.TYPE: "data",
    # tool calls: on the WebSocket (voicelive-webrtc.md §1.5)
    "response.output_item.added": "control",
    "response.output_item.done": "control",
    "response.function_call_arguments.delta": "control",
    "response.function_call_arguments.done": "control",
}

#: The one type sent on purpose that no client knows (the `unknown_events` fault).
UNKNOWN_EVENT_TYPE = "emulator.unknown_event"

DEFAULT_VOICE = {"type": "azure-standard", "name": "en-US-AvaNeural"}

Event = dict[str, Any]


def _event(etype: str, **fields: Any) -> Event:
    if etype not in ROUTES and etype != UNKNOWN_EVENT_TYPE:
        raise ValueError(f"{etype!r} is not an event the emulator sends (add it to events.ROUTES)")
    return {"type": etype, "event_id": new_event_id("event"), **fields}


def default_session(model: str | None, silence_ms: int, prefix_padding_ms: int) -> dict[str, Any]:
    """The session the service starts with, before the client changes anything."""
    return {
        "id": new_event_id("sess"),
        "object": "realtime.session",
        "model": model,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": dict(DEFAULT_VOICE),
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": prefix_padding_ms,
            "silence_duration_ms": silence_ms,
            "create_response": True,
            "interrupt_response": True,
        },
        "input_audio_noise_reduction": None,
        "input_audio_echo_cancellation": None,
        "input_audio_transcription": None,
        "tools": [],
        "tool_choice": "auto",
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "expires_at": int(time.time()) + 3600,
    }


def session_created(session: dict[str, Any]) -> Event:
    return _event(p.SessionCreated.TYPE, session=session)


def session_updated(session: dict[str, Any]) -> Event:
    return _event(p.SessionUpdated.TYPE, session=session)


def sdp_created(rtc_call_id: str, sdp_answer: str) -> Event:
    return _event(p.RtcCallSdpCreated.TYPE, rtc_call_id=rtc_call_id, sdp_answer=sdp_answer)


def call_error(code: str, message: str, *, error_type: str = "invalid_request_error") -> Event:
    return _event(
        p.RtcCallError.TYPE,
        operation="rtc.call.sdp.create",
        error={"type": error_type, "code": code, "message": message},
    )


def error(
    code: str,
    message: str,
    client_event_id: str | None,
    *,
    param: str | None = None,
    error_type: str = "invalid_request_error",
) -> Event:
    return _event(
        p.Error.TYPE,
        error={
            "type": error_type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    )


def item_created(item: dict[str, Any], previous_item_id: str | None) -> Event:
    return _event("conversation.item.created", previous_item_id=previous_item_id, item=item)


def item_retrieved(item: dict[str, Any]) -> Event:
    return _event("conversation.item.retrieved", item=item)


def item_truncated(item_id: Any, content_index: Any, audio_end_ms: Any) -> Event:
    return _event(
        "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
    )


def item_deleted(item_id: Any) -> Event:
    return _event("conversation.item.deleted", item_id=item_id)


def input_cleared() -> Event:
    return _event("input_audio_buffer.cleared")


def speech_started(audio_start_ms: int, item_id: str) -> Event:
    return _event(p.SpeechStarted.TYPE, audio_start_ms=audio_start_ms, item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> Event:
    return _event(p.SpeechStopped.TYPE, audio_end_ms=audio_end_ms, item_id=item_id)


def committed(item_id: str, previous_item_id: str | None) -> Event:
    return _event("input_audio_buffer.committed", previous_item_id=previous_item_id, item_id=item_id)


def response_object(response_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": [],
        "usage": None,
        **extra,
    }


def response_created(response_id: str) -> Event:
    return _event(p.ResponseCreated.TYPE, response=response_object(response_id, "in_progress"))


def response_done(
    response_id: str,
    status: Literal["completed", "cancelled"],
    usage: dict[str, Any],
    reason: str | None = None,
    output: list[dict[str, Any]] | None = None,
) -> Event:
    details = {"type": status, "reason": reason} if status == "cancelled" else None
    extra: dict[str, Any] = {"output": output} if output else {}
    return _event(
        p.ResponseDone.TYPE,
        response=response_object(response_id, status, status_details=details, usage=usage, **extra),
    )


def function_call_events(response_id: str, item: dict[str, Any]) -> list[Event]:
    """The tool events of one function call item, in the service's order."""
    common = {"response_id": response_id, "item_id": item["id"], "output_index": item["output_index"]}
    added = {**item, "status": "in_progress", "arguments": ""}
    return [
        _event("response.output_item.added", response_id=response_id, output_index=item["output_index"], item=added),
        _event("response.function_call_arguments.delta", **common, call_id=item["call_id"], delta=item["arguments"]),
        _event("response.function_call_arguments.done", **common, call_id=item["call_id"], name=item["name"],
               arguments=item["arguments"]),
        _event("response.output_item.done", response_id=response_id, output_index=item["output_index"], item=item),
    ]  # fmt: skip


def transcript_delta(response_id: str, item_id: str, delta: str) -> Event:
    return _event(
        p.TranscriptDelta.TYPE,
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        delta=delta,
    )


def transcript_done(response_id: str, item_id: str, transcript: str) -> Event:
    return _event(
        p.TranscriptDone.TYPE,
        response_id=response_id,
        item_id=item_id,
        output_index=0,
        content_index=0,
        transcript=transcript,
    )


def output_started(response_id: str) -> Event:
    return _event(p.OutputAudioStarted.TYPE, response_id=response_id)


def output_stopped(response_id: str) -> Event:
    return _event(p.OutputAudioStopped.TYPE, response_id=response_id)


def output_cleared(response_id: str) -> Event:
    return _event(p.OutputAudioCleared.TYPE, response_id=response_id)


def unknown_event() -> Event:
    """An event of a type no client knows, for the `unknown_events` fault."""
    return _event(UNKNOWN_EVENT_TYPE, note="a type the client has never heard of")


MALFORMED_JSON = '{"type": "session.updated", "event_id": "event_broken", "session": {'


def oversized_event(size: int = 1024 * 1024 + 1024) -> Event:
    """A valid event larger than 1 MiB, for the `oversized_event` fault."""
    return _event("warning", warning={"message": "x" * size, "code": "emulator_oversized"})
