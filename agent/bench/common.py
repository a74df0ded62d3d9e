"""What the benchmarks share: the emulator in a subprocess, percentiles, process statistics.

The emulator runs in a process of its own so that the agent's CPU, memory, threads and file
descriptors are measured alone; it writes each call's record (`--record-dir`), whose times are
`time.monotonic()` (CLOCK_MONOTONIC, one clock for every process on the machine) and so compare with
the agent's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def pct(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0..1) of `values` by rank, rounded to 0.1; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


@dataclass(frozen=True)
class EmulatorProcess:
    proc: subprocess.Popen[str]
    url: str
    key: str
    record_dir: Path
    key_file: Path  # 0600: how a process of the benchmark's own gets the key (never in its arguments)


def _drain(stream: Any) -> None:
    while stream.read(65536):
        pass


async def start_emulator(key_file: Path, record_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`voice-agent emulator` on a free port of 127.0.0.1; returns the process and its ws:// URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "emulator", "--port", "0", "--api-key-file", str(key_file),
         "--record-dir", str(record_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(proc.stdout.readline)
        m = re.search(r"listening on (ws://127\.0\.0\.1:\d+)", line)
        if m:
            # keep draining its output so it never blocks on a full pipe (and discard it: a read() to
            # EOF would hold all of it, about 1.5 KB a call, in this process until the emulator exits)
            asyncio.get_running_loop().run_in_executor(None, _drain, proc.stdout)
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("the emulator did not start")


@contextlib.asynccontextmanager
async def emulator_process(tmpdir: Path, *extra: str) -> AsyncIterator[EmulatorProcess]:
    """An emulator subprocess with a fresh key (a 0600 file in `tmpdir`), stopped on the way out."""
    key = secrets.token_urlsafe(24)
    key_file = tmpdir / "key"
    key_file.touch(mode=0o600)
    key_file.write_text(key)
    record_dir = tmpdir / "calls"
    proc, url = await start_emulator(key_file, record_dir, *extra)
    try:
        yield EmulatorProcess(proc, url, key, record_dir, key_file)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def call_records(record_dir: Path) -> dict[str, dict[str, Any]]:
    """The emulator's call timelines written so far, by rtc_call_id."""
    out: dict[str, dict[str, Any]] = {}
    for path in record_dir.glob("call-*.json"):
        with contextlib.suppress(OSError, ValueError):  # one being written right now
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("rtc_call_id"):
                out[record["rtc_call_id"]] = record
    return out


async def wait_until(check: Callable[[], object], timeout: float, step: float = 0.02) -> bool:
    """Poll `check()` until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


# --------------------------------------------------------------------------------------------------
# This process, from /proc


def vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def cpu_s() -> float:
    """CPU seconds of the whole process (every thread), user + system, at microsecond resolution."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def thread_cpu_s(thread: threading.Thread | None) -> float:
    """CPU seconds of one thread of this process (0 if it is not running): to take the benchmark's
    own FIFO feeder out of the agent's figure."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, ProcessLookupError):
        return 0.0


def thread_cpu_by_name() -> dict[str, float]:
    """CPU seconds of each thread of this process so far, by its Python name up to the first colon
    (threads Python did not start, such as a library's own, by their OS name). Clock-tick resolution."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            name = names.get(int(task.name)) or "os:" + (task / "comm").read_text().strip()
        except (OSError, ValueError):
            continue  # a thread that just ended
        name = name.split(":")[0] if not name.startswith("os:") else name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_cpu_pct(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Percent of one core each thread used between two `thread_cpu_by_name()` readings."""
    pct_by = {name: round(100 * (cpu - before.get(name, 0.0)) / seconds, 2) for name, cpu in after.items()}
    return {name: v for name, v in sorted(pct_by.items(), key=lambda kv: -kv[1]) if v > 0}


@dataclass(frozen=True)
class ProcSnapshot:
    """Resident memory, OS threads (/proc/self/task), Python threads and open file descriptors."""

    rss_mb: float
    threads: int
    py_threads: int
    fds: int
    #: The Python threads' names, to say which one came or went.
    thread_names: tuple[str, ...] = ()

    @property
    def lasting_threads(self) -> int:
        """OS threads less the event loop's default executor's workers: a pool bounded by its
        max_workers that starts a worker when a job finds none idle (aiortc encodes Opus on it), so its
        size says when two jobs once overlapped, not that something leaks."""
        return self.threads - sum(1 for name in self.thread_names if name.startswith("asyncio_"))

    @classmethod
    def take(cls) -> ProcSnapshot:
        tasks = list(Path("/proc/self/task").iterdir())
        names = [t.name for t in threading.enumerate()]
        return cls(
            rss_mb=round(vm_rss_mb(), 1),
            threads=len(tasks),
            py_threads=threading.active_count(),
            fds=len(list(Path("/proc/self/fd").iterdir())),
            thread_names=tuple(sorted(names)),
        )


async def paired_cpu_windows(
    seconds: float, window_s: float, other: Callable[[], Awaitable[float]], exclude: Callable[[], float] | None = None
) -> tuple[list[float], list[float]]:
    """`cpu_windows` for this process and, in the same windows, for another whose CPU seconds `other()`
    returns: two things compared side by side meet the machine's noisy spells alike."""
    mine: list[float] = []
    theirs: list[float] = []
    end = time.monotonic() + seconds
    while True:
        t0, c0, x0, o0 = time.monotonic(), cpu_s(), exclude() if exclude else 0.0, await other()
        remaining = end - t0
        if remaining < window_s / 2:
            return mine, theirs
        await asyncio.sleep(min(window_s, remaining))
        t1, c1, x1, o1 = time.monotonic(), cpu_s(), exclude() if exclude else 0.0, await other()
        mine.append(round(100 * ((c1 - c0) - (x1 - x0)) / (t1 - t0), 2))
        theirs.append(round(100 * (o1 - o0) / (t1 - t0), 2))


async def _no_cpu() -> float:
    return 0.0


async def cpu_windows(seconds: float, window_s: float, exclude: Callable[[], float] | None = None) -> list[float]:
    """Process CPU over wall time, in percent of one core, in consecutive windows of `window_s` over
    `seconds`; `exclude()` gives CPU seconds to take out (a thread of the benchmark's own)."""
    mine, _ = await paired_cpu_windows(seconds, window_s, _no_cpu, exclude)
    return mine
