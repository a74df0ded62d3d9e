"""`voice-agent detect` on WAV files made from espeak-ng speech: the service's wake word path, JSON Lines,
WAV formats, and the threshold sweep."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from agent.audio.resample import convert_pcm
from agent.cli import main
from agent.config import WakeConfig, WakeModelConfig
from agent.wake.detect import SweepRow, count_detections, detect_file, read_wav, suggest_threshold, sweep
from agent.wake.wakeword import WakeWordDetector

from .speech import brown_noise, espeak

SENTENCE = "please remember to buy milk and bread on the way home"


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> Path:
    """Interleaved int16 samples as a PCM WAV of `width` bytes per sample."""
    data = samples.astype(np.int32)
    if width == 1:
        raw = ((data >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 2:
        raw = data.astype("<i2").tobytes()
    elif width == 3:
        wide = (data << 8).astype("<i4").tobytes()
        raw = b"".join(wide[i : i + 3] for i in range(0, len(wide), 4))  # the low 3 bytes, little-endian
    else:
        raw = (data << 16).astype("<i4").tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, float]]:
    """A wake file (stereo, 44.1 kHz: hey jarvis, then a sentence) and a negative one (16 kHz mono),
    each with the true end of the wake phrase (or -1)."""
    tmp = tmp_path_factory.mktemp("clips")
    wake = espeak("hey jarvis")
    audio = np.concatenate([brown_noise(1.5), wake, brown_noise(1.0, seed=1), espeak(SENTENCE), brown_noise(1.0)])
    stereo = convert_pcm(audio, 16000, 44100, channels_out=2)
    negative = np.concatenate([brown_noise(1.0), espeak(SENTENCE), brown_noise(0.5, seed=3),
                               espeak("the weather today is sunny with a light breeze"), brown_noise(1.0)])
    return {
        "wake": (write_wav(tmp / "wake.wav", stereo, 44100, channels=2), 1.5 + len(wake) / 16000),
        "negative": (write_wav(tmp / "talk.wav", negative, 16000), -1.0),
    }


def test_json_lines_one_object_per_file(clips, capsys: pytest.CaptureFixture[str]) -> None:
    (wake, end), (negative, _) = clips["wake"], clips["negative"]
    assert main(["detect", "--json", str(wake), str(negative)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(wake), str(negative)]
    (det,) = lines[0]["detections"]
    assert det["model"] == "hey_jarvis" and 0.5 <= det["score"] <= 1.0
    assert end < det["t"] <= end + 0.5  # seconds from the start of the file
    assert abs(det["t_phrase_end"] - end) <= 0.35
    assert lines[1]["detections"] == []


def test_text_output_and_unreadable_file(clips, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "notes.wav"
    bogus.write_text("not a wav")
    assert main(["detect", str(clips["wake"][0]), str(bogus)]) == 2
    captured = capsys.readouterr()
    assert "hey_jarvis at" in captured.out
    assert "notes.wav: not a PCM WAV file" in captured.err


def test_stereo_rates_and_sample_widths_read_alike(tmp_path: Path) -> None:
    mono = np.concatenate([brown_noise(0.2), espeak("hello")])
    base, rate = read_wav(write_wav(tmp_path / "m16.wav", mono, 16000))
    assert rate == 16000 and np.array_equal(base, mono)
    for width in (1, 3, 4):
        other, _ = read_wav(write_wav(tmp_path / f"m{width}.wav", mono, 16000, width=width))
        tolerance = 256 if width == 1 else 0  # 8-bit keeps the top byte only
        assert np.max(np.abs(other.astype(np.int32) - mono)) <= tolerance, width
    left_right = np.stack([mono, np.zeros_like(mono)], axis=1).reshape(-1)
    averaged, _ = read_wav(write_wav(tmp_path / "st.wav", left_right, 16000, channels=2))
    assert np.max(np.abs(averaged.astype(np.int32) - mono // 2)) <= 1
    left, _ = read_wav(write_wav(tmp_path / "st2.wav", left_right, 16000, channels=2), channel=0)
    assert np.array_equal(left, mono)


def test_sweep_replays_the_services_decision(clips) -> None:
    """At the configured threshold the sweep counts exactly what the live detector found."""
    model = WakeModelConfig("hey_jarvis")
    detector = WakeWordDetector(WakeConfig(models=(model,)))
    try:
        results = [
            detect_file(detector, clips["wake"][0], keep_frames=True),
            detect_file(detector, clips["negative"][0], negative=True, keep_frames=True),
        ]
    finally:
        detector.close()
    for r in results:
        assert count_detections(r.frames, model, model.threshold) == len(r.detections)
    rows = sweep(results, [model], [0.1, 0.5, 0.9999])
    assert [(r.hits, r.misses, r.false_wakes) for r in rows] == [(1, 0, 0), (1, 0, 0), (0, 1, 0)]
    assert rows[2].missed_files == (str(clips["wake"][0]),)
    assert results[1].peaks["hey_jarvis"] < 0.1  # ordinary talk stays far below any threshold


def test_sweep_cli_table_and_json(clips, capsys: pytest.CaptureFixture[str]) -> None:
    wake, negative = str(clips["wake"][0]), str(clips["negative"][0])
    assert main(["detect", "--sweep", "--thresholds", "0.3,0.6", wake, "--negative", negative]) == 0
    out = capsys.readouterr().out
    assert "1 wake file(s), 1 negative file(s)" in out and "suggested threshold:" in out
    assert main(["detect", "--sweep", "--json", "--thresholds", "0.3,0.6", wake, "--negative", negative]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["threshold"] for r in report["thresholds"]] == [0.3, 0.6]
    assert all(r["hits"] == 1 and r["false_wakes"] == 0 for r in report["thresholds"])
    assert {f["file"]: f["negative"] for f in report["files"]} == {wake: False, negative: True}


def test_suggested_threshold_is_the_middle_of_the_clean_best() -> None:
    def row(t: float, hits: int, false: int) -> SweepRow:
        return SweepRow(t, hits, 10 - hits, false, (), {})

    rows = [row(0.1, 10, 3), row(0.2, 10, 0), row(0.3, 10, 0), row(0.4, 10, 0), row(0.5, 9, 0)]
    assert suggest_threshold(rows) == 0.3
    assert suggest_threshold([row(0.1, 10, 2)]) is None


def test_detect_help_explains_negatives(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["detect", "--help"])
    out = capsys.readouterr().out
    assert "--negative" in out and "false wake" in out and "--sweep" in out


def test_detect_with_no_file_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["detect"]) == 78
    assert "name at least one WAV file" in capsys.readouterr().err
