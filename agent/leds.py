"""LEDs: the conversation state, shown. One pure function picks the pattern; a driver shows it.

`leds_for` is priority-ordered like the Home Assistant Voice PE firmware's `control_leds`: an error or
the privacy mute outranks whatever the conversation is doing, so the device never hides a problem or a
muted microphone behind a happier colour. Drivers use gpiozero, so tests run on its mock pin factory;
gpiozero animates blink and pulse in its own background thread, so the event loop never waits on LEDs.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .config import GpioConfig

log = logging.getLogger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    WAKING = "waking"
    CONNECTING = "connecting"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ERROR = "error"


ErrorKind = Literal["network", "auth", "config", "audio"]
Mode = Literal["off", "solid", "blink", "pulse"]


@dataclass(frozen=True)
class Pattern:
    name: str
    color: tuple[float, float, float]
    mode: Mode
    period_s: float = 1.0


OFF = Pattern("idle", (0.0, 0.0, 0.0), "off")
_BY_STATE: dict[State, Pattern] = {
    State.IDLE: OFF,
    State.WAKING: Pattern("wake", (0.0, 0.6, 1.0), "solid"),
    State.CONNECTING: Pattern("connecting", (0.0, 0.6, 1.0), "blink", 0.4),
    State.LISTENING: Pattern("listening", (0.0, 0.3, 1.0), "solid"),
    State.USER_SPEAKING: Pattern("user_speaking", (0.0, 1.0, 1.0), "solid"),
    State.THINKING: Pattern("thinking", (0.6, 0.0, 1.0), "pulse", 1.0),
    State.SPEAKING: Pattern("speaking", (0.0, 1.0, 0.3), "pulse", 0.6),
}
_ERRORS: dict[str, Pattern] = {
    "auth": Pattern("auth_error", (1.0, 0.4, 0.0), "blink", 2.0),
    "config": Pattern("config_error", (1.0, 0.4, 0.0), "blink", 2.0),
    "network": Pattern("network_error", (1.0, 0.0, 0.0), "pulse", 2.0),
    "audio": Pattern("audio_error", (1.0, 0.0, 0.0), "blink", 0.5),
}
MUTED = Pattern("muted", (1.0, 0.0, 0.0), "solid")


def leds_for(state: State, *, muted: bool = False, error: ErrorKind | None = None) -> Pattern:
    """The pattern to show, highest priority first: error, muted, then the conversation state."""
    if error is not None or state is State.ERROR:
        return _ERRORS.get(error or "network", _ERRORS["network"])
    if muted:
        return MUTED
    return _BY_STATE[state]


class Leds:
    """Shows patterns on the configured gpiozero device and remembers the sequence shown.

    `on_change` (for the demo's terminal view and the tests) gets each new pattern.
    """

    def __init__(self, cfg: GpioConfig, on_change: Callable[[Pattern], None] | None = None) -> None:
        self.history: list[str] = []
        self.current: Pattern | None = None
        self._on_change = on_change
        self._device: Any = None
        leds = cfg.leds
        if leds.driver == "none":
            return
        from gpiozero import LED, PWMLED, RGBLED

        if leds.driver == "led":
            self._device = LED(leds.pins[0], active_high=leds.active_high)
        elif leds.driver == "pwmled":
            self._device = PWMLED(leds.pins[0], active_high=leds.active_high)
        else:
            self._device = RGBLED(*leds.pins, active_high=leds.active_high)

    @property
    def device(self) -> Any:
        return self._device

    def show(self, pattern: Pattern) -> None:
        if pattern == self.current:
            return
        self.current = pattern
        self.history.append(pattern.name)
        if self._on_change is not None:
            self._on_change(pattern)
        dev = self._device
        if dev is None:
            return
        half = pattern.period_s / 2
        is_rgb = hasattr(dev, "red")
        brightness = max(pattern.color)
        on_value: Any = pattern.color if is_rgb else (brightness if hasattr(dev, "pulse") else True)
        if pattern.mode == "off":
            dev.off()
        elif pattern.mode == "solid":
            if is_rgb or hasattr(dev, "pulse"):
                dev.value = on_value
            else:
                dev.on()
        elif pattern.mode == "blink" or not hasattr(dev, "pulse"):
            if is_rgb:
                dev.blink(on_time=half, off_time=half, on_color=pattern.color, background=True)
            else:
                dev.blink(on_time=half, off_time=half, background=True)
        elif is_rgb:
            dev.pulse(fade_in_time=half, fade_out_time=half, on_color=pattern.color, background=True)
        else:
            dev.pulse(fade_in_time=half, fade_out_time=half, background=True)

    def close(self) -> None:
        """Release the pins; later patterns are still recorded, just not shown."""
        if self._device is not None:
            self._device.close()
            self._device = None
