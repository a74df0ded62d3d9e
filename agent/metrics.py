"""Fleet health at a glance: what the service publishes about itself, every few seconds.

`Health` follows one Agent: it tallies what happened since start (wake words, conversations by how they
ended, failed calls by error kind, barge-ins, replies, seconds in calls) from the agent's own rings and
the state owner's snapshots, and samples the microphone's level from the pre-roll ring (no work per
captured block). `Publisher` renders it, in the Prometheus text format for node_exporter's textfile
collector (`metrics.textfile`) and as the status file `voice-agent status` reads (agent.status), and
rewrites both atomically (a temporary file in the same folder, fsync, rename; mode 0644) every
`metrics.interval_s` and, at most once a second, after state changes.

Every series carries the label `device`. Nothing secret and nothing anyone said goes in: counts, states,
levels, latencies, and a hash of the configuration without its secrets. The label values come from
fixed sets (states, end reasons, error kinds, the configured wake word models), so the file's size does
not grow with time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .state import ErrorKind, Snapshot, State
from .status import SCHEMA, STATUS_FILE, status_text, writer_dir

if TYPE_CHECKING:
    from .agent import Agent
    from .audio.preroll import PrerollBuffer
    from .config import Config
    from .conversation import ConversationResult

log = logging.getLogger(__name__)

#: How a conversation ended, as a small fixed set (the agent's own reasons are sentences).
END_REASONS = ("completed", "no_response", "max_length", "hung_up", "call_failed", "dropped")
#: What a failed call's error was (agent.voicelive.errors' kinds); anything else counts as "error".
ERROR_KINDS = ("network", "rate_limited", "negotiation", "auth", "config", "audio", "error")
#: Errors kept for `voice-agent status`.
LAST_ERRORS = 5
#: State changes closer together than this are written once.
DEBOUNCE_S = 1.0
#: The microphone's level is sampled from the pre-roll ring this often (it holds a few seconds).
MIC_SAMPLE_S = 2.0
MIC_WINDOW_S = 60.0


def end_reason_label(result: ConversationResult) -> str:
    reason = result.end_reason
    if reason == "call failed":
        return "call_failed"
    if reason == "follow-up window passed":
        return "completed"
    if reason == "no response from the service":
        return "no_response"
    if reason == "maximum call length reached":
        return "max_length"
    if "hung up" in reason or "stopping" in reason:
        return "hung_up"
    return "dropped"  # the service, the network or the media ended it


def error_kind_label(kind: str | None) -> str:
    return kind if kind in ERROR_KINDS else "error"


def device_label(config: Config) -> str:
    return config.device.name or socket.gethostname()


def config_hash(config: Config) -> str:
    """sha256 of the configuration as loaded (defaults filled in, keys sorted), without its secrets: the
    only secret a configuration may hold is a TURN server's credential (keys and tokens live elsewhere)."""
    data = dataclasses.asdict(config)
    for server in data["network"]["ice_servers"]:
        server.pop("credential", None)
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def package_version() -> str:
    try:
        return version("voice-agent")
    except PackageNotFoundError:
        return "unknown"


class MicLevel:
    """The microphone's RMS level over the last minute, in dBFS, from the blocks the pre-roll ring
    holds: sampled every couple of seconds (each block counted once), never per block."""

    def __init__(self, preroll: PrerollBuffer, window_s: float = MIC_WINDOW_S) -> None:
        self.preroll = preroll
        self.window_s = window_s
        self._t_last = -math.inf
        self._samples: deque[tuple[float, float, int]] = deque()  # (t, sum of squares, n)

    def sample(self, now: float) -> None:
        blocks = self.preroll.since(self._t_last)
        if blocks:
            # integers, not np.dot: a BLAS call wakes its thread pool, which then spins on the other core
            audio = np.concatenate([b.samples for b in blocks]).astype(np.int32)
            self._samples.append((now, float(np.square(audio).sum(dtype=np.int64)), audio.size))
            self._t_last = blocks[-1].t_end
        while self._samples and now - self._samples[0][0] > self.window_s:
            self._samples.popleft()

    def dbfs(self) -> float | None:
        n = sum(s[2] for s in self._samples)
        if not n:
            return None
        rms = math.sqrt(sum(s[1] for s in self._samples) / n)
        return round(20 * math.log10(rms / 32768 + 1e-10), 1)


