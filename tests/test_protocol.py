"""Event parsing, typing and de-duplication; client event shapes; the call URL."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.voicelive import protocol
from agent.voicelive.control import Target
from agent.voicelive.errors import PermanentError


def test_typed_events() -> None:
    parser = protocol.EventParser()
    ev = parser.parse(
        json.dumps({"type": "input_audio_buffer.speech_started", "event_id": "e1", "audio_start_ms": 120}), "data"
    )
    assert isinstance(ev, protocol.SpeechStarted)
    assert (ev.audio_start_ms, ev.channel, ev.event_id) == (120, "data", "e1")
    done = parser.parse(
        json.dumps({"type": "response.done", "response": {"id": "r1", "status": "cancelled", "usage": {"x": 1}}}),
        "data",
    )
    assert isinstance(done, protocol.ResponseDone)
    assert (done.response_id, done.status, done.usage) == ("r1", "cancelled", {"x": 1})
    err = parser.parse(
        json.dumps({"type": "rtc.call.error", "error": {"type": "invalid_request_error", "code": "missing_sdp",
                                                        "message": "SDP offer is required"}}),
        "control",
    )
    assert isinstance(err, protocol.RtcCallError)
    assert str(err.error) == "invalid_request_error/missing_sdp: SDP offer is required"


def test_wrongly_typed_fields_are_tolerated() -> None:
    ev = protocol.EventParser().parse(
        json.dumps({"type": "input_audio_buffer.speech_started", "event_id": 5, "audio_start_ms": "x"}), "data"
    )
    assert isinstance(ev, protocol.SpeechStarted)
    assert ev.audio_start_ms is None and ev.event_id is None


@pytest.mark.parametrize(
    "raw",
    [b"{not json", "[]", '"a string"', "{}", '{"type": 3}', '{"type": ""}', b"\xff\xfe", "null"],
)
def test_malformed_messages_are_skipped_and_logged(raw: str | bytes, caplog: pytest.LogCaptureFixture) -> None:
    parser = protocol.EventParser()
    with caplog.at_level(logging.WARNING):
        assert parser.parse(raw, "data") is None
    assert parser.skipped == 1
    assert "skipped" in caplog.text


def test_oversized_message_is_skipped_unread() -> None:
    parser = protocol.EventParser(max_bytes=100)
    assert parser.parse(json.dumps({"type": "x", "pad": "a" * 200}), "control") is None
    assert parser.skipped == 1


def test_unknown_type_logged_once_and_passed_on(caplog: pytest.LogCaptureFixture) -> None:
    parser = protocol.EventParser()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            ev = parser.parse('{"type": "brand.new.event", "event_id": "z"}', "data")
            assert ev is not None and type(ev) is protocol.ServerEvent and ev.type == "brand.new.event"
        parser.parse('{"type": "rate_limits.updated"}', "data")
    assert caplog.text.count("brand.new.event") == 1
    assert "rate_limits.updated" not in caplog.text


def test_deduper_drops_the_second_copy_only() -> None:
    parser = protocol.EventParser()
    dedup = protocol.EventDeduper(capacity=2)
    raw = '{"type": "input_audio_buffer.speech_stopped", "event_id": "same"}'
    assert dedup.first_time(parser.parse(raw, "data"))
    assert not dedup.first_time(parser.parse(raw, "control"))
    no_id = parser.parse('{"type": "session.updated"}', "control")
    assert dedup.first_time(no_id) and dedup.first_time(no_id)
    # capacity bounds memory: old ids are forgotten
    for i in range(3):
        dedup.first_time(parser.parse(json.dumps({"type": "t", "event_id": f"n{i}"}), "data"))
    assert dedup.first_time(parser.parse(raw, "data"))
    assert dedup.duplicates == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_bytes_never_raise(raw: bytes | str) -> None:
    protocol.EventParser().parse(raw, "data")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([*sorted(protocol.EVENT_TYPES), "x.y"]),
    st.dictionaries(
        st.sampled_from(["event_id", "response", "error", "session", "audio_start_ms", "delta", "transcript",
                         "sdp_answer", "rtc_call_id", "response_id", "item_id"]),
        json_values,
    ),
)
def test_any_json_event_shape_never_raises(etype: str, fields: dict) -> None:
    ev = protocol.EventParser().parse(json.dumps({**fields, "type": etype}), "control")
    assert ev is not None and ev.type == etype
    protocol.EventDeduper().first_time(ev)


def test_client_events() -> None:
    offer = protocol.sdp_create("v=0\r\n", {"instructions": "hi"})
    assert offer["type"] == "rtc.call.sdp.create" and offer["sdp_offer"] == "v=0\r\n"
    assert offer["session"] == {"instructions": "hi"} and offer["event_id"].startswith("evt_")
    assert "session" not in protocol.sdp_create("v=0\r\n", None)
    with pytest.raises(ValueError, match="model"):
        protocol.sdp_create("v=0", {"model": "gpt-realtime"})
    with pytest.raises(ValueError, match="input_audio_format"):
        protocol.session_update({"input_audio_format": "pcm16"})
    cancel = protocol.response_cancel("r1")
    assert (cancel["type"], cancel["response_id"]) == ("response.cancel", "r1")
    assert "response_id" not in protocol.response_cancel()
    item = protocol.conversation_item_create({"type": "function_call_output", "call_id": "c", "output": "{}"})
    assert item["item"]["call_id"] == "c"


@pytest.mark.parametrize(
    ("target", "url"),
    [
        (
            Target("wss://res.services.ai.azure.com", "2026-01-01-preview", model="gpt-realtime"),
            "wss://res.services.ai.azure.com/voice-live/realtime/calls?api-version=2026-01-01-preview&model=gpt-realtime",
        ),
        (
            Target("https://res.services.ai.azure.com/", "v", model="m"),
            "wss://res.services.ai.azure.com/voice-live/realtime/calls?api-version=v&model=m",
        ),
        (
            Target("https://r.services.ai.azure.com", "v", agent_name="a b", agent_project_name="p", agent_version="2"),
            "wss://r.services.ai.azure.com/voice-live/realtime/calls?api-version=v&agent-name=a+b"
            "&agent-project-name=p&agent-version=2",
        ),
        (Target("ws://127.0.0.1:8765", "v", model="m"), "ws://127.0.0.1:8765/voice-live/realtime/calls?api-version=v&model=m"),
    ],
)
def test_call_url(target: Target, url: str) -> None:
    assert target.url() == url


def test_clear_text_websocket_only_to_loopback() -> None:
    with pytest.raises(PermanentError, match="loopback"):
        Target("ws://example.com", "v", model="m").url()
