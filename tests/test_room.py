"""The room of the test world: what the speaker plays comes back into the microphone, through real ALSA
(alsa-lib's file plugin on both sides), at the level, delay and shape the room says."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import alsaaudio
import numpy as np
import pytest

from agent.audio.resample import convert_pcm
from agent.room import Room, RoomSpec, impulse_response
from agent.room.acoustics import Convolver


def test_impulse_response_is_the_room_it_says() -> None:
    spec = RoomSpec(echo_db=-6.0, direct_ms=5.0, tail_ms=300.0, seed=3)
    h = impulse_response(spec, 16000)
    assert len(h) == 4800
    assert 10 * np.log10(np.sum(h**2)) == pytest.approx(-6.0, abs=0.01)  # unit energy times the echo's gain
    assert int(np.argmax(np.abs(h))) == 80  # the direct path, 5 ms in
    assert not np.any(h[:80])  # nothing before it
    assert np.abs(h[-160:]).max() < np.abs(h).max() / 100  # the tail has decayed by its end
    assert np.array_equal(h, impulse_response(spec, 16000))  # seeded
    assert not np.array_equal(h, impulse_response(RoomSpec(echo_db=-6.0, direct_ms=5.0, seed=4), 16000))


def test_convolver_matches_a_direct_convolution() -> None:
    rng = np.random.default_rng(0)
    h = rng.standard_normal(700)
    x = rng.standard_normal(320 * 10)
    conv = Convolver(h, 320)
    full = np.convolve(x, h)[: len(x)]
    padded = np.concatenate([np.zeros(conv.history), x])
    for k in range(10):
        end = conv.history + (k + 1) * 320
        np.testing.assert_allclose(conv.block(padded[end - conv.history : end]), full[k * 320 : (k + 1) * 320],
                                   atol=1e-9)  # fmt: skip


def _play_and_record(room: Room, burst: np.ndarray, seconds: float, shift_at: float | None = None) -> np.ndarray:
    """Play `burst` (48 kHz mono) at 0.3 s through the room's speaker while recording its microphone."""
    recorded: list[bytes] = []
    stop = threading.Event()

    def record() -> None:
        pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=room.capture_device, rate=16000, channels=1,
                            format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=320, periods=4)  # fmt: skip
        while not stop.is_set():
            n, data = pcm.read()
            if n > 0:
                recorded.append(data)
        pcm.close()

    reader = threading.Thread(target=record, daemon=True)
    reader.start()
    spk = alsaaudio.PCM(alsaaudio.PCM_PLAYBACK, device=room.playback_device, rate=48000, channels=1,
                        format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=960, periods=4)  # fmt: skip
    signal = np.concatenate([np.zeros(int(0.3 * 48000), np.int16), burst, np.zeros(48000, np.int16)])
    t0 = time.monotonic()
    shifted = False
    for k in range(0, len(signal) - 959, 960):
        while time.monotonic() < t0 + k / 48000:
            time.sleep(0.002)
        if shift_at is not None and not shifted and k / 48000 >= shift_at:
            room.shift_latency(40)
            shifted = True
        spk.write(signal[k : k + 960])
    time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    stop.set()
    reader.join(2)
    spk.drop()
    spk.close()
    return np.frombuffer(b"".join(recorded), np.int16)


def test_the_microphone_hears_the_speaker_at_the_rooms_level(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    # a second of noise, white up to the microphone's 8 kHz (what lies above it no microphone here hears)
    burst = convert_pcm((rng.standard_normal(16000) * 3000).astype(np.int16), 16000, 48000)
    with Room(tmp_path, RoomSpec(echo_db=-6.0, noise_dbfs=-70.0)) as room:
        mic = _play_and_record(room, burst, 2.0)
    loud = np.sqrt(np.convolve(mic.astype(float) ** 2, np.ones(1600) / 1600, "valid"))
    level = 20 * np.log10(np.median(loud[loud > loud.max() / 3]) / 3000)
    assert level == pytest.approx(-6.0, abs=1.5)
    assert 20 * np.log10(np.sqrt(np.mean(mic[:3000].astype(float) ** 2)) / 32768) == pytest.approx(-70, abs=2)
    # the echo in the microphone, by the room's own record, is what was heard beyond the noise
    echo = np.concatenate([p.samples for p in room.echo_log]).astype(float)
    assert 20 * np.log10(np.sqrt(np.mean(echo[echo != 0] ** 2)) / 3000) == pytest.approx(-6.0, abs=2)


def test_the_device_latency_jump_moves_the_echo(tmp_path: Path) -> None:
    """Two clicks 0.5 s apart; the device's hidden latency jumps 40 ms between them."""
    click = np.zeros(24000 + 4800, np.int16)
    click[:480] = 20000
    click[24000 : 24000 + 480] = 20000
    with Room(tmp_path, RoomSpec(echo_db=0.0, noise_dbfs=None, reverb_db=-30)) as room:
        _play_and_record(room, click, 1.6, shift_at=0.3 + 0.25)
        echo = np.concatenate([p.samples for p in room.echo_log]).astype(float)
    onsets = np.flatnonzero(np.abs(echo) > 5000)
    first = onsets[0]
    second = onsets[onsets > first + 4000][0]
    assert (second - first) / 16 == pytest.approx(500 + 40, abs=3)
