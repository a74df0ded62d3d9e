"""LEDs: the conversation state, shown. One pure function picks the pattern; a driver shows it.

`leds_for` is priority-ordered like the Home Assistant Voice PE firmware's `control_leds`: the privacy
mute outranks everything (a muted microphone must always be visible, and a muted device makes no calls,
so an error from before is stale), then an error (the device never hides a problem behind a happier
colour), then the conversation state.

Drivers, all on gpiozero so tests run on its mock pin factory:
- `led`, `pwmled`, `rgbled`: gpiozero's own devices; they animate blink and pulse in gpiozero's
  background threads.
- `apa102`: a chain of APA102 pixels on SPI (the ReSpeaker 2-mic and 4-mic HATs), written through
  gpiozero's SPI interface (hardware SPI through lgpio on a Pi, bit-banged on mock pins), with an
  optional power-enable pin. Its animations run in one daemon thread per chain.
`show()` only hands a pattern over, so the event loop never waits on an LED.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .config import GpioConfig, LedConfig
from .gpio import gpio_errors
from .state import ErrorKind, Snapshot, State

log = logging.getLogger(__name__)


Mode = Literal["off", "solid", "blink", "pulse", "spin"]
RGB = tuple[float, float, float]


@dataclass(frozen=True)
class Pattern:
    """What to show. `spin` (a light running round a ring) shows as `pulse` on a single LED."""

    name: str
    color: RGB
    mode: Mode
    period_s: float = 1.0


OFF = Pattern("idle", (0.0, 0.0, 0.0), "off")
_BY_STATE: dict[State, Pattern] = {
    State.IDLE: OFF,
    State.WAKING: Pattern("wake", (0.0, 0.6, 1.0), "solid"),
    State.CONNECTING: Pattern("connecting", (0.0, 0.6, 1.0), "blink", 0.4),
    State.LISTENING: Pattern("listening", (0.0, 0.3, 1.0), "solid"),
    State.USER_SPEAKING: Pattern("user_speaking", (0.0, 1.0, 1.0), "solid"),
    State.THINKING: Pattern("thinking", (0.6, 0.0, 1.0), "spin", 1.0),
    State.SPEAKING: Pattern("speaking", (0.0, 1.0, 0.3), "pulse", 0.6),
}
_ERRORS: dict[str, Pattern] = {
    "auth": Pattern("auth_error", (1.0, 0.4, 0.0), "blink", 2.0),
    "config": Pattern("config_error", (1.0, 0.4, 0.0), "blink", 2.0),
    "network": Pattern("network_error", (1.0, 0.0, 0.0), "pulse", 2.0),
    "audio": Pattern("audio_error", (1.0, 0.0, 0.0), "blink", 0.5),
}
MUTED = Pattern("muted", (1.0, 0.0, 0.0), "solid")
RINGING = Pattern("timer", (1.0, 0.7, 0.0), "blink", 0.5)


def leds_for(
    state: State, *, muted: bool = False, error: ErrorKind | str | None = None, ringing: bool = False
) -> Pattern:
    """The pattern to show, highest priority first: a ringing timer (it wants a hand on the button),
    muted, error, then the conversation state. `State.ERROR` without a kind, or a kind not known here,
    shows as a network error."""
    if ringing:
        return RINGING
    if muted:
        return MUTED
    if error is not None or state is State.ERROR:
        kind = error.value if isinstance(error, ErrorKind) else error
        return _ERRORS.get(kind or "network", _ERRORS["network"])
    return _BY_STATE[state]


def pattern_for(snapshot: Snapshot) -> Pattern:
    """The pattern for one snapshot of the device's state."""
    return leds_for(snapshot.state, muted=snapshot.muted, error=snapshot.shown_error, ringing=snapshot.ringing)


# --------------------------------------------------------------------------------------------------
# Rendering, for drivers that draw every frame themselves


