"""The device's state: one owner, one transition table, a stream of snapshots.

Every change of what the device is doing is one call, `StateOwner.apply(Input.X)`. The table below is
the only place that decides whether it may happen: an input that does not apply to the current state
(a `speech_started` that arrives after the call hung up, a wake word while muted) changes nothing, so
the order in which events reach the owner can never leave the device in a state the table does not
allow. Outputs (LEDs, earcons, systemd's STATUS line, the demo's and the benchmarks' observers, tests)
subscribe to the snapshots; none of them holds state of its own.

A snapshot is the conversation state plus three facts that outlast it: the microphone is muted, an
error that retrying cannot fix blocks the wake word (until a hold of the button or a reload), and the
microphone device is (or is not) delivering audio.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)


class State(enum.Enum):
    IDLE = "idle"
    WAKING = "waking"
    CONNECTING = "connecting"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    ERROR = "error"


class ErrorKind(enum.Enum):
    """What went wrong, as far as the user and the retry policy care."""

    NETWORK = "network"
    AUTH = "auth"
    CONFIG = "config"
    AUDIO = "audio"

    @property
    def blocking(self) -> bool:
        """Retrying cannot fix it: wait for a hold of the button or a configuration reload."""
        return self in (ErrorKind.AUTH, ErrorKind.CONFIG)


class Input(enum.Enum):
    """What happened. Each input is a row of the transition table (or a change of one flag)."""

    WAKE = "wake"  # a wake word or a button press was accepted
    DIAL = "dial"  # the call is being set up
    CONNECTED = "connected"  # the call is up
    USER_SPEAKING = "user_speaking"  # the service heard the user start
    USER_DONE = "user_done"  # ... and stop
    REPLY_PENDING = "reply_pending"  # a response is being generated
    ASSISTANT_SPEAKING = "assistant_speaking"  # the reply is audible
    ASSISTANT_DONE = "assistant_done"  # the reply's last sample played (or it was stopped)
    HUNG_UP = "hung_up"  # the conversation is over
    FAILED = "failed"  # with an ErrorKind
    RECOVERED = "recovered"  # the error's backoff passed
    MUTE = "mute"
    UNMUTE = "unmute"
    BLOCK = "block"  # with a blocking ErrorKind
    UNBLOCK = "unblock"
    MIC_LOST = "mic_lost"
    MIC_BACK = "mic_back"
    RING = "ring"  # a timer is due
    SILENCE = "silence"  # ... and was silenced (or gave up ringing)


S = State
IN_CALL = frozenset({S.CONNECTING, S.LISTENING, S.USER_SPEAKING, S.THINKING, S.SPEAKING})

#: input -> {from state: to state}. An input not listed for the current state is ignored.
TRANSITIONS: dict[Input, dict[State, State]] = {
    Input.WAKE: {S.IDLE: S.WAKING},
    Input.DIAL: {S.WAKING: S.CONNECTING},
    Input.CONNECTED: {S.CONNECTING: S.LISTENING},
    Input.USER_SPEAKING: {S.LISTENING: S.USER_SPEAKING, S.THINKING: S.USER_SPEAKING, S.SPEAKING: S.USER_SPEAKING},
    Input.USER_DONE: {S.USER_SPEAKING: S.THINKING},
    Input.REPLY_PENDING: {S.LISTENING: S.THINKING},
    # while the user speaks over a reply (no server-side interruption) the LEDs keep showing the user
    Input.ASSISTANT_SPEAKING: {S.LISTENING: S.SPEAKING, S.THINKING: S.SPEAKING},
    Input.ASSISTANT_DONE: {S.SPEAKING: S.LISTENING, S.THINKING: S.LISTENING},
    Input.HUNG_UP: {s: S.IDLE for s in (S.WAKING, *IN_CALL)},
    Input.FAILED: {s: S.ERROR for s in (S.IDLE, S.WAKING, *IN_CALL)},
    Input.RECOVERED: {S.ERROR: S.IDLE},
}

FLAGS = {
    Input.MUTE, Input.UNMUTE, Input.BLOCK, Input.UNBLOCK, Input.MIC_LOST, Input.MIC_BACK, Input.RING, Input.SILENCE,
}  # fmt: skip


@dataclass(frozen=True)
class Snapshot:
    """The device's state at one moment. Immutable: subscribers may keep it."""

    state: State = State.IDLE
    muted: bool = False
    #: An error retrying cannot fix: wake words and presses are refused until UNBLOCK.
    blocked: ErrorKind | None = None
    #: The error being shown while in State.ERROR.
    error: ErrorKind | None = None
    mic_ok: bool = True
    #: A timer is ringing (agent.tools.timers), in or out of a call.
    ringing: bool = False
    #: Why the last change happened (for logs and `voice-agent status`).
    cause: str = ""
    #: Increases by one with every change.
    seq: int = 0
    t: float = 0.0

    @property
    def shown_error(self) -> ErrorKind | None:
        """The error the LEDs show: the current one, a blocking one, or a lost microphone while idle."""
        if self.error is not None:
            return self.error
        if self.blocked is not None:
            return self.blocked
        if not self.mic_ok and self.state is State.IDLE:
            return ErrorKind.AUDIO
        return None

    @property
    def accepts_trigger(self) -> bool:
        """A wake word or a press may start a conversation now."""
        return self.state is State.IDLE and not self.muted and self.blocked is None

    @property
    def in_call(self) -> bool:
        return self.state in IN_CALL


