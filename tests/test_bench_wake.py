"""`voice-agent bench wake` runs end to end and reports measured numbers (a smoke test, not a timed test:
the goals are checked by a person reading the benchmark, never here)."""

from __future__ import annotations

import json
import statistics

import pytest

from agent.bench.wake import bench_audio
from agent.cli import main


def test_bench_audio_knows_where_each_wake_phrase_ends() -> None:
    audio = bench_audio(20.0)
    assert audio.seconds == pytest.approx(20.0)
    assert len(audio.phrase_ends) >= 2
    assert all(0 < a < b for a, b in zip(audio.phrase_ends, audio.phrase_ends[1:], strict=False))


def test_bench_wake_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "wake", "--json", "--repeats", "2", "--seconds", "10"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["rtf_runs"]) == len(result["rtf_bare_runs"]) == 2
    assert result["rtf"] == pytest.approx(statistics.median(result["rtf_runs"]), rel=1e-3)
    assert result["ratio"] == pytest.approx(result["rtf"] / result["rtf_bare"], rel=1e-2)
    assert result["engine"] == "lean" and len(result["rtf_scorer_runs"]) == 2
    assert 0 < result["rtf_scorer"] < result["rtf"] * 1.3  # the scorer is a part of the listening path
    assert result["scorer_vs_bare"] == pytest.approx(result["rtf_scorer"] / result["rtf_bare"], rel=1e-2)
    assert result["blocks_dropped"] == 0
    assert result["detected"] == result["wake_phrases"] >= 1 and result["unmatched_detections"] == 0
    assert 0 < result["detect_latency_ms_p50"] < 1000
    assert 50 < result["rss_mb"] < 2000


def test_bench_is_a_subcommand_with_room_for_more(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "wake" in capsys.readouterr().out
