"""The fault matrix, at the level of the whole agent: for each fault the conversation ends in the right
state within a stated bound, the LEDs show it, nothing crashes, no secret is logged, and the next wake
word works once the fault is gone."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.state import State
from agent.voicelive.auth import ApiKey, Secret

from .harness import KEY, Rig, agent_config, run_agent
from .speech import espeak, quiet

pytestmark = pytest.mark.timeout(120)


def utterance(seed: int = 0) -> np.ndarray:
    return np.concatenate([espeak("hey jarvis"), quiet(0.5, seed=seed), espeak("lights on"), quiet(0.3, seed=seed + 1)])


@dataclasses.dataclass
class Case:
    name: str
    setup: Callable[[Emulator], None]
    error_kind: str | None  # None: the conversation succeeds despite the fault
    bound_s: float  # trigger to the end of the first conversation
    led: str | None  # the error pattern shown
    recover: Callable[[Rig, Emulator], Awaitable[None]] | None = None


def fault(**switches: object) -> Callable[[Emulator], None]:
    def apply(emu: Emulator) -> None:
        for name, value in switches.items():
            setattr(emu.faults, name, value)

    return apply


async def clear_faults(rig: Rig, emu: Emulator) -> None:
    emu.settings.faults.__init__()  # type: ignore[misc]


async def clear_and_hold(rig: Rig, emu: Emulator) -> None:
    await clear_faults(rig, emu)
    assert rig.agent.hold() == "retry"  # auth errors wait for the button (or a reload)


CASES = [
    Case("401", fault(refuse_auth=True), "auth", 3, "auth_error", clear_and_hold),
    Case("429", fault(reject_status=429), "rate_limited", 3, "network_error"),
    Case("503", fault(reject_status=503), "network", 3, "network_error"),
    Case("websocket closed mid-call", fault(close_after_s=1.0), "network", 4, "network_error"),
    Case("offer never answered", fault(never_answer=True), "negotiation", 5, "network_error"),
    Case("rtc.call.error", fault(call_error=True), "negotiation", 3, "network_error"),
    Case("rtp stops mid-reply", fault(stop_rtp_after_s=0.3), "network", 8, "network_error"),
    # the call goes on without it: the reply is heard, on its audio alone
    Case("data channel never opens", fault(no_data_channel=True), None, 12, None),
    Case("malformed events", fault(malformed_json=True), None, 10, None),
    Case("unknown events", fault(unknown_events=True), None, 10, None),
    Case("oversized event", fault(oversized_event=True), None, 10, None),
]


async def run_case(tmp_path: Path, emu: Emulator, case: Case) -> Rig:
    outcome: dict[str, float] = {}

    async def during(rig: Rig) -> None:
        agent = rig.agent
        while not agent.results:
            await asyncio.sleep(0.02)
        outcome["ended"] = time.monotonic()
        while agent.state is State.ERROR:  # the backoff, or a blocking error
            if agent.blocked:
                break
            await asyncio.sleep(0.02)
        await (case.recover or clear_faults)(rig, emu)
        while agent.state is not State.IDLE:
            await asyncio.sleep(0.02)
        rig.mic.feed(np.concatenate([utterance(seed=7), quiet(2.0, seed=9)]))

    case.setup(emu)
    config = agent_config(tmp_path, emu, followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=1.0)
    config = dataclasses.replace(
        config,
        voicelive=dataclasses.replace(
            config.voicelive, answer_timeout_s=2.0, data_channel_timeout_s=2.0, media_timeout_s=1.0
        ),
    )
    audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
    agent = await run_agent(tmp_path, emu, audio, during, conversations=2, config=config, timeout=60)
    first, second = agent.results
    elapsed = outcome["ended"] - first.t_trigger
    assert elapsed < case.bound_s, (case.name, elapsed)
    if case.error_kind is None:
        assert first.ok and (first.responses or first.replies_heard), first
    else:
        assert not first.ok and first.error_kind == case.error_kind, first
        assert case.led in agent.leds.history, agent.leds.history
    assert second.ok and second.responses == ["completed"], second  # the next wake word works
    assert agent.state is State.IDLE
    return Rig(agent, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault(tmp_path: Path, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        await run_case(tmp_path, emu, case)
    assert KEY not in caplog.text


async def test_connection_refused_then_the_service_is_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens on the endpoint's port at first (the service or the network is down); the agent
    shows the network error, backs off, and works as soon as the service is there again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emu = Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True, port=port))
    started: dict[str, bool] = {}

    async def during(rig: Rig) -> None:
        while not rig.agent.results:
            await asyncio.sleep(0.02)
        await emu.start()
        started["yes"] = True
        while rig.agent.state is not State.IDLE:
            await asyncio.sleep(0.02)
        rig.mic.feed(np.concatenate([utterance(seed=7), quiet(2.0, seed=9)]))

    try:
        url = f"ws://127.0.0.1:{port}"
        config = agent_config(tmp_path, url, followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=1.0)
        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(tmp_path, emu, audio, during, conversations=2, config=config, timeout=60)
    finally:
        await emu.stop()
    first, second = agent.results
    assert first.error_kind == "network" and "cannot connect" in (first.error or "")
    assert "network_error" in agent.leds.history
    assert second.ok and started
    assert KEY not in caplog.text


async def test_dns_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that does not resolve (no network, a typo): a network error, not a crash. The resolver is
    replaced for this one name, so the test sends no DNS query anywhere."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host == "voicelive.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        good = agent_config(tmp_path, emu, followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=1.0)
        bad = dataclasses.replace(
            good, voicelive=dataclasses.replace(good.voicelive, endpoint="wss://voicelive.invalid")
        )

        async def during(rig: Rig) -> None:
            while not rig.agent.results:
                await asyncio.sleep(0.02)
            rig.agent.reload(good, ApiKey(Secret(KEY)))  # as SIGHUP does after the owner fixed the name
            while rig.agent.state is not State.IDLE:
                await asyncio.sleep(0.02)
            rig.mic.feed(np.concatenate([utterance(seed=7), quiet(2.0, seed=9)]))

        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(tmp_path, emu, audio, during, conversations=2, config=bad, timeout=60)
    first, second = agent.results
    assert first.error_kind == "network" and "cannot resolve voicelive.invalid" in (first.error or "")
    assert second.ok


async def test_emulator_restarted_mid_call(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    emus = [Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True, port=port))]
    await emus[0].start()

    async def during(rig: Rig) -> None:
        while rig.agent.state is not State.LISTENING:
            await asyncio.sleep(0.02)
        await emus[0].stop()  # the service goes away mid-call ...
        emus.append(Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True, port=port)))
        await emus[1].start()  # ... and comes back on the same address
        while not rig.agent.results:
            await asyncio.sleep(0.02)
        while rig.agent.state is not State.IDLE:
            await asyncio.sleep(0.02)
        rig.mic.feed(np.concatenate([utterance(seed=7), quiet(2.0, seed=9)]))

    try:
        config = agent_config(tmp_path, emus[0], followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=1.0)
        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(tmp_path, emus[0], audio, during, conversations=2, config=config, timeout=60)
    finally:
        for emu in emus:
            await emu.stop()
    first, second = agent.results
    assert not first.ok and first.error_kind == "network"
    assert second.ok and len(emus[1].calls) == 1


async def test_playback_device_error_does_not_stop_the_conversation(tmp_path: Path) -> None:
    """The speaker's device cannot be opened: playback keeps retrying in its thread, the call still
    works (the user is heard, the service answers), and the agent returns to idle."""
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        config = agent_config(tmp_path, emu, followup_s=0.8)
        config = dataclasses.replace(
            config,
            audio=dataclasses.replace(
                config.audio, playback=dataclasses.replace(config.audio.playback, device="voice_agent_no_such_pcm")
            ),
        )
        audio = np.concatenate([quiet(1.0), utterance(), quiet(3.0)])
        agent = await run_agent(tmp_path, emu, audio, config=config)
    result = agent.results[0]
    assert result.ok and result.responses == ["completed"]
    assert agent.playback.stats.state == "stopped" and "voice_agent_no_such_pcm" in (
        agent.playback.stats.last_error or ""
    )
    assert agent.state is State.IDLE


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    from agent.audio.alsa import Backoff

    b = Backoff(1.0, 8.0)
    delays = [b.next_delay() for _ in range(8)]
    assert 0.8 <= delays[0] <= 1.2
    assert all(d <= 8.0 * 1.2 for d in delays) and delays[-1] >= 8.0 * 0.8  # capped at 8 (with jitter)
    assert delays[1] > delays[0] * 1.3 and delays[2] > delays[1] * 1.3  # grows
    spread = {round(Backoff(1.0, 8.0).next_delay(), 3) for _ in range(20)}
    assert len(spread) > 10  # jittered: many Pis do not retry in step
    b.reset()
    assert b.next_delay() <= 1.2
