"""The Voice Live client against the real emulator over loopback: a real call, audio both ways, events,
and a clean, bounded error for every fault the emulator can inject."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from agent.audio.frames import PcmBlock
from agent.audio.mictrack import MicTrack
from agent.audio.resample import convert_pcm
from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.voicelive import protocol
from agent.voicelive.auth import ApiKey, BearerTokenFile, Secret
from agent.voicelive.call import CallOptions, VoiceLiveCall, prepare_offer
from agent.voicelive.control import Target
from agent.voicelive.errors import AuthError, NegotiationError, PermanentError, RateLimitedError, TransientError

from .speech import espeak

pytestmark = pytest.mark.timeout(60)

CANARY = "canary-key-7d1e0f55c2b4a9"
LOOPBACK = ("127.0.0.1",)


class PacedSource:
    """A microphone stand-in: blocks of a signal at real-time pace (20 ms, 16 kHz), then silence."""

    def __init__(self, signal: np.ndarray, rate: int = 16000, period: int = 320) -> None:
        self.signal = signal
        self.rate = rate
        self.period = period
        self.pos = 0
        self.t0: float | None = None
        self.seq = 0

    def get_nowait(self) -> PcmBlock | None:
        return None  # paced: a block is never waiting early

    async def get(self) -> PcmBlock:
        if self.t0 is None:
            self.t0 = time.monotonic()
        due = self.t0 + (self.seq + 1) * self.period / self.rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = self.signal[self.pos : self.pos + self.period]
        self.pos += self.period
        if chunk.size < self.period:
            chunk = np.concatenate([chunk, np.zeros(self.period - chunk.size, np.int16)])
        self.seq += 1
        return PcmBlock(chunk.astype(np.int16), self.rate, time.monotonic(), self.seq)


def options(**kw: object) -> CallOptions:
    base: dict[str, object] = {
        "ice_pin": LOOPBACK,
        "connect_timeout_s": 5.0,
        "answer_timeout_s": 3.0,
        "data_channel_timeout_s": 3.0,
        "media_timeout_s": 2.0,
    }
    base.update(kw)
    return CallOptions(**base)  # type: ignore[arg-type]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorSettings(api_key=Secret(CANARY), ice_loopback=True)) as emu:
        yield emu


def target(emu: Emulator, **kw: str) -> Target:
    return Target(endpoint=emu.url, api_version=protocol.DEFAULT_API_VERSION, model=kw.get("model", "gpt-realtime"))


def new_call(emu: Emulator, source: object | None = None, creds: object | None = None, **kw: object) -> VoiceLiveCall:
    received: list = []
    call = VoiceLiveCall(
        target(emu),
        creds or ApiKey(Secret(CANARY)),  # type: ignore[arg-type]
        MicTrack(source or PacedSource(np.zeros(16000 * 30, np.int16))),  # type: ignore[arg-type]
        options(**kw),
        on_remote_audio=received.append,
    )
    call.received = received  # type: ignore[attr-defined]
    return call


def remote_mono(frames: list) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.int16)
    if len(frames[0].layout.channels) == 1:  # the call's jitter buffer gives 48 kHz mono
        return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16)
    data = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int32)
    return ((data[0::2] + data[1::2]) // 2).astype(np.int16)  # aiortc gives 48 kHz stereo


def best_correlation(sent: np.ndarray, got: np.ndarray) -> float:
    """Peak normalised cross-correlation of `sent` inside `got` (both 48 kHz)."""
    a = sent.astype(np.float64) - sent.mean()
    b = got.astype(np.float64) - got.mean()
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: len(b) - len(a) + 1]
    csum = np.concatenate(([0.0], np.cumsum(b**2)))
    energy = np.maximum(csum[len(a) :] - csum[: len(b) - len(a) + 1], 0.0)  # sliding window, O(n)
    norm = np.sqrt(energy * np.sum(a**2)) + 1e-9
    return float(np.max(xc[: len(norm)] / norm[: len(xc)]))


async def collect(call: VoiceLiveCall, until: str, timeout: float) -> list[protocol.ServerEvent]:
    events: list[protocol.ServerEvent] = []

    async def run() -> None:
        async for ev in call.events():
            events.append(ev)
            if ev.type == until:
                return

    await asyncio.wait_for(run(), timeout)
    return events


# --------------------------------------------------------------------------------------------------


async def test_real_call_audio_both_ways_and_events(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    speech = espeak("the quick brown fox jumps over the lazy dog")
    mic = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(16000 * 20, np.int16)])
    call = new_call(emulator, PacedSource(mic))
    await call.start()
    try:
        assert call.rtc_call_id and call.rtc_call_id == emulator.calls[0].rtc_call_id
        assert call.session_id and call.session_id.startswith("sess_")
        # the WebRTC order: generation ends (response.done) before the audio has streamed (stopped)
        events = await collect(call, "output_audio_buffer.stopped", timeout=15)
        types = [e.type for e in events]
        assert types.index("response.done") < types.index("output_audio_buffer.stopped")
        for expected in (
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "response.created",
            "output_audio_buffer.started",
            "response.audio_transcript.done",
            "output_audio_buffer.stopped",
            "response.done",
        ):
            assert types.count(expected) == 1, (expected, types)
        assert types.index("input_audio_buffer.speech_started") < types.index("input_audio_buffer.speech_stopped")
        assert types.index("response.created") < types.index("output_audio_buffer.started")
        done = next(e for e in events if isinstance(e, protocol.ResponseDone))
        assert done.status == "completed" and done.usage.get("total_tokens", 0) > 0
        # the emulator sent some of them on both channels: the client saw each once
        both = [ev for ch, ev in emulator.calls[0].sent_events if ev["type"] == "input_audio_buffer.speech_started"]
        assert len(both) == 2 and both[0]["event_id"] == both[1]["event_id"]
        assert call._deduper.duplicates >= 3
        assert call.rtp_continuous  # the emulator, like the service, sends RTP between replies too
        await asyncio.sleep(0.3)  # the last reply frames in flight
        got = remote_mono(call.received)  # type: ignore[attr-defined]

        # All but the weak last syllable (which an energy VAD may end before): Opus twice over still
        # correlates above 0.9 on real speech (0.93 measured); a lost or garbled frame would not.
        sent48 = convert_pcm(speech, 16000, 48000)[: -int(0.3 * 48000)]
        corr = best_correlation(sent48, got)
        assert corr > 0.85, corr
        # and the emulator heard what the mic sent (one Opus hop)
        heard = emulator.calls[0].received_audio()
        assert best_correlation(sent48, heard) > 0.9
    finally:
        await call.hangup()
    assert call.ended.is_set() and call.end_reason == "hang-up"
    await asyncio.wait_for(emulator.calls[0].closed.wait(), 5)
    assert CANARY not in caplog.text


async def test_session_goes_with_the_offer_and_update_after(emulator: Emulator) -> None:
    session = {"instructions": "be brief", "turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}
    call = new_call(emulator, session=session)
    async with call:
        assert emulator.calls[0].session["instructions"] == "be brief"
        await call.send(protocol.session_update({"instructions": "be briefer"}))
        await collect(call, "session.updated", timeout=5)
        sdp_create = next(e for e in emulator.calls[0].client_events if e["type"] == "rtc.call.sdp.create")
        assert "model" not in sdp_create["session"]
        assert "m=audio" in sdp_create["sdp_offer"] and "opus" in sdp_create["sdp_offer"].lower()
        assert "PCMU" not in sdp_create["sdp_offer"] and "G722" not in sdp_create["sdp_offer"]
        assert "a=candidate" in sdp_create["sdp_offer"] and "127.0.0.1" in sdp_create["sdp_offer"]


async def test_bearer_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-123\n")
    settings = EmulatorSettings(bearer_token=Secret("tok-123"), ice_loopback=True)
    async with Emulator(settings) as emu, new_call(emu, creds=BearerTokenFile(token)) as call:
        assert call.rtc_call_id


async def test_wrong_key_is_a_clear_auth_error(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    call = new_call(emulator, creds=ApiKey(Secret(CANARY + "-wrong")))
    with pytest.raises(AuthError, match=r"HTTP 401.*check the API key") as info:
        await call.start()
    assert CANARY not in str(info.value) and CANARY not in caplog.text
    assert call.ended.is_set()


async def test_wrong_api_version_is_permanent(emulator: Emulator) -> None:
    call = VoiceLiveCall(
        Target(emulator.url, "2026-06-01-preview", model="gpt-realtime"),
        ApiKey(Secret(CANARY)),
        MicTrack(PacedSource(np.zeros(16000, np.int16))),
        options(),
    )
    with pytest.raises(PermanentError, match="HTTP 400") as info:
        await call.start()
    assert not isinstance(info.value, AuthError)


async def test_connection_refused_is_transient() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    call = VoiceLiveCall(
        Target(f"ws://127.0.0.1:{port}", "v", model="m"),
        ApiKey(Secret(CANARY)),
        MicTrack(PacedSource(np.zeros(16000, np.int16))),
        options(),
    )
    t = time.monotonic()
    with pytest.raises(TransientError, match="cannot connect"):
        await call.start()
    assert time.monotonic() - t < 5


@pytest.mark.parametrize(
    ("fault", "value", "error", "pattern", "bound_s"),
    [
        ("refuse_auth", True, AuthError, "HTTP 401", 3),
        ("reject_status", 429, RateLimitedError, "HTTP 429", 3),
        ("reject_status", 503, TransientError, "HTTP 503", 3),
        ("never_answer", True, NegotiationError, "no SDP answer within 3 s", 6),
        ("call_error", True, NegotiationError, "refused the call.*bad_sdp", 3),
    ],
)
async def test_setup_faults_end_in_a_clean_bounded_error(
    emulator: Emulator, fault: str, value: object, error: type, pattern: str, bound_s: float
) -> None:
    setattr(emulator.faults, fault, value)
    call = new_call(emulator)
    t = time.monotonic()
    with pytest.raises(error, match=pattern):
        await call.start()
    assert time.monotonic() - t < bound_s
    assert call.ended.is_set()
    assert not call._tasks  # nothing left running


async def test_rate_limit_carries_retry_after(emulator: Emulator) -> None:
    emulator.faults.reject_status = 429
    with pytest.raises(RateLimitedError) as info:
        await new_call(emulator).start()
    assert info.value.retry_after_s == 1.0


async def test_delayed_answer_still_connects(emulator: Emulator) -> None:
    emulator.faults.answer_delay_s = 0.5
    call = new_call(emulator)
    async with call:
        assert call.timings.answer - call.timings.ws_open >= 0.5  # type: ignore[operator]


async def test_websocket_closed_mid_call_ends_the_call(emulator: Emulator) -> None:
    emulator.faults.close_after_s = 0.5
    call = new_call(emulator)
    await call.start()
    await asyncio.wait_for(call.ended.wait(), 5)
    # the emulator drops the peer connection with the WebSocket: whichever the client sees first ends it
    assert isinstance(call.end_error, TransientError)
    assert re.search(r"closed the (control|data) channel", str(call.end_error))
    events = [e async for e in call.events()]  # the stream ends too
    assert all(isinstance(e, protocol.ServerEvent) for e in events)
    await call.hangup()


async def test_rtp_stopping_mid_reply_ends_the_call(emulator: Emulator) -> None:
    emulator.faults.stop_rtp_after_s = 0.2
    mic = np.concatenate([np.zeros(4000, np.int16), espeak("what is the weather like"), np.zeros(16000 * 20, np.int16)])
    call = new_call(emulator, PacedSource(mic), media_timeout_s=1.0)
    await call.start()
    await asyncio.wait_for(call.ended.wait(), 12)
    assert "RTP stopped" in str(call.end_error)
    await call.hangup()


@pytest.mark.parametrize("fault", ["malformed_json", "unknown_events", "oversized_event"])
async def test_bad_server_messages_are_skipped_not_fatal(
    emulator: Emulator, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    setattr(emulator.faults, fault, True)
    caplog.set_level(logging.INFO)
    call = new_call(emulator)
    async with call:
        await call.send(protocol.session_update({"instructions": "x"}))
        await collect(call, "session.updated", timeout=5)
        assert not call.ended.is_set()
    if fault == "unknown_events":
        assert "unknown event type" in caplog.text
    else:
        assert call._parser.skipped >= 1


async def test_response_cancel_during_reply(emulator: Emulator) -> None:
    story = espeak("tell me a long story about a lighthouse keeper and his cat")
    mic = np.concatenate([np.zeros(4000, np.int16), story, np.zeros(16000 * 20, np.int16)])
    call = new_call(emulator, PacedSource(mic))
    async with call:
        await collect(call, "output_audio_buffer.started", timeout=10)
        await call.send(protocol.response_cancel())
        events = await collect(call, "response.done", timeout=5)
        done = events[-1]
        assert isinstance(done, protocol.ResponseDone) and done.status == "cancelled"


async def test_unknown_client_event_gives_error_event(emulator: Emulator) -> None:
    async with new_call(emulator) as call:
        await call.send({"type": "no.such.event", "event_id": "evt_x"})
        events = await collect(call, "error", timeout=5)
        assert isinstance(events[-1], protocol.Error) and not call.ended.is_set()


async def test_tls_needs_the_ca(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """wss:// verifies certificates: with the emulator's own CA in `ca_file` the call works; without it
    the agent refuses with a clear, permanent error (a retry cannot make a certificate trusted)."""
    from agent.emulator.tls import make_test_ca

    tls = make_test_ca(tmp_path / "tls")
    settings = EmulatorSettings(
        api_key=Secret(CANARY), ice_loopback=True, tls_cert=tls.server_cert, tls_key=tls.server_key
    )
    async with Emulator(settings) as emu:
        assert emu.url.startswith("wss://127.0.0.1:")

        def call_with(ca: Path | None) -> VoiceLiveCall:
            return VoiceLiveCall(
                Target(emu.url, protocol.DEFAULT_API_VERSION, model="gpt-realtime", ca_file=ca),
                ApiKey(Secret(CANARY)),
                MicTrack(PacedSource(np.zeros(16000 * 5, np.int16))),
                options(),
            )

        async with call_with(tls.ca_cert) as call:
            assert call.rtc_call_id
        with pytest.raises(PermanentError, match=r"TLS certificate of 127\.0\.0\.1 not trusted.*ca_file"):
            await call_with(None).start()
        assert len(emu.calls) == 1  # the refused one never got past the handshake
    assert CANARY not in caplog.text


async def test_a_prepared_offer_is_used_once_and_a_stale_one_made_afresh(emulator: Emulator) -> None:
    """The agent makes the next call's peer connection and offer while idle (nothing reaches the
    service); the call uses it, mic track and all, and the audio flows. An offer made for other ICE
    settings is closed and replaced."""
    speech = espeak("the quick brown fox")
    offer = await prepare_offer(options())
    assert offer.pc.iceGatheringState == "complete" and "a=candidate" in offer.sdp
    assert emulator.calls == []  # nothing was sent anywhere
    mic = MicTrack(PacedSource(np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(16000 * 5, np.int16)])))
    call = VoiceLiveCall(target(emulator), ApiKey(Secret(CANARY)), mic, options(), prepared=offer)
    await call.start()
    try:
        assert call._pc is offer.pc and offer.transceiver.sender.track is mic
        await collect(call, "input_audio_buffer.speech_stopped", timeout=10)
        assert best_correlation(convert_pcm(speech, 16000, 48000)[:-14400], emulator.calls[0].received_audio()) > 0.9
    finally:
        await call.hangup()
    stale = await prepare_offer(options(ice_pin=None))
    call = new_call(emulator)
    call._prepared = stale
    await call.start()
    try:
        assert call._pc is not stale.pc and stale.pc.connectionState == "closed"
    finally:
        await call.hangup()
