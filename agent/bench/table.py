"""`voice-agent bench` (or `bench all`): the agent next to its bare baselines, latencies, and the soak.

One run, one process for the agent and the baselines, the emulator in a subprocess on 127.0.0.1 (so
its CPU never counts), real alsa-lib (the file plugin) with the microphone fed in real time from a
FIFO. In order:

1. Idle listening: the agent listens to `idle_s` of speech that holds no wake word. Its process CPU
   (every thread) over wall time, in windows of `window_s`, median quoted; the resident memory at the
   end is `idle_rss_mb`.
2. In a call: "hey jarvis", then `call_s` of sentences with pauses (the emulator parrots each one
   back, so audio flows both ways), measured from 1.5 s after the call is up. At the same time, in a
   process of its own (`bare_call`), a bare aiortc client streams the same call audio at real time to
   the same emulator (see `baselines`); both are sampled in the same windows, so a noisy spell of the
   machine hits both alike. The agent hangs up.
3. openWakeWord's `Model.predict` alone, with the agent stopped (so the process CPU is its own), on
   the same idle audio at real time (and, as the floor, as fast as it goes). `idle_cpu_ratio` and
   `call_cpu_ratio` divide the agent's figure by the real-time baseline's; `idle_cpu_ratio_unpaced`
   by openWakeWord's unpaced cost.
   Each stretch also gives the CPU of every thread (`*_threads_cpu_pct`): where the agent's extra goes.
4. Conversations: a fresh agent runs max(`conversations`, `soak`) short conversations in a row (see
   `soak`); the latency percentiles are over all of them, the soak figures compare the process after
   `warmup` conversations with the process after the last.

The benchmark's own FIFO feeder is a thread of this process (a device has a sound card instead): its
CPU time, read from its thread CPU clock, is taken out of the agent's figures and shown on its own
(`feeder_cpu_pct`). CPU figures are percent of one core. The machine may be shared and noisy: CPU is
quoted as the median of windows, and every number that could not be measured is null, with the reason
in `unmeasured`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.fileplugin import FifoFeeder, use_file_plugin
from ..call_config import call_options_for
from ..state import State
from ..voicelive.auth import ApiKey, Secret
from .bare_call import BareCallProcess, BareCallSpec
from .baselines import bare_oww
from .common import (
    EmulatorProcess,
    ProcSnapshot,
    cpu_windows,
    emulator_process,
    paired_cpu_windows,
    thread_cpu_by_name,
    thread_cpu_pct,
    thread_cpu_s,
    wait_until,
)
from .soak import conversation_config, latencies, soak_agent
from .speech import espeak, quiet
from .wake import OTHER, VOICES

log = logging.getLogger(__name__)

#: name: (operator, bound), checked on the figure of the same name.
GOALS: dict[str, tuple[str, float]] = {
    "idle_cpu_ratio": ("<=", 1.10),
    "call_cpu_ratio": ("<=", 1.15),
    "wake_to_first_rtp_ms.p50": ("<=", 100.0),
    "idle_rss_mb": ("<=", 120.0),
    "soak.rss_growth_pct": ("<", 10.0),
}

SETTLE_S = 2.0  # after the agent starts listening, before the idle stretch
CALL_SETTLE_S = 1.5  # after the call is up (the pre-roll's catch-up is over), before the call stretch
CALL_SENTENCES = (
    "please tell me what the weather will be like tomorrow morning",
    "and what about the weekend, will it rain in the mountains",
    "remind me to call my sister at six this evening",
    "how long does it take to boil an egg",
)


@dataclass
class BenchOptions:
    conversations: int = 20
    soak: int = 30  # about 5 s each; 300 for the long soak
    warmup: int = 5
    idle_s: float = 25.0
    call_s: float = 15.0
    window_s: float = 5.0


def speech_without_wake_word(seconds: float, sentences: tuple[str, ...], reply_gap: bool) -> np.ndarray:
    """Sentences in several voices with quiet between, `seconds` long. With `reply_gap` the pause after
    each sentence is long enough for the emulator's parrot reply to play (its length plus 1.5 s)."""
    parts: list[np.ndarray] = []
    n, i = 0, 0
    while n < seconds * 16000:
        said = espeak(sentences[i % len(sentences)], VOICES[i % len(VOICES)])
        gap = quiet(len(said) / 16000 + 1.5 if reply_gap else 1.0, seed=i)
        parts += [said, gap]
        n += len(said) + len(gap)
        i += 1
    return np.concatenate(parts)[: int(seconds * 16000)]


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


