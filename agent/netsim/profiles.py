"""Networks a Pi meets in a house, as seeded, repeatable schedules of loss, delay and outage.

Loopback never loses, delays or reorders a packet; home Wi-Fi does all three, in bursts. These kernels
have no netem, so the impairment lives in user space (`udp.py` relays the call's datagrams through it,
`tcp.py` stalls the WebSocket), and each profile here says what happens to each datagram:

- loss in bursts, drawn as libwebrtc's and ns-3's tests do with a two-state (Gilbert-Elliott) chain: the
  good state loses nothing; the bad state loses every packet for a burst of `burst` packets (uniform
  between its bounds); the mean gap between bursts gives the average loss;
- delay: a base plus a normal jitter (clipped at zero), drawn per datagram, so a later datagram can
  overtake an earlier one (the reordering that jitter brings);
- a link drop: every datagram lost for `drop_s` seconds, starting `drop_after_s` into the first reply
  (the emulator says when a reply starts); `outage` also stalls the WebSocket for as long.

Each direction has its own random stream, seeded from the profile's seed, so a run can be repeated.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    #: Average fraction of datagrams lost outside drops (0 for none).
    loss: float = 0.0
    #: Burst length bounds (datagrams lost in a row), drawn uniformly.
    burst: tuple[int, int] = (1, 1)
    #: One-way delay added to every datagram, and its jitter (standard deviation), ms.
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    #: A link drop: this long, starting this long after the first reply's first frame.
    drop_s: float = 0.0
    drop_after_s: float = 1.0
    #: The drop also stalls the WebSocket (an outage of the whole link, not only of the packets).
    drop_websocket: bool = False

    @property
    def impaired(self) -> bool:
        return bool(self.loss or self.delay_ms or self.jitter_ms or self.drop_s)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("clean", "loopback as it is: nothing lost or delayed"),
        Profile("wifi", "1 % loss, 10 ± 5 ms jitter", loss=0.01, delay_ms=10, jitter_ms=5),
        Profile(
            "wifi-bad",
            "5 % loss in bursts of 1 to 3, 30 ± 15 ms jitter (reordering)",
            loss=0.05,
            burst=(1, 3),
            delay_ms=30,
            jitter_ms=15,
        ),
        Profile("drop", "every packet lost for 3 s in the middle of a reply, then clean", drop_s=3.0),
        Profile(
            "outage",
            "every packet and the WebSocket lost for 15 s in the middle of a reply",
            drop_s=15.0,
            drop_websocket=True,
        ),
    )
}


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown network profile {name!r}: one of {', '.join(PROFILES)}") from None


class Impairment:
    """One direction's schedule: for each datagram, lost (None) or the seconds to hold it."""

    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile = profile
        self._rng = random.Random(seed)
        self._burst_left = 0
        self._gap_left = self._draw_gap()
        self.sent = 0
        self.lost = 0

    def _draw_gap(self) -> int:
        p = self.profile
        if p.loss <= 0:
            return -1
        mean_burst = (p.burst[0] + p.burst[1]) / 2
        mean_gap = mean_burst / p.loss - mean_burst  # good packets between bursts, on average
        # at least one packet gets through between bursts, so a burst is never longer than `burst` allows
        return 1 + int(self._rng.expovariate(1 / (mean_gap - 1))) if mean_gap > 1 else 1

    def _lose(self) -> bool:
        if self._burst_left > 0:
            self._burst_left -= 1
            return True
        if self._gap_left < 0:
            return False
        if self._gap_left == 0:
            self._burst_left = self._rng.randint(*self.profile.burst) - 1
            self._gap_left = self._draw_gap()
            return True
        self._gap_left -= 1
        return False

    def switch(self, profile: Profile) -> None:
        """Go on under another profile (the network changes mid-call), from a fresh loss state."""
        self.profile = profile
        self._burst_left = 0
        self._gap_left = self._draw_gap()

    def next(self, dropping: bool) -> float | None:
        """The fate of the next datagram: None if lost, else its delay in seconds."""
        self.sent += 1
        lost = self._lose()
        if dropping or lost:
            self.lost += 1
            return None
        p = self.profile
        if not p.delay_ms and not p.jitter_ms:
            return 0.0
        return max(0.0, self._rng.gauss(p.delay_ms, p.jitter_ms)) / 1000
