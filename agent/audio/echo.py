"""Echo cancellation on the device: the speaker's sound taken out of the microphone before anything hears it.

The speaker sits a few centimetres from the microphones, so the assistant's voice comes back 10 to 20 dB
louder than a user across the room. The device is the one party that knows exactly what it played and
when, so it cancels there (`audio.echo: local`), as every browser, LiveKit and Home Assistant Voice PE do:
WebRTC's AEC3 (through the `livekit` wheel's `AudioProcessingModule`; chosen by measurement, see
docs/echo-cancellers.md) runs in the capture thread on every block before the pre-roll, the wake word,
the stop word and the uplink see it.

- `ReferenceTimeline`: what the speaker played, at the microphone's rate, on one clock with the capture:
  each playback write is placed at the time the device plays it (`t_plays`, from its fill), so a playout
  underrun, a flush or a restart moves the reference exactly as it moves the sound.
- `DelayEstimator`: what the device cannot know from its own clocks (the DAC's and the codec's latency,
  the air between speaker and microphone) it measures: every half second of sound it cross-correlates
  the microphone with the reference (GCC-PHAT) and finds the echo's delay; the reference is then handed
  to the canceller `LEAD_MS` ahead of its echo. A changed delay (a device that slipped) is measured again.
- `EchoCanceller`: per 10 ms, the aligned reference into AEC3's reverse stream, then the microphone
  through it. While nothing played for `IDLE_AFTER_S` it passes audio through untouched and costs
  nothing (the wake word's idle CPU matters more than a canceller with nothing to cancel). With
  `client-reference` it runs no canceller and hands the aligned reference on with each block instead,
  for the uplink's second channel.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .resample import PcmConverter, frame_from_pcm
from .timeline import SampleTimeline

log = logging.getLogger(__name__)

#: How much of the played sound the timeline keeps (the reference is read at most ~0.5 s after play).
TIMELINE_S = 4.0
#: Two writes this close are one continuous stream (a write's play time comes from the playback
#: thread's clock readings, which a busy scheduler makes a few ms late).
CONTIGUOUS_MS = 5.0
#: The canceller reads the reference continuously while the capture's stamps stay this close to where
#: it reads (a real jump, an overrun say, is further). Within it, it creeps a sample at a time toward
#: where the stamps say, averaged over about a second (`CURSOR_SMOOTHING` a block), once that is more
#: than `CURSOR_DEADBAND_MS` off: a drift compensator, deaf to the stamps' own wobble.
CURSOR_SLACK_MS = 4.0
CURSOR_DEADBAND_MS = 0.5
CURSOR_SMOOTHING = 0.02
#: When the reference is moved, it goes into the canceller this far ahead of its echo.
LEAD_MS = 5.0
#: The echo delays behind the reference AEC3 follows by itself (its delay estimator's range is wider).
COMFORT_MS = (0.0, 200.0)
#: Once AEC3 has settled on a delay, an echo that comes more than this much earlier (the device started
#: anew with less latency) has the reference moved to keep AEC3's delay where it was: measured offline,
#: AEC3 left on its own after an echo came 24 ms earlier took 2.5 s to cancel again (ERLE 2-5 dB until
#: then), and the strict service barged in. A later echo AEC3 finds itself (33 dB within 0.75 s).
HOLD_MS = 4.0
#: A reading moves the reference, or sets the delay to hold, only this sure (GCC-PHAT's peak against
#: its mean: a reply's first half second reads 15-30 and can be 20 ms off; a settled echo reads 40-150).
MOVE_CONFIDENCE = 35.0
#: The echo's delay searched, from the reference's own time: a device may run this far late.
MAX_DELAY_MS = 400.0
#: ... or this far early (the device's play time overestimated). Wider, and the same reply heard twice
#: (its echo now, its reference a moment ago) gives peaks far before the echo: measured, a reading of
#: -144 ms moved the reference behind its echo, and the device talked to itself.
MIN_DELAY_MS = -40.0
#: A correlation peak this close to the highest, and at most `FIRST_PEAK_MS` earlier, is taken as the
#: echo's direct path (reflections come after it, within about 20 ms).
FIRST_PEAK = 0.6
FIRST_PEAK_MS = 25.0
#: After this long without sound from the speaker the canceller rests (passes audio through).
IDLE_AFTER_S = 1.5
#: Blocks of the aligned reference kept for tests and benchmarks (10 s of 20 ms blocks).
FED_LOG_BLOCKS = 500

EchoMode = Literal["local", "client-reference"]


class ReferenceTimeline(SampleTimeline):
    """The speaker's sound at `rate` (the capture's), mono float32, on the capture's clock (see
    agent.audio.timeline). Written by whoever writes the speaker, read once by the capture thread."""

    def __init__(self, rate: int, t0: float | None = None) -> None:
        super().__init__(rate, TIMELINE_S, t0)
        self._conv: PcmConverter | None = None
        self._conv_key: tuple[int, int] | None = None
        self._pts = 0
        self._end: int | None = None  # index after the last sample written
        #: Monotonic time of the last write that carried sound.
        self.last_sound_t: float | None = None
        self.restarts = 0
        #: Streams begun (the first write, and every write after a gap or a flush): the device started
        #: anew, and its latency may differ from the last stream's.
        self.starts = 0

    def played(self, frames: np.ndarray, rate: int, channels: int, t_plays: float, audible: bool) -> None:
        """A write to the speaker: interleaved int16 `frames` at `rate`, its first frame playing at
        `t_plays`. Silence only advances the stream."""
        n_in = len(frames) // channels
        start = self.index(t_plays)
        tol = CONTIGUOUS_MS * self.rate / 1000
        if self._end is None or abs(start - self._end) > tol:
            if self._end is not None:
                self.restarts += 1
            self.starts += 1
            self._end = start
        if not audible:
            self._end += round(n_in * self.rate / rate)
            return
        if self._conv_key != (rate, channels) or self._conv is None:
            self._conv, self._conv_key, self._pts = PcmConverter(self.rate, 1), (rate, channels), 0
        mono = self._conv.convert(frame_from_pcm(frames, rate, channels, pts=self._pts))
        self._pts += n_in
        self.last_sound_t = t_plays
        self.put(self._end, mono.astype(np.float32))  # (a late write, played before it could be read: dropped)
        self._end += len(mono)

    @property
    def written_until(self) -> int | None:
        """The index after the last sample written (None before a write, or after a flush)."""
        return self._end

    def dropped(self, t: float) -> None:
        """The device dropped what it held (a flush): nothing queued to play after `t` will."""
        if self._end is not None:
            self.zero(self.index(t), self._end)
        self._end = None

    def take(self, start: int, count: int) -> np.ndarray:
        """Samples [start, start + count), read once: they and all before them are forgotten."""
        return self.read(start, count, start + count)


@dataclass(frozen=True)
class DelayReading:
    delay_ms: float
    confidence: float


class DelayEstimator:
    """The echo's delay behind the reference handed over, by GCC-PHAT over the last `window_s`."""

    def __init__(self, rate: int, window_s: float = 1.0, every_s: float = 0.5, min_confidence: float = 6.0) -> None:
        self.rate = rate
        self.window = int(window_s * rate)
        self.every = int(every_s * rate)
        self.min_confidence = min_confidence
        self._mic: deque[np.ndarray] = deque()
        self._ref: deque[np.ndarray] = deque()
        self._held = 0
        self._since = 0
        size = 1
        while size < 2 * self.window:
            size *= 2
        self._size = size
        freqs = np.fft.rfftfreq(size, 1 / rate)
        self._band = (freqs >= 200) & (freqs <= 4000)
        self.readings = 0

    def reset(self) -> None:
        self._mic.clear()
        self._ref.clear()
        self._held = self._since = 0

    def add(self, mic: np.ndarray, ref: np.ndarray) -> DelayReading | None:
        """Add a block; returns a reading when one is due and the reference had sound."""
        self._mic.append(mic)
        self._ref.append(ref)
        self._held += len(mic)
        self._since += len(mic)
        while self._held - len(self._mic[0]) >= self.window:
            self._held -= len(self._mic.popleft())
            self._ref.popleft()
        if self._since < self.every or self._held < self.window // 2:
            return None  # (half a window is enough for a first reading: a new stream is measured soon)
        self._since = 0
        ref_all = np.concatenate(self._ref)
        if float(np.sqrt(np.mean(ref_all**2))) < 100:  # about -50 dBFS: nothing worth measuring played
            return None
        return self._measure(np.concatenate(self._mic).astype(np.float32), ref_all)

    def _measure(self, mic: np.ndarray, ref: np.ndarray) -> DelayReading | None:
        cross = np.fft.rfft(mic, self._size) * np.conj(np.fft.rfft(ref, self._size))
        mag = np.abs(cross)
        cross = np.where(self._band & (mag > 0), cross / np.maximum(mag, 1e-12), 0)
        corr = np.fft.irfft(cross, self._size)
        lo = int(MIN_DELAY_MS * self.rate / 1000)
        hi = int(MAX_DELAY_MS * self.rate / 1000)
        lags = np.concatenate([corr[lo:], corr[: hi + 1]])  # lags lo..hi
        # the direct path: the first peak near the highest (a reflection off the table can be the
        # highest, and is later)
        top = int(np.argmax(lags))
        peak = float(lags[top])
        near = max(0, top - int(FIRST_PEAK_MS * self.rate / 1000))
        k = near + int(np.argmax(lags[near : top + 1] >= FIRST_PEAK * peak))
        floor = float(np.mean(np.abs(lags))) + 1e-12
        self.readings += 1
        confidence = peak / floor
        if confidence < self.min_confidence:
            return None
        return DelayReading((k + lo) * 1000 / self.rate, confidence)


