"""gpiozero's own mock pins for a test, and the previous pin factory back afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin


@contextlib.contextmanager
def mock_pins(pwm: bool = True) -> Iterator[MockFactory]:
    """PWM-capable mock pins (PWMLED, RGBLED), or plain ones (MockSPIDevice's clock pin is not PWM)."""
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin) if pwm else MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = previous
