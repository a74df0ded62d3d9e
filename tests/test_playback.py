"""The ALSA playback edge through real alsa-lib and pyalsaaudio, into a WAV via the `file` plugin.

The file plugin over `null` never blocks, so these tests also check that playback paces itself in real
time. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import alsaaudio
import numpy as np
import pytest

from agent.audio.fileplugin import playback_device, use_file_plugin, write_file_plugin_conf
from agent.audio.playback import AlsaPlayback, PlayoutBuffer
from agent.config import PlaybackConfig
from tests.audio_helpers import (
    EPIPE,
    FakePcm,
    FakePcmFactory,
    active_span,
    av_frames,
    dominant_frequency,
    read_wav,
    rms,
    sine,
    wait_until,
)


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    use_file_plugin(tmp_path)
    return tmp_path


def config(out: Path, **kw) -> PlaybackConfig:
    return PlaybackConfig(**{"device": playback_device(out), "period_ms": 20, **kw})


async def play_out(pb: AlsaPlayback, timeout: float = 3.0) -> None:
    """Wait until everything queued was handed to ALSA and the device played it."""
    await wait_until(lambda: pb.buffered_s == 0, timeout, "the queued audio to play")


@pytest.mark.parametrize(("rate", "channels"), [(48000, 2), (16000, 1)])
async def test_remote_frames_play_as_a_tone_in_real_time(alsa: Path, rate: int, channels: int) -> None:
    """aiortc-like 48 kHz stereo 960-sample frames, converted to the device's rate and channels."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=rate, channels=channels))
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        t0 = time.monotonic()
        for frame in av_frames(sine(1000, 0.5, 48000, amplitude=10000)):
            pb.write_frame(frame)
        await play_out(pb)
        elapsed = time.monotonic() - t0
    finally:
        await pb.stop()
    assert 0.45 < elapsed < 0.7  # paced in real time, not written at once
    wav_rate, wav_channels, frames = read_wav(out)
    assert (wav_rate, wav_channels) == (rate, channels)
    first, last = active_span(frames[:, 0])
    tone = frames[first : last + 1]
    assert abs(len(tone) / rate - 0.5) < 0.01
    assert abs(dominant_frequency(tone[:, 0], rate) - 1000) < 2
    assert abs(rms(tone[100:-100, 0]) - 10000 / np.sqrt(2)) < 0.02 * 10000
    if channels == 2:
        assert np.array_equal(tone[:, 0], tone[:, 1])
    stats = pb.stats
    assert stats.underruns == 0 and stats.dropped_ms == 0 and stats.xruns == 0
    assert stats.state == "stopped"
    assert stats.audio_frames >= round(0.49 * rate)
    # Nothing is written while nothing plays: the WAV starts with the tone, not with silence.
    assert first < rate * 0.02


async def test_volume_scales(alsa: Path) -> None:
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2, volume=0.25))
    await pb.start()
    try:
        for frame in av_frames(sine(500, 0.2, 48000, amplitude=20000)):
            pb.write_frame(frame)
        await play_out(pb)
    finally:
        await pb.stop()
    _, _, frames = read_wav(out)
    first, last = active_span(frames[:, 0], threshold=100)
    assert abs(np.abs(frames[first : last + 1, 0]).max() - 5000) <= 2


