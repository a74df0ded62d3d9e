"""Who gets into `voice-agent emulator`, and what it says to an offer it cannot use.

- `--bearer-token-file`: an Entra ID client's `Authorization: Bearer` header, or the same in the query
  (`authorization=Bearer ...`), is let in; the token never reaches the emulator's log, even at DEBUG.
- An offer with no UDP candidate on loopback is refused with `bad_sdp`, and the message names the fix
  for the agent (`network.ice_loopback`) and for a browser (Chromium's `--allow-loopback-in-peer-connection`).
  A browser's TCP "active" candidates (port 9) do not count: nothing can connect to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from agent.emulator.negotiation import OfferError, check_offer
from agent.voicelive import protocol

from .test_emulator import WS_CLIENT_LOG

TOKEN = "canary-bearer-5e0b7a91d2c4"
QUERY = f"api-version={protocol.DEFAULT_API_VERSION}&model=gpt-realtime"


@contextlib.contextmanager
def emulator_cli(tmp_path: Path, *args: str) -> Iterator[tuple[str, list[str]]]:
    """`voice-agent emulator -v ARGS` on a free port; yields its URL and, live, its output lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "emulator", "-v", "--port", "0", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        for line in proc.stdout:  # bounded by the test's timeout
            output.append(line)
            if "listening on ws://" in line:
                yield line.split("listening on ")[1].strip(), output
                break
        else:
            pytest.fail("the emulator did not start:\n" + "".join(output))
    finally:
        proc.terminate()
        output.extend(proc.communicate(timeout=10)[0].splitlines(keepends=True))


async def opens(url: str, headers: dict[str, str]) -> int:
    """101 if the upgrade is accepted (and session.created arrives), else the HTTP status."""
    try:
        async with websockets.connect(url, additional_headers=headers, open_timeout=5, logger=WS_CLIENT_LOG) as ws:
            assert "session.created" in await asyncio.wait_for(ws.recv(), 5)
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.timeout(60)
def test_bearer_token_file_lets_entra_clients_in_and_is_never_logged(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with emulator_cli(tmp_path, "--bearer-token-file", str(token_file)) as (url, output):
        calls = f"{url}{protocol.CALLS_PATH}?{QUERY}"

        async def attempts() -> list[int]:
            return [
                await opens(calls, {"Authorization": f"Bearer {TOKEN}"}),
                await opens(f"{calls}&authorization={quote('Bearer ' + TOKEN)}", {}),
                await opens(calls, {"Authorization": "Bearer wrong"}),
                await opens(calls, {"api-key": TOKEN}),  # a token is not a key
                await opens(calls, {}),
            ]

        assert asyncio.run(attempts()) == [101, 101, 401, 401, 401]
    log = "".join(output)
    assert "auth=bearer via header" in log and "auth=bearer via query" in log
    assert "upgrade refused: no credential (a browser cannot set WebSocket headers" in log
    assert TOKEN not in log
    assert not (tmp_path / "emulator-api-key").exists()  # a token alone: no key generated


def offer(*candidates: str) -> str:
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", "a=rtpmap:111 opus/48000/2",
        "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx", "a=mid:0", "a=sendrecv",
        *candidates,
    ]  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


UDP = "a=candidate:2134805539 1 udp 2122260223 127.0.0.1 57870 typ host generation 0"
TCP_ACTIVE = "a=candidate:32599739 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0"
PRIVATE = "a=candidate:1 1 udp 2122260223 192.0.2.2 57871 typ host generation 0"


def test_offer_with_only_tcp_active_loopback_candidates_is_refused_naming_both_fixes() -> None:
    with pytest.raises(OfferError) as info:
        check_offer(offer(TCP_ACTIVE, PRIVATE), ice_loopback=True)
    assert info.value.code == "bad_sdp"
    assert "TCP only" in info.value.message and "port 9" in info.value.message
    assert "network.ice_loopback" in info.value.message
    assert "--allow-loopback-in-peer-connection" in info.value.message


def test_offer_without_loopback_candidates_is_refused_naming_both_fixes() -> None:
    with pytest.raises(OfferError) as info:
        check_offer(offer(PRIVATE), ice_loopback=True)
    assert "TCP" not in info.value.message
    assert "network.ice_loopback" in info.value.message
    assert "--allow-loopback-in-peer-connection" in info.value.message


def test_udp_loopback_candidates_are_kept_and_the_rest_dropped() -> None:
    kept = check_offer(offer(UDP, TCP_ACTIVE, PRIVATE), ice_loopback=True)
    assert [line for line in kept.splitlines() if line.startswith("a=candidate:")] == [UDP]
