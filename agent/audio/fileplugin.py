"""alsa-lib's `file` PCM plugin as a stand-in sound card, for tests and the demo.

Machines without a sound card (CI, containers, a developer laptop with no kernel modules to load) can
still run the real ALSA path (alsa-lib + pyalsaaudio) with the `file` plugin over the `null` device:
capture reads raw s16le from a file, playback writes a WAV or raw file. alsa-lib has no inline PCM
definitions for this, so the two PCMs are defined in a small config file that alsa-lib loads through
`ALSA_CONFIG_PATH`.

Facts this module relies on (alsa-lib 1.2.8, pyalsaaudio 0.11; see tests/test_capture.py):

- `ALSA_CONFIG_PATH` is read again at every PCM open (`snd_config_update`), so setting it at run time
  works even after other PCMs were opened in the same process.
- The plugin reads `infile` with one `read()` per period and returns a whole period whatever it got: a
  short read yields a period of stale bytes, and at end of file it repeats stale periods without
  blocking. A FIFO fed in whole periods at real-time pace therefore makes a good live microphone:
  reads block until the next period arrives. The writer must write periods whose size is a multiple of
  the reader's period, each in one `write()`.
- Opening the capture PCM on a FIFO blocks until the FIFO has a writer, and pyalsaaudio holds the GIL
  during the open: a capture opening a writerless FIFO freezes every Python thread in the process.
  `FifoFeeder.start()` therefore attaches its writer before any capture can open the FIFO. A missing
  INFILE makes the open fail at once with ENOENT ("No such file or directory").
- Playback over `null` never blocks: the writer must pace itself (AlsaPlayback does).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import stat
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
CONF_NAME = "voice-agent-fileplugin.conf"

FILE_PLUGIN_CONF = """\
# Written by agent.audio.fileplugin: ALSA PCMs backed by files, for machines with no sound card.
# Capture: filecap:INFILE=/path/in.raw (raw s16le; a FIFO gives real-time pacing).
pcm.filecap {
    @args [ INFILE ]
    @args.INFILE { type string default "/dev/zero" }
    type file
    slave.pcm "null"
    infile $INFILE
    file "/dev/null"
    format "raw"
}
# Playback: fileplay:OUTFILE=/path/out.wav,FORMAT=wav (or FORMAT=raw).
pcm.fileplay {
    @args [ OUTFILE FORMAT ]
    @args.OUTFILE { type string default "/dev/null" }
    @args.FORMAT { type string default "raw" }
    type file
    slave.pcm "null"
    file $OUTFILE
    format $FORMAT
    perm 0644
}
"""


def write_file_plugin_conf(directory: Path) -> Path:
    """Write the `filecap` / `fileplay` definitions into `directory` and return the file's path."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / CONF_NAME
    conf.write_text(FILE_PLUGIN_CONF, encoding="utf-8")
    return conf


def use_file_plugin(directory: Path) -> Path:
    """Write the conf and point alsa-lib at it for every PCM opened from now on in this process.

    alsa-lib compares `ALSA_CONFIG_PATH` with its cached configuration at each open and reloads when it
    changed, so this works at any time, also after other PCMs were opened. Child processes (aplay,
    arecord) inherit it. Returns the conf path.
    """
    conf = write_file_plugin_conf(directory)
    os.environ["ALSA_CONFIG_PATH"] = f"{ALSA_CONF}:{conf}"
    return conf


def _arg(value: str) -> str:
    """A value for an ALSA device argument: quoted, since paths may hold ',', '=' or spaces."""
    if '"' in value or "\\" in value:
        raise ValueError(f"an ALSA device argument cannot hold quotes or backslashes: {value!r}")
    return f'"{value}"'


def capture_device(infile: Path) -> str:
    """The device string for capture from `infile` (raw s16le, a regular file or a FIFO)."""
    return f"filecap:INFILE={_arg(str(infile))}"


def playback_device(outfile: Path, fmt: Literal["wav", "raw"] = "wav") -> str:
    """The device string for playback into `outfile`. A WAV's header gets its lengths when the PCM
    is closed."""
    return f"fileplay:OUTFILE={_arg(str(outfile))},FORMAT={fmt}"