async def test_earcon_pcm_is_resampled_without_losing_level(alsa: Path) -> None:
    """Mono 16 kHz samples into a 48 kHz stereo device: same tone, same level on both sides
    (libswresample's own upmix would lower it by 3 dB)."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2))
    await pb.start()
    try:
        pb.write_pcm(sine(800, 0.3, 16000, amplitude=12000), 16000)
        await play_out(pb)
    finally:
        await pb.stop()
    _, _, frames = read_wav(out)
    first, last = active_span(frames[:, 0])
    tone = frames[first : last + 1]
    assert abs(len(tone) / 48000 - 0.3) < 0.01
    assert abs(dominant_frequency(tone[:, 0], 48000) - 800) < 2
    assert np.array_equal(tone[:, 0], tone[:, 1])
    assert abs(np.abs(tone[:, 0]).max() - 12000) < 200


@pytest.mark.parametrize("volume", [1.0, 0.002])
async def test_only_writes_that_carry_sound_count_as_audible(alsa: Path, volume: float) -> None:
    """`audible_writes` and `last_audible_t` (the wake word's echo guard, the barge-in measurements) come
    from what the producer found audible, frame by frame and earcon period by period, never from a
    scan on the device's thread; a volume that makes the sound inaudible makes the writes so too."""
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2, volume=volume))
    await pb.start()
    try:
        quiet = np.zeros(int(0.2 * 48000), np.int16)
        for frame in av_frames(np.concatenate([quiet, sine(500, 0.2, 48000, amplitude=20000), quiet])):
            pb.write_frame(frame)
        await play_out(pb)
        reply = sorted(pb.audible_writes)
        pb.audible_writes.clear()
        pb.write_pcm(np.concatenate([quiet[:9600], sine(800, 0.1, 48000, amplitude=12000), quiet[:9600]]), 48000)
        await play_out(pb)
        earcon = sorted(pb.audible_writes)
    finally:
        await pb.stop()
    if volume < 1:
        assert reply == [] and earcon == [] and pb.last_audible_t is None
        return
    assert len(reply) == 10 and len(earcon) == 5  # 200 ms and 100 ms of tone, 20 ms a write
    assert reply[-1] - reply[0] == pytest.approx(0.18, abs=0.04)  # written at real time, not together
    assert pb.last_audible_t == earcon[-1]


@pytest.mark.parametrize("driven", [False, True], ids=["self-paced", "driven"])
async def test_flush_drops_queued_audio_promptly(alsa: Path, driven: bool) -> None:
    """Driven too (full duplex): the flush wakes the playback thread, it does not wait for a pump."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2, buffer_ms=3000))
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        with Driver(pb) if driven else contextlib.nullcontext():
            for frame in av_frames(sine(1000, 2.0, 48000)):
                pb.write_frame(frame)
            await asyncio.sleep(0.3)
            dropped_ms = pb.flush()
            t_flush = time.monotonic()
            await wait_until(lambda: pb.buffered_s == 0, 1, "silence after the flush")
            assert time.monotonic() - t_flush < 0.03  # within about a period
            await asyncio.sleep(0.1)
    finally:
        await pb.stop()
    assert 1550 < dropped_ms < 1750
    assert pb.stats.flushed_ms == dropped_ms
    assert max(pb.audible_writes) < t_flush
    _, _, frames = read_wav(out)
    first, last = active_span(frames[:, 0])
    played_s = (last - first + 1) / 48000
    assert 0.25 < played_s < 0.4  # what played before the flush (plus at most the write lead)
    assert pb.flush() == 0


async def test_buffer_bound_drops_the_oldest_audio(alsa: Path) -> None:
    """1.5 s of 440 Hz then 0.5 s of 880 Hz into a 500 ms buffer before playback starts: only the
    newest 500 ms (the 880 Hz) is played, and 1500 ms count as dropped."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2, buffer_ms=500))
    for frame in av_frames(sine(440, 1.5, 48000)) + av_frames(sine(880, 0.5, 48000), pts0=72000):
        pb.write_frame(frame)
    assert pb.buffered_ms == 500
    assert pb.stats.dropped_ms == 1500
    await pb.start()
    try:
        await play_out(pb)
    finally:
        await pb.stop()
    _, _, frames = read_wav(out)
    first, last = active_span(frames[:, 0])
    tone = frames[first : last + 1, 0]
    assert abs(len(tone) / 48000 - 0.5) < 0.01
    assert abs(dominant_frequency(tone, 48000) - 880) < 3


async def test_underrun_counted_only_for_a_gap_mid_audio(alsa: Path) -> None:
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2), underrun_gap_ms=300)
    chunk = av_frames(sine(600, 0.1, 48000))
    await pb.start()
    try:
        await asyncio.sleep(0.1)  # idle: silence is no underrun
        for frame in chunk:
            pb.write_frame(frame)
        await play_out(pb)
        assert pb.stats.underruns == 0
        await asyncio.sleep(0.08)  # ran dry, and more audio comes soon after: an underrun
        for frame in chunk:
            pb.write_frame(frame)
        await play_out(pb)
        assert pb.stats.underruns == 1
        await asyncio.sleep(0.5)  # the audio ended; a later answer is no underrun
        for frame in chunk:
            pb.write_frame(frame)
        await play_out(pb)
    finally:
        await pb.stop()
    assert pb.stats.underruns == 1


