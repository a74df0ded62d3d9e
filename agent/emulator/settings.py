"""Settings of the local Voice Live emulator, and the fault switches tests flip while it runs.

The emulator stands in for Azure Voice Live's WebRTC `/calls` endpoint on 127.0.0.1, so the agent can be
developed, demonstrated and tested without the service (and without the internet). `Faults` makes the
failures the agent must survive happen on demand: each switch is read at the moment it matters, so a test
can flip one on a running emulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..voicelive.auth import Secret
from ..voicelive.protocol import DEFAULT_API_VERSION

ReplyMode = Literal["parrot", "file"]


@dataclass
class Faults:
    """Failure switches. Mutable on purpose: flip them while the emulator runs."""

    #: Every upgrade gets HTTP 401, whatever the credential.
    refuse_auth: bool = False
    #: Every upgrade gets this HTTP status (429 and 503 get a `Retry-After: 1` header).
    reject_status: int | None = None
    #: Close the WebSocket (code 1011) this long after `rtc.call.sdp.created` was sent.
    close_after_s: float | None = None
    #: Read `rtc.call.sdp.create` and never answer it.
    never_answer: bool = False
    #: Answer the offer with `rtc.call.error` (code `call_error_code`) instead of an SDP answer.
    call_error: bool = False
    call_error_code: str = "bad_sdp"
    #: Wait this long before handling the offer (so before `rtc.call.sdp.created`).
    answer_delay_s: float = 0.0
    #: Stop sending RTP this long after the first audio frame of a reply (RTP stops mid-reply, for good).
    stop_rtp_after_s: float | None = None
    #: Send a malformed JSON message on the control channel after `session.created` and after the
    #: answer, and on the data channel when it opens.
    malformed_json: bool = False
    #: Send an event of an unknown type at the same moments as `malformed_json`.
    unknown_events: bool = False
    #: Send one JSON message larger than 1 MiB on the control channel right after the answer.
    oversized_event: bool = False
    #: Ignore the client's data channel: nothing is ever sent on it (data-channel events are dropped).
    no_data_channel: bool = False


@dataclass
class EmulatorSettings:
    """How the emulator listens, whom it lets in, and how it replies."""

    host: str = "127.0.0.1"
    #: 0 picks a free port; `Emulator.url` tells which.
    port: int = 0
    #: Accepted credentials. With both None, any non-empty api-key or bearer token is accepted.
    api_key: Secret | None = None
    bearer_token: Secret | None = None
    api_versions: tuple[str, ...] = (DEFAULT_API_VERSION,)
    #: "parrot" replays the caller's last utterance; "file" plays `reply_wav` (any rate and channel count).
    reply_mode: ReplyMode = "parrot"
    reply_wav: Path | None = None
    #: Pin ICE host candidates to 127.0.0.1 (agent.voicelive.ice). Keep it on unless you know why not.
    ice_loopback: bool = True
    #: A 20 ms frame whose RMS is above this counts as speech.
    vad_threshold_dbfs: float = -40.0
    #: Speech must last this long before `speech_started` is sent (its `audio_start_ms` marks the onset).
    speech_start_ms: int = 100
    #: Defaults of the session's `turn_detection`; the client's session overrides them.
    silence_ms: int = 500
    prefix_padding_ms: int = 300
    faults: Faults = field(default_factory=Faults)
    #: When set, each call leaves `call-N.wav` (the audio it received, 48 kHz mono) and `call-N.json`
    #: (its event timeline, in time.monotonic(), which is system-wide) here when it ends: so a client in
    #: another process (a benchmark measuring its own CPU) can check what arrived and when.
    record_dir: Path | None = None
    #: Serve wss:// with this certificate and key (see `tls.make_test_ca`); None serves ws://.
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __post_init__(self) -> None:
        if self.reply_mode not in ("parrot", "file"):
            raise ValueError(f"reply_mode must be 'parrot' or 'file', not {self.reply_mode!r}")
        if self.reply_mode == "file" and self.reply_wav is None:
            raise ValueError("reply_mode 'file' needs reply_wav")
        if not self.api_versions:
            raise ValueError("api_versions must name at least one version")
