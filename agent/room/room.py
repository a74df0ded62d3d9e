"""A room as a stand-in sound card: the speaker FIFO read as a DAC plays it, the microphone FIFO written
with what the room hears.

Speaker: the agent's playback device is alsa-lib's file plugin writing raw PCM into a FIFO
(`playback_device`). alsa-lib's file plugin hands bytes on only once its buffer is full (measured: with
4 periods of 20 ms, a period comes out when the fifth is written), so what leaves the FIFO has already
waited about as long as a real device's buffer makes it wait, and the room plays it as a DAC would: from
the moment it arrives (plus the device's own latency, `RoomSpec.device_latency_ms`), continuously after
what it still plays, and after a gap from the arrival again (an underrun). The room keeps what it plays
on a timeline at the microphone's rate.

Microphone: a `FifoFeeder` whose every period is mixed when it is written, at real-time pace: the user's
speech (`say`), room noise, and the echo: the speaker's timeline through the room response up to this
period's last sample. So the echo comes with the device's real delay, changes when an underrun changes
it, and the agent cannot know it but by listening.

The speaker's and the microphone's threads stand for hardware, which a busy CPU does not delay: they
ask for real-time scheduling (`SCHED_FIFO`) where the process may have it (as root); elsewhere they run
as they are, and a loaded machine then moves the DAC's start by the speaker thread's late wake-up
(measured under two CPU hogs: the echo's delay changed by up to 30 ms from one reply to the next, and by
up to 15 ms with real-time threads, the rest being the agent's own late writes).

`shift_latency(ms)` makes the device's unknown latency jump (a clock slip, a USB hiccup): what the
speaker plays next comes that much later. `echo_log` keeps what the echo alone put into each microphone
period (and `user_log` the rest), by capture time, so a measurement can tell echo from the user.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time
import wave
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..audio.fileplugin import FifoFeeder, capture_device, playback_device, use_file_plugin
from ..audio.resample import PcmConverter, frame_from_pcm
from ..audio.timeline import SampleTimeline
from .acoustics import Convolver, RoomSpec, impulse_response

log = logging.getLogger(__name__)

#: The speaker's timeline at the microphone's rate: this much of it is kept.
TIMELINE_S = 4.0
#: Data that comes this long after the DAC played out what it had is a new start (an underrun).
RESTART_SLACK_S = 0.03
#: Microphone periods kept in `echo_log` / `user_log` (five minutes of 20 ms periods: a 20-reply bench).
LOG_PERIODS = 15000
#: The room's threads' real-time priority (low: above every normal thread, below the kernel's own).
HARDWARE_PRIORITY = 10


def _as_hardware() -> None:
    """This thread stands for hardware: real-time scheduling if the process may have it."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(HARDWARE_PRIORITY))
    except (OSError, AttributeError) as exc:  # not root, or no such scheduler here
        log.debug("room: no real-time scheduling for %s (%s)", threading.current_thread().name, exc)


@dataclass(frozen=True)
class MicPeriod:
    """One microphone period the room wrote: the capture time of its last sample, and its samples."""

    t_end: float
    samples: np.ndarray  # int16


