"""`voice-agent bench echo`: the assistant's voice back in the microphone, per echo mode and level.

The agent runs in this process on real ALSA devices in a simulated room (agent.room): what it plays comes
back into its microphone through a room response, at `echo_db` against the signal played, with room
noise. The emulator runs in its own process; for `off` and `local` it has no canceller of its own
(`--echo-canceller none`, the strict service), for `service` and `client-reference` it cancels as the
session asks (`--echo-canceller session`: AEC3 with its own sent audio, or with the client's second
channel). The reply says "hey jarvis" and "stop" (the wake word, and the stop word the bench sets), so a
device that hears itself has every chance to fool itself.

Per mode and level, one call with `replies` user turns, the user silent while the assistant speaks:
- self_interruptions: replies the service barged in on (the user said nothing), of `replies_started`;
- erle_db: echo return loss enhancement over the replies' sound after their first second (the echo the
  room put in, against what left the device's capture; the room noise, -75 dBFS, caps it near 50 dB),
  converge_s: from the first reply's start until half a second of it was cancelled by 20 dB or more;
- stop_word_false: the stop word fired on the reply; wake_false: wake words beyond the one said;
- cpu_pct: the agent's process during the run, the room's own threads taken out.
Then, per mode at 0 dB, double talk: the user says "stop" 1.5 s into each reply;
double_talk_barge_ins counts the replies the service stopped within 1.5 s of it, of double_talk_trials.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..agent import Agent
from ..config import Config
from ..room import Room, RoomSpec
from ..state import State
from ..voicelive.auth import ApiKey, Secret
from .common import cpu_s, emulator_process, thread_cpu_s
from .speech import espeak, quiet, write_wav

MODES = ("off", "service", "client-reference", "local")
LEVELS = (-10.0, 0.0, 6.0)
REPLY = "okay. hey jarvis here, the timer is set for ten minutes. say stop if you want me to stop."
COMMANDS = ("set a timer for ten minutes", "what is the weather like tomorrow", "tell me a short story")
NOISE_DBFS = -75.0

GOALS = {
    "self_interruptions": ("<=", 0),
    "erle_db": (">=", 25.0),
    "converge_s": ("<=", 1.0),
    "stop_word_false": ("<=", 0),
    "wake_false": ("<=", 0),
}


@dataclasses.dataclass
class Speech:
    wake: np.ndarray
    commands: list[np.ndarray]
    stop: np.ndarray
    reply: np.ndarray

    @classmethod
    def make(cls) -> Speech:
        return cls(espeak("hey jarvis"), [espeak(c) for c in COMMANDS], espeak("stop. stop please."), espeak(REPLY))


def room_config(base: Config, room: Room, mode: str, stop_word: str | None = "hey_jarvis") -> Config:
    """`base` (the demo's) in `room`, with `audio.echo` = `mode`, no earcons, a stop word."""
    r = dataclasses.replace
    audio = r(
        base.audio,
        capture=r(base.audio.capture, device=room.capture_device),
        playback=r(base.audio.playback, device=room.playback_device),
        earcons=r(base.audio.earcons, wake=None, goodbye=None, error=None, connected=None),
        echo=mode,
    )
    wake = r(base.wake, stop_word=stop_word)
    return r(base, audio=audio, wake=wake, conversation=r(base.conversation, followup_s=4.0))


async def room_run(
    tmpdir: Path,
    url: str,
    key: str,
    mode: str,
    echo_db: float,
    speech: Speech,
    *,
    replies: int = 3,
    double_talk: bool = False,
    shift_ms: float | None = None,
    seed: int = 1,
    until_barge_in: bool = False,
) -> dict[str, Any]:
    """One call in a room: the wake word, then `replies` user turns (each said when the last reply
    ended, or `double_talk`: "stop" said 1.5 s into each reply). `shift_ms` makes the device's hidden
    latency jump in the middle of the second reply. `until_barge_in`: stop at the first barge-in."""
    from ..demo import demo_config

    spec = RoomSpec(echo_db=echo_db, noise_dbfs=NOISE_DBFS, seed=seed)
    room = Room(tmpdir, spec)
    config = room_config(demo_config(Config(), url, room.mic.path, tmpdir / "out.wav"), room, mode)
    agent = Agent(config, ApiKey(Secret(key)))
    out_log: list[tuple[float, np.ndarray]] = []
    reply_starts: list[float] = []
    stops_said: list[float] = []
    said = 0
    room.say(np.concatenate([quiet(1.0, level=0.0), speech.wake, quiet(0.2, level=0.0), speech.commands[0]]))
    room.start()
    await agent.start()
    agent.capture.taps.append(lambda b: out_log.append((b.t_end, np.array(b.samples))))
    cpu0, t0 = cpu_s(), time.monotonic()
    runner = asyncio.create_task(agent.run(max_conversations=1))
    deadline = t0 + 12 + replies * (len(speech.reply) / 16000 + 6)
    state = agent.state
    try:
        stop_next = True  # double talk: the next reply (one to a command) gets a "stop" said over it
        while not runner.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            new, now = agent.state, time.monotonic()
            if new is State.SPEAKING and state is not State.SPEAKING:
                reply_starts.append(now)
                if double_talk and stop_next and len(stops_said) < replies and room.mic.data_done.is_set():
                    stops_said.append(now + 1.5)
                    room.say(np.concatenate([quiet(1.5, level=0.0), speech.stop]))
                    stop_next = False
                if shift_ms and len(reply_starts) == 2:
                    asyncio.get_running_loop().call_later(1.5, room.shift_latency, shift_ms)
            if new is State.LISTENING and state is State.SPEAKING and room.mic.data_done.is_set():
                # a reply ended: the next command (in double talk, once the stop was said)
                if double_talk and not stop_next and len(stops_said) < replies:
                    stop_next = True
                    said += 1
                    room.say(np.concatenate([quiet(0.8, level=0.0), speech.commands[said % len(speech.commands)]]))
                elif not double_talk:
                    said += 1
                    if said < replies:
                        command = speech.commands[said % len(speech.commands)]
                        room.say(np.concatenate([quiet(0.8, level=0.0), command]))
            state = new
            if double_talk and len(stops_said) >= replies and now > stops_said[-1] + 4:
                break
            if not double_talk and said >= replies:
                break
            conv = agent.conversation
            if until_barge_in and conv is not None and conv.barge_ins:
                break
        cpu1, t1 = cpu_s(), time.monotonic()
        room_cpu = thread_cpu_s(room.mic.thread) + thread_cpu_s(room.speaker._thread)
        if agent.conversation is not None:
            await agent.conversation.hang_up("benchmark done")
        await asyncio.wait({runner}, timeout=10)
    finally:
        if not runner.done():
            runner.cancel()
        await agent.stop()
        room.stop()
    result = agent.results[-1] if agent.results else None
    barge = list(result.t_barge_ins) if result is not None else []
    talking = _user_talking(room)
    hits = sum(any(s - 0.2 <= b <= s + 1.5 for b in barge) for s in stops_said)
    # a barge-in with the user silent for the 0.6 s before it (the service needs 0.1 s of speech to say so,
    # and the agent hears of it within a few ms): the service heard the device itself
    self_int = sum(not talking(b - 0.6, b) for b in barge)
    erle, erle_by_reply, converge = _erle(room, out_log, reply_starts)
    listener = agent.listener
    wakes = listener.detections_total if listener is not None else 0
    echo = agent.capture.echo
    return {
        "ran": result is not None and result.rtc_call_id is not None,
        "replies_started": len(reply_starts),
        "self_interruptions": self_int,
        "double_talk_trials": len(stops_said) if double_talk else None,
        "double_talk_barge_ins": hits if double_talk else None,
        "erle_db": erle,
        "erle_db_by_reply": erle_by_reply,
        "converge_s": converge,
        "stop_word_false": (listener.stop_words if listener is not None else 0) if not double_talk else None,
        "wake_false": max(0, wakes - 1),
        "cpu_pct": round(100 * (cpu1 - cpu0 - room_cpu) / max(1e-6, t1 - t0), 1),
        "echo_delay_ms": echo.stats.delay_ms if echo is not None else None,
        "realigned": echo.stats.realigned if echo is not None else None,
        "mic_clipped_periods": room.clipped,
    }


def _user_talking(room: Room) -> Any:
    """`talking(a, b)`: whether the user's voice (the room's record of it, noise aside) was in the
    microphone between the capture times a and b."""
    noise = 32768**2 * 10 ** ((NOISE_DBFS + 15) / 10)
    loud = [p.t_end for p in room.user_log if float(np.mean(p.samples.astype(np.float64) ** 2)) > noise]

    def talking(a: float, b: float) -> bool:
        return any(a <= t <= b + 0.05 for t in loud)

    return talking


def _erle(
    room: Room, out_log: list[tuple[float, np.ndarray]], reply_starts: list[float]
) -> tuple[float | None, list[float | None], float | None]:
    """(ERLE over the replies after their first second, the same per reply, the first reply's
    convergence time)."""
    if not reply_starts or not out_log:
        return None, [], None
    times = np.array([t for t, _ in out_log])
    pairs: list[tuple[float, float, float]] = []  # (t, echo energy, out energy)
    for period in room.echo_log:
        i = int(np.searchsorted(times, period.t_end - 0.01))
        if i >= len(times) or abs(times[i] - period.t_end) > 0.011:
            continue
        e = float(np.mean(period.samples.astype(np.float64) ** 2))
        o = float(np.mean(out_log[i][1].astype(np.float64) ** 2))
        pairs.append((period.t_end, e, o))
    loud = 32768**2 * 10 ** (-50 / 10)  # echo above -50 dBFS counts
    starts = np.array(reply_starts)

    # each loud period more than a second into its reply, with that reply's index
    after = [(k, e, o) for t, e, o in pairs
             if e > loud and (k := int(np.searchsorted(starts, t)) - 1) >= 0 and t - starts[k] > 1.0]  # fmt: skip
    erle = _erle_of([(e, o) for _, e, o in after])
    by_reply = [_erle_of([(e, o) for j, e, o in after if j == k]) for k in range(len(starts))]

    first = reply_starts[0]
    # the first reply's first 3 s: the first half second of its echo cancelled by 20 dB or more
    windows = [(t, e, o) for t, e, o in pairs if first <= t <= first + 3.0 and e > loud]
    converge = None
    for k, (tk, _, _) in enumerate(windows):
        span = [w for w in windows[k:] if w[0] - tk <= 0.5]
        if span[-1][0] - tk < 0.4:
            break
        if 10 * np.log10(sum(w[1] for w in span) / max(sum(w[2] for w in span), 1e-9)) >= 20:
            converge = round(tk - first, 2)
            break
    return erle, by_reply, converge


def _erle_of(pairs: list[tuple[float, float]]) -> float | None:
    if not pairs:
        return None
    e_sum = sum(e for e, _ in pairs)
    o_sum = sum(o for _, o in pairs)
    return round(10 * np.log10(e_sum / max(o_sum, e_sum * 1e-6)), 1)


def _meets(value: Any, op: str, goal: float) -> bool:
    if value is None:
        return False
    return value <= goal if op == "<=" else value >= goal


async def run_echo_bench(
    modes: list[str] | None = None,
    levels: list[float] | None = None,
    replies: int = 3,
    double_talk_trials: int = 10,
    seed: int = 1,
    strict: bool = False,
) -> dict[str, Any]:
    """`strict`: the emulator cancels nothing in any mode (today's service mode against it is the
    "before" of issue 20)."""
    speech = Speech.make()
    out: dict[str, Any] = {"ok": True, "replies": replies, "strict": strict, "modes": {}}
    for mode in modes or list(MODES):
        canceller = "session" if mode in ("service", "client-reference") and not strict else "none"
        per: dict[str, Any] = {"emulator_echo_canceller": canceller, "levels": {}}
        with tempfile.TemporaryDirectory(prefix=f"voice-agent-echo-{mode}-") as tmp:
            tmpdir = Path(tmp)
            reply_wav = write_wav(tmpdir / "reply.wav", speech.reply)
            extra = ("--reply", "file", "--reply-wav", str(reply_wav), "--echo-canceller", canceller)
            async with emulator_process(tmpdir, *extra) as emu:
                for level in levels or list(LEVELS):
                    run = await room_run(tmpdir, emu.url, emu.key, mode, level, speech, replies=replies, seed=seed)
                    per["levels"][f"{level:+.0f}dB"] = run
                    out["ok"] = out["ok"] and run["ran"]
                if double_talk_trials:
                    dt = await room_run(
                        tmpdir, emu.url, emu.key, mode, 0.0, speech, replies=double_talk_trials,
                        double_talk=True, seed=seed,
                    )  # fmt: skip
                    per["double_talk"] = dt
        if mode == "local":
            missed = [
                f"{lv}:{k}" for lv, run in per["levels"].items() for k, (op, g) in GOALS.items()
                if not _meets(run.get(k), op, g)
            ]  # fmt: skip
            dt = per.get("double_talk")
            if dt and (dt["double_talk_barge_ins"] or 0) < 0.9 * (dt["double_talk_trials"] or 1):
                missed.append("double_talk_barge_ins")
            per["goals_missed"] = missed
        out["modes"][mode] = per
    off = out["modes"].get("off", {}).get("levels", {}).get("+0dB", {}).get("cpu_pct")
    for per in out["modes"].values():
        cpu = per["levels"].get("+0dB", {}).get("cpu_pct")
        per["cpu_pct_vs_off"] = round(cpu - off, 1) if cpu is not None and off is not None else None
    return out


def echo_table(result: dict[str, Any]) -> str:
    cols = ("self_interruptions", "replies_started", "erle_db", "converge_s", "stop_word_false", "wake_false",
            "cpu_pct", "echo_delay_ms")  # fmt: skip
    lines = ["mode              level  " + " ".join(f"{c[:16]:>16}" for c in cols)]
    for mode, per in result["modes"].items():
        for level, run in per["levels"].items():
            lines.append(f"{mode:<17} {level:>6} " + " ".join(f"{_fmt(run.get(c)):>16}" for c in cols))
        dt = per.get("double_talk")
        if dt:
            lines.append(
                f"{mode:<17} double talk at 0 dB: the user's stop heard {dt['double_talk_barge_ins']} of "
                f"{dt['double_talk_trials']}, self-interruptions {dt['self_interruptions']}"
            )
        if per.get("cpu_pct_vs_off") is not None:
            lines.append(f"{mode:<17} cpu against off (0 dB): {per['cpu_pct_vs_off']:+.1f} % of a core")
        if "goals_missed" in per:
            lines.append(f"{mode:<17} goals missed: {', '.join(per['goals_missed']) or 'none'}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
