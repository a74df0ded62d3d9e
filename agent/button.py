"""The push button: gpiozero edges turned into two gestures, handed to the event loop.

- a short press (released before `hold_s`) -> `on_press`: the conversation decides what it means (start
  a conversation while idle, stop the reply while the assistant speaks, hang up while listening);
- a hold (pressed for `hold_s`) -> `on_hold`, once per hold, while the button is still down, so the
  user feels the mute take effect without letting go. Releasing after a hold is not a press.

Exactly one gesture per press: a release that comes when the hold is due but before gpiozero's hold
thread has fired counts as the hold (not a press, and not nothing).

gpiozero calls back from its own threads (the pin's edge thread, its hold thread), so the callbacks
are handed over with `loop.call_soon_threadsafe`: they run on the event loop, where the conversation
lives, and never block a GPIO thread. A callback may be a coroutine function (`Agent.press`): its
coroutine then runs as a task, and an exception in it is logged, not lost.

Debouncing is gpiozero's `bounce_time` (lgpio filters the edges in its own thread: a level must be
stable that long); on top, a press shorter than `bounce_s` is dropped as a glitch, for pin factories
that pass such glitches on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from .config import ButtonConfig
from .gpio import gpio_errors

log = logging.getLogger(__name__)

Gesture = Literal["press", "hold"]


class Button:
    """One gpiozero Button on `cfg.pin`, reporting gestures on `loop`. `close()` releases the pin."""

    def __init__(
        self,
        cfg: ButtonConfig,
        loop: asyncio.AbstractEventLoop,
        *,
        on_press: Callable[[], object | Awaitable[object]] | None = None,
        on_hold: Callable[[], object | Awaitable[object]] | None = None,
    ) -> None:
        if cfg.pin is None:
            raise ValueError("gpio.button.pin is not set")
        from gpiozero import Button as GpioButton

        self.cfg = cfg
        self._loop = loop
        self._handlers: dict[Gesture, Callable[[], object] | None] = {"press": on_press, "hold": on_hold}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()
        self._down_at: float | None = None  # monotonic time of the press in progress
        self._hold_sent = False
        #: The last gestures reported, in order (for logs and tests): a bounded ring.
        self.gestures: deque[Gesture] = deque(maxlen=64)
        with gpio_errors("gpio.button.pin"):
            self._device: Any = GpioButton(
                cfg.pin,
                pull_up=cfg.pull_up,
                bounce_time=cfg.bounce_s or None,
                hold_time=cfg.hold_s,
                hold_repeat=False,
            )
        self._device.when_pressed = self._pressed
        self._device.when_held = self._held
        self._device.when_released = self._released
        log.info("button on GPIO%d (hold %.1f s for mute)", cfg.pin, cfg.hold_s)

    @property
    def device(self) -> Any:
        return self._device

    @property
    def is_pressed(self) -> bool:
        return bool(self._device.is_pressed)

    # -- gpiozero's threads ------------------------------------------------------------------------

    def _pressed(self) -> None:
        with self._lock:
            self._down_at = time.monotonic()
            self._hold_sent = False

    def _held(self) -> None:
        with self._lock:
            if self._down_at is None or self._hold_sent:
                return
            self._hold_sent = True
        self._post("hold")

    def _released(self) -> None:
        with self._lock:
            down_at, self._down_at = self._down_at, None
            if down_at is None or self._hold_sent:
                return
            duration = time.monotonic() - down_at
            if duration >= self.cfg.hold_s:
                self._hold_sent = True  # the hold thread had not fired yet: this press was a hold
                gesture: Gesture = "hold"
            elif duration < self.cfg.bounce_s:
                log.debug("button: %.0f ms glitch ignored", duration * 1000)
                return
            else:
                gesture = "press"
        self._post(gesture)

    def _post(self, gesture: Gesture) -> None:
        try:
            self._loop.call_soon_threadsafe(self._dispatch, gesture)
        except RuntimeError:  # the loop is closed: the service is shutting down
            log.debug("button %s after the event loop closed: ignored", gesture)

    # -- the event loop ----------------------------------------------------------------------------

    def _dispatch(self, gesture: Gesture) -> None:
        self.gestures.append(gesture)
        log.info("button: %s", gesture)
        handler = self._handlers[gesture]
        if handler is None:
            return
        result = handler()
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("button gesture handler failed", exc_info=task.exception())

    def close(self) -> None:
        self._device.close()
