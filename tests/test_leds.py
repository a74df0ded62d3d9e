"""LED patterns: the pure priority function, and the drivers on gpiozero's own mock pins."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from agent.config import GpioConfig, LedConfig
from agent.leds import MUTED, OFF, Leds, State, leds_for


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = previous


def test_every_state_has_its_own_pattern() -> None:
    names = {leds_for(s).name for s in State if s is not State.ERROR}
    assert len(names) == len(State) - 1
    assert leds_for(State.IDLE) == OFF


def test_priority_error_then_muted_then_state() -> None:
    assert leds_for(State.SPEAKING, muted=True) == MUTED
    assert leds_for(State.SPEAKING, muted=True, error="auth").name == "auth_error"
    assert leds_for(State.IDLE, error="network").name == "network_error"
    assert leds_for(State.ERROR).name == "network_error"
    assert leds_for(State.LISTENING, error="auth") != leds_for(State.LISTENING, error="network")


def test_rgb_led_shows_colours_on_mock_pins(factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="rgbled", pins=(5, 6, 13))))
    try:
        leds.show(leds_for(State.LISTENING))
        assert leds.device.value == leds_for(State.LISTENING).color
        assert factory.pin(13).state == pytest.approx(1.0)  # blue
        leds.show(leds_for(State.IDLE))
        assert leds.device.value == (0, 0, 0)
        leds.show(leds_for(State.IDLE))  # no change, no new history entry
        assert leds.history == ["listening", "idle"]
    finally:
        leds.close()


def test_single_led_blinks_for_connecting(factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="led", pins=(17,))))
    try:
        leds.show(leds_for(State.CONNECTING))
        pin = factory.pin(17)
        import time

        time.sleep(0.9)  # 0.4 s period: a few toggles
        states = [s.state for s in pin.states]
        assert states.count(True) >= 2 and states.count(False) >= 2
        leds.show(leds_for(State.LISTENING))
        assert pin.state == 1
    finally:
        leds.close()


def test_pwm_led_pulses_while_thinking(factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="pwmled", pins=(18,))))
    try:
        leds.show(leds_for(State.THINKING))
        import time

        time.sleep(0.5)
        levels = {round(s.state, 2) for s in factory.pin(18).states}
        assert len(levels) > 3  # fading, not just on and off
    finally:
        leds.close()
