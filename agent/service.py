"""The agent: capture, wake word, conversations, playback and LEDs wired together.

Capture runs all the time. Every block goes into the pre-roll ring and, while the agent is idle, to the
wake word detector. A detection starts a conversation whose microphone audio begins at the end of the
wake word (or at its start, with `audio.send_wake_word`), taken from the ring, so nothing said right
after the wake word is lost while the call connects. When the conversation ends, however it ends, the
agent resets the detector and goes back to idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from .audio.alsa import Backoff
from .audio.capture import AlsaCapture
from .audio.playback import AlsaPlayback
from .audio.preroll import CallAudio, PrerollBuffer
from .config import Config
from .conversation import Conversation, ConversationResult
from .leds import Leds, Pattern, State, leds_for
from .voicelive.auth import Credentials
from .voicelive.call import CallOptions
from .voicelive.control import Target
from .wakeword import WakeWordDetector

log = logging.getLogger(__name__)

#: Wake phrases are about a second long; with `send_wake_word` the call audio starts this much before
#: the end of the detection.
WAKE_PHRASE_S = 1.5


@dataclass(frozen=True)
class Trigger:
    source: str  # "wake:<model>" or "button"
    t_end: float  # capture time the call audio starts from (end of the wake word, or the press)
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
        setup_pin_factory(config)
        self.leds = Leds(config.gpio, on_pattern)
        self.detector: WakeWordDetector | None = None
        self.state = State.IDLE
        self.results: list[ConversationResult] = []
        self.detections: list[tuple[str, float, float]] = []  # (model, score, capture time)
        self.conversation: Conversation | None = None
        self._on_uplink_frame = on_uplink_frame
        self._triggers: asyncio.Queue[Trigger] = asyncio.Queue(maxsize=1)
        self._listener: asyncio.Task[None] | None = None
        self._backoff = Backoff(config.conversation.backoff_initial_s, config.conversation.backoff_max_s)

    def set_state(self, state: State, error: str | None = None) -> None:
        if state is not self.state:
            log.info("state %s -> %s", self.state.value, state.value)
        self.state = state
        self.leds.show(leds_for(state, error=error))  # type: ignore[arg-type]

    async def start(self) -> None:
        """Load the models, open the devices, start listening. Raises ConfigError for a bad model."""
        self.set_state(State.IDLE)
        self.detector = await asyncio.to_thread(WakeWordDetector, self.config.wake)
        await self.playback.start()
        await self.capture.start()
        self._listener = asyncio.create_task(self._listen(), name="listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self.conversation is not None and self.conversation.call is not None:
            await self.conversation.call.hangup("agent stopping")
        await self.capture.stop()
        await self.playback.stop()
        if self.detector is not None:
            self.detector.close()
        self.leds.close()

    async def _listen(self) -> None:
        assert self.detector is not None
        detector = self.detector
        sub = self.capture.hub.subscribe("listen", max_blocks=100)
        async for block in sub:
            self.preroll.add(block)
            if self.state is not State.IDLE:
                continue
            for det in await detector.process_async(block):
                log.info("wake word %s (score %.2f)", det.model, det.score)
                self.detections.append((det.model, det.score, det.t_end))
                self.trigger(Trigger(f"wake:{det.model}", det.t_end, det.score))

    def trigger(self, trigger: Trigger) -> bool:
        """Start a conversation (from the wake word or a button); ignored while one is starting."""
        if self.state is not State.IDLE:
            return False
        try:
            self._triggers.put_nowait(trigger)
        except asyncio.QueueFull:
            return False
        self.set_state(State.WAKING)
        return True

    async def run(self, max_conversations: int | None = None) -> list[ConversationResult]:
        """Serve triggers one conversation at a time; return after `max_conversations` (None: forever)."""
        while max_conversations is None or len(self.results) < max_conversations:
            trigger = await self._triggers.get()
            result = await self._converse(trigger)
            self.results.append(result)
        return self.results

    async def _converse(self, trigger: Trigger) -> ConversationResult:
        cfg = self.config
        t_from = trigger.t_end - (WAKE_PHRASE_S if cfg.audio.send_wake_word else 0.0)
        period = cfg.audio.capture.period_ms / 1000
        # Snapshot and subscription in one loop step: no block can fall between them.
        backlog = self.preroll.since(t_from)
        live = self.capture.hub.subscribe("call", max_blocks=int((cfg.audio.preroll_s + 10) / period))
        audio = CallAudio(backlog, live)
        self.conversation = Conversation(
            target_for(cfg),
            self.credentials,
            call_options_for(cfg),
            cfg.conversation,
            self.playback,
            self.set_state,
            self._on_uplink_frame,
        )
        try:
            result = await self.conversation.run(trigger.source, trigger.t_end, audio, audio.preroll_s)
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
        assert self.detector is not None
        await asyncio.get_running_loop().run_in_executor(None, self.detector.reset)
        self.set_state(State.IDLE)
        return result

    async def _after_error(self, kind: str) -> None:
        """Show the error, and wait before the next attempt: exponential backoff with jitter and a cap.
        Errors retrying cannot fix (auth, config) wait the longest."""
        cfg = self.config.conversation
        self.set_state(State.ERROR, error=kind if kind in ("auth", "config", "network", "audio") else "network")
        if kind in ("auth", "config"):
            delay = cfg.backoff_max_s
            log.error("not retrying for %.0f s: fix the %s problem above", delay, kind)
        else:
            delay = self._backoff.next_delay()
        await asyncio.sleep(delay)


async def run_service(config: Config, credentials: Credentials) -> int:
    """Run until SIGTERM or SIGINT; hang up cleanly on the way out."""
    agent = Agent(config, credentials)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.start()
    log.info("listening for %s", ", ".join(agent.detector.names if agent.detector else []))
    runner = asyncio.create_task(agent.run())
    stopper = asyncio.create_task(stop.wait())
    t = time.monotonic()
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    runner.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await runner
    await agent.stop()
    log.info("stopped after %.0f s", time.monotonic() - t)
    return 0