async def test_a_gap_in_silence_is_no_underrun(alsa: Path) -> None:
    """The service streams silence between replies; a gap in it (after a barge-in the stopped reply's
    tail is dropped, not queued) interrupts no sound: not an underrun, and no latency is added for it.
    The same gap in a tone is one."""
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2), underrun_gap_ms=300)
    floor = pb.max_latency_s
    await pb.start()
    try:
        for samples in (np.zeros(4800, np.int16), sine(600, 0.1, 48000)):
            for frame in av_frames(samples):
                pb.write_frame(frame)
            await play_out(pb)
            await asyncio.sleep(0.08)  # ran dry; more comes within underrun_gap_ms
            for frame in av_frames(samples):
                pb.write_frame(frame)
            await play_out(pb)
            if not samples.any():
                assert pb.stats.underruns == 0 and pb.max_latency_s == floor
            await asyncio.sleep(0.4)  # the end of this stream: what comes next is a new start
    finally:
        await pb.stop()
    assert pb.stats.underruns == 1 and pb.max_latency_s > floor


async def test_timing_hooks_report_when_audio_reached_alsa(alsa: Path) -> None:
    out = alsa / "out.wav"
    calls: list[tuple[float, int, str]] = []
    pb = AlsaPlayback(
        config(out, rate=48000, channels=2),
        on_written=lambda t, n: calls.append((t, n, threading.current_thread().name)),
    )
    await pb.start()
    try:
        await asyncio.sleep(0.1)
        assert calls == []  # silence is not reported
        mark = pb.mark()
        assert pb.first_write_after(mark) is None
        t_push = time.monotonic()
        for frame in av_frames(sine(1000, 0.2, 48000)):
            pb.write_frame(frame)
        await play_out(pb)
        t_first = pb.first_write_after(mark)
    finally:
        await pb.stop()
    assert t_first is not None
    assert 0 <= t_first - t_push < 0.06  # at most the write lead (2 periods) plus a wake-up
    assert t_first == calls[0][0]
    assert sum(n for _, n, _ in calls) == 9600
    assert all(name.startswith("alsa-playback") for _, _, name in calls)


@pytest.mark.parametrize("driven", [False, True], ids=["self-paced", "driven"])
async def test_when_queued_audio_is_heard(alsa: Path, driven: bool) -> None:
    """`first_play_after(mark)`: when the audio queued after `mark` comes out of the device, from what
    the device held ahead of the write that carried it. Written early or late, by the playback thread
    or by a driver, a continuous tone's frames are heard a frame apart, from its first write on."""
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2))
    await pb.start()
    try:
        with Driver(pb) if driven else contextlib.nullcontext():
            await asyncio.sleep(0.1)
            marks = []
            t_push = time.monotonic()
            for frame in av_frames(sine(1000, 0.2, 48000)):
                marks.append(pb.mark())
                pb.write_frame(frame)
            await play_out(pb)
        heard = [pb.first_play_after(m) for m in marks]
        t_first_write = pb.first_write_after(marks[0])
    finally:
        await pb.stop()
    assert None not in heard and t_first_write is not None
    assert t_push <= heard[0] <= t_first_write  # the device was stopped: the first write is heard at once
    steps = [b - a for a, b in itertools.pairwise(heard)]  # type: ignore[operator]
    assert all(abs(step - 0.02) < 0.002 for step in steps), steps


