"""The service's echo canceller, as strict as the service may be: by default none at all.

Voice Live documents `input_audio_echo_cancellation: {type: server_echo_cancellation}`, with the
reference taken from its own playback by default, or from the client (`reference_source: client`,
`channels: 2`: a second channel of the input carries what the device played). Whether and how well it
cancels over WebRTC is not documented, so the emulator takes the strict side (`echo_canceller: none`:
its turn detection hears the echo as it arrives, as a service without a canceller would) and, with
`echo_canceller: session`, models what the session asks for:

- server reference: WebRTC AEC3 fed with the reply as the emulator sends it, at send time: it cannot
  know the network's delay, the device's jitter buffer, playout and DAC (all of which it must find), nor
  what the device dropped or stretched;
- client reference: AEC3 fed with the second channel of what arrives, frame by frame with the first.

Either way at 48 kHz, on the event loop (the emulator's only thread), before turn detection.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ..audio.echo import Aec3

EchoCancellerMode = Literal["none", "session"]
ECHO_CANCELLER_MODES: tuple[EchoCancellerMode, ...] = ("none", "session")

Source = Literal["server", "client"]


def reference_source(session: dict[str, Any]) -> Source | None:
    """What the session's `input_audio_echo_cancellation` asks for (None: no cancellation)."""
    spec = session.get("input_audio_echo_cancellation")
    if not isinstance(spec, dict):
        return None
    if spec.get("reference_source") == "client":
        return "client"
    return "server"


class ServiceCanceller:
    """AEC3 at 48 kHz with the server's or the client's reference."""

    RATE = 48000

    def __init__(self, source: Source) -> None:
        self.source = source
        self._aec = Aec3(self.RATE)
        self.frames = 0

    def sent(self, frame: np.ndarray) -> None:
        """A reply frame as it leaves (server reference)."""
        if self.source == "server":
            self._aec.reverse(frame)

    def heard(self, mic: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        """A received frame, its echo cancelled."""
        self.frames += 1
        if self.source == "client":
            if reference is None:
                reference = np.zeros_like(mic)
            out = []
            n = self._aec.n
            for i in range(0, len(mic), n):
                self._aec.reverse(reference[i : i + n])
                out.append(self._aec.capture(mic[i : i + n]))
            return np.concatenate(out)
        return self._aec.capture(mic)
