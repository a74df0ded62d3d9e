"""`voice-agent check`: what is wrong with this device, as a pass/fail table (or JSON).

A fleet owner runs it over ssh when a Pi does not answer: it tries each part the service needs, in the
order they depend on each other, and says what failed and what to do. Nothing here changes the device.

Rows: the configuration; the credentials; ALSA capture at the configured rate (three seconds of level
in dBFS, and clipping); ALSA playback (a short test tone); an LED walk; optionally a button press; DNS and
TLS to the endpoint; whether the service accepts the credentials (the control channel is opened and
closed, no call is made); the wake word models. The exit code is 1 when any row failed. Without an
endpoint (no Azure resource yet) the hardware rows still run and the others say "skip" and why.

Run it with the service stopped (`systemctl stop voice-agent`): the service holds the sound card.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np

from .config import CREDENTIAL_NAME, Config, load_config, load_credentials
from .errors import ConfigError

log = logging.getLogger(__name__)

Status = Literal["pass", "warn", "fail", "skip"]

NO_ENDPOINT = "not checked: no endpoint configured (voicelive.endpoint: wss://<resource>.services.ai.azure.com)"

#: Where install.sh keeps the key; `sudo voice-agent check` reads it from there, as systemd would.
INSTALLED_CREDENTIALS = Path("/etc/voice-agent/credentials")


@dataclass
class Row:
    name: str
    status: Status
    detail: str
    seconds: float = 0.0


@dataclass
class CheckOptions:
    capture_s: float = 3.0
    tone: bool = True
    leds: bool = True
    button_s: float = 0.0  # 0: do not wait for a press
    timeout_s: float = 10.0


@dataclass
class Report:
    config_path: str | None
    device_name: str | None
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.status != "fail" for r in self.rows)

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "config": self.config_path, "device": self.device_name,
                           "checks": [asdict(r) for r in self.rows]})  # fmt: skip

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows)
        head = f"voice-agent check{f' ({self.device_name})' if self.device_name else ''}"
        lines = [head, *(f"{r.status.upper():<5} {r.name:<{width}}  {r.detail}" for r in self.rows)]
        failed = [r.name for r in self.rows if r.status == "fail"]
        lines.append(f"result: {'FAIL: ' + ', '.join(failed) if failed else 'all checks passed'}")
        return "\n".join(lines)


def dbfs(samples: np.ndarray) -> float:
    rms = math.sqrt(float(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0
    return round(20 * math.log10(rms / 32768 + 1e-10), 1)


def with_installed_credentials(env: Mapping[str, str]) -> Mapping[str, str]:
    """Outside systemd, look for the key where install.sh put it (readable by root only)."""
    if env.get("CREDENTIALS_DIRECTORY") or not (INSTALLED_CREDENTIALS / CREDENTIAL_NAME).is_file():
        return env
    return {**env, "CREDENTIALS_DIRECTORY": str(INSTALLED_CREDENTIALS)}


# --------------------------------------------------------------------------------------------------
# The rows


def _open(kind: Literal["capture", "playback"], device: str, rate: int, channels: int, period_ms: int) -> Any:
    """The PCM opened as the service opens it, or a failed Row saying why (and what to do if busy)."""
    import alsaaudio

    from .audio.alsa import open_pcm

    pcm_kind = alsaaudio.PCM_CAPTURE if kind == "capture" else alsaaudio.PCM_PLAYBACK
    try:
        return open_pcm(alsaaudio.PCM, pcm_kind, device, rate, channels, rate * period_ms // 1000)
    except Exception as exc:
        message = f"cannot open {device!r} at {rate} Hz, {channels} ch: {exc}"
        if "busy" in message.lower():
            message += " (the service holds it: systemctl stop voice-agent, then check again)"
        return Row(kind, "fail", message)


def check_capture(config: Config, seconds: float) -> Row:
    """Open the microphone as the service does and read `seconds` of it: level and clipping."""
    import alsaaudio

    from .audio.capture import pick_channel

    cap = config.audio.capture
    pcm = _open("capture", cap.device, cap.rate, cap.channels, cap.period_ms)
    if isinstance(pcm, Row):
        return pcm
    chunks: list[np.ndarray] = []
    got = 0
    try:
        while got < seconds * cap.rate:
            n, data = pcm.read()
            if n <= 0:
                continue
            frames = pick_channel(np.frombuffer(data, dtype="<i2"), cap.channels, cap.channel)
            chunks.append(frames)
            got += len(frames)
    except alsaaudio.ALSAAudioError as exc:
        return Row("capture", "fail", f"reading {cap.device!r} failed after {got / cap.rate:.1f} s: {exc}")
    finally:
        with contextlib.suppress(Exception):
            pcm.close()
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
    level = dbfs(samples)
    clipped = float(np.mean(np.abs(samples.astype(np.int32)) >= 32767)) * 100 if samples.size else 0.0
    detail = f"{cap.device} {cap.rate} Hz ch {cap.channel}/{cap.channels}: {level} dBFS RMS, {clipped:.2f}% clipped"
    if level < -70:
        return Row("capture", "warn", detail + " (silent: microphone muted or unplugged? see alsamixer)")
    if clipped > 0.1:
        return Row("capture", "warn", detail + " (clipping: lower the gain, audio.capture.gain_db)")
    return Row("capture", "pass", detail)


def check_playback(config: Config) -> Row:
    """Open the speaker as the service does and play a one-second 440 Hz tone at -12 dBFS."""
    import alsaaudio

    pb = config.audio.playback
    period = pb.rate * pb.period_ms // 1000
    pcm = _open("playback", pb.device, pb.rate, pb.channels, pb.period_ms)
    if isinstance(pcm, Row):
        return pcm
    t = np.arange(pb.rate) / pb.rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)  # no clicks
    tone = (np.sin(2 * np.pi * 440 * t) * fade * 0.25 * pb.volume * 32767).astype("<i2")
    interleaved = np.repeat(tone, pb.channels).tobytes()
    step = period * pb.channels * 2
    try:
        for i in range(0, len(interleaved), step):
            pcm.write(interleaved[i : i + step].ljust(step, b"\0"))
        with contextlib.suppress(Exception):
            pcm.drain()
    except alsaaudio.ALSAAudioError as exc:
        return Row("playback", "fail", f"writing to {pb.device!r} failed: {exc}")
    finally:
        with contextlib.suppress(Exception):
            pcm.close()
    return Row("playback", "pass", f"{pb.device} {pb.rate} Hz {pb.channels} ch: 1 s 440 Hz tone played (heard it?)")


def check_leds(config: Config) -> Row:
    """Show each conversation state's pattern for a moment, then turn the LEDs off."""
    if config.gpio.leds.driver == "none":
        return Row("leds", "skip", "no LEDs configured (gpio.leds.driver: none)")
    from .gpio import setup_pin_factory
    from .leds import OFF, Leds, leds_for
    from .state import State

    try:
        setup_pin_factory(config.gpio.pin_factory)
        leds = Leds(config.gpio)
    except Exception as exc:
        return Row("leds", "fail", f"{config.gpio.leds.driver} on {list(config.gpio.leds.pins)}: {exc}")
    shown = []
    try:
        for state in (State.WAKING, State.LISTENING, State.THINKING, State.SPEAKING, State.ERROR):
            pattern = leds_for(state)
            leds.show(pattern)
            shown.append(pattern.name)
            time.sleep(0.4)
        leds.show(OFF)
    except Exception as exc:
        return Row("leds", "fail", f"showing {shown[-1] if shown else 'a pattern'} failed: {exc}")
    finally:
        leds.close()
    return Row("leds", "pass", f"{config.gpio.leds.driver}: walked {' > '.join(shown)} > off")


