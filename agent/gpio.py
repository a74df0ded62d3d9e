"""What gpiozero's errors mean for the person who set up the device.

gpiozero raises `BadPinFactory` when it finds no way to reach the GPIO (no lgpio on a Pi, or a machine
that is not a Pi), and terse pin errors for a wrong or busy pin. The service turns them into
configuration errors that name the key and what to do (exit code 78, so systemd does not restart in a
loop), through `gpio_errors`.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator

from .errors import ConfigError

NO_PIN_FACTORY = (
    "gpiozero cannot reach the GPIO: on a Raspberry Pi install lgpio (apt install python3-lgpio, or pip install "
    "lgpio) and run as a user in the gpio group (and spi, for APA102 pixels); on another machine set "
    "gpio.pin_factory: mock, or turn the LEDs and button off"
)


@contextlib.contextmanager
def gpio_errors(path: str) -> Iterator[None]:
    """Re-raise gpiozero's errors from creating a device as ConfigErrors for the key `path`."""
    from gpiozero import BadPinFactory, GPIOPinInUse, GPIOZeroError

    try:
        yield
    except BadPinFactory:
        raise ConfigError("gpio.pin_factory", NO_PIN_FACTORY) from None
    except GPIOPinInUse as exc:
        raise ConfigError(path, f"{exc} (by another device of this configuration, or another program)") from None
    except GPIOZeroError as exc:
        raise ConfigError(path, f"{type(exc).__name__}: {exc}") from None


#: The changes a mock pin remembers: gpiozero's own keep every one (a test aid), about 25 a pin in each
#: conversation (the LED fades), a leak in a demo, a soak or a service left running on mock pins.
MOCK_PIN_HISTORY = 256


def _bounded_mock_pwm_pin() -> type:
    from gpiozero.pins.mock import MockPWMPin

    class BoundedMockPWMPin(MockPWMPin):  # type: ignore[misc]
        """gpiozero's mock PWM pin, its `states` record kept to the last MOCK_PIN_HISTORY changes."""

        def clear_states(self) -> None:  # gpiozero's __init__ calls it too
            super().clear_states()
            self.states = deque(self.states, maxlen=MOCK_PIN_HISTORY)

    return BoundedMockPWMPin


def setup_pin_factory(pin_factory: str | None) -> None:
    """gpiozero keeps its pin factory in a class attribute; `mock` selects its mock pins (with PWM),
    so the demo and tests drive real gpiozero devices with no GPIO hardware."""
    if pin_factory == "mock":
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory

        if not isinstance(Device.pin_factory, MockFactory):
            Device.pin_factory = MockFactory(pin_class=_bounded_mock_pwm_pin())