class Health:
    """What happened since start, read cheaply from the agent: call `poll()` before reading."""

    def __init__(self, agent: Agent, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent = agent
        self.clock = clock
        self.t0 = clock()
        self.started = time.time()
        self.device = device_label(agent.config)
        self.models = [m.name for m in agent.config.wake.models]
        self.wake: Counter[str] = Counter()
        self.conversations: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.barge_ins = self.replies = self.reconnects = 0
        self.last_connect_ms: float | None = None
        self.last_first_reply_ms: float | None = None
        self.last_call: dict[str, Any] | None = None
        self.last_errors: deque[dict[str, Any]] = deque(maxlen=LAST_ERRORS)
        self.mic = MicLevel(agent.preroll)
        self._seen_detections = 0
        self._seen_results = 0
        self._previous_failed = False
        self._call_s = 0.0
        self._in_call_since: float | None = None
        self._t_user_done: float | None = None
        self._first_reply_pending = False
        self._call_first_reply_ms: float | None = None
        self._hash: tuple[Config, str] | None = None
        self.unsubscribe = agent.states.subscribe(self._on_state)

    # -- following the snapshots (event loop) ------------------------------------------------------

    def _on_state(self, old: Snapshot, new: Snapshot) -> None:
        if new.in_call and not old.in_call:
            self._in_call_since = new.t
            self._first_reply_pending = True
            self._t_user_done = None
            self._call_first_reply_ms = None
        elif old.in_call and not new.in_call and self._in_call_since is not None:
            self._call_s += new.t - self._in_call_since
            self._in_call_since = None
        if old.state is State.USER_SPEAKING and new.state is State.THINKING:
            self._t_user_done = new.t
        if new.state is State.SPEAKING and self._first_reply_pending and self._t_user_done is not None:
            self.last_first_reply_ms = self._call_first_reply_ms = round((new.t - self._t_user_done) * 1000, 1)
            self._first_reply_pending = False
        if new.error is not None and old.error is None:
            self._error(new.error.value, new.cause)
        if old.mic_ok and not new.mic_ok:
            self._error(ErrorKind.AUDIO.value, new.cause)

    def _error(self, kind: str, reason: str) -> None:
        self.last_errors.append({"t": round(time.time(), 3), "kind": kind, "reason": reason[:300]})

    # -- the agent's rings, folded in --------------------------------------------------------------

    def poll(self) -> None:
        listener = self.agent.listener
        if listener is not None:
            new = listener.detections_total - self._seen_detections
            if new > 0:
                for det in list(listener.detections)[-new:]:
                    self.wake[det.model] += 1
                self._seen_detections = listener.detections_total
        new = self.agent.conversations_done - self._seen_results
        if new > 0:
            for result in list(self.agent.results)[-new:]:
                self._fold(result)
            self._seen_results = self.agent.conversations_done
        self.mic.sample(self.clock())

    def _fold(self, result: ConversationResult) -> None:
        self.conversations[end_reason_label(result)] += 1
        failed = not result.ok and result.error_kind is not None
        if failed:
            self.failures[error_kind_label(result.error_kind)] += 1
        if self._previous_failed:
            self.reconnects += 1  # a call attempt right after a failed one
        self._previous_failed = failed
        self.barge_ins += result.barge_ins
        self.replies += max(len(result.responses), result.replies_heard)
        if result.connect_ms is not None:
            self.last_connect_ms = result.connect_ms
        self.last_call = {"end_reason": end_reason_label(result), "ok": result.ok,
                          "error_kind": result.error_kind, "connect_ms": result.connect_ms,
                          "first_reply_ms": self._call_first_reply_ms, "rtc_call_id": result.rtc_call_id}  # fmt: skip

    def config_sha256(self) -> str:
        """The running configuration's hash (a reload replaces the configuration: hashed once each)."""
        config = self.agent.config
        if self._hash is None or self._hash[0] is not config:
            self._hash = (config, config_hash(config))
        return self._hash[1]

    def call_seconds(self) -> float:
        ongoing = self.clock() - self._in_call_since if self._in_call_since is not None else 0.0
        return self._call_s + ongoing

    # -- output ------------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {
            "wake_detections": sum(self.wake.values()),
            "wake_detections_by_model": {m: self.wake[m] for m in self._model_labels()},
            "conversations": self.agent.conversations_done,
            "conversations_by_end_reason": {r: self.conversations[r] for r in END_REASONS},
            "call_failures": sum(self.failures.values()),
            "call_failures_by_kind": {k: self.failures[k] for k in ERROR_KINDS},
            "reconnects": self.reconnects,
            "barge_ins": self.barge_ins,
            "replies": self.replies,
            "call_seconds": round(self.call_seconds(), 3),
            "capture_reopens": self.agent.capture.stats.reopen_count,
            "capture_overruns": self.agent.capture.stats.overruns,
            "playback_underruns": self.agent.playback.stats.underruns,
        }

    def _model_labels(self) -> list[str]:
        return sorted(set(self.models) | set(self.wake))

    def status(self, running: bool = True) -> dict[str, Any]:
        snap = self.agent.states.snapshot
        shown = snap.shown_error
        return {
            "schema": SCHEMA,
            "running": running,
            "pid": os.getpid(),
            "device": self.device,
            "written": round(time.time(), 3),
            "started": round(self.started, 3),
            "uptime_s": round(self.clock() - self.t0, 1),
            "status": status_text(self.agent.config.device.name, snap),
            "state": snap.state.value,
            "muted": snap.muted,
            "mic_ok": snap.mic_ok,
            "blocked": snap.blocked.value if snap.blocked else None,
            "shown_error": shown.value if shown else None,
            "cause": snap.cause,
            "seq": snap.seq,
            "mic_level_dbfs": self.mic.dbfs(),
            "last_call": self.last_call,
            "last_errors": list(self.last_errors),
            "counters": self.counters(),
            "config_sha256": self.config_sha256(),
            "interval_s": self.agent.config.metrics.interval_s,
        }

    def prometheus(self, up: bool = True) -> str:
        snap = self.agent.states.snapshot
        c = self.counters()
        cpu = os.times()
        fams: list[tuple[str, str, str, Iterable[tuple[dict[str, str], float]]]] = [
            ("up", "gauge", "1 while the service runs; 0 once it stopped cleanly", [({}, int(up))]),
            ("info", "gauge", "The running version and the configuration's sha256 (without secrets)",
             [({"version": package_version(), "config_sha256": self.config_sha256()}, 1)]),
            ("state", "gauge", "1 for the state the device is in", ((
                {"state": s.value}, int(snap.state is s)) for s in State)),
            ("ready", "gauge", "1 when a wake word or press can start a conversation (or one is under way)",
             [({}, int(snap.state is not State.ERROR and snap.blocked is None and snap.mic_ok))]),
            ("muted", "gauge", "1 while the microphone is muted by the button", [({}, int(snap.muted))]),
            ("microphone_ok", "gauge", "0 while the microphone device delivers no audio", [({}, int(snap.mic_ok))]),
            ("error_shown", "gauge", "1 for the error the LEDs show", (
                ({"kind": k.value}, int(snap.shown_error is k)) for k in ErrorKind)),
            ("wake_detections_total", "counter", "Wake words detected, by model",
             (({"model": m}, n) for m, n in c["wake_detections_by_model"].items())),
            ("conversations_total", "counter", "Conversations, by how they ended",
             (({"end_reason": r}, n) for r, n in c["conversations_by_end_reason"].items())),
            ("call_attempts_total", "counter", "Calls attempted (one per conversation)",
             [({}, c["conversations"])]),
            ("call_failures_total", "counter", "Calls that failed, by error kind",
             (({"kind": k}, n) for k, n in c["call_failures_by_kind"].items())),
            ("reconnects_total", "counter", "Call attempts right after a failed one", [({}, c["reconnects"])]),
            ("barge_ins_total", "counter", "Replies interrupted by the user", [({}, c["barge_ins"])]),
            ("replies_total", "counter", "Replies from the service", [({}, c["replies"])]),
            ("call_seconds_total", "counter", "Seconds spent in calls", [({}, c["call_seconds"])]),
            ("capture_reopens_total", "counter", "Times the microphone device was reopened",
             [({}, c["capture_reopens"])]),
            ("capture_overruns_total", "counter", "Capture overruns", [({}, c["capture_overruns"])]),
            ("playback_underruns_total", "counter", "Playback underruns", [({}, c["playback_underruns"])]),
        ]
        level = self.mic.dbfs()
        if level is not None:
            fams.append(("microphone_level_dbfs", "gauge", "The microphone's RMS level over the last minute",
                         [({}, level)]))
        if self.last_connect_ms is not None:
            fams.append(("last_connect_seconds", "gauge", "The last call's wake to connected time",
                         [({}, self.last_connect_ms / 1000)]))
        if self.last_first_reply_ms is not None:
            fams.append(("last_first_reply_seconds", "gauge",
                         "The last call's end of the user's speech to the reply's first sound",
                         [({}, self.last_first_reply_ms / 1000)]))
        fams += [
            ("resident_memory_bytes", "gauge", "Resident memory of the service", [({}, rss_bytes())]),
            ("cpu_seconds_total", "counter", "CPU time of the service (user and system)",
             [({}, round(cpu.user + cpu.system, 3))]),
            ("uptime_seconds", "gauge", "Seconds since the service started", [({}, round(self.clock() - self.t0, 1))]),
        ]
        return render(fams, {"device": self.device})


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def render(fams: Iterable[tuple[str, str, str, Iterable[tuple[dict[str, str], float]]]], common: dict[str, str]) -> str:
    """The Prometheus text exposition format (version 0.0.4), every series with the `common` labels."""
    lines: list[str] = []
    for name, kind, help_text, samples in fams:
        full = f"voice_agent_{name}"
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in {**common, **labels}.items())
            lines.append(f"{full}{{{text}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` as one step: a reader (node_exporter) sees the old file or the new one, never
    half of one. The temporary name does not end in .prom, so node_exporter never reads it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask (the unit's is 0077)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)


class Publisher:
    """Writes the metrics file (when configured) and the status file (when there is a runtime folder)
    every `interval_s` and after state changes; `stop()` writes them once more as stopped."""

    def __init__(self, health: Health, textfile: Path | None, status_dir: Path | None, interval_s: float) -> None:
        self.health = health
        self.textfile = textfile
        self.status_path = status_dir / STATUS_FILE if status_dir is not None else None
        self.interval_s = interval_s
        self.writes = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failed: set[str] = set()
        self._unsubscribe = health.agent.states.subscribe(lambda _old, _new: self._changed.set())

    @classmethod
    def for_agent(cls, agent: Agent, env: dict[str, str] | None = None) -> Publisher | None:
        cfg = agent.config.metrics
        status_dir = writer_dir(cfg.runtime_dir, os.environ if env is None else env)
        if cfg.textfile is None and status_dir is None:
            return None
        return cls(Health(agent), cfg.textfile, status_dir, cfg.interval_s)

    @property
    def enabled(self) -> bool:
        return self.textfile is not None or self.status_path is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="metrics")
        where = ", ".join(str(p) for p in (self.textfile, self.status_path) if p is not None)
        log.info("publishing health every %.0f s to %s", self.interval_s, where)

    def render(self, running: bool = True) -> list[tuple[Path, bytes]]:
        """What to write now (reads the agent: call on the event loop)."""
        self.health.poll()
        out: list[tuple[Path, bytes]] = []
        if self.textfile is not None:
            out.append((self.textfile, self.health.prometheus(up=running).encode()))
        if self.status_path is not None:
            out.append((self.status_path, (json.dumps(self.health.status(running)) + "\n").encode()))
        return out

    def write(self, files: list[tuple[Path, bytes]]) -> None:
        for path, data in files:
            try:
                write_atomically(path, data)
            except OSError as exc:
                if str(path) not in self._failed:  # said once, not every 15 s
                    self._failed.add(str(path))
                    log.warning("cannot write %s: %s", path, exc.strerror or exc)
            else:
                self._failed.discard(str(path))
        self.writes += 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_write = last_write = loop.time()
        next_sample = next_write + MIC_SAMPLE_S
        await asyncio.to_thread(self.write, self.render())
        while True:
            next_write = last_write + self.interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(next_write, next_sample)):
                    await self._changed.wait()
            now = loop.time()
            if now >= next_sample:
                self.health.mic.sample(self.health.clock())
                next_sample = now + MIC_SAMPLE_S
            if self._changed.is_set():
                await asyncio.sleep(max(0.0, last_write + DEBOUNCE_S - now))  # a burst of changes: one write
                self._changed.clear()
            elif now < next_write:
                continue
            last_write = loop.time()
            await asyncio.to_thread(self.write, self.render())

    async def stop(self) -> None:
        """Stop writing; write a last time, marked stopped (`voice_agent_up 0`, `running: false`)."""
        self._unsubscribe()
        self.health.unsubscribe()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.write, self.render(running=False))
