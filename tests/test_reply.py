"""The reply's timing, event by event, in every order the service may send them (agent.reply).

The tracker is pure bookkeeping with the time passed in, so each order is played here exactly: the
WebRTC order (`response.done` long before `output_audio_buffer.stopped`), the audio-first order
(`stopped` before `done`), a service that sends no output-buffer events, and one that sends no events
at all (no data channel). End-to-end runs of the same orders against the emulator are in
tests/test_reply_timing.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from agent.reply import ReplyLimits, ReplyTracker
from agent.voicelive import protocol

RID = "resp_1"


def ev(etype: str, response_id: str | None = RID, **data: object) -> protocol.ServerEvent:
    body: dict[str, object] = {"type": etype, **data}
    if etype.startswith("response."):
        body["response"] = {"id": response_id, "status": data.get("status", "completed")}
    elif response_id is not None:
        body["response_id"] = response_id
    parsed = protocol.EventParser().parse(__import__("json").dumps(body), "data")
    assert parsed is not None
    return parsed


CREATED, STARTED, DONE = "response.created", "output_audio_buffer.started", "response.done"
STOPPED, CLEARED = "output_audio_buffer.stopped", "output_audio_buffer.cleared"


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def frames(self, tracker: ReplyTracker, seconds: float, audible: bool = True) -> list[bool]:
        """Feed `seconds` of 20 ms frames; returns what the tracker said for each (True: play)."""
        out = []
        for _ in range(round(seconds / 0.02)):
            self.t += 0.02
            out.append(tracker.on_frame(audible, self.t))
        return out

    def wait(self, seconds: float) -> None:
        self.t += seconds


def sentences(clock: Clock, tracker: ReplyTracker, n: int = 3) -> Iterator[None]:
    """A reply of `n` sentences with 0.6 s pauses between them (digital silence still streams)."""
    for i in range(n):
        clock.frames(tracker, 1.0)
        yield
        if i < n - 1:
            clock.frames(tracker, 0.6, audible=False)


# -- the three orders ---------------------------------------------------------------------------


def test_webrtc_order_speaks_until_stopped_not_until_done() -> None:
    clock, tr = Clock(), ReplyTracker()
    tr.on_event(ev(CREATED), clock.t)
    tr.on_event(ev(STARTED), clock.t)
    clock.frames(tr, 0.5)
    tr.on_event(ev(DONE), clock.t)  # generation over 0.5 s in; the audio streams on
    for _ in sentences(clock, tr, 4):
        assert not tr.audio_over(clock.t) and not tr.settled
    clock.frames(tr, 3.0, audible=False)  # silence after the reply, no `stopped` yet: still streaming
    assert not tr.audio_over(clock.t)
    tr.on_event(ev(STOPPED), clock.t)
    assert tr.audio_over(clock.t) and tr.settled


def test_audio_first_order_ends_at_stopped_and_settles_at_done() -> None:
    clock, tr = Clock(), ReplyTracker()
    tr.on_event(ev(CREATED), clock.t)
    tr.on_event(ev(STARTED), clock.t)
    for _ in sentences(clock, tr):
        assert not tr.audio_over(clock.t)
    tr.on_event(ev(STOPPED), clock.t)
    assert tr.audio_over(clock.t) and not tr.settled  # generating still
    tr.on_event(ev(DONE), clock.t)
    assert tr.settled


def test_without_output_buffer_events_the_audio_decides_after_done() -> None:
    clock, tr = Clock(), ReplyTracker(ReplyLimits(quiet_end_s=1.0))
    tr.on_event(ev(CREATED), clock.t)
    clock.frames(tr, 0.3)
    tr.on_event(ev(DONE), clock.t)
    for _ in sentences(clock, tr):  # 0.6 s pauses: shorter than quiet_end_s, never taken for the end
        assert not tr.audio_over(clock.t)
    clock.frames(tr, 0.9, audible=False)
    assert not tr.audio_over(clock.t)
    clock.frames(tr, 0.2, audible=False)
    assert tr.audio_over(clock.t) and tr.settled


def test_without_any_event_the_reply_is_its_audio() -> None:
    clock, tr = Clock(), ReplyTracker(ReplyLimits(quiet_end_s=1.0))
    assert tr.audio_over(clock.t)
    for _ in sentences(clock, tr):
        assert not tr.audio_over(clock.t)
    clock.frames(tr, 1.1, audible=False)
    assert tr.audio_over(clock.t)


def test_first_audible_frame_may_beat_started() -> None:
    clock, tr = Clock(), ReplyTracker()
    tr.on_event(ev(CREATED), clock.t)
    clock.frames(tr, 0.1)
    assert tr.active and not tr.audio_over(clock.t)
    tr.on_event(ev(STARTED), clock.t)
    tr.on_event(ev(DONE), clock.t)
    clock.frames(tr, 2.0, audible=False)
    assert not tr.audio_over(clock.t)  # `started` came: wait for `stopped`
    tr.on_event(ev(STOPPED), clock.t)
    assert tr.audio_over(clock.t)


def test_a_lost_stopped_is_bounded() -> None:
    clock, tr = Clock(), ReplyTracker(ReplyLimits(stopped_wait_s=4.0))
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 1.0)
    tr.on_event(ev(DONE), clock.t)
    clock.frames(tr, 3.9, audible=False)
    assert not tr.audio_over(clock.t)
    clock.frames(tr, 0.2, audible=False)
    assert tr.audio_over(clock.t)


def test_late_events_of_an_earlier_reply_change_nothing() -> None:
    clock, tr = Clock(), ReplyTracker()
    for e in (CREATED, STARTED, DONE, STOPPED):
        tr.on_event(ev(e), clock.t)
    tr.on_event(ev(CREATED, "resp_2"), clock.t)
    tr.on_event(ev(STARTED, "resp_2"), clock.t)
    clock.frames(tr, 0.5)
    tr.on_event(ev(STOPPED, RID), clock.t)  # the first reply's duplicate, late
    tr.on_event(ev(STARTED, RID), clock.t)
    assert tr.response_id == "resp_2" and tr.streaming and not tr.audio_over(clock.t)


@pytest.mark.parametrize("order", list(itertools.permutations([DONE, STOPPED])))
def test_the_reply_is_settled_only_when_both_ends_came(order: tuple[str, str]) -> None:
    clock, tr = Clock(), ReplyTracker()
    tr.on_event(ev(CREATED), clock.t)
    tr.on_event(ev(STARTED), clock.t)
    clock.frames(tr, 0.4)
    tr.on_event(ev(order[0]), clock.t)
    assert not tr.settled
    tr.on_event(ev(order[1]), clock.t)
    assert tr.settled


# -- interrupting -------------------------------------------------------------------------------


def test_interrupt_while_generating_cancels_and_clears() -> None:
    clock, tr = Clock(), ReplyTracker()
    tr.on_event(ev(CREATED), clock.t)
    tr.on_event(ev(STARTED), clock.t)
    clock.frames(tr, 0.5)
    what = tr.interrupt(clock.t)
    assert what.cancel and what.clear


def test_interrupt_after_generation_clears_only() -> None:
    clock, tr = Clock(), ReplyTracker()
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 0.5)
    tr.on_event(ev(DONE), clock.t)
    what = tr.interrupt(clock.t)
    assert not what.cancel and what.clear  # a cancel without an active response is an error


def test_no_reply_no_cancel() -> None:
    assert not ReplyTracker().interrupt(100.0).cancel


def test_dropping_lasts_through_pauses_until_the_service_confirms() -> None:
    clock, tr = Clock(), ReplyTracker()
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 0.5)
    tr.on_event(ev(DONE), clock.t)
    tr.interrupt(clock.t)
    # the rest of the reply keeps coming (the service is slow to clear), pauses and all
    played = [p for _ in range(3) for p in clock.frames(tr, 0.8) + clock.frames(tr, 0.6, audible=False)]
    assert not any(played)
    tr.on_event(ev(CLEARED), clock.t)
    assert not any(clock.frames(tr, 0.1))  # what was on its way when `cleared` was sent
    assert clock.frames(tr, 0.02, audible=False) == [True]  # then silence: the tail has passed
    assert not tr.dropping


def test_dropping_without_a_confirmation_ends_after_a_long_quiet() -> None:
    """A service version that does not know `output_audio_buffer.clear` streams the whole reply on:
    it is dropped pauses and all, and playing resumes only once its audio has been quiet for
    drop_quiet_s after generation ended."""
    clock, tr = Clock(), ReplyTracker(ReplyLimits(drop_quiet_s=2.0))
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 0.4)
    tr.interrupt(clock.t)
    tr.on_event(ev(DONE, status="cancelled"), clock.t)
    for _ in range(4):
        assert not any(clock.frames(tr, 1.0) + clock.frames(tr, 0.8, audible=False))
    assert tr.dropping  # 0.8 s quiet so far
    assert not any(clock.frames(tr, 1.1, audible=False))
    assert clock.frames(tr, 0.2, audible=False)[-1] is True


@pytest.mark.parametrize("new", [CREATED, STARTED])
def test_a_new_reply_plays_even_while_dropping(new: str) -> None:
    clock, tr = Clock(), ReplyTracker()
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 0.4)
    tr.interrupt(clock.t)
    tr.on_event(ev(new, "resp_2"), clock.t)
    assert all(clock.frames(tr, 0.2))


def test_server_side_interruption_sends_nothing_and_drops_the_tail() -> None:
    clock, tr = Clock(), ReplyTracker()
    for e in (CREATED, STARTED):
        tr.on_event(ev(e), clock.t)
    clock.frames(tr, 0.4)
    what = tr.interrupt(clock.t, service_clears=True)
    assert not what.cancel and not what.clear and tr.dropping
    assert not any(clock.frames(tr, 0.2))
    tr.on_event(ev(DONE, status="cancelled"), clock.t)
    tr.on_event(ev(CLEARED), clock.t)
    assert clock.frames(tr, 0.04, audible=False) == [True, True]
