"""Many conversations in one process: latency per conversation, and whether the agent leaks.

The agent runs as the service runs it (a real ALSA capture device fed in real time from a FIFO, real
WebRTC calls to the emulator in its own process on 127.0.0.1, playback into a WAV through ALSA). Each
conversation: the "user" says "hey jarvis", a short pause, "lights on"; the emulator parrots it back;
the follow-up window passes; the agent hangs up and must be back in idle. Only then is the next
utterance fed, so conversations never overlap.

Per conversation (all on CLOCK_MONOTONIC, which the emulator's record shares across processes):
- wake_to_first_rtp_ms: the detection (the capture time of the block that completed the wake word's
  80 ms frame, `ConversationResult.t_trigger`) to the arrival of the first microphone RTP packet at the
  emulator (the service);
- wake_to_first_decoded_ms: the same to the emulator's first decoded microphone frame, which comes out
  of aiortc's receive jitter buffer once it prefetched 4 packets (40 ms at the pre-roll's 2x catch-up):
  the service's own jitter buffer, not the device's latency;
- wake_to_listening_ms: detection to the call being up and the state LISTENING (`connect_ms`);
- end_of_speech_to_first_audio_ms: the emulator's speech_stopped to the write that handed the reply's
  first audible sample to ALSA.

Leaks: resident memory, OS threads and open file descriptors after `warmup` conversations (lazily
created executors and caches exist by then) and after the last one, both after a `gc.collect()` with
the agent idle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.fileplugin import FifoFeeder
from ..config import Config
from ..state import State
from ..voicelive.auth import ApiKey, Secret
from .common import ProcSnapshot, call_records, pct, wait_until
from .speech import espeak, quiet

log = logging.getLogger(__name__)

#: A conversation that has not ended this long after its utterance was fed counts as stuck.
CONVERSATION_TIMEOUT_S = 30.0
RSS_GROWTH_LIMIT_PCT = 10.0


def utterance(seed: int = 0) -> np.ndarray:
    """A short clip: "hey jarvis", a pause, "lights on" (16 kHz mono)."""
    return np.concatenate(
        [quiet(0.4, seed=seed), espeak("hey jarvis"), quiet(0.3, seed=seed + 1), espeak("lights on"),
         quiet(0.3, seed=seed + 2)]
    )  # fmt: skip


def conversation_config(tmpdir: Path, url: str, name: str, followup_s: float = 0.8) -> Config:
    """The demo's configuration (file-plugin devices, mock pins, ICE on loopback) for the emulator at
    `url`, with its own FIFO and WAV named after `name`, and a short follow-up window.

    The session asks for no prefix padding: the emulator's parrot reply would otherwise start with the
    300 ms of room noise before the words, and the first audible reply sample would come 300 ms later
    for a reason that is the emulator's, not the agent's."""
    from ..demo import demo_config

    base = demo_config(Config(), url, tmpdir / f"{name}.fifo", tmpdir / f"{name}.wav")
    session = dict(base.voicelive.session)
    session["turn_detection"] = {**session.get("turn_detection", {}), "prefix_padding_ms": 0}
    return dataclasses.replace(
        base,
        conversation=dataclasses.replace(base.conversation, followup_s=followup_s),
        voicelive=dataclasses.replace(base.voicelive, session=session),
    )


@dataclass
class ConversationRecord:
    index: int
    ok: bool  # a reply completed and the call ended normally
    back_to_idle: bool
    end_reason: str
    responses: list[str] = field(default_factory=list)
    rtc_call_id: str | None = None
    t_trigger: float | None = None
    connect_ms: float | None = None
    t_first_audio: float | None = None  # the first audible reply sample written to ALSA
    error: str | None = None


@dataclass
class SoakResult:
    records: list[ConversationRecord]
    warmup: int
    before: ProcSnapshot  # before the first conversation
    start: ProcSnapshot  # after the warm-up
    end: ProcSnapshot  # after the last conversation
    elapsed_s: float
    rss_trace: list[tuple[int, float]] = field(default_factory=list)  # (conversations done, RSS MB)

    @property
    def rss_growth_pct(self) -> float:
        return round(100 * (self.end.rss_mb - self.start.rss_mb) / self.start.rss_mb, 2)

    def summary(self) -> dict[str, Any]:
        n = len(self.records)
        completed = sum(r.ok for r in self.records)
        idle = sum(r.back_to_idle for r in self.records)
        out: dict[str, Any] = {
            "conversations": n,
            "completed": completed,
            "back_to_idle": idle,
            "failures": [dataclasses.asdict(r) for r in self.records if not (r.ok and r.back_to_idle)][:10],
            "warmup": self.warmup,
            "rss_mb_before": self.before.rss_mb,
            "rss_mb_start": self.start.rss_mb,
            "rss_mb_end": self.end.rss_mb,
            "rss_growth_pct": self.rss_growth_pct,
            "threads_start": self.start.threads,
            "threads_end": self.end.threads,
            "py_threads_start": self.start.py_threads,
            "py_threads_end": self.end.py_threads,
            "fds_start": self.start.fds,
            "fds_end": self.end.fds,
            "rss_mb_trace": self.rss_trace,
            "elapsed_s": round(self.elapsed_s, 1),
        }
        out["ok"] = bool(
            n > 0
            and completed == n
            and idle == n
            and self.rss_growth_pct < RSS_GROWTH_LIMIT_PCT
            and self.end.lasting_threads <= self.start.lasting_threads
            and self.end.fds <= self.start.fds
        )
        return out


async def _snapshot(agent: Agent) -> ProcSnapshot:
    await agent.settled()  # the next call's offer made (its sockets open), as at every other snapshot
    gc.collect()
    return ProcSnapshot.take()


async def converse(agent: Agent, mic: FifoFeeder, index: int) -> ConversationRecord:
    """Speak one utterance into the running agent and wait for the conversation to end and the agent
    to be idle again. The agent's `run()` loop must be running."""
    before = agent.conversations_done
    mic.feed(utterance(seed=index % 50))
    ended = await wait_until(lambda: agent.conversations_done > before, CONVERSATION_TIMEOUT_S)
    idle = await wait_until(lambda: agent.state is State.IDLE, 5.0)
    await wait_until(mic.data_done.is_set, 5.0)  # the utterance is all out: the next never overlaps it
    if not ended:
        reason = "no conversation (wake word missed?)" if agent.state is State.IDLE else f"stuck in {agent.state.value}"
        return ConversationRecord(index, ok=False, back_to_idle=idle, end_reason=reason)
    result = agent.results[-1]
    t_audio = agent.playback.first_write_after(result.reply_marks[0]) if result.reply_marks else None
    return ConversationRecord(
        index,
        ok=result.ok and "completed" in result.responses,
        back_to_idle=idle,
        end_reason=result.end_reason,
        responses=list(result.responses),
        rtc_call_id=result.rtc_call_id,
        t_trigger=result.t_trigger,
        connect_ms=result.connect_ms,
        t_first_audio=t_audio,
        error=f"{result.error_kind}: {result.error}" if result.error else None,
    )


