"""A second, independent WebRTC stack: headless Chromium against the emulator, and answering the agent.

1. The documented browser flow (Microsoft Learn's browser sample) in a page, against `voice-agent
   emulator` in its own process: getUserMedia (a fake microphone speaking an espeak-ng question), one
   audio track, the `voice-live-events` data channel, the offer after ICE gathering, the WebSocket with
   the key in the query, `rtc.call.sdp.create` / `.created`, a whole turn, and the parrot reply heard.
2. The agent's own client (`VoiceLiveCall`) calling a page that plays the service's side, through a relay
   on 127.0.0.1 (tests/browser/server.py): audio both ways, and events the page sends on the data channel
   parsed by the client.
3. The time to connected and to the first reply audio, Chromium vs the agent against the same emulator
   (medians of 5, printed; run with -s to see them).

Chromium is Debian's package (install.sh --dev installs it), driven over CDP (tests/browser/cdp.py), one
process for the module. Everything runs in a private network namespace with only `lo` when the test may
create one (root, as in CI; tests/browser/netns.py), so nothing can leave 127.0.0.1. A failing test prints
the page's console and the tail of Chromium's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import statistics
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import websockets
from aiortc.codecs.opus import OpusDecoder
from aiortc.jitterbuffer import JitterFrame

from agent.audio.mictrack import MicTrack
from agent.audio.resample import convert_pcm, pcm_of
from agent.bench.common import EmulatorProcess, call_records, emulator_process, wait_until
from agent.bench.heard import compare
from agent.emulator.record import read_call_record
from agent.voicelive import protocol
from agent.voicelive.auth import ApiKey, Secret
from agent.voicelive.call import CallOptions, VoiceLiveCall
from agent.voicelive.control import Target

from .browser import netns
from .browser.cdp import Chromium, Page, find_chromium
from .browser.server import SERVICE_PATH, PageServer
from .speech import brown_noise, espeak
from .test_call import PacedSource, best_correlation, collect, remote_mono
from .test_emulator import best_match

CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (install.sh --dev installs Debian's chromium; or: apt-get install chromium)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

log = logging.getLogger(__name__)
#: websockets logs request headers at DEBUG, the key among them: the test client's logger stops at INFO.
WS_LOG = logging.getLogger("tests.browser.client")
WS_LOG.setLevel(logging.INFO)

#: Lines of Chromium's own log that say only that this machine has no sound card and no D-Bus.
CHROMIUM_LOG_NOISE = ("ALSA", "alsa_util", "dbus")
RATE = 48000
QUESTION = "what time is it in tokyo"
LEAD_S = 0.6  # quiet before the question: covers the time to connect (the fake microphone starts at once)
RELAY_KEY = "test-only-relay-key-0c7d2e"  # the relay's own key: a test-only value, never a real one

#: The emulator's command-line options per output order; the test of the documented flow runs once per entry.
#: (`--output-order` is to come: "webrtc" is the emulator's default and needs no option.)
EMULATOR_ARGS: dict[str, tuple[str, ...]] = {
    "webrtc": (),
    "audio-first": ("--output-order", "audio-first"),
    "no-buffer-events": ("--output-order", "no-buffer-events"),
}
#: A whole turn on the data channel, in the order the service sends it over WebRTC (type, fields): what
#: the service page of test 2 sends.
PAGE_TURN: list[tuple[str, dict[str, Any]]] = [
    ("input_audio_buffer.speech_started", {"item_id": "item_1", "audio_start_ms": 500}),
    ("input_audio_buffer.speech_stopped", {"item_id": "item_1", "audio_end_ms": 2900}),
    ("response.created", {"response": {"id": "resp_1", "status": "in_progress"}}),
    ("output_audio_buffer.started", {"response_id": "resp_1"}),
    ("response.audio_transcript.done", {"response_id": "resp_1", "transcript": "Hi."}),
    ("response.done", {"response": {"id": "resp_1", "status": "completed"}}),
    ("output_audio_buffer.stopped", {"response_id": "resp_1"}),
]
_WEBRTC = [etype for etype, _ in PAGE_TURN]
#: The whole turn on the data channel, in order, per output order: over WebRTC generation ends
#: (response.done) before the audio has streamed (output_audio_buffer.stopped).
TURN_EVENTS: dict[str, list[str]] = {
    "webrtc": _WEBRTC,
    "audio-first": [*_WEBRTC[:5], "output_audio_buffer.stopped", "response.done"],
    "no-buffer-events": [e for e in _WEBRTC if not e.startswith("output_audio_buffer.")],
}
#: A shorter end-of-turn silence than the default, so each turn takes less time.
SESSION = {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400, "prefix_padding_ms": 300}}


@dataclass(frozen=True)
class Question:
    speech_16k: np.ndarray
    speech_48k: np.ndarray
    mic_16k: np.ndarray  # lead, question, long quiet: what the fake microphone says, at 16 kHz
    wav: Path  # the same at 48 kHz, for Chromium's --use-file-for-fake-audio-capture


# --------------------------------------------------------------------------------------------------
# Fixtures: one network namespace, one Chromium, one emulator per output order, for the whole module


@pytest.fixture(scope="module")
def private_network() -> Any:
    with netns.private_loopback() as private:
        if private:
            assert netns.interfaces() == ["lo"]
        yield private


@pytest.fixture(scope="module")
def question(tmp_path_factory: pytest.TempPathFactory) -> Question:
    speech = espeak(QUESTION)
    mic = np.concatenate([brown_noise(LEAD_S, 0.003), speech, brown_noise(20.0, 0.003, seed=1)])
    wav = tmp_path_factory.mktemp("browser") / "question.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(convert_pcm(mic, 16000, RATE).astype("<i2").tobytes())
    return Question(speech, convert_pcm(speech, 16000, RATE).astype(np.int16), mic, wav)


@pytest.fixture(scope="module")
def chromium(private_network: bool, question: Question, tmp_path_factory: pytest.TempPathFactory) -> Any:
    assert CHROMIUM is not None
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium") / "profile", question.wav)
    t0 = time.monotonic()
    browser.start()
    log.info("chromium up in %.2f s (private network namespace: %s)", time.monotonic() - t0, private_network)
    yield browser
    browser.stop()


class Emulators:
    """`voice-agent emulator` processes, one per output order, started when first asked for."""

    def __init__(self, tmpdir: Path) -> None:
        self.tmpdir = tmpdir
        self.stack = contextlib.AsyncExitStack()
        self.running: dict[str, EmulatorProcess] = {}

    async def get(self, output_order: str) -> EmulatorProcess:
        if output_order not in self.running:
            folder = self.tmpdir / output_order
            folder.mkdir()
            self.running[output_order] = await self.stack.enter_async_context(
                emulator_process(folder, *EMULATOR_ARGS[output_order])
            )
        return self.running[output_order]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def emulators(private_network: bool, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Emulators]:
    emus = Emulators(tmp_path_factory.mktemp("emulators"))
    async with emus.stack:
        yield emus


@pytest_asyncio.fixture(loop_scope="module")
async def pages(private_network: bool) -> AsyncIterator[PageServer]:
    async with PageServer(RELAY_KEY) as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(chromium: Chromium) -> AsyncIterator[Callable[[str], Awaitable[Page]]]:
    """Opens tabs; at the end closes them and prints their console (pytest shows it when a test fails)."""
    opened: list[Page] = []

    async def _open(url: str) -> Page:
        assert chromium.ws_url is not None
        page = await Page.open(chromium.ws_url, url)
        opened.append(page)
        return page

    yield _open
    for page in opened:
        print(f"--- console of {page.target_id}:\n{page.console_dump()}")
        await page.close()
    print("--- chromium log (tail):\n" + "\n".join(
        line for line in chromium.log_tail(80).splitlines() if not any(n in line for n in CHROMIUM_LOG_NOISE)
    ))  # fmt: skip


def browser_url(emu: EmulatorProcess) -> str:
    """The documented browser URL: a browser cannot set WebSocket headers, so the key is in the query."""
    query = f"api-version={protocol.DEFAULT_API_VERSION}&model=gpt-realtime&api-key={emu.key}"
    return f"{emu.url}{protocol.CALLS_PATH}?{query}"


def pcm(base64_text: str | None) -> np.ndarray:
    assert base64_text, "the page recorded no audio"
    return np.frombuffer(base64.b64decode(base64_text), dtype="<i2").copy()


def sdp_codecs(sdp: str, media: str = "audio") -> list[str]:
    """The codec names of the first `media` m-line, in order."""
    lines = sdp.splitlines()
    m_line = next(line for line in lines if line.startswith(f"m={media}"))
    names = {}
    for line in lines:
        if line.startswith("a=rtpmap:"):
            pt, rest = line[len("a=rtpmap:") :].split(" ", 1)
            names[pt] = rest.split("/")[0].lower()
    return [names.get(pt, pt) for pt in m_line.split()[3:]]


async def emulator_record(emu: EmulatorProcess, rtc_call_id: str) -> tuple[np.ndarray, dict[str, Any]]:
    """The emulator's record of a call (written when the call ends): its received audio and timeline."""
    assert await wait_until(lambda: rtc_call_id in call_records(emu.record_dir), 5.0), "no call record"
    index = next(
        int(p.stem.split("-")[1])
        for p in emu.record_dir.glob("call-*.json")
        if json.loads(p.read_text(encoding="utf-8")).get("rtc_call_id") == rtc_call_id
    )
    return read_call_record(emu.record_dir, index)


