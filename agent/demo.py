"""`voice-agent demo`: the whole loop on one machine, with no hardware and no cloud account.

It runs the real service code end to end:
- a local Voice Live emulator on 127.0.0.1 (parrot mode: it answers with what it heard);
- a "microphone" that is a real ALSA capture device (alsa-lib's file plugin) fed in real time from a
  FIFO with a spoken clip: "hey jarvis", a short pause, "what time is it?";
- the real wake word detector on that audio, a real WebRTC call over loopback (ICE pinned to
  127.0.0.1), the reply played through a real ALSA playback device that writes a WAV file;
- the LEDs on gpiozero's mock pins, their states shown in the terminal.

It prints a summary with timings (or, with `--json`, one JSON object) and exits 0 only if the loop
completed: wake word, call, reply audio, back to idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import sys
import tempfile
import time
import wave
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .agent import Agent
from .audio.fileplugin import FifoFeeder, capture_device, playback_device, use_file_plugin
from .audio.resample import convert_pcm
from .bench.echo import room_config
from .config import Config, GpioOutputConfig
from .emulator.server import Emulator
from .emulator.settings import EmulatorSettings
from .emulator.toolscript import ToolStep
from .errors import ConfigError
from .leds import Pattern
from .observe import Observer
from .room import Room, RoomSpec
from .voicelive.auth import ApiKey, Secret

log = logging.getLogger(__name__)

DEMO_TIMEOUT_S = 40.0
LED_PINS = (5, 6, 13)  # mock pins for an RGB LED


def read_wav_mono16k(path: Path) -> np.ndarray:
    """A WAV file as 16 kHz mono int16 (the demo microphone's format)."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ConfigError("--clip", f"{path} must be 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        channels, rate = w.getnchannels(), w.getframerate()
    mono = data.reshape(-1, channels).mean(axis=1).astype(np.int16) if channels > 1 else data
    return convert_pcm(mono, rate, 16000)


def loud_regions(samples: np.ndarray, rate: int, gap_s: float = 0.3) -> list[tuple[int, int]]:
    """(start, end) sample spans of sound, split where it stays silent for `gap_s`: the earcons and
    the reply in the demo's WAV come out as separate regions."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 64)
    if loud.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(loud) > gap_s * rate)
    starts = np.concatenate(([loud[0]], loud[breaks + 1]))
    ends = np.concatenate((loud[breaks], [loud[-1]])) + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def reply_span(samples: np.ndarray, rate: int) -> tuple[int, int] | None:
    """The longest sound in the WAV: the assistant's reply (the earcons are a fraction of a second)."""
    regions = loud_regions(samples, rate)
    return max(regions, key=lambda r: r[1] - r[0]) if regions else None


def rms_dbfs(samples: np.ndarray) -> float | None:
    if samples.size == 0:
        return None
    return round(20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) / 32768 + 1e-12), 1)


def demo_config(base: Config, emulator_url: str, mic: Path, out_wav: Path) -> Config:
    """The default configuration, pointed at the emulator, the file-backed devices and mock pins."""
    r = dataclasses.replace
    return r(
        base,
        voicelive=r(base.voicelive, endpoint=emulator_url, connect_timeout_s=5.0, answer_timeout_s=5.0),
        network=r(base.network, ice_loopback=True),
        audio=r(
            base.audio,
            capture=r(base.audio.capture, device=capture_device(mic), rate=16000, channels=1, channel=0),
            playback=r(base.audio.playback, device=playback_device(out_wav), rate=48000, channels=1),
        ),
        gpio=r(base.gpio, pin_factory="mock", leds=r(base.gpio.leds, driver="rgbled", pins=LED_PINS)),
        conversation=r(base.conversation, followup_s=1.5),
    )


