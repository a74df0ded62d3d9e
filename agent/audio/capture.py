"""The one ALSA reader: a thread reading fixed periods from the microphone, fanned out on asyncio.

One daemon thread owns the capture PCM (pyalsaaudio, blocking `PCM_NORMAL` mode): it opens it, reads
one period at a time, keeps the configured channel, applies the gain, stamps the block with the
monotonic time of its last sample (the one clock for audio) and gives it to the taps in the thread (the
pre-roll, the wake word's thread). Only while something on the event loop subscribes (a call, a check)
does it hand blocks to the loop with `call_soon_threadsafe`; there a `CaptureHub` copies each block
into every subscriber's bounded queue; a full queue drops its oldest block and counts it, so a slow
consumer never holds up the others or the reader.

While nothing on the loop subscribes, the thread reads in bursts of one wake word chunk (`CHUNK_S`, 4
periods of 20 ms): after the read that ended a chunk it sleeps until the next chunk's last period is
half a period away, reads the three periods already there at once, and waits in the fourth read for
its end. It wakes twice a chunk instead of four times, and each wake-up's Python runs with warm caches:
measured here, that is what the thread costs (its Python is a few microseconds a block when warm, and
about a hundred right after a blocking read). The wake word needs nothing sooner: it scores whole
chunks, and its batches end where the bursts do. Blocks are stamped by sample count from the earliest
their reads could have returned (agent.audio.streamclock), so a block read at once, or a read the
scheduler woke late, still carries the time of its own last sample. A new subscriber ends
a sleep at once (a call needs every period as it comes). The buffer asked for holds twice a burst, so a
late wake-up does not overrun; a device that takes less is read every period.

Full duplex in a call: a `duplex` partner (the playback, `AlsaPlayback.pump`) is pumped after each read
while something on the loop subscribes, so the speaker is written in the same wake-up as the microphone
is read; the partner is released when the subscribers go (the idle bursts could not pace a speaker) and
when the reader stops.

Errors never end the service: a failed open or read is logged (once per distinct message), the state
becomes "error", the PCM is closed and reopened with exponential backoff, jitter and a cap, and the
state goes back to "running" with the first block read.

How pyalsaaudio 0.11 reports trouble (from its source and tests here): an overrun is not an exception,
`read()` returns `(-EPIPE, b"")` after it has already re-prepared the stream, so the next read works;
other errors (device gone, suspended) raise `alsaaudio.ALSAAudioError` with alsa-lib's message; a
device that cannot do the asked rate or channel count is silently opened with the nearest values, so
`open_pcm` checks what it got.

Opening can block, and pyalsaaudio holds the GIL while it does: `alsaaudio.PCM()` does not release it
around `snd_pcm_open`, so an open that waits freezes every Python thread, the event loop included
(measured here: a file-plugin FIFO without a writer stopped the main thread until a writer came). The
kernel makes a blocking open of a `hw:` PCM that another program holds wait until it is freed (read in
its source, not testable without a sound card), so `open_pcm` first probes with a non-blocking open,
which fails at once with EBUSY. `read()` and `write()` do release the GIL.

Stopping: closing a PCM from another thread while `read()` blocks in it is not safe (alsa-lib PCM
handles are not thread-safe, and pyalsaaudio frees the handle under the reader). So `stop()` only sets a
flag; the reader sees it after the read in progress returns (within one period on a live device, or
with the FIFO feeder still writing), closes the PCM itself and ends. If the read never returns (a
stalled device, or a FIFO whose writer keeps it open and writes nothing), `stop()` gives up after its
bound, logs it and leaves the daemon thread behind; that thread still closes the PCM and exits
whenever its read returns, and never touches the event loop after stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import alsaaudio
import numpy as np

from ..config import CaptureConfig
from .alsa import Backoff, ErrorReporter, PcmFactory, RateLimitedCounter, State, open_pcm, run_reopening
from .echo import EchoCanceller
from .frames import PcmBlock, blocks_per_chunk
from .streamclock import StreamClock

log = logging.getLogger(__name__)


class DuplexPartner(Protocol):
    """What the capture thread drives in a call: a device written in the same wake-up as each read."""

    def pump(self) -> None:
        """Do what is due now; called on the capture thread after each read. Must not block."""

    def release(self) -> None:
        """The reads stopped driving it: it paces itself again."""


class SubscriptionClosed(Exception):
    """The subscription was closed (unsubscribed, or the capture stopped)."""


class Subscription:
    """One consumer's bounded queue of capture blocks. Use on the event loop only.

    `async for block in sub` runs until the subscription is closed. A full queue drops its oldest block
    and counts it in `dropped`: a consumer that falls behind loses old audio, never delays new audio.
    Blocks are shared between subscribers: their sample arrays are read-only.
    """

    def __init__(self, name: str, max_blocks: int, hub: CaptureHub, after_seq: int = 0) -> None:
        self.name = name
        self.max_blocks = max_blocks
        #: Blocks up to this sequence number are not for this subscriber (it has them already).
        self.after_seq = after_seq
        self.dropped = 0
        self.received = 0
        self._hub = hub
        self._queue: deque[PcmBlock] = deque()
        self._event = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closed

    def _put(self, block: PcmBlock) -> None:
        if block.seq <= self.after_seq:
            return
        if len(self._queue) >= self.max_blocks:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(block)
        self.received += 1
        self._event.set()

    def get_nowait(self) -> PcmBlock | None:
        return self._queue.popleft() if self._queue else None

    async def get(self, timeout: float | None = None) -> PcmBlock:
        """The next block; raises `SubscriptionClosed` when closed and drained, `TimeoutError` after
        `timeout` seconds without a block."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                if self._closed:
                    raise SubscriptionClosed(self.name)
                self._event.clear()
                await self._event.wait()
        return self._queue.popleft()

    def clear(self) -> int:
        """Forget the queued blocks (a consumer resetting); returns how many."""
        n = len(self._queue)
        self._queue.clear()
        return n

    def close(self) -> None:
        """Unsubscribe; a waiting `get()` raises `SubscriptionClosed` once the queue is drained."""
        self._hub.unsubscribe(self)

    def _close(self) -> None:
        self._closed = True
        self._event.set()

    def __aiter__(self) -> AsyncIterator[PcmBlock]:
        return self

    async def __anext__(self) -> PcmBlock:
        try:
            return await self.get()
        except SubscriptionClosed:
            raise StopAsyncIteration from None