class _Run:
    """The figures of one run, and why any is missing."""

    def __init__(self) -> None:
        self.out: dict[str, Any] = {}
        self.unmeasured: dict[str, str] = {}

    def missing(self, key: str, why: str) -> None:
        self.out[key] = None
        self.unmeasured[key] = why
        log.warning("%s not measured: %s", key, why)


async def _agent_idle_and_call(run: _Run, emu: EmulatorProcess, tmpdir: Path, opts: BenchOptions,
                               idle_audio: np.ndarray, call_audio: np.ndarray) -> None:  # fmt: skip
    """Phases 1 and 2: one agent, idle listening, then one call."""
    config = conversation_config(tmpdir, emu.url, "agent", followup_s=opts.call_s + 30)
    mic = FifoFeeder(tmpdir / "agent.fifo", idle_audio, rate=16000, period_frames=320, then="silence")
    mic.start()
    agent = Agent(config, ApiKey(Secret(emu.key)))
    runner: asyncio.Task[Any] | None = None
    call_raw = tmpdir / "call.raw"
    call_raw.write_bytes(call_audio.astype("<i2").tobytes())
    bare = BareCallProcess(BareCallSpec(
        endpoint=emu.url, api_version=config.voicelive.api_version, model=config.voicelive.model,
        key_file=emu.key_file, audio=call_raw, session=call_options_for(config).session,
    ))  # fmt: skip

    def feeder_cpu() -> float:
        return thread_cpu_s(mic.thread)

    try:
        await agent.start()
        runner = asyncio.create_task(agent.run(max_conversations=1), name="conversations")
        await asyncio.sleep(SETTLE_S)
        f0, t0, threads0 = feeder_cpu(), time.monotonic(), thread_cpu_by_name()
        windows = await cpu_windows(opts.idle_s, opts.window_s, exclude=feeder_cpu)
        run.out["feeder_cpu_pct"] = round(100 * (feeder_cpu() - f0) / (time.monotonic() - t0), 2)
        run.out["idle_threads_cpu_pct"] = thread_cpu_pct(threads0, thread_cpu_by_name(), time.monotonic() - t0)
        idle = ProcSnapshot.take()
        run.out["idle_cpu_pct_windows"] = windows
        run.out["idle_false_wakes"] = len(agent.detections)
        if agent.detections:
            run.missing("idle_cpu_pct", "the idle speech woke the agent: that stretch was not idle")
        else:
            run.out["idle_cpu_pct"] = _median(windows)
        run.out |= {"idle_rss_mb": idle.rss_mb, "idle_threads": idle.threads, "idle_fds": idle.fds}

        await bare.start()  # its call is up before the agent's starts (its start-up is not measured)
        mic.feed(np.concatenate([espeak("hey jarvis"), quiet(0.4, seed=5), call_audio]))
        up = await wait_until(lambda: agent.state not in (State.IDLE, State.WAKING, State.CONNECTING), 15)
        if not up or agent.conversation is None:
            why = f"no call: the wake word was not detected or the call failed (state {agent.state.value})"
            for key in ("call_cpu_pct", "call_rss_mb", "bare_aiortc_cpu_pct"):
                run.missing(key, why)
            return
        await asyncio.sleep(CALL_SETTLE_S)
        t0, threads0, bare0 = time.monotonic(), thread_cpu_by_name(), await bare.threads()
        windows, bare_windows = await paired_cpu_windows(opts.call_s, opts.window_s, bare.cpu, exclude=feeder_cpu)
        elapsed = time.monotonic() - t0
        run.out["call_threads_cpu_pct"] = thread_cpu_pct(threads0, thread_cpu_by_name(), elapsed)
        run.out["bare_aiortc_threads_cpu_pct"] = thread_cpu_pct(bare0, await bare.threads(), elapsed)
        in_call = agent.conversation is not None
        run.out["call_rss_mb"] = ProcSnapshot.take().rss_mb
        run.out["call_cpu_pct_windows"] = windows
        run.out["bare_aiortc_cpu_pct"], run.out["bare_aiortc_cpu_pct_windows"] = _median(bare_windows), bare_windows
        if in_call:
            run.out["call_cpu_pct"] = _median(windows)
            await agent.conversation.hang_up("benchmark done")  # type: ignore[union-attr]
        else:
            run.missing("call_cpu_pct", "the call ended before the stretch did")
        await asyncio.wait_for(runner, 15)
        result = agent.results[0]
        run.out["call_replies_heard"] = len(result.reply_marks)  # replies whose audio reached the speaker
    finally:
        await bare.stop()
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await agent.stop()
        mic.stop()