async def run_demo(
    out_dir: Path,
    as_json: bool = False,
    clip: str | None = None,
    network: str = "clean",
    room_db: float | None = None,
    echo: str = "local",
    tool: str | None = None,
) -> int:
    """The whole loop against the emulator; `room_db`: in a simulated room (agent.room) whose speaker
    comes back into the microphone at that level, cancelled as `echo` (audio.echo) says."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_wav = (out_dir / "reply.wav").resolve()
    if clip:
        speech = read_wav_mono16k(Path(clip))
    else:
        with resources.as_file(resources.files("agent") / "assets" / "demo-hey-jarvis.wav") as p:
            speech = read_wav_mono16k(p)
    say = (lambda *a: print(*a, file=sys.stderr)) if as_json else print
    led_states: list[str] = []

    class ShowLeds(Observer):
        def pattern_shown(self, pattern: Pattern) -> None:
            led_states.append(pattern.name)
            rgb = ",".join(f"{c:.1f}" for c in pattern.color)
            say(f"  LED  {pattern.name:<14} {pattern.mode:<6} rgb({rgb})")

    key = Secret(secrets.token_urlsafe(24))
    summary: dict[str, Any] = {"ok": False}
    with tempfile.TemporaryDirectory(prefix="voice-agent-demo-") as tmp:
        tmpdir = Path(tmp)
        use_file_plugin(tmpdir)
        fifo = tmpdir / "mic.fifo"
        canceller = "session" if echo in ("service", "client-reference") else "none"
        script = (ToolStep(1, tool, DEMO_TOOL_ARGS.get(tool, {})),) if tool else ()
        emulator = Emulator(EmulatorSettings(api_key=key, reply_mode="parrot", ice_loopback=True, network=network,
                                             echo_canceller=canceller, tool_script=script))  # type: ignore[arg-type]  # fmt: skip
        await emulator.start()
        config = demo_config(Config(), emulator.url, fifo, out_wav)
        config = dataclasses.replace(
            config,
            tools=dataclasses.replace(config.tools, state_dir=tmpdir / "state"),
            gpio=dataclasses.replace(config.gpio, outputs={"demo_light": GpioOutputConfig(pin=17)}),
        )
        config = dataclasses.replace(config, audio=dataclasses.replace(config.audio, echo=echo))  # type: ignore[arg-type]
        # One second of silence first: the wake word detector starts listening on clean audio.
        script = np.concatenate([np.zeros(16000, np.int16), speech])
        room: Room | None = None
        feeder: FifoFeeder | Room
        if room_db is not None:
            room = feeder = Room(tmpdir, RoomSpec(echo_db=room_db), speech=script, speaker_wav=out_wav)
            config = room_config(config, room, echo, stop_word=None)
            config = dataclasses.replace(config, conversation=dataclasses.replace(config.conversation, followup_s=1.5))
        else:
            feeder = FifoFeeder(fifo, script, rate=16000, period_frames=320, then="silence")
        agent = Agent(config, ApiKey(key), ShowLeds())
        feeder.start()
        say(f"voice-agent demo: emulator on {emulator.url}, microphone {fifo.name} (real time), reply -> {out_wav}")
        if network != "clean":
            say(f"  network: {emulator.network.profile.name} ({emulator.network.profile.description})")
        if room is not None:
            say(f"  room: the speaker heard by the microphone at {room_db:+.0f} dB; echo cancelled by: {echo}"
                f" (the emulator's own canceller: {canceller})")
        t0 = time.monotonic()
        try:
            await agent.start()
            results = await asyncio.wait_for(agent.run(max_conversations=1), DEMO_TIMEOUT_S)
            if tool == "set_timer":  # the timer rings after the call: wait for it, then press to silence it
                timers = agent.tools.timers
                assert timers is not None
                deadline = time.monotonic() + 10
                while not timers.rang and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if timers.rang:
                    summary["timer_rang_s"] = round(timers.rang[0][1] - _tool_time(results), 2)
                    await asyncio.sleep(0.5)
                    summary["timer_silenced_by_press"] = await agent.press() == "silenced the timer"
        except TimeoutError:
            results = list(agent.results)
            summary["error"] = f"the loop did not complete within {DEMO_TIMEOUT_S:.0f} s (state {agent.state.value})"
        finally:
            await agent.stop()
            feeder.stop()
            calls = list(emulator.calls)
            await emulator.stop()
        summary.update(_summarize(agent, results, calls, out_wav, led_states, time.monotonic() - t0))
        summary["network"] = {"profile": network, "down": emulator.network.down.as_dict(),
                              "up": emulator.network.up.as_dict()}  # fmt: skip
        if results and results[0].jitter is not None:
            summary["jitter"] = results[0].jitter
        if tool:
            summary["tool_calls"] = results[0].tool_calls if results else []
            calls = summary["tool_calls"]
            summary["ok"] = bool(summary["ok"] and calls and all(c["ok"] for c in calls))
            if tool == "set_timer":
                summary["ok"] = bool(summary["ok"] and summary.get("timer_silenced_by_press"))
        if room is not None:
            ec = agent.capture.echo
            summary["room"] = {
                "echo_db": room_db,
                "echo": echo,
                "emulator_echo_canceller": canceller,
                "self_interruptions": results[0].barge_ins if results else None,
                "echo_delay_ms": ec.stats.delay_ms if ec is not None else None,
            }
    if as_json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0 if summary["ok"] else 1


#: What `demo --tool NAME` has the emulated model ask for.
DEMO_TOOL_ARGS: dict[str, dict[str, Any]] = {
    "set_timer": {"seconds": 2, "name": "demo"},
    "set_volume": {"level": 40},
    "set_output": {"name": "demo_light", "state": "on"},
    "cancel_timer": {"name": "all"},
}


def _tool_time(results: list[Any]) -> float:
    """When the first tool call came, as a wall clock time (timers ring on the wall clock)."""
    if not results or not results[0].t_tool_calls:
        return time.time()
    return time.time() - (time.monotonic() - results[0].t_tool_calls[0][0])


def _summarize(
    agent: Agent,
    results: list[Any],
    calls: list[Any],
    out_wav: Path,
    led_states: list[str],
    elapsed_s: float,
) -> dict[str, Any]:
    result = results[0] if results else None
    call = calls[-1] if calls else None
    first_reply_ms = None
    if call is not None and call.speech_stopped_t and result is not None and result.reply_marks:
        # the emulator's speech_stopped (same process, same monotonic clock) to the reply's first
        # audible sample handed to ALSA
        t_written = agent.playback.first_write_after(result.reply_marks[0])
        if t_written is not None:
            first_reply_ms = round((t_written - call.speech_stopped_t[0]) * 1000, 1)
    reply_db = reply_s = None
    if out_wav.exists():
        with wave.open(str(out_wav)) as w:
            rate = w.getframerate()
            audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        span = reply_span(audio, rate)
        if span is not None:
            reply_db = rms_dbfs(audio[span[0] : span[1]])
            reply_s = round((span[1] - span[0]) / rate, 2)
    wake = agent.detections[0] if agent.detections else None
    ok = bool(
        result is not None
        and result.ok
        and "completed" in result.responses
        and reply_db is not None
        and reply_db > -40
        and agent.state.value == "idle"
    )
    out: dict[str, Any] = {
        "ok": ok,
        "wake_word": wake.model if wake else None,
        "wake_score": round(wake.score, 3) if wake else None,
        "connect_ms": result.connect_ms if result else None,
        "first_reply_audio_ms": first_reply_ms,
        "reply_wav": str(out_wav),
        "reply_rms_dbfs": reply_db,
        "reply_s": reply_s,
        "led_states": led_states,
        "responses": result.responses if result else [],
        "transcripts": result.transcripts if result else [],
        "end_reason": result.end_reason if result else None,
        "rtc_call_id": result.rtc_call_id if result else None,
        "elapsed_s": round(elapsed_s, 1),
    }
    if result is not None and result.error:
        out["error"] = f"{result.error_kind}: {result.error}"
    return out


def _print_summary(s: dict[str, Any]) -> None:
    print()
    print("result            ", "OK" if s["ok"] else "FAILED" + (f": {s.get('error')}" if s.get("error") else ""))
    rows = [
        ("wake word", f"{s['wake_word']} (score {s['wake_score']})" if s["wake_word"] else "not detected"),
        ("wake -> connected", f"{s['connect_ms']} ms" if s["connect_ms"] is not None else "-"),
        ("speech end -> reply", f"{s['first_reply_audio_ms']} ms" if s["first_reply_audio_ms"] is not None else "-"),
        ("reply audio", f"{s['reply_wav']} ({s['reply_rms_dbfs']} dBFS)"),
        ("assistant said", " / ".join(s["transcripts"]) or "-"),
        ("LED states", " > ".join(s["led_states"])),
        ("call ended", s["end_reason"] or "-"),
    ]
    room = s.get("room")
    if room is not None:
        rows.append((
            "room",
            f"echo at {room['echo_db']:+.0f} dB, cancelled by {room['echo']}: the service barged in on its own"
            f" reply {room['self_interruptions']} time(s); echo delay {room['echo_delay_ms']} ms",
        ))  # fmt: skip
    for name, value in rows:
        print(f"{name:<18} {value}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
