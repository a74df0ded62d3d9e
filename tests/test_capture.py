"""The ALSA capture edge through real alsa-lib and pyalsaaudio, with the `file` plugin as sound card.

A FIFO fed in real time by `FifoFeeder` is the microphone: reads block period by period as on a live
device. Every wait in these tests is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path

import alsaaudio
import numpy as np
import pytest

from agent.audio.alsa import Backoff
from agent.audio.capture import AlsaCapture, CaptureHub, SubscriptionClosed, apply_gain
from agent.audio.fileplugin import FifoFeeder, capture_device, use_file_plugin
from agent.audio.frames import PcmBlock
from agent.config import CaptureConfig
from tests.audio_helpers import EPIPE, FakePcmFactory, interleave, noise, sine, wait_until


@pytest.fixture
def alsa(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file plugin for this test; ALSA_CONFIG_PATH is restored afterwards."""
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    use_file_plugin(tmp_path)
    return tmp_path


async def collect(sub, n_samples: int, timeout: float) -> list[PcmBlock]:
    blocks: list[PcmBlock] = []
    async with asyncio.timeout(timeout):
        while sum(len(b.samples) for b in blocks) < n_samples:
            blocks.append(await sub.get())
    return blocks


def test_config_path_set_after_another_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """alsa-lib reloads its configuration when ALSA_CONFIG_PATH changes, also after earlier opens."""
    monkeypatch.delenv("ALSA_CONFIG_PATH", raising=False)
    kw = dict(rate=16000, channels=1, format=alsaaudio.PCM_FORMAT_S16_LE, periodsize=160)
    pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device="null", **kw)
    assert pcm.read()[0] == 160
    pcm.close()
    raw = tmp_path / "in.raw"
    data = noise(0.05, 16000)
    raw.write_bytes(data.tobytes())
    with pytest.raises(alsaaudio.ALSAAudioError):  # not defined yet
        alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=capture_device(raw), **kw)
    conf = use_file_plugin(tmp_path)
    assert os.environ["ALSA_CONFIG_PATH"] == f"/usr/share/alsa/alsa.conf:{conf}"
    pcm = alsaaudio.PCM(alsaaudio.PCM_CAPTURE, device=capture_device(raw), **kw)
    got = b"".join(pcm.read()[1] for _ in range(5))
    pcm.close()
    assert got == data.tobytes()


@pytest.mark.parametrize("rate", [16000, 48000])
async def test_capture_mono_byte_exact_and_real_time(alsa: Path, rate: int) -> None:
    fifo = alsa / "mic.fifo"
    cfg = CaptureConfig(device=capture_device(fifo), rate=rate, channels=1, period_ms=20)
    cap = AlsaCapture(cfg)
    sub = cap.hub.subscribe("test", max_blocks=1000)
    data = noise(0.6, rate, seed=rate)
    feeder = FifoFeeder(fifo, data, rate=rate, period_frames=cap.period_frames)
    feeder.start()  # first: its writer must exist before the capture opens the FIFO
    await cap.start()
    try:
        await asyncio.wait_for(cap.ready.wait(), 2)
        blocks = await collect(sub, len(data), timeout=3)
    finally:
        await cap.stop()
        feeder.stop()
    got = np.concatenate([b.samples for b in blocks])[: len(data)]
    assert np.array_equal(got, data)
    assert all(len(b.samples) == cap.period_frames and b.rate == rate for b in blocks)
    assert [b.seq for b in blocks] == list(range(1, len(blocks) + 1))
    stamps = np.array([b.t_end for b in blocks])
    assert np.all(np.diff(stamps) > 0)
    assert abs(np.median(np.diff(stamps)) - 0.020) < 0.2 * 0.020
    stats = cap.stats
    assert stats.state == "stopped" and stats.blocks >= len(blocks) and stats.overruns == 0
    assert not blocks[0].samples.flags.writeable  # shared between subscribers