class Aec3:
    """WebRTC AEC3 (and its high-pass filter) through livekit's `AudioProcessingModule`, at `rate`, in
    whole 10 ms frames: `reverse` is what was played, `capture` what the microphone heard (in place of
    a copy). The two may come in any rhythm (AEC3 buffers the reverse stream)."""

    def __init__(self, rate: int) -> None:
        from livekit import rtc  # imported only where used: 20 MB the other modes never load

        self._frame = rtc.AudioFrame
        self.rate = rate
        self.n = rate // 100
        self._apm = rtc.AudioProcessingModule(echo_cancellation=True, high_pass_filter=True)

    def reverse(self, ref: np.ndarray) -> None:
        for i in range(0, len(ref) - self.n + 1, self.n):
            data = bytearray(np.asarray(ref[i : i + self.n], np.int16).tobytes())
            self._apm.process_reverse_stream(self._frame(data, self.rate, 1, self.n))

    def capture(self, mic: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(mic) - self.n + 1, self.n):
            frame = self._frame(bytearray(np.asarray(mic[i : i + self.n], np.int16).tobytes()), self.rate, 1, self.n)
            self._apm.process_stream(frame)
            out.append(np.frombuffer(frame.data, np.int16))
        return np.concatenate(out) if out else np.zeros(0, np.int16)


