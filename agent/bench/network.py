"""`voice-agent bench network`: one call per simulated network, what the user hears and what the service hears.

Per profile (agent.netsim.profiles), a fresh emulator in its own process with `--network PROFILE` (its
UDP relay carries the call's datagrams both ways; `outage` also stalls the WebSocket), replying with a
fixed spoken reply, and the agent in this process with real ALSA devices (the file plugin): the wake word,
a command said over the uplink, the reply played to the speaker. `outage` then says the wake word again
after the link is back: that call must connect.

Per profile it reports:
- packets_lost_down / packets_lost_up: what the network took (the relay's counts);
- concealed_frames, fec_recovered_down, late_down, jitter_delay_ms_p50/_p95 (the jitter buffer's wait,
  arrival to play), from the agent's jitter buffer (None with concealment off);
- holes_heard: 20 ms or more of digital silence in what was played where the reply had sound;
- heard_correlation: the reply as played against the reply as sent (bench.heard: windows aligned);
- underruns (the playout buffer ran dry in sound), cpu_pct (the agent, during the call);
- uplink_lost, uplink_single_lost, uplink_fec_recovered_pct: the emulator's receiver;
- drop: call_survived, reply_resumed; outage: call_ended_s (from the link's drop to the call's end),
  back_to_idle, next_call_ok.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.fileplugin import FifoFeeder, use_file_plugin
from ..audio.resample import convert_pcm
from ..config import Config
from ..leds import Pattern
from ..netsim.profiles import PROFILES
from ..observe import Observer
from ..voicelive.auth import ApiKey, Secret
from ..wake.detect import read_wav
from .common import call_records, emulator_process
from .heard import compare
from .speech import espeak, quiet, write_wav

REPLY = (
    "the lighthouse keeper climbed the narrow stairs every evening, lit the great lamp, and watched the "
    "fishing boats come home across the dark and restless water"
)
COMMAND = (
    "what is the weather going to be like in seattle tomorrow afternoon, and should I take an umbrella "
    "when I walk the dog down to the harbour after lunch"
)

GOALS: dict[str, dict[str, tuple[str, float]]] = {
    "clean": {"holes_heard": ("<=", 0), "underruns": ("<=", 0), "jitter_delay_ms_p50": ("<=", 20.0)},
    "wifi": {"holes_heard": ("<=", 0), "underruns": ("<=", 0)},
    "wifi-bad": {
        "holes_heard": ("<=", 0),
        "underruns": ("<=", 0),
        "heard_correlation": (">=", 0.90),
        "jitter_delay_ms_p50": ("<=", 60.0),
        "uplink_fec_recovered_pct": (">=", 50.0),
    },
    "drop": {"holes_heard": ("<=", 0), "underruns": ("<=", 0)},
    "outage": {},
}


def _meets(value: Any, op: str, goal: float) -> bool:
    if value is None:
        return False
    return value <= goal if op == "<=" else value >= goal


async def run_network_bench(
    profiles: list[str] | None = None, concealment: bool = True, seed: int = 1
) -> dict[str, Any]:
    names = profiles or list(PROFILES)
    reply16 = espeak(REPLY)
    command16 = espeak(COMMAND)
    wake16 = espeak("hey jarvis")
    out: dict[str, Any] = {"ok": True, "concealment": concealment, "profiles": {}}
    for name in names:
        result = await _one_profile(name, reply16, command16, wake16, concealment, seed)
        goals = GOALS.get(name, {})
        result["goals_missed"] = [k for k, (op, g) in goals.items() if not _meets(result.get(k), op, g)]
        if name == "drop":
            result["goals_missed"] += [k for k in ("call_survived", "reply_resumed") if not result.get(k)]
        if name == "outage":
            limit = result.get("media_timeout_s", 5.0) + 1
            if not _meets(result.get("call_ended_s"), "<=", limit):
                result["goals_missed"].append("call_ended_s")
            result["goals_missed"] += [k for k in ("back_to_idle", "next_call_ok") if not result.get(k)]
        out["profiles"][name] = result
        out["ok"] = out["ok"] and result["ran"]
    return out


async def _one_profile(
    name: str, reply16: np.ndarray, command16: np.ndarray, wake16: np.ndarray, concealment: bool, seed: int
) -> dict[str, Any]:
    outage = PROFILES[name].drop_websocket
    with tempfile.TemporaryDirectory(prefix=f"voice-agent-net-{name}-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        reply_wav = write_wav(tmpdir / "reply.wav", reply16)
        extra = ("--network", name, "--network-seed", str(seed), "--reply", "file", "--reply-wav", str(reply_wav))
        async with emulator_process(tmpdir, *extra) as emu:
            return await _measure(name, tmpdir, emu.url, emu.key, emu.record_dir, reply16, command16, wake16,
                                  concealment, outage)  # fmt: skip


async def _measure(
    name: str,
    tmpdir: Path,
    url: str,
    key: str,
    record_dir: Path,
    reply16: np.ndarray,
    command16: np.ndarray,
    wake16: np.ndarray,
    concealment: bool,
    outage: bool,
) -> dict[str, Any]:
    from ..demo import demo_config

    fifo = tmpdir / "mic.fifo"
    base = demo_config(Config(), url, fifo, tmpdir / "out.wav")
    config = dataclasses.replace(
        base,
        network=dataclasses.replace(base.network, concealment=concealment),
        audio=dataclasses.replace(base.audio, earcons=dataclasses.replace(base.audio.earcons, wake=None, goodbye=None,
                                                                           error=None)),
    )  # fmt: skip
    reply_s = len(reply16) / 16000
    first = [quiet(1.0), wake16, quiet(0.2, seed=1), command16]
    head = np.concatenate(first)
    calls = 1
    parts = [head]
    if outage:
        # the second wake word after the link is back: the reply starts ~1 s after the command, the
        # outage 1 s into it and lasts its 15 s; then a few seconds for the agent to settle
        gap = 0.6 + 1.0 + 15.0 + 4.0
        parts += [quiet(gap, seed=2), wake16, quiet(0.2, seed=3), command16]
        calls = 2
    parts.append(quiet(reply_s + 6.0, seed=4))
    script = np.concatenate(parts)

    patterns: list[tuple[float, str]] = []
    audible_frames: list[float] = []

    class Watch(Observer):
        def pattern_shown(self, pattern: Pattern) -> None:
            patterns.append((time.monotonic(), pattern.name))

        def reply_frame(self, t_received: float, mark: int, audible: bool) -> None:
            if audible:
                audible_frames.append(t_received)

    agent = Agent(config, ApiKey(Secret(key)), Watch())
    feeder = FifoFeeder(fifo, script, rate=16000, period_frames=320, then="silence")
    feeder.start()
    cpu0 = os.times()
    t0 = time.monotonic()
    try:
        await agent.start()
        runner = asyncio.create_task(agent.run(max_conversations=calls))
        await asyncio.wait({runner}, timeout=len(script) / 16000 + 20)
        if not runner.done():
            if agent.conversation is not None:
                await agent.conversation.hang_up("benchmark done")
            await asyncio.wait({runner}, timeout=15)
        cpu1 = os.times()
        t1 = time.monotonic()
    finally:
        await agent.stop()
        feeder.stop()
    await asyncio.sleep(0.5)  # the emulator writes its records as the calls close
    records = list(call_records(record_dir).values())
    records.sort(key=lambda r: r.get("first_packet_t") or 0)
    net = next((r["network"] for r in reversed(records) if r.get("network")), None)
    first_record = records[0] if records else {}
    results = agent.results
    first_result = results[0] if results else None
    heard, rate = read_wav(tmpdir / "out.wav")
    sent = convert_pcm(reply16, 16000, rate)
    cmp = compare(sent, heard, rate)
    jitter = first_result.jitter if first_result is not None else None
    uplink = first_record.get("uplink") or {}
    cpu_s = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out: dict[str, Any] = {
        "ran": first_result is not None and first_result.rtc_call_id is not None,
        "packets_lost_down": net["down"]["lost"] if net else 0,
        "packets_lost_up": net["up"]["lost"] if net else 0,
        "concealed_frames": jitter["concealed"] if jitter else None,
        "fec_recovered_down": jitter["fec_recovered"] if jitter else None,
        "late_down": jitter["late"] if jitter else None,
        "accelerated": jitter["accelerated"] if jitter else None,
        "jitter_delay_ms_p50": jitter["hold_ms_p50"] if jitter else None,
        "jitter_delay_ms_p95": jitter["hold_ms_p95"] if jitter else None,
        "holes_heard": cmp.holes,
        "heard_correlation": cmp.correlation,
        "underruns": agent.playback.stats.underruns,
        "cpu_pct": round(100 * cpu_s / max(1e-6, t1 - t0), 1),
        "uplink_lost": uplink.get("lost"),
        "uplink_single_lost": uplink.get("single_lost"),
        "uplink_fec_recovered": uplink.get("fec_recovered"),
        "uplink_fec_recovered_pct": uplink.get("fec_recovered_pct"),
        "uplink_single_lost_speech": uplink.get("single_lost_speech"),
        "uplink_fec_recovered_speech_pct": uplink.get("fec_recovered_speech_pct"),
        "downlink_fec": first_record.get("downlink_fec"),
        "uplink_fec": first_result.uplink_fec if first_result is not None else None,
        "uplink_expected_loss_pct": round(100 * first_result.uplink_loss, 1) if first_result is not None else None,
        "end_reason": first_result.end_reason if first_result is not None else None,
        "media_timeout_s": config.voicelive.media_timeout_s,
    }
    if net and net.get("drop_start_t") is not None:
        drop_start, drop_end = net["drop_start_t"], net["drop_end_t"]
        if name == "drop" or not outage:
            out["call_survived"] = bool(first_result and first_result.ok and first_result.t_ended
                                        and first_result.t_ended > drop_end)  # fmt: skip
            out["reply_resumed"] = any(t > drop_end + 0.1 for t in audible_frames)
        else:
            ended = first_result.t_ended if first_result is not None else None
            out["call_ended_s"] = round(ended - drop_start, 2) if ended is not None else None
            between = [n for t, n in patterns if ended is not None and t >= ended and (len(results) < 2
                       or t < results[1].t_trigger)]  # fmt: skip
            out["error_shown"] = next((n for n in between if n not in ("idle", "listening")), None)
            out["back_to_idle"] = "idle" in between
            second = results[1] if len(results) > 1 else None
            out["next_call_ok"] = bool(second and second.ok and second.rtc_call_id)
            out["next_call_after_link_s"] = round(second.t_trigger - drop_end, 2) if second else None
    return out


def summarize(report: dict[str, Any]) -> str:
    rows = [
        "packets_lost_down", "concealed_frames", "fec_recovered_down", "late_down", "holes_heard",
        "heard_correlation", "jitter_delay_ms_p50", "jitter_delay_ms_p95", "underruns", "uplink_lost",
        "uplink_single_lost", "uplink_fec_recovered_pct", "uplink_single_lost_speech",
        "uplink_fec_recovered_speech_pct", "cpu_pct", "call_survived", "reply_resumed",
        "call_ended_s", "back_to_idle", "next_call_ok", "goals_missed",
    ]  # fmt: skip
    names = list(report["profiles"])
    width = max(len(r) for r in rows) + 2
    lines = [f"network bench (concealment {'on' if report['concealment'] else 'off'})"]
    lines.append("".ljust(width) + "".join(n.rjust(12) for n in names))
    for row in rows:
        cells = []
        for n in names:
            v = report["profiles"][n].get(row)
            text = "-" if v is None else (",".join(v) or "none") if isinstance(v, list) else str(v)
            cells.append(text.rjust(12))
        lines.append(row.ljust(width) + "".join(cells))
    return "\n".join(lines)
