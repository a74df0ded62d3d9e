"""`voice-agent bench audio`: the audio path's latency, pre-roll, catch-up, barge-in and CPU, measured.

One run, on this machine, with real parts: the emulator in its own process on 127.0.0.1 (so the agent's
CPU is measured alone; it records what it received), the agent with a real ALSA capture device (the file
plugin, fed in real time from a FIFO) and a real ALSA playback device (a WAV file). The script the
"user" speaks:

    "hey jarvis" . command (said right after the wake word) . (the parrot reply plays)
    . a long question . (its reply starts) . "stop, stop" over the reply (barge-in) . silence

The emulator answers the offer late (`answer_delay_s`, 500 ms by default), so the command piles up in
the pre-roll while the call connects, and must still arrive whole.

What it reports (milliseconds; p50 and p95 where it is a distribution):
- uplink_ms: capture timestamp of a 20 ms frame to the moment the mic track hands it to the Opus encoder
  and RTP sender, in steady state (after the catch-up);
- downlink_ms: a remote audio frame leaving aiortc's receiver to the ALSA write that carried it;
- speaker_ms: the same frame to the moment it comes out of the device (the write's time plus what the
  device held ahead of it): what a listener hears. In a call the capture thread writes the speaker's
  periods (full duplex), so a frame waits in the playout buffer for the next read instead of in the
  device: downlink_ms grows by about half a period, speaker_ms does not;
- preroll_lost_ms: command audio missing from what the emulator received;
- catchup_s: call connected to the uplink back at real time;
- barge_in_flush_ms: the agent's speech_started (during a reply) to the last reply sample written;
- underruns (the playout buffer ran dry mid-audio: a frame came late), xruns (ALSA itself ran dry: the
  writer was late), late_writes (the same, by the playback's own schedule: the file plugin never
  xruns), overruns over the whole call; cpu_pct of the agent process during the call (100 = one core).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.fileplugin import FifoFeeder, use_file_plugin
from ..audio.resample import convert_pcm
from ..config import Config
from ..emulator.record import read_call_record
from ..leds import Pattern
from ..observe import Observer
from ..voicelive.auth import ApiKey, Secret
from .common import emulator_process, pct
from .speech import espeak, quiet

GOALS = {
    "uplink_ms_p50": ("<=", 30.0),
    "downlink_ms_p50": ("<=", 40.0),
    "preroll_lost_ms": ("<=", 0.0),
    "catchup_s": ("<=", 3.0),
    "barge_in_flush_ms": ("<=", 30.0),
    "reply_cut_ms": ("<=", 0.0),
    "after_stop_audible_ms": ("<=", 0.0),
    "underruns": ("<=", 0),
    "xruns": ("<=", 0),
    "late_writes": ("<=", 0),
    "overruns": ("<=", 0),
}

COMMAND = "what is the weather like tomorrow in seattle"
QUESTION = "tell me a long story about a lighthouse keeper who lived on a small island"
STOP = "stop stop"


@dataclasses.dataclass
class Script:
    audio: np.ndarray  # 16 kHz mono
    command: np.ndarray  # the command, as spoken
    command_at_s: float  # where the command starts in `audio`


def build_script(call_s: float, wake_gap_s: float) -> Script:
    """The user's side of the call, in real time. The barge-in lands 0.8 s into the question's reply
    (the emulator replies about 0.55 s after speech ends: 500 ms of silence plus transport)."""
    wake, command, question, stop = espeak("hey jarvis"), espeak(COMMAND), espeak(QUESTION), espeak(STOP)
    command_reply_s = len(command) / 16000 + 0.3 + 0.6  # parrot reply (with its 300 ms prefix) and a gap
    parts = [
        quiet(1.5),
        wake,
        quiet(wake_gap_s, seed=1),
        command,
        quiet(0.6 + command_reply_s, seed=2),
        question,
        quiet(0.55 + 0.8, seed=3),
        stop,
    ]
    head = np.concatenate(parts)
    tail = quiet(max(1.0, call_s - len(head) / 16000), seed=4)
    command_at = (len(quiet(1.5)) + len(wake) + len(quiet(wake_gap_s, seed=1))) / 16000
    return Script(np.concatenate([head, tail]), command, command_at)


def preroll_lost_ms(command16: np.ndarray, received48: np.ndarray, window_ms: int = 50) -> float | None:
    """How much of the command's start never reached the emulator.

    The command's second half is located in the received audio by cross-correlation; then each
    50 ms window of the command's first half is checked at its aligned place. Loud windows that do not
    match before the first one that does are the lost start. (Opus keeps real speech above 0.9 here.)"""
    cmd = convert_pcm(command16, 16000, 48000).astype(np.float64)
    half = cmd[len(cmd) // 2 :]
    got = received48.astype(np.float64)
    if len(got) < len(cmd):
        return None
    size = 1 << (len(got) + len(half)).bit_length()
    xc = np.fft.irfft(np.fft.rfft(got, size) * np.conj(np.fft.rfft(half - half.mean(), size)), size)
    offset = int(np.argmax(xc[: len(got) - len(half) + 1])) - len(cmd) // 2  # where the command starts
    win = 48 * window_ms
    threshold = 0.1 * np.sqrt(np.mean(cmd**2))
    lost = 0.0
    for start in range(0, len(cmd) // 2, win):
        a = cmd[start : start + win]
        if np.sqrt(np.mean(a**2)) < threshold:
            continue  # a quiet stretch of the command says nothing either way
        pos = offset + start
        b = got[pos : pos + win] if pos >= 0 else np.zeros(0)
        if len(b) == win and np.corrcoef(a, b)[0, 1] > 0.6:
            return lost
        lost = (start + win) / 48
    return lost


async def run_audio_bench(
    call_s: float = 60.0, answer_delay_s: float = 0.5, wake_gap_s: float = 0.0, output_order: str = "webrtc"
) -> dict[str, Any]:
    script = build_script(call_s, wake_gap_s)
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        order = ("--output-order", output_order)
        async with emulator_process(tmpdir, "--fault", f"answer_delay_s={answer_delay_s}", *order) as emu:
            return await _measure(script, tmpdir, emu.url, emu.key, emu.record_dir, call_s, output_order)


async def _measure(
    script: Script, tmpdir: Path, url: str, key: str, record_dir: Path, call_s: float, output_order: str
) -> dict[str, Any]:
    from ..demo import demo_config

    fifo = tmpdir / "mic.fifo"
    base = demo_config(Config(), url, fifo, tmpdir / "out.wav")
    config = dataclasses.replace(
        base,
        conversation=dataclasses.replace(base.conversation, followup_s=call_s),
        voicelive=dataclasses.replace(base.voicelive, answer_timeout_s=10.0),
        audio=dataclasses.replace(base.audio, earcons=dataclasses.replace(base.audio.earcons, wake=None, goodbye=None)),
    )
    uplink: list[tuple[float, float]] = []  # (time sent, capture time)
    downlink: list[tuple[float, int]] = []  # (time received from aiortc, playout mark)

    cpu_marks: dict[str, float] = {}

    class Watch(Observer):
        def uplink_frame(self, t_capture: float | None, frames_sent: int) -> None:
            if t_capture is not None:
                uplink.append((time.monotonic(), t_capture))

        def pattern_shown(self, pattern: Pattern) -> None:
            if pattern.name == "listening" and "call_up" not in cpu_marks:  # the call is up
                t = os.times()
                cpu_marks["call_up"] = t.user + t.system

        def reply_frame(self, t_received: float, mark: int, audible: bool) -> None:
            if audible:
                downlink.append((t_received, mark))

    agent = Agent(config, ApiKey(Secret(key)), Watch())
    feeder = FifoFeeder(fifo, script.audio, rate=16000, period_frames=320, then="silence")
    feeder.start()
    t_feed = time.monotonic()
    try:
        await agent.start()
        runner = asyncio.create_task(agent.run(max_conversations=1))
        # the script ends, then the follow-up window would run on: hang up when the script is done
        await asyncio.wait({runner}, timeout=len(script.audio) / 16000 + 2)
        cpu_end = os.times()
        t_end = time.monotonic()
        if agent.conversation is not None:
            await agent.conversation.hang_up("benchmark done")
        await asyncio.wait_for(runner, 15)
    finally:
        await agent.stop()
        feeder.stop()
    result = agent.results[0]
    call_up = result.t_trigger + (result.connect_ms or 0) / 1000
    cpu_start = cpu_marks.get("call_up", 0.0)
    await asyncio.sleep(0.5)  # the emulator writes its record when the call closes
    received, timeline = read_call_record(record_dir, 0)

    lat = [(sent - cap) * 1000 for sent, cap in uplink]
    caught = next((sent for sent, cap in uplink if sent > call_up and (sent - cap) < 0.06), None)
    steady = [(sent - cap) * 1000 for sent, cap in uplink if caught is not None and sent >= caught + 1.0]
    def after_receipt(moment: Callable[[int], float | None]) -> list[float]:
        """Milliseconds from each frame's receipt to `moment(its mark)` (written, heard)."""
        return [(t - t_r) * 1000 for t_r, mark in downlink if (t := moment(mark)) is not None and t >= t_r]

    down = after_receipt(agent.playback.first_write_after)
    heard = after_receipt(agent.playback.first_play_after)
    flush_ms = _barge_in_flush_ms(result, agent)
    period_ms = config.audio.playback.period_ms
    cut_ms = _reply_cut_ms(result, agent, timeline)
    # evidence that the barge-in interrupted sound: the reply was audible right before it
    before = [t for t in agent.playback.audible_writes if result.t_barge_ins and t < result.t_barge_ins[0]]
    playing_ms = round((result.t_barge_ins[0] - max(before)) * 1000, 1) if before else None
    out: dict[str, Any] = {
        "ok": bool(result.responses) and result.barge_ins == 1,
        "uplink_ms_p50": pct(steady, 0.5),
        "uplink_ms_p95": pct(steady, 0.95),
        "uplink_frames": len(lat),
        "downlink_ms_p50": pct(down, 0.5),
        "downlink_ms_p95": pct(down, 0.95),
        "speaker_ms_p50": pct(heard, 0.5),
        "speaker_ms_p95": pct(heard, 0.95),
        "preroll_lost_ms": preroll_lost_ms(script.command, received),
        "catchup_s": round(caught - call_up, 2) if caught is not None else None,
        "connect_ms": result.connect_ms,
        "barge_in_flush_ms": flush_ms,
        # the first reply is never interrupted: what of its sound never reached ALSA
        "reply_cut_ms": cut_ms,
        # reply sound written to ALSA after the stop, beyond the one period already on its way
        "after_stop_audible_ms": None if flush_ms is None else round(max(0.0, flush_ms - period_ms), 1),
        "output_order": output_order,
        "reply_audible_until_barge_in_ms": playing_ms,
        "underruns": agent.playback.stats.underruns,
        "xruns": agent.playback.stats.xruns,
        "late_writes": agent.playback.stats.late_writes,
        "overruns": agent.capture.stats.overruns,
        "cpu_pct": round(100 * ((cpu_end.user + cpu_end.system) - cpu_start) / max(1e-6, t_end - call_up), 1),
        "call_s": round(t_end - call_up, 1),
        "responses": result.responses,
        "emulator_speech_events": len(timeline["speech_started_t"]),
        "started_feeding_to_wake_ms": round((result.t_trigger - t_feed) * 1000, 1),
    }
    return out


