"""The project's own lossy network (agent.netsim) and the call on it: seeded schedules, the UDP relay,
and real calls against the real emulator through it, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from agent.audio.frames import is_audible
from agent.audio.resample import convert_pcm, pcm_of
from agent.bench.heard import compare
from agent.bench.speech import write_wav
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.netsim.network import Network
from agent.netsim.profiles import PROFILES, Impairment, Profile
from agent.netsim.udp import UdpRelay, rewrite_candidates
from agent.state import State
from agent.voicelive.auth import Secret

from .harness import KEY, Rig, agent_config, run_agent
from .speech import espeak, quiet
from .test_call import CANARY, PacedSource, new_call, remote_mono

pytestmark = pytest.mark.timeout(90)


def test_wifi_bad_loses_in_short_bursts_and_reorders_repeatably() -> None:
    imp = Impairment(PROFILES["wifi-bad"], seed=5)
    draws = [imp.next(False) for _ in range(40000)]
    again = Impairment(PROFILES["wifi-bad"], seed=5)
    assert [again.next(False) for _ in range(40000)] == draws  # seeded: the same network twice
    lost = [d is None for d in draws]
    assert 0.04 < sum(lost) / len(lost) < 0.06
    bursts, run = [], 0
    for x in lost:
        if x:
            run += 1
        elif run:
            bursts.append(run)
            run = 0
    assert set(bursts) == {1, 2, 3}
    delays = [d for d in draws if d is not None]
    assert 0.027 < float(np.mean(delays)) < 0.033 and 0.012 < float(np.std(delays)) < 0.018
    # packets 20 ms apart: jitter this wide puts some after the one sent next
    arrivals = [i * 0.02 + d for i, d in enumerate(draws) if d is not None]
    assert sum(b < a for a, b in itertools.pairwise(arrivals)) > 100
    clean = Impairment(PROFILES["clean"], seed=1)
    assert {clean.next(False) for _ in range(1000)} == {0.0}
    assert Impairment(PROFILES["clean"], seed=1).next(dropping=True) is None  # a drop takes everything


async def test_udp_relay_between_two_loopback_peers() -> None:
    loop = asyncio.get_running_loop()
    got: dict[str, list[bytes]] = {"a": [], "b": []}

    class Peer(asyncio.DatagramProtocol):
        def __init__(self, name: str) -> None:
            self.name = name

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got[self.name].append(data)

    ta, _ = await loop.create_datagram_endpoint(lambda: Peer("a"), local_addr=("127.0.0.1", 0))
    tb, _ = await loop.create_datagram_endpoint(lambda: Peer("b"), local_addr=("127.0.0.1", 0))
    a_port, b_port = ta.get_extra_info("sockname")[1], tb.get_extra_info("sockname")[1]
    network = Network("wifi-bad", seed=3)
    relay = UdpRelay(network)
    await relay.open()
    cand = "a=candidate:1 1 udp 2130706431 127.0.0.1 {} typ host\r\na=candidate:2 1 udp 1 127.0.0.1 9 typ host\r\n"
    offer = relay.relay_offer("v=0\r\n" + cand.format(a_port))
    answer = relay.relay_answer("v=0\r\n" + cand.format(b_port))
    assert offer.count("a=candidate") == 1 and answer.count("a=candidate") == 1  # one path: the relay's
    to_b = rewrite_candidates(answer, ("0", 0))[1]  # where A is told B is
    to_a = rewrite_candidates(offer, ("0", 0))[1]
    assert to_b is not None and to_a is not None and {to_a[1], to_b[1]}.isdisjoint({a_port, b_port})
    try:
        for i in range(300):
            ta.sendto(b"a%03d" % i, to_b)
            tb.sendto(b"b%03d" % i, to_a)
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
    finally:
        relay.close()
        ta.close()
        tb.close()
    assert len(got["b"]) == 300 - network.up.lost and len(got["a"]) == 300 - network.down.lost
    assert 5 <= network.up.lost <= 35 and 5 <= network.down.lost <= 35
    order = [int(d[1:]) for d in got["b"]]
    assert order != sorted(order)  # jitter reordered them


def reply_wav(tmp_path: Path, text: str) -> tuple[Path, np.ndarray]:
    """The emulator's reply, in a file of its own (the harness's speaker writes `reply.wav`)."""
    speech = espeak(text)
    return write_wav(tmp_path / "emulator-reply.wav", speech), speech


async def wait_event(call: object, etype: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with asyncio.timeout(deadline - time.monotonic()):
                event = await call.next_event()  # type: ignore[attr-defined]
        except TimeoutError:
            return False
        if event is None:
            return False
        if event.type == etype:
            return True
    return False


async def test_a_call_on_bad_wifi_is_recovered_and_concealed_both_ways(tmp_path: Path) -> None:
    """Heavy single-packet loss and wide jitter both ways: the reply comes through whole (FEC where the
    packet after carried it, concealment otherwise, no hole), and the emulator recovers the user's lost
    packets from the uplink's FEC."""
    lossy = Profile("lossy", "15 % single losses, 30 +- 15 ms", loss=0.15, delay_ms=30, jitter_ms=15)
    wav, reply16 = reply_wav(tmp_path, "the lighthouse keeper lit the lamp and watched the boats come home")
    settings = EmulatorSettings(
        api_key=Secret(CANARY), ice_loopback=True, network=lossy, reply_mode="file", reply_wav=wav, network_seed=2
    )
    async with Emulator(settings) as emu:
        command = espeak("what is the weather like in seattle tomorrow and should I take an umbrella")
        mic = np.concatenate([np.zeros(8000, np.int16), command, np.zeros(16000 * 20, np.int16)])
        call = new_call(emu, PacedSource(mic), media_timeout_s=5.0)
        await call.start()
        try:
            assert await wait_event(call, "output_audio_buffer.stopped", 25)
            await asyncio.sleep(0.4)
        finally:
            await call.hangup()
        assert call.uplink_fec and emu.calls[0].downlink_fec  # both asked for and answered
        jitter = call.jitter
        assert jitter is not None and jitter.lost > 10 and jitter.fec_recovered > 3
        heard = compare(convert_pcm(reply16, 16000, 48000), remote_mono(call.received), 48000)  # type: ignore[attr-defined]
        assert heard.holes == 0
        assert heard.correlation is not None and heard.correlation > 0.85, heard.correlation
        up = emu.calls[0].uplink_stats
        assert up is not None and up.lost > 10
        assert up.single_lost_speech >= 2 and up.fec_recovered_speech >= up.single_lost_speech // 2, up
        assert call.uplink_loss >= 0.05  # the encoder heard about the loss from the emulator's reports