def next_snapshot(snap: Snapshot, inp: Input, error: ErrorKind | None = None) -> Snapshot:
    """The snapshot after `inp`: the pure transition function (`snap` itself when nothing changes)."""
    if inp in FLAGS:
        changes: dict[str, object] = {
            Input.MUTE: {"muted": True},
            Input.UNMUTE: {"muted": False},
            Input.BLOCK: {"blocked": error},
            Input.UNBLOCK: {"blocked": None},
            Input.MIC_LOST: {"mic_ok": False},
            Input.MIC_BACK: {"mic_ok": True},
            Input.RING: {"ringing": True},
            Input.SILENCE: {"ringing": False},
        }[inp]
        if inp is Input.BLOCK and (error is None or not error.blocking):
            raise ValueError(f"BLOCK needs a blocking error kind, not {error}")
        new = replace(snap, **changes)  # type: ignore[arg-type]
        if inp is Input.UNBLOCK and snap.state is State.ERROR and snap.error is not None and snap.error.blocking:
            new = replace(new, state=State.IDLE, error=None)
        return snap if new == snap else new
    target = TRANSITIONS[inp].get(snap.state)
    if target is None:
        return snap
    if inp is Input.FAILED and error is None:
        raise ValueError("FAILED needs an error kind")
    new = replace(snap, state=target, error=error if target is State.ERROR else None)
    return snap if new == snap else new


Subscriber = Callable[[Snapshot, Snapshot], None]


class StateOwner:
    """Holds the current snapshot and tells subscribers about every change, in order.

    Lives on the event loop: `apply` is called from the loop only (device threads hand their news
    over with `loop.call_soon_threadsafe`)."""

    def __init__(self) -> None:
        self._snapshot = Snapshot(t=time.monotonic())
        self._subscribers: list[Subscriber] = []

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def state(self) -> State:
        return self._snapshot.state

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(old, new)` after every change; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber) if subscriber in self._subscribers else None

    def apply(self, inp: Input, error: ErrorKind | None = None, cause: str = "") -> bool:
        """Apply one input; True if the snapshot changed."""
        old = self._snapshot
        new = next_snapshot(old, inp, error)
        if new is old:
            log.debug("%s ignored in %s", inp.value, old.state.value)
            return False
        new = replace(new, cause=cause or inp.value, seq=old.seq + 1, t=time.monotonic())
        self._snapshot = new
        if new.state is not old.state:
            log.info("state %s -> %s (%s)", old.state.value, new.state.value, new.cause)
        for subscriber in list(self._subscribers):
            try:
                subscriber(old, new)
            except Exception:  # an output must never break the device's state
                log.exception("state subscriber %r failed", subscriber)
        return True


class PressAction(enum.Enum):
    """What a short press of the button does, by state."""

    START = "start"
    STOP_REPLY = "stop reply"
    HANG_UP = "hang up"
    IGNORE = "ignored"


def press_action(snap: Snapshot, assistant_audible: bool) -> PressAction:
    """Idle: start a conversation; the assistant talking: stop the reply; otherwise in a call: hang up."""
    if snap.state is State.IDLE:
        return PressAction.START if snap.accepts_trigger else PressAction.IGNORE
    if snap.state is State.SPEAKING or (snap.in_call and assistant_audible):
        return PressAction.STOP_REPLY
    if snap.in_call:
        return PressAction.HANG_UP
    return PressAction.IGNORE