def check_button(config: Config, wait_s: float) -> Row:
    pin = config.gpio.button.pin
    if pin is None:
        return Row("button", "skip", "no button configured (gpio.button.pin: null)")
    if wait_s <= 0:
        return Row("button", "skip", f"GPIO{pin} configured; --button SECONDS waits for a press")
    from gpiozero import Button

    from .gpio import setup_pin_factory

    setup_pin_factory(config.gpio.pin_factory)
    try:
        button = Button(pin, pull_up=config.gpio.button.pull_up, bounce_time=config.gpio.button.bounce_s or None)
    except Exception as exc:
        return Row("button", "fail", f"GPIO{pin}: {exc}")
    try:
        print(f"press the button (GPIO{pin}) within {wait_s:.0f} s ...", flush=True)
        pressed = button.wait_for_press(timeout=wait_s)
    finally:
        button.close()
    if pressed:
        return Row("button", "pass", f"GPIO{pin}: press seen")
    return Row("button", "fail", f"GPIO{pin}: no press within {wait_s:.0f} s (wiring, or gpio.button.pull_up?)")


def _endpoint(config: Config) -> tuple[str, str, int]:
    from .call_config import target_for

    url = urlsplit(target_for(config).url())
    return url.scheme, url.hostname or "", url.port or (443 if url.scheme == "wss" else 80)