async def test_a_drop_mid_reply_keeps_the_call_and_the_reply_resumes(tmp_path: Path) -> None:
    wav, _ = reply_wav(tmp_path, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen")
    settings = EmulatorSettings(
        api_key=Secret(CANARY), ice_loopback=True, network="drop", reply_mode="file", reply_wav=wav
    )
    async with Emulator(settings) as emu:
        mic = np.concatenate([np.zeros(8000, np.int16), espeak("count to fourteen"), np.zeros(16000 * 20, np.int16)])
        call = new_call(emu, PacedSource(mic), media_timeout_s=5.0)
        sound_at: list[float] = []
        call.on_remote_audio = lambda f: sound_at.append(time.monotonic()) if is_audible(pcm_of(f)) else None
        await call.start()
        try:
            assert await wait_event(call, "output_audio_buffer.stopped", 25)
        finally:
            await call.hangup()
        assert call.end_reason == "hang-up"  # it lived through the drop
        drop_end = emu.network.drop_end
        assert drop_end is not None and emu.network.down.lost_in_drop > 100
        jitter = call.jitter
        assert jitter is not None and jitter.skipped > 100  # played on from the packets after the gap
        assert any(t > drop_end + 0.1 for t in sound_at)  # the reply came back after the drop


async def test_an_outage_ends_the_call_shows_the_error_and_the_next_call_connects(tmp_path: Path) -> None:
    """Every packet and the WebSocket lost mid-reply for longer than media_timeout_s: the call ends
    within media_timeout_s + 1 s, the LEDs show the network error, the agent goes back to idle, and the
    first wake word after the link is back connects on a freshly gathered offer."""
    outage = Profile("short-outage", "6 s of nothing", drop_s=6.0, drop_after_s=0.5, drop_websocket=True)
    wav, _ = reply_wav(tmp_path, "the lighthouse keeper climbed the stairs every evening to light the lamp")
    settings = EmulatorSettings(api_key=Secret(KEY), ice_loopback=True, network=outage, reply_mode="file",
                                reply_wav=wav)  # fmt: skip
    utterance = np.concatenate([espeak("hey jarvis"), quiet(0.4, seed=1), espeak("tell me a story"), quiet(0.3)])
    timing: dict[str, float] = {}

    async def during(rig: Rig) -> None:
        while not rig.agent.results:
            await asyncio.sleep(0.02)
        timing["ended"] = time.monotonic()
        while rig.agent.state is not State.IDLE:
            await asyncio.sleep(0.02)
        timing["idle"] = time.monotonic()
        drop_end = emu.network.drop_end
        assert drop_end is not None
        await asyncio.sleep(max(0.0, drop_end - time.monotonic()) + 0.3)
        rig.mic.feed(np.concatenate([utterance, quiet(3.0, seed=9)]))

    async with Emulator(settings) as emu:
        config = agent_config(tmp_path, emu, followup_s=0.8, backoff_initial_s=0.2, backoff_max_s=1.0)
        config = dataclasses.replace(config, voicelive=dataclasses.replace(config.voicelive, media_timeout_s=2.0))
        audio = np.concatenate([quiet(1.0), utterance, quiet(0.5)])
        agent = await run_agent(tmp_path, emu, audio, during, conversations=2, config=config, timeout=70)
        drop_start = emu.network.drop_start
    first, second = agent.results
    assert drop_start is not None and first.t_ended is not None
    assert first.error_kind == "network" and "RTP stopped" in (first.error or ""), first
    assert first.t_ended - drop_start <= 2.0 + 1.0
    assert "network_error" in agent.leds.history
    assert timing["idle"] < drop_start + 6.0  # idle again while the link was still down
    assert second.ok and second.rtc_call_id, second
    assert agent.offers_remade == 1  # the offer made during the outage was not used


def test_no_socket_leaves_loopback() -> None:
    """The relay binds and forwards on 127.0.0.1 only: its sockets say so."""

    async def check() -> None:
        relay = UdpRelay(Network("wifi"))
        await relay.open()
        try:
            for side in (relay._agent_side, relay._emulator_side):
                assert side is not None and side.transport is not None
                assert side.transport.get_extra_info("sockname")[0] == "127.0.0.1"
        finally:
            relay.close()

    asyncio.run(check())
    assert socket.gethostbyname("localhost").startswith("127.")


async def test_the_reply_buffer_deepens_on_jitter_and_shrinks_when_the_network_calms(tmp_path: Path) -> None:
    """On the relay: 40 +- 20 ms of jitter while the reply plays, then the network calms (switched, as a
    microwave oven stops): the jitter buffer held packets longer in the jittery part, and comes back to
    a short wait in the calm one (shrinking in the silence the service sends after the reply)."""
    jittery = Profile("jittery", "40 +- 20 ms", delay_ms=40, jitter_ms=20)
    wav, _ = reply_wav(tmp_path, "the lighthouse keeper climbed the stairs every evening to light the lamp")
    settings = EmulatorSettings(api_key=Secret(CANARY), ice_loopback=True, network=jittery, reply_mode="file",
                                reply_wav=wav)  # fmt: skip
    async with Emulator(settings) as emu:
        mic = np.concatenate([np.zeros(8000, np.int16), espeak("tell me about the lighthouse"),
                              np.zeros(16000 * 30, np.int16)])  # fmt: skip
        call = new_call(emu, PacedSource(mic), media_timeout_s=5.0)
        await call.start()
        try:
            assert await wait_event(call, "output_audio_buffer.stopped", 25)
            jitter = call.jitter
            assert jitter is not None
            during = list(jitter.hold_ms)[-100:]
            emu.network.switch("clean")
            await asyncio.sleep(5.0)
            after = list(jitter.hold_ms)[-50:]
        finally:
            await call.hangup()
    assert jitter.expanded > 0 and jitter.accelerated > 0
    assert float(np.median(during)) > 30, np.median(during)
    assert float(np.median(after)) < 25, (np.median(during), np.median(after))


async def test_a_service_without_fec_gets_none_and_its_losses_are_still_concealed(tmp_path: Path) -> None:
    """The other form of the answer: a service that neither asks for nor sends FEC (`fec=False`: no
    useinbandfec in its answer). The agent's uplink then carries no FEC, and the reply's lost packets are
    concealed by PLC alone, with no hole."""
    lossy = Profile("lossy", "10 % single losses", loss=0.10)
    wav, reply16 = reply_wav(tmp_path, "the lighthouse keeper lit the lamp and watched the boats come home")
    settings = EmulatorSettings(api_key=Secret(CANARY), ice_loopback=True, network=lossy, reply_mode="file",
                                reply_wav=wav, fec=False)  # fmt: skip
    async with Emulator(settings) as emu:
        mic = np.concatenate([np.zeros(8000, np.int16), espeak("tell me a story"), np.zeros(16000 * 20, np.int16)])
        call = new_call(emu, PacedSource(mic), media_timeout_s=5.0)
        await call.start()
        try:
            assert await wait_event(call, "output_audio_buffer.stopped", 25)
            await asyncio.sleep(0.4)
        finally:
            await call.hangup()
        assert not call.uplink_fec and not emu.calls[0].downlink_fec
        up = emu.calls[0].uplink_stats
        assert up is not None and up.lost > 0 and up.fec_recovered == 0
        jitter = call.jitter
        assert jitter is not None and jitter.lost > 5 and jitter.fec_recovered == 0 and jitter.concealed >= jitter.lost
        heard = compare(convert_pcm(reply16, 16000, 48000), remote_mono(call.received), 48000)  # type: ignore[attr-defined]
        assert heard.holes == 0