async def test_open_error_retries_then_recovers(alsa: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A device that is not defined yet: state error, reopens back off; once it exists, playback runs."""
    pb = AlsaPlayback(
        PlaybackConfig(device="laterplay", rate=48000, channels=2),
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
    )
    await pb.start()
    try:
        await wait_until(lambda: pb.stats.reopen_count >= 3, 3, "reopen attempts")
        assert pb.state == "error" and "laterplay" in (pb.stats.last_error or "")
        extra = write_file_plugin_conf(alsa / "more")
        out = alsa / "late.wav"
        extra.write_text(
            extra.read_text() + f'pcm.laterplay {{ type file slave.pcm "null" file "{out}" format "wav" }}\n'
        )
        monkeypatch.setenv("ALSA_CONFIG_PATH", f"/usr/share/alsa/alsa.conf:{extra}")
        await wait_until(lambda: pb.state == "running", 3, "running")
        pb.write_pcm(sine(1000, 0.1, 48000), 48000)
        await play_out(pb)
    finally:
        await pb.stop()
    _, _, frames = read_wav(out)
    first, last = active_span(frames[:, 0])
    assert abs((last - first + 1) / 48000 - 0.1) < 0.005


class GatedPcm(FakePcm):
    """A device whose writes can be held (a barge-in lands while a period is in the write), and which
    logs what it is told: ("write", time, audible) and ("drop", time)."""

    def __init__(self, script: list[Any], period_s: float, info: dict[str, Any]) -> None:
        super().__init__(script, period_s, info)
        self.gate = threading.Event()
        self.gate.set()
        self.in_write = threading.Event()
        self.log: list[tuple[str, float, bool]] = []

    def write(self, data: bytes | np.ndarray) -> int:
        self.in_write.set()
        self.gate.wait(2.0)
        time.sleep(0.005)  # a device takes a moment per write
        samples = np.frombuffer(data, np.int16)
        self.log.append(("write", time.monotonic(), bool(np.abs(samples).max(initial=0) > 1000)))
        return len(samples) // self._info["channels"]

    def drop(self) -> None:
        self.log.append(("drop", time.monotonic(), False))


def gated_playback() -> tuple[AlsaPlayback, list[GatedPcm]]:
    factory = FakePcmFactory([], period_s=0.0, pcm_type=GatedPcm)
    cfg = PlaybackConfig(device="hw:0", rate=48000, channels=2, period_ms=10)
    return AlsaPlayback(cfg, pcm_factory=factory), factory.opened  # type: ignore[return-value]


async def test_a_flush_during_a_write_drops_it_from_the_device_and_it_never_counts_as_heard() -> None:
    pb, opened = gated_playback()
    await pb.start()
    try:
        pb.write_pcm(sine(1000, 1.0, 48000), 48000)
        await wait_until(lambda: opened and len(opened[0].log) >= 5, 2, "the reply playing")
        pcm = opened[0]
        pcm.gate.clear()
        pcm.in_write.clear()
        await wait_until(pcm.in_write.is_set, 1, "a write in progress")
        pb.flush()
        t_flush = time.monotonic()
        pcm.gate.set()
        await wait_until(lambda: any(kind == "drop" and t > t_flush for kind, t, _ in pcm.log), 1, "the drop")
        await asyncio.sleep(0.1)
    finally:
        await pb.stop()
    after = [(kind, audible) for kind, t, audible in pcm.log if t > t_flush]
    # the held write ends after the flush; the drop comes next and takes it out of the device
    assert after[:2] == [("write", True), ("drop", False)], after
    assert not any(audible for _, audible in after[2:])
    assert pb.audible_writes and max(pb.audible_writes) < t_flush
    assert pb.last_audible_t is not None and pb.last_audible_t < t_flush


async def test_a_period_taken_just_before_a_flush_is_not_written() -> None:
    """The thread takes a period from the buffer, then the event loop's flush comes before the write: the
    period is the reply's, and is dropped with the rest."""
    pb, opened = gated_playback()
    take = pb._buf.take
    taken: list[int] = []

    def take_then_flush(n: int) -> tuple[np.ndarray, int, bool]:
        frames, start, audible = take(n)
        taken.append(len(frames))
        if len(taken) == 5:
            pb.flush()  # lands between this take and its write
        return frames, start, audible

    pb._buf.take = take_then_flush  # type: ignore[method-assign]
    await pb.start()
    try:
        pb.write_pcm(sine(1000, 1.0, 48000), 48000)
        await wait_until(lambda: len(taken) >= 5 and pb.buffered_s == 0, 2, "the flush")
        await asyncio.sleep(0.1)
    finally:
        await pb.stop()
    writes = [audible for kind, _, audible in opened[0].log if kind == "write"]
    assert writes[:4] == [True] * 4 and not any(writes[4:]), writes  # the 5th period never reached the device


class Driver:
    """A capture thread's stand-in: calls `pump()` every period on an absolute schedule, as reads of a
    live microphone would, until told to stop (then `release()`, unless it stalls)."""

    def __init__(self, pb: AlsaPlayback, period_s: float = 0.02) -> None:
        self.pb, self.period_s = pb, period_s
        self.done = threading.Event()
        self.release_at_end = True
        self.thread = threading.Thread(target=self._run, name="driver", daemon=True)

    def _run(self) -> None:
        t = time.monotonic()
        while not self.done.is_set():
            t += self.period_s
            time.sleep(max(0.0, t - time.monotonic()))
            self.pb.pump()
        if self.release_at_end:
            self.pb.release()

    def __enter__(self) -> Driver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(1)


def writer_threads(pb: AlsaPlayback) -> list[str]:
    """Record, per write that carried audio, the thread that made it."""
    names: list[str] = []
    pb.on_written = lambda t, n: names.append(threading.current_thread().name)
    return names


async def test_a_driven_device_plays_without_a_gap_from_the_drivers_thread(alsa: Path) -> None:
    """Full duplex: a thread pumping every period writes the reply (the playback thread barely wakes),
    and the tone plays whole and at its real length, with no underrun; when the driver releases it
    mid-tone, the playback thread takes over with no gap either."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2))
    names = writer_threads(pb)
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        frames = av_frames(sine(440, 1.6, 48000))
        half = len(frames) // 2

        async def feed(part: list[Any], t0: float) -> None:  # the call's frames, one per 20 ms
            for k, frame in enumerate(part):
                await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                pb.write_frame(frame)

        with Driver(pb):
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            await feed(frames[:half], t0)
            driven = list(names)
        await feed(frames[half:], t0 + half * 0.02)
        await play_out(pb)
        await asyncio.sleep(0.1)
    finally:
        await pb.stop()
    stats = pb.stats
    assert stats.underruns == 0 and stats.xruns == 0, stats
    assert stats.driven_passes >= 40
    # the driver wrote the driven half, but for the start (the playback thread is woken to start a device)
    assert driven.count("driver") >= len(driven) - 4, driven
    assert names[len(driven) + 3 :] and set(names[len(driven) + 3 :]) == {"alsa-playback:" + pb.cfg.device}
    _, _, played = read_wav(out)
    first, last = active_span(played[:, 0])
    assert abs((last - first + 1) / 48000 - 1.6) < 0.005  # whole, and not stretched by a gap
    loud = np.abs(played[first : last + 1, 0]) > 0
    assert loud.mean() > 0.99  # no stretch of silence inside the tone


async def test_a_driven_device_starts_a_reply_without_waiting_for_the_next_read(alsa: Path) -> None:
    """The start of a reply (the prebuffer queued at once) is the playback thread's, woken by the audio:
    not left to the driver's next pass, up to a period later."""
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2), underrun_gap_ms=60)
    starts: list[float] = []
    pb.on_written = lambda t, n: starts.append(t)
    delays = []
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        with Driver(pb, period_s=0.02):
            for k in range(8):
                await asyncio.sleep(0.2 + 0.0025 * k)  # the device stopped; any phase against the driver
                starts.clear()
                t_push = time.monotonic()
                for frame in av_frames(sine(700, 0.06, 48000)):
                    pb.write_frame(frame)
                await wait_until(lambda: bool(starts), 1, "the start")
                delays.append(starts[0] - t_push)
    finally:
        await pb.stop()
    # woken by the audio: about 1 ms here; left to the driver's next pass, 4 to 11 ms (median 8.6)
    assert statistics.median(delays) < 0.005, delays


