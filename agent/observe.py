"""One hook for whoever watches the agent from outside: the demo, the benchmarks, tests.

The agent calls these at the moments that matter for latency and for what a user sees; every method
is a no-op here, so an observer overrides only what it needs. They run on the event loop, except
`playback_written`, which runs in the ALSA playback thread and must return at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .leds import Pattern
    from .state import Snapshot


class Observer:
    def state_changed(self, old: Snapshot, new: Snapshot) -> None:
        """The device's state changed (see agent.state)."""

    def pattern_shown(self, pattern: Pattern) -> None:
        """The LEDs were told to show `pattern`."""

    def uplink_frame(self, t_capture: float | None, frames_sent: int) -> None:
        """A microphone frame went to the encoder; `t_capture` is when its audio was captured (None
        for the silence sent while capture stalls or the microphone is muted)."""

    def reply_frame(self, t_received: float, mark: int, audible: bool) -> None:
        """A frame of the service's audio was queued for playout at playout position `mark` (frames of a
        stopped reply, which are dropped, never come here)."""

    def playback_written(self, t: float, frames: int) -> None:
        """`frames` of audio were handed to ALSA at monotonic time `t` (playback thread)."""
