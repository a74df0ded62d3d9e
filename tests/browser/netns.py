"""A private network namespace with only `lo`, for the browser tests: nothing Chromium does can leave.

Chromium is a whole browser: it gathers host candidates on every interface, and it has background
services that would like to talk to the internet. Its flags (`cdp.QUIET_FLAGS`) turn those off, and in a
namespace that has only loopback nothing could leave anyway. A network namespace belongs to a thread, and
a process or socket created by that thread lives in it: `private_loopback()` moves the calling (main)
thread into a new namespace, brings `lo` up, and moves it back afterwards. Sockets opened meanwhile (the
emulator, aiortc, the CDP client) and processes started meanwhile (Chromium, `voice-agent emulator`) stay
in the private namespace; both sides of every connection are in it.

It needs CAP_SYS_ADMIN (root, as in CI). Where it is not allowed, `private_loopback()` says why and yields
False, and the tests run in the machine's own namespace with Chromium's quiet flags.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Iterator

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    """The interfaces the calling thread sees."""
    return sorted(name for _, name in socket.if_nameindex())


@contextlib.contextmanager
def private_loopback() -> Iterator[bool]:
    """Run the body in a fresh network namespace with only `lo` up; yields whether it could."""
    libc = _libc()
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            log.warning("no private network namespace (%s): the browser tests use the machine's", os.strerror(err))
            yield False
            return
        try:
            _bring_up_loopback()
            yield True
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"could not return to the original network namespace: {os.strerror(err)}")
    finally:
        os.close(original)