class CaptureHub:
    """Copies every capture block to each subscriber's bounded queue. Use on the event loop only.

    `on_subscribe` is called with every new subscription (the reader ends an idle sleep with it)."""

    def __init__(self, on_subscribe: Callable[[], None] | None = None) -> None:
        self._subs: dict[str, Subscription] = {}
        self._on_subscribe = on_subscribe

    def subscribe(self, name: str, max_blocks: int, after_seq: int = 0) -> Subscription:
        """A new consumer on the event loop; blocks numbered up to `after_seq` are skipped (it took them
        from the pre-roll ring already)."""
        if name in self._subs:
            raise ValueError(f"a capture subscriber named {name!r} exists already")
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        sub = Subscription(name, max_blocks, self, after_seq)
        self._subs[name] = sub
        if self._on_subscribe is not None:
            self._on_subscribe()
        return sub

    def unsubscribe(self, sub: Subscription | str) -> None:
        name = sub if isinstance(sub, str) else sub.name
        found = self._subs.pop(name, None)
        if found is not None:
            found._close()

    @property
    def subscribers(self) -> tuple[str, ...]:
        return tuple(self._subs)

    def publish(self, block: PcmBlock) -> None:
        for sub in self._subs.values():
            sub._put(block)

    def close(self) -> None:
        """Close every subscription (their iterators end); new subscriptions are still accepted."""
        for name in list(self._subs):
            self.unsubscribe(name)


# --------------------------------------------------------------------------------------------------
# The reader