@pytest.mark.parametrize("phase_ms", [0.0, 2.5, 5.0, 15.0])
async def test_a_driven_device_waits_for_a_late_frame_as_long_as_a_self_paced_one(alsa: Path, phase_ms: float) -> None:
    """Three frames 25 ms late mid-reply: the self-paced thread waits for them (it pads only when the
    device is down to half a period), and a driven device must too, whatever the phase of the reads
    against the frames. A driven pass that padded once the device held less than a pass's wait and a
    half underran here at 6 of 8 phases."""
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2))
    frames = av_frames(sine(500, 0.8, 48000))
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        driver = Driver(pb)
        with driver:
            await asyncio.sleep(0.1)
            base = time.monotonic() + phase_ms / 1000
            for k, frame in enumerate(frames):
                late = 0.025 if k in (15, 16, 17) else 0.0
                await asyncio.sleep(max(0.0, base + k * 0.02 + late - time.monotonic()))
                pb.write_frame(frame)
            await play_out(pb)
    finally:
        await pb.stop()
    assert pb.stats.underruns == 0 and pb.stats.xruns == 0, pb.stats
    assert pb.stats.driven_passes >= 30


async def test_a_driver_that_stalls_hands_the_device_back() -> None:
    """A capture thread that stops pumping without a release (a read that hangs): the playback thread
    looks again within DRIVEN_CHECK_S and plays the rest itself."""
    pb, _ = gated_playback()
    names = writer_threads(pb)
    await pb.start()
    try:
        driver = Driver(pb, period_s=0.01)
        driver.release_at_end = False
        with driver:
            pb.write_pcm(sine(1000, 1.0, 48000), 48000)
            await asyncio.sleep(0.3)
        stalled = len(names)
        await wait_until(lambda: pb.buffered_s == 0, 2, "the rest played by the playback thread")
    finally:
        await pb.stop()
    assert "driver" in names[:stalled]
    assert names[stalled + 2 :] and set(names[stalled + 2 :]) == {"alsa-playback:hw:0"}


