"""Structured log lines over journald's native protocol. This machine has no running journald, so a
unix datagram socket bound in a temporary folder stands in for /run/systemd/journal/socket and the
bytes are parsed per the protocol: fields, a multi-line message in the binary-safe form, an entry too
large for a datagram passed as a sealed memfd; and during a real conversation against the emulator,
every line carries the device, the state and, inside the call, its ids."""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.emulator.server import Emulator
from agent.emulator.settings import EmulatorSettings
from agent.journal import (
    CONTEXT,
    ContextFilter,
    JournalHandler,
    decode_entry,
    encode_field,
    journal_wanted,
    make_handler,
)
from agent.state import ErrorKind, Input, StateOwner
from agent.voicelive.auth import Secret

from .harness import KEY, run_agent
from .test_metrics import wake_then_command

pytestmark = pytest.mark.timeout(90)


class FakeJournald:
    """A bound datagram socket read by a thread: each entry's fields, from a datagram or a memfd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.entries: list[dict[str, bytes]] = []
        self.memfds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(4))
            except TimeoutError:
                continue
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fd = array.array("i", raw[:4])[0]
                    with os.fdopen(fd, "rb") as f:
                        f.seek(0)  # the sender's write left the shared offset at the end
                        data = f.read()
                    self.memfds += 1
            self.entries.append(decode_entry(data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def wait_for(self, count: int) -> None:
        for _ in range(100):
            if len(self.entries) >= count:
                return
            threading.Event().wait(0.02)
        raise AssertionError(f"{len(self.entries)} entries, wanted {count}")


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[FakeJournald]:
    fake = FakeJournald(tmp_path / "journal.sock")
    yield fake
    fake.close()


@contextlib.contextmanager
def logging_to(handler: logging.Handler) -> Iterator[logging.Logger]:
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield root
    finally:
        root.removeHandler(handler)
        handler.close()
        CONTEXT.device = CONTEXT.snapshot = None


def test_fields_a_multiline_message_and_a_huge_one(journald: FakeJournald, tmp_path: Path) -> None:
    owner = StateOwner()
    CONTEXT.device, CONTEXT.snapshot = "kitchen", lambda: owner.snapshot
    with open(os.devnull, "w") as devnull:  # not the journal's stream: plain lines
        assert not isinstance(make_handler(devnull, {}, journald.path), JournalHandler)
    handler = JournalHandler(journald.path)
    handler.addFilter(ContextFilter())
    with logging_to(handler):
        log = logging.getLogger("agent.test")
        log.info("hello %s", "fleet")
        owner.apply(Input.FAILED, error=ErrorKind.NETWORK, cause="dns")
        try:
            raise ValueError("line one\nline two")
        except ValueError:
            log.exception("it failed")
        log.warning("x" * 300_000)  # larger than a datagram can be here
        journald.wait_for(3 + 1)  # the state change logs a line too
    first = journald.entries[0]
    assert first["MESSAGE"] == b"agent.test: hello fleet"
    assert first["PRIORITY"] == b"6" and first["SYSLOG_IDENTIFIER"] == b"voice-agent"
    assert first["DEVICE"] == b"kitchen" and first["STATE"] == b"idle"
    assert "RTC_CALL_ID" not in first and "ERROR_KIND" not in first
    assert first["CODE_FUNC"] == b"test_fields_a_multiline_message_and_a_huge_one"
    failed = next(e for e in journald.entries if e["MESSAGE"].startswith(b"agent.test: it failed"))
    assert failed["PRIORITY"] == b"3" and failed["STATE"] == b"error" and failed["ERROR_KIND"] == b"network"
    text = failed["MESSAGE"].decode()
    assert "Traceback" in text and "ValueError: line one\nline two" in text  # multi-line, whole
    huge = journald.entries[-1]
    assert huge["MESSAGE"] == b"agent.test: " + b"x" * 300_000 and journald.memfds == 1


def test_binary_safe_form_round_trips() -> None:
    raw = encode_field("MESSAGE", "a\nb=c") + encode_field("STATE", "idle") + encode_field("X", b"\x00\n\xff")
    assert raw.startswith(b"MESSAGE\n" + (5).to_bytes(8, "little") + b"a\nb=c\n")
    assert decode_entry(raw) == {"MESSAGE": b"a\nb=c", "STATE": b"idle", "X": b"\x00\n\xff"}


def test_journal_only_when_systemd_says_the_stream_is_the_journal(journald: FakeJournald, tmp_path: Path) -> None:
    with open(tmp_path / "out.log", "w") as stream:
        st = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal_wanted(stream, env, journald.path)
        assert not journal_wanted(stream, env, tmp_path / "no-socket")  # no journald here
        assert not journal_wanted(stream, {}, journald.path)  # not run by systemd
        assert not journal_wanted(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}, journald.path)
        assert isinstance(make_handler(stream, env, journald.path), JournalHandler)
    read, write = os.pipe()  # `voice-agent run | tee`: a pipe is not the journal
    with os.fdopen(write, "w") as pipe:
        assert not journal_wanted(pipe, env, journald.path)
    os.close(read)


async def test_a_conversation_logs_its_call_ids_and_states(journald: FakeJournald, tmp_path: Path) -> None:
    handler = JournalHandler(journald.path)
    handler.addFilter(ContextFilter())
    with logging_to(handler):
        async with Emulator(EmulatorSettings(api_key=Secret(KEY), ice_loopback=True)) as emu:

            async def attach(rig: object) -> None:
                CONTEXT.device, CONTEXT.snapshot = "test-pi", lambda: rig.agent.states.snapshot  # type: ignore[attr-defined]

            agent = await run_agent(tmp_path, emu, wake_then_command(), during=attach, followup_s=1.0)
            await asyncio.sleep(0.2)
    result = agent.results[0]
    assert result.ok and result.rtc_call_id
    entries = [e for e in journald.entries if e.get("DEVICE") == b"test-pi"]
    assert len(entries) > 5
    in_call = [e for e in entries if "RTC_CALL_ID" in e]
    assert {e["RTC_CALL_ID"] for e in in_call} == {result.rtc_call_id.encode()}
    over = next(e for e in entries if b"conversation over" in e["MESSAGE"])
    assert over["RTC_CALL_ID"] == result.rtc_call_id.encode()
    request_ids = {e["CLIENT_REQUEST_ID"] for e in entries if "CLIENT_REQUEST_ID" in e}
    assert len(request_ids) == 1
    answered = next(e for e in entries if b"answered (request id" in e["MESSAGE"])
    assert request_ids.pop() in answered["MESSAGE"]
    states = {e["STATE"] for e in entries}
    assert {b"connecting", b"listening", b"idle"} <= states, states
    assert not any(KEY.encode() in v for e in journald.entries for v in e.values())
