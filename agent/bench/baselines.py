"""The bare baselines the agent's CPU is compared with, fed the same audio in the same run.

- openWakeWord alone: its own `Model.predict` (whichever path the agent's detector takes) on the 16 kHz
  audio in 80 ms chunks, fed at real time on a thread (process CPU over wall time, as the agent's is
  measured), and also as fast as it goes (CPU seconds per audio second, x100). The two differ: on this
  kind of machine (a VM) a predict that runs every 80 ms after a sleep costs about twice one that runs
  straight after the last, caches and CPU clock being cold. A listener runs at real time, so the paced
  figure is the baseline; the unpaced one is the floor.
- aiortc alone: a `RTCPeerConnection` with one sendrecv Opus transceiver whose track hands out the same
  audio at real time in 20 ms frames at its own rate, 16 kHz, as aiortc's `MediaPlayer` would (frames
  at 48 kHz cost the bare client about a point more: aiortc's audio level loop runs over every sample),
  the `voice-live-events` data channel (messages discarded), and the remote audio received and discarded,
  talking to the same emulator. Signalling goes over the agent's own `ControlChannel` (a handful of
  messages, before the measured stretch). It runs in a process of its own (`bare_call`), at the same
  time as the agent's call, and its process CPU over wall time is measured in the same windows.

openWakeWord runs while no agent runs in the process, so the process CPU is its alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from ..audio.resample import convert_pcm, frame_from_pcm
from ..config import WakeConfig
from ..voicelive import protocol
from ..voicelive.auth import Credentials
from ..voicelive.control import ControlChannel, Target
from ..voicelive.ice import LOOPBACK, host_addresses, rtc_configuration
from .common import cpu_windows

log = logging.getLogger(__name__)



def _paced_predict(model: Any, audio16k: np.ndarray, seconds: float) -> None:
    """Model.predict on 80 ms chunks of `audio16k` at real time, for `seconds` (a minimal listener)."""
    from ..wake.wakeword import CHUNK, RATE

    t0 = time.monotonic()
    for k in range(min(len(audio16k) // CHUNK, int(seconds * RATE / CHUNK))):
        delay = t0 + k * CHUNK / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        model.predict(audio16k[k * CHUNK : (k + 1) * CHUNK])


@dataclass
class OwwBaseline:
    paced_windows: list[float]  # percent of one core, fed at real time
    unpaced_runs: list[float]  # CPU seconds per audio second x100, as fast as it goes


async def bare_oww(cfg: WakeConfig, audio16k: np.ndarray, settle_s: float, seconds: float, window_s: float,
                   repeats: int = 3) -> OwwBaseline:  # fmt: skip
    """openWakeWord alone, with the agent's models (`cfg`), on `audio16k`: at real time on a thread of its
    own (CPU windows over `seconds` after `settle_s`, as the agent's are measured), and unpaced."""
    from ..wake.wakeword import RATE as WAKE_RATE
    from ..wake.wakeword import load_openwakeword_model
    from .wake import run_bare

    model = await asyncio.to_thread(load_openwakeword_model, cfg)
    unpaced = [100 * run_bare(model, audio16k) / (len(audio16k) / WAKE_RATE) for _ in range(repeats)]
    model.reset()
    feeding = asyncio.ensure_future(asyncio.to_thread(_paced_predict, model, audio16k, settle_s + seconds + window_s))
    await asyncio.sleep(settle_s)
    windows = await cpu_windows(seconds, window_s)
    await feeding
    return OwwBaseline(windows, [round(r, 2) for r in unpaced])


class PacedTrack(MediaStreamTrack):
    """The same audio as the agent's microphone, 20 ms frames at real time, then silence."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, rate: int) -> None:
        super().__init__()
        self._samples = samples
        self._rate = rate
        self._n = rate // 50
        self._t0: float | None = None
        self._k = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._k * 0.02 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self._n
        chunk = self._samples[self._k * n : (self._k + 1) * n]
        if len(chunk) < n:
            chunk = np.zeros(n, dtype=np.int16)
        frame = frame_from_pcm(chunk, self._rate, pts=self._k * n)
        self._k += 1
        return frame


@dataclass
class BareCall:
    """A bare aiortc call to the emulator, up and streaming."""

    pc: RTCPeerConnection
    control: ControlChannel
    tasks: list[asyncio.Task[Any]]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.control.close(), 2)
        await self.pc.close()


async def _discard(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


async def bare_call(
    target: Target, credentials: Credentials, session: dict[str, Any], audio16k: np.ndarray, rate: int = 16000
) -> BareCall:
    """Offer, answer, connect: the minimum a WebRTC client of Voice Live does, nothing else."""
    control = await ControlChannel.connect(target, credentials, 10.0)
    pc = RTCPeerConnection(rtc_configuration([]))
    tasks: list[asyncio.Task[Any]] = []
    connected = asyncio.Event()
    channel = pc.createDataChannel(protocol.DATA_CHANNEL_LABEL)
    channel.on("message", lambda _message: None)
    transceiver = pc.addTransceiver(PacedTrack(convert_pcm(audio16k, 16000, rate), rate), direction="sendrecv")
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
    )
    pc.on("track", lambda track: tasks.append(asyncio.create_task(_discard(track))))
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    with host_addresses(LOOPBACK):
        await pc.setLocalDescription(await pc.createOffer())
    await control.send(protocol.sdp_create(pc.localDescription.sdp, session))
    messages = control.messages().__aiter__()
    parser = protocol.EventParser()
    answer: str | None = None
    while answer is None:
        event = parser.parse(await asyncio.wait_for(messages.__anext__(), 10), "control")
        if isinstance(event, protocol.RtcCallSdpCreated):
            answer = event.sdp_answer
    tasks.append(asyncio.create_task(_drain(messages)))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 10)
    return BareCall(pc, control, tasks)


async def _drain(messages: Any) -> None:
    async for _ in messages:
        pass
