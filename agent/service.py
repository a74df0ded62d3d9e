"""The agent: capture, wake word, conversations, playback and LEDs wired together.

Capture runs all the time. Every block goes into the pre-roll ring and, while the agent is idle, to the
wake word detector. A detection starts a conversation whose microphone audio begins at the end of the
wake word (or at its start, with `audio.send_wake_word`), taken from the ring, so nothing said right
after the wake word is lost while the call connects. When the conversation ends, however it ends, the
agent resets the detector and goes back to idle.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .audio.alsa import Backoff
from .audio.capture import AlsaCapture
from .audio.earcons import Earcons
from .audio.playback import AlsaPlayback
from .audio.preroll import CallAudio, PrerollBuffer
from .button import Button
from .config import Config, SystemdEnv, WakeModelConfig
from .conversation import Conversation, ConversationResult
from .errors import ConfigError
from .leds import Leds, Pattern, State, leds_for
from .memory import limit_malloc_arenas
from .sdnotify import Notifier, ProgressCheck, feed_watchdog
from .voicelive.auth import Credentials
from .voicelive.call import CallOptions
from .voicelive.control import Target
from .wakeword import PHRASE_END_MARGIN_S, WakeWordDetector

log = logging.getLogger(__name__)

#: How long after the speaker last made a sound the wake word stays deaf: the device's own voice and
#: earcons must not wake it.
ECHO_GUARD_S = 0.3

#: A pause after the wake word is one that begins at most this long after the estimated end of the
#: phrase (the estimate's error is mostly within ±0.25 s); later pauses are the command's own.
PAUSE_AFTER_PHRASE_S = 0.2

#: Wake phrases are about a second long; with `audio.send_wake_word` the call audio starts this much
#: before the estimated end of the phrase.
WAKE_PHRASE_S = 1.5


@dataclass(frozen=True)
class Trigger:
    """What starts a conversation. `t_audio` is the capture time the call's audio starts from: just
    before the estimated end of the wake phrase (or its start, with `audio.send_wake_word`), or the
    moment of the button press. `t_detected` is when the trigger happened, for timing the connection."""

    source: str  # "wake:<model>" or "button"
    t_audio: float
    t_detected: float
    score: float | None = None


def target_for(config: Config) -> Target:
    vl = config.voicelive
    return Target(
        endpoint=vl.endpoint,
        api_version=vl.api_version,
        model=vl.model,
        agent_name=vl.agent_name,
        agent_project_name=vl.agent_project_name,
        agent_version=vl.agent_version,
        ca_file=vl.ca_file,
    )


def call_options_for(config: Config) -> CallOptions:
    vl, net = config.voicelive, config.network
    return CallOptions(
        session=dict(vl.session),
        ice_servers=[
            {"urls": list(s.urls), "username": s.username, "credential": s.credential} for s in net.ice_servers
        ],
        ice_pin=("127.0.0.1",) if net.ice_loopback else None,
        connect_timeout_s=vl.connect_timeout_s,
        answer_timeout_s=vl.answer_timeout_s,
        data_channel_timeout_s=vl.data_channel_timeout_s,
        media_timeout_s=vl.media_timeout_s,
        send_request_id=vl.send_client_request_id,
    )


def setup_pin_factory(config: Config) -> None:
    """gpiozero keeps its pin factory in a class attribute; `mock` selects its mock pins (with PWM),
    so the demo and tests drive real gpiozero devices with no GPIO hardware."""
    if config.gpio.pin_factory == "mock":
        from gpiozero import Device
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        if not isinstance(Device.pin_factory, MockFactory):
            Device.pin_factory = MockFactory(pin_class=MockPWMPin)


class Agent:
    """The device: listens, converses, shows its state. One instance per process.

    Gestures (the button, or anything else that calls them): `press()` starts a conversation when
    idle, stops the assistant while it speaks, hangs up while it listens; `hold()` mutes or unmutes the
    microphone, and clears an authentication or configuration error so the next wake word tries again.
    """

    def __init__(
        self,
        config: Config,
        credentials: Credentials,
        *,
        on_pattern: Callable[[Pattern], None] | None = None,
        on_uplink_frame: Callable[[float | None, int], None] | None = None,
        on_playback_written: Callable[[float, int], None] | None = None,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.capture = AlsaCapture(config.audio.capture)
        self.playback = AlsaPlayback(config.audio.playback, on_written=on_playback_written)
        self.preroll = PrerollBuffer(config.audio.preroll_s + WAKE_PHRASE_S)
        self.earcons = Earcons(config.audio.earcons)
        setup_pin_factory(config)
        self.leds = Leds(config.gpio, on_pattern)
        self.detector: WakeWordDetector | None = None
        self.stop_detector: WakeWordDetector | None = None
        self.state = State.IDLE
        self.muted = False
        #: An error retrying cannot fix ("auth", "config"): wake words are ignored until `hold()` or
        #: a configuration reload clears it.
        self.blocked: str | None = None
        self.error_kind: str | None = None
        self.results: list[ConversationResult] = []
        self.detections: list[tuple[str, float, float]] = []  # (model, score, capture time)
        self.conversation: Conversation | None = None
        self.button: Button | None = None
        self._on_uplink_frame = on_uplink_frame
        self._triggers: asyncio.Queue[Trigger] = asyncio.Queue(maxsize=1)
        self._tasks: list[asyncio.Task[None]] = []
        self._backoff = Backoff(config.conversation.backoff_initial_s, config.conversation.backoff_max_s)

    # ------------------------------------------------------------------------------------------
    # State and LEDs

    def set_state(self, state: State, error: str | None = None) -> None:
        if state is not self.state:
            log.info("state %s -> %s", self.state.value, state.value)
            if state is State.LISTENING and self.state is State.CONNECTING:
                self.earcons.play("connected", self.playback)
        self.state = state
        self.error_kind = error if state is State.ERROR else None
        self._show()

    def _show(self) -> None:
        error = self.error_kind or self.blocked
        if error is None and self.state is State.IDLE and self.capture.state == "error":
            error = "audio"
        self.leds.show(leds_for(self.state, muted=self.muted, error=error))

    # ------------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        """Load the models, open the devices, start listening. Raises ConfigError for a bad model."""
        limit_malloc_arenas()  # before the agent's threads start (see agent.memory)
        self.set_state(State.IDLE)
        self.detector = await asyncio.to_thread(WakeWordDetector, self.config.wake)
        wake = self.config.wake
        if wake.stop_word is not None:
            stop = WakeModelConfig(name=wake.stop_word, threshold=wake.stop_threshold, refractory_s=1.0)
            stop_cfg = dataclasses.replace(wake, models=(stop,), suppress_while_speaking=False)
            self.stop_detector = await asyncio.to_thread(WakeWordDetector, stop_cfg)
        await self.playback.start()
        await self.capture.start()
        if self.config.gpio.button.pin is not None:
            self.button = Button(
                self.config.gpio.button, asyncio.get_running_loop(), on_press=self.press, on_hold=self.hold
            )
        self._tasks = [
            asyncio.create_task(self._listen(), name="listener"),
            asyncio.create_task(self._watch_devices(), name="device watch"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.conversation is not None:
            await self.conversation.hang_up("agent stopping")
        await self.capture.stop()
        await self.playback.stop()
        for detector in (self.detector, self.stop_detector):
            if detector is not None:
                detector.close()
        if self.button is not None:
            self.button.close()
        self.leds.close()

    async def _listen(self) -> None:
        assert self.detector is not None
        detector = self.detector
        sub = self.capture.hub.subscribe("listen", max_blocks=100)
        async for block in sub:
            self.preroll.add(block)
            conv = self.conversation
            if self.stop_detector is not None and conv is not None and conv.assistant_audible() and not self.muted:
                if await self.stop_detector.process_async(block):
                    log.info("stop word: stopping the reply")
                    await conv.stop_reply("stop word")
                continue
            if self.state is not State.IDLE or self.muted or self.blocked:
                continue
            # The device's own sounds (an earcon, the end of a reply) must not wake it: while they play
            # the detector applies wake.suppress_while_speaking / wake.speaking_threshold.
            audible = self.playback.last_audible_t
            detector.assistant_speaking = audible is not None and block.t_end - audible < ECHO_GUARD_S
            for det in await detector.process_async(block):
                log.info("wake word %s (score %.2f)", det.model, det.score)
                self.detections.append((det.model, det.score, det.t_end))
                # the call's audio starts just before the estimated end of the wake phrase: at worst the
                # service hears the wake word's last syllable, never a clipped command
                start = det.t_phrase_end - PHRASE_END_MARGIN_S
                if self.config.audio.send_wake_word:
                    start -= WAKE_PHRASE_S
                self.trigger(Trigger(f"wake:{det.model}", start, det.t_end, det.score))

    async def _watch_devices(self) -> None:
        """Show a lost microphone on the LEDs (capture reopens it by itself)."""
        shown = self.capture.state
        while True:
            await asyncio.sleep(0.5)
            if self.capture.state != shown:
                shown = self.capture.state
                self._show()

    # ------------------------------------------------------------------------------------------
    # Gestures

    def trigger(self, trigger: Trigger) -> bool:
        """Start a conversation (from the wake word or a button); ignored unless idle and allowed."""
        if self.state is not State.IDLE or self.muted or self.blocked:
            return False
        try:
            self._triggers.put_nowait(trigger)
        except asyncio.QueueFull:
            return False
        self.set_state(State.WAKING)
        self.earcons.play("wake", self.playback)
        return True

    async def press(self) -> str:
        """A short press: what it did depends on the state (returns a word for logs and tests)."""
        conv = self.conversation
        if self.state is State.IDLE:
            if self.muted:
                return "ignored (muted)"
            if self.blocked:
                return f"ignored ({self.blocked} error: hold the button to retry)"
            # From the press on: audio since the press reaches the service.
            now = time.monotonic()
            return "start" if self.trigger(Trigger("button", now, now)) else "ignored"
        if conv is not None and self.state is State.SPEAKING:
            return "stop reply" if await conv.stop_reply("button") else "ignored"
        if conv is not None and self.state in (State.CONNECTING, State.LISTENING, State.USER_SPEAKING, State.THINKING):
            await conv.hang_up("hung up by the button")
            return "hang up"
        return "ignored"

    def hold(self) -> str:
        """A long press: clears a blocking error, or else mutes or unmutes the microphone."""
        if self.blocked:
            log.info("%s error cleared by the button: the next wake word tries again", self.blocked)
            self.blocked = None
            self._backoff.reset()
            self._show()
            return "retry"
        self.muted = not self.muted
        log.info("microphone %s", "muted" if self.muted else "unmuted")
        self._show()
        return "muted" if self.muted else "unmuted"

    def reload(self, config: Config, credentials: Credentials) -> None:
        """New configuration (SIGHUP): the next call uses it, and a blocking error is cleared."""
        self.config = config
        self.credentials = credentials
        if self.blocked:
            log.info("configuration reloaded: %s error cleared", self.blocked)
            self.blocked = None
        self._backoff.reset()
        self._show()

    # ------------------------------------------------------------------------------------------
    # Conversations

    async def run(self, max_conversations: int | None = None) -> list[ConversationResult]:
        """Serve triggers one conversation at a time; return after `max_conversations` (None: forever)."""
        while max_conversations is None or len(self.results) < max_conversations:
            trigger = await self._triggers.get()
            try:
                result = await self._converse(trigger)
            finally:
                if self.state is not State.IDLE:
                    self.set_state(State.IDLE)  # whatever happened, never stuck out of idle
            self.results.append(result)
        return self.results

    async def _converse(self, trigger: Trigger) -> ConversationResult:
        cfg = self.config
        t_from = trigger.t_audio
        period = cfg.audio.capture.period_ms / 1000
        # Snapshot and subscription in one loop step: no block can fall between them.
        backlog = self.preroll.since(t_from)
        live = self.capture.hub.subscribe("call", max_blocks=int((cfg.audio.preroll_s + 10) / period))
        wake = trigger.score is not None and not cfg.audio.send_wake_word
        # a pause counts if it begins within PAUSE_AFTER_PHRASE_S of the estimated phrase end
        pause_before = trigger.t_audio + PHRASE_END_MARGIN_S + PAUSE_AFTER_PHRASE_S if wake else None
        audio = CallAudio(backlog, live, pause_before=pause_before)
        self.conversation = Conversation(
            target_for(cfg),
            self.credentials,
            call_options_for(cfg),
            cfg.conversation,
            self.playback,
            self.set_state,
            self._on_uplink_frame,
            muted=lambda: self.muted,
        )
        try:
            result = await self.conversation.run(trigger.source, trigger.t_detected, audio, audio.preroll_s)
        finally:
            self.capture.hub.unsubscribe(live)
            self.conversation = None
        log.info(
            "conversation over: %s (%d responses%s)",
            result.end_reason,
            len(result.responses),
            f", {result.error_kind}: {result.error}" if result.error else "",
        )
        if result.error_kind is not None and not result.ok:
            await self._after_error(result.error_kind)
        else:
            self._backoff.reset()
            if result.responses:
                self.earcons.play("goodbye", self.playback)
        assert self.detector is not None
        await asyncio.get_running_loop().run_in_executor(None, self.detector.reset)
        self.set_state(State.IDLE)
        return result

    async def _after_error(self, kind: str) -> None:
        """Show the error. Errors retrying cannot fix (auth, config) block wake words until the button is
        held or the configuration is reloaded; others wait out a backoff with jitter and a cap."""
        self.earcons.play("error", self.playback)
        if kind in ("auth", "config"):
            self.blocked = kind
            log.error("not retrying: fix the %s problem above, then reload (SIGHUP) or hold the button", kind)
            self.set_state(State.ERROR, error=kind)
            return
        self.set_state(State.ERROR, error=kind if kind in ("network", "audio") else "network")
        await asyncio.sleep(self._backoff.next_delay())


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
            who = f"{config.device.name}: " if config.device.name else ""
            log.info("%slistening for %s", who, names)
            notifier.ready(f"{who}listening for {names}")
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
