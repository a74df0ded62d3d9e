"""Echo cancellation: the reference timeline, the delay measurement and AEC3 on their own, then the whole
device in a simulated room (agent.room) against the emulator, per `audio.echo` mode."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agent.audio.echo import LEAD_MS, DelayEstimator, EchoCanceller, ReferenceTimeline
from agent.audio.resample import convert_pcm
from agent.bench.echo import Speech, room_run
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.room import RoomSpec, impulse_response
from agent.voicelive.auth import Secret

from .speech import espeak

KEY = "canary-echo-5f1e2d"


@pytest.fixture(scope="module")
def voice() -> np.ndarray:
    return espeak("the lighthouse keeper climbed the narrow stairs every evening and lit the great lamp")


def echo_of(far: np.ndarray, delay_ms: float, echo_db: float = 0.0) -> np.ndarray:
    """`far` through a room whose direct path comes `delay_ms` late."""
    h = impulse_response(RoomSpec(echo_db=echo_db, direct_ms=max(1.0, delay_ms), tail_ms=250.0 + delay_ms), 16000)
    return np.convolve(far.astype(float), h)[: len(far)]


# --------------------------------------------------------------------------------------------------
# The parts


def test_the_timeline_places_each_write_where_it_plays() -> None:
    tl = ReferenceTimeline(16000, t0=100.0)
    tone = (np.sin(np.arange(960 * 10) * 2 * np.pi * 440 / 48000) * 10000).astype(np.int16)
    for k in range(10):  # ten 20 ms writes at 48 kHz, playing from t = 100.5 s
        tl.played(tone[k * 960 : (k + 1) * 960], 48000, 1, 100.5 + k * 0.02, True)
    assert tl.restarts == 0
    got = tl.take(tl.index(100.5), 3200)
    want = convert_pcm(tone, 48000, 16000).astype(float)
    lag = int(np.argmax(np.correlate(got, want[:1600], "valid")))
    assert lag <= 16  # within the resampler's own delay (1 ms)
    assert np.sqrt(np.mean(got[800:2400] ** 2)) == pytest.approx(10000 / np.sqrt(2), rel=0.05)
    assert not tl.take(tl.index(100.5), 3200).any()  # read once: forgotten
    # silence advances the stream without sound; a write that is not where the last ended starts anew
    tl.played(np.zeros(960, np.int16), 48000, 1, 100.7, False)
    tl.played(tone[:960], 48000, 1, 101.0, True)
    assert tl.restarts == 1
    # a flush: what was to play after it never plays
    tl.played(tone[: 960 * 5], 48000, 1, 102.0, True)
    tl.dropped(102.04)
    after = tl.take(tl.index(102.0), 1600)
    assert after[100:500].any() and not after[700:].any()


@pytest.mark.parametrize("delay_ms", [-20.0, 0.0, 37.0, 180.0])
def test_the_delay_estimator_finds_the_echo(voice: np.ndarray, delay_ms: float) -> None:
    far = voice.astype(float)
    if delay_ms < 0:  # the echo comes before the reference handed over
        mic = echo_of(np.concatenate([far[int(-delay_ms * 16) :], np.zeros(int(-delay_ms * 16))]), 1.0)
        delay_ms += 1.0
    else:
        mic = echo_of(far, delay_ms)
    near = np.random.default_rng(2).standard_normal(len(far)) * 30
    est = DelayEstimator(16000)
    readings = [r for k in range(0, len(far) - 319, 320)
                if (r := est.add((mic + near)[k : k + 320], far[k : k + 320])) is not None]  # fmt: skip
    assert readings
    assert readings[-1].delay_ms == pytest.approx(delay_ms, abs=1.0)


def test_aec3_takes_the_echo_out_and_keeps_the_user(voice: np.ndarray) -> None:
    """Offline, the canceller as the capture thread runs it: the echo 60 ms behind the speaker's clock
    (the device's unknown latency), the user speaking over it in its last seconds."""
    tl = ReferenceTimeline(16000, t0=0.0)
    ec = EchoCanceller(tl).load()
    far16 = np.tile(voice, 2)
    far48 = convert_pcm(far16, 16000, 48000)
    echo = echo_of(far16, 60.0, echo_db=0.0)
    user = np.zeros(len(far16))
    user_speech = espeak("stop stop please stop").astype(float)
    user[-len(user_speech) - 8000 : -8000] = user_speech
    mic = np.clip(echo + user + np.random.default_rng(3).standard_normal(len(far16)) * 3, -32768, 32767)
    out = np.zeros(len(far16))
    for k in range(0, len(far16) - 319, 320):
        t_end = 1.0 + (k + 320) / 16000
        tl.played(far48[3 * k : 3 * k + 960], 48000, 1, 1.0 + k / 16000, True)  # written as it plays
        cleaned, ref = ec.process(mic[k : k + 320].astype(np.int16), t_end)
        assert ref is None
        out[k : k + 320] = cleaned
    quiet = slice(16000, len(far16) - len(user_speech) - 16000)  # after a second, before the user speaks
    erle = 10 * np.log10(np.sum(echo[quiet] ** 2) / np.sum(out[quiet] ** 2))
    assert erle >= 25
    assert ec.stats.delay_ms == pytest.approx(60.0, abs=8)  # measured: the direct path comes 60 ms late
    talk = slice(len(far16) - len(user_speech) - 8000, len(far16) - 8000)
    # AEC3's output lags its input by a few ms
    kept = max(np.corrcoef(out[talk.start + d : talk.stop + d], user[talk])[0, 1] for d in range(0, 320, 8))
    assert kept > 0.6  # the user's voice comes through the double talk


def test_the_reference_is_read_as_one_stream_while_the_stamps_wobble(voice: np.ndarray) -> None:
    """Stamps a few ms off either way (a capture clock still settling) do not make the reference jump:
    it is read on from where the last block's ended, so AEC3 keeps cancelling. A jump beyond the slack
    (the microphone lost samples) moves the read position with it."""
    tl = ReferenceTimeline(16000, t0=0.0)
    ec = EchoCanceller(tl).load()
    far16 = np.tile(voice, 2)
    far48 = convert_pcm(far16, 16000, 48000)
    echo = echo_of(far16, 60.0)
    mic = np.clip(echo + np.random.default_rng(3).standard_normal(len(far16)) * 3, -32768, 32767)
    wobble = np.random.default_rng(6).uniform(-0.003, 0.003, len(far16) // 320)
    out = np.zeros(len(far16))
    for j, k in enumerate(range(0, len(far16) - 319, 320)):
        tl.played(far48[3 * k : 3 * k + 960], 48000, 1, 1.0 + k / 16000, True)
        cleaned, _ = ec.process(mic[k : k + 320].astype(np.int16), 1.0 + (k + 320) / 16000 + wobble[j])
        out[k : k + 320] = cleaned
    quiet = slice(16000, len(far16))
    assert ec.stats.resyncs == 0
    # 24 dB with steady stamps in this room; read at each stamp it was 9 dB at +-1 ms and 3.5 at +-3 ms
    assert 10 * np.log10(np.sum(echo[quiet] ** 2) / np.sum(out[quiet] ** 2)) >= 20
    ec.process(np.zeros(320, np.int16), 1.0 + len(far16) / 16000 + 0.02 + 0.02)  # 20 ms of samples skipped
    assert ec.stats.resyncs == 1


@pytest.mark.parametrize(("new_delay_ms", "moved", "min_erle"), [(34.0, 1, 30.0), (82.0, 0, 30.0)])
def test_a_device_that_starts_anew_with_another_latency_keeps_its_echo_cancelled(
    voice: np.ndarray, new_delay_ms: float, moved: int, min_erle: float
) -> None:
    """The echo comes 58 ms late, then (the speaker restarted after a pause) 24 ms earlier or later. An
    earlier echo has the reference moved to keep the delay AEC3 settled on: cancelling again within a
    second (left to AEC3 alone it stayed at 2-5 dB for 2.5 s, and the strict service barged in). A later
    one AEC3 finds itself. The speaker is written two blocks before it plays, as the playback does."""
    gap = 16000
    far = np.concatenate([voice, np.zeros(gap), voice, voice]).astype(float)
    change = len(voice) + gap
    echo = np.concatenate([echo_of(far, 58.0)[:change], echo_of(far, new_delay_ms)[change:]])
    mic = np.clip(echo + np.random.default_rng(3).standard_normal(len(far)) * 3, -32768, 32767)
    far48 = convert_pcm(far.astype(np.int16), 16000, 48000)
    tl = ReferenceTimeline(16000, t0=0.0)
    ec = EchoCanceller(tl).load()
    out = np.zeros(len(far))
    written = 0
    for k in range(0, len(far) - 319, 320):
        while written <= k + 640 and written < len(far):  # two blocks ahead
            if written == change:  # a new stream: the device was stopped in the pause
                tl.dropped(1.0 + written / 16000)
            tl.played(far48[3 * written : 3 * written + 960], 48000, 1, 1.0 + written / 16000, True)
            written += 320
        out[k : k + 320], _ = ec.process(mic[k : k + 320].astype(np.int16), 1.0 + (k + 320) / 16000)
    assert ec.stats.realigned == moved
    after = slice(change + 16000, change + 40000)  # from a second after the change, for 1.5 s
    lag = ec.lag
    erle = 10 * np.log10(np.sum(echo[after] ** 2) / np.sum(out[after.start + lag : after.stop + lag] ** 2))
    assert erle >= min_erle


def test_the_reference_is_moved_when_the_echo_comes_first(voice: np.ndarray) -> None:
    """A device whose clock says it plays 30 ms later than it does: its echo comes before the reference
    handed over, which nothing can cancel. The canceller measures it and moves the reference to lead."""
    tl = ReferenceTimeline(16000, t0=0.0)
    ec = EchoCanceller(tl, "client-reference", initial_delay_ms=30.0)
    far16 = np.tile(voice, 2)
    far48 = convert_pcm(far16, 16000, 48000)
    mic = echo_of(far16, 5.0)
    fed = []
    for k in range(0, len(far16) - 319, 320):
        tl.played(far48[3 * k : 3 * k + 960], 48000, 1, 1.0 + k / 16000, True)
        _, ref = ec.process(mic[k : k + 320].astype(np.int16), 1.0 + (k + 320) / 16000)
        assert ref is not None
        fed.append(ref)
    assert ec.stats.realigned >= 1
    ref = np.concatenate(fed).astype(float)
    tail = mic[: len(ref)][-32000:]  # the blocks processed, block by block with their references
    ref = ref[-32000:]
    lags = np.array([float(np.dot(tail[400 + d : 400 + d + 24000], ref[400 : 400 + 24000])) for d in range(-160, 320)])
    lag_ms = (int(np.argmax(lags)) - 160) / 16  # the direct path (this room's strongest)
    assert 0 <= lag_ms <= 10  # the reference now leads its echo (by LEAD_MS, and the resampler's delay)
    assert lag_ms == pytest.approx(LEAD_MS, abs=3)
    # the device's clock was 30 ms off; the echo's direct path comes 5 ms after the sound: measured
    assert ec.stats.delay_ms == pytest.approx(5.0, abs=2)


def test_an_idle_canceller_passes_the_microphone_through() -> None:
    tl = ReferenceTimeline(16000, t0=0.0)
    ec = EchoCanceller(tl).load()
    block = (np.random.default_rng(5).standard_normal(320) * 1000).astype(np.int16)
    out, _ = ec.process(block, 10.0)
    out2, _ = ec.process(block, 10.02)
    # as late as AEC3 would return it (the stream must not jump when it starts or stops cancelling)
    assert 120 <= ec.lag <= 136 and ec.latency_s == pytest.approx(ec.lag / 16000)
    stream = np.concatenate([np.zeros(ec.lag, np.int16), block, block])
    np.testing.assert_array_equal(np.concatenate([out, out2]), stream[:640])
    assert ec.stats.cancelled_blocks == 0


# --------------------------------------------------------------------------------------------------
# The device in the room, against the emulator


@pytest.fixture(scope="module")
def speech() -> Speech:
    return Speech.make()


async def _emulator(tmp_path: Path, speech: Speech, canceller: str = "none") -> Emulator:
    from agent.bench.speech import write_wav

    wav = write_wav(tmp_path / "reply.wav", speech.reply)
    emu = Emulator(EmulatorSettings(api_key=Secret(KEY), reply_mode="file", reply_wav=wav, ice_loopback=True,
                                    echo_canceller=canceller))  # type: ignore[arg-type]  # fmt: skip
    await emu.start()
    return emu


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Every core kept busy by another process (a Pi Zero 2 W running the wake word has no idle core
    either): the scheduler then wakes the agent's threads late, at random."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


async def test_local_cancelling_keeps_a_strict_service_from_hearing_the_reply(
    tmp_path: Path, speech: Speech, busy_machine: None
) -> None:
    """audio.echo: local at 0 dB, against a service with no canceller, on a machine with no idle core:
    no reply is barged in on, the echo is cancelled within a second of the first reply, the stop word
    never fires on the reply (which says it), and a jump of the device's hidden latency in the second
    reply is followed (measured anew)."""
    emu = await _emulator(tmp_path, speech)
    try:
        run = await room_run(tmp_path, emu.url, KEY, "local", 0.0, speech, replies=2, shift_ms=30.0)
    finally:
        await emu.stop()
    assert run["ran"] and run["replies_started"] >= 2
    assert run["self_interruptions"] == 0
    first, second = run["erle_db_by_reply"][:2]
    assert first >= 25  # after its first second
    assert second >= 12  # with the jump 1.5 s in and AEC3 finding the echo again (about 0.4 s)
    assert run["converge_s"] is not None and run["converge_s"] <= 1.0
    assert run["stop_word_false"] == 0 and run["wake_false"] == 0
    assert run["echo_delay_ms"] is not None


async def test_the_users_stop_is_heard_over_the_cancelled_echo(tmp_path: Path, speech: Speech) -> None:
    emu = await _emulator(tmp_path, speech)
    try:
        run = await room_run(tmp_path, emu.url, KEY, "local", 0.0, speech, replies=2, double_talk=True)
    finally:
        await emu.stop()
    assert run["double_talk_trials"] == 2
    assert run["double_talk_barge_ins"] == 2
    assert run["self_interruptions"] == 0


async def test_without_a_canceller_the_room_bites(tmp_path: Path, speech: Speech) -> None:
    """The test world is not kinder than a home: with nobody cancelling, the strict service takes the
    reply's echo for the user and barges in on it."""
    emu = await _emulator(tmp_path, speech)
    try:
        run = await room_run(tmp_path, emu.url, KEY, "off", 0.0, speech, replies=1, until_barge_in=True)
    finally:
        await emu.stop()
    assert run["self_interruptions"] >= 1
    assert run["erle_db"] is None or run["erle_db"] < 3  # (None: no reply lasted a second)


@pytest.mark.parametrize(("mode", "source"), [("service", "server"), ("client-reference", "client")])
async def test_the_service_cancels_as_the_session_asks(tmp_path: Path, speech: Speech, mode: str, source: str) -> None:
    """audio.echo service / client-reference: the session asks for the service's canceller (and, for the
    client reference, the offer for stereo); the emulator cancels with that reference, and the device
    leaves the microphone as it is."""
    emu = await _emulator(tmp_path, speech, canceller="session")
    try:
        t0 = time.monotonic()
        run = await room_run(tmp_path, emu.url, KEY, mode, -10.0, speech, replies=1)
        call = emu.calls[0]
    finally:
        await emu.stop()
    assert run["ran"] and time.monotonic() - t0 < 60
    spec = call.effective_session["input_audio_echo_cancellation"]
    assert spec["type"] == "server_echo_cancellation"
    canceller = call._canceller
    assert canceller is not None and canceller.source == source and canceller.frames > 100
    offer = next(e["sdp_offer"] for e in call.client_events if e.get("type") == "rtc.call.sdp.create")
    if mode == "client-reference":
        assert spec.get("reference_source") == "client" and spec.get("channels") == 2
        assert "stereo=1" in offer and "sprop-stereo=1" in offer
    else:
        assert "stereo=1" not in offer
    assert run["erle_db"] is not None and run["erle_db"] < 3  # the device cancelled nothing itself
