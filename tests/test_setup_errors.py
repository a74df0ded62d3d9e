"""Call set-up as the real service behaves, end to end through the agent: an `error` event on the way to
the answer is not the end of the attempt, a negotiation the service keeps refusing blocks like a
configuration error until the button is held, a 429's Retry-After is waited out, and the label-versioned
API's headers and query reach the service."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from agent.backoff import Backoff
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.retry import REFUSALS_TO_BLOCK, RetryPolicy
from agent.state import State
from agent.voicelive.auth import Secret
from agent.voicelive.errors import NegotiationError, RateLimitedError

from .harness import KEY, Rig, agent_config, run_agent
from .speech import espeak, quiet

pytestmark = pytest.mark.timeout(120)


def utterance(seed: int = 0) -> np.ndarray:
    return np.concatenate([espeak("hey jarvis"), quiet(0.5, seed=seed), espeak("lights on"), quiet(0.3, seed=seed + 1)])


def fast_config(tmp_path: Path, emu: Emulator):  # type: ignore[no-untyped-def]
    config = agent_config(tmp_path, emu, followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=0.5)
    return dataclasses.replace(config, voicelive=dataclasses.replace(config.voicelive, answer_timeout_s=3.0))


async def wait_until(predicate, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_an_error_event_before_the_answer_does_not_end_the_attempt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        emu.faults.error_before_answer = True
        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(tmp_path, emu, audio, config=fast_config(tmp_path, emu))
    assert agent.results[0].ok, agent.results[0]
    assert "service error while waiting for the answer (still waiting)" in caplog.text


async def test_a_negotiation_refused_three_times_blocks_until_a_hold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, object] = {}
    async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:
        emu.faults.call_error = True  # "Remote client allocation failed", every time

        async def during(rig: Rig) -> None:
            agent = rig.agent
            for n in range(1, REFUSALS_TO_BLOCK):
                await wait_until(lambda n=n: agent.conversations_done >= n and agent.state is State.IDLE)
                rig.mic.feed(np.concatenate([utterance(seed=n), quiet(0.5)]))
            await wait_until(lambda: agent.conversations_done >= REFUSALS_TO_BLOCK)
            await wait_until(lambda: agent.state is State.IDLE)
            seen["blocked"] = agent.blocked
            seen["led"] = agent.leds.current.name if agent.leds.current else None
            seen["press"] = await agent.press()
            emu.faults.call_error = False
            seen["hold"] = agent.hold()
            rig.mic.feed(np.concatenate([utterance(seed=9), quiet(1.5)]))

        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(
            tmp_path, emu, audio, during, conversations=REFUSALS_TO_BLOCK + 1, config=fast_config(tmp_path, emu),
            timeout=100,
        )  # fmt: skip
    results = list(agent.results)
    assert [r.error_kind for r in results[:REFUSALS_TO_BLOCK]] == ["negotiation"] * REFUSALS_TO_BLOCK
    assert seen == {"blocked": "config", "led": "config_error",
                    "press": "ignored (config error: hold the button to retry)", "hold": "retry"}  # fmt: skip
    assert results[-1].ok, results[-1]
    assert "Remote client allocation failed" in caplog.text  # the service's own words, in the log
    assert "refused the call 3 times in a row" in caplog.text


def test_retry_after_is_honoured_and_refusals_count_in_a_row() -> None:
    policy = RetryPolicy(Backoff(0.5, 10.0))
    decision = policy.after(RateLimitedError("rate limited", retry_after_s=7.0))
    assert decision.delay_s >= 7.0 and not decision.block
    refused = NegotiationError("refused", "bad_sdp", refused=True)
    assert not policy.after(refused).block and not policy.after(refused).block
    assert policy.after(NegotiationError("no answer", "timeout")).block is False  # a timeout breaks the run
    assert not policy.after(refused).block and not policy.after(refused).block
    assert policy.after(refused).block


async def test_label_versioned_api_headers_and_query_reach_the_service(tmp_path: Path) -> None:
    settings = EmulatorSettings(
        api_key=Secret(KEY), ice_loopback=True, api_versions=("v1",),
        require_headers={"VoiceLive-Features": "webrtc=V1Preview"},
    )  # fmt: skip
    async with Emulator(settings) as emu:
        config = fast_config(tmp_path, emu)
        vl = dataclasses.replace(
            config.voicelive, api_version="v1", extra_headers={"VoiceLive-Features": "webrtc=V1Preview"},
            extra_query={"probe": "1"},
        )  # fmt: skip
        audio = np.concatenate([quiet(1.0), utterance(), quiet(0.5)])
        agent = await run_agent(tmp_path, emu, audio, config=dataclasses.replace(config, voicelive=vl))
        upgrade = emu.calls[0].upgrade
    assert agent.results[0].ok, agent.results[0]
    assert upgrade.api_version == "v1" and upgrade.query.get("probe") == "1"
