"""The device: its microphone, speaker, LEDs and button, the wake word listener, and conversations.

Capture runs all the time. Every block goes into the pre-roll ring and, while the device accepts a
trigger, to the wake word detector (agent.wake.listener). A trigger starts a conversation whose microphone
audio begins at the end of the wake word, taken from the ring, so nothing said right after the wake word
is lost while the call connects. However a conversation ends, the device goes back to idle; after a
failure agent.retry decides whether to try again and when.

The device's state has one owner (agent.state); the LEDs, the earcons and the observer follow its
snapshots.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque

from .audio.capture import AlsaCapture
from .audio.earcons import Earcons
from .audio.echo import make_echo
from .audio.playback import AlsaPlayback
from .audio.preroll import CallAudio, PrerollBuffer
from .backoff import Backoff
from .button import Button
from .call_config import call_options_for, target_for
from .config import Config, WakeModelConfig
from .conversation import Conversation, ConversationResult
from .gpio import setup_pin_factory
from .journal import call_context
from .leds import Leds, pattern_for
from .memory import limit_malloc_arenas
from .metrics import Publisher
from .observe import Observer
from .retry import RetryPolicy
from .state import ErrorKind, Input, PressAction, Snapshot, State, StateOwner, press_action
from .tools.kit import DeviceTools
from .voicelive.auth import Credentials
from .voicelive.call import PreparedOffer, prepare_offer
from .wake.listener import WAKE_PHRASE_S, Detection, Trigger, WakeListener
from .wake.wakeword import WakeWordDetector

log = logging.getLogger(__name__)

#: Conversation results kept for the demo, the benchmarks and tests (a ring: the device runs for months).
RESULTS_KEPT = 32


class Agent:
    """One instance per process. Gestures (the button, or anything else that calls them): `press()`
    starts a conversation when idle, stops the assistant while it speaks, hangs up while it listens;
    `hold()` clears an error that blocks the wake word, or else mutes or unmutes the microphone."""

    def __init__(self, config: Config, credentials: Credentials, observer: Observer | None = None) -> None:
        self.config = config
        self.credentials = credentials
        self.observer = observer or Observer()
        self.states = StateOwner()
        self.capture = AlsaCapture(config.audio.capture, on_state=self._on_capture_state)
        self.playback = AlsaPlayback(config.audio.playback, on_written=self.observer.playback_written)
        if self.capture.period_s <= self.playback.period_s:  # a read at least every playback period
            self.capture.duplex = self.playback  # in a call, one thread wake per period for both devices
        echo = make_echo(config.audio.echo, config.audio.capture.rate)
        if echo is not None:  # the speaker tells the canceller what it played; the microphone asks it
            self.playback.reference, self.capture.echo = echo
        self.preroll = PrerollBuffer(config.audio.preroll_s + WAKE_PHRASE_S)
        self.earcons = Earcons(config.audio.earcons)
        setup_pin_factory(config.gpio.pin_factory)
        #: The tools the model may call (agent.tools), and the timers' ringing.
        self.tools = DeviceTools(
            config, self.playback, self.earcons, self.states,  # type: ignore[arg-type]
            end_conversation=self._end_after_reply, mute=lambda: self.states.apply(Input.MUTE, cause="the model"),
        )  # fmt: skip
        self.leds = Leds(config.gpio, self.observer.pattern_shown)
        self.states.subscribe(self._on_state)
        self.detector: WakeWordDetector | None = None
        self.stop_detector: WakeWordDetector | None = None
        self.listener: WakeListener | None = None
        self.results: deque[ConversationResult] = deque(maxlen=RESULTS_KEPT)
        self.conversations_done = 0
        self.conversation: Conversation | None = None
        self.button: Button | None = None
        self._triggers: asyncio.Queue[Trigger] = asyncio.Queue(maxsize=1)
        #: The next call's peer connection and offer, made while idle (agent.voicelive.call.PreparedOffer).
        self._next_offer: asyncio.Task[PreparedOffer] | None = None
        #: The last call ended on a network error: the offer prepared after it is not trusted.
        self._offer_suspect = False
        self.offers_remade = 0
        self.publisher: Publisher | None = None  # metrics and status files (agent.metrics), when configured
        conv = config.conversation
        self.retry = RetryPolicy(Backoff(conv.backoff_initial_s, conv.backoff_max_s))

    # ------------------------------------------------------------------------------------------
    # What the state owner knows, for callers that only look

    @property
    def state(self) -> State:
        return self.states.state

    @property
    def snapshot(self) -> Snapshot:
        return self.states.snapshot

    @property
    def muted(self) -> bool:
        return self.states.snapshot.muted

    @property
    def blocked(self) -> str | None:
        kind = self.states.snapshot.blocked
        return kind.value if kind is not None else None

    @property
    def detections(self) -> deque[Detection]:
        return self.listener.detections if self.listener is not None else deque()

    def _on_state(self, old: Snapshot, new: Snapshot) -> None:
        self.leds.show(pattern_for(new))
        if old.state is State.CONNECTING and new.state is State.LISTENING:
            self.earcons.play("connected", self.playback)
        self.observer.state_changed(old, new)

    def _on_capture_state(self, state: str) -> None:
        if state == "error":
            self.states.apply(Input.MIC_LOST, cause="the microphone failed")
        elif state == "running":
            self.states.apply(Input.MIC_BACK, cause="the microphone works")

    # ------------------------------------------------------------------------------------------
    # Life cycle

    async def start(self) -> None:
        """Load the models, open the devices, start listening. Raises ConfigError for a bad model."""
        limit_malloc_arenas()  # before the agent's threads start (see agent.memory)
        self.leds.show(pattern_for(self.states.snapshot))
        if self.capture.echo is not None:
            await asyncio.to_thread(self.capture.echo.load)
        wake = self.config.wake
        self.detector = await asyncio.to_thread(WakeWordDetector, wake)
        if wake.stop_word is not None:
            stop = WakeModelConfig(name=wake.stop_word, threshold=wake.stop_threshold, refractory_s=1.0)
            stop_cfg = dataclasses.replace(wake, models=(stop,), suppress_while_speaking=False)
            self.stop_detector = await asyncio.to_thread(WakeWordDetector, stop_cfg)
        self.listener = WakeListener(
            self.detector,
            self.states,
            asyncio.get_running_loop(),
            on_trigger=self.trigger,
            last_audible_t=lambda: self.playback.last_audible_t,
            send_wake_word=self.config.audio.send_wake_word,
            stop_detector=self.stop_detector,
            reply_audible=lambda: (conv := self.conversation) is not None and conv.audible,
            stop_reply=self._stop_reply,
        )
        self.listener.start()
        self.tools.start()
        # the capture thread feeds the pre-roll ring and the wake word thread directly
        self.capture.taps[:] = [self.preroll.add, self.listener.tap]
        await self.playback.start()
        await self.capture.start()
        if self.config.gpio.button.pin is not None:
            self.button = Button(
                self.config.gpio.button, asyncio.get_running_loop(), on_press=self.press, on_hold=self.hold
            )
        self._prepare_next_offer()
        self.publisher = Publisher.for_agent(self)
        if self.publisher is not None:
            self.publisher.start()

    def _prepare_next_offer(self) -> None:
        """Make the next call's peer connection and offer now, while idle: nothing reaches the service,
        and the wake word no longer waits for it."""
        options = call_options_for(self.config, self.tools.declarations())
        self._next_offer = asyncio.create_task(prepare_offer(options), name="next offer")

    async def settled(self) -> None:
        """Wait for the work that follows a conversation (the next call's offer, which holds a few UDP
        sockets) to be done: for measurements that compare the idle device with itself."""
        task = self._next_offer
        if task is not None:
            await asyncio.wait({task})

    async def _take_offer(self) -> PreparedOffer | None:
        task, self._next_offer = self._next_offer, None
        if task is None:
            return None
        try:
            offer = await task
        except Exception as exc:  # the call makes its own then
            log.warning("could not prepare the next call's offer: %r", exc)
            return None
        if self._offer_suspect:
            # Made while the network was failing: its candidates may be missing or gone (no server-reflexive
            # one, an address the link lost). The call gathers afresh; a few ms on the host's own addresses.
            self._offer_suspect = False
            self.offers_remade += 1
            log.info("the prepared offer dates from a network failure: making the call's offer afresh")
            await offer.close()
            return None
        return offer

    async def _drop_offer(self) -> None:
        offer = await self._take_offer()
        if offer is not None:
            await offer.close()

    async def stop(self) -> None:
        await self.tools.stop()
        await self._drop_offer()
        if self.conversation is not None:
            await self.conversation.hang_up("agent stopping")
        if self.publisher is not None:
            await self.publisher.stop()
        await self.capture.stop()
        if self.listener is not None:
            await self.listener.stop()
        await self.playback.stop()
        for detector in (self.detector, self.stop_detector):
            if detector is not None:
                detector.close()
        if self.button is not None:
            self.button.close()
        self.leds.close()

    # ------------------------------------------------------------------------------------------
    # Gestures

    def trigger(self, trigger: Trigger) -> bool:
        """Start a conversation (from the wake word or a button); ignored unless the device accepts one."""
        if not self.states.snapshot.accepts_trigger or self._triggers.full():
            return False
        self._triggers.put_nowait(trigger)
        self.states.apply(Input.WAKE, cause=trigger.source)
        self.earcons.play("wake", self.playback)
        return True

    async def _stop_reply(self, why: str) -> bool:
        if self.tools.silence():  # the stop word silences a ringing timer first
            return True
        conv = self.conversation
        return conv is not None and await conv.stop_reply(why)

    def _end_after_reply(self) -> None:
        conv = self.conversation
        if conv is not None:
            conv.end_after_reply()

    async def press(self) -> str:
        """A short press: what it did depends on the state (returns a word for logs and tests). A ringing
        timer is silenced first, and that is all the press does."""
        if self.tools.silence():
            return "silenced the timer"
        snap = self.states.snapshot
        conv = self.conversation
        action = press_action(snap, conv is not None and conv.assistant_audible())
        if action is PressAction.START:
            now = time.monotonic()  # from the press on: audio since the press reaches the service
            return "start" if self.trigger(Trigger("button", now, now)) else "ignored"
        if action is PressAction.STOP_REPLY:
            return "stop reply" if await self._stop_reply("button") else "ignored"
        if action is PressAction.HANG_UP and conv is not None:
            await conv.hang_up("hung up by the button")
            return "hang up"
        if snap.state is State.IDLE and snap.muted:
            return "ignored (muted)"
        if snap.state is State.IDLE and snap.blocked is not None:
            return f"ignored ({snap.blocked.value} error: hold the button to retry)"
        return "ignored"

    def hold(self) -> str:
        """A long press: clears a blocking error, or else mutes or unmutes the microphone."""
        snap = self.states.snapshot
        if snap.blocked is not None:
            log.info("%s error cleared by the button: the next wake word tries again", snap.blocked.value)
            self.retry.reset()
            self.states.apply(Input.UNBLOCK, cause="button held")
            return "retry"
        muted = not snap.muted
        log.info("microphone %s", "muted" if muted else "unmuted")
        self.states.apply(Input.MUTE if muted else Input.UNMUTE, cause="button held")
        return "muted" if muted else "unmuted"

    def reload(self, config: Config, credentials: Credentials) -> None:
        """New configuration (SIGHUP): the next call uses it, and a blocking error is cleared."""
        self.config = config
        self.credentials = credentials
        if self.states.snapshot.blocked is not None:
            log.info("configuration reloaded: %s error cleared", self.states.snapshot.blocked.value)
        self.retry.reset()
        self.states.apply(Input.UNBLOCK, cause="configuration reloaded")

    # ------------------------------------------------------------------------------------------
    # Conversations

    async def run(self, max_conversations: int | None = None) -> list[ConversationResult]:
        """Serve triggers one conversation at a time; return after `max_conversations` (None: forever)
        with the results kept."""
        done = 0
        while max_conversations is None or done < max_conversations:
            trigger = await self._triggers.get()
            try:
                result = await self._converse(trigger)
            finally:
                # whatever happened, never stuck out of idle
                self.states.apply(Input.HUNG_UP, cause="conversation over")
                self.states.apply(Input.RECOVERED, cause="conversation over")
            self.results.append(result)
            self.conversations_done += 1
            self._offer_suspect = result.error_kind == "network"
            self._prepare_next_offer()
            done += 1
        return list(self.results)

    async def _converse(self, trigger: Trigger) -> ConversationResult:
        cfg = self.config
        assert self.listener is not None and self.detector is not None
        period = cfg.audio.capture.period_ms / 1000
        # The pre-roll and the live subscription under the capture thread's lock: no block can fall
        # between them, and none is in both.
        with self.capture.tap_lock:
            backlog = self.preroll.since(trigger.t_audio)
            live = self.capture.hub.subscribe(
                "call", max_blocks=int((cfg.audio.preroll_s + 10) / period), after_seq=self.preroll.last_seq
            )
        audio = CallAudio(backlog, live, pause_before=self.listener.pause_before(trigger))
        self.conversation = Conversation(
            target_for(cfg),
            self.credentials,
            call_options_for(cfg, self.tools.declarations()),
            cfg.conversation,
            self.playback,
            self.states,
            self.observer,
            prepared=await self._take_offer(),
            tools=self.tools.box if len(self.tools.box) else None,
        )
        conv = self.conversation
        with call_context(lambda: conv.call):  # log lines carry the call's ids (agent.journal)
            try:
                result = await conv.run(
                    trigger.source, trigger.t_detected, audio, audio.preroll_s, mic_rate=cfg.audio.capture.rate
                )
            finally:
                self.capture.hub.unsubscribe(live)
                self.conversation = None
            log.info(
                "conversation over: %s (%d responses%s)",
                result.end_reason,
                len(result.responses),
                f", {result.error_kind}: {result.error}" if result.error else "",
            )
        # Forget the wake word's audio before the state says idle: the detector was not fed during the
        # call, its buffer still holds the phrase that started it, and fed again un-reset it would fire
        # on that phrase once more and start a call nobody asked for.
        self.listener.reset()
        self.states.apply(Input.HUNG_UP, cause=result.end_reason)
        if result.error_kind is not None and not result.ok:
            await self._after_error(result)
        else:
            self.retry.succeeded()
            if result.responses:
                self.earcons.play("goodbye", self.playback)
        return result

    async def _after_error(self, result: ConversationResult) -> None:
        """Show the error; one retrying cannot fix blocks the wake word, others wait out a backoff."""
        self.earcons.play("error", self.playback)
        decision = self.retry.after(result.exception)
        self.states.apply(Input.FAILED, error=decision.kind, cause=result.error or result.end_reason)
        if decision.block:
            self.states.apply(Input.BLOCK, error=decision.kind, cause=result.error or result.end_reason)
            log.error(
                "not retrying: fix the %s problem above, then reload (SIGHUP) or hold the button",
                decision.kind.value,
            )
            return
        await asyncio.sleep(decision.delay_s)
        self.states.apply(Input.RECOVERED, cause="backoff over")


__all__ = ["Agent", "ErrorKind", "Trigger"]