# --------------------------------------------------------------------------------------------------
# 1. The documented browser flow against `voice-agent emulator`


@pytest.mark.parametrize("output_order", list(EMULATOR_ARGS))
async def test_documented_browser_flow_against_the_emulator(
    output_order: str, emulators: Emulators, pages: PageServer, open_page: Any, question: Question
) -> None:
    emu = await emulators.get(output_order)
    page = await open_page(pages.page_url("client.html"))
    started = await page.call("startCall", {"url": browser_url(emu), "session": SESSION, "packets": True}, timeout=15)
    assert "error" not in started, started
    assert started["rtc_call_id"].startswith("rtc_")
    # Both within 5 s, in either order: Chromium queues `connectionstatechange` and the channel's `open` as
    # separate tasks, and the channel has been seen open 1 ms before the connection said connected.
    assert max(started["times"]["connected"], started["times"]["data_channel_open"]) < 5000

    done = await page.call("waitEvent", "response.done", "data", 15000, timeout=20)
    assert done["event"]["response"]["status"] == "completed"
    if "output_audio_buffer.stopped" in TURN_EVENTS[output_order]:  # the audio has streamed
        await page.call("waitEvent", "output_audio_buffer.stopped", "data", 10000, timeout=12)
    else:  # no output-buffer events: the reply's audio, from `response.done` on, for its length
        await asyncio.sleep(2.5)
    await asyncio.sleep(0.4)  # the last frames through Chromium's jitter buffer
    result = await page.call("result", True, timeout=20)
    await page.call("hangup")
    assert result["states"] == {"connection": "connected", "channel": "open"}

    # Chromium offers its whole list; the emulator answers Opus only, and Chromium takes it.
    assert sdp_codecs(result["offer"])[0] == "opus" and "g722" in sdp_codecs(result["offer"])
    assert sdp_codecs(result["answer"]) == ["opus"]
    control = [e["event"]["type"] for e in result["events"] if e["channel"] == "control"]
    assert control[:3] == ["session.created", "session.updated", "rtc.call.sdp.created"], control
    data = [e["event"]["type"] for e in result["events"] if e["channel"] == "data"]
    assert [t for t in data if t in TURN_EVENTS[output_order]] == TURN_EVENTS[output_order], data
    response_ids = {
        e["event"].get("response_id") or e["event"]["response"]["id"]
        for e in result["events"]
        if e["channel"] == "data" and e["event"]["type"] in ("output_audio_buffer.started", "response.done")
    }
    assert len(response_ids) == 1
    assert result["inbound"]["packets"] > 100

    # Audio both ways: the emulator heard the question, and the page heard the emulator's parrot of it.
    heard, timeline = await emulator_record(emu, started["rtc_call_id"])
    up, at = best_correlation_at(question.speech_48k, heard)
    assert up >= 0.9, f"the emulator heard the question with correlation {up:.3f}"
    sent_back = heard[at : at + len(question.speech_48k)]  # the parrot repeats what it heard
    got, played = received_pcm(result["packets"]), pcm(result["audio"])
    down = best_correlation(sent_back, got)
    print(
        f"correlation: uplink {up:.3f}, downlink {down:.3f} as received ({best_correlation(sent_back, played):.3f} "
        f"as Chromium played it; its jitter buffer {result['inbound']}), question to reply (two Opus passes) "
        f"{best_correlation(question.speech_48k, got):.3f}"
    )
    assert down >= 0.9, f"the page received the reply with correlation {down:.3f}"
    assert played_audibly(played), "Chromium played none of the reply audibly"
    assert timeline["client_events"][0] == "rtc.call.sdp.create"