def level_at(pattern: Pattern, t: float) -> float:
    """The brightness (0 to 1) of a blinking or pulsing pattern `t` seconds after it started."""
    if pattern.mode == "off":
        return 0.0
    if pattern.mode == "solid":
        return 1.0
    phase = (t / pattern.period_s) % 1.0
    if pattern.mode == "blink":
        return 1.0 if phase < 0.5 else 0.0
    return 0.5 - 0.5 * math.cos(2 * math.pi * phase)  # pulse (and spin, seen as one pixel)


def render(pattern: Pattern, t: float, count: int) -> list[RGB]:
    """The colour of each of `count` pixels `t` seconds after `pattern` started. `spin`: a light with a
    fading tail, once round the ring per period."""
    if pattern.mode != "spin" or count < 2:
        level = level_at(pattern, t)
        return [_scale(pattern.color, level)] * count
    head = (t / pattern.period_s) % 1.0 * count
    tail = max(1.0, count / 3)
    return [_scale(pattern.color, max(0.0, 1.0 - ((head - i) % count) / tail)) for i in range(count)]


def _scale(color: RGB, level: float) -> RGB:
    return (color[0] * level, color[1] * level, color[2] * level)


def is_animated(pattern: Pattern) -> bool:
    return pattern.mode in ("blink", "pulse", "spin")


# --------------------------------------------------------------------------------------------------
# APA102 pixels


class Apa102:
    """A chain of APA102 pixels on SPI, written through gpiozero's SPI interface.

    A frame is 32 zero bits (start), then per pixel 0xE0 | brightness (5 bits), blue, green, red, then
    zero bytes that clock the data through the chain (half a bit per pixel) and make SK9822 clones
    latch. `brightness` (0 to 1) sets the 5-bit global level; colours are scaled to 0-255.
    """

    def __init__(self, count: int, *, bus: int = 0, device: int = 1, brightness: float = 1.0) -> None:
        from gpiozero import SPIDevice

        self.count = count
        self.global_level = max(0, min(31, round(brightness * 31)))
        with gpio_errors("gpio.leds.spi_bus"):
            self._dev = SPIDevice(port=bus, device=device)
        self._lock = threading.Lock()
        self.frames_written = 0

    def frame(self, pixels: Sequence[RGB]) -> list[int]:
        """The bytes that show `pixels` (missing pixels are off, extra ones ignored)."""
        data = [0x00] * 4
        head = 0xE0 | self.global_level
        for i in range(self.count):
            r, g, b = pixels[i] if i < len(pixels) else (0.0, 0.0, 0.0)
            data += [head, _byte(b), _byte(g), _byte(r)]
        return data + [0x00] * (4 + (self.count + 15) // 16)

    def write(self, pixels: Sequence[RGB]) -> None:
        with self._lock:
            spi = self._dev._spi
            if spi is None:
                return  # closed
            spi.write(self.frame(pixels))
            self.frames_written += 1

    def close(self) -> None:
        with self._lock:
            self._dev.close()


def _byte(value: float) -> int:
    return max(0, min(255, round(value * 255)))


class _Animator:
    """Draws the current pattern on pixels from one daemon thread: once for a still pattern, at `fps`
    for a moving one. `set()` returns at once; the thread picks the new pattern up within a frame."""

    def __init__(self, write: Callable[[list[RGB]], None], count: int, fps: float = 30.0) -> None:
        self._write = write
        self._count = count
        self._period = 1.0 / fps
        self._pattern = OFF
        self._since = time.monotonic()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="leds-apa102", daemon=True)
        self._thread.start()

    def set(self, pattern: Pattern) -> None:
        with self._lock:
            self._pattern, self._since = pattern, time.monotonic()
        self._changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.clear()
            with self._lock:
                pattern, since = self._pattern, self._since
            try:
                self._write(render(pattern, time.monotonic() - since, self._count))
            except Exception:  # a broken SPI write must not kill the thread or spam the log
                log.exception("APA102 write failed; LEDs paused for 5 s")
                self._stop.wait(5.0)
            self._changed.wait(self._period if is_animated(pattern) else None)

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout)


# --------------------------------------------------------------------------------------------------
# Drivers


class Driver(Protocol):
    device: Any

    def show(self, pattern: Pattern) -> None: ...

    def close(self) -> None: ...


