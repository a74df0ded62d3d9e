"""A day of the service's life in a few seconds: nothing that lives as long as the process grows.

The watchdog pings systemd every 15 s for as long as the service runs, the state owner tells the LEDs
and systemd's STATUS line about every change, and the button reports every gesture. A list that keeps
each of those would be a slow leak on a 512 MB Pi Zero 2 W that a 300-conversation soak is too short to
see. Here a day of pings (5760) and of use (a conversation every five minutes, each with its presses and
holds) runs at full speed through the real Notifier on a real datagram socket, the real StateOwner, Leds
on gpiozero's mock pins and the button's event-loop side; the process's Python objects and RSS must not
grow with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import threading
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from agent.bench.common import vm_rss_mb as rss_mb
from agent.button import Button
from agent.config import ButtonConfig, GpioConfig, LedConfig
from agent.leds import Leds, pattern_for
from agent.sdnotify import Notifier, ProgressCheck, feed_watchdog
from agent.service import status_line
from agent.state import ErrorKind, Input, StateOwner

from .gpio_helpers import mock_pins
from .harness import logs_like_the_service

DAY_S = 24 * 3600
WATCHDOG_S = 15
CONVERSATION_EVERY_S = 300

CONVERSATION = (Input.WAKE, Input.DIAL, Input.CONNECTED, Input.USER_SPEAKING, Input.USER_DONE,
                Input.REPLY_PENDING, Input.ASSISTANT_SPEAKING, Input.ASSISTANT_DONE, Input.USER_SPEAKING,
                Input.USER_DONE, Input.ASSISTANT_SPEAKING, Input.ASSISTANT_DONE, Input.HUNG_UP)  # fmt: skip


def python_objects() -> int:
    """Memory blocks the interpreter holds: every object, strings and numbers included (the garbage
    collector's own list leaves those out)."""
    gc.collect()
    return sys.getallocatedblocks()


def clear_mock_history(factory: MockFactory) -> None:
    """gpiozero's mock pins record every change they see (a test aid, absent on real pins; the agent's
    keep the last 256 in a deque, gpiozero's own all in a list): keep only the first."""
    for pin in factory.pins.values():
        first = pin.states[0]
        pin.states.clear()
        pin.states.append(first)


async def live(seconds: int, owner: StateOwner, notifier: Notifier, button: Button, factory: MockFactory) -> None:
    counter = {"blocks": 0}

    def read() -> tuple[str, int]:
        counter["blocks"] += 1  # capture moves on between pings
        return "running", counter["blocks"]

    pings = asyncio.create_task(feed_watchdog(notifier, ProgressCheck(read), 0))
    for t in range(0, seconds, WATCHDOG_S):
        await asyncio.sleep(0)  # one watchdog ping per 15 s of the day
        if t % CONVERSATION_EVERY_S == 0:
            for inp in CONVERSATION:
                owner.apply(inp, cause="a day of use")
            button._dispatch("press")
            button._dispatch("hold")  # mute ...
            owner.apply(Input.MUTE)
            button._dispatch("hold")  # ... and unmute
            owner.apply(Input.UNMUTE)
            if t % (CONVERSATION_EVERY_S * 12) == 0:  # now and then a network error, and a lost microphone
                owner.apply(Input.FAILED, error=ErrorKind.NETWORK)
                owner.apply(Input.RECOVERED)
                owner.apply(Input.MIC_LOST)
                owner.apply(Input.MIC_BACK)
            clear_mock_history(factory)
    pings.cancel()
    await asyncio.gather(pings, return_exceptions=True)


async def test_a_day_of_pings_states_and_gestures_leaves_memory_flat(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "notify"))
    with mock_pins() as factory:
        owner = StateOwner()
        notifier = Notifier(str(tmp_path / "notify"))
        leds = Leds(GpioConfig(leds=LedConfig(driver="rgbled", pins=(5, 6, 13))))
        owner.subscribe(lambda _old, new: leds.show(pattern_for(new)))
        owner.subscribe(lambda _old, new: notifier.status(status_line(new)))
        button = Button(ButtonConfig(pin=17, hold_s=0.3), asyncio.get_running_loop())
        received = [0]

        def systemd() -> None:  # reads its socket at once, as systemd does (a full one blocks the sender)
            with contextlib.suppress(OSError):
                while server.recv(4096) != b"BYE=1":
                    received[0] += 1

        reader = threading.Thread(target=systemd, daemon=True)
        reader.start()
        try:
            with logs_like_the_service():
                await live(2 * 3600, owner, notifier, button, factory)  # warm up: caches, interned strings
                gc.collect()
                objects_before, rss_before = python_objects(), rss_mb()
                for _hour in range(24):
                    await live(3600, owner, notifier, button, factory)
                gc.collect()
                objects_after, rss_after = python_objects(), rss_mb()
        finally:
            button.close()
            leds.close()
            notifier.notify(bye=1)
            notifier.close()
            reader.join(2)
            server.close()
    assert received[0] > DAY_S / WATCHDOG_S  # the pings really went out, a day's worth and more
    assert owner.snapshot.seq > 24 * 3600 / CONVERSATION_EVERY_S * len(CONVERSATION)
    growth = objects_after - objects_before
    assert growth < 500, f"{growth} more Python objects after a day"
    assert rss_after - rss_before < 2.0, f"RSS {rss_before:.1f} -> {rss_after:.1f} MB"