async def check_network(config: Config, timeout_s: float) -> list[Row]:
    from .voicelive.control import _is_loopback

    scheme, host, port = _endpoint(config)
    if scheme == "ws" and _is_loopback(host):
        note = f"not applicable: ws:// to the loopback host {host}:{port}"
        return [Row("dns", "pass", note), Row("tls", "pass", note)]
    loop = asyncio.get_running_loop()
    t = time.monotonic()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s)
    except (OSError, TimeoutError) as exc:
        why = getattr(exc, "strerror", None) or "timed out"
        return [Row("dns", "fail", f"cannot resolve {host}: {why} (network up? /etc/resolv.conf?)"),
                Row("tls", "skip", "no address to connect to")]  # fmt: skip
    addresses = sorted({str(info[4][0]) for info in infos})
    rows = [Row("dns", "pass", f"{host} -> {', '.join(addresses[:3])}", time.monotonic() - t)]
    t = time.monotonic()
    ca = str(config.voicelive.ca_file) if config.voicelive.ca_file else None
    context = ssl.create_default_context(cafile=ca)
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout_s
        )
    except ssl.SSLCertVerificationError as exc:
        rows.append(Row("tls", "fail", f"certificate of {host} not trusted: {exc.verify_message} (voicelive.ca_file?)"))
        return rows
    except (OSError, TimeoutError) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or "timed out"
        rows.append(Row("tls", "fail", f"cannot connect to {host}:{port}: {why} (firewall, proxy?)"))
        return rows
    tls = writer.get_extra_info("ssl_object")
    version = tls.version() if tls else "?"
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    rows.append(Row("tls", "pass", f"{host}:{port} {version}, certificate verified", time.monotonic() - t))
    return rows


async def check_auth(config: Config, env: Mapping[str, str], timeout_s: float) -> Row:
    """Open the control channel with the credentials and close it again: no call is placed."""
    from .call_config import target_for
    from .voicelive.control import ControlChannel
    from .voicelive.errors import AuthError, VoiceLiveError

    try:
        credentials = load_credentials(config.voicelive.auth, env)
    except ConfigError as exc:
        return Row("auth", "fail", f"no credentials: {exc}")
    try:
        channel = await ControlChannel.connect(
            target_for(config), credentials, min(timeout_s, config.voicelive.connect_timeout_s),
            config.voicelive.send_client_request_id,
        )  # fmt: skip
    except AuthError as exc:
        return Row("auth", "fail", f"{exc} ({credentials.describe()})")
    except VoiceLiveError as exc:
        return Row("auth", "fail", f"{exc.kind}: {exc}")
    await channel.close()
    return Row("auth", "pass", f"{credentials.describe()} accepted by {urlsplit(config.voicelive.endpoint).hostname}")