async def test_idle_reads_come_a_chunk_at_a_time_stamped_as_captured(alsa: Path) -> None:
    """With only the taps listening, the thread reads a wake word chunk (4 periods) per burst: the
    three periods already there at once, then it waits in the fourth. Each block keeps the time of its
    own last sample, and nothing is lost."""
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20))
    assert cap.burst_blocks == 4
    seen: list[tuple[PcmBlock, float]] = []
    cap.taps.append(lambda b: seen.append((b, time.monotonic())))
    data = noise(1.6, 16000, seed=3)
    feeder = FifoFeeder(fifo, data, rate=16000, period_frames=320, then="hold").start()
    await cap.start()
    try:
        await wait_until(lambda: len(seen) * 320 >= len(data), 4, "the whole feed")
    finally:
        await cap.stop()
        feeder.stop()
    blocks = [b for b, _ in seen]
    assert np.array_equal(np.concatenate([b.samples for b in blocks])[: len(data)], data)
    assert [b.seq for b in blocks] == list(range(1, len(blocks) + 1))
    chunks = len(blocks) // 4
    assert cap.stats.idle_sleeps >= 0.7 * chunks
    arrived = {b.seq: t for b, t in seen}
    # periods 1-3 of a chunk reach the taps together (read in one go), not 20 ms apart
    together = [arrived[4 * m + 3] - arrived[4 * m + 1] < 0.005 for m in range(1, chunks)]
    assert sum(together) >= 0.7 * len(together), together
    stamps = np.array([b.t_end for b in blocks])
    assert abs(np.median(np.diff(stamps)) - 0.020) < 0.1 * 0.020  # stamped when captured, not when read
    assert all(b.t_end <= arrived[b.seq] for b in blocks)
    assert cap.stats.overruns == 0


class _LateWakeups(FifoFeeder):
    """A microphone whose reader a busy scheduler wakes late: a third of the periods reach it up to
    15 ms after they were captured (each period is captured on the feeder's schedule; a late one is
    written late, the next ones on time again)."""

    rng = np.random.default_rng(4)

    def _next_chunk(self) -> tuple[bytes | None, bool]:
        if self.connected.is_set() and self.rng.random() < 1 / 3:
            time.sleep(self.rng.random() * 0.015)
        return super()._next_chunk()


async def test_a_reader_woken_late_still_stamps_each_block_when_captured(alsa: Path) -> None:
    """The stamps come 20 ms apart, from the samples' count, not from when the reads returned (which the
    echo canceller would take for the microphone jumping about: agent.audio.streamclock)."""
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20))
    seen: list[tuple[PcmBlock, float]] = []
    cap.taps.append(lambda b: seen.append((b, time.monotonic())))
    sub = cap.hub.subscribe("call", max_blocks=1000)  # a call: every period read as it comes
    feeder = _LateWakeups(fifo, noise(3.0, 16000, seed=5), rate=16000, period_frames=320, then="hold").start()
    await cap.start()
    try:
        await wait_until(lambda: len(seen) >= 140, 6, "the feed")
    finally:
        await cap.stop()
        feeder.stop()
    assert len(sub) >= 140 and cap.stats.overruns == 0
    returned = np.diff([t for _, t in seen][10:]) * 1000
    assert np.abs(returned - 20.0).max() > 5.0  # the reads did come back late
    steps = np.diff([b.t_end for b, _ in seen][10:]) * 1000
    assert np.abs(steps - 20.0).max() < 1.0, (steps.min(), steps.max())
    assert all(b.t_end <= t for b, t in seen)