class GpiozeroDriver:
    """gpiozero's LED, PWMLED or RGBLED; `brightness` scales what PWM can dim."""

    def __init__(self, cfg: LedConfig) -> None:
        from gpiozero import LED, PWMLED, RGBLED

        with gpio_errors("gpio.leds.pins"):
            if cfg.driver == "led":
                self.device: Any = LED(cfg.pins[0], active_high=cfg.active_high)
            elif cfg.driver == "pwmled":
                self.device = PWMLED(cfg.pins[0], active_high=cfg.active_high)
            else:
                self.device = RGBLED(*cfg.pins, active_high=cfg.active_high)
        self.brightness = cfg.brightness

    def show(self, pattern: Pattern) -> None:
        dev = self.device
        half = pattern.period_s / 2
        is_rgb = hasattr(dev, "red")
        can_dim = hasattr(dev, "pulse")
        color = _scale(pattern.color, self.brightness)
        if pattern.mode == "off":
            dev.off()
        elif pattern.mode == "solid":
            if is_rgb:
                dev.value = color
            elif can_dim:
                dev.value = max(color)
            else:
                dev.on()
        elif pattern.mode == "blink" or not can_dim:
            if is_rgb:
                dev.blink(on_time=half, off_time=half, on_color=color, background=True)
            else:
                dev.blink(on_time=half, off_time=half, background=True)
        elif is_rgb:  # pulse, and spin, which one LED cannot show
            dev.pulse(fade_in_time=half, fade_out_time=half, on_color=color, background=True)
        else:
            dev.pulse(fade_in_time=half, fade_out_time=half, background=True)

    def close(self) -> None:
        self.device.close()


class Apa102Driver:
    """APA102 pixels, their power-enable pin (switched on first, off last), and their animation thread."""

    def __init__(self, cfg: LedConfig) -> None:
        self._power: Any = None
        if cfg.power_pin is not None:
            from gpiozero import LED

            with gpio_errors("gpio.leds.power_pin"):
                self._power = LED(cfg.power_pin, active_high=cfg.power_active_high)
            self._power.on()
        try:
            self.device = Apa102(cfg.count, bus=cfg.spi_bus, device=cfg.spi_device, brightness=cfg.brightness)
        except BaseException:
            if self._power is not None:
                self._power.close()
            raise
        self._animator = _Animator(self.device.write, cfg.count)

    @property
    def power(self) -> Any:
        return self._power

    def show(self, pattern: Pattern) -> None:
        self._animator.set(pattern)

    def close(self) -> None:
        self._animator.stop()
        try:
            self.device.write([])  # all off before the power goes
        finally:
            self.device.close()
            if self._power is not None:
                self._power.off()
                self._power.close()


#: How many pattern names `Leds.history` keeps (the device runs for months: a bounded ring).
HISTORY = 256


class Leds:
    """Shows patterns on the configured driver and remembers the last `HISTORY` shown.

    `on_change` (for the demo's terminal view and the tests) gets each new pattern.
    """

    def __init__(self, cfg: GpioConfig, on_change: Callable[[Pattern], None] | None = None) -> None:
        self.history: deque[str] = deque(maxlen=HISTORY)
        self.current: Pattern | None = None
        self._on_change = on_change
        self._driver: Driver | None = None
        leds = cfg.leds
        if leds.driver == "apa102":
            self._driver = Apa102Driver(leds)
        elif leds.driver != "none":
            self._driver = GpiozeroDriver(leds)

    @property
    def device(self) -> Any:
        """The gpiozero device (led, pwmled, rgbled) or the `Apa102` chain; None without LEDs."""
        return self._driver.device if self._driver is not None else None

    @property
    def driver(self) -> Driver | None:
        return self._driver

    def show(self, pattern: Pattern) -> None:
        if pattern == self.current:
            return
        self.current = pattern
        self.history.append(pattern.name)
        if self._on_change is not None:
            self._on_change(pattern)
        if self._driver is not None:
            self._driver.show(pattern)

    def close(self) -> None:
        """Release the pins; later patterns are still recorded, just not shown."""
        if self._driver is not None:
            self._driver.close()
            self._driver = None