def output_lag(rate: int) -> int:
    """How many samples late AEC3 returns what it is given at `rate` with a reference playing, as it
    always has in `process` (127 at 16 kHz with livekit 1.2; with no reference ever given it is 63: the
    canceller's own block is not in the path then), measured on half a second of noise through a
    canceller of its own, a tone in its reverse stream."""
    aec = Aec3(rate)
    n = aec.n
    noise = (np.random.default_rng(0).standard_normal(50 * n) * 3000).astype(np.int16)
    tone = (np.sin(np.arange(50 * n) * 2 * np.pi * 800 / rate) * 8000).astype(np.int16)
    parts = []
    for i in range(0, len(noise), n):
        aec.reverse(tone[i : i + n])
        parts.append(aec.capture(noise[i : i + n]))
    out = np.concatenate(parts).astype(np.float64)
    x = noise.astype(np.float64)
    lags = [float(np.dot(out[d + 10 * n : d + 40 * n], x[10 * n : 40 * n])) for d in range(0, 4 * n)]
    return int(np.argmax(lags))


@dataclass
class EchoStats:
    blocks: int = 0
    #: Blocks that went through the canceller (the others came while the speaker was silent).
    cancelled_blocks: int = 0
    #: The echo's delay behind the speaker's clock (when it played, by the device's fill), measured.
    delay_ms: float | None = None
    #: The echo's delay behind the reference as handed to the canceller, measured.
    echo_delay_ms: float | None = None
    readings: int = 0
    #: Times the reference was moved (the echo came before it, or too late for AEC3).
    realigned: int = 0
    #: Times the capture's stamps left the reference's read position by more than CURSOR_SLACK_MS.
    resyncs: int = 0
    errors: int = 0


