"""Log lines a fleet's collector can filter on: journald's native protocol, with the device's context.

Under systemd (JOURNAL_STREAM names the stream the log goes to, and journald's socket is there) every log
record goes to journald as one datagram of fields (systemd's "Native Journal Protocol", what
sd_journal_sendv(3) sends): MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE/LINE/FUNC, LOGGER, and the
context of the moment: DEVICE, STATE, and during a call RTC_CALL_ID and CLIENT_REQUEST_ID, and ERROR_KIND
when an error is shown. `journalctl -u voice-agent STATE=error`, `journalctl RTC_CALL_ID=...`, or a
collector's filter on DEVICE then finds them. Elsewhere (a terminal, a pipe, a test) lines stay plain text
on the stream.

The protocol: `KEY=value\n` per field; a value with a newline is sent as `KEY\n`, its length as a 64-bit
little-endian number, the bytes, `\n`. An entry too large for a datagram goes in a sealed memfd passed
over the socket (SCM_RIGHTS), as sd_journal_sendv does.
"""

from __future__ import annotations

import array
import contextlib
import contextvars
import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .state import Snapshot

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "voice-agent"
FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Fields the context adds, and the record attributes that carry them.
CONTEXT_FIELDS = {"DEVICE": "device", "STATE": "state", "RTC_CALL_ID": "rtc_call_id",
                  "CLIENT_REQUEST_ID": "client_request_id", "ERROR_KIND": "error_kind"}  # fmt: skip
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


# --------------------------------------------------------------------------------------------------
# The context


@dataclass
class LogContext:
    """What every line is about: this device, and its state (set by the service once the agent exists)."""

    device: str | None = None
    snapshot: Callable[[], Snapshot] | None = None


CONTEXT = LogContext()
#: The call the current task works for: a function returning it (agent.voicelive.call.VoiceLiveCall, or
#: None before it exists). Set around a conversation; tasks it starts inherit it.
_CALL: contextvars.ContextVar[Callable[[], Any] | None] = contextvars.ContextVar("voice_agent_call", default=None)


@contextlib.contextmanager
def call_context(get_call: Callable[[], Any]) -> Iterator[None]:
    """Lines logged inside (and by tasks started inside) carry the call's ids once it has them."""
    token = _CALL.set(get_call)
    try:
        yield
    finally:
        _CALL.reset(token)


class ContextFilter(logging.Filter):
    """Adds the context's fields to every record (None where unknown); never drops a record."""

    def __init__(self, context: LogContext = CONTEXT) -> None:
        super().__init__()
        self.context = context

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = self.context
        record.device = ctx.device
        snap = ctx.snapshot() if ctx.snapshot is not None else None
        record.state = snap.state.value if snap is not None else None
        shown = snap.shown_error if snap is not None else None
        get_call = _CALL.get()
        call = get_call() if get_call is not None else None
        record.rtc_call_id = getattr(call, "rtc_call_id", None)
        record.client_request_id = getattr(call, "request_id", None)
        end_error = getattr(call, "end_error", None)
        kind = getattr(end_error, "kind", None) or (shown.value if shown is not None else None)
        record.error_kind = kind
        return True


# --------------------------------------------------------------------------------------------------
# The protocol


def encode_field(name: str, value: str | bytes) -> bytes:
    data = value.encode("utf-8", "replace") if isinstance(value, str) else value
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def decode_entry(payload: bytes) -> dict[str, bytes]:
    """The fields of one entry (for tests and tools): the inverse of `encode_field`, field after field."""
    fields: dict[str, bytes] = {}
    i = 0
    while i < len(payload):
        nl = payload.index(b"\n", i)
        line = payload[i:nl]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = nl + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", payload, nl + 1)
            start = nl + 9
            value = payload[start : start + size]
            if payload[start + size : start + size + 1] != b"\n":
                raise ValueError(f"field {key!r}: no newline after its {size} bytes")
            i = start + size + 1
        fields[key.decode("ascii")] = value
    return fields


class JournalHandler(logging.Handler):
    """Sends each record to journald's socket; if journald cannot take it, writes the plain line to
    `fallback` (the stream journald reads anyway), so no line is lost."""

    def __init__(self, path: Path = JOURNAL_SOCKET, fallback: IO[str] | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.fallback = fallback or sys.stderr
        self.plain = logging.Formatter(FORMAT)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setblocking(False)  # never stall the event loop on a busy journald

    def entry(self, record: logging.LogRecord) -> bytes:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.plain.formatException(record.exc_info)
        fields: list[tuple[str, str]] = [
            ("MESSAGE", f"{record.name}: {message}"),
            ("PRIORITY", str(_PRIORITY.get(record.levelno, 6))),
            ("SYSLOG_IDENTIFIER", IDENTIFIER),
            ("LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
            ("THREAD_NAME", record.threadName or ""),
        ]
        for name, attr in CONTEXT_FIELDS.items():
            value = getattr(record, attr, None)
            if value is not None:
                fields.append((name, str(value)))
        return b"".join(encode_field(k, v) for k, v in fields)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            payload = self.entry(record)
            try:
                self.sock.sendto(payload, self.path)
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(payload)
        except OSError:
            try:
                self.fallback.write(self.plain.format(record) + "\n")
                self.fallback.flush()
            except Exception:
                self.handleError(record)
        except Exception:
            self.handleError(record)

    def _send_memfd(self, payload: bytes) -> None:
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            self.sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()


# --------------------------------------------------------------------------------------------------
# Choosing


def journal_wanted(stream: IO[str], env: Mapping[str, str], socket_path: Path = JOURNAL_SOCKET) -> bool:
    """systemd's own rule (JOURNAL_STREAM in systemd.exec(5)): the stream the log goes to is the one
    systemd connected to the journal, and journald's socket is there. A terminal, a pipe or a file gets
    plain lines, even on a machine with journald."""
    want = env.get("JOURNAL_STREAM", "")
    dev, _, ino = want.partition(":")
    if not (dev.isdigit() and ino.isdigit()) or not socket_path.is_socket():
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def make_handler(stream: IO[str], env: Mapping[str, str], socket_path: Path = JOURNAL_SOCKET) -> logging.Handler:
    """The journal handler when the stream is the journal, else a plain one on `stream`; both with the
    context filter."""
    handler: logging.Handler
    if journal_wanted(stream, env, socket_path):
        handler = JournalHandler(socket_path, fallback=stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    return handler