async def test_a_write_after_the_device_ran_out_is_counted() -> None:
    """A writer held up past what the device was given (here a write that hangs for 150 ms) leaves a
    gap on the speaker: `late_writes` counts it, though this device, like the file plugin, never xruns."""
    pb, opened = gated_playback()
    await pb.start()
    try:
        pb.write_pcm(sine(1000, 1.0, 48000), 48000)
        await wait_until(lambda: opened and len(opened[0].log) >= 5, 2, "a few writes")
        opened[0].gate.clear()
        await asyncio.sleep(0.15)
        opened[0].gate.set()
        await wait_until(lambda: pb.buffered_s == 0, 3, "the rest to play")
    finally:
        await pb.stop()
    assert pb.stats.late_writes >= 1 and pb.stats.xruns == 0


async def test_write_error_reopens_and_xrun_is_counted() -> None:
    """pyalsaaudio reports an ALSA underrun as write() -> -EPIPE (counted as an xrun); a write that
    raises (device unplugged) reopens the device."""
    factory = FakePcmFactory(
        [[None, EPIPE, None, alsaaudio.ALSAAudioError("No such device [hw:0]")], [None] * 1000],
        period_s=0.002,
    )
    pb = AlsaPlayback(
        PlaybackConfig(device="hw:0", rate=48000, channels=2, period_ms=10),
        backoff_initial_s=0.01,
        pcm_factory=factory,
    )
    await pb.start()
    pb.write_pcm(sine(500, 1.0, 48000), 48000)  # audio to write: an idle device gets no writes
    try:
        await wait_until(lambda: pb.stats.reopen_count == 1 and pb.state == "running", 2, "the reopen")
        await wait_until(lambda: len(factory.opened[-1].written) >= 3, 2, "writes after the reopen")
        stats = pb.stats
        assert stats.xruns == 1
        assert "No such device" in (stats.last_error or "")
    finally:
        await pb.stop()
    assert all(pcm.closed for pcm in factory.opened)


async def test_stop_is_prompt_and_drops_queued_audio(alsa: Path) -> None:
    pb = AlsaPlayback(config(alsa / "out.wav", rate=48000, channels=2))
    await pb.start()
    for frame in av_frames(sine(1000, 1.5, 48000)):
        pb.write_frame(frame)
    await asyncio.sleep(0.05)
    t0 = time.monotonic()
    await pb.stop()
    assert time.monotonic() - t0 < 0.1
    assert pb.buffered_s == 0
    assert not any(t.name.startswith("alsa-playback") for t in threading.enumerate())


