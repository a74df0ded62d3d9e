"""What the device does after a conversation failed: which error to show, whether to try again, and when.

- Credentials refused (401/403), a configuration the service cannot serve (a wrong endpoint,
  api-version or certificate), or a negotiation the service keeps refusing (`rtc.call.error` several
  times in a row, e.g. "Remote client allocation failed"): retrying cannot help, so the error blocks the
  wake word until the button is held or the configuration is reloaded.
- Anything else (network, timeouts, 5xx, a dropped call): back off with jitter and a cap; a 429's
  Retry-After is honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .backoff import Backoff
from .state import ErrorKind
from .voicelive.errors import AuthError, NegotiationError, PermanentError, RateLimitedError, VoiceLiveError

log = logging.getLogger(__name__)

#: A negotiation refused this many times in a row is a configuration problem, not bad luck.
REFUSALS_TO_BLOCK = 3


@dataclass(frozen=True)
class Decision:
    kind: ErrorKind
    block: bool
    delay_s: float = 0.0


class RetryPolicy:
    def __init__(self, backoff: Backoff, refusals_to_block: int = REFUSALS_TO_BLOCK) -> None:
        self.backoff = backoff
        self.refusals_to_block = refusals_to_block
        self.refusals = 0

    def succeeded(self) -> None:
        self.backoff.reset()
        self.refusals = 0

    def reset(self) -> None:
        """The configuration changed or the user asked to retry: start afresh."""
        self.succeeded()

    def after(self, error: VoiceLiveError | None) -> Decision:
        """The decision for a conversation that failed with `error` (None: failed without one)."""
        if isinstance(error, AuthError):
            return Decision(ErrorKind.AUTH, block=True)
        if isinstance(error, PermanentError):
            return Decision(ErrorKind.CONFIG, block=True)
        if isinstance(error, NegotiationError) and error.refused:
            self.refusals += 1
            if self.refusals >= self.refusals_to_block:
                log.error(
                    "the service refused the call %d times in a row (last: %s): not retrying until the "
                    "configuration is reloaded or the button is held",
                    self.refusals,
                    error,
                )
                return Decision(ErrorKind.CONFIG, block=True)
        else:
            self.refusals = 0
        if isinstance(error, RateLimitedError) and error.retry_after_s is not None:
            delay = self.backoff.at_least(error.retry_after_s)
            log.info("rate limited: trying again in %.1f s (Retry-After %.0f s)", delay, error.retry_after_s)
            return Decision(ErrorKind.NETWORK, block=False, delay_s=delay)
        return Decision(ErrorKind.NETWORK, block=False, delay_s=self.backoff.next_delay())
