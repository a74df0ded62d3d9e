"""A minimal Wyoming wake word client for `voice-agent bench peers`.

It runs in the peer's own environment (wyoming-openwakeword's virtual environment, with its `wyoming`
library), never in the agent's: standard library and `wyoming` only. It sends `detect`, `audio-start`,
the raw 16 kHz s16le file in 80 ms `audio-chunk`s (chunk k at `t0 + (k + 1) * 80 ms` on the monotonic
clock, when a live microphone would have it whole; or `--speed` times faster than real time from the
start), waits `--linger` seconds (the server's threads may still be at work: it drops what a client
that left did not get processed), sends `audio-stop`, and prints one JSON line: the monotonic times at
which `detection` events arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from pathlib import Path

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.wake import Detect, Detection, NotDetected

CHUNK_BYTES = 1280 * 2
CHUNK_S = 0.08


async def run(port: int, audio: bytes, name: str, t0: float, speed: float, linger: float) -> dict[str, object]:
    detections: list[float] = []
    done = asyncio.Event()
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def reader() -> None:
            while True:
                event = await client.read_event()
                if event is None or NotDetected.is_type(event.type):
                    break
                if Detection.is_type(event.type):
                    detections.append(time.monotonic())
            done.set()

        task = asyncio.create_task(reader())
        await client.write_event(Detect(names=[name]).event())
        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
        n = len(audio) // CHUNK_BYTES
        t_start = time.monotonic()
        for k in range(n):
            delay = t0 + (k + 1) * CHUNK_S / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = audio[k * CHUNK_BYTES : (k + 1) * CHUNK_BYTES]
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=chunk).event())
        t_sent = time.monotonic()
        await asyncio.sleep(linger)
        await client.write_event(AudioStop().event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), 10)
        task.cancel()
    return {"detections": detections, "chunks": n, "t_start": t_start, "t_sent": t_sent}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--name", default="hey_jarvis")
    parser.add_argument("--t0", type=float, help="monotonic time of the audio's start (default: now)")
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    parser.add_argument("--linger", type=float, default=0.0, help="seconds between the last chunk and audio-stop")
    args = parser.parse_args()
    t0 = time.monotonic() if args.t0 is None else args.t0
    out = asyncio.run(run(args.port, args.audio.read_bytes(), args.name, t0, args.speed, args.linger))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
