"""The device's state owner (agent.state): the transition table, the flags, the subscribers."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from agent.state import (
    IN_CALL,
    TRANSITIONS,
    ErrorKind,
    Input,
    PressAction,
    Snapshot,
    State,
    StateOwner,
    next_snapshot,
    press_action,
)

REPO = Path(__file__).resolve().parent.parent


def test_a_whole_conversation() -> None:
    owner = StateOwner()
    seen: list[tuple[State, State]] = []
    owner.subscribe(lambda old, new: seen.append((old.state, new.state)))
    for inp in (Input.WAKE, Input.DIAL, Input.CONNECTED, Input.USER_SPEAKING, Input.USER_DONE,
                Input.REPLY_PENDING, Input.ASSISTANT_SPEAKING, Input.ASSISTANT_DONE, Input.HUNG_UP):  # fmt: skip
        owner.apply(inp)  # REPLY_PENDING changes nothing here: the device is already thinking
    assert [new for _, new in seen] == [
        State.WAKING, State.CONNECTING, State.LISTENING, State.USER_SPEAKING, State.THINKING,
        State.SPEAKING, State.LISTENING, State.IDLE,
    ]  # fmt: skip
    assert owner.snapshot.seq == 8


@pytest.mark.parametrize(("inp", "state"), list(itertools.product(Input, State)))
def test_every_input_in_every_state_is_either_in_the_table_or_ignored(inp: Input, state: State) -> None:
    snap = Snapshot(state=state)
    error = ErrorKind.AUTH if inp in (Input.FAILED, Input.BLOCK) else None
    new = next_snapshot(snap, inp, error)
    if inp in TRANSITIONS:
        expected = TRANSITIONS[inp].get(state, state)
        assert new.state is expected
        if expected is state:
            assert new is snap  # ignored: nothing changes, no subscriber is told
    else:
        assert new.state in (state, State.IDLE)  # flags change no state (UNBLOCK may leave ERROR)


def test_hang_up_and_failure_from_every_call_state() -> None:
    for state in IN_CALL | {State.WAKING}:
        assert next_snapshot(Snapshot(state=state), Input.HUNG_UP).state is State.IDLE
        failed = next_snapshot(Snapshot(state=state), Input.FAILED, ErrorKind.NETWORK)
        assert failed.state is State.ERROR and failed.error is ErrorKind.NETWORK
    assert next_snapshot(Snapshot(state=State.ERROR), Input.RECOVERED).state is State.IDLE


def test_late_events_after_the_hang_up_change_nothing() -> None:
    owner = StateOwner()
    for inp in (Input.WAKE, Input.DIAL, Input.CONNECTED, Input.HUNG_UP):
        owner.apply(inp)
    for late in (Input.USER_SPEAKING, Input.USER_DONE, Input.REPLY_PENDING, Input.ASSISTANT_SPEAKING,
                 Input.ASSISTANT_DONE, Input.CONNECTED):  # fmt: skip
        assert not owner.apply(late)
    assert owner.state is State.IDLE


def test_errors_need_a_kind_and_blocks_a_blocking_one() -> None:
    with pytest.raises(ValueError, match="error kind"):
        next_snapshot(Snapshot(state=State.LISTENING), Input.FAILED)
    with pytest.raises(ValueError, match="blocking"):
        next_snapshot(Snapshot(), Input.BLOCK, ErrorKind.NETWORK)


def test_flags_and_what_they_allow() -> None:
    snap = Snapshot()
    assert snap.accepts_trigger
    muted = next_snapshot(snap, Input.MUTE)
    assert muted.muted and not muted.accepts_trigger and muted.state is State.IDLE
    blocked = next_snapshot(Snapshot(state=State.ERROR, error=ErrorKind.AUTH), Input.BLOCK, ErrorKind.AUTH)
    assert not blocked.accepts_trigger and blocked.shown_error is ErrorKind.AUTH
    cleared = next_snapshot(blocked, Input.UNBLOCK)
    assert cleared.state is State.IDLE and cleared.blocked is None and cleared.accepts_trigger
    lost = next_snapshot(snap, Input.MIC_LOST)
    assert lost.shown_error is ErrorKind.AUDIO and lost.accepts_trigger  # capture reopens by itself
    in_call = Snapshot(state=State.LISTENING, mic_ok=False)
    assert in_call.shown_error is None  # a call in progress shows the call
    assert next_snapshot(lost, Input.MIC_BACK).shown_error is None


def test_a_failing_subscriber_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    owner = StateOwner()
    got: list[State] = []

    def broken(_old: Snapshot, _new: Snapshot) -> None:
        raise RuntimeError("boom")

    owner.subscribe(broken)
    unsubscribe = owner.subscribe(lambda _o, new: got.append(new.state))
    owner.apply(Input.WAKE)
    assert got == [State.WAKING] and "boom" in caplog.text
    unsubscribe()
    owner.apply(Input.DIAL)
    assert got == [State.WAKING]


@pytest.mark.parametrize(
    ("snap", "audible", "action"),
    [
        (Snapshot(), False, PressAction.START),
        (Snapshot(muted=True), False, PressAction.IGNORE),
        (Snapshot(blocked=ErrorKind.CONFIG), False, PressAction.IGNORE),
        (Snapshot(state=State.SPEAKING), True, PressAction.STOP_REPLY),
        (Snapshot(state=State.USER_SPEAKING), True, PressAction.STOP_REPLY),  # talking over the reply
        (Snapshot(state=State.LISTENING), False, PressAction.HANG_UP),
        (Snapshot(state=State.THINKING), False, PressAction.HANG_UP),
        (Snapshot(state=State.CONNECTING), False, PressAction.HANG_UP),
        (Snapshot(state=State.WAKING), False, PressAction.IGNORE),
        (Snapshot(state=State.ERROR, error=ErrorKind.NETWORK), False, PressAction.IGNORE),
    ],
)
def test_what_a_press_does(snap: Snapshot, audible: bool, action: PressAction) -> None:
    assert press_action(snap, audible) is action


def test_only_the_state_module_assigns_a_state() -> None:
    """The transition table is the only place that decides the next state: no other module of the
    agent assigns one (reading, comparing and matching are fine)."""
    assign = re.compile(r"(?<![=!<>])=\s*State\.[A-Z_]+|state\s*=\s*State\.")
    offenders = []
    for path in (REPO / "agent").rglob("*.py"):
        if path.name == "state.py" and path.parent.name == "agent":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if assign.search(line) and "is State." not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