class FifoFeeder:
    """A live microphone for the file plugin: writes PCM into a FIFO in whole periods at real-time pace.

    Start the feeder BEFORE the capture opens the FIFO. pyalsaaudio holds the GIL while alsa-lib opens a
    PCM, and the file plugin's open of a FIFO blocks until the FIFO has a writer: a capture opening a
    writerless FIFO freezes every Python thread of the process, the feeder's included. So `start()`
    opens the write end at once, in the caller's thread, and creates a missing FIFO under a temporary
    name and renames it into place with the writer already attached: a capture retrying the path sees
    either no file (ENOENT, it retries) or a FIFO it can open at once.

    Until a reader is there, writes fail with EPIPE and are retried every few ms with the same period;
    the real-time schedule starts with the first period a reader took: period `k` goes out at
    `t0 + k * period` on the monotonic clock (a late write is caught up at once, so the pace never
    drifts). After the data it writes silence (`then="silence"`), keeps the FIFO open and writes nothing
    (`"hold"`: reads block, like a stalled device), or closes it (`"close"`: alsa-lib then repeats stale
    periods without blocking).

    A reader that goes away (EPIPE after data flowed) ends the feeder, unless `reconnect=True`: then it
    keeps the FIFO open and waits for the next reader, going on with the remaining data. `stop()` ends
    it. `feed()` queues more PCM, played before the silence, so a demo can "speak" into a running
    microphone. The fd is non-blocking so `stop()` never waits on a reader; each period goes out in one
    `write()`, which the kernel keeps whole while it fits the pipe (64 KiB, far above a 100 ms period).
    The period must be a multiple of the reader's period (see the module docstring).
    """

    def __init__(
        self,
        path: Path,
        data: bytes | np.ndarray = b"",
        rate: int = 16000,
        channels: int = 1,
        period_frames: int | None = None,
        *,
        then: Literal["silence", "hold", "close"] = "silence",
        reconnect: bool = False,
    ) -> None:
        self.path = Path(path)
        self.rate = rate
        self.channels = channels
        self.period_frames = period_frames or rate // 50
        self.period_bytes = self.period_frames * channels * 2
        self.period_s = self.period_frames / rate
        self.then = then
        self.reconnect = reconnect
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self.connected = threading.Event()
        """Set while a reader takes data."""
        self.data_done = threading.Event()
        """Set when every byte given so far has been written."""
        self.finished = threading.Event()
        """Set when the thread has ended."""
        self.periods_written = 0
        self.reader_gone = False
        self.error: BaseException | None = None
        self.feed(data)

    def feed(self, data: bytes | np.ndarray) -> None:
        """Queue more PCM (s16le interleaved bytes, or an int16 array), padded to whole periods."""
        raw = data.astype("<i2").tobytes() if isinstance(data, np.ndarray) else bytes(data)
        if len(raw) % (2 * self.channels):
            raise ValueError("PCM data must be whole frames of s16le")
        if not raw:
            return
        raw += bytes(-len(raw) % self.period_bytes)
        with self._lock:
            self._pending += raw
            self.data_done.clear()

    def start(self) -> FifoFeeder:
        """Open (or create) the FIFO's write end now, then feed it from a thread."""
        self._fd = _open_fifo_writer(self.path)
        self._thread = threading.Thread(target=self._run, name=f"fifo-feeder:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    @property
    def thread(self) -> threading.Thread | None:
        """The feeding thread (a benchmark takes its CPU time out of the agent's)."""
        return self._thread

    def stop(self, timeout: float = 2.0) -> None:
        """End the thread and close the FIFO; returns within `timeout` (a write never blocks)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("FIFO feeder %s did not stop within %.1f s", self.path, timeout)
        elif self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FifoFeeder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._fd is not None
        try:
            while self._write_loop(self._fd):
                pass
        except BaseException as exc:  # a test helper: keep the error for the test to see
            self.error = exc
            log.exception("FIFO feeder %s failed", self.path)
        finally:
            self.connected.clear()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self.finished.set()

    def _next_chunk(self) -> tuple[bytes | None, bool]:
        """The next period to write and whether it is fed data; None to stop writing (hold, close)."""
        with self._lock:
            if self._pending:
                return bytes(self._pending[: self.period_bytes]), True
            self.data_done.set()
        return (bytes(self.period_bytes) if self.then == "silence" else None), False

    def _consumed(self, n: int) -> None:
        with self._lock:
            del self._pending[:n]
            if not self._pending:
                self.data_done.set()

    def _write_loop(self, fd: int) -> bool:
        """Wait for a reader, then write periods on schedule; True to wait for another reader."""
        t0 = 0.0
        k = 0
        while not self._stop.is_set():
            if self.connected.is_set():
                delay = t0 + k * self.period_s - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return False
            chunk, fed = self._next_chunk()
            if chunk is None:
                if self.then == "close":
                    return False
                if self._stop.wait(self.period_s):  # hold: keep the FIFO open, write nothing
                    return False
                t0, k = time.monotonic(), 0  # a fresh schedule when data is fed again
                continue
            try:
                self._write_all(fd, chunk)
            except BrokenPipeError:
                if not self.connected.is_set():  # no reader yet: try again shortly
                    self._stop.wait(0.002)
                    continue
                self.connected.clear()
                self.reader_gone = True
                log.debug("FIFO feeder %s: the reader went away", self.path)
                return self.reconnect
            if not self.connected.is_set():
                self.connected.set()
                t0, k = time.monotonic(), 0
            if fed:
                self._consumed(len(chunk))
            self.periods_written += 1
            k += 1
        return False

    def _write_all(self, fd: int, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view and not self._stop.is_set():
            try:
                n = os.write(fd, view)
            except BlockingIOError:  # the pipe is full: the reader is slow, wait for room
                select.select([], [fd], [], 0.05)
                continue
            view = view[n:]


def _open_fifo_writer(path: Path) -> int:
    """A non-blocking write end of the FIFO at `path`, created atomically (with the writer attached)
    when missing. Opening a FIFO's write end without blocking needs a reader: a transient one of ours."""
    if path.exists():
        if not stat.S_ISFIFO(path.stat().st_mode):
            raise ValueError(f"{path} exists and is not a FIFO")
        return _attach_writer(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    os.mkfifo(tmp)
    try:
        fd = _attach_writer(tmp)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return fd


def _attach_writer(path: Path) -> int:
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    finally:
        os.close(reader)