async def test_a_subscriber_ends_the_idle_bursts_at_once(alsa: Path) -> None:
    """A call subscribing mid-sleep gets the periods captured so far at once and every later period as
    it comes (no bursts while something on the event loop listens)."""
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20))
    tapped: list[PcmBlock] = []
    cap.taps.append(tapped.append)
    feeder = FifoFeeder(fifo, noise(3.0, 16000, seed=4), rate=16000, period_frames=320, then="hold").start()
    await cap.start()
    try:
        await wait_until(lambda: cap.stats.idle_sleeps >= 5, 3, "idle bursts")
        await wait_until(lambda: len(tapped) % 4 == 0 and cap.stats.idle_sleeps > 5, 3, "a sleep after a chunk")
        await asyncio.sleep(0.01)  # inside the sleep
        last = tapped[-1].seq
        t_sub = time.monotonic()
        sub = cap.hub.subscribe("call", max_blocks=1000, after_seq=last)
        first = await asyncio.wait_for(sub.get(), 1)
        t_first = time.monotonic()
        sleeps = cap.stats.idle_sleeps
        times, seqs = [], [first.seq]
        for _ in range(25):
            seqs.append((await asyncio.wait_for(sub.get(), 1)).seq)
            times.append(time.monotonic())
    finally:
        await cap.stop()
        feeder.stop()
    assert first.seq == last + 1 and seqs == list(range(last + 1, last + 27))
    assert t_first - t_sub < 0.03  # not after the rest of a 70 ms sleep
    assert cap.stats.idle_sleeps == sleeps  # no burst while subscribed
    gaps = np.diff(times[3:])  # past the periods already captured: one at a time, as they come
    assert abs(np.median(gaps) - 0.020) < 0.005 and np.sum(gaps < 0.005) <= 3


class Partner:
    """A duplex partner that logs what the capture thread tells it, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    def pump(self) -> None:
        self.calls.append(("pump", time.monotonic(), threading.current_thread().name))

    def release(self) -> None:
        self.calls.append(("release", time.monotonic(), threading.current_thread().name))


async def test_the_duplex_partner_is_pumped_after_each_read_only_while_a_call_listens(alsa: Path) -> None:
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20))
    partner = Partner()
    cap.duplex = partner
    feeder = FifoFeeder(fifo, noise(4.0, 16000, seed=5), rate=16000, period_frames=320, then="hold").start()
    await cap.start()
    try:
        await wait_until(lambda: cap.stats.idle_sleeps >= 3, 3, "idle bursts")
        assert partner.calls == []  # idle: the bursts could not pace a speaker
        sub = cap.hub.subscribe("call", max_blocks=1000)
        blocks = [await asyncio.wait_for(sub.get(), 1) for _ in range(20)]
        # the pump follows the hand-off to the loop, which may see the block first
        await wait_until(lambda: sum(kind == "pump" for kind, _, _ in partner.calls) >= 20, 1, "20 pumps")
        sub.close()
        await wait_until(lambda: any(kind == "release" for kind, _, _ in partner.calls), 1, "the release")
        sleeps = cap.stats.idle_sleeps
        await wait_until(lambda: cap.stats.idle_sleeps >= sleeps + 3, 2, "idle bursts again")
        idle_calls = len(partner.calls)
        await asyncio.sleep(0.3)
        assert len(partner.calls) == idle_calls  # no pump while idle
    finally:
        await cap.stop()
        feeder.stop()
    kinds = [kind for kind, _, _ in partner.calls]
    assert kinds.count("release") == 2 and kinds[-2:] == ["release", "release"]  # the call's end, then stop()
    assert set(kinds[:-2]) == {"pump"}
    assert {name for _, _, name in partner.calls} == {f"alsa-capture:{cap.cfg.device}"}
    pumps = [t for kind, t, _ in partner.calls if kind == "pump"]
    gaps = np.diff(pumps[3:])  # past the periods already captured when the call came
    assert abs(np.median(gaps) - 0.020) < 0.005  # one pump per read, as each period comes
    assert len(blocks) == 20


@pytest.mark.parametrize("periods_taken", [8, 4])
async def test_idle_bursts_only_where_the_device_buffer_holds_two(periods_taken: int) -> None:
    """A device may give a smaller buffer than asked (pyalsaaudio takes the nearest): with less than two
    bursts' worth, a sleep of most of a burst could overrun it, so every period is read as it comes."""
    factory = FakePcmFactory([[]], period_s=0.02)

    def opens(**kw: object) -> object:
        return factory(**{**kw, "periods": periods_taken})

    cap = AlsaCapture(CaptureConfig(device="fake", rate=16000, period_ms=20), pcm_factory=opens)  # type: ignore[arg-type]
    tapped: list[PcmBlock] = []
    cap.taps.append(tapped.append)
    await cap.start()
    try:
        await wait_until(lambda: len(tapped) >= 12, 3, "blocks")
    finally:
        await cap.stop()
    assert (cap.stats.idle_sleeps > 0) == (periods_taken == 8), cap.stats