async def test_nothing_is_written_while_nothing_plays(alsa: Path) -> None:
    """An idle speaker gets no stream of silence: the file plugin's output stays empty until audio is
    queued, stops growing once it has played (after the `underrun_gap_ms` tail), and the device starts
    again for the next clip."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=2), underrun_gap_ms=200)
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        await asyncio.sleep(0.5)
        assert pb.stats.written_frames == 0
        assert not out.exists() or out.stat().st_size == 0  # the device is open, and got nothing
        for _ in range(2):
            before = pb.stats.written_frames
            pb.write_pcm(sine(700, 0.2, 48000, amplitude=8000), 48000)
            await play_out(pb)
            await asyncio.sleep(0.4)  # the silence tail (200 ms) is over: the device is stopped
            written = pb.stats.written_frames
            size = out.stat().st_size
            await asyncio.sleep(0.5)
            assert pb.stats.written_frames == written and out.stat().st_size == size
            assert 0.2 * 48000 <= written - before < 0.5 * 48000  # the clip and its tail, not 0.9 s of silence
        assert pb.state == "running" and pb.stats.xruns == 0 and pb.stats.underruns == 0
    finally:
        await pb.stop()
    _, _, frames = read_wav(out)
    spans = np.flatnonzero(np.abs(frames[:, 0]) > 1000)
    assert len(frames) < 2 * 0.5 * 48000  # two clips and their tails: nothing for the idle seconds
    gaps = np.flatnonzero(np.diff(spans) > 48000 * 0.1)
    assert len(gaps) == 1  # both clips played, one after the other, with only a tail of silence between
    for first, last in ((spans[0], spans[gaps[0]]), (spans[gaps[0] + 1], spans[-1])):
        assert abs((last - first) / 48000 - 0.2) < 0.005


def test_playout_buffer_positions() -> None:
    buf = PlayoutBuffer(channels=2, max_frames=10)
    assert buf.push(np.arange(16, dtype=np.int16), audible=False) == 0  # 8 frames
    assert buf.push(np.arange(8, dtype=np.int16), audible=True) == 2  # 12 > 10: the 2 oldest go
    assert (buf.head_pos, buf.end_pos, buf.frames) == (2, 12, 10)
    frames, start, audible = buf.take(4)
    assert start == 2 and frames[:, 0].tolist() == [4, 6, 8, 10] and not audible
    frames, start, audible = buf.take(100)  # the first chunk's last 2 frames, and the audible one
    assert start == 6 and len(frames) == 6 and buf.frames == 0 and audible
    assert frames.flags.c_contiguous
    assert buf.oldest_push_t is None
    assert buf.push(np.arange(8, dtype=np.int16), audible=True) == 0
    whole = buf._chunks[0][0]
    frames, _, audible = buf.take(4)
    assert frames is whole and audible  # a whole chunk is handed out as it is


def test_same_rate_frames_take_the_numpy_path_and_match_libswresample() -> None:
    """The call's 48 kHz stereo frames to a 48 kHz mono (or stereo) speaker: only the channels change,
    done with numpy, sample for sample what libswresample's (L + R) / 2 gives."""
    import av

    from agent.audio.resample import PcmConverter, frame_from_pcm

    rng = np.random.default_rng(3)
    stereo = rng.integers(-20000, 20000, size=960 * 2, dtype=np.int16)
    frame = frame_from_pcm(stereo, 48000, channels=2, pts=0)
    mono = PcmConverter(48000, 1).convert(frame)
    reference = av.AudioResampler(format="s16", layout="mono", rate=48000).resample(frame)
    expected = np.concatenate([f.to_ndarray().reshape(-1) for f in reference])
    assert mono.shape == (960,) and np.abs(mono.astype(int) - expected[: len(mono)].astype(int)).max() <= 1
    assert np.array_equal(PcmConverter(48000, 2).convert(frame), stereo)
    up = PcmConverter(48000, 2).convert(frame_from_pcm(stereo[:960], 48000))
    assert np.array_equal(up[0::2], stereo[:960]) and np.array_equal(up[1::2], stereo[:960])
    # a rate change goes through the resampler, and back: nothing is lost at the seams
    conv = PcmConverter(48000, 1)
    n = sum(len(conv.convert(frame_from_pcm(stereo[:320], 16000))) for _ in range(10))
    n += len(conv.convert(frame))
    assert abs(n - (10 * 960 + 960)) <= 64


