"""The agent as a whole (capture, wake word, call, playback, LEDs) against the emulator: it always comes
back to idle, and a refused key shows the auth pattern without a retry storm."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.state import State
from agent.voicelive.auth import Secret
from agent.wake.listener import Trigger

from .harness import KEY, run_agent
from .speech import brown_noise, espeak

pytestmark = pytest.mark.timeout(90)


def wake_then_command() -> np.ndarray:
    parts = [brown_noise(1.0), espeak("hey jarvis"), brown_noise(0.7, seed=2), espeak("turn on the lights")]
    return np.concatenate([*parts, brown_noise(1.0)])


async def test_conversation_returns_to_idle_and_mic_audio_arrives_whole(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        agent = await run_agent(tmp_path, emu, wake_then_command(), followup_s=1.0)
        result = agent.results[0]
        assert result.ok and result.responses == ["completed"], result
        assert result.end_reason == "follow-up window passed"
        assert agent.state is State.IDLE
        assert agent.leds.history[-1] == "idle"
        # what the RGB LED's pins (gpiozero mock pins 5, 6, 13: red, green, blue) actually did: off, then
        # the blue of wake/connecting/listening, the cyan of the user speaking, the green of the assistant
        # speaking, and off again at the end
        from gpiozero import Device

        factory = Device.pin_factory
        red, green, blue = ([st.state for st in factory.pin(n).states] for n in (5, 6, 13))
        assert max(blue) == pytest.approx(1.0) and blue[-1] == 0  # listening is blue, idle is dark
        assert max(green) == pytest.approx(1.0)  # cyan (user speaking) and green (assistant speaking)
        assert max(red) < 0.7  # no error colour in a good conversation
        assert red[-1] == green[-1] == blue[-1] == 0
        # the command said after the wake word reached the emulator as one utterance of about its length
        started = emu.calls[0].events_of("input_audio_buffer.speech_started")
        stopped = emu.calls[0].events_of("input_audio_buffer.speech_stopped")
        assert len(started) == 2 and len(stopped) == 2  # each sent on both channels
        spoken_ms = stopped[0][1]["audio_end_ms"] - started[0][1]["audio_start_ms"]
        command_ms = len(espeak("turn on the lights")) / 16
        assert abs(spoken_ms - command_ms) < 250, (spoken_ms, command_ms)
    assert KEY not in caplog.text


async def test_refused_key_shows_auth_error_then_idle(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        emu.faults.refuse_auth = True
        agent = await run_agent(tmp_path, emu, wake_then_command(), backoff_initial_s=0.2, backoff_max_s=1.0)
        result = agent.results[0]
        assert not result.ok and result.error_kind == "auth"
        assert "HTTP 401" in (result.error or "")
        assert len(emu.calls) == 0  # refused at the upgrade: no call was set up
        # back to idle, but blocked: the auth pattern stays and wake words are ignored ...
        assert agent.state is State.IDLE and agent.blocked == "auth"
        assert agent.leds.history[-1] == "auth_error"
        assert not agent.trigger(Trigger("wake:hey_jarvis", 0.0, 0.0, 0.9))
        # ... until the button is held (or the configuration reloaded)
        assert agent.hold() == "retry"
        assert agent.blocked is None and agent.leds.history[-1] == "idle"
    assert KEY not in caplog.text


async def test_only_listening_wakes_the_event_loop_once(tmp_path: Path) -> None:
    """While the device only listens, capture blocks go from the capture thread to the pre-roll ring and
    the wake word's thread directly: the event loop gets the first block (systemd's READY waits for it)
    and no other, so it sleeps instead of waking 50 times a second. The wake word still fires, and the
    call then gets its blocks on the loop."""
    import asyncio

    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from agent.agent import Agent
    from agent.audio.fileplugin import FifoFeeder
    from agent.voicelive.auth import ApiKey

    from .harness import agent_config

    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        config = agent_config(tmp_path, emu, followup_s=1.5)
        feeder = FifoFeeder(tmp_path / "mic.fifo", brown_noise(3.0), rate=16000, period_frames=320, then="silence")
        feeder.start()
        if isinstance(Device.pin_factory, MockFactory):
            Device.pin_factory.reset()
        agent = Agent(config, ApiKey(Secret(KEY)))
        try:
            await agent.start()
            await asyncio.sleep(2.5)
            idle = agent.capture.stats
            assert idle.blocks >= 100 and idle.to_loop == 1, idle
            assert (agent.preroll.since(0.0) and agent.preroll.last_seq == idle.blocks) or idle.blocks - 1
            feeder.feed(wake_then_command())
            result = await asyncio.wait_for(agent.run(max_conversations=1), 30)
        finally:
            await agent.stop()
            feeder.stop()
    assert result[0].ok, result[0]
    assert agent.capture.stats.to_loop > 50  # the call's blocks went through the loop


async def test_no_follow_up_window_still_answers_the_first_turn(tmp_path: Path) -> None:
    """`followup_s: 0` turns follow-ups off; the command said after the wake word must still be heard
    and answered (the service needs some speech before it says so: the first turn has its own
    window, `first_turn_s`), and the call ends as soon as the reply has played."""
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        agent = await run_agent(tmp_path, emu, wake_then_command(), followup_s=0.0)
    result = agent.results[0]
    assert result.ok and result.responses == ["completed"] and result.replies_heard == 1, result
    assert result.end_reason == "follow-up window passed"
    assert result.t_reply_ends and agent.state is State.IDLE
