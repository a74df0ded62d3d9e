"""The agent's memory as a long-running process on a small device (glibc's allocator).

- Arenas: glibc gives each thread that allocates its own malloc arena (up to 8 per core), and memory
  freed in one arena is of no use to another. The agent runs a dozen threads (capture, playback, the
  wake word worker, aiortc's encoder and decoder, executors), each holding on to its own high-water
  mark: limiting the process to 2 arenas kept about 15 MB less resident, idle and in a call, in
  `voice-agent bench` on x86_64 (the threads allocate little and seldom, so they hardly contend).
  Set before the agent's threads start; a `MALLOC_ARENA_MAX` in the environment takes precedence.
- Trimming: memory freed at the top of the heap stays with the process until `malloc_trim`, which
  the wake word loader calls after openWakeWord's start-up peak (see `oww_import`).

Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
MALLOC_ARENAS = 2


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError as exc:
        log.debug("no C library to tune: %s", exc)
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; False if not done."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim_heap() -> None:
    """Return the heap's free memory to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
