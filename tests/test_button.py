"""Button gestures on gpiozero's own mock pins: edges in gpiozero's threads, gestures on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from gpiozero.pins.mock import MockFactory

from agent.button import Button
from agent.config import ButtonConfig, GpioConfig, config_from_dict
from agent.errors import ConfigError
from agent.gpio import NO_PIN_FACTORY, gpio_errors

from .gpio_helpers import mock_pins

PIN = 17
HOLD_S = 0.3  # the shortest hold the configuration allows, to keep the tests quick


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    with mock_pins() as pins:
        yield pins


class Recorder:
    """Gestures as they reach the event loop, with the thread they ran on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.changed = asyncio.Event()

    def callback(self, name: str):
        def handler() -> None:
            self.events.append((name, threading.get_ident()))
            self.changed.set()

        return handler

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
async def button(factory: MockFactory) -> Iterator[tuple[Button, Recorder]]:
    rec = Recorder()
    cfg = ButtonConfig(pin=PIN, pull_up=True, hold_s=HOLD_S, bounce_s=0.05)
    btn = Button(cfg, asyncio.get_running_loop(), on_press=rec.callback("press"), on_hold=rec.callback("hold"))
    yield btn, rec
    btn.close()


async def settle(seconds: float = 0.05) -> None:
    """Let call_soon_threadsafe callbacks reach the loop (and gpiozero's hold thread run)."""
    await asyncio.sleep(seconds)


async def press_for(factory: MockFactory, seconds: float) -> None:
    pin = factory.pin(PIN)
    pin.drive_low()  # pull-up: pressed pulls the pin to ground
    await asyncio.sleep(seconds)
    pin.drive_high()
    await settle()


async def test_short_press_reaches_the_loop_once(factory: MockFactory, button) -> None:
    btn, rec = button
    await press_for(factory, 0.1)
    assert rec.names == ["press"]
    assert rec.events[0][1] == threading.get_ident()  # ran on the event loop's thread, not gpiozero's
    assert list(btn.gestures) == ["press"]


async def test_hold_fires_once_while_still_pressed_and_release_is_not_a_press(factory: MockFactory, button) -> None:
    btn, rec = button
    pin = factory.pin(PIN)
    pin.drive_low()
    await asyncio.wait_for(rec.changed.wait(), HOLD_S + 1.0)  # fired by gpiozero's hold thread
    assert rec.names == ["hold"] and btn.is_pressed
    await asyncio.sleep(2.5 * HOLD_S)  # held on: no repeat
    pin.drive_high()
    await settle()
    assert rec.names == ["hold"]
    assert rec.events[0][1] == threading.get_ident()


async def test_release_just_before_the_hold_thread_fires_counts_as_the_hold(factory: MockFactory, button) -> None:
    btn, rec = button
    btn._pressed()
    btn._down_at -= HOLD_S  # as if pressed for hold_s, with gpiozero's hold thread not yet run
    btn._released()
    btn._held()  # the late hold thread: ignored, the hold was already reported
    await settle()
    assert rec.names == ["hold"]


async def test_glitch_shorter_than_bounce_is_ignored(factory: MockFactory, button) -> None:
    btn, rec = button
    pin = factory.pin(PIN)
    pin.drive_low()
    pin.drive_high()  # microseconds later
    await settle()
    assert rec.names == []
    assert btn.device.pin.bounce == pytest.approx(0.05)  # gpiozero debounces the edges too


async def test_gestures_in_a_row(factory: MockFactory, button) -> None:
    _, rec = button
    await press_for(factory, 0.08)
    await press_for(factory, HOLD_S + 0.15)
    await press_for(factory, 0.08)
    assert rec.names == ["press", "hold", "press"]


async def test_active_high_button_without_pull_up(factory: MockFactory) -> None:
    rec = Recorder()
    cfg = ButtonConfig(pin=PIN, pull_up=False, hold_s=HOLD_S)
    btn = Button(cfg, asyncio.get_running_loop(), on_press=rec.callback("press"))
    try:
        pin = factory.pin(PIN)
        pin.drive_high()
        await asyncio.sleep(0.08)
        pin.drive_low()
        await settle()
        assert rec.names == ["press"]
    finally:
        btn.close()


async def test_pin_in_use_names_the_key(factory: MockFactory, button) -> None:
    with pytest.raises(ConfigError) as info:
        Button(ButtonConfig(pin=PIN), asyncio.get_running_loop())
    assert info.value.path == "gpio.button.pin"


def test_no_pin_factory_says_what_to_do() -> None:
    from gpiozero import BadPinFactory

    with pytest.raises(ConfigError) as info, gpio_errors("gpio.button.pin"):
        raise BadPinFactory("Unable to load any default pin factory!")
    assert info.value.path == "gpio.pin_factory"
    assert "lgpio" in str(info.value) and NO_PIN_FACTORY in str(info.value)


@pytest.mark.parametrize(
    ("gpio", "path", "fragment"),
    [
        ({"button": {"pin": 40}}, "gpio.button.pin", "not a BCM GPIO number"),
        ({"button": {"pin": 5}, "leds": {"driver": "led", "pins": [5]}}, "gpio.button.pin", "already used"),
        ({"button": {"hold_s": 0.1}}, "gpio.button.hold_s", "allowed 0.3 to 30.0"),
    ],
)
def test_button_config_errors(gpio: dict, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"gpio": gpio})
    assert info.value.path == path and fragment in str(info.value)


def test_default_config_has_no_button() -> None:
    assert GpioConfig().button.pin is None
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(ValueError, match="pin is not set"):
        Button(ButtonConfig(), loop)


def test_hold_thread_is_gone_after_close(factory: MockFactory) -> None:
    loop = asyncio.new_event_loop()
    try:
        before = threading.active_count()
        btn = Button(ButtonConfig(pin=PIN, hold_s=HOLD_S), loop)
        btn.close()
        deadline = time.monotonic() + 2
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert threading.active_count() == before
    finally:
        loop.close()


async def test_coroutine_handlers_run_as_tasks(factory: MockFactory, caplog: pytest.LogCaptureFixture) -> None:
    done = asyncio.Event()

    async def press() -> str:
        await asyncio.sleep(0)
        done.set()
        return "start"

    async def hold() -> None:
        raise RuntimeError("boom")

    btn = Button(ButtonConfig(pin=PIN, hold_s=HOLD_S), asyncio.get_running_loop(), on_press=press, on_hold=hold)
    try:
        await press_for(factory, 0.08)
        await asyncio.wait_for(done.wait(), 1.0)
        await press_for(factory, HOLD_S + 0.15)
        await settle()
        assert "button gesture handler failed" in caplog.text and "boom" in caplog.text
    finally:
        btn.close()
