"""A finished call, written down: the audio the emulator received and its event timeline.

For clients in another process (the audio benchmark runs the emulator as a subprocess so that the
agent's CPU is measured alone). time.monotonic() is CLOCK_MONOTONIC, the same for every process on the
machine, so the timeline compares directly with the client's own timestamps.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any

import numpy as np

from ..audio.frames import CLEARLY_AUDIBLE, audible_ms
from ..voicelive.media import RATE
from .session import EmulatorCall


def write_call_record(call: EmulatorCall, directory: Path, index: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    audio = call.received_audio()
    with wave.open(str(directory / f"call-{index}.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.asarray(audio, dtype="<i2").tobytes())
    timeline: dict[str, Any] = {
        "rtc_call_id": call.rtc_call_id,
        "first_rtp_t": call.first_rtp_t,
        "first_packet_t": call.first_packet_t,
        "speech_started_t": call.speech_started_t,
        "speech_stopped_t": call.speech_stopped_t,
        "first_reply_frame_t": call.first_reply_frame_t,
        "reply_samples": [len(r) for r in call.reply_audio],
        #: how much of each reply is sound (not pauses): what a client that plays it whole plays
        "reply_audible_ms": [audible_ms(r, RATE) for r in call.reply_audio],
        # for comparing with what a client played after Opus coding (frames.CLEARLY_AUDIBLE)
        "reply_clearly_audible_ms": [audible_ms(r, RATE, CLEARLY_AUDIBLE) for r in call.reply_audio],
        "events": [
            {
                "channel": channel,
                "type": event.get("type"),
                "audio_start_ms": event.get("audio_start_ms"),
                "audio_end_ms": event.get("audio_end_ms"),
            }
            for channel, event in call.sent_events
            if isinstance(event, dict)
        ],
        "client_events": [e.get("type") for e in call.client_events if isinstance(e, dict)],
        # tool turns: when the tool events went out, and when the client's response.create after its
        # outputs came in
        "tool_events_t": call.tool_events_t,
        "tool_answer_t": call.tool_answer_t,
        # the simulated network and what the emulator's receiver made of the caller's packets
        "downlink_fec": call.downlink_fec,
        "uplink": call.uplink_stats.as_dict() if call.uplink_stats is not None else None,
        "network": call.network_record(),
    }
    path = directory / f"call-{index}.json"
    path.write_text(json.dumps(timeline, indent=1), encoding="utf-8")
    return path


def read_call_record(directory: Path, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    with wave.open(str(directory / f"call-{index}.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return audio, json.loads((directory / f"call-{index}.json").read_text(encoding="utf-8"))
