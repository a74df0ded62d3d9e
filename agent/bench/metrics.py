"""`voice-agent bench metrics`: what publishing fleet health costs while the device is idle.

The publisher (agent.metrics) wakes every 2 s to sample the microphone's level from the pre-roll ring,
and every `metrics.interval_s` (15 s) renders the metrics and the status file on the event loop and
writes both (temporary file, fsync, rename) in a worker thread. Its cost is too small to see in the whole
agent's idle CPU (which varies by more than that between runs on a shared machine), so it is measured
two ways, both on a real Agent (its devices not opened) with its pre-roll ring fed as capture would:

1. each step's CPU time, repeated (`repeats`), and the idle cost they add up to at the configured
   interval: (render + write) / interval + sample / 2 s;
2. the real publisher task on an event loop for `seconds`, with the interval shortened to `fast_s` so
   that enough writes happen, against the same loop without it: process CPU on vs off, and per write.

The files go to a temporary folder on the same file system as the current directory (fsync costs what
the disk makes it cost: run it on the Pi's SD card for the Pi's figure).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..audio.frames import PcmBlock
from ..config import Config, MetricsConfig
from ..metrics import MIC_SAMPLE_S, Health, Publisher
from ..voicelive.auth import ApiKey, Secret

RATE = 16000
BLOCK = 320  # 20 ms


def _feed(agent: Agent, seconds: float, rng: np.random.Generator, t: float) -> float:
    """`seconds` of -30 dBFS noise into the pre-roll ring, as the capture would have put there."""
    for _ in range(int(seconds * RATE / BLOCK)):
        t += BLOCK / RATE
        agent.preroll.add(PcmBlock((rng.standard_normal(BLOCK) * 1000).astype(np.int16), RATE, t))
    return t


def _cpu_per_call(fn: Any, repeats: int, before: Any = None) -> float:
    total = 0.0
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.thread_time()
        fn()
        total += time.thread_time() - t
    return total / repeats


async def _loop_cpu(seconds: float, publisher: Publisher | None, feed: Any) -> tuple[float, int]:
    """Process CPU seconds of an event loop that only feeds the pre-roll every 2 s (and runs `publisher`)."""
    if publisher is not None:
        publisher.start()
    t0, c0 = time.monotonic(), time.process_time()
    try:
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(MIC_SAMPLE_S)
            feed()
    finally:
        cpu = time.process_time() - c0
        if publisher is not None:
            await publisher.stop()
    return cpu, publisher.writes if publisher is not None else 0


def measure(config: Config, repeats: int = 300, seconds: float = 30.0, fast_s: float = 1.0) -> dict[str, Any]:
    out: dict[str, Any] = {"interval_s": config.metrics.interval_s, "repeats": repeats, "seconds": seconds}
    with tempfile.TemporaryDirectory(dir=".", prefix=".bench-metrics-") as tmp:
        folder = Path(tmp)
        textfile = folder / "voice_agent.prom"
        cfg = dataclasses.replace(config, metrics=dataclasses.replace(config.metrics, textfile=textfile))
        agent = Agent(cfg, ApiKey(Secret("bench-not-a-key")))
        rng = np.random.default_rng(1)
        clock = {"t": time.monotonic()}

        def feed(s: float = MIC_SAMPLE_S) -> None:
            clock["t"] = _feed(agent, s, rng, clock["t"])

        feed(agent.preroll.seconds)
        publisher = Publisher(Health(agent), textfile, folder, cfg.metrics.interval_s)
        files = publisher.render()
        out["file_bytes"] = len(files[0][1])
        out["status_bytes"] = len(files[1][1])
        render = _cpu_per_call(publisher.render, repeats)
        write = _cpu_per_call(lambda: publisher.write(files), repeats)
        t = time.monotonic()
        for _ in range(repeats):
            publisher.write(files)
        out["write_wall_ms"] = round((time.monotonic() - t) / repeats * 1000, 3)
        sample = _cpu_per_call(lambda: publisher.health.mic.sample(clock["t"]), repeats, before=feed)
        out["render_cpu_ms"] = round(render * 1000, 4)
        out["write_cpu_ms"] = round(write * 1000, 4)
        out["mic_sample_cpu_ms"] = round(sample * 1000, 4)
        idle = (render + write) / cfg.metrics.interval_s + sample / MIC_SAMPLE_S
        out["idle_cpu_pct_from_steps"] = round(idle * 100, 5)
        publisher.health.unsubscribe()

        async def on_off() -> None:
            off, _ = await _loop_cpu(seconds, None, feed)
            fast = Publisher(Health(agent), textfile, folder, fast_s)
            on, writes = await _loop_cpu(seconds, fast, feed)
            per_write = max(0.0, on - off) / max(1, writes)
            out["loop_cpu_pct_off"] = round(off / seconds * 100, 4)
            out["loop_cpu_pct_on_fast"] = round(on / seconds * 100, 4)
            out["loop_writes_fast"] = writes
            out["loop_cpu_ms_per_write"] = round(per_write * 1000, 4)
            # at the configured interval: one write per interval_s, the samples every 2 s as measured above
            at_interval = per_write / cfg.metrics.interval_s + sample / MIC_SAMPLE_S
            out["idle_cpu_pct_from_loop"] = round(at_interval * 100, 5)

        asyncio.run(on_off())
    out["goal_idle_cpu_pct"] = 0.1
    out["ok"] = max(out["idle_cpu_pct_from_steps"], out["idle_cpu_pct_from_loop"]) < 0.1
    return out


def summarize(out: dict[str, Any]) -> str:
    lines = [
        f"metrics publishing, every {out['interval_s']:.0f} s (files {out['file_bytes']} + {out['status_bytes']} B)",
        f"  render {out['render_cpu_ms']} ms CPU, write {out['write_cpu_ms']} ms CPU ({out['write_wall_ms']} ms "
        f"wall with fsync), microphone sample {out['mic_sample_cpu_ms']} ms CPU every 2 s",
        f"  idle cost from the steps: {out['idle_cpu_pct_from_steps']:.4f} % of a core",
        f"  event loop {out['seconds']:.0f} s: off {out['loop_cpu_pct_off']} %, on (a write every second) "
        f"{out['loop_cpu_pct_on_fast']} % -> {out['loop_cpu_ms_per_write']} ms a write, "
        f"{out['idle_cpu_pct_from_loop']:.4f} % of a core at {out['interval_s']:.0f} s",
        f"  goal < {out['goal_idle_cpu_pct']} % of a core: {'ok' if out['ok'] else 'MISSED'}",
    ]
    return "\n".join(lines)


def run_metrics_bench(config: Config, as_json: bool, repeats: int, seconds: float) -> int:
    if config.metrics.interval_s <= 0:
        config = dataclasses.replace(config, metrics=MetricsConfig())
    out = measure(config, repeats=repeats, seconds=seconds)
    print(json.dumps(out) if as_json else summarize(out))
    return 0 if out["ok"] else 1
