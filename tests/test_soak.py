"""The soak, short: 15 conversations in a row in one agent against the emulator (its own process, so
this process's memory is the agent's). Every conversation completes and returns to idle; after a
warm-up of 3 conversations, resident memory grows less than 10% and the threads and file descriptors
come back to their count. Fifteen are enough for what a test can hold it to (a thread or a descriptor
left behind by each call shows at once; a slow leak needs `voice-agent bench --soak 300`), and half
the suite's longest test."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.audio.fileplugin import use_file_plugin
from agent.bench.common import emulator_process
from agent.bench.soak import latencies, soak_agent

from .harness import logs_like_the_service

CONVERSATIONS = 15
WARMUP = 3


@pytest.mark.timeout(240)
async def test_soak(tmp_path: Path) -> None:
    use_file_plugin(tmp_path)
    # the agent's memory, not pytest's: pytest keeps every log record (and what its arguments hold)
    with logs_like_the_service():
        async with emulator_process(tmp_path) as emu:
            soak = await soak_agent(tmp_path, emu.url, emu.key, CONVERSATIONS, WARMUP)
            lat = await latencies(soak.records, emu.record_dir)
    summary = soak.summary()
    failed = [r for r in soak.records if not (r.ok and r.back_to_idle)]
    assert not failed, failed
    assert summary["conversations"] == CONVERSATIONS
    assert soak.rss_growth_pct < 10.0, summary
    assert soak.end.lasting_threads <= soak.start.lasting_threads, (soak.start.thread_names, soak.end.thread_names)
    assert soak.end.fds <= soak.start.fds, summary
    assert summary["ok"]
    # every conversation was timed end to end, on the emulator's clock and the agent's
    for name in ("wake_to_first_rtp_ms", "wake_to_listening_ms", "end_of_speech_to_first_audio_ms"):
        assert lat[name]["n"] == CONVERSATIONS, (name, lat)
        assert 0 < lat[name]["p50"] <= lat[name]["p95"], (name, lat)
