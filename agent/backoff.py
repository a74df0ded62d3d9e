"""Exponential backoff with jitter and a cap: for reopening a device and for calling the service again."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Exponential backoff with jitter and a cap, for reopening a device.

    Jitter (±`jitter` of the delay) keeps many Pis that lost the same USB hub from retrying in step.
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    _next_s: float = field(init=False, default=0.0)
    _rng: random.Random = field(init=False, repr=False, default_factory=random.Random)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def next_delay(self) -> float:
        base = self._next_s
        self._next_s = min(self.max_s, self._next_s * self.factor)
        return max(0.0, base * (1 + self._rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self._next_s = self.initial_s

    def at_least(self, delay_s: float) -> float:
        """The next delay, but no shorter than `delay_s` (a server's Retry-After)."""
        return max(delay_s, self.next_delay())