def _reply_cut_ms(result: Any, agent: Agent, timeline: dict[str, Any]) -> float | None:
    """The first reply's sound as the emulator streamed it, less what was written to ALSA between its
    first sample and the next reply (or the barge-in): 0 when the agent played it whole, however the
    service ordered `response.done` and `output_audio_buffer.stopped`. The emulator's side counts the
    frames clearly audible (`frames.CLEARLY_AUDIBLE`): after Opus coding, a frame whose peak is near the
    audibility threshold may land on either side of it, which is the codec, not a cut."""
    streamed = timeline.get("reply_clearly_audible_ms") or []
    if not streamed or not result.reply_marks:
        return None
    start = agent.playback.first_write_after(result.reply_marks[0])
    if start is None:
        return streamed[0]
    later = [t for m in result.reply_marks[1:] if (t := agent.playback.first_write_after(m)) is not None]
    end = min([*later, *result.t_barge_ins, float("inf")])
    period_ms = agent.playback.period_s * 1000
    played = period_ms * sum(1 for t in agent.playback.audible_writes if start - 0.001 <= t < end)
    return round(max(0.0, streamed[0] - played), 1)


def _barge_in_flush_ms(result: Any, agent: Agent) -> float | None:
    """From the agent's flush on speech_started to the last audible sample written after it, before the
    next reply begins."""
    if not result.t_barge_ins:
        return None
    t0 = result.t_barge_ins[0]
    next_reply = [t for m in result.reply_marks if (t := agent.playback.first_write_after(m)) is not None and t > t0]
    limit = min(next_reply) if next_reply else float("inf")
    after = [t for t in agent.playback.audible_writes if t0 <= t < limit]
    return round((max(after) - t0) * 1000, 1) if after else 0.0


def summarize(runs: list[dict[str, Any]]) -> str:
    """The figures of each run side by side (one column an output order), with the goals."""
    heads = [str(run.get("output_order", "")) for run in runs]
    lines = [f"{'metric':<32} " + " ".join(f"{h:>14}" for h in heads) + "   goal"]
    for key in runs[0]:
        values = [run.get(key) for run in runs]
        goal = GOALS.get(key)
        mark = ""
        if goal is not None:
            op, bound = goal
            checked = [v for v in values if isinstance(v, int | float)]
            mark = f"{op} {bound}  {'ok' if all(v <= bound for v in checked) else 'MISSED'}" if checked else ""
        lines.append(f"{key:<32} " + " ".join(f"{v!s:>14}" for v in values) + f"   {mark}")
    return "\n".join(lines)
