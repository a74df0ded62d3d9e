"""`voice-agent devices`: the ALSA capture and playback devices, and the rates and channel counts each
accepts, so a fleet owner can fill in audio.capture.device / audio.playback.device without guessing.

Each sound card's `hw:` device is probed directly (no conversion, so what it accepts is what the
hardware does); the `plughw:` name of the same device converts any rate and channel count, which is
what the configuration should usually name. A device another program holds is reported busy.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field

RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
CHANNELS = (1, 2, 4, 6, 8)


@dataclass
class DeviceInfo:
    name: str
    kind: str  # "capture" or "playback"
    description: str = ""
    rates: list[int] = field(default_factory=list)
    channels: list[int] = field(default_factory=list)
    error: str | None = None
    suggested: str | None = None


def _opens_exactly(kind: int, device: str, rate: int, channels: int) -> bool | str:
    """True if the device runs at exactly this rate and channel count; an error text if it is unusable."""
    import alsaaudio

    try:
        pcm = alsaaudio.PCM(kind, alsaaudio.PCM_NONBLOCK, device=device, rate=rate, channels=channels,
                            format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=rate // 50, periods=4)  # fmt: skip
    except alsaaudio.ALSAAudioError as exc:
        text = str(exc)
        return text if "busy" in text.lower() or "No such" in text else False
    try:
        info = pcm.info()
        return bool(info.get("rate") == rate and info.get("channels") == channels)
    finally:
        with contextlib.suppress(Exception):
            pcm.close()


def probe(device: str, kind: str) -> DeviceInfo:
    """The rates and channel counts `device` opens with exactly (S16_LE)."""
    import alsaaudio

    pcm_kind = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    info = DeviceInfo(device, kind)
    for rate in RATES:
        got = _opens_exactly(pcm_kind, device, rate, 1 if kind == "playback" else 2)
        if isinstance(got, str):
            info.error = got
            return info
    rates = {r for r in RATES for ch in CHANNELS if _opens_exactly(pcm_kind, device, r, ch) is True}
    channels = {ch for ch in CHANNELS for r in (16000, 48000) if _opens_exactly(pcm_kind, device, r, ch) is True}
    info.rates, info.channels = sorted(rates), sorted(channels)
    if not info.rates:
        info.error = "opens at none of the usual rates with S16_LE samples: use its plughw: name"
    return info


def list_devices(extra: list[str] | None = None) -> list[DeviceInfo]:
    """Every card's hw: devices for capture and playback, plus `extra` device names."""
    import alsaaudio

    found: list[DeviceInfo] = []
    for kind, pcm_kind in (("capture", alsaaudio.PCM_CAPTURE), ("playback", alsaaudio.PCM_PLAYBACK)):
        names = [n for n in alsaaudio.pcms(pcm_kind) if n.startswith("hw:CARD=")]
        for name in [*names, *(extra or [])]:
            info = probe(name, kind)
            if name.startswith("hw:"):
                info.suggested = "plug" + name
            found.append(info)
    return found


def describe(devices: list[DeviceInfo], as_json: bool) -> str:
    if as_json:
        return json.dumps([asdict(d) for d in devices])
    if not devices:
        return "no ALSA sound cards found (`arecord -l`, `aplay -l`); is the overlay in /boot/firmware/config.txt?"
    lines: list[str] = []
    for d in devices:
        rates, channels = ", ".join(map(str, d.rates)), ", ".join(map(str, d.channels))
        state = f"error: {d.error}" if d.error else f"rates {rates}; channels {channels}"
        hint = f"  (configure: {d.suggested})" if d.suggested and not d.error else ""
        lines.append(f"{d.kind:<8} {d.name:<34} {state}{hint}")
    return "\n".join(lines)