class EchoCanceller:
    """On the capture thread: `process(samples, t_end)` returns the block's samples with the echo taken
    out (`local`) or as they are with the aligned reference (`client-reference`)."""

    def __init__(self, timeline: ReferenceTimeline, mode: EchoMode = "local", initial_delay_ms: float = 0.0) -> None:
        self.timeline = timeline
        self.mode = mode
        self.rate = timeline.rate
        self._delay = round(initial_delay_ms * self.rate / 1000)
        self._lead = round(LEAD_MS * self.rate / 1000)
        self._cursor: int | None = None  # where the next block's reference is read
        self._slack = round(CURSOR_SLACK_MS * self.rate / 1000)
        self._deadband = round(CURSOR_DEADBAND_MS * self.rate / 1000)
        self._off = 0.0  # how far the stamps say the cursor is off, smoothed
        self.estimator = DelayEstimator(self.rate)
        self._apm: Aec3 | None = None
        self._pending: float | None = None  # a new delay seen once; taken when seen again
        self._held: float | None = None  # the echo's delay behind the reference AEC3 has settled on
        self._settling: float | None = None  # the last reading, until two agree
        self._starts = 0  # the timeline's streams seen
        self.stats = EchoStats()
        #: AEC3's output comes this many samples after its input (measured at load); 0 without it.
        self.lag = 0
        self._tail = np.zeros(0, np.int16)
        self._resting = True
        #: (t_end, reference handed over) per block, for tests and benchmarks.
        self.fed: deque[tuple[float, np.ndarray]] = deque(maxlen=FED_LOG_BLOCKS)

    def load(self) -> EchoCanceller:
        """Make the canceller (slow: loads the library); before the capture starts."""
        if self.mode == "local" and self._apm is None:
            self._apm = Aec3(self.rate)
            self.lag = output_lag(self.rate)
            self._tail = np.zeros(self.lag, np.int16)
        return self

    @property
    def latency_s(self) -> float:
        """How late what `process` returns is behind what it was given (AEC3's framing; the same whether
        it cancels or rests, so the stream never jumps)."""
        return self.lag / self.rate

    def _delayed(self, samples: np.ndarray) -> np.ndarray:
        """The raw microphone, `lag` samples late: what a resting canceller returns."""
        if not self.lag:
            return samples
        joined = np.concatenate([self._tail, samples])
        self._tail = joined[-self.lag :]
        return joined[: len(samples)]

    @property
    def delay_ms(self) -> float:
        return self._delay * 1000 / self.rate

    def process(self, samples: np.ndarray, t_end: float) -> tuple[np.ndarray, np.ndarray | None]:
        n = len(samples)
        self.stats.blocks += 1
        ref = self.timeline.take(self._read_at(self.timeline.index(t_end) - n - self._delay + self._lead, n), n)
        last = self.timeline.last_sound_t
        raw_late = self._delayed(samples)
        if last is None or t_end - last > IDLE_AFTER_S:
            self._resting = True
            self._cursor = None
            return raw_late, (None if self.mode == "local" else np.zeros(n, np.int16))
        self.fed.append((t_end, ref))
        if self.timeline.starts != self._starts:  # the device started anew: measure this stream alone
            self._starts = self.timeline.starts
            self.estimator.reset()
            self._pending = None
        reading = self.estimator.add(samples, ref)
        if reading is not None:
            self._realign(reading)
        if self.mode == "client-reference":
            return samples, np.clip(np.rint(ref), -32768, 32767).astype(np.int16)
        assert self._apm is not None, "load() the canceller before use"
        step = self._apm.n
        if n % step:
            return raw_late, None  # not whole 10 ms frames (a period the config forbids): pass through
        ref16 = np.clip(np.rint(ref), -32768, 32767).astype(np.int16)
        try:  # 10 ms of reference, then the 10 ms of microphone it echoes in
            parts = []
            for i in range(0, n, step):
                self._apm.reverse(ref16[i : i + step])
                parts.append(self._apm.capture(samples[i : i + step]))
            out = np.concatenate(parts)
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1:
                log.exception("echo canceller failed; passing the microphone through")
            return raw_late, None
        if self._resting and self.lag:
            # AEC3 still holds the last samples it saw before it rested: the raw ones take their place
            out[: self.lag] = raw_late[: self.lag]
        self._resting = False
        self.stats.cancelled_blocks += 1
        return out, None

    def _read_at(self, want: int, n: int) -> int:
        """Where this block's reference starts: right after the last block's, so AEC3 gets one
        continuous stream, unless the stamp (`want`) says the microphone moved by more than the slack.
        Stamps that stay a little off are followed a sample at a time."""
        cursor = self._cursor
        if cursor is None or abs(want - cursor) > self._slack:
            if cursor is not None:
                self.stats.resyncs += 1
            cursor, self._off = want, 0.0
        else:
            self._off += CURSOR_SMOOTHING * (want - cursor - self._off)
            if abs(self._off) > self._deadband:
                step = 1 if self._off > 0 else -1
                cursor += step
                self._off -= step
        self._cursor = cursor + n
        return cursor

    def _realign(self, reading: DelayReading) -> None:
        """The echo comes `reading.delay_ms` after the reference handed over. AEC3 finds and follows any
        delay in `COMFORT_MS` itself, so the first such delay is left to it, and held: a later stream
        whose echo comes more than HOLD_MS earlier has the reference moved by the difference (AEC3
        keeps its filter; left alone it re-learns an earlier echo slowly, a later one quickly). An echo before
        the reference (nothing can cancel what comes before its reference) or later than AEC3 looks has
        the reference moved to lead it by LEAD_MS. A move must be seen twice, half a second apart: a
        wrong one puts the reference behind its echo."""
        self.stats.echo_delay_ms = reading.delay_ms
        # the reference handed over is the sound LEAD_MS after `delay_ms` before the capture
        self.stats.delay_ms = self.delay_ms - LEAD_MS + reading.delay_ms
        if reading.confidence < MOVE_CONFIDENCE:
            return
        comfortable = COMFORT_MS[0] <= reading.delay_ms <= COMFORT_MS[1]
        if comfortable and self._held is None:
            # AEC3 follows this delay itself; held once two readings agree on it
            settled = self._settling is not None and abs(self._settling - reading.delay_ms) <= 2.0
            self._settling = reading.delay_ms
            if settled:
                self._held = reading.delay_ms
            return
        target = self._held if comfortable and self._held is not None else LEAD_MS
        off = reading.delay_ms - target
        if abs(off) <= HOLD_MS or (comfortable and off > 0):
            # a later echo inside AEC3's range it finds again itself within a second (a move of ours,
            # which comes about then, made it search twice: more self-interruptions in double talk)
            self._pending = None
            return
        self.stats.readings += 1
        if self._pending is None or abs(self._pending - off) > 3.0:  # a move is taken when seen twice
            self._pending = off
            return
        self._pending = None
        move = round(off * self.rate / 1000)
        written = self.timeline.written_until
        ahead = self.rate // 50  # the speaker is written a period or more before it plays
        if move < 0 and (self._cursor is None or written is None or self._cursor - move > written + ahead):
            # an earlier echo needs newer reference than the speaker has been given yet: AEC3 re-learns
            if comfortable:
                self._held = reading.delay_ms
            return
        self._delay += move
        self._held = target
        self._cursor = None  # read from the new delay at once
        self.stats.realigned += 1
        self.estimator.reset()
        log.info(
            "echo %.0f ms behind the speaker's clock: the reference now leads it by %.0f ms",
            self.stats.delay_ms,
            target,
        )


def make_echo(mode: str, capture_rate: int) -> tuple[ReferenceTimeline, EchoCanceller] | None:
    """The timeline and canceller for `audio.echo` (None for `service` and `off`: nothing on the device)."""
    if mode not in ("local", "client-reference"):
        return None
    timeline = ReferenceTimeline(capture_rate)
    return timeline, EchoCanceller(timeline, mode)  # type: ignore[arg-type]
