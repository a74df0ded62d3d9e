"""The reply on a lossy network, packet by packet: libopus's FEC and concealment, and the adaptive jitter
buffer that decides between them, driven on a simulated clock with real Opus packets of real speech."""

from __future__ import annotations

import numpy as np
import pytest

from agent.audio import libopus
from agent.audio.frames import is_audible
from agent.audio.resample import convert_pcm
from agent.voicelive.jitter import JitterBuffer, JitterSettings
from agent.voicelive.opus_sdp import decodes_fec, opus_params, with_opus_params
from agent.voicelive.receive import LossEstimator

from .speech import espeak

FRAME = 960


@pytest.fixture(scope="module")
def speech48() -> np.ndarray:
    return convert_pcm(espeak("the lighthouse keeper climbed the stairs to light the lamp"), 16000, 48000)


def encode(samples: np.ndarray, fec: bool, loss: int = 10) -> list[bytes]:
    enc = libopus.Encoder(48000, 1, bitrate=40000, inband_fec=fec, packet_loss_perc=loss)
    n = len(samples) // FRAME * FRAME
    return [enc.encode(samples[i : i + FRAME]) for i in range(0, n, FRAME)]


def reference(packets: list[bytes]) -> list[np.ndarray]:
    dec = libopus.Decoder(48000, 1)
    return [dec.decode(p) for p in packets]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float), b.astype(float))[0, 1])


def play(
    packets: list[bytes],
    arrivals: list[float | None],
    settings: JitterSettings | None = None,
    until: float | None = None,
) -> tuple[JitterBuffer, list[np.ndarray], list[str]]:
    """Run a jitter buffer on a simulated clock: packet i arrives at arrivals[i] (None: lost), ticks come
    every 20 ms from the first arrival on, frames are collected."""
    jb = JitterBuffer(libopus.Decoder(48000, 1), settings, has_fec=libopus.packet_has_fec)
    events = sorted((t, i) for i, t in enumerate(arrivals) if t is not None)
    t0 = events[0][0]
    tick = t0 + jb.settings.initial_ms / 1000
    end = until if until is not None else max(t for t, _ in events) + 0.1
    frames: list[np.ndarray] = []
    kinds: list[str] = []
    k = 0
    while tick < end:
        while k < len(events) and events[k][0] <= tick:
            jb.put(events[k][1] & 0xFFFF, packets[events[k][1]], events[k][0])
            k += 1
        frame = jb.tick(tick)
        if frame is not None:
            frames.append(frame)
            kinds.append(jb.last_kind or "")
        tick += 0.02
    return jb, frames, kinds


def steady(n: int, delay: float = 0.005) -> list[float | None]:
    return [i * 0.02 + delay for i in range(n)]