class _Speaker:
    """The DAC: reads the speaker FIFO and puts what it plays on the timeline."""

    def __init__(
        self, fifo: Path, rate: int, channels: int, timeline: SampleTimeline, spec: RoomSpec, wav: Path | None = None
    ) -> None:
        self.fifo = fifo
        self.wav_path = wav
        self._wav: wave.Wave_write | None = None
        self.rate = rate
        self.channels = channels
        self.timeline = timeline
        self.latency_s = spec.device_latency_ms / 1000
        self._conv = PcmConverter(timeline.rate, 1)
        self._pts = 0
        self._end: int | None = None  # the timeline index where what the DAC plays ends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._carry = b""
        self.frames = 0
        self.restarts = 0

    def start(self) -> None:
        if self.fifo.exists():
            self.fifo.unlink()
        os.mkfifo(self.fifo)
        # a reader first: the file plugin's open of the FIFO then does not block (with the GIL held)
        self._fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
        if self.wav_path is not None:
            self._wav = wave.open(str(self.wav_path), "wb")  # noqa: SIM115 (closed in stop)
            self._wav.setnchannels(self.channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self.rate)
        self._thread = threading.Thread(target=self._run, name="room-speaker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._wav is not None:
            self._wav.close()
            self._wav = None

    def shift(self, ms: float) -> None:
        self.latency_s += ms / 1000
        if self._end is not None:
            self._end += round(ms * self.timeline.rate / 1000)

    def _run(self) -> None:
        assert self._fd is not None
        _as_hardware()
        frame_bytes = 2 * self.channels
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                continue
            if not data:  # no writer (between the agent's opens): wait for the next
                self._stop.wait(0.005)
                continue
            now = time.monotonic()
            data = self._carry + data
            whole = len(data) // frame_bytes * frame_bytes
            self._carry = data[whole:]
            if self._wav is not None:
                self._wav.writeframes(data[:whole])
            self._play(np.frombuffer(data[:whole], np.int16), now)

    def _play(self, interleaved: np.ndarray, now: float) -> None:
        if not len(interleaved):
            return
        self.frames += len(interleaved) // self.channels
        mono = self._conv.convert(frame_from_pcm(interleaved, self.rate, self.channels, pts=self._pts))
        self._pts += len(interleaved) // self.channels
        if not len(mono):
            return
        arrival = self.timeline.index(now + self.latency_s)
        if self._end is None or arrival > self._end + RESTART_SLACK_S * self.timeline.rate:
            if self._end is not None:
                self.restarts += 1
            self._end = arrival  # the DAC ran dry: it starts again with this
        elif self._end > arrival + TIMELINE_S / 4 * self.timeline.rate:
            log.warning("room: the speaker gets audio faster than real time; dropping it")
            return
        self.timeline.put(self._end, mono.astype(np.float64))
        self._end += len(mono)


class _Mic(FifoFeeder):
    """The microphone: each period mixed as it is written (see the module docstring)."""

    room: Room

    def _run(self) -> None:
        _as_hardware()
        super()._run()

    def _next_chunk(self) -> tuple[bytes | None, bool]:
        user, fed = super()._next_chunk()
        if user is None or not self.connected.is_set():
            # no reader yet (this period may be offered again): the room's clock starts with the reader
            self.room._next = None
            return user, fed
        return self.room._mix(np.frombuffer(user, np.int16)), fed


class Room:
    """A room in the test world (see the module docstring). `start()` before the agent opens its
    devices; `capture_device` and `playback_device` are the ALSA device names to give it."""

    def __init__(
        self,
        directory: Path,
        spec: RoomSpec | None = None,
        *,
        mic_rate: int = 16000,
        speaker_rate: int = 48000,
        speaker_channels: int = 1,
        period_frames: int = 320,
        speech: np.ndarray | None = None,
        speaker_wav: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.spec = spec or RoomSpec()
        self.mic_rate = mic_rate
        self.period_frames = period_frames
        use_file_plugin(self.directory)
        self.timeline = SampleTimeline(mic_rate, TIMELINE_S, time.monotonic(), np.float64)
        self.speaker = _Speaker(
            self.directory / "speaker.fifo", speaker_rate, speaker_channels, self.timeline, self.spec, speaker_wav
        )
        self.mic = _Mic(
            self.directory / "mic.fifo",
            speech if speech is not None else b"",
            rate=mic_rate,
            period_frames=period_frames,
            then="silence",
            reconnect=True,
        )
        self.mic.room = self
        self._noise = np.random.default_rng(self.spec.seed + 1)
        self._set_response(self.spec)
        self._next: int | None = None  # the timeline index of the next microphone sample
        self.echo_log: deque[MicPeriod] = deque(maxlen=LOG_PERIODS)
        self.user_log: deque[MicPeriod] = deque(maxlen=LOG_PERIODS)
        self.clipped = 0

    def _set_response(self, spec: RoomSpec) -> None:
        self._conv = Convolver(impulse_response(spec, self.mic_rate), self.period_frames)

    @property
    def capture_device(self) -> str:
        return capture_device(self.mic.path)

    @property
    def playback_device(self) -> str:
        return playback_device(self.speaker.fifo, "raw")

    def start(self) -> Room:
        self.speaker.start()
        self.mic.start()
        return self

    def stop(self) -> None:
        self.mic.stop()
        self.speaker.stop()

    def __enter__(self) -> Room:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def say(self, samples: np.ndarray) -> None:
        """The user speaks (int16 at the microphone's rate), after what they were saying."""
        self.mic.feed(samples)

    def set_echo_db(self, echo_db: float) -> None:
        self.spec = replace(self.spec, echo_db=echo_db)
        self._set_response(self.spec)

    def shift_latency(self, ms: float) -> None:
        """The device's hidden latency jumps by `ms` (positive: later)."""
        self.speaker.shift(ms)

    def _mix(self, user: np.ndarray) -> bytes:
        """The microphone's next period, on the feeder's thread, just before it is written."""
        n = len(user)
        now = time.monotonic()
        if self._next is None:
            self._next = self.timeline.index(now) - n
        start = self._next
        self._next += n
        hist = self._conv.history
        first = start + n - hist
        past = self.timeline.read(first, hist, forget_until=first + n)  # the next period starts n later
        echo = self._conv.block(past)
        rest = user.astype(np.float64)
        if self.spec.noise_dbfs is not None:
            rest = rest + self._noise.standard_normal(n) * 32768 * 10 ** (self.spec.noise_dbfs / 20)
        mixed = rest + echo
        if np.max(np.abs(mixed)) > 32767:
            self.clipped += 1
        t_end = self.timeline.t0 + (start + n) / self.mic_rate
        self.echo_log.append(MicPeriod(t_end, np.clip(echo, -32768, 32767).astype(np.int16)))
        self.user_log.append(MicPeriod(t_end, np.clip(rest, -32768, 32767).astype(np.int16)))
        return np.clip(np.rint(mixed), -32768, 32767).astype("<i2").tobytes()