async def test_stereo_device_keeps_configured_channel(alsa: Path) -> None:
    fifo = alsa / "mic.fifo"
    rate = 48000
    cfg = CaptureConfig(device=capture_device(fifo), rate=rate, channels=2, channel=1, period_ms=20)
    cap = AlsaCapture(cfg)
    sub = cap.hub.subscribe("test", max_blocks=1000)
    tone = sine(1000, 0.3, rate)
    feeder = FifoFeeder(fifo, interleave(np.zeros_like(tone), tone), rate=rate, channels=2)
    feeder.start()  # first: its writer must exist before the capture opens the FIFO
    await cap.start()
    try:
        blocks = await collect(sub, len(tone), timeout=3)
    finally:
        await cap.stop()
        feeder.stop()
    assert np.array_equal(np.concatenate([b.samples for b in blocks])[: len(tone)], tone)


async def test_gain_applies_and_clips(alsa: Path) -> None:
    fifo = alsa / "mic.fifo"
    cfg = CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20, gain_db=12.0)
    cap = AlsaCapture(cfg)
    sub = cap.hub.subscribe("test", max_blocks=1000)
    data = sine(440, 0.2, 16000, amplitude=20000)
    feeder = FifoFeeder(fifo, data, rate=16000)
    feeder.start()  # first: its writer must exist before the capture opens the FIFO
    await cap.start()
    try:
        blocks = await collect(sub, len(data), timeout=3)
    finally:
        await cap.stop()
        feeder.stop()
    got = np.concatenate([b.samples for b in blocks])[: len(data)]
    expected = np.clip(np.rint(data * 10 ** (12 / 20)), -32768, 32767)
    assert np.max(np.abs(got.astype(np.int32) - expected)) <= 1
    assert got.max() == 32767 and got.min() == -32768  # clipped, not wrapped
    small = np.array([100, -100, 0], np.int16)
    assert apply_gain(small, -6.0).tolist() == [50, -50, 0]
    assert apply_gain(small, 0.0) is small


async def test_hub_fans_out_and_slow_subscriber_drops_oldest() -> None:
    hub = CaptureHub()
    fast = hub.subscribe("fast", max_blocks=100)
    slow = hub.subscribe("slow", max_blocks=3)
    with pytest.raises(ValueError):
        hub.subscribe("fast", max_blocks=1)
    blocks = [PcmBlock(np.zeros(4, np.int16), 16000, float(i), seq=i) for i in range(1, 11)]
    got_fast: list[int] = []

    async def consume() -> None:
        async for block in fast:
            got_fast.append(block.seq)

    task = asyncio.create_task(consume())
    for block in blocks:
        hub.publish(block)
        await asyncio.sleep(0)  # the fast consumer keeps up
    await wait_until(lambda: len(got_fast) == 10, 1, "the fast subscriber")
    assert got_fast == list(range(1, 11))
    assert [(await slow.get(timeout=1)).seq for _ in range(3)] == [8, 9, 10]
    assert slow.dropped == 7 and slow.received == 10 and fast.dropped == 0
    with pytest.raises(TimeoutError):
        await slow.get(timeout=0.01)
    hub.close()  # the capture stopping ends every iterator
    await asyncio.wait_for(task, 1)
    with pytest.raises(SubscriptionClosed):
        await slow.get(timeout=1)
    assert hub.subscribers == ()


