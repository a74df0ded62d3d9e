"""Bounded playout to the ALSA speaker: the assistant's voice and earcons.

The event loop converts incoming audio (aiortc's 48 kHz stereo s16 frames, or mono int16 earcons) to the
device's rate and channels with PyAV's resampler and appends it to a bounded playout buffer; one thread
owns the playback PCM and writes one period at a time from that buffer while there is audio, and
sleeps while there is none.

- Bounded: the buffer holds at most `buffer_ms`; when full, the oldest audio is dropped and counted, so a
  burst (aiortc's incoming queue is unbounded) cannot build up seconds of delay.
- Barge-in: `flush()` empties the buffer at once; the thread also drops what ALSA still holds
  (`pcm.drop()`, at most the write lead of ~2 periods), so playback stops within about one period.
- Paced: the thread keeps at most `lead_periods` (2) periods ahead of real time on the monotonic clock.
  A real device also blocks `write()` when its buffer is full, so self-pacing simply never gets far
  ahead there; the `null`-backed file plugin never blocks, and without pacing the thread would write
  a whole answer at once. When the device reports how much it holds (`avail()`), that is used to re-anchor
  the pace, so a DAC clock that runs faster than ours cannot slowly drain the device into an xrun.
- Nothing while nothing plays: when the buffer has been empty for `underrun_gap_ms` (and what the
  device holds has played), the thread stops the device (`drop()`; the PCM stays open and prepared)
  and blocks until audio is queued; the first write starts the device again. So an idle speaker gets
  no stream of silence (some HATs hiss while they play one, and writing it costs CPU 50 times a
  second). Within an answer, a gap shorter than `underrun_gap_ms` is filled with silence (no xrun, no
  click). An `underrun` is counted only when the buffer ran dry in the middle of audio, that is, when
  more audio came within `underrun_gap_ms` of running dry, and what ran dry was sound (a gap in the
  service's silence, as after a barge-in while the stopped reply's tail is dropped, is heard by
  nobody); an answer that ended and a later one that started are not underruns. A stopped device
  starts once `prebuffer_ms` is buffered (or the oldest buffered sample has waited that long, so short
  clips play too). It defaults to the write lead and one period more (3 periods, 60 ms): the call's
  frames come one per 20 ms, and the thread fills in silence when the device holds less than half a
  period, so the device's fill when a frame is due, less that half period, is the slack a late frame
  has. Started with one frame there is none (a period of silence after the first word, and everything
  after it a period late); with two, 10 ms, which this machine's loaded event loop alone exceeds; with
  three, 30 ms. A running device that ran dry takes the next audio at once.
- Latency adapts, within bounds: the service streams RTP all through the call, silence included, so a
  gap filled with silence delays everything after it, which is also the slack the next late frame
  needs. So each underrun raises the latency allowed by a period (up to `max_slack_periods`), and every
  `slack_decay_s` without one lowers it by a period again. While more than that is queued or in the
  device, silent frames (`frames.is_audible`) coming in are dropped instead of queued
  (`silence_dropped_ms`): a pause between words gets a little shorter, and the voice is back to the
  delay the network's jitter needs, not the sum of every hiccup in the call. The floor is the write
  lead, the period just written and one more.
- Timing: `mark()` returns the position of the next sample queued; `first_write_after(mark)` gives the
  monotonic time right after the write that carried it to ALSA (None until then). `on_written` is
  called from the thread with (that time, audio frames written) after each write that carried audio.
  Both mean "handed to ALSA"; the device plays it about the write lead later.

- Full duplex in a call: while a call listens to the microphone, the capture thread calls `pump()` after
  each read and writes what is due, so one thread wake per period serves both devices (as JACK's and
  PortAudio's duplex streams do); the playback thread then only wakes for a flush, a start, or to look
  every `DRIVEN_CHECK_S` whether the capture thread still drives, and waits for a late frame itself
  (see `_step`). When the call ends the capture thread calls `release()`, and this thread paces the
  device again. The cost: a frame that arrives between two reads waits for the next one, about half a
  period on average (`bench audio`'s downlink figure), for one thread wake fewer per period.

Errors never end the service: a failed open or write is logged once per distinct message, the state
becomes "error", and the device is reopened with backoff; audio keeps queueing (bounded) meanwhile.
`stop()` drops what is queued and closes promptly (no drain).
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import alsaaudio
import av
import numpy as np

from ..config import PlaybackConfig
from .alsa import Backoff, ErrorReporter, PcmFactory, RateLimitedCounter, State, open_pcm, run_reopening
from .echo import ReferenceTimeline
from .frames import is_audible
from .resample import PcmConverter, convert_pcm
from .writelog import TimeRing, WriteLog

log = logging.getLogger(__name__)

#: While idle the thread blocks until audio is queued; it also looks again this often (a safety net).
IDLE_CHECK_S = 5.0
#: While the capture thread drives the device (`AlsaPlayback.pump`), the playback thread looks this often
#: whether it still does (a safety net: `release()` wakes it when the driving ends).
DRIVEN_CHECK_S = 0.1
#: A pass this long after the device's schedule ran out counts as a late write (`late_writes`).
LATE_S = 0.002
#: A `pump` counts as driving for this many periods: a capture thread that stalls longer hands the
#: device back to the playback thread at its next look.
DRIVEN_FOR_PERIODS = 3


#: A write that carried audio, as a plain tuple (made on the device thread's path 50 times a second):
#: (end position of its audio, when the write returned, start position, when its first frame plays,
#: from what the device held ahead of it).
_Write = tuple[int, float, int, float]


class _LeadWait(float):
    """A wait because the write lead is full (what a driving capture thread takes over)."""


@dataclass
class _Device:
    """The open playback PCM and what the passes over it keep (under `AlsaPlayback._step_lock`)."""

    pcm: Any
    buffer_frames: int
    silence: np.ndarray  # a period of it, written while the device plays out or waits mid-answer
    sched: float = field(default_factory=time.monotonic)  # when the next frame written will play
    active: bool = False  # the device was started by a write and not stopped since
    worked: bool = False  # a write succeeded on this open
    error: BaseException | None = None  # a write from the capture thread failed


@dataclass
class PlaybackStats:
    state: State = "stopped"
    written_frames: int = 0
    """Frames handed to ALSA, silence included."""
    audio_frames: int = 0
    """Frames of queued audio handed to ALSA."""
    underruns: int = 0
    """The playout buffer ran dry in the middle of audio."""
    xruns: int = 0
    """ALSA itself ran dry (write returned -EPIPE): the thread was late."""
    dropped_ms: float = 0.0
    """Audio dropped because the buffer was full."""
    silence_dropped_ms: float = 0.0
    """Silent frames dropped to bring the latency back under `max_latency_ms`."""
    flushed_ms: float = 0.0
    """Audio dropped by flush()."""
    late_writes: int = 0
    """A pass came after the running device had played all it was given (by its schedule): a gap on the
    speaker, which a real device reports as an xrun too, and a file-backed one (the tests', the
    benchmarks') never does."""
    driven_passes: int = 0
    """Passes over the device made by the capture thread (`pump`, full duplex in a call)."""
    reopen_count: int = 0
    last_error: str | None = None


class PlayoutBuffer:
    """A thread-safe FIFO of interleaved int16 frames with a bound and absolute positions.

    Positions count frames since creation: `end_pos` is where the next pushed frame goes, `head_pos` the
    first frame still buffered. Dropped frames advance `head_pos` without being played, which is what
    lets `AlsaPlayback.first_write_after` map a mark to a write.

    Each pushed chunk carries whether it is audible (`frames.is_audible`, found once by the producer),
    so the thread that writes never scans samples again: a numpy call on the device thread's path,
    with its caches cold after each sleep, costs this machine about 100 µs, 50 times a second.
    """

    def __init__(self, channels: int, max_frames: int) -> None:
        self.channels = channels
        self.max_frames = max_frames
        self._chunks: deque[tuple[np.ndarray, bool]] = deque()  # each (frames, channels), audible
        self.empty = np.zeros((0, channels), np.int16)  # what an empty take returns
        self.empty.flags.writeable = False
        self._frames = 0
        self._lock = threading.Lock()
        self.head_pos = 0
        self.end_pos = 0
        self.oldest_push_t: float | None = None

    @property
    def frames(self) -> int:
        return self._frames

    def push(self, interleaved: np.ndarray, audible: bool) -> int:
        """Append frames (C-contiguous int16), `audible` or not; returns how many old frames were
        dropped to stay within the bound."""
        chunk = np.asarray(interleaved, dtype=np.int16).reshape(-1, self.channels)
        if not len(chunk):
            return 0
        with self._lock:
            if not self._frames:
                self.oldest_push_t = time.monotonic()
            self._chunks.append((chunk, audible))
            self._frames += len(chunk)
            self.end_pos += len(chunk)
            excess = self._frames - self.max_frames
            if excess > 0:
                self._drop_head(excess)
            return max(0, excess)

    def take(self, n: int) -> tuple[np.ndarray, int, bool]:
        """Up to `n` frames from the head (C-contiguous), the position of the first of them, and whether
        any chunk they came from is audible. A period that is one pushed frame (the call's 20 ms
        frames, at the speaker's rate) is handed out as it is, with no copy."""
        with self._lock:
            start = self.head_pos
            parts: list[np.ndarray] = []
            audible = False
            need = n
            while need and self._chunks:
                head, head_audible = self._chunks[0]
                audible = audible or head_audible
                if len(head) <= need:
                    self._chunks.popleft()
                    parts.append(head)
                    need -= len(head)
                else:
                    parts.append(head[:need])
                    self._chunks[0] = (head[need:], head_audible)
                    need = 0
            got = n - need
            self._frames -= got
            self.head_pos += got
            if not self._frames:
                self.oldest_push_t = None
        if len(parts) == 1:
            return parts[0], start, audible
        return (np.concatenate(parts) if parts else self.empty), start, audible

    def clear(self) -> int:
        """Drop everything; returns how many frames."""
        with self._lock:
            n = self._frames
            self._drop_head(n)
            return n

    def _drop_head(self, n: int) -> None:
        """Under the lock."""
        self._frames -= n
        self.head_pos += n
        while n and self._chunks:
            head, audible = self._chunks[0]
            if len(head) <= n:
                self._chunks.popleft()
                n -= len(head)
            else:
                self._chunks[0] = (head[n:], audible)
                n = 0
        if not self._frames:
            self.oldest_push_t = None


class AlsaPlayback:
    """Plays queued audio on an ALSA device from one thread (see the module docstring)."""

    def __init__(
        self,
        cfg: PlaybackConfig,
        *,
        prebuffer_ms: float | None = None,
        underrun_gap_ms: float = 500.0,
        lead_periods: float = 2.0,
        max_slack_periods: int = 8,
        slack_decay_s: float = 10.0,
        on_written: Callable[[float, int], None] | None = None,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        stop_timeout_s: float = 1.0,
        pcm_factory: PcmFactory = alsaaudio.PCM,
    ) -> None:
        if cfg.channels not in (1, 2):
            raise ValueError(f"playback channels must be 1 or 2, not {cfg.channels}")
        self.cfg = cfg
        self.rate = cfg.rate
        self.channels = cfg.channels
        self.period_frames = cfg.rate * cfg.period_ms // 1000
        self.period_s = self.period_frames / cfg.rate
        self.on_written = on_written
        if prebuffer_ms is None:
            prebuffer_ms = (lead_periods + 1) * cfg.period_ms
        self._prebuffer_frames = int(self.rate * prebuffer_ms / 1000)
        # The prebuffer's level, and a period more: two frames that come together.
        self._base_latency_s = (lead_periods + 2) * self.period_s
        self._max_slack = max_slack_periods
        self._slack_decay_s = slack_decay_s
        # Written by the thread only: the periods earned at the last underrun, and when it was.
        self._slack = 0
        self._slack_t = 0.0
        self._underrun_gap_s = underrun_gap_ms / 1000
        self._lead_s = lead_periods * self.period_s
        self._backoff = Backoff(backoff_initial_s, backoff_max_s)
        self._stop_timeout_s = stop_timeout_s
        self._pcm_factory = pcm_factory
        self._errors = ErrorReporter(log)
        self._xruns = RateLimitedCounter(log, f"playback xruns on {cfg.device!r}")
        self._buf = PlayoutBuffer(self.channels, max(self.period_frames, cfg.rate * cfg.buffer_ms // 1000))
        self._converter = PcmConverter(self.rate, self.channels)
        self._volume = float(cfg.volume)
        self._stats = PlaybackStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flush_req = threading.Event()
        self._thread: threading.Thread | None = None
        self._writes = WriteLog()  # the audio writes, oldest first
        self._idle = False  # the thread sleeps until audio is queued
        self._step_lock = threading.Lock()  # one pass over the device at a time (see pump)
        self._dev: _Device | None = None  # the open device, while the thread's loop runs
        self._driven_until = 0.0  # the capture thread drives the device until then (see pump)
        #: Told of every write and drop, for the echo canceller's reference (agent.audio.echo).
        self.reference: ReferenceTimeline | None = None
        # Owned by whoever holds _step_lock (the thread, or the capture thread in pump):
        self._playing = False
        self._dry_since: float | None = None
        # The last audio taken from the buffer was sound: once the buffer ran dry (`_dry_since`) nothing
        # is taken until it resumes, so this says whether the gap interrupted sound (an underrun).
        self._last_take_audible = False
        self._short = False  # a driven pass found less than a period while playing (see _step)
        self._audio_until = 0.0  # monotonic time when the audio handed to ALSA so far ends
        #: Monotonic time of the last write that carried audible sound (see frames.AUDIBLE): for
        #: measuring how fast a barge-in silences the speaker, and for wake word echo suppression.
        self.last_audible_t: float | None = None
        #: The times of the recent audible writes, for measurements (bounded, allocated once).
        self.audible_writes = TimeRing()

    # -- state -------------------------------------------------------------------------------------

    @property
    def stats(self) -> PlaybackStats:
        with self._lock:
            return dataclasses.replace(self._stats)

    @property
    def state(self) -> State:
        return self._stats.state

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = min(1.0, max(0.0, float(value)))

    @property
    def max_latency_s(self) -> float:
        """The latency above which silent frames are dropped: the floor, plus what underruns earned."""
        return self._base_latency_s + self._slack_now(time.monotonic()) * self.period_s

    def _slack_now(self, now: float) -> int:
        """The periods earned by underruns, less one per `slack_decay_s` since the last."""
        return max(0, self._slack - int((now - self._slack_t) / self._slack_decay_s))

    @property
    def buffered_ms(self) -> float:
        """Audio queued and not yet handed to ALSA."""
        return self._buf.frames * 1000 / self.rate

    @property
    def buffered_s(self) -> float:
        """Audio still to be heard: queued, plus what ALSA holds and has not played yet (0 when
        the speaker is silent). A conversation uses it to tell when the assistant stopped speaking."""
        in_device = max(0.0, self._audio_until - time.monotonic())
        return self._buf.frames / self.rate + in_device

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._stats, key, value)

    def _add(self, key: str, amount: float) -> None:
        with self._lock:
            setattr(self._stats, key, getattr(self._stats, key) + amount)

    # -- input (event loop) ------------------------------------------------------------------------

    def write_frame(self, frame: av.AudioFrame, audible: bool | None = None) -> None:
        """Queue one decoded frame (any rate and layout; aiortc gives 48 kHz stereo s16). A silent one
        (`audible` False, or found so) is dropped while the latency is above what the jitter needs."""
        samples = self.convert(frame)
        self.write_samples(samples, is_audible(samples) if audible is None else audible)

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """A decoded frame at the device's rate and channels (interleaved int16; one producer, the event
        loop): so a caller that must know whether it is audible tests what will be played, once."""
        return self._converter.convert(frame)

    def write_samples(self, samples: np.ndarray, audible: bool) -> None:
        """Queue what `convert` made of a frame (see `write_frame`)."""
        if not audible and self.buffered_s > self.max_latency_s:
            self._add("silence_dropped_ms", len(samples) / self.channels * 1000 / self.rate)
            return
        self._push(samples, audible)

    def write_pcm(self, samples: np.ndarray, rate: int) -> None:
        """Queue mono int16 samples at `rate` (an earcon), a period at a time, each found audible or not."""
        pcm = convert_pcm(samples, rate, self.rate, self.channels)
        step = self.period_frames * self.channels
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            self._push(piece, is_audible(piece))

    def _push(self, interleaved: np.ndarray, audible: bool) -> None:
        dropped = self._buf.push(interleaved, audible)
        # The thread sleeps until audio comes, or a start waits (checked after the push: no lost wake-up).
        if self._idle or not self._playing:
            self._wake.set()
        if dropped:
            self._add("dropped_ms", dropped * 1000 / self.rate)
            log.debug("playout buffer full: dropped %.0f ms of the oldest audio", dropped * 1000 / self.rate)

    def flush(self) -> float:
        """Drop all queued audio (barge-in); returns the ms dropped from the buffer. The thread also
        drops the little audio already handed to ALSA, so the speaker stops within about a period."""
        frames = self._buf.clear()
        ms = frames * 1000 / self.rate
        self._add("flushed_ms", ms)
        self._flush_req.set()
        self._wake.set()
        return ms

    def mark(self) -> int:
        """The position of the next sample to be queued, for `first_write_after`."""
        return self._buf.end_pos

    def first_write_after(self, mark: int) -> float | None:
        """Monotonic time right after the write that carried the first audio queued after `mark` (or a
        later sample, if that one was dropped); None if none was written yet, or too long ago."""
        write = self._write_after(mark)
        return write[1] if write is not None else None

    def first_play_after(self, mark: int) -> float | None:
        """When the first audio queued after `mark` (or a later sample, if that one was dropped) plays out
        of the device, as far as its fill at the write tells (None as for `first_write_after`): the
        latency a listener hears, whichever thread wrote it and however early."""
        write = self._write_after(mark)
        if write is None:
            return None
        _, _, start_pos, t_plays = write
        return t_plays + (max(mark, start_pos) - start_pos) / self.rate

    def _write_after(self, mark: int) -> _Write | None:
        return self._writes.first_after(mark)

    # -- lifecycle (event loop) --------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._update(state="starting")
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name=f"alsa-playback:{self.cfg.device}", daemon=True
        )
        self._thread.start()
        log.info(
            "playback to %r: %d Hz, %d channel(s), %d ms periods, buffer %d ms, volume %.2f",
            self.cfg.device,
            self.rate,
            self.channels,
            self.cfg.period_ms,
            self.cfg.buffer_ms,
            self._volume,
        )

    async def stop(self) -> None:
        """Stop at once: queued audio is dropped, the device closed without draining."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self.period_s + self._stop_timeout_s)
            if thread.is_alive():
                log.warning("playback thread is still blocked in the device; leaving it behind")
        self._buf.clear()
        self._audio_until = 0.0
        self._update(state="stopped")

    # -- the thread --------------------------------------------------------------------------------

    def _run(self, stop: threading.Event) -> None:
        def on_reopen() -> None:
            self._add("reopen_count", 1)

        run_reopening(
            stop,
            f"playback device {self.cfg.device!r}",
            lambda: open_pcm(
                self._pcm_factory,
                alsaaudio.PCM_PLAYBACK,
                self.cfg.device,
                self.rate,
                self.channels,
                self.period_frames,
            ),
            self._play_loop,
            self._close,
            self._fail,
            self._backoff,
            on_reopen,
        )
        log.debug("playback thread for %r ended", self.cfg.device)

    def _fail(self, message: str) -> None:
        self._errors.report(message)
        self._update(state="error", last_error=message)

    @staticmethod
    def _close(pcm: Any) -> None:
        """Drop, then close: pyalsaaudio's close() drains a playback PCM, which would block for the
        device's whole buffer."""
        with contextlib.suppress(Exception):
            pcm.drop()
        with contextlib.suppress(Exception):
            pcm.close()

    def _play_loop(self, pcm: Any, stop: threading.Event) -> None:
        buffer_frames = int(pcm.info().get("buffer_size", 0)) if hasattr(pcm, "info") else 0
        dev = _Device(pcm, buffer_frames, np.zeros((self.period_frames, self.channels), np.int16))
        if self._stats.state == "error":
            log.info("playback device %r is open again", self.cfg.device)
        self._update(state="running")
        with self._step_lock:
            self._dev = dev
        try:
            while not stop.is_set():
                if dev.error is not None:  # a write from the capture thread failed: reopen here
                    raise dev.error
                with self._step_lock:
                    wait = self._step(dev, driven=False)
                if wait is None:
                    self._sleep_until_audio(stop, dev)
                elif isinstance(wait, _LeadWait) and self._leave_to_driver():
                    self._sleep_while_driven(stop, dev)
                else:
                    self._wake.wait(wait)
                    self._wake.clear()
        finally:
            with self._step_lock:
                self._dev = None

    def pump(self) -> None:
        """Full duplex: the capture thread calls this after each read while a call listens, and writes
        what is due then, so this thread need not wake every period too (one thread wake per 20 ms for
        both devices instead of two). Never blocks on the playback thread: if that one is in a pass
        (a flush), this read's turn is skipped. A device error here is handed to the playback thread,
        which reopens the device as it would for its own."""
        self._driven_until = time.monotonic() + DRIVEN_FOR_PERIODS * self.period_s
        if not self._step_lock.acquire(blocking=False):
            return
        dev = self._dev
        try:
            if dev is not None and dev.error is None and not self._stop.is_set():
                self._step(dev, driven=True)
                self._stats.driven_passes += 1  # only ever written here, under _step_lock
                if self._short:
                    self._wake.set()
        except Exception as exc:
            if dev is not None:
                dev.error = exc
            self._driven_until = 0.0
            self._wake.set()
        finally:
            self._step_lock.release()

    def release(self) -> None:
        """The capture thread stops calling `pump` (the call ended, or capture stopped): this thread
        paces the device on its own again, from now."""
        if self._driven_until:
            self._driven_until = 0.0
            self._wake.set()

    def _step(self, dev: _Device, *, driven: bool) -> float | None:
        """One pass over the device, under `_step_lock`: apply a flush, then write every period that is
        due. Returns how long until the next pass is due (a `_LeadWait` when the write lead is full), or
        None when the device is stopped and nothing is queued (sleep until audio comes).

        `driven` (a pass from `pump`, which comes once a capture period): it fills the device to the
        same lead (so the device holds at least a period when the next pass comes), and never pads a
        late frame with silence: while the device holds enough to wait for the next pass it leaves the
        rest of the period to that pass, and then it marks the buffer `_short`, which hands the wait to
        the playback thread (it looks every quarter period, and pads only when the device is down to
        half a period, as it always did)."""
        top = self._lead_s
        while True:
            if self._flush_req.is_set():
                self._flush_req.clear()
                self._playing, self._dry_since, self._short = False, None, False
                if self._audio_until > time.monotonic():
                    dev.pcm.drop()  # the next write prepares the PCM again
                    if self.reference is not None:
                        self.reference.dropped(time.monotonic())
                    dev.active = False
                    dev.sched = self._audio_until = time.monotonic()
            now = time.monotonic()
            if not self._playing and not self._buf.frames and not self._tail(dev.active, now):
                if dev.active:
                    dev.pcm.drop()  # stop the device: it gets nothing until there is audio again
                    dev.active = False
                self._dry_since = None  # whatever comes next is a new start, not an underrun
                return None
            if dev.active and now - dev.sched > LATE_S:
                self._stats.late_writes += 1  # under _step_lock, its only writer
            dev.sched = max(dev.sched, now)
            ahead = dev.sched - now
            if ahead > top:
                return _LeadWait(min(ahead - top, self.period_s))
            may_wait = driven or ahead > self.period_s / 2
            chunk, start_pos, n_audio, audible = self._next_period(now, may_wait=may_wait, running=dev.active)
            if chunk is None or not (n_audio or dev.active):  # the rest of a period, or the prebuffer, to come
                if driven and chunk is None and ahead <= 1.5 * self.period_s:
                    self._short = True  # a late frame: the playback thread waits for it from here
                return self.period_s / 4
            self._short = False
            if self._flush_req.is_set():  # a barge-in came after the take: this period is the reply's too
                continue
            if n_audio and self._volume < 1.0:
                chunk = self._scaled(chunk)
                audible = audible and is_audible(chunk)  # a low volume may have made it quiet
            elif not len(chunk):
                chunk = dev.silence
            t_plays = dev.sched  # when the device gets to what this write carries
            res = dev.pcm.write(chunk)  # a C-contiguous array is a buffer: no copy to bytes
            t = time.monotonic()
            # a flush during the write: the next turn of the loop drops this audio from the device at once
            flushed = self._flush_req.is_set()
            dev.active = True
            if res < 0:
                if res != -errno.EPIPE:
                    raise alsaaudio.ALSAAudioError(f"write returned {res}")
                self._add("xruns", 1)
                self._xruns.hit()
                dev.sched = t
                continue
            if self.reference is not None and not flushed:
                self.reference.played(chunk, self.rate, self.channels, t_plays, bool(n_audio))
            if not dev.worked:
                dev.worked = True
                self._backoff.reset()
                self._errors.clear()
            with self._lock:
                self._stats.written_frames += res
                if n_audio and not flushed:
                    self._stats.audio_frames += n_audio
            dev.sched += res / self.rate
            if dev.buffer_frames:
                avail = dev.pcm.avail()
                if 0 <= avail < dev.buffer_frames:  # the device tells how much it holds: trust it
                    dev.sched = t + (dev.buffer_frames - avail) / self.rate
            if n_audio and flushed:  # never heard: not an audible write, not the reply reaching ALSA
                self._audio_until = dev.sched  # what tells the flush, next, that the device holds audio to drop
            elif n_audio:
                self._audio_until = dev.sched
                if audible:
                    self.last_audible_t = t
                    self.audible_writes.append(t)
                self._writes.add(start_pos + n_audio, t, start_pos, t_plays)
                if self.on_written is not None:
                    try:
                        self.on_written(t, n_audio)
                    except Exception:  # a hook's bug is not a device failure
                        log.exception("playback on_written hook failed")

    def _tail(self, active: bool, now: float) -> bool:
        """With nothing queued: whether the running device still gets silence, because audio is still
        playing out of it, or it ran dry less than `underrun_gap_ms` ago (a gap mid-answer, which must
        neither click nor underrun the device)."""
        if not active:
            return False
        recently_dry = self._dry_since is not None and now - self._dry_since <= self._underrun_gap_s
        return self._audio_until > now or recently_dry

    def _leave_to_driver(self) -> bool:
        """Whether the capture thread drives the device, and neither a start nor a late frame waits (the
        playback thread waits for those itself, a quarter period at a time, not a whole one)."""
        return (
            time.monotonic() < self._driven_until
            and not self._short
            and (self._playing or not self._buf.frames)
        )

    def _sleep_while_driven(self, stop: threading.Event, dev: _Device) -> None:
        """While the capture thread writes what is due (`pump`): block until a flush, `stop`, a failed
        driven write, audio to start the device with, or the end of the driving, looking every
        DRIVEN_CHECK_S whether it stalled."""
        while self._leave_to_driver() and dev.error is None:
            if stop.is_set() or self._flush_req.is_set():
                return
            self._wake.wait(DRIVEN_CHECK_S)
            self._wake.clear()

    def _sleep_until_audio(self, stop: threading.Event, dev: _Device) -> None:
        """Block until audio is queued, a flush, `stop` or a failed driven write (nothing is written
        meanwhile)."""
        self._idle = True
        self._wake.clear()
        try:
            while not (self._buf.frames or stop.is_set() or self._flush_req.is_set() or dev.error is not None):
                self._wake.wait(IDLE_CHECK_S)
                self._wake.clear()
        finally:
            self._idle = False

    def _next_period(
        self, now: float, *, may_wait: bool, running: bool
    ) -> tuple[np.ndarray | None, int, int, bool]:
        """What to write next: (frames, position of the first audio frame, number of audio frames,
        audible). Frames are a period of audio, audio padded with silence when the buffer ran dry, or
        empty for a period of silence; None to wait a little for the rest of a period (only while the
        write lead allows). A stopped device (not `running`) waits for the prebuffer first."""
        buffered = self._buf.frames
        no_audio = self._buf.empty, 0, 0, False
        if not self._playing:
            if not buffered:
                if self._dry_since is not None and now - self._dry_since > self._underrun_gap_s:
                    self._dry_since = None  # the audio ended: a later start is no underrun
                return no_audio
            oldest = self._buf.oldest_push_t
            waited = now - oldest if oldest is not None else 0.0
            if not running and buffered < self._prebuffer_frames and waited < self._prebuffer_frames / self.rate:
                return no_audio
            if self._dry_since is not None and now - self._dry_since <= self._underrun_gap_s:
                dry_ms = (now - self._dry_since) * 1000
                if self._last_take_audible:
                    self._add("underruns", 1)
                    self._slack = min(self._max_slack, self._slack_now(now) + 1)
                    self._slack_t = now
                    log.debug("playout underrun: the buffer ran dry for %.0f ms mid-audio", dry_ms)
                else:  # a gap in the service's silence (after a barge-in, say): nobody hears it
                    log.debug("playout: the buffer ran dry for %.0f ms in silence (no underrun)", dry_ms)
            self._dry_since = None
            self._playing = True
        if buffered < self.period_frames and may_wait:
            return None, 0, 0, False
        frames, start, audible = self._buf.take(self.period_frames)
        n_audio = len(frames)
        if n_audio:
            self._last_take_audible = audible
        if n_audio < self.period_frames:
            self._playing = False
            self._dry_since = now
            pad = np.zeros((self.period_frames - n_audio, self.channels), np.int16)
            frames = np.concatenate([frames, pad])
        return frames, start, n_audio, audible

    def _scaled(self, frames: np.ndarray) -> np.ndarray:
        vol = self._volume
        if vol >= 1.0:
            return frames
        return np.rint(frames.astype(np.float32) * np.float32(vol)).astype(np.int16)
