"""The service: the agent under systemd, until SIGTERM.

`run_service` starts the agent, tells systemd (`Type=notify`) when it is ready, keeps the watchdog fed
while the microphone delivers audio, mirrors the device's state in systemd's STATUS line, reloads the
configuration on SIGHUP, and hangs up cleanly on the way out.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable

from .agent import Agent
from .config import Config, SystemdEnv
from .errors import ConfigError
from .journal import CONTEXT as LOG_CONTEXT
from .sdnotify import Notifier, ProgressCheck, feed_watchdog
from .status import status_line, status_text
from .voicelive.auth import Credentials

log = logging.getLogger(__name__)


Reloader = Callable[[], tuple[Config, Credentials]]


async def cancel(task: asyncio.Task[object], bound_s: float = 1.5) -> None:
    """Cancel `task` and wait for it, repeating the cancellation: a cancellation can be lost inside a
    library's own waits (asyncio.wait_for on 3.11 swallows one that races a result), and a SIGTERM
    must stop the service all the same. Gives up after `bound_s`; the caller's clean-up goes on."""
    deadline = time.monotonic() + bound_s
    while not task.done() and time.monotonic() < deadline:
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.done():
        log.warning("task %s did not stop within %.1f s", task.get_name(), bound_s)
    elif not task.cancelled() and task.exception() is not None:
        log.debug("task %s ended with %r", task.get_name(), task.exception())


#: Sections whose devices are opened once at start: a reload cannot change them.
RESTART_SECTIONS = ("audio", "wake", "gpio")


def reload_config(agent: Agent, reloader: Reloader, notifier: Notifier) -> bool:
    """SIGHUP: read the configuration and the credentials again. A bad file is reported by its key and
    changes nothing (the running configuration stays); a good one takes effect from the next call and
    clears an authentication or configuration error, so a fixed key works at the next wake word."""
    notifier.notify(reloading=1, status="reloading the configuration")
    try:
        config, credentials = reloader()
    except ConfigError as exc:
        log.error("configuration not reloaded, keeping the running one: %s", exc)
        notifier.ready(f"reload failed: {exc}")
        return False
    changed = [name for name in RESTART_SECTIONS if getattr(config, name) != getattr(agent.config, name)]
    if changed:
        log.warning("the %s settings changed: restart the service to apply them", ", ".join(changed))
    agent.reload(config, credentials)
    log.info("configuration reloaded")
    notifier.ready("configuration reloaded")
    return True


async def run_service(
    config: Config, credentials: Credentials, sd: SystemdEnv | None = None, reloader: Reloader | None = None
) -> int:
    """Run until SIGTERM or SIGINT; hang up cleanly on the way out. SIGHUP reloads the configuration
    through `reloader` (see `reload_config`).

    Under systemd (`Type=notify`): READY=1 once the models are loaded and the first microphone block has
    arrived (not merely once the device opened), WATCHDOG=1 only while capture blocks keep arriving,
    STOPPING=1 before the hang-up. Outside systemd the notifications are no-ops.
    """
    sd = sd or SystemdEnv()
    notifier = Notifier(sd.notify_socket)
    agent = Agent(config, credentials)
    LOG_CONTEXT.device, LOG_CONTEXT.snapshot = config.device.name, lambda: agent.states.snapshot
    who = f"{config.device.name}: " if config.device.name else ""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if reloader is not None:
        loop.add_signal_handler(signal.SIGHUP, reload_config, agent, reloader, notifier)
    notifier.status("loading the wake word models and opening the microphone")
    tasks: list[asyncio.Task[object]] = []
    rc = 0
    t = time.monotonic()
    try:
        await agent.start()
        stopper = asyncio.create_task(stop.wait())
        first_block = asyncio.create_task(agent.capture.ready.wait())
        await asyncio.wait({stopper, first_block}, return_when=asyncio.FIRST_COMPLETED)
        first_block.cancel()
        tasks.append(stopper)
        if not stop.is_set():
            names = ", ".join(agent.detector.names if agent.detector else [])
            log.info("%slistening for %s", who, names)
            notifier.ready(f"{who}listening for {names}")
            agent.states.subscribe(lambda _old, new: notifier.status(status_text(config.device.name, new)))
            interval = sd.watchdog_interval_s(os.getpid())
            if interval is not None:
                capture = agent.capture
                alive = ProgressCheck(
                    lambda: (capture.state, capture.stats.blocks + capture.stats.reopen_count),
                    alive_states=("running", "error"),
                )
                tasks.append(asyncio.create_task(feed_watchdog(notifier, alive, interval), name="watchdog"))
            runner = asyncio.create_task(agent.run(), name="conversations")
            tasks.append(runner)
            await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done() and not runner.cancelled() and runner.exception() is not None:
                log.error("the conversation loop failed: %r", runner.exception())
                rc = 1  # Restart=on-failure brings the service back
    finally:
        notifier.stopping("hanging up and closing the devices")
        for task in tasks:
            await cancel(task)
        await agent.stop()
        notifier.close()
    log.info("stopped after %.0f s", time.monotonic() - t)
    return rc


__all__ = ["run_service", "status_line"]  # status_line lives in agent.status
