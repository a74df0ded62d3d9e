"""Rate and channel conversion of int16 PCM through PyAV's `AudioResampler` (libswresample).

No hand-written filters: libswresample's are better and already installed with aiortc. Two details of it
shape this module:

- Its mono to stereo upmix lowers the level by 3 dB (a 10000 sample becomes 7071 on both sides), so
  mono input for a stereo output is resampled as mono and then copied to both channels. Its stereo to
  mono downmix is (L + R) / 2, which is what we want.
- A resampler is fixed to its first input's format, layout and rate ("Frame does not match
  AudioResampler setup"), so `PcmConverter` builds a new one when the input changes.
"""

from __future__ import annotations

import fractions
import functools

import av
import numpy as np

_LAYOUTS = {1: "mono", 2: "stereo"}


@functools.cache
def _time_base(rate: int) -> fractions.Fraction:
    """1/rate, made once per rate: a Fraction costs microseconds, and frames are made 50 times a second."""
    return fractions.Fraction(1, rate)


def frame_from_pcm(samples: np.ndarray, rate: int, channels: int = 1, pts: int | None = None) -> av.AudioFrame:
    """An s16 packed `av.AudioFrame` from int16 samples (mono, or interleaved for `channels`)."""
    data = np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=_LAYOUTS[channels])
    frame.sample_rate = rate
    if pts is not None:
        frame.pts = pts
        frame.time_base = _time_base(rate)
    return frame


def pcm_of(frame: av.AudioFrame) -> np.ndarray:
    """A packed s16 frame's samples, interleaved, as a read-only view of its buffer (no copy: PyAV's
    `to_ndarray` copies and stacks its planes, 50 times a second per stream); other formats converted."""
    if frame.format.name == "s16":
        view = np.frombuffer(frame.planes[0], dtype=np.int16, count=frame.samples * len(frame.layout.channels))
        view.flags.writeable = False
        return view
    return frame.to_ndarray().reshape(-1)


def _interleaved(frames: list[av.AudioFrame]) -> np.ndarray:
    """Packed s16 frames to one flat, interleaved int16 array."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([pcm_of(f) for f in frames]).astype(np.int16, copy=False)


class PcmConverter:
    """Streaming conversion of audio frames to interleaved int16 at (`rate`, `channels`).

    Keeps libswresample's state between frames, so a stream of 20 ms frames converts without seams.
    Not thread-safe: one producer.
    """

    def __init__(self, rate: int, channels: int) -> None:
        if channels not in _LAYOUTS:
            raise ValueError(f"channels must be 1 or 2, not {channels}")
        self.rate = rate
        self.channels = channels
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, str, int] | None = None
        self._mono_out = False

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """Convert one frame; returns interleaved int16 (possibly empty: the resampler buffers)."""
        if frame.sample_rate == self.rate and frame.format.name == "s16":
            # The call's audio already is at the speaker's rate: only the channels change, which numpy
            # does for a fraction of a resampler's cost (50 frames a second for as long as a call lasts).
            tail = self._shape(_interleaved(self._flush_frames())) if self._resampler is not None else None
            same = self._channels_only(pcm_of(frame), len(frame.layout.channels))
            return np.concatenate([tail, same]) if tail is not None and tail.size else same
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        out: list[av.AudioFrame] = []
        if key != self._key:
            out += self._flush_frames()
            in_channels = len(frame.layout.channels)
            # Upmix ourselves (see the module docstring): resample mono input as mono.
            self._mono_out = self.channels == 2 and in_channels == 1
            layout = "mono" if self._mono_out else _LAYOUTS[self.channels]
            self._resampler = av.AudioResampler(format="s16", layout=layout, rate=self.rate)
            self._key = key
        assert self._resampler is not None
        out += self._resampler.resample(frame)
        return self._shape(_interleaved(out))

    def _channels_only(self, packed: np.ndarray, in_channels: int) -> np.ndarray:
        """Packed int16 with `in_channels` to `self.channels`: (L + R) / 2 down, a copy to both up,
        as libswresample would (less the 3 dB its upmix loses)."""
        if in_channels == self.channels:
            return packed.astype(np.int16, copy=True)
        if in_channels == 2 and self.channels == 1:
            # floor((L + R) / 2) in int32, from strided views: three numpy calls, no int32 copy first
            total = np.add(packed[0::2], packed[1::2], dtype=np.int32)
            total >>= 1
            return total.astype(np.int16)
        if in_channels == 1 and self.channels == 2:
            return np.repeat(packed, 2).astype(np.int16, copy=False)
        raise ValueError(f"cannot convert {in_channels} channels to {self.channels}")

    def flush(self) -> np.ndarray:
        """The samples still inside the resampler (call at the end of a stream)."""
        return self._shape(_interleaved(self._flush_frames()))

    def _flush_frames(self) -> list[av.AudioFrame]:
        if self._resampler is None:
            return []
        frames = list(self._resampler.resample(None))
        self._resampler = None
        self._key = None
        return frames

    def _shape(self, samples: np.ndarray) -> np.ndarray:
        if self._mono_out and samples.size:
            return np.repeat(samples, 2)
        return samples


def convert_pcm(samples: np.ndarray, rate_in: int, rate_out: int, channels_out: int = 1) -> np.ndarray:
    """One-shot conversion of mono int16 samples (an earcon, a test clip) to `rate_out`, interleaved
    for `channels_out`. The whole clip, resampler tail included."""
    samples = np.asarray(samples, dtype=np.int16).reshape(-1)
    if rate_in == rate_out:
        return np.repeat(samples, channels_out) if channels_out > 1 else samples.copy()
    conv = PcmConverter(rate_out, channels_out)
    head = conv.convert(frame_from_pcm(samples, rate_in, 1, pts=0))
    return np.concatenate([head, conv.flush()])


class StreamResampler:
    """Mono int16 blocks from `rate_in` to `rate_out`, block by block, for consumers of the capture
    stream that need another rate (a 48 kHz microphone feeding the 16 kHz wake word model)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._conv = PcmConverter(rate_out, 1)
        self._pts = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self.rate_in == self.rate_out:
            return np.asarray(samples, dtype=np.int16)
        frame = frame_from_pcm(samples, self.rate_in, 1, pts=self._pts)
        self._pts += len(samples)
        return self._conv.convert(frame)
