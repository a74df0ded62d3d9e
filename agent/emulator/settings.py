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

from ..netsim.profiles import Profile, profile
from ..voicelive.auth import Secret
from ..voicelive.protocol import DEFAULT_API_VERSION
from .echo import ECHO_CANCELLER_MODES, EchoCancellerMode
from .toolscript import ToolStep

ReplyMode = Literal["parrot", "file"]

#: How a response's events line up with its audio (see `EmulatorSettings.output_order`).
OutputOrder = Literal["webrtc", "audio-first", "no-buffer-events"]
OUTPUT_ORDERS: tuple[OutputOrder, ...] = ("webrtc", "audio-first", "no-buffer-events")


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
    #: Answer the offer with `rtc.call.error` (type server_error, code `call_error_code`, message
    #: `call_error_message`) instead of an SDP answer.
    call_error: bool = False
    call_error_code: str = "bad_sdp"
    call_error_message: str = "Remote client allocation failed"
    #: Send a plain `error` event on the control channel before `rtc.call.sdp.created`; the answer still
    #: follows (a client must log it and keep waiting).
    error_before_answer: bool = False
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
    #: The data channel never opens: the emulator never starts its SCTP end, so the client's association
    #: gets no INIT-ACK (ICE, DTLS and audio work; events routed "both" still arrive on the WebSocket,
    #: data-only events are lost). An aiortc client gives up on SCTP after 9 INIT timeouts of 3 s (about
    #: 27 s) and then closes its data channel.
    no_data_channel: bool = False
    #: Answer `output_audio_buffer.clear` with an `error` (unknown event type) and keep streaming, as a
    #: service version that does not know the event would.
    unknown_output_clear: bool = False


@dataclass
class EmulatorSettings:
    """How the emulator listens, whom it lets in, and how it replies."""

    host: str = "127.0.0.1"
    #: 0 picks a free port; `Emulator.url` tells which.
    port: int = 0
    #: Accepted credentials. With both None, any non-empty api-key or bearer token is accepted.
    api_key: Secret | None = None
    bearer_token: Secret | None = None
    #: api-version values the upgrade accepts (any string: "2026-01-01-preview", "v1", ...).
    api_versions: tuple[str, ...] = (DEFAULT_API_VERSION,)
    #: Headers every upgrade must carry (name matched case-insensitively; the value must equal the header
    #: or one of its comma-separated items), e.g. {"VoiceLive-Features": "webrtc=V1Preview"}; else HTTP 400.
    require_headers: dict[str, str] = field(default_factory=dict)
    #: "parrot" replays the caller's last utterance; "file" plays `reply_wav` (any rate and channel count).
    reply_mode: ReplyMode = "parrot"
    reply_wav: Path | None = None
    #: How a response's events line up with its audio:
    #: - "webrtc" (the service over WebRTC, voicelive-webrtc.md section 9): `response.created`,
    #:   `output_audio_buffer.started` with the first audio frame, `response.done` (completed, with usage)
    #:   once the reply is generated (`generation_s`), the audio streaming on in real time, and
    #:   `output_audio_buffer.stopped` after its last frame went out. `response.cancel` stops generation
    #:   only; `output_audio_buffer.clear` stops the stream (`output_audio_buffer.cleared`).
    #: - "audio-first" (the emulator before issue 9): generation in step with the audio, so
    #:   `output_audio_buffer.stopped` then `response.done`, both at the end of the audio; `response.cancel`
    #:   and `output_audio_buffer.clear` both cut the audio at once (`cleared`, then `response.done` cancelled).
    #: - "no-buffer-events": "webrtc" without any `output_audio_buffer.*` event (started, stopped, cleared).
    output_order: OutputOrder = "webrtc"
    #: Seconds to generate a whole reply ("webrtc" and "no-buffer-events"): `response.done` comes this long
    #: after `response.created`, or after the reply's own duration if that is shorter (the model generates
    #: at least as fast as real time). The audio generated by time t is taken as the same fraction of the reply.
    generation_s: float = 1.0
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
    #: A simulated network between the client and the emulator (agent.netsim.profiles): "clean" (none),
    #: "wifi", "wifi-bad", "drop", "outage". Seeded: the same seed gives the same losses and delays.
    network: str | Profile = "clean"
    network_seed: int = 1
    #: Negotiate Opus in-band FEC as a libwebrtc-based service does: answer `useinbandfec=1` (the emulator
    #: decodes FEC from what the client sends) and put FEC in the reply when the offer asks for it. False:
    #: a service that does neither (the client must then conceal without FEC and send none).
    fec: bool = True
    #: The service's echo cancellation (agent.emulator.echo): "none" (strict: turn detection hears the
    #: echo as it arrives, whatever the session asks), or "session" (AEC3 as the session's
    #: input_audio_echo_cancellation asks: the server's own reference, or the client's second channel).
    echo_canceller: EchoCancellerMode = "none"
    #: The model's tool calls (agent.emulator.functions): after the user's Nth turn, call NAME with ARGS.
    tool_script: tuple[ToolStep, ...] = ()
    #: Send the tool events before `response.done` (default: after it, the strict order).
    tool_events_first: bool = False
    #: Send each tool event on the data channel too (same event_id), as the service's duplicates.
    tool_duplicate: bool = False
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
        if self.output_order not in OUTPUT_ORDERS:
            raise ValueError(f"output_order must be one of {', '.join(OUTPUT_ORDERS)}, not {self.output_order!r}")
        if isinstance(self.network, str):
            profile(self.network)  # raises ValueError naming the profiles
        if self.echo_canceller not in ECHO_CANCELLER_MODES:
            raise ValueError(f"echo_canceller must be one of {', '.join(ECHO_CANCELLER_MODES)}")
        if self.generation_s < 0:
            raise ValueError("generation_s must be >= 0")
