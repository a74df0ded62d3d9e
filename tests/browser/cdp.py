"""Headless Chromium, driven over the DevTools protocol (CDP) with `websockets`: no selenium, no playwright.

`Chromium` is one browser process with its own throw-away profile, a fake microphone that speaks a WAV,
and WebRTC allowed on loopback. Its DevTools endpoint listens on 127.0.0.1 on a port Chromium picks and
writes into the profile (`DevToolsActivePort`), so nothing is guessed and nothing else is opened.

`Page` is one tab, attached in "flat" mode over the browser's WebSocket. Every call has a timeout; the
page's console, exceptions and log entries are kept (`page.console`), so a failing test can print them.
Nothing secret ever goes on Chromium's command line: a page gets its settings through `evaluate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

log = logging.getLogger(__name__)

EXECUTABLES = ("chromium", "chromium-browser")

#: Flags that keep Chromium from talking to anything but the test: no updates, no metrics, no sync,
#: no mDNS names in place of host candidates (mDNS would multicast), no DNS prefetching.
QUIET_FLAGS = (
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,Translate,"
    "DialMediaRouteProvider,NetworkTimeServiceQuerying,AutofillServerCommunication",
    "--dns-prefetch-disable",
    "--disable-gpu",
    "--password-store=basic",
    "--use-mock-keychain",
)

#: WebRTC over 127.0.0.1 with a fake microphone and no permission prompt.
MEDIA_FLAGS = (
    "--allow-loopback-in-peer-connection",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
)


def find_chromium() -> str | None:
    """The system Chromium (Debian's `chromium` package), or None."""
    for name in EXECUTABLES:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(Exception):
    """A DevTools command failed, timed out, or the page threw."""


class Chromium:
    """One headless Chromium process. `start()` and `stop()` are synchronous (module-scoped fixtures)."""

    def __init__(self, executable: str, profile: Path, fake_mic_wav: Path | None = None) -> None:
        self.executable = executable
        self.profile = profile
        self.fake_mic_wav = fake_mic_wav
        self.log_path = profile.parent / f"{profile.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws_url: str | None = None

    def args(self) -> list[str]:
        args = [
            self.executable,
            "--headless=new",
            f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            *QUIET_FLAGS,
            *MEDIA_FLAGS,
        ]
        if self.fake_mic_wav is not None:
            args.append(f"--use-file-for-fake-audio-capture={self.fake_mic_wav}")
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        return [*args, "about:blank"]

    def start(self, timeout: float = 30.0) -> str:
        """Start the browser and return its DevTools WebSocket URL."""
        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.args(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CdpError(f"chromium exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            with contextlib.suppress(FileNotFoundError):
                lines = port_file.read_text().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                    self.ws_url = f"ws://127.0.0.1:{int(lines[0])}{lines[1].strip()}"
                    return self.ws_url
            time.sleep(0.05)
        self.stop()
        raise CdpError(f"chromium did not open its DevTools port within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no chromium log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class Page:
    """One tab over one CDP connection. Open with `await Page.open(browser_ws_url, url)`."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._waiters: list[tuple[str, Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        self._reader = asyncio.create_task(self._read())
        self.session_id: str | None = None
        self.target_id: str | None = None
        #: The page's console messages, uncaught exceptions and log entries, in order.
        self.console: list[str] = []

    @classmethod
    async def open(cls, browser_ws_url: str, url: str, timeout: float = 15.0) -> Page:
        ws = await websockets.connect(browser_ws_url, max_size=None, open_timeout=timeout, compression=None)
        page = cls(ws)
        try:
            target = await page.send("Target.createTarget", {"url": "about:blank"}, session=False)
            page.target_id = target["targetId"]
            attached = await page.send(
                "Target.attachToTarget", {"targetId": page.target_id, "flatten": True}, session=False
            )
            page.session_id = attached["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                await page.send(f"{domain}.enable")
            loaded = page.wait_event("Page.loadEventFired")
            await page.send("Page.navigate", {"url": url})
            await asyncio.wait_for(loaded, timeout)
        except BaseException:
            await page.close()
            raise
        return page

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                if "id" in message:
                    future = self._pending.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(message)
                    continue
                self._on_event(message)
        except ConnectionClosed:
            pass
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))
            for _, _, future in self._waiters:
                if not future.done():
                    future.set_exception(CdpError("the DevTools connection closed"))

    def _on_event(self, message: dict[str, Any]) -> None:
        method = message.get("method", "")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_object_text(arg) for arg in params.get("args", []))
            self.console.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.console.append(f"exception: {_exception_text(params.get('exceptionDetails', {}))}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"log.{entry.get('level')} ({entry.get('source')}): {entry.get('text')}")
        for waiter in list(self._waiters):
            name, accept, future = waiter
            if name == method and not future.done() and accept(params):
                future.set_result(params)
                self._waiters.remove(waiter)

    def wait_event(
        self, method: str, accept: Callable[[dict[str, Any]], bool] = lambda _: True
    ) -> asyncio.Future[dict[str, Any]]:
        """A future for the next event `method` (registered now, so call it before causing the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((method, accept, future))
        return future

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True, timeout: float = 15.0
    ) -> dict[str, Any]:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send(json.dumps(message))
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise CdpError(f"{method}: no answer within {timeout:g} s") from None
        finally:
            self._pending.pop(message_id, None)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def evaluate(self, expression: str, timeout: float = 15.0) -> Any:
        """Evaluate `expression` in the page, await it if it is a promise, and return its JSON value.

        The page has `timeout` seconds (Chromium enforces it too); a throw becomes a `CdpError` with the
        page's own message.
        """
        result = await self.send(
            "Runtime.evaluate",
            {
                "expression": expression,
                "awaitPromise": True,
                "returnByValue": True,
                "timeout": int(timeout * 1000),
            },
            timeout=timeout + 2.0,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {_exception_text(result['exceptionDetails'])}")
        return result.get("result", {}).get("value")

    async def call(self, function: str, *args: Any, timeout: float = 15.0) -> Any:
        """`await function(...args)` in the page, the arguments passed as JSON (never in a URL)."""
        return await self.evaluate(f"{function}(...{json.dumps(list(args))})", timeout)

    def console_dump(self) -> str:
        return "\n".join(self.console) if self.console else "(the page logged nothing)"

    async def close(self) -> None:
        if self.target_id is not None and not self._reader.done():
            with contextlib.suppress(CdpError, ConnectionClosed):
                await self.send("Target.closeTarget", {"targetId": self.target_id}, session=False, timeout=5.0)
        await self._ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


def _remote_object_text(obj: dict[str, Any]) -> str:
    if "value" in obj:
        value = obj["value"]
        return value if isinstance(value, str) else json.dumps(value)
    return str(obj.get("description", obj.get("type", "?")))


def _exception_text(details: dict[str, Any]) -> str:
    exception = details.get("exception") or {}
    text = exception.get("description") or details.get("text") or "unknown exception"
    return f"{text} (line {details.get('lineNumber')}, column {details.get('columnNumber')})"
