"""Why a call could not start or ended, sorted by what the agent should do next.

The conversation loop retries `TransientError`s with backoff and jitter, and stops retrying on a
`PermanentError` (wrong key, wrong endpoint or api-version, a TLS certificate it cannot trust) until the
configuration changes, showing the error pattern on the LEDs instead of hammering the service.
"""

from __future__ import annotations


class VoiceLiveError(Exception):
    """Base class. `kind` is a short, stable word for logs, LEDs and JSON output."""

    kind = "error"


class TransientError(VoiceLiveError):
    """Worth another try after a backoff: network, DNS, timeouts, 5xx, a dropped call."""

    kind = "network"


class RateLimitedError(TransientError):
    """HTTP 429 or a connection limit: back off longer (honouring Retry-After when given)."""

    kind = "rate_limited"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(VoiceLiveError):
    """Retrying cannot help until the configuration or credentials change."""

    kind = "config"


class AuthError(PermanentError):
    """The service refused the credentials (HTTP 401/403)."""

    kind = "auth"


class NegotiationError(TransientError):
    """The SDP exchange failed: `rtc.call.error` (`refused`), or no answer in time."""

    kind = "negotiation"

    def __init__(self, message: str, code: str | None = None, *, refused: bool = False) -> None:
        super().__init__(message)
        self.code = code
        #: The service answered the offer with `rtc.call.error`: several in a row is a configuration
        #: problem (agent.retry).
        self.refused = refused


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret value masked: for server-provided text that ends up in a log or an
    exception, in case a server echoes a credential back."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