@pytest.mark.parametrize("driven", [False, True], ids=["self-paced", "driven"])
@pytest.mark.parametrize("jitter_ms", [0.0, 8.0, 25.0])
async def test_a_reply_arriving_in_real_time_plays_without_a_gap(alsa: Path, jitter_ms: float, driven: bool) -> None:
    """A reply's frames arrive one per 20 ms (as aiortc hands them out, give or take the network's
    jitter) at a speaker that was stopped: the device must start with enough queued that the second
    frame is there before it is needed. Otherwise a period of silence goes in after the first frame of
    every reply: an audible gap, and the rest of the reply a period later (an underrun each reply).
    Driven (full duplex) as well: a pass that finds a frame late leaves the wait to the playback
    thread, which pads only when the device is down to half a period, so 25 ms late is still in time."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=1))
    frames = av_frames(sine(500, 1.0, 48000, amplitude=10000))
    rng = np.random.default_rng(3)
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        with Driver(pb) if driven else contextlib.nullcontext():
            await asyncio.sleep(0.2)  # idle: the device is stopped
            t0 = time.monotonic()
            for k, frame in enumerate(frames):
                due = t0 + k * 0.02 + rng.uniform(0, jitter_ms) / 1000
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                pb.write_frame(frame)
            await play_out(pb)
    finally:
        await pb.stop()
    assert pb.stats.underruns == 0 and pb.stats.xruns == 0
    _, _, wav = read_wav(out)
    first, last = active_span(wav[:, 0])
    tone = wav[first : last + 1, 0]
    assert abs(len(tone) / 48000 - 1.0) < 0.005  # the reply's second, with no silence inside it


async def test_a_network_stall_does_not_delay_the_rest_of_the_call(alsa: Path) -> None:
    """The service streams RTP all call long, silence included. After a stall the late frames come in a
    burst (the sender's clock did not stop): the stall is filled with silence (an underrun) and the burst
    queues, which would delay everything after it for the rest of the call. The latency the underrun
    earned is kept a while (slack for the next late frame) and then silent frames are dropped until the
    voice is back to its usual delay. Audible frames are never dropped."""
    out = alsa / "out.wav"
    pb = AlsaPlayback(config(out, rate=48000, channels=1), slack_decay_s=0.3)
    frames = av_frames(np.concatenate([sine(500, 0.6, 48000, amplitude=10000), np.zeros(48000 * 3, np.int16)]))
    base = pb.max_latency_s
    await pb.start()
    try:
        await wait_until(lambda: pb.state == "running", 2, "running")
        t0 = time.monotonic()
        for k, frame in enumerate(frames):
            due = t0 + k * 0.02 + (0.2 if k >= 15 else 0.0)  # frames 15.. are held up 200 ms ...
            if k >= 25:
                due -= 0.2  # ... and from frame 25 on the backlog has come: real time again
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            pb.write_frame(frame)
            if k == 30:
                assert pb.max_latency_s > base  # an underrun earned slack
                assert pb.buffered_s > base + 0.05  # the burst is queued
        assert pb.stats.underruns == 1
        assert pb.max_latency_s == pytest.approx(base)  # the slack decayed (a period per 0.3 s)
        assert pb.stats.silence_dropped_ms >= 150  # the burst's delay came out of the silence after it
        # back to the floor: a silent frame is queued only while the latency is at most the floor, so
        # right after a push it can be the floor plus that one frame (the burst had put it at +160 ms)
        assert pb.buffered_s <= base + pb.period_s + 0.001
        await play_out(pb)
    finally:
        await pb.stop()
    _, _, wav = read_wav(out)
    first, last = active_span(wav[:, 0])
    tone = np.abs(wav[first : last + 1, 0]) > 64
    # every tone sample played, and the stall's silence inside it
    assert tone.sum() == (np.abs(sine(500, 0.6, 48000, amplitude=10000)) > 64).sum()
    assert last - first >= 48000 * 0.6 + 48000 * 0.1