async def test_missing_device_retries_then_recovers(alsa: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The FIFO does not exist: open fails, the error is logged once, reopens back off; once the FIFO
    and its writer appear, blocks flow and the state is running. Nothing raises."""
    caplog.set_level(logging.DEBUG, logger="agent.audio.capture")
    fifo = alsa / "late.fifo"
    cap = AlsaCapture(
        CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20),
        backoff_initial_s=0.02,
        backoff_max_s=0.1,
    )
    sub = cap.hub.subscribe("test", max_blocks=1000)
    await cap.start()
    feeder = None
    try:
        await wait_until(lambda: cap.stats.reopen_count >= 3, 3, "reopen attempts")
        stats = cap.stats
        assert stats.state == "error"
        assert "No such file or directory" in (stats.last_error or "")
        assert not cap.ready.is_set()
        data = noise(0.2, 16000)
        feeder = FifoFeeder(fifo, data, rate=16000).start()  # creates the FIFO, then writes
        await asyncio.wait_for(cap.ready.wait(), 3)
        blocks = await collect(sub, len(data), timeout=3)
        assert np.array_equal(np.concatenate([b.samples for b in blocks])[: len(data)], data)
        assert cap.stats.state == "running"
    finally:
        await cap.stop()
        if feeder is not None:
            feeder.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "cannot open" in r.getMessage()]
    assert len(errors) == 1, [r.getMessage() for r in errors]


async def test_overrun_counted_and_read_error_reopens() -> None:
    """pyalsaaudio reports an overrun as read() -> (-EPIPE, b""): counted, reading goes on. A read that
    raises (device unplugged) closes, reopens and recovers."""
    period = 160
    good = (period, sine(500, period / 16000, 16000).tobytes())
    factory = FakePcmFactory(
        [
            [good, (EPIPE, b""), good, alsaaudio.ALSAAudioError("No such device [hw:1]")],
            alsaaudio.ALSAAudioError("No such device [hw:1]"),  # still unplugged
            [good, good],
        ],
        period_s=0.01,
    )
    cap = AlsaCapture(
        CaptureConfig(device="hw:1", rate=16000, period_ms=10),
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        pcm_factory=factory,
    )
    sub = cap.hub.subscribe("test", max_blocks=1000)
    await cap.start()
    try:
        await wait_until(lambda: cap.stats.blocks >= 6, 3, "blocks after the reopen")
        stats = cap.stats
        assert stats.overruns == 1
        assert stats.reopen_count == 2
        assert stats.state == "running"
        assert "No such device" in (stats.last_error or "")
        assert all(pcm.closed for pcm in factory.opened[:-1])
    finally:
        await cap.stop()
    assert factory.opened[-1].closed
    assert len(sub) >= 6


async def test_wrong_device_format_is_an_error() -> None:
    """A hw: device that cannot do the rate gets opened at another one by pyalsaaudio: refuse it."""

    def factory(**kw):
        pcm = FakePcmFactory([[]], 0.01)(**kw)
        pcm._info["rate"] = 44100
        return pcm

    cap = AlsaCapture(CaptureConfig(device="hw:0", rate=16000), backoff_initial_s=1, pcm_factory=factory)
    await cap.start()
    try:
        await wait_until(lambda: cap.stats.state == "error", 2, "the error state")
        assert "44100 Hz" in (cap.stats.last_error or "")
    finally:
        await cap.stop()


async def test_stop_is_prompt_while_the_feeder_writes(alsa: Path) -> None:
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=40))
    feeder = FifoFeeder(fifo, rate=16000, period_frames=640).start()  # silence forever
    await cap.start()
    await asyncio.wait_for(cap.ready.wait(), 2)
    t0 = time.monotonic()
    await cap.stop()
    assert time.monotonic() - t0 < 0.040 + 0.1
    assert not any(t.name.startswith("alsa-capture") for t in threading.enumerate())
    assert cap.stats.state == "stopped"
    await asyncio.to_thread(feeder.finished.wait, 2)  # the reader went away: EPIPE ends the feeder
    assert feeder.reader_gone and feeder.error is None


async def test_feeder_with_reconnect_serves_the_next_reader(alsa: Path) -> None:
    """A capture that stops and a new one that opens the same FIFO: the feeder keeps its end open (so
    the new open does not block) and goes on with its data."""
    fifo = alsa / "mic.fifo"
    cfg = CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20)
    data = noise(1.0, 16000, seed=7)
    feeder = FifoFeeder(fifo, data, rate=16000, reconnect=True).start()
    try:
        first = AlsaCapture(cfg)
        sub = first.hub.subscribe("test", max_blocks=1000)
        await first.start()
        got = await collect(sub, 0.2 * 16000, timeout=2)
        await first.stop()
        await wait_until(lambda: not feeder.connected.is_set(), 1, "the feeder to see the reader go")
        second = AlsaCapture(cfg)
        sub = second.hub.subscribe("test", max_blocks=1000)
        await second.start()
        got += await collect(sub, 0.2 * 16000, timeout=2)
        await second.stop()
    finally:
        feeder.stop()
    assert feeder.reader_gone and feeder.error is None
    samples = np.concatenate([b.samples for b in got])
    assert np.array_equal(samples[:3200], data[:3200])
    # The second reader continues the data (a period or two in flight at the switch may be lost).
    tail = samples[3200:]
    offset = next(i for i in range(0, len(data) - len(tail), 320) if np.array_equal(data[i : i + 320], tail[:320]))
    assert 3200 <= offset <= 3200 + 3 * 320
    assert np.array_equal(tail, data[offset : offset + len(tail)])


async def test_stop_gives_up_on_a_stalled_device(alsa: Path) -> None:
    """A read that never returns (the FIFO's writer holds it open and writes nothing) cannot be
    interrupted safely: stop() returns after its bound, and the thread exits once the read returns."""
    fifo = alsa / "mic.fifo"
    cap = AlsaCapture(CaptureConfig(device=capture_device(fifo), rate=16000, period_ms=20), stop_timeout_s=0.2)
    feeder = FifoFeeder(fifo, noise(0.1, 16000), rate=16000, then="hold").start()
    await cap.start()
    await asyncio.wait_for(cap.ready.wait(), 2)
    await asyncio.to_thread(feeder.data_done.wait, 2)
    # all 5 periods read (not still in an idle burst's sleep, which stop() ends at once)
    await wait_until(lambda: cap.stats.blocks >= 5, 2, "the feeder's audio read")
    await asyncio.sleep(0.05)  # the reader is now blocked in read()
    t0 = time.monotonic()
    await cap.stop()
    assert 0.2 <= time.monotonic() - t0 < 0.6
    feeder.stop()  # the writer closes: the read returns, the thread sees the stop flag and ends
    await wait_until(lambda: not any(t.name.startswith("alsa-capture") for t in threading.enumerate()), 2, "thread end")


async def test_device_faster_than_real_time_is_paced(alsa: Path) -> None:
    """`null` (and a regular file) never block: reads are paced, not spun."""
    cap = AlsaCapture(CaptureConfig(device="null", rate=16000, period_ms=20))
    sub = cap.hub.subscribe("test", max_blocks=10000)
    await cap.start()
    await asyncio.sleep(0.4)
    await cap.stop()
    assert 15 <= len(sub) <= 0.4 / 0.02 + AlsaCapture.MAX_AHEAD_S / 0.02 + 5


def test_backoff_grows_to_cap_with_jitter() -> None:
    b = Backoff(initial_s=0.5, max_s=10.0, jitter=0.2)
    delays = [b.next_delay() for _ in range(8)]
    assert 0.4 <= delays[0] <= 0.6
    assert all(8.0 <= d <= 12.0 for d in delays[-3:])
    b.reset()
    assert b.next_delay() <= 0.6
