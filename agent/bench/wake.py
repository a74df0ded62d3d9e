"""`voice-agent bench wake`: what listening for the wake word costs, measured side by side in one run.

The same audio (espeak-ng wake phrases, commands and other sentences between stretches of quiet room
noise) goes through:

(a) the whole listening path, as the service runs it: a real ALSA capture device (alsa-lib's file
    plugin over a regular raw file) at 48 kHz read by `AlsaCapture`'s thread, handed to the event loop,
    and fed block by block to `WakeWordDetector.process_async`, which resamples to 16 kHz and runs
    openWakeWord on its worker thread;
(b) openWakeWord alone: its own `Model.predict` on the same audio at 16 kHz, in 80 ms chunks;
(c) the detector's scorer alone (`rtf_scorer`): the lean path (`oww_lean`), or openWakeWord's Model when
    an option needs it, on the same chunks.

`rtf` is CPU seconds (of the whole process: every thread) per second of audio. A regular file never
blocks, so by default the capture reads it as fast as the consumer takes blocks instead of at real time
(the capture's pacing is switched off for the run, and nothing is dropped): the work per block is the
same as live, without waiting a minute per run, but the thread wake-ups a live device causes between
blocks are not counted. `paced=True` (`--paced`) reads at real time, as the capture paces a device that
never blocks, and counts them: on a machine where waking a thread is expensive (a VM, a sandbox) that
can cost more than openWakeWord itself. Each figure is the median of `repeats` runs.

Detection latency: the time from the true end of each wake phrase (known, since the audio is made
here) to the end of the 80 ms frame that fired, on the audio clock. The CPU time to score that frame
comes on top (`frame_cpu_ms`). `rss_mb` is the resident memory of a separate process that only loads
the detector and listens to ALSA's `null` device at 48 kHz (so the benchmark's own buffers do not count).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.capture import AlsaCapture
from ..audio.fileplugin import capture_device, use_file_plugin
from ..audio.frames import PcmBlock
from ..audio.resample import convert_pcm
from ..config import CaptureConfig, WakeConfig, config_from_dict
from ..state import StateOwner
from ..wake.listener import Trigger, WakeListener
from ..wake.wakeword import CHUNK, PHRASE_END_MARGIN_S, RATE, WakeWordDetector, load_openwakeword_model
from .common import vm_rss_mb
from .speech import espeak, quiet

log = logging.getLogger(__name__)

CAPTURE_RATE = 48000
PERIOD_MS = 20
RSS_PROBE_S = 3.0
LATENCY_WINDOW_S = 1.0  # a detection this long after a phrase's end belongs to it

VOICES = ("en-us", "en", "en-us+m1", "en-us+f3", "en-gb-x-rp")
COMMANDS = ("what time is it", "turn on the kitchen light", "what is the weather like tomorrow")
OTHER = (
    "the weather today is sunny with a light breeze",
    "please remember to buy milk and bread on the way home",
    "my favourite colour is green and I like to read books",
    "turn left at the next corner and then go straight on",
)


@dataclass
class BenchAudio:
    samples: np.ndarray  # 16 kHz mono int16
    phrase_ends: list[float] = field(default_factory=list)  # seconds from the start

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def bench_audio(seconds: float) -> BenchAudio:
    """`seconds` of speech: "hey jarvis" (a different voice each time), a short pause, a command, then
    an unrelated sentence, with quiet room noise between."""
    parts: list[np.ndarray] = []
    ends: list[float] = []
    n = 0
    i = 0
    while n < seconds * RATE:
        voice = VOICES[i % len(VOICES)]
        wake = espeak("hey jarvis", voice)
        segment = [quiet(1.0, seed=i), wake, quiet(0.3, seed=i + 100), espeak(COMMANDS[i % len(COMMANDS)], voice),
                   quiet(1.5, seed=i + 200), espeak(OTHER[i % len(OTHER)], voice), quiet(1.0, seed=i + 300)]
        ends.append((n + len(segment[0]) + len(wake)) / RATE)
        for s in segment:
            parts.append(s)
            n += len(s)
        i += 1
    samples = np.concatenate(parts)[: int(seconds * RATE)]
    return BenchAudio(samples, [t for t in ends if t < seconds - LATENCY_WINDOW_S])


# --------------------------------------------------------------------------------------------------
# (a) the listening path


class _LimitedPcm:
    """An alsaaudio PCM that delivers `limit` periods, then stalls until `release` is set. A regular
    file behind the file plugin would otherwise go on delivering stale periods, as fast as it can."""

    def __init__(self, limit: int, release: threading.Event, **params: Any) -> None:
        import alsaaudio

        self._pcm = alsaaudio.PCM(**params)
        self._limit = limit
        self._release = release
        self.reads = 0

    def read(self) -> tuple[int, bytes]:
        if self.reads >= self._limit:
            self._release.wait()
            return 0, b""
        self.reads += 1
        return self._pcm.read()

    def info(self) -> dict[str, Any]:
        return self._pcm.info()

    def close(self) -> None:
        self._pcm.close()


@dataclass
class PathRun:
    cpu_s: float
    blocks: int
    dropped: int
    detections: list[tuple[str, float, float, float]]  # (model, score, audio time, phrase end estimate)


async def run_listening_path(
    detector: WakeWordDetector, raw_file: Path, n_blocks: int, *, paced: bool = False
) -> PathRun:
    """One run of capture -> event loop -> detector over `n_blocks` periods of `raw_file`; `paced`:
    at real time, as a live microphone delivers (the capture paces a device that never blocks)."""
    release = threading.Event()
    period_s = PERIOD_MS / 1000

    def factory(**params: Any) -> _LimitedPcm:
        return _LimitedPcm(n_blocks, release, **params)

    cfg = CaptureConfig(device=capture_device(raw_file), rate=CAPTURE_RATE, period_ms=PERIOD_MS)
    capture = AlsaCapture(cfg, pcm_factory=factory)
    if not paced:
        capture.MAX_AHEAD_S = math.inf  # type: ignore[misc]  # read the file unpaced (see the module docstring)
    detections: list[tuple[str, float, float, float]] = []

    def heard(trigger: Trigger) -> bool:
        model = trigger.source.removeprefix("wake:")
        detections.append((model, trigger.score or 0.0, trigger.t_detected, trigger.t_audio + PHRASE_END_MARGIN_S))
        return True

    # The agent's listening path: the capture thread hands each block to the wake word's thread (the
    # event loop sleeps). The unpaced capture's clock runs fast; the refractory period and the latencies
    # need the audio's own clock, which the block's number gives.
    listener = WakeListener(
        detector, StateOwner(), asyncio.get_running_loop(), on_trigger=heard, last_audible_t=lambda: None,
        queue_blocks=n_blocks + 16,  # unpaced, capture runs ahead: nothing may be lost
    )  # fmt: skip
    capture.taps[:] = [lambda b: listener.tap(PcmBlock(b.samples, b.rate, b.seq * period_s, b.seq))]
    detector.reset()
    listener.start()
    t0 = time.process_time()
    await capture.start()
    try:
        while capture.stats.blocks < n_blocks or not listener._queue.empty():
            await asyncio.sleep(0.01)
        await listener.stop()  # it finishes the block in hand
        await asyncio.sleep(0)  # its last detections reach the loop
        cpu = time.process_time() - t0
        blocks = capture.stats.blocks
    finally:
        release.set()
        await capture.stop()
        await listener.stop()
    return PathRun(cpu, blocks, listener.dropped, detections)


def run_bare(model: Any, audio16k: np.ndarray) -> float:
    """CPU seconds of `model.predict` (openWakeWord's Model or the lean path) over `audio16k` in 80 ms chunks."""
    model.reset()
    silence = np.zeros(CHUNK, dtype=np.int16)
    for _ in range(16):
        model.predict(silence)
    chunks = [audio16k[i : i + CHUNK] for i in range(0, len(audio16k) - CHUNK + 1, CHUNK)]
    t0 = time.process_time()
    for chunk in chunks:
        model.predict(chunk)
    return time.process_time() - t0


# --------------------------------------------------------------------------------------------------
# Memory while listening, in a process of its own


def _wake_to_json(cfg: WakeConfig) -> dict[str, Any]:
    data = dataclasses.asdict(cfg)
    data["models_dir"] = str(cfg.models_dir) if cfg.models_dir else None
    data["models"] = [dataclasses.asdict(m) for m in cfg.models]
    return data


def measure_rss_mb(cfg: WakeConfig) -> float:
    """VmRSS of a fresh process that loads the detector and listens for RSS_PROBE_S seconds."""
    proc = subprocess.run(
        [sys.executable, "-m", "agent.bench.wake", "--rss-probe", json.dumps(_wake_to_json(cfg))],
        capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the memory probe failed: {proc.stderr.strip()[-500:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["rss_mb"])


async def _rss_probe(cfg: WakeConfig) -> float:
    detector = WakeWordDetector(cfg)
    capture = AlsaCapture(CaptureConfig(device="null", rate=CAPTURE_RATE, period_ms=PERIOD_MS))
    sub = capture.hub.subscribe("listen", max_blocks=100)
    await capture.start()
    try:
        deadline = time.monotonic() + RSS_PROBE_S
        async for block in sub:
            await detector.process_async(block)
            if time.monotonic() >= deadline:
                break
        return vm_rss_mb()
    finally:
        await capture.stop()
        detector.close()


# --------------------------------------------------------------------------------------------------
# The benchmark


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def latencies(audio: BenchAudio, detections: Sequence[tuple[str, float, float, float]]) -> dict[str, Any]:
    """Match detections to the wake phrases; latency and phrase-end error of each matched one."""
    lat, err = [], []
    unmatched = 0
    for _model, _score, t, t_phrase_end in detections:
        ends = [e for e in audio.phrase_ends if 0 <= t - e <= LATENCY_WINDOW_S]
        if not ends:
            unmatched += 1
            continue
        lat.append(t - ends[-1])
        err.append(t_phrase_end - ends[-1])
    return {
        "wake_phrases": len(audio.phrase_ends),
        "detected": len(lat),
        "unmatched_detections": unmatched,
        "detect_latency_ms_p50": _ms(_percentile(lat, 50)),
        "detect_latency_ms_p90": _ms(_percentile(lat, 90)),
        "phrase_end_error_ms_p50": _ms(_percentile(err, 50)),
        "phrase_end_error_ms_p10": _ms(_percentile(err, 10)),
        "phrase_end_error_ms_p90": _ms(_percentile(err, 90)),
    }


async def wake_bench(cfg: WakeConfig, repeats: int = 5, audio_s: float = 60.0, paced: bool = False) -> dict[str, Any]:
    audio = bench_audio(audio_s)
    capture_audio = convert_pcm(audio.samples, RATE, CAPTURE_RATE)
    n_blocks = len(capture_audio) // (CAPTURE_RATE * PERIOD_MS // 1000)
    seconds = n_blocks * PERIOD_MS / 1000
    detector = WakeWordDetector(cfg)
    oww_model = load_openwakeword_model(cfg)
    path_runs: list[PathRun] = []
    bare: list[float] = []
    scorer: list[float] = []
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-") as tmp:
        use_file_plugin(Path(tmp))
        raw = Path(tmp) / "mic-48k.raw"
        raw.write_bytes(capture_audio.astype("<i2").tobytes())
        try:
            for _ in range(repeats):  # interleaved, so a slow spell of the machine hits both alike
                path_runs.append(await run_listening_path(detector, raw, n_blocks, paced=paced))
                audio16k = audio.samples[: int(seconds * RATE)]
                bare.append(await asyncio.to_thread(run_bare, oww_model, audio16k))
                scorer.append(await asyncio.to_thread(run_bare, detector.model, audio16k))
        finally:
            detector.close()
    rtf = statistics.median(r.cpu_s for r in path_runs) / seconds
    rtf_bare = statistics.median(bare) / seconds
    rtf_scorer = statistics.median(scorer) / seconds
    frames = seconds / (CHUNK / RATE)
    result: dict[str, Any] = {
        "rtf": round(rtf, 5),
        "rtf_bare": round(rtf_bare, 5),
        "ratio": round(rtf / rtf_bare, 3),
        "frame_cpu_ms": round(rtf * seconds / frames * 1000, 3),
        "frame_cpu_ms_bare": round(rtf_bare * seconds / frames * 1000, 3),
        "engine": detector.engine,
        "rtf_scorer": round(rtf_scorer, 5),
        "scorer_vs_bare": round(rtf_scorer / rtf_bare, 3),
    }
    result |= latencies(audio, path_runs[0].detections)
    result["rss_mb"] = round(measure_rss_mb(cfg), 1)
    result |= {
        "audio_s": round(seconds, 2),
        "repeats": repeats,
        "rtf_runs": [round(r.cpu_s / seconds, 5) for r in path_runs],
        "rtf_bare_runs": [round(b / seconds, 5) for b in bare],
        "rtf_scorer_runs": [round(b / seconds, 5) for b in scorer],
        "blocks_dropped": sum(r.dropped for r in path_runs),
        "capture": f"ALSA file plugin, {CAPTURE_RATE} Hz mono, {PERIOD_MS} ms periods, resampled to {RATE} Hz, "
        + ("read at real time" if paced else "read unpaced"),
        "inference_framework": cfg.inference_framework,
        "models": [m.name for m in cfg.models],
        "machine": f"{platform.machine()} {_cpu_name()}, Python {platform.python_version()}",
    }
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_wake_bench(
    cfg: WakeConfig, *, as_json: bool = False, repeats: int = 5, audio_s: float = 60.0, paced: bool = False
) -> int:
    """Print the benchmark as a table or one JSON object; 0 on success."""
    result = asyncio.run(wake_bench(cfg, repeats=max(1, repeats), audio_s=max(10.0, audio_s), paced=paced))
    if as_json:
        print(json.dumps(result))
        return 0
    rows = [
        ("rtf (listening path, CPU s per audio s)", result["rtf"]),
        ("rtf_bare (openWakeWord alone)", result["rtf_bare"]),
        ("ratio (goal <= 1.10)", result["ratio"]),
        (f"rtf_scorer (the detector's {result['engine']} scorer alone)", result["rtf_scorer"]),
        ("scorer_vs_bare", result["scorer_vs_bare"]),
        ("CPU per 80 ms frame, path / bare (ms)", f"{result['frame_cpu_ms']} / {result['frame_cpu_ms_bare']}"),
        ("detect_latency_ms_p50 (goal <= 300)", result["detect_latency_ms_p50"]),
        ("detect_latency_ms_p90", result["detect_latency_ms_p90"]),
        ("wake phrases detected", f"{result['detected']} of {result['wake_phrases']}"
                                  f" ({result['unmatched_detections']} other detections)"),
        ("phrase end estimate error p10 / p50 / p90 (ms)",
         f"{result['phrase_end_error_ms_p10']} / {result['phrase_end_error_ms_p50']} / "
         f"{result['phrase_end_error_ms_p90']}"),
        ("rss_mb (listening, own process)", result["rss_mb"]),
    ]
    print(f"wake word benchmark: {result['audio_s']} s of audio, median of {result['repeats']} runs")
    print(f"  {result['capture']}; {result['inference_framework']}, models {', '.join(result['models'])}")
    print(f"  {result['machine']}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The memory probe's entry point: `python -m agent.bench.wake --rss-probe WAKE_JSON`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--rss-probe":
        print("usage: python -m agent.bench.wake --rss-probe WAKE_JSON (use `voice-agent bench wake`)", file=sys.stderr)
        return 2
    cfg = config_from_dict({"wake": json.loads(args[1])}).wake
    print(json.dumps({"rss_mb": asyncio.run(_rss_probe(cfg))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
