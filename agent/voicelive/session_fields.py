"""The session fields Voice Live accepts, in one place: the emulator refuses any other, and the client's
configuration validation can check against the same list.

Source: shared/voicelive-webrtc.md section 3 ("Session configuration"), from Microsoft Learn's
voice-live-how-to.md and voice-live-api-reference-2026-01-01-preview.md ("RealtimeRequestSession") and the
`azure-ai-voicelive` 1.3.1 SDK's `RequestSession`. The service refuses a session with any other top-level
key ("extra fields not permitted", section 9). Both spellings of the interim-response field are listed,
since the docs and the SDK disagree (section 8, question 11). `model`, `input_audio_format` and
`input_audio_sampling_rate` are valid fields that `/calls` must still never receive
(`protocol.FORBIDDEN_SESSION_KEYS`); `avatar` is valid but does nothing over WebRTC.
"""

from __future__ import annotations

SESSION_FIELDS = frozenset(
    {
        "model",
        "modalities",
        "instructions",
        "voice",
        "input_audio_format",
        "output_audio_format",
        "input_audio_sampling_rate",
        "turn_detection",
        "input_audio_noise_reduction",
        "input_audio_echo_cancellation",
        "input_audio_transcription",
        "animation",
        "output_audio_timestamp_types",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "temperature",
        "max_response_output_tokens",
        "reasoning_effort",
        "interim_response",
        "interim-response",
        "metadata",
        "include",
        "avatar",
    }
)


def unknown_session_fields(session: dict[str, object]) -> list[str]:
    """The keys of `session` that are not Voice Live session fields, sorted."""
    return sorted(k for k in session if k not in SESSION_FIELDS)
