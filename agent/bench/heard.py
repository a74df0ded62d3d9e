"""What a listener heard of a reply, against what the service sent: aligned correlation and holes.

A jitter buffer that follows the network stretches time a little (a concealed frame inserted while a
packet is late, a quiet one dropped to catch up), so one global alignment of the whole reply would call
a perfect reply after one such step bad. The reply is compared in 100 ms windows, each aligned on its
own within ±60 ms of the one before (as a listener's ear forgives a pause a few ms longer), and the
windows' correlations are averaged by their energy: what it says is how much of the reply's sound came
through as itself. Silent windows of the sent reply are left out.

A hole is 20 ms or more of digital silence (every sample 0) in what was played, where the sent reply
had sound: a lost packet played as nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_S = 0.1
SEARCH_S = 0.06
#: A window of the sent reply quieter than this (RMS, int16) is not compared.
SPEECH_RMS = 300.0
HOLE_S = 0.02


@dataclass
class Heard:
    correlation: float | None
    holes: int
    start: int | None  # where the reply starts in what was heard (samples)
    windows: int
    #: per compared window: (offset in the sent reply, its correlation), for a reply that resumed
    per_window: list[tuple[int, float]]


def _global_lag(sent: np.ndarray, heard: np.ndarray) -> int:
    a = sent - sent.mean()
    b = heard - heard.mean()
    n = len(a) + len(b)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)[: max(1, len(b) - len(a) + 1)]
    csum = np.concatenate(([0.0], np.cumsum(b**2)))
    m = len(xc)
    energy = np.maximum(csum[len(a) : len(a) + m] - csum[:m], 1e-9)
    return int(np.argmax(xc / np.sqrt(energy)))


def _best_local(window: np.ndarray, region: np.ndarray) -> tuple[float, int]:
    """The best normalised correlation of `window` inside `region`, and its offset there."""
    n, m = len(window), len(region)
    if m < n:
        return 0.0, 0
    size = 1 << (n + m - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(region, size) * np.conj(np.fft.rfft(window, size)), size)[: m - n + 1]
    csum = np.concatenate(([0.0], np.cumsum(region**2)))
    energy = np.maximum(csum[n:] - csum[: m - n + 1], 1e-9)
    norm = xc / (np.sqrt(energy) * np.sqrt(max(float(np.sum(window**2)), 1e-9)))
    k = int(np.argmax(norm))
    return float(norm[k]), k


def compare(sent: np.ndarray, heard: np.ndarray, rate: int) -> Heard:
    """`sent` and `heard` mono int16 at `rate`; `heard` holds the reply somewhere (earcons, silence around)."""
    if len(heard) < len(sent) // 2 or not len(sent):
        return Heard(None, 0, None, 0, [])
    s = sent.astype(np.float64)
    h = heard.astype(np.float64)
    if len(h) < len(s):
        h = np.concatenate([h, np.zeros(len(s) - len(h))])
    lag = _global_lag(s, h)
    win, search = int(WINDOW_S * rate), int(SEARCH_S * rate)
    total = weight = 0.0
    per_window: list[tuple[int, float]] = []
    lags: list[tuple[int, int]] = []  # (sent offset, lag there)
    for off in range(0, len(s) - win + 1, win):
        w = s[off : off + win]
        rms = float(np.sqrt(np.mean(w**2)))
        lo = max(0, off + lag - search)
        region = h[lo : off + lag + win + search]
        if rms < SPEECH_RMS:
            lags.append((off, lag))
            continue
        c, k = _best_local(w, region)
        lag = lo + k - off
        lags.append((off, lag))
        energy = rms * rms * win
        total += max(c, 0.0) * energy
        weight += energy
        per_window.append((off, c))
    start = lags[0][1] if lags else None
    return Heard(
        round(total / weight, 4) if weight else None,
        _holes(sent, heard, lags, rate),
        start,
        len(per_window),
        per_window,
    )


def _holes(sent: np.ndarray, heard: np.ndarray, lags: list[tuple[int, int]], rate: int) -> int:
    if not lags:
        return 0
    first, last = lags[0][1], lags[-1][0] + lags[-1][1]
    span = heard[max(0, first) : max(0, last)]
    zero = np.concatenate(([False], span == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    starts, ends = edges[0::2], edges[1::2]
    min_len = int(HOLE_S * rate)
    offs = np.array([o for o, _ in lags])
    holes = 0
    for a, b in zip(starts, ends, strict=True):
        if b - a < min_len:
            continue
        at = max(0, first) + a
        i = int(np.clip(np.searchsorted(offs + np.array([lg for _, lg in lags]), at) - 1, 0, len(lags) - 1))
        sent_at = at - lags[i][1]
        piece = sent[max(0, sent_at) : max(0, sent_at + (b - a))]
        if piece.size and int(np.abs(piece.astype(np.int32)).max()) > 100:
            holes += 1
    return holes
