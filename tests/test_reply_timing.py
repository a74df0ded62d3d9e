"""The reply's real timing end to end: a 20 s reply with pauses between its sentences, generated in 1 s
and streamed in real time after `response.done` (the WebRTC order), against the emulator in each order it
can send the events in. The whole reply must reach the speaker, the LEDs must show "speaking" until its
last sample plays, the follow-up window must open only then, and a press must stop it for good.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from agent.audio.frames import audible_ms
from agent.demo import read_wav_mono16k
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings, OutputOrder
from agent.observe import Observer
from agent.reply import ReplyLimits
from agent.state import Snapshot, State
from agent.voicelive.auth import Secret

from .harness import KEY, Rig, agent_config, run_agent, wait_for_state
from .speech import PausingReply, espeak, long_reply, quiet

pytestmark = pytest.mark.timeout(120)

FOLLOWUP_S = 2.0


class Timeline(Observer):
    def __init__(self) -> None:
        self.states: list[tuple[float, State]] = []

    def state_changed(self, old: Snapshot, new: Snapshot) -> None:
        if new.state is not old.state:
            self.states.append((time.monotonic(), new.state))

    def entered(self, state: State) -> list[float]:
        return [t for t, s in self.states if s is state]

    def left(self, state: State) -> list[float]:
        return [t for (_, a), (t, _b) in zip(self.states, self.states[1:], strict=False) if a is state]


def setup(tmp_path: Path, order: OutputOrder, reply: PausingReply, generation_s: float) -> Emulator:
    settings = EmulatorSettings(
        api_key=Secret(KEY),
        ice_loopback=True,
        reply_mode="file",
        reply_wav=reply.write(tmp_path / "service-reply.wav"),
        output_order=order,
        generation_s=generation_s,
    )
    return Emulator(settings)


def quiet_config(tmp_path: Path, emu: Emulator):  # type: ignore[no-untyped-def]
    config = agent_config(tmp_path, emu, followup_s=FOLLOWUP_S)
    earcons = dataclasses.replace(config.audio.earcons, wake=None, connected=None, goodbye=None, error=None)
    return dataclasses.replace(config, audio=dataclasses.replace(config.audio, earcons=earcons))


def question() -> np.ndarray:
    return np.concatenate([quiet(1.0), espeak("hey jarvis"), quiet(0.5, seed=1), espeak("read me the news")])


@pytest.fixture(scope="module")
def news() -> PausingReply:
    return long_reply(20.0)


@pytest.mark.parametrize("order", ["webrtc", "no-buffer-events"])
async def test_a_long_reply_plays_whole_and_the_window_opens_after_it(
    tmp_path: Path, order: OutputOrder, news: PausingReply
) -> None:
    timeline = Timeline()
    async with setup(tmp_path, order, news, generation_s=1.0) as emu:
        config = quiet_config(tmp_path, emu)
        agent = await run_agent(tmp_path, emu, question(), config=config, observer=timeline, timeout=70)
        events = [e["type"] for _, e in emu.calls[0].sent_events]
    result = agent.results[0]
    assert result.ok and result.end_reason == "follow-up window passed", result
    if order == "webrtc":  # generation ended long before the audio did
        assert events.index("response.done") < events.index("output_audio_buffer.stopped")
    # all of the reply reached the speaker (Opus may blur a frame or two at each sentence's edges)
    played = read_wav_mono16k(tmp_path / "reply.wav")
    reply_cut_ms = audible_ms(news.samples, 16000) - audible_ms(played, 16000)
    assert reply_cut_ms <= 200, f"{reply_cut_ms:.0f} ms of the reply never played"
    # "speaking" from its first sound to its last, through every pause, then "listening"
    last_sound = max(agent.playback.audible_writes)
    assert len(timeline.entered(State.SPEAKING)) == 1, timeline.states
    (spoke_until,) = timeline.left(State.SPEAKING)
    # without output-buffer events the end is known only after a quiet longer than any pause (1 s)
    slack = 0.5 if order == "webrtc" else ReplyLimits().quiet_end_s + 0.5
    assert last_sound <= spoke_until <= last_sound + slack, (spoke_until - last_sound)
    assert spoke_until - timeline.entered(State.SPEAKING)[0] >= news.duration_s - 0.5
    assert dict((s, t) for t, s in timeline.states)[State.IDLE] >= spoke_until + FOLLOWUP_S - 0.1


@pytest.mark.parametrize("order", ["webrtc", "audio-first", "no-buffer-events"])
async def test_a_press_stops_the_reply_for_good_and_the_conversation_goes_on(
    tmp_path: Path, order: OutputOrder, news: PausingReply
) -> None:
    seen: dict[str, object] = {}

    async def during(rig: Rig) -> None:
        await wait_for_state(rig.agent, "speaking", 30)
        await asyncio.sleep(1.0)
        seen["t"] = time.monotonic()
        seen["press"] = await rig.agent.press()
        seen["state"] = rig.agent.state

    async with setup(tmp_path, order, news, generation_s=3.0) as emu:
        config = quiet_config(tmp_path, emu)
        agent = await run_agent(tmp_path, emu, question(), during, config=config, timeout=60)
        sent = [e.get("type") for e in emu.calls[0].client_events]
    result = agent.results[0]
    assert seen["press"] == "stop reply" and seen["state"] is State.LISTENING
    assert "output_audio_buffer.clear" in sent
    assert "response.cancel" in sent  # 1 s into a reply that takes 3 s to generate
    assert result.end_reason == "follow-up window passed", result  # the call went on
    period = config.audio.playback.period_ms / 1000
    late = [t - seen["t"] for t in agent.playback.audible_writes if t > seen["t"] + period + 0.01]  # type: ignore[operator]
    assert late == [], f"reply audio written {late[:3]} s after the press"
