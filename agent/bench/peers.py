"""`voice-agent bench peers`: the agent's listening next to the listeners a Pi user could pick instead,
on the same audio, at the same time, on this machine.

Listeners, each a process of its own (so CPU, threads and memory are each one's alone):

- wyoming-openwakeword 1.8.2 (the Home Assistant satellite's wake word server, TFLite, 80 ms chunks),
  installed with what it needs (numpy < 2 and its TFLite runtime) in a virtual environment of its own
  under `~/.cache/voice-agent/peers` (never in the agent's), serving on 127.0.0.1, fed by a small
  Wyoming client (`wyoming_client`, shown as a process of its own). Its model files are byte for byte
  the ones the agent runs (`same_model_files` says whether that held);
- openWakeWord alone: its `Model.predict` on ONNX and on TFLite (ai-edge-litert), 80 ms chunks;
- the agent's lean path alone (`oww_lean`) on ONNX and on TFLite;
- the agent's listening path: a real ALSA capture device (alsa-lib's file plugin over a FIFO fed at
  real time by this process, 16 kHz, 20 ms periods), `AlsaCapture`'s thread, the event loop and the
  wake word detector with the default configuration.

The audio: `seconds` of espeak-ng speech without the wake word (several voices, quiet between), then
`clips` times "hey jarvis" (a different voice each time) with quiet around it. Every listener gets
chunk k at the same moment (`t0 + (k + 1) * 80 ms`; the microphone's 20 ms periods likewise), so the
machine's noisy spells hit all alike. CPU (process, and each thread) is read from /proc over the
speech-without-wake-word stretch in windows of `window_s`, median quoted, in percent of one core; RSS
at the end of that stretch. Detections: a detection within 1 s after the end of a "hey jarvis" counts
for it (latency: from the phrase's end to the detection's arrival, on the monotonic clock); any other
is a false wake. Then, one listener at a time, the same speech as fast as it goes: CPU seconds per
audio second (the agent's listening path is not run unpaced here: see `voice-agent bench wake`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

log = logging.getLogger(__name__)

PEER = "wyoming-openwakeword"
PEER_VERSION = "1.8.2"
PEER_REQUIREMENTS = (f"{PEER}=={PEER_VERSION}", "numpy<2")  # its TFLite runtime fails with numpy 2
RATE = 16000
CHUNK = 1280
CHUNK_S = CHUNK / RATE
LATENCY_WINDOW_S = 1.0
SETTLE_S = 3.0  # after the start, before the CPU windows
WYOMING_SPEED = 10.0  # times real time, for its "as fast as it goes" figure

#: The in-process listeners: (name, runner kind, inference framework).
RUNNERS = (
    ("openWakeWord Model.predict onnx", "oww", "onnx"),
    ("openWakeWord Model.predict tflite", "oww", "tflite"),
    ("agent lean path onnx", "lean", "onnx"),
    ("agent lean path tflite", "lean", "tflite"),
    ("agent listening path (capture -> detector)", "agent", None),
)


# --------------------------------------------------------------------------------------------------
# The peer's environment


def peer_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "voice-agent" / "peers" / f"{PEER}-{PEER_VERSION}"


def ensure_peer_env(root: Path | None = None, timeout_s: float = 900.0) -> Path:
    """The Python of wyoming-openwakeword's own virtual environment, made (pip, by package name) if it
    is not there yet. Raises RuntimeError with pip's last words if it cannot be installed."""
    root = root or peer_root()
    python = root / "bin" / "python"
    ready = root / ".ready"
    if python.is_file() and ready.is_file():
        return python
    base = getattr(sys, "_base_executable", None) or sys.executable
    steps = [
        [base, "-m", "venv", "--clear", str(root)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *PEER_REQUIREMENTS],
        [str(python), "-c", "import numpy, wyoming_openwakeword, tflite_runtime.interpreter"],
    ]
    deadline = time.monotonic() + timeout_s
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"setting up {PEER} took more than {timeout_s:.0f} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"setting up {PEER} failed ({' '.join(cmd[:4])}): {proc.stderr.strip()[-800:]}")
    ready.write_text(" ".join(PEER_REQUIREMENTS) + "\n", encoding="utf-8")
    return python


