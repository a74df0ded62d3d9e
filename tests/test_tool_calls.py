"""Tool turns end to end: the emulated model calls the device's tools over a real call (the whole agent on
real ALSA devices and mock pins), and the emulator holds a client to the protocol."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.demo import run_demo
from agent.emulator import Emulator, EmulatorSettings
from agent.emulator.toolscript import ToolStep, parse_tool_script
from agent.voicelive import protocol
from agent.voicelive.auth import Secret
from tests.harness import agent_config, run_agent
from tests.speech import espeak
from tests.test_emulator import KEY, SPEECH, connect, silence  # noqa: F401 (connect: a fixture)


async def test_demo_tool_set_timer_rings_and_a_press_silences_it(tmp_path: Path, capsys: Any) -> None:
    """`voice-agent demo --tool set_timer --json`: a 2 s timer set in the call rings after it, with its
    LED pattern, and a press of the button silences it."""
    assert await run_demo(tmp_path / "out", as_json=True, tool="set_timer") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"]
    (call,) = summary["tool_calls"]
    assert call["name"] == "set_timer" and call["ok"] and call["call_id"].startswith("call_")
    assert summary["timer_rang_s"] == pytest.approx(2.0, abs=0.3)
    assert summary["timer_silenced_by_press"]
    assert "timer" in summary["led_states"]
    states = summary["led_states"]
    assert states.index("thinking") < states.index("speaking")  # thinking while the tool ran, then the answer
    assert "set timer returned" in summary["transcripts"][0]


@pytest.mark.parametrize(("duplicate", "events_first"), [(True, False), (False, True)])
async def test_a_tool_turn_over_a_real_call(tmp_path: Path, duplicate: bool, events_first: bool) -> None:
    """The model calls two tools in one response (the events on both channels, or before response.done):
    each runs once, is answered, and the model is asked once to speak; the emulator refused nothing."""
    script = (ToolStep(1, "get_time"), ToolStep(1, "set_volume", {"level": 30}))
    settings = EmulatorSettings(api_key=Secret("canary-harness-93c1d0e8a7"), ice_loopback=True, tool_script=script,
                                tool_duplicate=duplicate, tool_events_first=events_first)  # fmt: skip
    emu = Emulator(settings)
    await emu.start()
    try:
        config = agent_config(tmp_path, emu, followup_s=1.0)
        config = config.__class__(**{**config.__dict__, "tools": config.tools.__class__(state_dir=tmp_path / "s")})
        speech = np.concatenate([np.zeros(16000, np.int16), espeak("hey jarvis"), np.zeros(3200, np.int16),
                                 espeak("what time is it and turn it down")])  # fmt: skip
        agent = await run_agent(tmp_path, emu, speech, config=config, timeout=40)
        call = emu.calls[0]
    finally:
        await emu.stop()
    result = agent.results[-1]
    assert [(c["name"], c["ok"]) for c in result.tool_calls] == [("get_time", True), ("set_volume", True)]
    (_, call_ids) = call.tool_calls_sent[0]
    assert sorted(c for c, _ in call.tool_outputs) == sorted(call_ids)  # one answer per call, no more
    assert [e["type"] for ch, e in call.sent_events if e["type"] == "error"] == []
    creates = [e for e in call.client_events if e.get("type") == "response.create"]
    assert len(creates) == 1
    assert json.loads(dict(call.tool_outputs)[call_ids[1]]) == {"volume": 30, "was": 100}
    assert agent.playback.volume == pytest.approx(0.3)
    assert result.responses == ["completed", "completed"] and "returned" in result.transcripts[-1]
    # the session declared the device's tools
    declared = {t["name"] for t in call.effective_session["tools"]}
    assert {"set_timer", "set_volume", "get_time", "end_conversation", "mute_microphone"} <= declared


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """The emulator the raw client (`connect`, from tests.test_emulator) talks to: one with a tool script."""
    em = Emulator(EmulatorSettings(api_key=Secret(KEY), tool_script=(ToolStep(1, "get_time"),)))
    await em.start()
    try:
        yield em
    finally:
        await em.stop()


async def test_the_emulator_routes_tool_calls_and_holds_the_client_to_the_protocol(
    connect: Any, emulator: Emulator  # noqa: F811 (the imported fixture)
) -> None:
    client = await connect()
    client.mic.play(np.concatenate([silence(0.3), SPEECH, silence(1.0)]))
    await client.call({"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}})
    args_done = await client.wait_for("response.function_call_arguments.done", timeout=15)
    call_id = args_done["call_id"]
    # the strict order: response.done (with the call in its output) on the data channel first, the tool
    # events on the WebSocket, none of them on the data channel
    done = await client.wait_for("response.done", channel="data")
    assert done["response"]["output"][0]["call_id"] == call_id
    assert client.events("response.function_call_arguments.done", "data") == []
    sent = [(ch, e["type"]) for ch, e in emulator.calls[0].sent_events]
    assert sent.index(("data", "response.done")) < sent.index(("control", "response.function_call_arguments.done"))
    assert args_done["name"] == "get_time"
    # response.create before the output, and an output for a call it never made: refused
    await client.send(protocol.response_create())
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "function_call_output_missing"
    item = {"type": "function_call_output", "call_id": "call_never_issued", "output": "{}"}
    await client.send(protocol.conversation_item_create(item))
    errors = [e for e in client.events("error") if e["error"]["code"] == "invalid_call_id"]
    for _ in range(50):
        if errors:
            break
        await client.wait_for("error", channel="control")
        errors = [e for e in client.events("error") if e["error"]["code"] == "invalid_call_id"]
    assert errors
    # answered properly: a spoken answer that says what the tool returned
    await client.send(protocol.conversation_item_create({**item, "call_id": call_id, "output": '{"time": "09:41"}'}))
    await client.send(protocol.response_create())
    spoken = await client.wait_for("response.audio_transcript.done", timeout=15)
    assert "get time returned time 09:41" in spoken["transcript"]


def test_a_tool_script_file_is_checked() -> None:
    assert parse_tool_script([{"after_turn": 2, "name": "set_timer", "arguments": {"minutes": 1}}]) == (
        ToolStep(2, "set_timer", {"minutes": 1}),
    )
    with pytest.raises(ValueError, match="after_turn is a turn number"):
        parse_tool_script([{"name": "x", "after_turn": 0}])