def check_wake_word(config: Config) -> Row:
    from .wake.wakeword import WakeWordDetector

    try:
        detector = WakeWordDetector(config.wake)
    except ConfigError as exc:
        return Row("wake word", "fail", str(exc))
    except Exception as exc:
        return Row("wake word", "fail", f"cannot load the models: {exc}")
    names = detector.names
    detector.close()
    where = config.wake.resolved_models_dir()
    return Row("wake word", "pass", f"{', '.join(names)} ({config.wake.inference_framework}, {where})")


# --------------------------------------------------------------------------------------------------


async def in_daemon_thread(name: str, limit_s: float, fn: Callable[..., Row], *args: object) -> Row:
    """`fn` in a daemon thread, given up after `limit_s`: an ALSA read on a stalled device never returns,
    and the check must still finish (the thread is left behind and ends with the process)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Row] = loop.create_future()

    def run() -> None:
        try:
            row = fn(*args)
        except Exception as exc:  # a bug or an odd device: a failed row, never a traceback
            row = Row(name, "fail", f"{type(exc).__name__}: {exc}")
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(row))

    threading.Thread(target=run, name=f"check-{name}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), limit_s)
    except TimeoutError:
        return Row(name, "fail", f"no answer from the device within {limit_s:.0f} s (stalled? unplugged?)")


async def _timed(report: Report, make: Callable[[], Awaitable[Row | list[Row]]]) -> None:
    t = time.monotonic()
    result = await make()
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        row.seconds = round(row.seconds or time.monotonic() - t, 2)
        report.rows.append(row)


async def run_check(config_path: Path | None, env: Mapping[str, str], options: CheckOptions) -> Report:
    report = Report(str(config_path) if config_path else None, None)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        report.rows.append(Row("config", "fail", str(exc)))
        return report
    report.device_name = config.device.name
    where = config_path or "built-in defaults"
    # Without an endpoint (no Azure resource yet) the hardware can still be checked: the rows that need
    # the service are marked as not checked.
    endpoint = bool(config.voicelive.endpoint)
    if endpoint:
        report.rows.append(Row("config", "pass", f"{where}: valid"))
    else:
        report.rows.append(Row("config", "warn", f"{where}: valid, but voicelive.endpoint is not set (needed to run)"))
    env = with_installed_credentials(env)
    try:
        report.rows.append(Row("credentials", "pass", load_credentials(config.voicelive.auth, env).describe()))
    except ConfigError as exc:
        report.rows.append(Row("credentials", "fail", str(exc)) if endpoint else
                           Row("credentials", "skip", f"{NO_ENDPOINT}; no key found yet either ({exc})"))  # fmt: skip

    async def in_thread(fn: Callable[..., Row], *args: object) -> Row:
        return await asyncio.to_thread(fn, *args)

    audio_limit = options.capture_s + options.timeout_s
    await _timed(report, lambda: in_daemon_thread("capture", audio_limit, check_capture, config, options.capture_s))
    if options.tone:
        await _timed(report, lambda: in_daemon_thread("playback", audio_limit, check_playback, config))
    else:
        report.rows.append(Row("playback", "skip", "--no-tone"))
    if options.leds:
        await _timed(report, lambda: in_thread(check_leds, config))
    else:
        report.rows.append(Row("leds", "skip", "--no-leds"))
    await _timed(report, lambda: in_thread(check_button, config, options.button_s))
    if not endpoint:
        report.rows += [Row(name, "skip", NO_ENDPOINT) for name in ("dns", "tls", "auth")]
    else:
        await _timed(report, lambda: check_network(config, options.timeout_s))
        if any(r.name in ("dns", "tls") and r.status == "fail" for r in report.rows):
            report.rows.append(Row("auth", "skip", "the endpoint cannot be reached"))
        else:
            await _timed(report, lambda: check_auth(config, env, options.timeout_s))
    await _timed(report, lambda: in_thread(check_wake_word, config))
    return report
