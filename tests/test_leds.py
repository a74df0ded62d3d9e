"""LED patterns: the pure priority function, and the drivers on gpiozero's own mock pins."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory, MockSPIDevice

from agent.config import GpioConfig, LedConfig, config_from_dict
from agent.errors import ConfigError
from agent.leds import MUTED, OFF, Apa102, Leds, Pattern, leds_for, render
from agent.state import State

from .gpio_helpers import mock_pins


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    with mock_pins() as pins:
        yield pins


def test_every_state_has_its_own_pattern() -> None:
    names = {leds_for(s).name for s in State if s is not State.ERROR}
    assert len(names) == len(State) - 1
    assert leds_for(State.IDLE) == OFF


def test_priority_muted_then_error_then_state() -> None:
    assert leds_for(State.SPEAKING, muted=True) == MUTED
    assert leds_for(State.SPEAKING, muted=True, error="auth") == MUTED  # mute is always visible
    assert leds_for(State.IDLE, error="network").name == "network_error"
    assert leds_for(State.SPEAKING, error="auth").name == "auth_error"
    assert leds_for(State.ERROR).name == "network_error"
    assert leds_for(State.ERROR, error="some new kind").name == "network_error"


def test_the_issues_patterns_are_all_there_and_distinct() -> None:
    shown = {
        "idle": leds_for(State.IDLE),
        "wake detected": leds_for(State.WAKING),
        "connecting": leds_for(State.CONNECTING),
        "listening": leds_for(State.LISTENING),
        "user speaking": leds_for(State.USER_SPEAKING),
        "thinking": leds_for(State.THINKING),
        "assistant speaking": leds_for(State.SPEAKING),
        "muted": leds_for(State.IDLE, muted=True),
        "network error": leds_for(State.ERROR, error="network"),
        "authentication error": leds_for(State.ERROR, error="auth"),
    }
    looks = {(p.color, p.mode, p.period_s) for p in shown.values()}
    assert len(looks) == len(shown)  # no two can be mistaken for each other


def test_rgb_led_shows_colours_on_mock_pins(factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="rgbled", pins=(5, 6, 13))))
    try:
        leds.show(leds_for(State.LISTENING))
        assert leds.device.value == leds_for(State.LISTENING).color
        assert factory.pin(13).state == pytest.approx(1.0)  # blue
        leds.show(leds_for(State.IDLE))
        assert leds.device.value == (0, 0, 0)
        leds.show(leds_for(State.IDLE))  # no change, no new history entry
        assert list(leds.history) == ["listening", "idle"]
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


# --------------------------------------------------------------------------------------------------
# APA102 pixels on gpiozero's mock SPI (ReSpeaker 2-mic / 4-mic HATs: SPI 0.1, clock 11, MOSI 10, CE1 7)


@pytest.fixture
def spi_factory() -> Iterator[MockFactory]:
    """Plain mock pins: MockSPIDevice's clock pin is not a PWM pin."""
    with mock_pins(pwm=False) as pins:
        yield pins


def received_bytes(sink: MockSPIDevice) -> list[int]:
    """The last transfer the mock SPI device saw (its select line restarts the buffer)."""
    bits = [int(b) for b in sink.rx_buf]
    return [int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits) - 7, 8)]


def wait_for(condition, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_apa102_frame_layout(spi_factory: MockFactory) -> None:
    chain = Apa102(3, brightness=0.5)
    try:
        frame = chain.frame([(1.0, 0.5, 0.0), (0.0, 0.0, 1.0)])
    finally:
        chain.close()
    assert frame[:4] == [0, 0, 0, 0]  # start frame: 32 zero bits
    assert frame[4:8] == [0xE0 | 16, 0, 128, 255]  # brightness 16/31, then blue, green, red
    assert frame[8:12] == [0xE0 | 16, 255, 0, 0]
    assert frame[12:16] == [0xE0 | 16, 0, 0, 0]  # missing pixels are off
    assert frame[16:] == [0] * 5  # end frame: zeros to clock the data through (and latch SK9822)
    assert Apa102(12, brightness=1.0).frame([])[-5:] == [0] * 5


def test_apa102_on_mock_spi_with_power_pin(spi_factory: MockFactory) -> None:
    sink = MockSPIDevice(clock_pin=11, mosi_pin=10, select_pin=7)
    leds = Leds(GpioConfig(leds=LedConfig(driver="apa102", count=3, brightness=1.0, power_pin=5)))
    try:
        assert spi_factory.pin(5).state  # pixels powered before the first frame
        leds.show(leds_for(State.LISTENING))
        want = leds.device.frame(render(leds_for(State.LISTENING), 0.0, 3))
        wait_for(lambda: received_bytes(sink) == want)
        assert want[4:8] == [0xFF, 255, 76, 0]  # listening: blue with a little green
    finally:
        leds.close()
        sink.close()
    assert received_bytes(sink)[4:16] == [0xFF, 0, 0, 0] * 3  # all off before the power went
    assert not spi_factory.pin(5).state


def test_apa102_power_pin_active_low(spi_factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="apa102", power_pin=12, power_active_high=False)))
    try:
        assert not spi_factory.pin(12).state
    finally:
        leds.close()
    assert spi_factory.pin(12).state


