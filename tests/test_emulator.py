"""The Voice Live emulator, driven by a small raw client: real aiortc peers and websockets over 127.0.0.1.

The client here is deliberately independent of the agent's own client (agent.voicelive.call): it is the
plain recipe of voicelive-webrtc.md section 7, so these tests check the emulator against the protocol,
not against another module's reading of it. ICE is pinned to loopback on both sides.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import logging
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent.emulator import Emulator, EmulatorCall, EmulatorSettings, Faults, events, serve_forever
from agent.emulator.replies import load_audio_48k_mono, transcript_deltas
from agent.emulator.vad import EnergyVad
from agent.voicelive import protocol
from agent.voicelive.auth import Secret
from agent.voicelive.ice import host_addresses, rtc_configuration
from agent.voicelive.session_fields import SESSION_FIELDS, unknown_session_fields
from tests.speech import long_reply, sentences_with_pauses

pytestmark = pytest.mark.timeout(30)

KEY = "test-key-0123456789"
#: websockets logs request headers at DEBUG, the credential included: the test client's logger stops at INFO.
WS_CLIENT_LOG = logging.getLogger("tests.emulator.websockets")
WS_CLIENT_LOG.setLevel(logging.INFO)
RATE = 48000
FRAME = 960


# --------------------------------------------------------------------------------------------------
# Test audio


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A vowel-like sound at about -20 dBFS RMS: a glottal pulse train with a gliding pitch, through
    three formant resonances, under a syllable envelope.

    Deterministic, and like real speech it survives Opus: random-phase sums of harmonics do not (their
    waveform correlation fell from 0.88 after one Opus pass to 0.62 after two, where this signal and
    espeak-ng speech both keep about 0.95).
    """
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 120 + 50 * np.sin(2 * np.pi * 0.9 * t + rng.uniform(0, 2 * np.pi)) + 15 * np.sin(2 * np.pi * 3.3 * t)
    cycles = np.cumsum(f0) / RATE
    source = np.zeros(n)
    source[np.nonzero(np.diff(np.floor(cycles)))[0]] = 1.0
    source += 0.02 * rng.standard_normal(n)
    w = 2 * np.pi * np.fft.rfftfreq(n, 1 / RATE) / RATE
    response = np.zeros(len(w), dtype=complex)
    for fc, bw in ((700, 110), (1200, 120), (2600, 160)):  # two-pole resonators
        r = np.exp(-np.pi * bw / RATE)
        theta = 2 * np.pi * fc / RATE
        response += (1 - r) / (1 - 2 * r * np.cos(theta) * np.exp(-1j * w) + r * r * np.exp(-2j * w))
    voiced = np.fft.irfft(np.fft.rfft(source) * response, n)
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 3.5 * t) ** 2
    edge = np.minimum(1.0, np.minimum(t, seconds - t) / 0.02)
    signal = voiced * syllables * edge
    signal *= 0.1 / np.sqrt(np.mean(signal**2))
    return (signal * 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def best_match(haystack: np.ndarray, needle: np.ndarray) -> tuple[float, int]:
    """Peak normalised cross-correlation of `needle` inside `haystack`, and where (sample offset)."""
    h = haystack.astype(np.float64)
    x = needle.astype(np.float64)
    if len(h) < len(x):
        return 0.0, 0
    size = 1 << int(np.ceil(np.log2(len(h) + len(x))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(x, size)), size)[: len(h) - len(x) + 1]
    energy = np.concatenate([[0.0], np.cumsum(h**2)])
    window = np.sqrt(np.maximum(energy[len(x) :] - energy[: -len(x)], 1e-9))
    score = corr / (window * np.linalg.norm(x))
    index = int(np.argmax(score))
    return float(score[index]), index


# --------------------------------------------------------------------------------------------------
# A raw client


class MicTrack(MediaStreamTrack):
    """48 kHz mono frames, paced at real time: queued audio, else silence (RTP keeps flowing)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, dtype=np.int16)
        self._start: float | None = None
        self._pts = 0
        self.first_frame_t: float | None = None

    def play(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, samples.astype(np.int16)])

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
            self.first_frame_t = self._start
        else:
            self._pts += FRAME
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - time.monotonic()))
        chunk = np.zeros(FRAME, dtype=np.int16)
        part = self._pending[:FRAME]
        chunk[: len(part)] = part
        self._pending = self._pending[FRAME:]
        frame = AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class RawClient:
    """One connection to the emulator: the WebSocket, and after `call()` a peer connection too."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[tuple[str, Any, float]] = []  # (channel, event or raw text, monotonic time)
        self.raw_control: list[str | bytes] = []
        self.raw_data: list[str | bytes] = []
        self.pc: RTCPeerConnection | None = None
        self.mic = MicTrack()
        self.remote_frames: list[tuple[float, np.ndarray]] = []
        self.data_open = asyncio.Event()
        self.closed = asyncio.Event()
        self._new = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = [asyncio.create_task(self._read_ws())]

    def _record(self, channel: str, message: str | bytes) -> None:
        (self.raw_control if channel == "control" else self.raw_data).append(message)
        try:
            event: Any = json.loads(message)
        except ValueError:
            event = None
        self.received.append((channel, event, time.monotonic()))
        self._new.set()

    async def _read_ws(self) -> None:
        try:
            async for message in self.ws:
                self._record("control", message)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set()
            self._new.set()

    async def _read_remote(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            stereo = frame.to_ndarray().reshape(-1, 2).astype(np.int32)
            self.remote_frames.append((time.monotonic(), stereo.mean(axis=1).astype(np.int16)))

    def remote_audio(self) -> np.ndarray:
        return np.concatenate([f for _, f in self.remote_frames]) if self.remote_frames else np.zeros(0)

    def events(self, etype: str, channel: str | None = None) -> list[dict[str, Any]]:
        return [
            e for ch, e, _ in self.received if isinstance(e, dict) and e.get("type") == etype and channel in (None, ch)
        ]

    async def wait_for(self, *types: str, channel: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """The first received event of one of `types` (on `channel`, if given), waiting for it."""

        async def look() -> dict[str, Any]:
            while True:
                self._new.clear()
                for ch, e, _ in self.received:
                    if isinstance(e, dict) and e.get("type") in types and channel in (None, ch):
                        return e
                if self.closed.is_set() and channel == "control":
                    raise AssertionError(f"WebSocket closed before {types}")
                await self._new.wait()

        return await asyncio.wait_for(look(), timeout)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def call(
        self, session: dict[str, Any] | None = None, *, expect_answer: bool = True, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Offer (Opus only, data channel first, ICE on loopback) and apply the answer."""
        pc = self.pc = RTCPeerConnection(rtc_configuration([]))
        channel = pc.createDataChannel(protocol.DATA_CHANNEL_LABEL)
        channel.on("open", self.data_open.set)
        channel.on("message", lambda m: self._record("data", m))
        transceiver = pc.addTransceiver(self.mic, direction="sendrecv")
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        )
        pc.on("track", lambda track: self._tasks.append(asyncio.create_task(self._read_remote(track))))
        with host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        await self.send(protocol.sdp_create(pc.localDescription.sdp, session))
        reply = await self.wait_for("rtc.call.sdp.created", "rtc.call.error", channel="control", timeout=timeout)
        if expect_answer:
            assert reply["type"] == "rtc.call.sdp.created", reply
            await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp_answer"], type="answer"))
        return reply

    async def close(self) -> None:
        await self.ws.close()
        if self.pc is not None:
            await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def ws_url(emulator: Emulator, *, path: str = protocol.CALLS_PATH, query: str | None = None) -> str:
    if query is None:
        query = f"api-version={protocol.DEFAULT_API_VERSION}&model=gpt-realtime"
    return f"{emulator.url}{path}?{query}"


# --------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    em = Emulator(EmulatorSettings(api_key=Secret(KEY)))
    await em.start()
    try:
        yield em
    finally:
        await em.stop()


@pytest.fixture
async def connect(emulator: Emulator) -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    clients: list[RawClient] = []

    async def _connect(url: str | None = None, headers: dict[str, str] | None = None) -> RawClient:
        ws = await websockets.connect(
            url or ws_url(emulator),
            additional_headers={"api-key": KEY} if headers is None else headers,
            max_size=4 * 1024 * 1024,
            open_timeout=5,
            logger=WS_CLIENT_LOG,
        )
        client = RawClient(ws)
        clients.append(client)
        return client

    try:
        yield _connect
    finally:
        for client in clients:
            await client.close()


async def refused(url: str, headers: dict[str, str]) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5, logger=WS_CLIENT_LOG):
            pass
    return info.value


SPEECH = speech_like(1.0)
FAST_TURNS = {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "prefix_padding_ms": 300}}


async def talk(client: RawClient, speech: np.ndarray, lead_s: float = 0.3) -> dict[str, Any]:
    """Say `speech` after `lead_s` of silence and wait for the reply to start; returns response.created."""
    client.mic.play(np.concatenate([silence(lead_s), speech]))
    await client.wait_for("output_audio_buffer.started", channel="data", timeout=10)
    return client.events("response.created", "data")[-1]


# --------------------------------------------------------------------------------------------------
# The upgrade


@pytest.mark.parametrize("headers", [{"api-key": "wrong"}, {}, {"Authorization": "Bearer wrong"}])
async def test_bad_or_missing_credential_gets_401(emulator: Emulator, headers: dict[str, str]) -> None:
    err = await refused(ws_url(emulator), headers)
    assert err.response.status_code == 401
    assert json.loads(err.response.body)["error"]["code"] == "Unauthorized"
    assert not emulator.calls


async def test_wrong_api_version_gets_400_naming_the_supported_one(emulator: Emulator) -> None:
    err = await refused(ws_url(emulator, query="api-version=2026-06-01-preview&model=m"), {"api-key": KEY})
    assert err.response.status_code == 400
    assert protocol.DEFAULT_API_VERSION in err.response.body.decode()


async def test_missing_model_gets_400_and_agent_mode_is_accepted(emulator: Emulator, connect: Any) -> None:
    v = f"api-version={protocol.DEFAULT_API_VERSION}"
    err = await refused(ws_url(emulator, query=v), {"api-key": KEY})
    assert err.response.status_code == 400
    client = await connect(ws_url(emulator, query=f"{v}&agent-name=a&agent-project-name=p"))
    await client.wait_for("session.created")
    assert emulator.calls[0].upgrade.agent_name == "a"


async def test_wrong_path_gets_404(emulator: Emulator) -> None:
    err = await refused(ws_url(emulator, path="/voice-live/realtime"), {"api-key": KEY})
    assert err.response.status_code == 404


async def test_key_in_query_is_accepted_and_never_recorded(emulator: Emulator, connect: Any) -> None:
    query = f"api-version={protocol.DEFAULT_API_VERSION}&model=gpt-realtime&api-key={KEY}"
    client = await connect(ws_url(emulator, query=query), headers={})
    created = await client.wait_for("session.created")
    assert created["session"]["id"].startswith("sess_")
    assert created["session"]["object"] == "realtime.session"
    assert created["session"]["model"] == "gpt-realtime"
    call = emulator.calls[0]
    assert (call.upgrade.auth_kind, call.upgrade.auth_via) == ("api-key", "query")
    assert KEY not in repr(call.upgrade)


async def test_any_bearer_is_accepted_when_no_credential_is_configured(connect: Any) -> None:
    async with Emulator(EmulatorSettings()) as em:
        client = await connect(ws_url(em), headers={"Authorization": "Bearer some-token"})
        await client.wait_for("session.created")
        assert em.calls[0].upgrade.auth_kind == "bearer"
        await client.close()


# --------------------------------------------------------------------------------------------------
# A whole call


async def test_full_call_parrots_the_utterance(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    client.mic.play(np.concatenate([silence(1.0), SPEECH, silence(1.0)]))
    answer = await client.call({"modalities": ["text", "audio"], "voice": {"type": "openai", "name": "alloy"}})
    assert answer["rtc_call_id"].startswith("rtc_")
    # The answer is Opus only, with loopback candidates only.
    audio_line = next(line for line in answer["sdp_answer"].splitlines() if line.startswith("m=audio"))
    opus_pt = next(
        line.split()[0].split(":")[1]
        for line in answer["sdp_answer"].splitlines()
        if line.startswith("a=rtpmap:") and "opus/48000" in line.lower()
    )
    assert audio_line.split()[3:] == [opus_pt]
    candidates = [line for line in answer["sdp_answer"].splitlines() if line.startswith("a=candidate:")]
    assert candidates and all(c.split()[4] == "127.0.0.1" for c in candidates)
    # session.created, then session.updated (the offer carried a session), then the answer.
    order = [e["type"] for ch, e, _ in client.received if ch == "control" and isinstance(e, dict)]
    assert order[:3] == ["session.created", "session.updated", "rtc.call.sdp.created"]
    await asyncio.wait_for(client.data_open.wait(), 5)

    done = await client.wait_for("response.done", channel="data", timeout=15)
    assert done["response"]["status"] == "completed"
    await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=5)
    usage = done["response"]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert 5 <= usage["input_token_details"]["audio_tokens"] <= 15  # ~10 per second of speech
    assert 20 <= usage["output_token_details"]["audio_tokens"] <= 32  # ~20 per second of reply

    # Speech events on both channels, with one event_id each.
    for etype in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"):
        on_ws, on_dc = client.events(etype, "control"), client.events(etype, "data")
        assert len(on_ws) == len(on_dc) == 1
        assert on_ws[0]["event_id"] == on_dc[0]["event_id"]
    started = client.events("input_audio_buffer.speech_started", "data")[0]
    stopped = client.events("input_audio_buffer.speech_stopped", "data")[0]
    assert started["item_id"] == stopped["item_id"]
    assert 950 <= started["audio_start_ms"] <= 1100  # the onset at 1.0 s, not the detection moment
    assert 1900 <= stopped["audio_end_ms"] <= 2100
    # The response lifecycle, in order, on the data channel: generation ends before the audio does.
    data_types = [e["type"] for ch, e, _ in client.received if ch == "data" and isinstance(e, dict)]
    lifecycle = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.created",
        "output_audio_buffer.started",
        "response.audio_transcript.done",
        "response.done",
        "output_audio_buffer.stopped",
    ]
    assert [t for t in data_types if t in lifecycle] == lifecycle
    response_id = client.events("response.created", "data")[0]["response"]["id"]
    assert client.events("output_audio_buffer.started")[0]["response_id"] == response_id
    assert client.events("output_audio_buffer.stopped")[0]["response_id"] == response_id
    assert done["response"]["id"] == response_id
    deltas = "".join(e["delta"] for e in client.events("response.audio_transcript.delta"))
    transcripts = client.events("response.audio_transcript.done")
    assert len(transcripts) == 2 and transcripts[0]["event_id"] == transcripts[1]["event_id"]
    assert deltas == transcripts[0]["transcript"] == "You said something 1.0 seconds long."

    # The reply, heard over RTP, is what was said (after two Opus passes).
    await asyncio.sleep(0.3)  # the receive jitter buffer holds the last frames
    score, _ = best_match(client.remote_audio(), SPEECH)
    assert score > 0.8, score  # measured 0.947 (a different signal scores about 0.1)
    call = emulator.calls[0]
    assert len(call.reply_audio) == 1
    assert abs(len(call.reply_audio[0]) / RATE - 1.3) < 0.1  # 300 ms prefix padding + 1 s
    # The emulator's record.
    assert call.rtc_call_id == answer["rtc_call_id"]
    assert call.session["voice"] == {"type": "openai", "name": "alloy"}
    assert call.first_rtp_t is not None and len(call.speech_stopped_t) == 1
    assert len(call.first_reply_frame_t) == 1 and call.first_reply_frame_t[0] > call.speech_stopped_t[0]
    mic = call.received_audio()
    assert best_match(mic, SPEECH)[0] > 0.85  # one Opus pass: measured 0.977
    assert [e["type"] for e in call.client_events] == ["rtc.call.sdp.create"]
    sent = [(ch, e["event_id"]) for ch, e in call.sent_events if e["type"] == "response.done"]
    assert sent == [("data", done["event_id"])]


async def test_file_reply_plays_the_wav_resampled(tmp_path: Path, connect: Any) -> None:
    # 16 kHz stereo in, 48 kHz mono out.
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 300 * np.arange(8000) / 16000)).astype(np.int16)
    path = tmp_path / "reply.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(tone, 2).tobytes())
    samples = load_audio_48k_mono(path)
    assert abs(len(samples) - 24000) <= 960
    async with Emulator(EmulatorSettings(reply_mode="file", reply_wav=path)) as em:
        client = await connect(ws_url(em), headers={"api-key": "anything"})
        await client.call()
        await client.send(protocol.response_create())
        done = await client.wait_for("response.done", channel="data")
        assert done["response"]["status"] == "completed"
        assert np.array_equal(em.calls[0].reply_audio[0][: len(samples)], samples)
        await client.close()


# --------------------------------------------------------------------------------------------------
# Client events


async def test_missing_sdp_gets_rtc_call_error(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.send({"type": "rtc.call.sdp.create", "event_id": "evt_1"})
    err = await client.wait_for("rtc.call.error")
    assert err["operation"] == "rtc.call.sdp.create"
    assert err["error"] == {"type": "invalid_request_error", "code": "missing_sdp", "message": "SDP offer is required"}


async def test_forbidden_session_key_gets_rtc_call_error(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.send({"type": "rtc.call.sdp.create", "sdp_offer": "v=0", "session": {"model": "gpt-realtime"}})
    err = await client.wait_for("rtc.call.error")
    assert err["error"]["code"] == "invalid_session"
    assert "model" in err["error"]["message"]


async def test_offer_without_opus_gets_bad_sdp(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    pc = RTCPeerConnection(rtc_configuration([]))
    transceiver = pc.addTransceiver("audio", direction="sendrecv")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/pcmu"]
    )
    with host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    await client.send({"type": "rtc.call.sdp.create", "sdp_offer": pc.localDescription.sdp})
    err = await client.wait_for("rtc.call.error")
    await pc.close()
    assert err["error"]["code"] == "bad_sdp" and "Opus" in err["error"]["message"]
    await client.send({"type": "rtc.call.sdp.create", "sdp_offer": "this is not sdp"})
    await asyncio.sleep(0.2)
    assert [e["error"]["code"] for e in client.events("rtc.call.error")] == ["bad_sdp", "bad_sdp"]


async def test_unknown_event_and_non_json_get_error(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.send({"type": "input_audio_buffer.frobnicate", "event_id": "evt_42"})
    err = await client.wait_for("error")
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["code"] == "unknown_event"
    assert err["error"]["event_id"] == "evt_42"
    await client.ws.send("{not json")
    await asyncio.sleep(0.2)
    assert [e["error"]["code"] for e in client.events("error")] == ["unknown_event", "invalid_json"]


async def test_session_update_gets_session_updated(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.send(protocol.session_update({"instructions": "Be brief.", **FAST_TURNS}))
    updated = await client.wait_for("session.updated")
    assert updated["session"]["instructions"] == "Be brief."
    assert updated["session"]["turn_detection"]["silence_duration_ms"] == 300
    assert updated["session"]["turn_detection"]["threshold"] == 0.5  # defaults kept
    await client.send({"type": "session.update", "event_id": "evt_7", "session": {"input_audio_format": "pcm16"}})
    err = await client.wait_for("error")
    assert err["error"]["code"] == "invalid_session" and err["error"]["event_id"] == "evt_7"
    assert emulator.calls[0].session == {"instructions": "Be brief.", **FAST_TURNS}


async def test_conversation_item_create_gets_item_created(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    # (a function_call_output must answer a call the model made: see tests/test_tool_calls.py)
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    await client.send(protocol.conversation_item_create(item))
    created = await client.wait_for("conversation.item.created", channel="control")
    assert created["item"]["role"] == "user" and created["item"]["id"].startswith("item_")
    await client.send({"type": "conversation.item.retrieve", "item_id": created["item"]["id"]})
    retrieved = await client.wait_for("conversation.item.retrieved", channel="control")
    assert retrieved["item"] == created["item"]
    await client.send({"type": "conversation.item.retrieve", "event_id": "evt_3", "item_id": "item_none"})
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "item_not_found" and err["error"]["event_id"] == "evt_3"
    await client.send({"type": "input_audio_buffer.commit"})
    await asyncio.sleep(0.2)
    # No call, so no data channel: the committed event waits in the emulator's queue for one.
    assert not client.events("error", "control")[1:]
    assert not client.events("input_audio_buffer.committed")


async def test_speech_during_a_reply_barges_in(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.call(FAST_TURNS)
    created = await talk(client, speech_like(1.5))  # a 1.8 s reply generated in 1 s: the buffer runs ahead
    client.mic.play(speech_like(0.5, seed=1))
    done = await client.wait_for("response.done", channel="data")
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    cleared = await client.wait_for("output_audio_buffer.cleared", channel="data")
    assert cleared["response_id"] == created["response"]["id"]
    assert len(client.events("input_audio_buffer.speech_started", "data")) == 2
    # speech_started, then the service's own cancel and clear.
    order = [e["type"] for ch, e, _ in client.received if ch == "data" and isinstance(e, dict)]
    second_start = [i for i, t in enumerate(order) if t == "input_audio_buffer.speech_started"][1]
    assert second_start < order.index("response.done") < order.index("output_audio_buffer.cleared")
    assert not client.events("output_audio_buffer.stopped")


async def test_speech_during_a_reply_without_interrupt_response_keeps_streaming(
    emulator: Emulator, connect: Any
) -> None:
    client = await connect()
    await client.call({"turn_detection": {**FAST_TURNS["turn_detection"], "interrupt_response": False}})
    created = await talk(client, speech_like(1.2))
    client.mic.play(speech_like(0.4, seed=1))
    await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=10)
    rid = created["response"]["id"]
    assert len(client.events("input_audio_buffer.speech_started", "data")) == 2
    first = [e for e in client.events("response.done", "data") if e["response"]["id"] == rid]
    assert first and first[0]["response"]["status"] == "completed"
    assert not client.events("output_audio_buffer.cleared")


async def test_response_create_without_speech_beeps(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.send(protocol.response_create())
    assert (await client.wait_for("error"))["error"]["code"] == "invalid_state"  # no call yet
    await client.call()
    # Sent before the data channel is open: response.created waits in the emulator's queue for it.
    await client.send(protocol.response_create())
    done = await client.wait_for("response.done", channel="data")
    assert done["response"]["status"] == "completed"
    data_types = [e["type"] for ch, e, _ in client.received if ch == "data" and isinstance(e, dict)]
    assert data_types[0] == "response.created"


# --------------------------------------------------------------------------------------------------
# The reply's timing over WebRTC: generation vs the output audio buffer (voicelive-webrtc.md section 9)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def t_of(client: RawClient, etype: str, channel: str = "data") -> float:
    """When the first event of `etype` arrived (monotonic)."""
    return next(t for ch, e, t in client.received if isinstance(e, dict) and e.get("type") == etype and ch == channel)


def data_order(client: RawClient) -> list[str]:
    return [e["type"] for ch, e, _ in client.received if ch == "data" and isinstance(e, dict)]


def loud_after(client: RawClient, t: float, level: int = 300) -> list[float]:
    """Arrival times of remote frames after `t` with any sample above `level` (silence decodes to ~0)."""
    return [ft for ft, f in client.remote_frames if ft > t and int(np.max(np.abs(f.astype(np.int32)))) > level]


@pytest.fixture
async def file_emulator(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Emulator]]]:
    """Start an emulator that replies with a WAV (`samples` at 48 kHz, or a `PausingReply`)."""
    started: list[Emulator] = []

    async def _start(samples: np.ndarray | None = None, reply_wav: Path | None = None, **settings: Any) -> Emulator:
        if reply_wav is None:
            reply_wav = write_wav(tmp_path / f"reply-{len(started)}.wav", samples if samples is not None else SPEECH)
        em = Emulator(EmulatorSettings(api_key=Secret(KEY), reply_mode="file", reply_wav=reply_wav, **settings))
        await em.start()
        started.append(em)
        return em

    try:
        yield _start
    finally:
        for em in started:
            await em.stop()


async def reply_call(connect: Any, em: Emulator) -> RawClient:
    """A call with the data channel open, and a `response.create` sent."""
    client = await connect(ws_url(em))
    await client.call()
    await asyncio.wait_for(client.data_open.wait(), 5)
    await client.send(protocol.response_create())
    return client


async def test_webrtc_order_done_when_generated_stopped_when_the_audio_ends(
    tmp_path: Path, file_emulator: Any, connect: Any
) -> None:
    # Two sentences and a 0.6 s pause of digital silence: the stream ends at the end, not at the pause.
    reply = sentences_with_pauses(("It is ten past nine.", "The weather is mild today."), (0.6,))
    em = await file_emulator(reply_wav=reply.write(tmp_path / "pausing.wav"), generation_s=0.5)
    client = await reply_call(connect, em)
    stopped = await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=15)
    lifecycle = [
        "response.created",
        "output_audio_buffer.started",
        "response.audio_transcript.done",
        "response.done",
        "output_audio_buffer.stopped",
    ]
    assert [t for t in data_order(client) if t in lifecycle] == lifecycle
    done = client.events("response.done", "data")[0]
    rid = client.events("response.created", "data")[0]["response"]["id"]
    assert done["response"]["id"] == stopped["response_id"] == rid
    assert done["response"]["status"] == "completed"
    # All the reply's audio is counted at response.done, though most of it has not been heard yet.
    assert abs(done["response"]["usage"]["output_token_details"]["audio_tokens"] - 20 * reply.duration_s) <= 2
    created_t, started_t = t_of(client, "response.created"), t_of(client, "output_audio_buffer.started")
    assert 0.45 <= t_of(client, "response.done") - created_t <= 0.9
    assert reply.duration_s - 0.1 <= t_of(client, "output_audio_buffer.stopped") - started_t <= reply.duration_s + 0.5
    # The audio really streamed for that long: loud frames after the pause, none after stopped (+ jitter).
    await asyncio.sleep(0.4)
    loud = loud_after(client, started_t)
    assert loud and loud[-1] - started_t >= reply.pauses[0][1]
    assert not loud_after(client, t_of(client, "output_audio_buffer.stopped") + 0.25)


def test_pausing_replies_have_digital_silence_between_sentences() -> None:
    short, long = sentences_with_pauses(), long_reply()
    assert len(short.pauses) == 2 and long.duration_s >= 20.0
    for reply in (short, long):
        for start, end in reply.pauses:
            assert 0.399 <= end - start <= 0.801
            assert not np.any(reply.samples[int(start * 16000) : int(end * 16000)])  # digital silence
            assert np.max(np.abs(reply.samples[int(end * 16000) : int(end * 16000) + 8000])) > 1000  # speech


async def test_audio_first_order_stopped_then_done_at_the_end(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(1.5), output_order="audio-first")
    client = await reply_call(connect, em)
    await client.wait_for("response.done", channel="data", timeout=10)
    order = [t for t in data_order(client) if t.startswith(("response.done", "output_audio_buffer"))]
    assert order == ["output_audio_buffer.started", "output_audio_buffer.stopped", "response.done"]
    started_t = t_of(client, "output_audio_buffer.started")
    assert 1.4 <= t_of(client, "response.done") - started_t <= 2.0
    assert t_of(client, "response.done") - t_of(client, "output_audio_buffer.stopped") < 0.1


async def test_no_buffer_events_order(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(1.5), output_order="no-buffer-events", generation_s=0.3)
    client = await reply_call(connect, em)
    done = await client.wait_for("response.done", channel="data", timeout=10)
    assert done["response"]["status"] == "completed"
    assert t_of(client, "response.done") - t_of(client, "response.created") < 0.7
    await asyncio.sleep(1.8)  # the audio streams on after response.done
    assert not [t for t in data_order(client) if t.startswith("output_audio_buffer")]
    loud = loud_after(client, t_of(client, "response.created"))
    assert loud and loud[-1] - t_of(client, "response.done") >= 0.9


async def test_cancel_during_generation_streams_what_was_generated(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(3.0), generation_s=2.0)
    client = await reply_call(connect, em)
    await client.wait_for("output_audio_buffer.started", channel="data")
    created_t = t_of(client, "response.created")
    await asyncio.sleep(max(0.0, created_t + 1.0 - time.monotonic()))
    await client.send(protocol.response_cancel())
    done = await client.wait_for("response.done", channel="data")
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert t_of(client, "response.done") - created_t < 1.3
    # Half the generation time: half the reply (1.5 s) was in the buffer, and streams to its end.
    audio_tokens = done["response"]["usage"]["output_token_details"]["audio_tokens"]
    assert 26 <= audio_tokens <= 36, audio_tokens
    stopped = await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=5)
    assert stopped["response_id"] == done["response"]["id"]
    heard = t_of(client, "output_audio_buffer.stopped") - t_of(client, "output_audio_buffer.started")
    assert 1.3 <= heard <= 1.9, heard
    assert not client.events("output_audio_buffer.cleared")
    assert not client.events("error")


async def test_cancel_after_generation_gets_an_error_and_the_audio_goes_on(
    file_emulator: Any, connect: Any
) -> None:
    em = await file_emulator(speech_like(2.0), generation_s=0.3)
    client = await reply_call(connect, em)
    done = await client.wait_for("response.done", channel="data")
    cancel = protocol.response_cancel()
    await client.send(cancel)
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "response_cancel_not_active"
    assert err["error"]["event_id"] == cancel["event_id"]
    await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=5)
    assert t_of(client, "output_audio_buffer.stopped") - t_of(client, "output_audio_buffer.started") >= 1.9
    assert done["response"]["status"] == "completed"
    # The call goes on: another response plays.
    await client.send(protocol.response_create())
    await asyncio.sleep(0.3)
    assert len(client.events("response.created", "data")) == 2
    assert not client.closed.is_set()


async def test_cancel_with_another_response_id_gets_an_error(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(2.0), generation_s=2.0)
    client = await reply_call(connect, em)
    await client.wait_for("response.created", channel="data")
    await client.send(protocol.response_cancel("resp_not_this_one"))
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "response_cancel_not_active"
    assert not client.events("response.done")


async def test_clear_stops_the_stream_at_once(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(3.0), generation_s=0.3)
    client = await reply_call(connect, em)
    await client.wait_for("response.done", channel="data")
    await asyncio.sleep(0.5)
    await client.send(protocol.output_audio_buffer_clear())
    cleared = await client.wait_for("output_audio_buffer.cleared", channel="data")
    assert cleared["response_id"] == client.events("response.created", "data")[0]["response"]["id"]
    cleared_t = t_of(client, "output_audio_buffer.cleared")
    await asyncio.sleep(1.0)
    assert loud_after(client, t_of(client, "output_audio_buffer.started"))  # it was audible before
    assert not loud_after(client, cleared_t + 0.25)  # and silent after (the jitter buffer held ~80 ms)
    assert len(client.remote_frames) > 0 and client.remote_frames[-1][0] > cleared_t + 0.8  # RTP goes on
    assert not client.events("output_audio_buffer.stopped")
    # Nothing streaming: nothing to clear, and nothing is sent back (no cleared, no error).
    await client.send(protocol.output_audio_buffer_clear())
    await asyncio.sleep(0.3)
    assert len(client.events("output_audio_buffer.cleared")) == 1
    assert not client.events("error")


async def test_clear_during_generation_drops_the_audio_but_not_the_response(
    file_emulator: Any, connect: Any
) -> None:
    em = await file_emulator(speech_like(2.0), generation_s=1.5)
    client = await reply_call(connect, em)
    await client.wait_for("output_audio_buffer.started", channel="data")
    await client.send(protocol.output_audio_buffer_clear())
    await client.wait_for("output_audio_buffer.cleared", channel="data")
    done = await client.wait_for("response.done", channel="data", timeout=5)
    assert done["response"]["status"] == "completed"  # only response.cancel stops generation
    await asyncio.sleep(0.5)
    assert not loud_after(client, t_of(client, "output_audio_buffer.cleared") + 0.25)
    assert not client.events("output_audio_buffer.stopped")


async def test_fault_unknown_output_clear(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(1.5), generation_s=0.3)
    em.faults.unknown_output_clear = True
    client = await reply_call(connect, em)
    await client.wait_for("output_audio_buffer.started", channel="data")
    clear = protocol.output_audio_buffer_clear()
    await client.send(clear)
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "unknown_event" and err["error"]["event_id"] == clear["event_id"]
    await client.wait_for("output_audio_buffer.stopped", channel="data", timeout=5)  # it played to the end
    assert t_of(client, "output_audio_buffer.stopped") - t_of(client, "output_audio_buffer.started") >= 1.4
    assert not client.events("output_audio_buffer.cleared")


async def test_a_reply_created_while_one_streams_waits_its_turn(file_emulator: Any, connect: Any) -> None:
    em = await file_emulator(speech_like(1.0), generation_s=0.2)
    client = await reply_call(connect, em)
    await client.wait_for("response.done", channel="data")
    await client.send(protocol.response_create())
    await asyncio.sleep(2.5)
    started = client.events("output_audio_buffer.started", "data")
    stopped = client.events("output_audio_buffer.stopped", "data")
    assert len(started) == len(stopped) == 2
    first, second = started[0]["response_id"], started[1]["response_id"]
    buffer_types = ("output_audio_buffer.started", "output_audio_buffer.stopped")
    order = [
        (e["type"].rsplit(".", 1)[1], e["response_id"])
        for ch, e, _ in client.received
        if ch == "data" and isinstance(e, dict) and e["type"] in buffer_types
    ]
    assert order == [("started", first), ("stopped", first), ("started", second), ("stopped", second)]
    times = {(e["type"], e["response_id"]): t for ch, e, t in client.received if ch == "data" and "response_id" in e}
    assert times[("output_audio_buffer.started", second)] >= times[("output_audio_buffer.stopped", first)] - 0.05


# --------------------------------------------------------------------------------------------------
# Faults


async def test_fault_refuse_auth(emulator: Emulator) -> None:
    emulator.faults.refuse_auth = True
    assert (await refused(ws_url(emulator), {"api-key": KEY})).response.status_code == 401


async def test_fault_reject_status_429(emulator: Emulator, connect: Any) -> None:
    emulator.faults.reject_status = 429
    err = await refused(ws_url(emulator), {"api-key": KEY})
    assert err.response.status_code == 429
    assert err.response.headers["Retry-After"] == "1"
    emulator.faults.reject_status = None  # switches act at once
    await (await connect()).wait_for("session.created")


async def test_fault_never_answer(emulator: Emulator, connect: Any) -> None:
    emulator.faults.never_answer = True
    client = await connect()
    with pytest.raises(TimeoutError):
        await client.call(timeout=1.0)
    assert emulator.calls[0].client_events[0]["type"] == "rtc.call.sdp.create"


async def test_fault_call_error(emulator: Emulator, connect: Any) -> None:
    emulator.faults.call_error = True
    client = await connect()
    err = await client.call(expect_answer=False)
    assert err["type"] == "rtc.call.error" and err["error"]["code"] == "bad_sdp"
    assert err["error"]["message"] == "Remote client allocation failed"
    emulator.faults.call_error_message = "allocate client error: Remote client allocation failed: SDP inconsistent"
    emulator.faults.call_error_code = "server_error"
    client = await connect()
    err = await client.call(expect_answer=False)
    assert err["error"] == {
        "type": "server_error",
        "code": "server_error",
        "message": "allocate client error: Remote client allocation failed: SDP inconsistent",
    }


async def test_fault_error_before_answer(emulator: Emulator, connect: Any) -> None:
    emulator.faults.error_before_answer = True
    client = await connect()
    await client.call(FAST_TURNS)  # the answer still comes
    order = [e["type"] for ch, e, _ in client.received if ch == "control" and isinstance(e, dict)]
    assert order.index("error") < order.index("rtc.call.sdp.created")
    offer_id = emulator.calls[0].client_events[0]["event_id"]
    assert client.events("error")[0]["error"]["event_id"] == offer_id
    await asyncio.wait_for(client.data_open.wait(), 5)
    await talk(client, speech_like(0.5))  # and the call works


async def test_fault_answer_delay(emulator: Emulator, connect: Any) -> None:
    emulator.faults.answer_delay_s = 0.8
    client = await connect()
    t0 = time.monotonic()
    await client.call()
    assert time.monotonic() - t0 >= 0.8


async def test_fault_close_after(emulator: Emulator, connect: Any) -> None:
    emulator.faults.close_after_s = 0.5
    client = await connect()
    await client.call()
    t0 = time.monotonic()
    await asyncio.wait_for(client.closed.wait(), 5)
    assert 0.4 <= time.monotonic() - t0 < 2.0
    assert client.ws.close_code == 1011
    call = emulator.calls[0]
    await asyncio.wait_for(call.closed.wait(), 5)
    assert call.peer_connection is not None and call.peer_connection.connectionState == "closed"


async def test_fault_stop_rtp_mid_reply(emulator: Emulator, connect: Any) -> None:
    emulator.faults.stop_rtp_after_s = 0.3
    client = await connect()
    await client.call(FAST_TURNS)
    await talk(client, speech_like(0.8))
    await asyncio.sleep(0.8)  # 0.3 s into the reply RTP stops; let the jitter buffer drain
    frames = len(client.remote_frames)
    await asyncio.sleep(0.5)
    assert len(client.remote_frames) == frames  # nothing more arrived
    call = emulator.calls[0]
    assert call.rtp_stopped_t is not None
    assert 0.25 <= call.rtp_stopped_t - call.first_reply_frame_t[0] <= 0.45
    assert not client.events("output_audio_buffer.stopped")  # the audio never ends
    assert client.events("response.done")  # generation did (it does not wait for RTP)


async def test_fault_malformed_json_on_both_channels(emulator: Emulator, connect: Any) -> None:
    emulator.faults.malformed_json = True
    client = await connect()
    await client.call()
    await asyncio.wait_for(client.data_open.wait(), 5)
    await asyncio.sleep(0.3)
    bad_control = [ch for ch, e, _ in client.received if e is None and ch == "control"]
    bad_data = [ch for ch, e, _ in client.received if e is None and ch == "data"]
    assert len(bad_control) == 2 and len(bad_data) == 1  # after session.created, after the answer; on open
    parser = protocol.EventParser()
    assert parser.parse(client.raw_data[0], "data") is None and parser.skipped == 1


async def test_fault_unknown_events_on_both_channels(emulator: Emulator, connect: Any) -> None:
    emulator.faults.unknown_events = True
    client = await connect()
    await client.call()
    await client.wait_for("emulator.unknown_event", channel="data")
    assert len(client.events("emulator.unknown_event", "control")) == 2


async def test_fault_oversized_event(emulator: Emulator, connect: Any) -> None:
    emulator.faults.oversized_event = True
    client = await connect()
    await client.call()
    await asyncio.sleep(0.3)
    sizes = [len(m) for m in client.raw_control]
    assert max(sizes) > protocol.MAX_EVENT_BYTES
    assert protocol.EventParser().parse(client.raw_control[sizes.index(max(sizes))], "control") is None


async def test_fault_no_data_channel(emulator: Emulator, connect: Any) -> None:
    emulator.faults.no_data_channel = True
    client = await connect()
    await client.call(FAST_TURNS)
    speech = speech_like(0.8)
    client.mic.play(np.concatenate([silence(0.2), speech]))
    # Events the service also sends on the WebSocket still arrive there.
    await client.wait_for("input_audio_buffer.speech_stopped", channel="control")
    await client.wait_for("response.audio_transcript.done", channel="control", timeout=5)
    await asyncio.sleep(1.5)  # the reply (1.1 s) plays
    assert client.pc is not None and client.pc.connectionState == "connected"
    assert not client.data_open.is_set()  # the channel never opened
    assert client.pc.sctp is not None and client.pc.sctp.state != "connected"
    assert not client.raw_data
    assert not [ch for ch, _ in emulator.calls[0].sent_events if ch == "data"]
    # The audio works both ways: the emulator heard the speech, and the client heard it parroted back.
    assert best_match(emulator.calls[0].received_audio(), speech)[0] > 0.8
    assert best_match(client.remote_audio(), speech)[0] > 0.7


async def test_unknown_session_field_refuses_the_offer(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    session = {"voice": {"type": "openai", "name": "alloy"}, "wake_word": "jarvis"}
    reply = await client.call(session, expect_answer=False)
    assert reply["type"] == "rtc.call.error" and reply["error"]["code"] == "invalid_session_field"
    err = client.events("error", "control")[0]
    assert err["error"]["type"] == "invalid_request_error"
    assert err["error"]["code"] == "invalid_session_field"
    assert "extra fields not permitted" in err["error"]["message"] and "wake_word" in err["error"]["message"]
    assert err["error"]["param"] == "session.wake_word"
    assert err["error"]["event_id"] == emulator.calls[0].client_events[0]["event_id"]
    assert emulator.calls[0].peer_connection is None and not client.events("rtc.call.sdp.created")


async def test_unknown_session_field_in_session_update_changes_nothing(emulator: Emulator, connect: Any) -> None:
    client = await connect()
    await client.call({"instructions": "Be brief."})
    update = {"type": "session.update", "event_id": "evt_9", "session": {"instructions": "Be long.", "colour": 1}}
    await client.send(update)
    err = await client.wait_for("error", channel="control")
    assert err["error"]["code"] == "invalid_session_field" and err["error"]["event_id"] == "evt_9"
    assert "extra fields not permitted" in err["error"]["message"] and "colour" in err["error"]["message"]
    assert emulator.calls[0].effective_session["instructions"] == "Be brief."
    assert len(client.events("session.updated")) == 1  # the one for the offer's session
    # The call goes on.
    await client.send(protocol.session_update({"instructions": "Be kind."}))
    await asyncio.sleep(0.3)
    assert client.events("session.updated")[-1]["session"]["instructions"] == "Be kind."


def test_session_fields_cover_the_documented_ones() -> None:
    documented = {"modalities", "instructions", "voice", "turn_detection", "tools", "tool_choice", "temperature"}
    assert documented | protocol.FORBIDDEN_SESSION_KEYS <= SESSION_FIELDS
    assert {"interim_response", "interim-response"} <= SESSION_FIELDS
    assert unknown_session_fields({"voice": {}, "id": "sess_1", "wake_word": 1}) == ["id", "wake_word"]


async def test_require_headers_and_label_api_versions(connect: Any) -> None:
    settings = EmulatorSettings(api_versions=("v1",), require_headers={"VoiceLive-Features": "webrtc=V1Preview"})
    async with Emulator(settings) as em:
        url = ws_url(em, query="api-version=v1&model=gpt-realtime")
        err = await refused(url, {"api-key": "k"})
        assert err.response.status_code == 400
        body = json.loads(err.response.body)["error"]
        assert "VoiceLive-Features: webrtc=V1Preview" in body["message"] and "did not send it" in body["message"]
        err = await refused(url, {"api-key": "k", "VoiceLive-Features": "webrtc=V2Preview"})
        assert err.response.status_code == 400 and "another value" in err.response.body.decode()
        err = await refused(ws_url(em), {"api-key": "k", "VoiceLive-Features": "webrtc=V1Preview"})
        assert err.response.status_code == 400 and "v1" in err.response.body.decode()  # the old version
        for value in ("webrtc=V1Preview", "other=V1Preview, webrtc=V1Preview"):
            client = await connect(url, headers={"api-key": "k", "voicelive-features": value})
            await client.wait_for("session.created")
            await client.close()
        assert [c.upgrade.api_version for c in em.calls] == ["v1", "v1"]


async def test_every_event_is_one_the_client_knows_and_every_client_event_is_handled() -> None:
    known = set(protocol.EVENT_TYPES) | protocol.KNOWN_UNTYPED
    assert set(events.ROUTES) <= known, set(events.ROUTES) - known
    handled = set(EmulatorCall.HANDLERS)
    assert handled >= protocol.CLIENT_EVENT_TYPES, protocol.CLIENT_EVENT_TYPES - handled
    assert all(hasattr(EmulatorCall, name) for name in EmulatorCall.HANDLERS.values())
    with pytest.raises(ValueError):
        events._event("response.audio.delta")  # not an event the emulator sends over WebRTC


# --------------------------------------------------------------------------------------------------
# Shutdown, and the small parts


async def test_stop_closes_calls_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    em = Emulator(EmulatorSettings())
    await em.start()
    ws = await websockets.connect(ws_url(em), additional_headers={"api-key": "k"}, logger=WS_CLIENT_LOG)
    client = RawClient(ws)
    await client.call()
    await asyncio.wait_for(client.data_open.wait(), 5)
    await em.stop()
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.ws.close_code == 1001
    assert em.calls[0].closed.is_set()
    await client.close()
    for _ in range(20):  # aiortc's transports finish their last steps a little later
        left = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
        if not left:
            break
        await asyncio.sleep(0.05)
    assert not left, left


async def test_serve_forever_runs_until_cancelled() -> None:
    task = asyncio.create_task(serve_forever(EmulatorSettings()))
    await asyncio.sleep(0.1)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_vad_marks_onset_and_end() -> None:
    vad = EnergyVad(-40.0, speech_start_ms=100, silence_ms=200)
    audio = np.concatenate([silence(0.5), speech_like(0.5), silence(0.5)])
    found = [e for i in range(0, len(audio), FRAME) if (e := vad.process(audio[i : i + FRAME]))]
    assert [(e.kind, e.ms) for e in found] == [("start", 500), ("stop", 1000)]


def test_transcript_deltas_join_back() -> None:
    text = "You said something 1.2 seconds long."
    assert "".join(transcript_deltas(text)) == text
    assert len(transcript_deltas(text)) > 1


def test_faults_default_off() -> None:
    assert Faults() == Faults(refuse_auth=False, reject_status=None, never_answer=False)
    assert not Faults().unknown_output_clear and not Faults().error_before_answer
    with pytest.raises(ValueError):
        EmulatorSettings(reply_mode="file")
    assert EmulatorSettings().output_order == "webrtc"
    with pytest.raises(ValueError):
        EmulatorSettings(output_order="done-first")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmulatorSettings(generation_s=-1)


def test_cli_emulator_flags() -> None:
    from agent.cli import build_parser, parse_faults, parse_headers
    from agent.emulator.settings import OUTPUT_ORDERS

    flags = ["--output-order", "audio-first", "--generation-s", "0.5", "--api-version", "v1"]
    flags += ["--require-header", "VoiceLive-Features=webrtc=V1Preview", "--fault", "unknown_output_clear"]
    args = build_parser().parse_args(["emulator", *flags])
    assert (args.output_order, args.generation_s, args.api_version) == ("audio-first", 0.5, ["v1"])
    assert parse_headers(args.require_header) == {"VoiceLive-Features": "webrtc=V1Preview"}
    assert parse_faults(args.fault).unknown_output_clear
    faults = parse_faults(["call_error", "call_error_message=Remote client allocation failed: x"])
    assert faults.call_error_message == "Remote client allocation failed: x"
    emulator_parser = build_parser()._subparsers._group_actions[0].choices["emulator"]  # type: ignore[union-attr]
    order = next(a for a in emulator_parser._actions if a.dest == "output_order")
    assert tuple(order.choices) == OUTPUT_ORDERS
