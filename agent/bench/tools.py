"""`voice-agent bench tools`: tool turns over a real call, what the device adds to the service's time.

The emulator in its own process calls `get_time` (a tool that costs nothing, so the figures are the
path's own) after each of the user's `turns` turns, in the strict order (`response.done` before the tool
events); the agent in this process on real ALSA devices says each command when the last answer has
played. Per turn, from the emulator's timeline and the agent's (one monotonic clock for both):

- speech_end_to_tool_ms: the emulator's `speech_stopped` to the tool running on the device;
- device_call_ms: the tool events sent to the tool running (the WebSocket on loopback, parsing,
  dispatch): what the device adds before the tool;
- tool_ms: the tool itself;
- device_answer_ms: the tool done to the answer and `response.create` sent: what it adds after;
- device_added_ms: the two together (goal <= 20 ms);
- tool_output_to_audio_ms: the answer sent to the first sound of the spoken reply written to ALSA;
- service_answer_ms: the emulator's own part of that (`response.create` in to the first frame out: its
  speech synthesis), and downlink_ms: the rest (the first frame out to the device's first write: the
  network, the jitter buffer and the playout, as for any reply).
Quoted as p50 (and p95) over the turns.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.fileplugin import FifoFeeder, use_file_plugin
from ..config import Config
from ..state import State
from ..voicelive.auth import ApiKey, Secret
from .common import call_records, emulator_process, pct, wait_until
from .speech import espeak, quiet

COMMANDS = ("what time is it", "and what is the date today", "tell me the time again please")
GOAL_DEVICE_ADDED_MS = 20.0


async def run_tools_bench(turns: int = 20) -> dict[str, Any]:
    wake = espeak("hey jarvis")
    commands = [espeak(c) for c in COMMANDS]
    with tempfile.TemporaryDirectory(prefix="voice-agent-tools-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        script = tmpdir / "tools.json"
        script.write_text(json.dumps([{"after_turn": k, "name": "get_time"} for k in range(1, turns + 1)]))
        async with emulator_process(tmpdir, "--tool-script", str(script)) as emu:
            from ..demo import demo_config

            fifo = tmpdir / "mic.fifo"
            base = demo_config(Config(), emu.url, fifo, tmpdir / "out.wav")
            r = dataclasses.replace
            config = r(
                base,
                audio=r(base.audio, earcons=r(base.audio.earcons, wake=None, goodbye=None, error=None)),
                conversation=r(base.conversation, followup_s=4.0),
                tools=r(base.tools, state_dir=tmpdir / "state"),
            )
            agent = Agent(config, ApiKey(Secret(emu.key)))
            feeder = FifoFeeder(fifo, np.concatenate([quiet(1.0), wake, quiet(0.2, seed=1), commands[0]]),
                                rate=16000, period_frames=320, then="silence")  # fmt: skip
            feeder.start()
            said = 1
            try:
                await agent.start()
                runner = asyncio.create_task(agent.run(max_conversations=1))
                state = agent.state
                deadline = time.monotonic() + 20 + turns * 12
                while not runner.done() and time.monotonic() < deadline and said <= turns:
                    await asyncio.sleep(0.02)
                    new = agent.state
                    if new is State.LISTENING and state is State.SPEAKING and feeder.data_done.is_set():
                        if said < turns:
                            feeder.feed(np.concatenate([quiet(0.6, seed=said), commands[said % len(commands)]]))
                        said += 1
                    state = new
                if agent.conversation is not None:
                    await agent.conversation.hang_up("benchmark done")
                await asyncio.wait({runner}, timeout=15)
            finally:
                await agent.stop()
                feeder.stop()
            # the emulator writes the call's record as the call closes
            await wait_until(lambda: call_records(emu.record_dir), 5.0, step=0.1)
            records = list(call_records(emu.record_dir).values())
    result = agent.results[-1] if agent.results else None
    return _measure(agent, result, records[0] if records else {}, turns)


def _measure(agent: Agent, result: Any, record: dict[str, Any], turns: int) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "turns": turns, "tool_turns": 0}
    if result is None or not record:
        return out
    stopped = record.get("speech_stopped_t") or []
    sent = record.get("tool_events_t") or []
    answer_in = record.get("tool_answer_t") or []
    frames = record.get("first_reply_frame_t") or []
    rows: dict[str, list[float]] = {k: [] for k in (
        "speech_end_to_tool_ms", "device_call_ms", "tool_ms", "device_answer_ms", "device_added_ms",
        "tool_output_to_audio_ms", "service_answer_ms", "downlink_ms")}  # fmt: skip
    creates = result.t_tool_response_create
    for k, ((t_start, t_output), call) in enumerate(zip(result.t_tool_calls, result.tool_calls, strict=False)):
        if t_output is None or k >= len(sent):
            continue
        ms = float(call.get("ms") or 0.0)
        t_done = t_start + ms / 1000
        i = bisect.bisect_right(stopped, t_start) - 1
        if i >= 0:
            rows["speech_end_to_tool_ms"].append((t_start - stopped[i]) * 1000)
        rows["device_call_ms"].append((t_start - sent[k]) * 1000)
        rows["tool_ms"].append(ms)
        j = bisect.bisect_left(creates, t_output)
        t_create = creates[j] if j < len(creates) else t_output
        rows["device_answer_ms"].append((t_create - t_done) * 1000)
        rows["device_added_ms"].append((t_start - sent[k] + t_create - t_done) * 1000)
        first = _first_sound_after(agent, result, t_output)
        if first is not None:
            rows["tool_output_to_audio_ms"].append((first - t_output) * 1000)
        a = bisect.bisect_left(answer_in, t_output)
        if a < len(answer_in):
            f = bisect.bisect_left(frames, answer_in[a])
            if f < len(frames):
                rows["service_answer_ms"].append((frames[f] - answer_in[a]) * 1000)
                if first is not None:
                    rows["downlink_ms"].append((first - frames[f]) * 1000)
    out["tool_turns"] = len(rows["device_call_ms"])
    for name, values in rows.items():
        out[f"{name}_p50"] = round(p, 1) if (p := pct(values, 0.5)) is not None else None
        out[f"{name}_p95"] = round(p, 1) if (p := pct(values, 0.95)) is not None else None
    added = out.get("device_added_ms_p50")
    out["goal_device_added_ms"] = GOAL_DEVICE_ADDED_MS
    out["ok"] = out["tool_turns"] >= max(1, turns // 2) and added is not None and added <= GOAL_DEVICE_ADDED_MS
    out["failed_tools"] = sum(not c.get("ok") for c in result.tool_calls)
    return out


def _first_sound_after(agent: Agent, result: Any, t: float) -> float | None:
    """When the first reply sound after `t` was written to ALSA (the reply marks, in order)."""
    for mark in result.reply_marks:
        written = agent.playback.first_write_after(mark)
        if written is not None and written > t:
            return written
    return None


def tools_table(out: dict[str, Any]) -> str:
    lines = [f"tool turns measured: {out['tool_turns']} of {out['turns']} (failed tools: {out.get('failed_tools')})"]
    for name in ("speech_end_to_tool_ms", "device_call_ms", "tool_ms", "device_answer_ms", "device_added_ms",
                 "tool_output_to_audio_ms", "service_answer_ms", "downlink_ms"):  # fmt: skip
        lines.append(f"  {name:<26} p50 {out.get(name + '_p50')!s:>7}   p95 {out.get(name + '_p95')!s:>7}")
    lines.append(f"  goal: device_added_ms p50 <= {GOAL_DEVICE_ADDED_MS:g}: {'met' if out['ok'] else 'MISSED'}")
    return "\n".join(lines)