@dataclass
class CaptureStats:
    state: State = "stopped"
    blocks: int = 0
    overruns: int = 0
    reopen_count: int = 0
    #: Blocks handed to the event loop (only while something there subscribes: a call, a check).
    to_loop: int = 0
    #: Sleeps between idle bursts (see the module docstring).
    idle_sleeps: int = 0
    last_error: str | None = None


def apply_gain(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """int16 samples times 10^(gain_db/20), rounded and clipped to the int16 range."""
    if gain_db == 0:
        return samples
    scaled = np.rint(samples.astype(np.float32) * np.float32(10 ** (gain_db / 20)))
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def pick_channel(interleaved: np.ndarray, channels: int, channel: int) -> np.ndarray:
    """One channel out of interleaved int16 frames (a copy, contiguous)."""
    if channels == 1:
        return interleaved
    frames = len(interleaved) // channels
    return np.ascontiguousarray(interleaved[: frames * channels].reshape(frames, channels)[:, channel])


class AlsaCapture:
    """Reads the microphone in one thread and publishes `PcmBlock`s on `hub` (see the module docstring).

    `ready` is set when the first block reached the event loop (the service's systemd READY waits on
    it). `stats` is a snapshot. `start()` and `stop()` run on the event loop.
    """

    #: How far ahead of real time a device that never blocks (a regular file, the `null` device) may
    #: run before reads are paced, so a misconfigured device cannot flood the consumers.
    MAX_AHEAD_S = 0.1

    def __init__(
        self,
        cfg: CaptureConfig,
        *,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stop_timeout_s: float = 1.0,
        pcm_factory: PcmFactory = alsaaudio.PCM,
        on_state: Callable[[State], None] | None = None,
    ) -> None:
        if not 0 <= cfg.channel < cfg.channels:
            raise ValueError(f"capture channel {cfg.channel} is not one of the {cfg.channels} channels")
        self.cfg = cfg
        self.rate = cfg.rate
        self.period_frames = cfg.rate * cfg.period_ms // 1000
        self.period_s = self.period_frames / cfg.rate
        #: Periods read in one go while only the taps listen (1: periods that do not divide a chunk).
        self.burst_blocks = blocks_per_chunk(self.period_s) or 1
        #: Ends an idle sleep early: set by a new subscriber and by stop().
        self._nudge = threading.Event()
        self.hub = CaptureHub(on_subscribe=self._nudge.set)
        self.ready = asyncio.Event()
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._stop_timeout_s = stop_timeout_s
        self._pcm_factory = pcm_factory
        self._errors = ErrorReporter(log)
        self._overruns = RateLimitedCounter(log, f"capture overruns on {cfg.device!r}")
        self._stats = CaptureStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seq = 0
        #: Called in the capture thread with every block, before anything reaches the event loop: the
        #: pre-roll ring and the wake word's thread take their audio here, so while the device only
        #: listens the event loop is not woken 50 times a second. A tap must return at once.
        self.taps: list[Callable[[PcmBlock], None]] = []
        #: Held while the taps run and the thread decides whether the loop needs the block: holding it,
        #: a consumer can take the pre-roll and subscribe with no block falling between the two.
        self.tap_lock = threading.Lock()
        self._ready_sent = False
        #: Told (on the event loop) whenever the device's state changes: the owner of the device's state
        #: learns of a lost microphone when it happens, not by polling.
        self.on_state = on_state
        #: Pumped after each read while a subscriber listens (full duplex, see the module docstring).
        self.duplex: DuplexPartner | None = None
        #: Takes the speaker's echo out of each block before anything hears it (agent.audio.echo).
        self.echo: EchoCanceller | None = None

    @property
    def stats(self) -> CaptureStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def state(self) -> State:
        return self._stats.state

    def _update(self, **changes: Any) -> None:
        with self._lock:
            before = self._stats.state
            for key, value in changes.items():
                setattr(self._stats, key, value)
            after = self._stats.state
        if after != before and self.on_state is not None:
            self._tell_loop(self.on_state, after)

    def _tell_loop(self, fn: Callable[[State], None], state: State) -> None:
        """Call `fn(state)` on the event loop, from the loop itself or from the capture thread."""
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            fn(state)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, state)

    def _count(self, key: str) -> None:
        with self._lock:
            setattr(self._stats, key, getattr(self._stats, key) + 1)

    async def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._loop = asyncio.get_running_loop()
        self._stop = threading.Event()  # a fresh flag: a thread left behind by stop() keeps its own
        self._update(state="starting")
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=f"alsa-capture:{self.cfg.device}", daemon=True
        )
        self._thread.start()
        log.info(
            "capture from %r: %d Hz, %d channel(s), keeping channel %d, %d ms periods, gain %+.1f dB",
            self.cfg.device,
            self.rate,
            self.cfg.channels,
            self.cfg.channel,
            self.cfg.period_ms,
            self.cfg.gain_db,
        )

    async def stop(self) -> None:
        """Stop reading and close the device; returns within one period plus `stop_timeout_s`."""
        self._stop.set()
        self._nudge.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self.period_s + self._stop_timeout_s)
            if thread.is_alive():
                log.warning(
                    "capture thread is still blocked in the device (no data for %.1f s); leaving it behind,"
                    " it closes the device when its read returns",
                    self.period_s + self._stop_timeout_s,
                )
        self._update(state="stopped")
        self.ready.clear()
        self._ready_sent = False
        self.hub.close()

    # -- the thread --------------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        def on_reopen() -> None:
            self._count("reopen_count")

        run_reopening(
            stop,
            f"capture device {self.cfg.device!r}",
            lambda: open_pcm(
                self._pcm_factory,
                alsaaudio.PCM_CAPTURE,
                self.cfg.device,
                self.rate,
                self.cfg.channels,
                self.period_frames,
                periods=max(4, 2 * self.burst_blocks),
            ),
            self._read_loop,
            self._close,
            self._fail,
            self._backoff,
            on_reopen,
        )
        log.debug("capture thread for %r ended", self.cfg.device)

    def _fail(self, message: str) -> None:
        self._errors.report(message)
        self._update(state="error", last_error=message)

    @staticmethod
    def _close(pcm: Any) -> None:
        with contextlib.suppress(Exception):
            pcm.close()

    def _read_loop(self, pcm: Any, stop: threading.Event) -> None:
        """Read until `stop`; raises on a device error. A read that waited for its period anchors the
        pacing (`anchor`, `k` periods since); the stamps come from a `StreamClock`. Idle, reads come in
        bursts (see the module docstring). Reads that never block (a regular file or the `null` device)
        are paced to real time; a live device, whose clock drifts from ours, is never held back, since
        every read that waits re-anchors."""
        burst = self._burst_for(pcm)
        try:
            self._reads(pcm, stop, burst)
        finally:
            if self.duplex is not None:
                self.duplex.release()

    def _reads(self, pcm: Any, stop: threading.Event, burst: int) -> None:
        anchor: float | None = None
        k = 0
        broken_pipes = 0
        warned = False
        driving = False  # the duplex partner was pumped after the last read
        clock = StreamClock(self.rate)  # the blocks' stamps (the anchor only paces the reads)
        while not stop.is_set():
            t_before = time.monotonic()
            try:
                n, data = pcm.read()
            except alsaaudio.ALSAAudioError as exc:
                # Older pyalsaaudio raised on an overrun; treat a few in a row as overruns.
                if "Broken pipe" in str(exc) and broken_pipes < 10:
                    broken_pipes += 1
                    self._overrun()
                    clock.reset()
                    continue
                raise
            t_end = time.monotonic()
            if stop.is_set():
                return  # stopping: nobody wants this block, and the loop may be gone
            if n < 0:
                if n == -errno.EPIPE:
                    self._overrun()
                    anchor = None
                    clock.reset()
                    continue
                raise alsaaudio.ALSAAudioError(f"read returned {n}")
            broken_pipes = 0
            if n == 0 or not data:
                stop.wait(self.period_s / 4)  # nothing to read (not expected in blocking mode)
                continue
            waited = anchor is None or t_end - t_before >= self.period_s / 4
            if waited:
                anchor, k = t_end, 0
            else:
                k += 1
            assert anchor is not None
            block = self._make_block(data, clock.stamp(t_end, n))
            subscribed = self._deliver_from_thread(block, stop)
            if self.duplex is not None and (driving or subscribed):
                driving = subscribed
                if driving:
                    self.duplex.pump()
                else:
                    self.duplex.release()
            if waited:
                if burst > 1 and self._seq % burst == 0:
                    self._idle_sleep(until=anchor + (burst - 0.5) * self.period_s)
                continue
            ahead = anchor + k * self.period_s - t_end
            if ahead > self.MAX_AHEAD_S:
                if not warned:
                    warned = True
                    log.warning(
                        "capture device %r delivers faster than real time (a file or the null device?):"
                        " pacing its reads",
                        self.cfg.device,
                    )
                stop.wait(ahead - self.MAX_AHEAD_S)

    def _burst_for(self, pcm: Any) -> int:
        """The periods to read per idle burst on this open device: `burst_blocks`, or 1 if the device
        took a buffer smaller than two bursts (a sleep of most of a burst could then overrun it)."""
        info = pcm.info() if hasattr(pcm, "info") else {}
        buffer_frames = int(info.get("buffer_size") or 0)
        if self.burst_blocks > 1 and buffer_frames < 2 * self.burst_blocks * self.period_frames:
            log.info(
                "capture device %r holds %d ms, less than two %d ms bursts: reading every period while idle",
                self.cfg.device,
                buffer_frames * 1000 // self.rate,
                self.burst_blocks * self.cfg.period_ms,
            )
            return 1
        return self.burst_blocks

    def _idle_sleep(self, until: float) -> None:
        """After the read that ended a chunk, while only the taps listen: sleep until the next chunk's
        last period is half a period away (a subscriber or stop() ends the sleep early)."""
        self._nudge.clear()  # before the check: a subscriber arriving after it still ends the sleep
        if self.hub.subscribers:
            return
        self._count("idle_sleeps")
        self._nudge.wait(max(0.0, until - time.monotonic()))

    def _overrun(self) -> None:
        self._count("overruns")
        self._overruns.hit(" (the reader fell behind: audio was lost)")

    def _make_block(self, data: bytes, t_end: float) -> PcmBlock:
        interleaved = np.frombuffer(data, dtype=np.int16)
        mono = apply_gain(pick_channel(interleaved, self.cfg.channels, self.cfg.channel), self.cfg.gain_db)
        reference = None
        if self.echo is not None:
            mono, reference = self.echo.process(mono, t_end)
            t_end -= self.echo.latency_s  # its output is a few ms late: the stamp says so
            if reference is not None:
                reference.flags.writeable = False
        mono.flags.writeable = False  # shared by every subscriber
        self._seq += 1
        return PcmBlock(samples=mono, rate=self.rate, t_end=t_end, seq=self._seq, reference=reference)

    def _deliver_from_thread(self, block: PcmBlock, stop: threading.Event) -> bool:
        """To the taps, and to the loop while something there subscribes (or READY's first block is to
        go); returns whether something subscribes."""
        with self._lock:
            self._stats.blocks += 1
            recovered = self._stats.state != "running"
            if recovered:
                was_error = self._stats.state == "error"
                self._stats.state = "running"
        if recovered:
            self._backoff.reset()
            self._errors.clear()
            if was_error:
                log.info("capture from %r works again", self.cfg.device)
        with self.tap_lock:
            for tap in self.taps:
                try:
                    tap(block)
                except Exception:  # a consumer's bug must not stop the microphone
                    log.exception("capture tap %r failed", tap)
            subscribed = bool(self.hub.subscribers)
            to_loop = subscribed or not self._ready_sent
            self._ready_sent = True
        if not to_loop:
            return subscribed
        self._count("to_loop")
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, block, stop)
        except RuntimeError:  # the loop is closed: nobody left to read
            stop.set()
        return subscribed

    def _deliver(self, block: PcmBlock, stop: threading.Event) -> None:
        """On the event loop."""
        if stop.is_set():
            return
        self.hub.publish(block)
        if not self.ready.is_set():
            self.ready.set()
