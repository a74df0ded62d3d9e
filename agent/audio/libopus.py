"""A small ctypes binding to libopus: what PyAV's codec wrapper does not reach.

A call over Wi-Fi needs three things of Opus that FFmpeg's libopus wrapper (and so PyAV, and so aiortc)
does not give: decoding a lost packet from the in-band FEC (LBRR) carried by the packet after it
(`opus_decode(..., decode_fec=1)`), packet-loss concealment on demand (`opus_decode(NULL)`), and an encoder
whose expected loss can change during the call (`OPUS_SET_PACKET_LOSS_PERC`, which FFmpeg reads only when
the encoder opens). So the call's Opus goes through libopus directly: this module binds the dozen functions
needed and nothing else. It writes no codec.

Which libopus: the one inside PyAV's wheel (`av.libs/libopus-*.so*`, a dependency we already have, the
same build on x86-64 and aarch64), else the system's (`libopus0` on Debian and Raspberry Pi OS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
from pathlib import Path

import numpy as np

# libopus's constants (opus_defines.h)
APPLICATION_VOIP = 2048
SET_BITRATE = 4002
SET_COMPLEXITY = 4010
SET_INBAND_FEC = 4012
SET_PACKET_LOSS_PERC = 4014
SET_SIGNAL = 4024
SIGNAL_VOICE = 3001

#: The longest Opus packet: 120 ms at 48 kHz, per channel.
MAX_FRAME_SAMPLES = 5760
#: Encoded bytes a 20 ms packet can take (far above what the bitrates here produce).
MAX_PACKET_BYTES = 1500


class OpusError(RuntimeError):
    """libopus returned an error code."""


def _candidates() -> list[str]:
    found: list[str] = []
    try:
        import av

        libs = Path(av.__file__).resolve().parent.parent / "av.libs"
        found += sorted(glob.glob(str(libs / "libopus*.so*")))
    except ImportError:  # pragma: no cover - av is a dependency
        pass
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    found.append("libopus.so.0")
    return found


@functools.cache
def library() -> ctypes.CDLL:
    """libopus, loaded once per process (a read-only handle: no state of ours lives in it)."""
    errors: list[str] = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        _declare(lib)
        return lib
    raise OSError("libopus not found (PyAV's bundled copy or Debian's libopus0): " + "; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    p, i32, c_int = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
    lib.opus_strerror.restype = ctypes.c_char_p
    lib.opus_strerror.argtypes = [c_int]
    lib.opus_encoder_create.restype = p
    lib.opus_encoder_create.argtypes = [i32, c_int, c_int, ctypes.POINTER(c_int)]
    lib.opus_encoder_destroy.argtypes = [p]
    lib.opus_encode.restype = i32
    lib.opus_encode.argtypes = [p, ctypes.c_void_p, c_int, ctypes.c_void_p, i32]
    lib.opus_decoder_create.restype = p
    lib.opus_decoder_create.argtypes = [i32, c_int, ctypes.POINTER(c_int)]
    lib.opus_decoder_destroy.argtypes = [p]
    lib.opus_decode.restype = c_int
    lib.opus_decode.argtypes = [p, ctypes.c_char_p, i32, ctypes.c_void_p, c_int, c_int]
    lib.opus_packet_parse.restype = c_int
    lib.opus_packet_parse.argtypes = [
        ctypes.c_char_p,
        i32,
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_int16),
        ctypes.c_void_p,
    ]
    lib.opus_packet_get_samples_per_frame.restype = c_int
    lib.opus_packet_get_samples_per_frame.argtypes = [ctypes.c_char_p, i32]
    lib.opus_packet_get_nb_channels.restype = c_int
    lib.opus_packet_get_nb_channels.argtypes = [ctypes.c_char_p]
    # opus_encoder_ctl and opus_decoder_ctl are variadic: called with explicit c_int arguments.


def _check(code: int, what: str) -> int:
    if code < 0:
        raise OpusError(f"{what}: {library().opus_strerror(code).decode()} ({code})")
    return code


class Encoder:
    """libopus's encoder for 20 ms int16 frames at `rate` (8, 12, 16, 24 or 48 kHz), `channels` 1 or 2.

    `inband_fec` puts a low-bitrate copy of each frame into the next packet (LBRR, SILK and hybrid modes)
    when `packet_loss_perc` is above 0; the call sets that from the receiver's reports as it goes.
    """

    def __init__(
        self,
        rate: int,
        channels: int = 1,
        *,
        bitrate: int = 32000,
        complexity: int = 5,
        application: int = APPLICATION_VOIP,
        inband_fec: bool = False,
        packet_loss_perc: int = 0,
    ) -> None:
        lib = library()
        err = ctypes.c_int(0)
        self._lib = lib
        self._enc = lib.opus_encoder_create(rate, channels, application, ctypes.byref(err))
        _check(err.value, "opus_encoder_create")
        self.rate = rate
        self.channels = channels
        self.frame_samples = rate // 50
        self._out = ctypes.create_string_buffer(MAX_PACKET_BYTES)
        self._ctl(SET_BITRATE, bitrate)
        self._ctl(SET_COMPLEXITY, complexity)
        self._ctl(SET_SIGNAL, SIGNAL_VOICE)
        self.inband_fec = not inband_fec
        self.set_inband_fec(inband_fec)
        self.packet_loss_perc = -1
        self.set_packet_loss(packet_loss_perc)

    def _ctl(self, request: int, value: int) -> None:
        _check(self._lib.opus_encoder_ctl(ctypes.c_void_p(self._enc), ctypes.c_int(request), ctypes.c_int(value)),
               f"opus_encoder_ctl({request})")

    def set_inband_fec(self, on: bool) -> None:
        if on != self.inband_fec:
            self._ctl(SET_INBAND_FEC, 1 if on else 0)
            self.inband_fec = on

    def set_packet_loss(self, percent: int) -> None:
        """The loss the encoder protects against (0 to 100): how much of the bitrate goes to FEC."""
        percent = max(0, min(100, int(percent)))
        if percent != self.packet_loss_perc:
            self._ctl(SET_PACKET_LOSS_PERC, percent)
            self.packet_loss_perc = percent

    def encode(self, samples: np.ndarray) -> bytes:
        """One 20 ms frame (interleaved int16) to one packet."""
        if samples.dtype != np.int16 or len(samples) != self.frame_samples * self.channels:
            raise ValueError(
                f"a frame is {self.frame_samples * self.channels} int16 samples at {self.rate} Hz, "
                f"not {len(samples)} {samples.dtype}"
            )
        pcm = np.ascontiguousarray(samples)
        n = _check(
            self._lib.opus_encode(self._enc, pcm.ctypes.data, self.frame_samples, self._out, MAX_PACKET_BYTES),
            "opus_encode",
        )
        return self._out.raw[:n]

    def close(self) -> None:
        if self._enc:
            self._lib.opus_encoder_destroy(self._enc)
            self._enc = None

    def __del__(self) -> None:
        self.close()


class Decoder:
    """libopus's decoder to int16 at `rate`, `channels` 1 or 2 (a stereo packet is downmixed for 1).

    Three ways to make a frame: `decode(packet)`, `decode_fec(next_packet)` for a lost packet whose
    successor arrived (its LBRR copy where it has one, else concealment), and `conceal()` (libopus's PLC,
    which continues the voice and fades it out over a lost stretch).
    """

    def __init__(self, rate: int = 48000, channels: int = 1) -> None:
        lib = library()
        err = ctypes.c_int(0)
        self._lib = lib
        self._dec = lib.opus_decoder_create(rate, channels, ctypes.byref(err))
        _check(err.value, "opus_decoder_create")
        self.rate = rate
        self.channels = channels
        self.frame_samples = rate // 50
        self._pcm = np.zeros(MAX_FRAME_SAMPLES * channels * rate // 48000, dtype=np.int16)

    def _run(self, data: bytes | None, frame_samples: int, fec: int) -> np.ndarray:
        n = self._lib.opus_decode(
            self._dec, data, len(data) if data else 0, self._pcm.ctypes.data, frame_samples, fec
        )
        _check(n, "opus_decode")
        return self._pcm[: n * self.channels].copy()

    def decode(self, packet: bytes) -> np.ndarray:
        return self._run(packet, len(self._pcm) // self.channels, 0)

    def decode_fec(self, next_packet: bytes, frame_samples: int | None = None) -> np.ndarray:
        """The lost frame before `next_packet`, from its FEC data (concealed if it carries none)."""
        return self._run(next_packet, frame_samples or self.frame_samples, 1)

    def conceal(self, frame_samples: int | None = None) -> np.ndarray:
        return self._run(None, frame_samples or self.frame_samples, 0)

    def close(self) -> None:
        if self._dec:
            self._lib.opus_decoder_destroy(self._dec)
            self._dec = None

    def __del__(self) -> None:
        self.close()


def packet_has_fec(packet: bytes) -> bool:
    """Whether an Opus packet carries in-band FEC (LBRR) for the packet before it.

    libwebrtc's `WebRtcOpus_PacketHasFec`: CELT-only packets never do; for SILK and hybrid ones the LBRR
    flag of each channel is a bit at the head of the first frame, after the VAD flags.
    """
    if not packet or packet[0] & 0x80:  # empty, or CELT-only (TOC config 16..31)
        return False
    lib = library()
    ms = max(10, lib.opus_packet_get_samples_per_frame(packet, 48000) // 48)
    frames = {10: 1, 20: 1, 40: 2, 60: 3}.get(ms)
    if frames is None:
        return False
    channels = lib.opus_packet_get_nb_channels(packet)
    data = (ctypes.c_void_p * 48)()
    sizes = (ctypes.c_int16 * 48)()
    if lib.opus_packet_parse(packet, len(packet), None, data, sizes, None) < 0 or sizes[0] <= 1:
        return False
    first = ctypes.cast(data[0], ctypes.POINTER(ctypes.c_uint8))[0]
    return any(first & (0x80 >> ((n + 1) * (frames + 1) - 1)) for n in range(channels))


__all__ = ["Decoder", "Encoder", "OpusError", "library", "packet_has_fec"]