def test_libopus_fec_and_concealment(speech48: np.ndarray) -> None:
    with_fec = encode(speech48, fec=True)
    without = encode(speech48, fec=False)
    ref = reference(with_fec)
    speechy = [i for i in range(1, len(ref) - 1) if ref[i].std() > 300]
    assert speechy, "the test speech has loud frames"
    # the LBRR flag is read as libwebrtc reads it: set in speech frames with FEC on, never without
    assert sum(libopus.packet_has_fec(with_fec[i + 1]) for i in speechy) > 0.8 * len(speechy)
    assert not any(libopus.packet_has_fec(p) for p in without)
    # a speech frame lost and recovered from the next packet's FEC sounds like itself
    i = speechy[len(speechy) // 2]
    dec = libopus.Decoder(48000, 1)
    for p in with_fec[:i]:
        dec.decode(p)
    recovered = dec.decode_fec(with_fec[i + 1])
    assert len(recovered) == FRAME and corr(recovered, ref[i]) > 0.5
    # concealment continues the voice, then fades, never to digital silence within 200 ms
    dec = libopus.Decoder(48000, 1)
    for p in with_fec[:i]:
        dec.decode(p)
    concealed = [dec.conceal() for _ in range(10)]
    assert is_audible(concealed[0]) and all(np.any(c != 0) for c in concealed)


def test_encoder_follows_the_expected_loss() -> None:
    enc = libopus.Encoder(16000, 1, inband_fec=True, packet_loss_perc=1)
    enc.set_packet_loss(12)
    assert enc.packet_loss_perc == 12
    enc.set_inband_fec(False)
    assert not enc.inband_fec
    with pytest.raises(ValueError, match="320 int16 samples"):
        enc.encode(np.zeros(960, np.int16))


def test_lost_packets_are_recovered_by_fec_or_concealed_never_silent(speech48: np.ndarray) -> None:
    packets = encode(speech48, fec=True)
    ref = reference(packets)
    speechy = [i for i in range(20, len(ref) - 5) if ref[i].std() > 300][::6]
    arrivals = steady(len(packets), 0.030)
    for i in speechy:
        arrivals[i] = None
    no_shrink = JitterSettings(keep_ms=1000)  # the delay stays put, so frames line up with packets
    jb, frames, kinds = play(packets, arrivals, no_shrink)
    assert kinds.count("fec") >= len(speechy) * 0.8, kinds
    assert jb.stats.lost == len(speechy) and jb.stats.fec_recovered >= len(speechy) * 0.8
    # no 20 ms of digital silence where a speech frame was lost
    for i in speechy:
        assert np.any(frames[i] != 0)
    # and what was played follows what was sent (one frame per packet, in order, no stretch)
    played = np.concatenate(frames[: len(ref)])
    assert corr(played, np.concatenate(ref)) > 0.9


def test_without_fec_a_lost_packet_is_concealed(speech48: np.ndarray) -> None:
    packets = encode(speech48, fec=False)
    ref = reference(packets)
    lost = next(i for i in range(20, len(ref)) if ref[i].std() > 1000)
    arrivals = steady(len(packets), 0.030)
    arrivals[lost] = None
    jb, frames, kinds = play(packets, arrivals, JitterSettings(keep_ms=1000))
    assert kinds[lost] == "plc" and jb.stats.lost == 1 and jb.stats.fec_recovered == 0
    assert kinds[: len(packets)].count("plc") == 1
    assert is_audible(frames[lost])


def test_the_buffer_deepens_with_jitter_and_shrinks_back_when_it_calms(speech48: np.ndarray) -> None:
    silence = np.zeros(48000 * 8, np.int16)
    packets = encode(np.concatenate([silence, speech48, silence]), fec=True)
    rng = np.random.default_rng(7)
    n = len(packets)
    calm_until, jitter_until = 150, 300  # 3 s clean, 3 s of 40 +- 20 ms jitter, then clean again
    delays = [0.002 if i < calm_until or i >= jitter_until else max(0.0, rng.normal(0.040, 0.020)) for i in range(n)]
    arrivals: list[float | None] = [i * 0.02 + d for i, d in enumerate(delays)]
    jb, _, _ = play(packets, arrivals)
    holds = list(jb.stats.hold_ms)
    calm = np.median(holds[100:150])
    jittery = np.median(holds[calm_until + 100 : jitter_until])
    after = np.median(holds[-100:])
    assert calm < 20, calm
    assert jittery > calm + 15, (calm, jittery)  # it grew to take the jitter
    assert after < 20, (jittery, after)  # and came back down once the network calmed
    assert jb.stats.expanded > 0 and (jb.stats.accelerated > 0)
    late_share = jb.stats.late / n
    assert late_share < 0.03  # the bulk of the jitter is absorbed, not concealed


def test_a_long_gap_jumps_to_the_packets_after_it_and_overflow_is_bounded() -> None:
    packets = encode(np.zeros(48000 * 8, np.int16), fec=False)
    arrivals = steady(len(packets))
    for i in range(100, 250):  # a 3 s link drop
        arrivals[i] = None
    jb, _, kinds = play(packets, arrivals)
    assert jb.stats.skipped > 100 and kinds.count("expand") + kinds.count("plc") < 200
    # a burst far beyond the bound: the oldest is given up, the buffer never holds more than max_ms
    jb = JitterBuffer(libopus.Decoder(48000, 1), JitterSettings(max_ms=200))
    for i in range(5):
        jb.put(i, packets[i], 0.0)
    jb.tick(1.0)
    for i in range(5, 60):
        jb.put(i, packets[i], 1.0)
    assert jb.buffered_ms() <= 200 and jb.stats.overflow > 0


def test_sequence_numbers_wrap() -> None:
    packets = encode(np.zeros(48000, np.int16), fec=False)
    jb = JitterBuffer(libopus.Decoder(48000, 1), JitterSettings(initial_ms=0))
    for k, p in enumerate(packets[:10]):
        jb.put((65530 + k) & 0xFFFF, p, k * 0.02)
    out = [jb.tick(k * 0.02 + 0.001) for k in range(10)]
    assert all(f is not None for f in out) and jb.stats.lost == 0 and jb.stats.late == 0


def test_a_stream_that_starts_over_is_followed() -> None:
    """New sequence numbers far behind the playout (a sender that restarted its stream) are not "late"
    forever: playout starts over from them."""
    packets = encode(np.zeros(48000 * 2, np.int16), fec=False)
    jb = JitterBuffer(libopus.Decoder(48000, 1), JitterSettings(initial_ms=0))
    t = 0.0
    for k in range(40):
        jb.put(30000 + k, packets[k], t)
        jb.tick(t + 0.001)
        t += 0.02
    kinds = []
    for k in range(40, 80):  # the same stream, numbered from 1000 now
        jb.put(1000 + k, packets[k], t)
        jb.tick(t + 0.001)
        kinds.append(jb.last_kind)
        t += 0.02
    assert jb.stats.restarts == 1 and jb.stats.late == 0
    assert kinds[1:].count("normal") >= 38


def test_offer_asks_for_fec_and_the_answer_is_read() -> None:
    offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\na=ssrc:1 cname:x\r\n"
    asked = with_opus_params(offer)
    assert "a=fmtp:96 minptime=10;useinbandfec=1" in asked and decodes_fec(asked)
    assert not decodes_fec(offer)
    # an existing fmtp is merged, not duplicated
    merged = with_opus_params(asked.replace("useinbandfec=1", "stereo=1"))
    assert merged.count("a=fmtp:96") == 1 and opus_params(merged) == {
        "minptime": "10",
        "stereo": "1",
        "useinbandfec": "1",
    }


def test_loss_reports_step_the_expected_loss_as_libwebrtc_does() -> None:
    est = LossEstimator()
    assert est.rate == 0.01  # FEC from the first packet, before any report
    t = 0.0
    for _ in range(30):  # 8 % reported each second
        t += 1.0
        est.update(0.08, t)
    assert est.rate == 0.05
    for _ in range(30):
        t += 1.0
        est.update(0.25, t)
    assert est.rate == 0.20
    for _ in range(60):
        t += 1.0
        est.update(0.0, t)
    assert est.rate == 0.01  # never below the floor


async def test_a_failing_frame_consumer_stops_neither_the_clock_nor_the_transport() -> None:
    """The tap runs inside aiortc's DTLS loop and the clock on the event loop: a consumer that raises
    (a bug downstream) is logged, and the packets and frames keep coming."""
    import asyncio
    from types import SimpleNamespace

    from agent.voicelive.receive import JITTER_ATTR, AudioReceiver

    packets = encode(np.zeros(48000, np.int16), fec=False)
    receiver = SimpleNamespace(**{JITTER_ATTR: None})
    calls = {"frames": 0}

    def consume(frame: np.ndarray) -> None:
        calls["frames"] += 1
        raise RuntimeError("downstream bug")

    audio = AudioReceiver(receiver, consume)
    tap = getattr(receiver, JITTER_ATTR)
    try:
        for seq, payload in enumerate(packets[:20]):
            tap.add(SimpleNamespace(sequence_number=seq, _data=payload, payload=payload))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        bad = SimpleNamespace(sequence_number="not a number", _data=b"x", payload=b"x")
        assert tap.add(bad) == (False, None) and tap.failures == 1
    finally:
        audio.close()
    assert calls["frames"] >= 10 and audio.failures == calls["frames"]