def best_correlation_at(needle: np.ndarray, haystack: np.ndarray) -> tuple[float, int]:
    """The peak correlation of `needle` in `haystack`, and where it is."""
    return best_match(haystack, needle)


def received_pcm(packets: list[dict[str, Any]] | None) -> np.ndarray:
    """The audio a page's receiver got, from its packets (tests/browser/common.js, PacketRecorder): each
    Opus payload decoded and placed at its own RTP timestamp (48 kHz), a gap left silent.

    Why not what Chromium played: its jitter buffer (NetEq) time-stretches to follow the network, adding
    or removing a few ms of audio here and there, and headless Chromium's ScriptProcessor drops whole
    4096-sample buffers when a loaded machine runs its audio thread late. A correlation of what it played
    swings with the machine's load (0.6 to 0.99, and windows found out of order, for audio that arrived
    intact); the packets are what crossed the network, whatever the load.
    """
    assert packets, "the page recorded no packets"
    decoder = OpusDecoder()
    first = packets[0]["ts"]
    placed: list[tuple[int, np.ndarray]] = []
    for p in packets:
        at = (p["ts"] - first) % (1 << 32)  # RTP timestamps wrap at 2**32
        frames = decoder.decode(JitterFrame(base64.b64decode(p["data"]), p["ts"]))
        placed += [(at, pcm_of(f).reshape(-1, f.layout.nb_channels)[:, 0]) for f in frames]
    out = np.zeros(max(at + len(x) for at, x in placed), np.int16)
    for at, x in placed:
        out[at : at + len(x)] = x
    return out


