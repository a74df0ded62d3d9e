"""When each block of a continuous capture stream was captured, from the times its reads returned.

A read returns some time after its period's last sample was captured: the driver's wake-up, then the
scheduler. On a quiet machine that is well under a millisecond; on a busy one (a Pi Zero 2 W running
the wake word, a CI machine running a test suite) a read comes back 5 to 30 ms late, at random (measured
here with two CPU hogs on two cores: block-to-block stamps from 14 to 30 ms for 20 ms periods). Stamping
each block with its read's return time hands that jitter on to everything that lines the microphone up
with another clock, and the echo canceller, which reads the speaker's reference at the stamp, sees its
reference jump back and forth by up to ten milliseconds every block: it then cancels nothing (measured:
ERLE 37 dB on a quiet machine, -1 dB on a loaded one).

The samples themselves come at the device's steady rate, so `StreamClock` stamps by count:
block k ends at `t0 + frames_so_far / rate`, where `t0` is the tightest bound the reads give (a read can
return late but never before its last sample was captured: `t0 <= t_return - frames_so_far / rate`
for every read). `t0` is the lowest such bound seen, let rise by at most `slew` (1 ms a second, far
above any sound card's drift against the system clock), so it follows a device clock slower than ours.
A stream that really moved later (samples lost without an overrun being reported) shows as every read
returning more than `step_s` late for `window_s`: `t0` then steps to the lowest bound of that window.
An overrun, or a reopened device, is a new stream: `reset()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: How fast `t0` may rise, in seconds per second of audio.
SLEW = 0.001
#: Reads this much later than the clock for `STEP_WINDOW_S` in a row: the stream moved.
STEP_S = 0.03
STEP_WINDOW_S = 1.0


@dataclass
class StreamClock:
    rate: int
    slew: float = SLEW
    step_s: float = STEP_S
    window_s: float = STEP_WINDOW_S
    #: Times the clock stepped later (see the module docstring).
    steps: int = 0
    _t0: float | None = field(default=None, repr=False)
    _frames: int = field(default=0, repr=False)
    _last: float | None = field(default=None, repr=False)
    _late_since: float | None = field(default=None, repr=False)
    _late_low: float = field(default=0.0, repr=False)

    def reset(self) -> None:
        """A new stream (after an overrun or a reopen): the next read sets the clock anew."""
        self._t0 = self._last = self._late_since = None
        self._frames = 0

    def stamp(self, t_return: float, frames: int) -> float:
        """The capture time of the last of `frames` just read, whose read returned at `t_return`."""
        self._frames += frames
        since_start = self._frames / self.rate
        bound = t_return - since_start
        if self._t0 is None:
            t0 = bound
        else:
            t0 = min(self._t0 + self.slew * frames / self.rate, bound)
            if bound - t0 > self.step_s:
                if self._late_since is None:
                    self._late_since, self._late_low = t_return, bound
                else:
                    self._late_low = min(self._late_low, bound)
                    if t_return - self._late_since >= self.window_s:
                        t0 = self._late_low
                        self.steps += 1
                        self._late_since = None
            else:
                self._late_since = None
        self._t0 = t0
        t_end = min(t_return, t0 + since_start)  # (t0 <= bound: only rounding can make it later)
        if self._last is not None:
            t_end = max(t_end, self._last)  # a tighter bound found later never moves time backwards
        self._last = t_end
        return t_end
