"""The bare aiortc client in a process of its own, so it can run at the same time as the agent's call.

Measured one after the other, the agent's call and the bare client's met different moments of a
shared machine: the in-call ratio moved between 1.09 and 1.29 over four runs of the same commit. Run
side by side on the same emulator, each in its own process and both sampled in the same windows, a
noisy spell hits both alike (as `bench peers` does for the listeners).

`python -m agent.bench.bare_call` reads one JSON line on stdin (the endpoint, the emulator's key file,
the session, the raw 16 kHz audio's path; never a secret in its arguments), makes the call
(`baselines.bare_call`), answers `{"up": true}`, then serves requests, one per line: `cpu` (its own
CPU seconds, every thread, from getrusage), `threads` (CPU seconds by thread name, as the agent's
`call_threads_cpu_pct` is made) and `stop` (hang up and exit). `BareCallProcess` is the parent's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .common import cpu_s, thread_cpu_by_name


@dataclass(frozen=True)
class BareCallSpec:
    endpoint: str
    api_version: str
    key_file: Path
    audio: Path  # raw s16le, 16 kHz mono
    session: dict[str, Any] = field(default_factory=dict)
    model: str | None = None


class BareCallProcess:
    """The bare client's process, from the parent: `start()` returns once its call is up."""

    def __init__(self, spec: BareCallSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agent.bench.bare_call",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        spec = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.spec).items()}
        reply = await self._ask(json.dumps(spec), timeout)
        if not reply.get("up"):
            raise RuntimeError(f"the bare client's call did not come up: {reply}")

    async def cpu(self) -> float:
        """The child's CPU seconds so far (every thread)."""
        return float((await self._ask("cpu", 5.0))["cpu"])

    async def threads(self) -> dict[str, float]:
        """The child's CPU seconds so far, by thread name (`common.thread_cpu_by_name`)."""
        return {str(k): float(v) for k, v in (await self._ask("threads", 5.0))["threads"].items()}

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            await self._send(proc, "stop")
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    async def _ask(self, line: str, timeout: float) -> dict[str, Any]:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        await self._send(proc, line)
        answer = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not answer:
            raise RuntimeError(f"the bare client's process ended (exit {await proc.wait()})")
        return json.loads(answer)

    @staticmethod
    async def _send(proc: asyncio.subprocess.Process, line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")
        await proc.stdin.drain()


async def _serve() -> int:
    from ..voicelive.auth import ApiKey, Secret
    from ..voicelive.control import Target
    from .baselines import bare_call

    loop = asyncio.get_running_loop()

    async def readline() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    spec = json.loads(await readline())
    audio = np.fromfile(spec["audio"], dtype="<i2")
    key = Path(spec["key_file"]).read_text(encoding="utf-8").strip()
    target = Target(endpoint=spec["endpoint"], api_version=spec["api_version"], model=spec.get("model"))
    call = await bare_call(target, ApiKey(Secret(key)), spec.get("session") or {}, audio)
    answer({"up": True})
    try:
        while (line := await readline()) not in ("stop", ""):
            if line == "cpu":
                answer({"cpu": cpu_s()})
            elif line == "threads":
                answer({"threads": thread_cpu_by_name()})
    finally:
        await call.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_serve()))