def played_audibly(played: np.ndarray) -> bool:
    """Chromium's own decoder played the audio: some 20 ms of what the page recorded is clearly audible."""
    frames = played[: len(played) // 960 * 960].reshape(-1, 960).astype(np.float64) / 32768
    return bool(frames.size) and float(np.sqrt(np.mean(frames**2, axis=1)).max()) > 0.01


# --------------------------------------------------------------------------------------------------
# 2. The agent's call, answered by Chromium


async def test_agent_call_answered_by_chromium(pages: PageServer, open_page: Any, question: Question) -> None:
    page = await open_page(pages.page_url("service.html"))
    await page.call("serve", {"relayUrl": pages.ws_origin + SERVICE_PATH})
    await pages.wait_page()
    said = espeak("the quick brown fox jumps over the lazy dog")
    mic = np.concatenate([np.zeros(8000, np.int16), said, np.zeros(16000 * 20, np.int16)])
    received: list[Any] = []
    source = PacedSource(mic)
    call = VoiceLiveCall(
        Target(endpoint=pages.ws_origin, api_version=protocol.DEFAULT_API_VERSION, model="gpt-realtime"),
        ApiKey(Secret(RELAY_KEY)),
        MicTrack(source),
        CallOptions(ice_pin=("127.0.0.1",), connect_timeout_s=5, answer_timeout_s=5, data_channel_timeout_s=5),
        on_remote_audio=received.append,
    )
    await call.start()
    try:
        assert call.rtc_call_id == "rtc_page" and call.session_id == "sess_page"
        turn = [{"type": t, "event_id": f"evt_{i}", **fields} for i, (t, fields) in enumerate(PAGE_TURN, 1)]
        await page.call("sendOnDataChannel", turn, 5000)
        events = [e for e in await collect(call, PAGE_TURN[-1][0], timeout=5) if e.type != "session.created"]
        assert [e.type for e in events] == [e["type"] for e in turn]
        assert [type(e).__name__ for e in events] == [
            "SpeechStarted", "SpeechStopped", "ResponseCreated", "OutputAudioStarted", "TranscriptDone",
            "ResponseDone", "OutputAudioStopped",
        ]  # fmt: skip
        assert events[0].audio_start_ms == 500 and events[1].audio_end_ms == 2900  # type: ignore[attr-defined]
        assert events[4].transcript == "Hi." and events[6].response_id == "resp_1"  # type: ignore[attr-defined]
        # Both speak at once: the agent its sentence, the page its fake microphone (the question).
        assert await wait_until(lambda: len(received) * 0.02 >= LEAD_S + len(question.speech_16k) / 16000 + 0.6, 10)
        assert await wait_until(lambda: source.pos >= 8000 + len(said) + 8000, 10)
        result = await page.call("result", True, timeout=20)
    finally:
        await call.hangup()
        await page.call("stop")
    assert result["states"] == {"connection": "connected", "channel": "open"}
    assert sdp_codecs(result["offer"]) == ["opus"]  # the agent's Opus-only offer, accepted by Chromium
    said_48k, played = convert_pcm(said, 16000, RATE).astype(np.int16), pcm(result["audio"])
    to_page = best_correlation(said_48k, received_pcm(result["packets"]))
    # the agent's jitter buffer stretches time a little (a frame concealed while a packet is late, a quiet
    # one dropped to catch up): judged in windows each aligned on its own, as bench network judges a reply
    to_agent = compare(question.speech_48k, remote_mono(received), RATE).correlation or 0.0
    print(
        f"correlation: agent to Chromium {to_page:.3f} as received ({best_correlation(said_48k, played):.3f} as "
        f"played; {result['inbound']}), to the agent {to_agent:.3f}"
    )
    assert to_page >= 0.9, f"the page received the agent with correlation {to_page:.3f}"
    assert played_audibly(played), "Chromium played none of the agent's audio audibly"
    assert to_agent >= 0.9, f"the agent heard the page with correlation {to_agent:.3f}"
    relayed = [json.loads(m)["type"] for _, m in pages.relayed]
    assert relayed[:3] == ["rtc.call.sdp.create", "session.created", "rtc.call.sdp.created"], relayed


# --------------------------------------------------------------------------------------------------
# What the emulator says to a browser's offer it cannot use


async def test_offer_with_only_tcp_port_9_candidates_gets_bad_sdp_naming_both_fixes(
    emulators: Emulators, pages: PageServer, open_page: Any
) -> None:
    emu = await emulators.get("webrtc")
    page = await open_page(pages.page_url("client.html"))
    offer = await page.call("offerOnly", {})
    candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
    tcp = [c for c in candidates if c.split()[2].lower() == "tcp"]
    assert tcp and all(c.split()[5] == "9" and "tcptype active" in c for c in tcp), candidates
    tcp_only = "\r\n".join(
        line for line in offer.splitlines() if not (line.startswith("a=candidate:") and line.split()[2] == "udp")
    )
    url = f"{emu.url}{protocol.CALLS_PATH}?api-version={protocol.DEFAULT_API_VERSION}&model=gpt-realtime"
    async with websockets.connect(url, additional_headers={"api-key": emu.key}, open_timeout=5, logger=WS_LOG) as ws:
        await ws.send(json.dumps({"type": "rtc.call.sdp.create", "sdp_offer": tcp_only + "\r\n"}))
        async with asyncio.timeout(5):
            reply = {"type": None}
            while reply["type"] not in ("rtc.call.error", "rtc.call.sdp.created"):
                reply = json.loads(await ws.recv())
    assert reply["type"] == "rtc.call.error" and reply["error"]["code"] == "bad_sdp", reply
    message = reply["error"]["message"]
    assert "port 9" in message and "network.ice_loopback" in message
    assert "--allow-loopback-in-peer-connection" in message


# --------------------------------------------------------------------------------------------------
# 3. Numbers: Chromium vs the agent, same emulator, one run


async def chromium_turn(page: Page, emu: EmulatorProcess) -> dict[str, float]:
    started = await page.call("startCall", {"url": browser_url(emu), "session": SESSION}, timeout=15)
    assert "error" not in started, started
    stopped = await page.call("waitEvent", "input_audio_buffer.speech_stopped", "data", 10000, timeout=12)
    first = None
    deadline = time.monotonic() + 5
    while first is None and time.monotonic() < deadline:
        first = (await page.call("result", False))["first_audible"]
        await asyncio.sleep(0.05)
    await page.call("hangup")
    assert first is not None, "no reply audio reached the page"
    return {"connected": started["times"]["connected"], "reply": first, "after_stop": first - stopped["t"]}


async def agent_turn(emu: EmulatorProcess, question: Question) -> dict[str, float]:
    first: list[float] = []

    def on_audio(frame: Any) -> None:
        if not first and np.sqrt(np.mean((frame.to_ndarray().astype(np.float64) / 32768) ** 2)) > 0.01:
            first.append(time.monotonic())

    call = VoiceLiveCall(
        Target(endpoint=emu.url, api_version=protocol.DEFAULT_API_VERSION, model="gpt-realtime"),
        ApiKey(Secret(emu.key)),
        MicTrack(PacedSource(question.mic_16k)),
        CallOptions(session=SESSION, ice_pin=("127.0.0.1",), connect_timeout_s=5, answer_timeout_s=5),
        on_remote_audio=on_audio,
    )
    await call.start()
    try:
        stopped_t = None
        async with asyncio.timeout(10):
            async for event in call.events():
                if event.type == "input_audio_buffer.speech_stopped" and stopped_t is None:
                    stopped_t = time.monotonic()
                if event.type == "output_audio_buffer.started":
                    break
        assert stopped_t is not None
        assert await wait_until(lambda: bool(first), 5), "no reply audio reached the agent"
    finally:
        await call.hangup()
    t0, connected = call.timings.start, call.timings.connected
    assert connected is not None
    ms = {"connected": connected - t0, "reply": first[0] - t0, "after_stop": first[0] - stopped_t}
    return {key: value * 1000 for key, value in ms.items()}


async def test_time_to_connected_and_first_reply_chromium_vs_agent(
    emulators: Emulators, pages: PageServer, open_page: Any, question: Question
) -> None:
    emu = await emulators.get("webrtc")
    page = await open_page(pages.page_url("client.html"))
    runs: dict[str, list[dict[str, float]]] = {"chromium": [], "agent": []}
    for _ in range(5):
        runs["chromium"].append(await chromium_turn(page, emu))
        runs["agent"].append(await agent_turn(emu, question))
    medians = {
        who: {key: round(statistics.median(r[key] for r in rs), 1) for key in ("connected", "reply", "after_stop")}
        for who, rs in runs.items()
    }
    lines = [
        "time to connected / first reply audio (ms from the start of the call; medians of 5, same emulator):",
        *(
            f"  {who:8s} connected {m['connected']:7.1f}   first reply audio {m['reply']:7.1f}   "
            f"(after speech_stopped {m['after_stop']:6.1f})"
            for who, m in medians.items()
        ),
    ]
    print("\n".join(lines))
    log.info("%s", "\n".join(lines))
    for who, rs in runs.items():
        for r in rs:
            assert 0 < r["connected"] < 3000, (who, r)
            assert 0 < r["after_stop"] < 2000, (who, r)