def test_apa102_animates_in_its_own_thread_without_blocking(spi_factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="apa102", count=12)))
    try:
        t0 = time.perf_counter()
        leds.show(leds_for(State.SPEAKING))  # pulse
        assert time.perf_counter() - t0 < 0.005  # the caller (the event loop) never waits on SPI
        start = leds.device.frames_written
        time.sleep(0.4)
        assert leds.device.frames_written - start >= 5  # redrawn continuously
        leds.show(leds_for(State.LISTENING))  # still: drawn once, then the thread sleeps
        time.sleep(0.1)
        still = leds.device.frames_written
        time.sleep(0.2)
        assert leds.device.frames_written == still
    finally:
        leds.close()


def test_render_pulse_and_spin() -> None:
    pulse = leds_for(State.SPEAKING)
    levels = {round(render(pulse, t, 1)[0][1], 2) for t in (0.0, 0.1, 0.2, 0.3)}
    assert len(levels) == 4 and render(pulse, 0.0, 1)[0] == (0.0, 0.0, 0.0)
    spin = Pattern("spin", (1.0, 1.0, 1.0), "spin", 1.2)
    brightest = [max(range(12), key=lambda i, t=t: render(spin, t, 12)[i][0]) for t in (0.0, 0.3, 0.6)]
    assert brightest == [0, 3, 6]  # a light running round the ring
    assert render(spin, 0.3, 1)[0][0] == pytest.approx(0.5)  # one pixel: a pulse, a quarter period in


def test_rgb_brightness_scales_the_colour(factory: MockFactory) -> None:
    leds = Leds(GpioConfig(leds=LedConfig(driver="rgbled", pins=(5, 6, 13), brightness=0.5)))
    try:
        leds.show(leds_for(State.LISTENING))
        assert factory.pin(13).state == pytest.approx(0.5)
    finally:
        leds.close()


@pytest.mark.parametrize(
    ("leds", "path", "fragment"),
    [
        ({"driver": "apa102", "pins": [10, 11]}, "gpio.leds.pins", "leave pins empty"),
        ({"driver": "apa102", "count": 0}, "gpio.leds.count", "allowed 1 to 256"),
        ({"driver": "apa102", "spi_bus": 3}, "gpio.leds.spi_bus", "allowed 0 to 1"),
        ({"driver": "apa102", "brightness": 2}, "gpio.leds.brightness", "allowed 0.0 to 1.0"),
        ({"driver": "rgbled", "pins": [5, 6, 5]}, "gpio.leds.pins", "already used"),
        ({"driver": "led", "pins": [5], "power_pin": 5}, "gpio.leds.power_pin", "already used"),
        ({"driver": "spi"}, "gpio.leds.driver", "apa102"),
    ],
)
def test_led_config_errors(leds: dict, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"gpio": {"leds": leds}})
    assert info.value.path == path and fragment in str(info.value)


def test_mock_pins_remember_a_bounded_history() -> None:
    """gpiozero's mock pins append every change to a list that never shrinks (a test aid): on the
    agent's mock factory (the demo's, a service's on `gpio.pin_factory: mock`) they keep the last 256."""
    from gpiozero import PWMLED, Device
    from gpiozero.pins.mock import MockFactory

    from agent.gpio import MOCK_PIN_HISTORY, setup_pin_factory

    saved = Device.pin_factory
    Device.pin_factory = None
    try:
        setup_pin_factory("mock")
        assert isinstance(Device.pin_factory, MockFactory)
        led = PWMLED(21)
        for i in range(1000):
            led.value = (i % 10) / 10
        assert len(Device.pin_factory.pin(21).states) == MOCK_PIN_HISTORY
        assert Device.pin_factory.pin(21).states[-1].state == 0.9
        led.close()
    finally:
        Device.pin_factory = saved