def peer_models_dir(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import wyoming_openwakeword, pathlib; "
         "print(pathlib.Path(wyoming_openwakeword.__file__).parent / 'models')"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


def same_files(a: Path, b: Path, names: Sequence[str]) -> bool:
    def digest(p: Path) -> str | None:
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    return all(digest(a / n) is not None and digest(a / n) == digest(b / n) for n in names)


# --------------------------------------------------------------------------------------------------
# Another process, from /proc


def _stat_fields(path: Path) -> list[str]:
    return path.read_text().rsplit(")", 1)[1].split()


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process so far, every thread, ended ones included."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def task_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each live thread of a process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(task / "stat")
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


# --------------------------------------------------------------------------------------------------
# The audio


@dataclass
class PeerAudio:
    samples: np.ndarray  # 16 kHz mono int16, whole 80 ms chunks
    negative_s: float  # the speech without the wake word comes first, this long
    phrase_ends: list[float] = field(default_factory=list)  # "hey jarvis" ends, seconds from the start

    @property
    def seconds(self) -> float:
        return len(self.samples) / RATE


def peer_audio(seconds: float, clips: int) -> PeerAudio:
    from .speech import espeak, quiet
    from .table import speech_without_wake_word
    from .wake import OTHER, VOICES

    negative = speech_without_wake_word(seconds, OTHER, reply_gap=False)
    negative = negative[: len(negative) // CHUNK * CHUNK]
    parts, ends, n = [negative], [], len(negative)
    for i in range(clips):
        said = espeak("hey jarvis", VOICES[i % len(VOICES)])
        parts += [quiet(1.5, seed=50 + i), said]
        n += int(1.5 * RATE) + len(said)
        ends.append(n / RATE)
    parts.append(quiet(2.5, seed=99))
    samples = np.concatenate(parts)
    samples = samples[: len(samples) // CHUNK * CHUNK]
    return PeerAudio(samples, len(negative) / RATE, ends)


def match_detections(audio: PeerAudio, times: Sequence[float]) -> dict[str, Any]:
    """Detections (seconds from the audio's start) against the phrase ends: found, latency, false."""
    latencies: list[float] = []
    false = 0
    claimed: set[int] = set()
    for t in sorted(times):
        hit = [i for i, e in enumerate(audio.phrase_ends) if 0 <= t - e <= LATENCY_WINDOW_S]
        near = [i for i, e in enumerate(audio.phrase_ends) if -0.5 <= t - e <= 2.5]
        if hit and hit[0] not in claimed:
            claimed.add(hit[0])
            latencies.append(t - audio.phrase_ends[hit[0]])
        elif not near:
            false += 1  # (a second detection of the same phrase is neither)
    return {
        "detected": len(claimed),
        "phrases": len(audio.phrase_ends),
        "latency_ms_p50": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "false_wakes": false,
    }


# --------------------------------------------------------------------------------------------------
# The listeners in processes of their own


@dataclass
class Listener:
    name: str
    proc: subprocess.Popen[str]
    thread_names: Callable[[int], str] | None  # None: by start order
    role: str = "listener"  # or "client": shown with the listener it serves
    out: dict[str, Any] = field(default_factory=dict)


def _readline(stream: TextIO, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise RuntimeError(f"{what}: no answer in {timeout:.0f} s")
        line = stream.readline()
        if not line:
            raise RuntimeError(f"{what}: the process ended")
        if line.startswith("{"):
            return json.loads(line)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{PEER} ended at start (exit code {proc.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{PEER} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def _by_python_name(names: dict[str, str]) -> Callable[[int], str]:
    """Threads by their Python names (up to a colon), as the process listed them."""
    return lambda tid: names.get(str(tid), f"os-thread-{tid}").split(":")[0]


def _by_start_order(pid: int, tids: Sequence[int]) -> Callable[[int], str]:
    """Threads of a process whose names are not known: "main", then "thread-1", "thread-2"... in the
    order they were started (thread ids grow)."""
    order = sorted(t for t in tids if t != pid)
    return lambda tid: "main" if tid == pid else f"thread-{order.index(tid) + 1}"


def name_threads(lst: Listener) -> None:
    """`threads_cpu_pct` by name, from the per-thread-id figures and `lst.thread_names`."""
    by_tid = lst.out.pop("_threads_by_tid", {})
    names = lst.thread_names or _by_start_order(lst.proc.pid, list(by_tid))
    by_name: dict[str, float] = {}
    for tid, pct in by_tid.items():
        name = names(tid)
        by_name[name] = by_name.get(name, 0.0) + pct
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])
    lst.out["threads_cpu_pct"] = {k: round(v, 2) for k, v in ranked if v > 0}


def _cpu_table(listeners: Sequence[Listener], t_from: float, t_to: float, window_s: float) -> None:
    """Sample every listener's CPU from `t_from` to `t_to` in windows: `cpu_pct_windows`, `cpu_pct`,
    the CPU of each thread (see `name_threads`) and `rss_mb` into each one's `out`."""
    time.sleep(max(0.0, t_from - time.monotonic()))
    pids = {id(lst): lst.proc.pid for lst in listeners}
    start = {id(lst): (proc_cpu_s(pids[id(lst)]), task_cpu_s(pids[id(lst)])) for lst in listeners}
    t_start = time.monotonic()
    windows: dict[int, list[float]] = {id(lst): [] for lst in listeners}
    prev = {k: v[0] for k, v in start.items()}
    t_prev = t_start
    while t_to - time.monotonic() >= window_s / 2:
        time.sleep(max(0.0, min(window_s, t_to - time.monotonic())))
        now = time.monotonic()
        for lst in listeners:
            cpu = proc_cpu_s(pids[id(lst)])
            windows[id(lst)].append(round(100 * (cpu - prev[id(lst)]) / (now - t_prev), 2))
            prev[id(lst)] = cpu
        t_prev = now
    elapsed = time.monotonic() - t_start
    for lst in listeners:
        pid = pids[id(lst)]
        tasks0, tasks1 = start[id(lst)][1], task_cpu_s(pid)
        lst.out["_threads_by_tid"] = {tid: 100 * (cpu - tasks0.get(tid, 0.0)) / elapsed for tid, cpu in tasks1.items()}
        lst.out["cpu_pct_windows"] = windows[id(lst)]
        lst.out["cpu_pct"] = round(statistics.median(windows[id(lst)]), 2) if windows[id(lst)] else None
        lst.out["rss_mb"] = proc_rss_mb(pid)


def _wyoming_unpaced_cpu(python: Path, server: subprocess.Popen[str], port: int, raw: Path, seconds: float) -> float:
    """The server's CPU seconds per audio second for `raw` sent at WYOMING_SPEED times real time (faster,
    its 10 s audio buffer would drop audio before its threads got to it)."""
    before = proc_cpu_s(server.pid)
    subprocess.run([str(python), str(Path(__file__).with_name("wyoming_client.py")), "--port", str(port),
                    "--audio", str(raw), "--speed", str(WYOMING_SPEED), "--linger", "1.5"],
                   capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    return round((proc_cpu_s(server.pid) - before) / seconds, 4)


def run_peers(seconds: float = 180.0, clips: int = 8, window_s: float = 10.0, peer_python: Path | None = None,
              setup_timeout_s: float = 900.0) -> dict[str, Any]:  # fmt: skip
    from ..audio.fileplugin import FifoFeeder, use_file_plugin
    from ..config import WakeConfig

    t_begin = time.monotonic()
    out: dict[str, Any] = {"unmeasured": {}}
    audio = peer_audio(seconds, clips)
    wake_dir = WakeConfig().resolved_models_dir()
    listeners: list[Listener] = []
    feeder: FifoFeeder | None = None
    with tempfile.TemporaryDirectory(prefix="voice-agent-peers-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        raw = tmpdir / "audio.raw"
        raw.write_bytes(audio.samples.astype("<i2").tobytes())
        negative_raw = tmpdir / "negative.raw"
        negative_raw.write_bytes(audio.samples[: int(audio.negative_s * RATE)].astype("<i2").tobytes())
        t_setup = time.monotonic()
        python = peer_python or ensure_peer_env(timeout_s=setup_timeout_s)
        out["peer_setup_s"] = round(time.monotonic() - t_setup, 1)
        models = peer_models_dir(python)
        out["same_model_files"] = same_files(
            models, wake_dir, ["melspectrogram.tflite", "embedding_model.tflite", "hey_jarvis_v0.1.tflite"]
        )
        port = _free_port()
        server = subprocess.Popen(
            [str(python), "-m", "wyoming_openwakeword", "--uri", f"tcp://127.0.0.1:{port}", "--preload-model",
             "hey_jarvis", "--threshold", "0.5", "--trigger-level", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            _wait_port(port, 60, server)
            listeners.append(Listener(f"{PEER} {PEER_VERSION} server (tflite, 80 ms chunks)", server, None))
            fifo = tmpdir / "mic.fifo"
            feeder = FifoFeeder(fifo, b"", rate=RATE, period_frames=320, then="silence").start()
            for name, kind, framework in RUNNERS:
                cmd = [sys.executable, "-m", "agent.bench.peers", "--runner", kind, "--audio", str(raw),
                       "--negative-s", str(audio.negative_s)]  # fmt: skip
                cmd += ["--framework", framework] if framework else ["--fifo", str(fifo)]
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                listeners.append(Listener(name, proc, None))
            for lst in listeners[1:]:
                assert lst.proc.stdout is not None
                _readline(lst.proc.stdout, 120, lst.name)  # loaded and ready
            t0 = time.monotonic() + 1.0
            client = subprocess.Popen(
                [str(python), str(Path(__file__).with_name("wyoming_client.py")), "--port", str(port), "--audio",
                 str(raw), "--t0", repr(t0)],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            listeners.insert(1, Listener(f"{PEER} client (wyoming, 80 ms chunks)", client, lambda _t: "main", "client"))
            for lst in listeners[2:]:
                assert lst.proc.stdin is not None
                lst.proc.stdin.write(f"go {t0!r}\n")
                lst.proc.stdin.flush()
            time.sleep(max(0.0, t0 - time.monotonic()))
            feeder.feed(audio.samples)  # the agent's microphone: the same audio from now on
            _cpu_table(listeners, t0 + SETTLE_S, t0 + audio.negative_s, window_s)
            # the detections, once the whole audio went by
            assert client.stdout is not None
            result = _readline(client.stdout, audio.seconds + 60, "the wyoming client")
            listeners[0].out |= match_detections(audio, [t - t0 for t in result["detections"]])
            name_threads(listeners[0])
            name_threads(listeners[1])
            for lst in listeners[2:]:
                assert lst.proc.stdout is not None
                result = _readline(lst.proc.stdout, audio.seconds + 60, lst.name)
                names = result.get("threads", {})
                lst.thread_names = _by_python_name(names)
                name_threads(lst)
                lst.out |= match_detections(audio, [t - t0 for t in result["detections"]])
            # as fast as it goes, one at a time
            listeners[0].out["unpaced_cpu_s_per_audio_s"] = _wyoming_unpaced_cpu(
                python, server, port, negative_raw, audio.negative_s
            )
            for lst in listeners[2:]:
                assert lst.proc.stdin is not None and lst.proc.stdout is not None
                lst.proc.stdin.write("unpaced\n")
                lst.proc.stdin.flush()
                lst.out["unpaced_cpu_s_per_audio_s"] = _readline(lst.proc.stdout, 300, lst.name)["unpaced"]
        finally:
            if feeder is not None:
                feeder.stop()
            for lst in [*listeners, Listener("server", server, None)]:
                if lst.proc.poll() is None:
                    lst.proc.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        lst.proc.wait(10)
    out["listeners"] = [{"name": lst.name, "role": lst.role, **lst.out} for lst in listeners]
    out["setup"] = {
        "seconds": round(audio.negative_s, 2),
        "clips": clips,
        "window_s": window_s,
        "peer": " ".join(PEER_REQUIREMENTS),
        "peer_env": str(python.parent.parent),
        "machine": f"{os.uname().machine}, {len(os.sched_getaffinity(0))} CPUs, Python {sys.version.split()[0]}",
        "elapsed_s": round(time.monotonic() - t_begin, 1),
    }
    return out


def format_peers(out: dict[str, Any]) -> str:
    setup = out["setup"]
    lines = [
        f"voice-agent bench peers: {setup['machine']}, {setup['elapsed_s']} s",
        f"  {setup['seconds']} s of speech without the wake word at real time (CPU: median of {setup['window_s']:g} s "
        f"windows, % of one core), then {setup['clips']} x \"hey jarvis\"; {setup['peer']} in {setup['peer_env']}"
        f" (same model files as the agent: {out['same_model_files']})",
    ]
    head = ("listener", "CPU %", "unpaced CPU s/s", "RSS MB", "hey jarvis", "p50 ms", "false")
    rows = [head]
    for lst in out["listeners"]:
        rows.append((lst["name"], f"{lst.get('cpu_pct')}", f"{lst.get('unpaced_cpu_s_per_audio_s', '')}",
                     f"{lst.get('rss_mb')}",
                     f"{lst['detected']}/{lst['phrases']}" if "detected" in lst else "",
                     f"{lst.get('latency_ms_p50', '')}", f"{lst.get('false_wakes', '')}"))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  " + "  ".join(cells))
    lines.append("  threads (% of one core):")
    for lst in out["listeners"]:
        threads = ", ".join(f"{k} {v}" for k, v in list(lst.get("threads_cpu_pct", {}).items())[:6]) or "-"
        lines.append(f"    {lst['name']}: {threads}")
    return "\n".join(lines)


def run_peers_bench(as_json: bool = False, **kwargs: Any) -> int:
    try:
        out = run_peers(**kwargs)
    except RuntimeError as exc:
        print(f"voice-agent bench peers: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out) if as_json else format_peers(out))
    return 0


# --------------------------------------------------------------------------------------------------
# The runner: one listener in this process (`python -m agent.bench.peers --runner KIND ...`)


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def _thread_names() -> dict[str, str]:
    import threading

    return {str(t.native_id): t.name for t in threading.enumerate()}


def _runner_scorer(kind: str, framework: str) -> Callable[[np.ndarray], float]:
    import dataclasses

    from ..config import WakeConfig
    from ..wake.wakeword import load_model, load_openwakeword_model

    cfg = dataclasses.replace(WakeConfig(), inference_framework=framework)
    model = load_openwakeword_model(cfg) if kind == "oww" else load_model(cfg)[0]
    silence = np.zeros(CHUNK, np.int16)
    for _ in range(16):
        model.predict(silence)

    def score(chunk: np.ndarray) -> float:
        return max(model.predict(chunk).values())

    score.model = model  # type: ignore[attr-defined]
    return score


def _run_paced_scorer(score: Callable[[np.ndarray], float], samples: np.ndarray, t0: float) -> list[float]:
    from ..wake.wakeword import ScoreGate

    gate = ScoreGate(0.5, 1, 2.0)
    found = []
    for k in range(len(samples) // CHUNK):
        delay = t0 + (k + 1) * CHUNK_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if gate.update((k + 1) * CHUNK_S, score(samples[k * CHUNK : (k + 1) * CHUNK])) is not None:
            found.append(time.monotonic())
    return found


async def _run_agent_path(fifo: Path, until: float) -> tuple[list[float], dict[str, str]]:
    import asyncio

    from ..audio.capture import AlsaCapture
    from ..audio.fileplugin import capture_device
    from ..config import CaptureConfig, WakeConfig
    from ..state import StateOwner
    from ..wake.listener import Trigger, WakeListener
    from ..wake.wakeword import WakeWordDetector

    detector = await asyncio.to_thread(WakeWordDetector, WakeConfig())
    capture = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=RATE, period_ms=20))
    found: list[float] = []
    names: dict[str, str] = {}
    loop = asyncio.get_running_loop()

    def heard(_trigger: Trigger) -> bool:
        found.append(time.monotonic())
        return True

    # the agent's own listening path: capture thread -> wake word thread, the event loop asleep
    listener = WakeListener(detector, StateOwner(), loop, on_trigger=heard, last_audible_t=lambda: None)
    listener.start()
    capture.taps[:] = [listener.tap]
    await capture.start()
    _emit({"ready": True})
    line = await loop.run_in_executor(None, sys.stdin.readline)
    until += float(line.split()[1])
    try:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        names = _thread_names()  # while the capture and the detector's threads still run
    finally:
        await capture.stop()
        await listener.stop()
        detector.close()
    return found, names


def runner_main(args: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m agent.bench.peers")
    parser.add_argument("--runner", choices=["oww", "lean", "agent"], required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--negative-s", type=float, required=True)
    parser.add_argument("--framework", default="onnx")
    parser.add_argument("--fifo", type=Path)
    opts = parser.parse_args(args)
    samples = np.fromfile(opts.audio, dtype="<i2")
    if opts.runner == "agent":
        import asyncio

        found, names = asyncio.run(_run_agent_path(opts.fifo, len(samples) / RATE + 0.5))
        _emit({"detections": found, "threads": names})
        sys.stdin.readline()
        _emit({"unpaced": None})
        return 0
    score = _runner_scorer(opts.runner, opts.framework)
    _emit({"ready": True})
    t0 = float(sys.stdin.readline().split()[1])
    found = _run_paced_scorer(score, samples, t0)
    _emit({"detections": found, "threads": _thread_names()})
    sys.stdin.readline()
    negative = samples[: int(opts.negative_s * RATE) // CHUNK * CHUNK]
    model = score.model  # type: ignore[attr-defined]
    model.reset()
    c0 = time.process_time()
    for k in range(len(negative) // CHUNK):
        model.predict(negative[k * CHUNK : (k + 1) * CHUNK])
    _emit({"unpaced": round((time.process_time() - c0) / (len(negative) / RATE), 4)})
    return 0


if __name__ == "__main__":
    sys.exit(runner_main(sys.argv[1:]))