async def _bare_oww(run: _Run, emu: EmulatorProcess, tmpdir: Path, opts: BenchOptions, idle_audio: np.ndarray) -> None:
    """Phase 3: openWakeWord alone, on the same audio."""
    config = conversation_config(tmpdir, emu.url, "bare")
    oww = await bare_oww(config.wake, idle_audio, SETTLE_S, opts.idle_s, opts.window_s)
    run.out["bare_oww_cpu_pct"], run.out["bare_oww_cpu_pct_windows"] = _median(oww.paced_windows), oww.paced_windows
    run.out["bare_oww_unpaced_cpu_pct"] = _median(oww.unpaced_runs)
    run.out["bare_oww_unpaced_cpu_pct_runs"] = oww.unpaced_runs


async def run_table(opts: BenchOptions) -> dict[str, Any]:
    run = _Run()
    t_start = time.monotonic()
    idle_audio = speech_without_wake_word(SETTLE_S + opts.idle_s + 5, OTHER, reply_gap=False)
    call_audio = speech_without_wake_word(CALL_SETTLE_S + opts.call_s + 10, CALL_SENTENCES, reply_gap=True)
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        async with emulator_process(tmpdir) as emu:
            await _agent_idle_and_call(run, emu, tmpdir, opts, idle_audio, call_audio)
            await _bare_oww(run, emu, tmpdir, opts, idle_audio)
            total = max(opts.conversations, opts.soak)
            soak = await soak_agent(tmpdir, emu.url, emu.key, total, opts.warmup)
            run.out |= await latencies(soak.records, emu.record_dir)
    out = run.out
    out["idle_cpu_ratio"] = _ratio(out.get("idle_cpu_pct"), out.get("bare_oww_cpu_pct"))
    out["idle_cpu_ratio_unpaced"] = _ratio(out.get("idle_cpu_pct"), out.get("bare_oww_unpaced_cpu_pct"))
    out["call_cpu_ratio"] = _ratio(out.get("call_cpu_pct"), out.get("bare_aiortc_cpu_pct"))
    out["conversations"] = total
    if opts.soak > 0:
        out["soak"] = soak.summary()
    else:
        run.missing("soak", "not run (--soak 0)")
    out["goals"] = check_goals(out)
    if opts.soak == 0:
        del out["goals"]["soak.rss_growth_pct"]  # asked not to run: neither met nor missed
    out["ok"] = all(g["met"] for g in out["goals"].values()) and (opts.soak == 0 or out["soak"]["ok"])
    out["unmeasured"] = run.unmeasured
    out["setup"] = {
        **dataclasses.asdict(opts),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}",
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "note": "CPU in percent of one core, medians of windows; the FIFO feeder thread's CPU is taken out "
        "of the agent's (feeder_cpu_pct); the emulator runs in its own process",
    }
    return out