async def run_conversations(agent: Agent, mic: FifoFeeder, n: int, warmup: int) -> SoakResult:
    """`n` conversations in a row with the agent (started, its `run()` loop running)."""
    warmup = min(warmup, max(0, n - 1))
    t0 = time.monotonic()
    before = start = await _snapshot(agent)
    records: list[ConversationRecord] = []
    trace: list[tuple[int, float]] = []
    every = max(1, n // 12)
    for i in range(n):
        if i == warmup:
            start = await _snapshot(agent)
        if i % every == 0 and i >= warmup:
            trace.append((i, (await _snapshot(agent)).rss_mb))
        record = await converse(agent, mic, i)
        records.append(record)
        if not (record.ok and record.back_to_idle):
            log.warning("conversation %d: %s", i, record)
        elif (i + 1) % 10 == 0:
            log.info("%d conversations done", i + 1)
    await asyncio.sleep(0.5)  # the last call's teardown callbacks
    end = await _snapshot(agent)
    return SoakResult(records, warmup, before, start, end, time.monotonic() - t0, [*trace, (n, end.rss_mb)])


async def soak_agent(tmpdir: Path, url: str, key: str, n: int, warmup: int, name: str = "soak") -> SoakResult:
    """A fresh agent on its own FIFO, `n` conversations, stopped on the way out."""
    config = conversation_config(tmpdir, url, name)
    mic = FifoFeeder(tmpdir / f"{name}.fifo", quiet(0.5), rate=16000, period_frames=320, then="silence")
    mic.start()
    agent = Agent(config, ApiKey(Secret(key)))
    runner: asyncio.Task[Any] | None = None
    try:
        await agent.start()
        runner = asyncio.create_task(agent.run(), name="conversations")
        return await run_conversations(agent, mic, n, warmup)
    finally:
        if runner is not None:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await agent.stop()
        mic.stop()


async def latencies(records: list[ConversationRecord], record_dir: Path, wait_s: float = 5.0) -> dict[str, Any]:
    """p50 and p95 (ms) of the three latencies over the conversations that have them, joined with the
    emulator's records by rtc_call_id (each is written when its call closes: wait for the last)."""
    wanted = {r.rtc_call_id for r in records if r.rtc_call_id}
    await wait_until(lambda: wanted <= call_records(record_dir).keys(), wait_s, 0.1)
    emulator = call_records(record_dir)
    first_rtp: list[float] = []
    first_decoded: list[float] = []
    listening: list[float] = []
    reply: list[float] = []
    for r in records:
        if r.connect_ms is not None:
            listening.append(r.connect_ms)
        rec = emulator.get(r.rtc_call_id or "")
        if rec is None or r.t_trigger is None:
            continue
        if rec.get("first_packet_t") is not None:
            first_rtp.append((rec["first_packet_t"] - r.t_trigger) * 1000)
        if rec.get("first_rtp_t") is not None:
            first_decoded.append((rec["first_rtp_t"] - r.t_trigger) * 1000)
        stops = [t for t in rec.get("speech_stopped_t", []) if r.t_first_audio is not None and t <= r.t_first_audio]
        if stops and r.t_first_audio is not None:
            reply.append((r.t_first_audio - max(stops)) * 1000)
    out: dict[str, Any] = {}
    for name, values in (("wake_to_first_rtp_ms", first_rtp), ("wake_to_first_decoded_ms", first_decoded),
                         ("wake_to_listening_ms", listening),
                         ("end_of_speech_to_first_audio_ms", reply)):  # fmt: skip
        out[name] = {"p50": pct(values, 0.5), "p95": pct(values, 0.95), "n": len(values)}
    return out