def _lookup(out: dict[str, Any], key: str) -> Any:
    value: Any = out
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def check_goals(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each goal with its value and whether it is met (None: the value is missing)."""
    goals = {}
    for key, (op, bound) in GOALS.items():
        value = _lookup(out, key)
        met = None if not isinstance(value, int | float) else (value <= bound if op == "<=" else value < bound)
        goals[key] = {"goal": f"{op} {bound:g}", "value": value, "met": met}
    return goals


def format_table(out: dict[str, Any]) -> str:
    def lat(name: str) -> str:
        v = out.get(name) or {}
        return f"p50 {v.get('p50')}  p95 {v.get('p95')}  (n {v.get('n')})"

    soak = out.get("soak") or {}
    rows = [
        ("idle_cpu_pct (agent listening)", out.get("idle_cpu_pct")),
        ("bare_oww_cpu_pct (openWakeWord alone, real time)", out.get("bare_oww_cpu_pct")),
        ("idle_cpu_ratio", out.get("idle_cpu_ratio")),
        ("bare_oww_unpaced_cpu_pct (as fast as it goes)", out.get("bare_oww_unpaced_cpu_pct")),
        ("idle_cpu_ratio_unpaced", out.get("idle_cpu_ratio_unpaced")),
        ("idle threads (% of a core)", _threads(out.get("idle_threads_cpu_pct"))),
        ("idle_rss_mb", out.get("idle_rss_mb")),
        ("call_cpu_pct (agent in a call)", out.get("call_cpu_pct")),
        ("bare_aiortc_cpu_pct (aiortc alone, at the same time)", out.get("bare_aiortc_cpu_pct")),
        ("call_cpu_ratio", out.get("call_cpu_ratio")),
        ("call threads (% of a core)", _threads(out.get("call_threads_cpu_pct"))),
        ("bare aiortc threads (asyncio_N: its Opus encoder)", _threads(out.get("bare_aiortc_threads_cpu_pct"))),
        ("call_rss_mb", out.get("call_rss_mb")),
        ("feeder_cpu_pct (taken out of the above)", out.get("feeder_cpu_pct")),
        ("wake_to_first_rtp_ms", lat("wake_to_first_rtp_ms")),
        ("wake_to_first_decoded_ms", lat("wake_to_first_decoded_ms")),
        ("wake_to_listening_ms", lat("wake_to_listening_ms")),
        ("end_of_speech_to_first_audio_ms", lat("end_of_speech_to_first_audio_ms")),
    ]
    if soak:
        rows += [
            ("soak conversations completed / back to idle",
             f"{soak['completed']} / {soak['back_to_idle']} of {soak['conversations']}"),
            ("soak RSS MB after warm-up -> end", f"{soak['rss_mb_start']} -> {soak['rss_mb_end']} "
                                                  f"({soak['rss_growth_pct']:+}%)"),
            ("soak RSS MB by conversations done", ", ".join(f"{n}: {mb}" for n, mb in soak["rss_mb_trace"])),
            ("soak threads / fds after warm-up -> end", f"{soak['threads_start']} -> {soak['threads_end']} / "
                                                         f"{soak['fds_start']} -> {soak['fds_end']}"),
        ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"voice-agent bench: {out['setup']['machine']}, {out['setup']['elapsed_s']} s"]
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    lines.append("  goals:")
    for key, g in out["goals"].items():
        verdict = {True: "ok", False: "MISSED", None: "not measured"}[g["met"]]
        lines.append(f"    {key:<28} {g['goal']:<8} {g['value']!s:<10} {verdict}")
    for key, why in out["unmeasured"].items():
        lines.append(f"  {key}: null ({why})")
    lines.append(f"  {out['setup']['note']}")
    return "\n".join(lines)


def _threads(by_name: dict[str, float] | None) -> str:
    return ", ".join(f"{name} {v}" for name, v in list((by_name or {}).items())[:6]) or "-"


def run_bench_table(opts: BenchOptions, as_json: bool = False) -> int:
    out = asyncio.run(run_table(opts))
    print(json.dumps(out) if as_json else format_table(out))
    return 0 if out["ok"] else 1
