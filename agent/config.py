"""The agent's configuration: one YAML file into frozen dataclasses, one per concern.

This is the only module that reads YAML or the environment. Every field is checked against its type,
its range and its allowed values as it is read, and a bad one is reported with its key path and what is
allowed (for example `audio.capture.rate: 44100 is not one of 16000, 48000`), so a fleet owner editing
`/etc/voice-agent/config.yaml` over ssh sees at once what to fix. `config/voice-agent.yaml` documents
every key; a test keeps it equal to the defaults below.

Secrets are not part of the YAML: the API key comes from `VOICELIVE_API_KEY`, an `api_key_file`, or the
systemd credential `$CREDENTIALS_DIRECTORY/voicelive-api-key`; a bearer token from a file or a command.
They are wrapped in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .voicelive.auth import ApiKey, BearerTokenCommand, BearerTokenFile, Credentials, Secret
from .voicelive.protocol import DEFAULT_API_VERSION, FORBIDDEN_SESSION_KEYS
from .voicelive.session_fields import SESSION_FIELDS, unknown_session_fields

API_KEY_ENV = "VOICELIVE_API_KEY"
CREDENTIAL_NAME = "voicelive-api-key"


def _range(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"range": (lo, hi)}


def _f(default: Any, lo: float | None = None, hi: float | None = None, **meta: Any) -> Any:
    """A field with a default and an allowed range (inclusive)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: default.copy(), metadata={**_range(lo, hi), **meta})
    return field(default=default, metadata={**_range(lo, hi), **meta})


def _sub(cls: type) -> Any:
    return field(default_factory=cls)


# --------------------------------------------------------------------------------------------------
# The schema

DEFAULT_SESSION: dict[str, Any] = {
    "modalities": ["text", "audio"],
    "instructions": "You are a helpful voice assistant on a small speaker. Keep answers short and spoken.",
    "voice": {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural"},
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
    },
    "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
}


@dataclass(frozen=True)
class AuthConfig:
    type: Literal["api_key", "bearer"] = "api_key"
    api_key_file: Path | None = None
    bearer_token_file: Path | None = None
    bearer_token_command: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VoiceLiveConfig:
    endpoint: str = ""
    api_version: str = DEFAULT_API_VERSION
    model: str | None = "gpt-realtime"
    agent_name: str | None = None
    agent_project_name: str | None = None
    agent_version: str | None = None
    auth: AuthConfig = _sub(AuthConfig)
    send_client_request_id: bool = True
    ca_file: Path | None = None
    connect_timeout_s: float = _f(10.0, 0.5, 120)
    answer_timeout_s: float = _f(20.0, 0.5, 120)
    data_channel_timeout_s: float = _f(5.0, 0.5, 60)
    media_timeout_s: float = _f(5.0, 0.5, 120)
    session: dict[str, Any] = _f(DEFAULT_SESSION)
    #: Added to the WebSocket upgrade (e.g. `VoiceLive-Features: ...=V1Preview` with api_version v1).
    extra_headers: dict[str, str] = _f({})
    #: Added to the URL's query string.
    extra_query: dict[str, str] = _f({})


@dataclass(frozen=True)
class IceServerConfig:
    urls: tuple[str, ...] = ()
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class NetworkConfig:
    ice_servers: tuple[IceServerConfig, ...] = ()
    ice_loopback: bool = False
    concealment: bool = True
    jitter_max_ms: int = _f(400, 60, 2000)


@dataclass(frozen=True)
class CaptureConfig:
    device: str = "default"
    rate: Literal[16000, 48000] = 16000
    channels: int = _f(1, 1, 8)
    channel: int = _f(0, 0, 7)
    period_ms: int = _f(20, 10, 100)
    gain_db: float = _f(0.0, -20, 40)


@dataclass(frozen=True)
class PlaybackConfig:
    device: str = "default"
    rate: Literal[16000, 22050, 24000, 44100, 48000] = 48000
    channels: int = _f(1, 1, 2)
    period_ms: int = _f(20, 5, 100)
    volume: float = _f(1.0, 0.0, 1.0)
    buffer_ms: int = _f(2000, 100, 10000)


@dataclass(frozen=True)
class EarconConfig:
    """Each: "builtin" (the packaged sound), a path to a 16-bit WAV, or null for none."""

    wake: str | None = "builtin"
    connected: str | None = None
    error: str | None = "builtin"
    goodbye: str | None = "builtin"
    #: A due timer's sound, repeated until silenced.
    timer: str | None = "builtin"
    volume: float = _f(0.5, 0.0, 1.0)


@dataclass(frozen=True)
class AudioConfig:
    capture: CaptureConfig = _sub(CaptureConfig)
    playback: PlaybackConfig = _sub(PlaybackConfig)
    earcons: EarconConfig = _sub(EarconConfig)
    preroll_s: float = _f(2.0, 0.0, 10.0)
    send_wake_word: bool = False
    #: Who cancels the speaker's echo in the microphone (agent.audio.echo): "local" (the device, WebRTC
    #: AEC3 with the exact reference: for a speaker beside the microphones, as on the HATs' profiles),
    #: "service" (the service, from its own playback), "client-reference" (the service, from a reference
    #: the device sends as a second channel: preview, unconfirmed over WebRTC), "off" (nobody).
    echo: Literal["local", "service", "client-reference", "off"] = "service"


@dataclass(frozen=True)
class WakeModelConfig:
    name: str = "hey_jarvis"
    threshold: float = _f(0.5, 0.0, 1.0)
    trigger_level: int = _f(1, 1, 20)
    refractory_s: float = _f(2.0, 0.0, 30.0)


@dataclass(frozen=True)
class WakeConfig:
    models_dir: Path | None = None
    inference_framework: Literal["onnx", "tflite"] = "tflite"
    models: tuple[WakeModelConfig, ...] = (WakeModelConfig(),)
    vad_threshold: float = _f(0.0, 0.0, 1.0)
    speex_noise_suppression: bool = False
    suppress_while_speaking: bool = True
    speaking_threshold: float = _f(0.9, 0.0, 1.0)
    stop_word: str | None = None
    stop_threshold: float = _f(0.5, 0.0, 1.0)

    def resolved_models_dir(self) -> Path:
        """The models folder: as configured, or where install.sh puts the models, beside the venv."""
        return self.models_dir or Path(sys.prefix) / "share" / "voice-agent" / "models"


@dataclass(frozen=True)
class ButtonConfig:
    pin: int | None = None
    pull_up: bool = True
    hold_s: float = _f(2.0, 0.3, 30.0)
    bounce_s: float = _f(0.05, 0.0, 1.0)


@dataclass(frozen=True)
class LedConfig:
    driver: Literal["none", "led", "pwmled", "rgbled", "apa102"] = "none"
    pins: tuple[int, ...] = ()
    active_high: bool = True
    brightness: float = _f(1.0, 0.0, 1.0)
    count: int = _f(3, 1, 256)
    spi_bus: int = _f(0, 0, 1)
    spi_device: int = _f(1, 0, 2)
    power_pin: int | None = None
    power_active_high: bool = True


@dataclass(frozen=True)
class GpioOutputConfig:
    """A pin the model may switch by name (a relay, a lamp): `gpio.outputs: {porch_light: {pin: 17}}`."""

    pin: int | None = None
    active_high: bool = True
    initial: bool = False
    #: What it is, for the model ("the porch light").
    description: str | None = None


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: Literal["auto", "mock"] = "auto"
    button: ButtonConfig = _sub(ButtonConfig)
    leds: LedConfig = _sub(LedConfig)
    outputs: dict[str, GpioOutputConfig] = _f({})


@dataclass(frozen=True)
class HttpToolConfig:
    """A tool that calls an HTTP API (Home Assistant's REST API, say): see config/voice-agent.yaml."""

    name: str = ""
    description: str = ""
    #: JSON schema of the arguments the model gives; `{name}` in `url`, `body` and `headers` values takes one.
    parameters: dict[str, Any] = _f({"type": "object", "properties": {}})
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = ""
    body: dict[str, Any] | None = None
    headers: dict[str, str] = _f({})
    #: The hosts `url` may reach once filled in; anything else is refused.
    allow_hosts: tuple[str, ...] = ()
    timeout_s: float = _f(5.0, 0.5, 30.0)
    #: A bearer token: a file (mode 0600), or a systemd credential's name (LoadCredential=).
    token_file: Path | None = None
    token_credential: str | None = None


@dataclass(frozen=True)
class ToolsConfig:
    """The device's tools the model may call (agent.tools). Each built-in can be turned off."""

    timers: bool = True
    volume: bool = True
    time: bool = True
    end_conversation: bool = True
    mute: bool = True
    #: Timers and the volume are kept here across restarts; null: $STATE_DIRECTORY (systemd's
    #: StateDirectory=, /var/lib/voice-agent), else ~/.local/state/voice-agent.
    state_dir: Path | None = None
    #: The ALSA mixer control the volume tool sets (`amixer scontrols`), and its card; null: the first
    #: playback control of the card, else the agent scales the audio itself.
    volume_mixer: str | None = None
    volume_card: int = _f(0, 0, 31)
    volume_step: int = _f(10, 1, 50)
    #: A due timer rings (its earcon, every 2 s) until silenced, at most this long.
    timer_ring_s: float = _f(60.0, 5.0, 600.0)
    http: tuple[HttpToolConfig, ...] = ()


@dataclass(frozen=True)
class ConversationConfig:
    followup_s: float = _f(8.0, 0.0, 120.0)
    first_turn_s: float = _f(8.0, 1.0, 60.0)
    max_call_s: float = _f(3300.0, 10.0, 3540.0)
    backoff_initial_s: float = _f(1.0, 0.1, 60.0)
    backoff_max_s: float = _f(60.0, 1.0, 3600.0)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class DeviceConfig:
    """Which device this is, for its owner: shown in the log, the systemd status and `voice-agent check`."""

    name: str | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """What the running service publishes about itself: a Prometheus text file for node_exporter's textfile
    collector (null: none), and the status file `voice-agent status` reads (always, in runtime_dir)."""

    textfile: Path | None = None
    interval_s: float = _f(15.0, 1.0, 3600.0)
    #: null: $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=, /run/voice-agent); outside systemd, none.
    runtime_dir: Path | None = None


@dataclass(frozen=True)
class Config:
    voicelive: VoiceLiveConfig = _sub(VoiceLiveConfig)
    network: NetworkConfig = _sub(NetworkConfig)
    audio: AudioConfig = _sub(AudioConfig)
    wake: WakeConfig = _sub(WakeConfig)
    gpio: GpioConfig = _sub(GpioConfig)
    conversation: ConversationConfig = _sub(ConversationConfig)
    logging: LoggingConfig = _sub(LoggingConfig)
    device: DeviceConfig = _sub(DeviceConfig)
    metrics: MetricsConfig = _sub(MetricsConfig)
    tools: ToolsConfig = _sub(ToolsConfig)


# --------------------------------------------------------------------------------------------------
# Loading


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is type(None):
        return "null"
    if tp is Path:
        return "a path"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Loader:
    def __init__(self, base_dir: Path | None) -> None:
        self.base_dir = base_dir

    def convert(self, value: Any, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.dataclass(value, tp, path)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return self.convert(value, arg, path, meta)
                except ConfigError:
                    if len(args) > 2:
                        continue
                    raise
            raise ConfigError(path, f"{_show(value)} is not {_type_name(tp)}")
        if origin is Literal:
            allowed = typing.get_args(tp)
            if value not in allowed or isinstance(value, bool):
                raise ConfigError(path, f"{_show(value)} is not one of {', '.join(map(str, allowed))}")
            return value
        if origin is tuple:
            if not isinstance(value, list | tuple):
                raise ConfigError(path, f"{_show(value)} is not {_type_name(tp)}")
            (item_tp, *_rest) = typing.get_args(tp)
            return tuple(self.convert(v, item_tp, f"{path}[{i}]", {}) for i, v in enumerate(value))
        if origin is dict:
            if not isinstance(value, dict):
                raise ConfigError(path, f"{_show(value)} is not a mapping")
            args = typing.get_args(tp)
            if len(args) == 2 and dataclasses.is_dataclass(args[1]):
                return {str(k): self.dataclass(v, args[1], f"{path}.{k}") for k, v in value.items()}
            return dict(value)
        if tp is bool:
            if not isinstance(value, bool):
                raise ConfigError(path, f"{_show(value)} is not true or false")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(path, f"{_show(value)} is not an integer")
            return self.check_range(value, path, meta)
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(path, f"{_show(value)} is not a number")
            return self.check_range(float(value), path, meta)
        if tp is str:
            if not isinstance(value, str):
                raise ConfigError(path, f"{_show(value)} is not a string")
            return value
        if tp is Path:
            if not isinstance(value, str) or not value:
                raise ConfigError(path, f"{_show(value)} is not a path")
            p = Path(value).expanduser()
            if not p.is_absolute() and self.base_dir is not None:
                p = self.base_dir / p
            return p
        raise TypeError(f"config schema type {tp!r} at {path} is not supported")  # a bug, not user input

    @staticmethod
    def check_range(value: float, path: str, meta: Mapping[str, Any]) -> Any:
        lo, hi = meta.get("range", (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(path, f"{value} is out of range: allowed {lo} to {hi}")
        return value

    def dataclass(self, value: Any, cls: Any, path: str) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"{_show(value)} is not a mapping")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, raw in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in fields:
                raise ConfigError(sub, f"unknown key; allowed keys here: {', '.join(fields)}")
            kwargs[key] = self.convert(raw, hints[key], sub, fields[key].metadata)
        return cls(**kwargs)


def _merge_session(user: dict[str, Any]) -> dict[str, Any]:
    """The user's session keys over the defaults; a key set to null removes the default."""
    merged = dict(DEFAULT_SESSION)
    for key, value in user.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _validate(config: Config) -> Config:
    vl = config.voicelive
    for key in unknown_session_fields(vl.session):
        close = difflib.get_close_matches(key, sorted(SESSION_FIELDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"voicelive.session.{key}",
            'not a Voice Live session field (the service refuses it: "extra fields not permitted")'
            f"{hint} Allowed: {', '.join(sorted(SESSION_FIELDS))}",
        )
    for key in sorted(FORBIDDEN_SESSION_KEYS & vl.session.keys()):
        raise ConfigError(
            f"voicelive.session.{key}",
            "not allowed on /calls: audio is Opus over RTP, and this key makes the service fail to "
            "allocate the media client (set the model with voicelive.model)",
        )
    _validate_extras(vl)
    if vl.endpoint and not vl.endpoint.startswith(("wss://", "ws://", "https://", "http://")):
        raise ConfigError("voicelive.endpoint", f"{_show(vl.endpoint)} must start with wss:// or https://")
    if vl.model is None and not (vl.agent_name and vl.agent_project_name):
        raise ConfigError(
            "voicelive.model", "set a model, or voicelive.agent_name and voicelive.agent_project_name"
        )
    if (vl.agent_name is None) != (vl.agent_project_name is None):
        raise ConfigError("voicelive.agent_project_name", "agent_name and agent_project_name go together")
    if vl.auth.type == "bearer" and not (vl.auth.bearer_token_file or vl.auth.bearer_token_command):
        raise ConfigError("voicelive.auth", "type bearer needs bearer_token_file or bearer_token_command")
    if vl.auth.bearer_token_file and vl.auth.bearer_token_command:
        raise ConfigError("voicelive.auth", "set bearer_token_file or bearer_token_command, not both")
    cap = config.audio.capture
    if cap.channel >= cap.channels:
        raise ConfigError("audio.capture.channel", f"{cap.channel} is out of range: allowed 0 to {cap.channels - 1}")
    if not config.wake.models:
        raise ConfigError("wake.models", "name at least one wake word model")
    seen: set[str] = set()
    for i, model in enumerate(config.wake.models):
        if model.name in seen:
            raise ConfigError(f"wake.models[{i}].name", f"{model.name!r} is listed twice")
        seen.add(model.name)
    for i, server in enumerate(config.network.ice_servers):
        if not server.urls:
            raise ConfigError(f"network.ice_servers[{i}].urls", "give at least one stun: or turn: URL")
    _validate_gpio(config.gpio)
    _validate_tools(config.tools)
    textfile = config.metrics.textfile
    if textfile is not None and textfile.suffix != ".prom":
        raise ConfigError("metrics.textfile", f"{textfile}: node_exporter's textfile collector reads only *.prom files")
    if config.conversation.backoff_initial_s > config.conversation.backoff_max_s:
        raise ConfigError("conversation.backoff_initial_s", "must not exceed conversation.backoff_max_s")
    return config


#: Credentials have their own settings (voicelive.auth), kept in a file no one else can read: never in
#: extra headers or query parameters, which are logged and land in the world-readable configuration.
_SECRET_NAMES = frozenset({"api-key", "authorization", "ocp-apim-subscription-key", "access_token", "token",
                           "bearer", "key", "x-api-key"})  # fmt: skip
#: Set by their own settings, or by the WebSocket library.
_OWN_HEADERS = frozenset({"x-ms-client-request-id", "host", "upgrade", "connection", "user-agent"})
_OWN_QUERY = {"api-version": "voicelive.api_version", "model": "voicelive.model",
              "agent-name": "voicelive.agent_name", "agent-project-name": "voicelive.agent_project_name",
              "agent-version": "voicelive.agent_version"}  # fmt: skip
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _validate_extras(vl: VoiceLiveConfig) -> None:
    for kind, extras in (("extra_headers", vl.extra_headers), ("extra_query", vl.extra_query)):
        for name, value in extras.items():
            path = f"voicelive.{kind}.{name}"
            if not isinstance(name, str) or not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ConfigError(path, "names and values must be strings")
            low = name.lower()
            if low in _SECRET_NAMES or low.startswith("sec-websocket"):
                raise ConfigError(path, "credentials go in voicelive.auth (a key file or a token), never here")
            if kind == "extra_headers":
                if not _HEADER_NAME.match(name):
                    raise ConfigError(path, "is not a valid HTTP header name")
                if low in _OWN_HEADERS:
                    raise ConfigError(path, "is set by the agent itself")
                if any(c in str(value) for c in "\r\n"):
                    raise ConfigError(path, "a header value must be one line")
            elif low in _OWN_QUERY:
                raise ConfigError(path, f"set it with {_OWN_QUERY[low]}")


#: A tool's or an output's name, as the model's function names must be.
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: The built-in tools' names (agent.tools), which a tool from the config may not take.
BUILTIN_TOOL_NAMES = frozenset({
    "set_timer", "cancel_timer", "list_timers", "set_volume", "get_time", "end_conversation", "mute_microphone",
    "set_output",
})  # fmt: skip


def _validate_tools(tools: ToolsConfig) -> None:
    from urllib.parse import urlsplit

    from .tools.registry import check_schema

    seen: set[str] = set()
    for i, tool in enumerate(tools.http):
        path = f"tools.http[{i}]"
        if not NAME_RE.fullmatch(tool.name):
            raise ConfigError(f"{path}.name", f"{_show(tool.name)}: a name of letters, digits, _ and - (at most 64)")
        if tool.name in BUILTIN_TOOL_NAMES or tool.name in seen:
            raise ConfigError(f"{path}.name", f"{tool.name!r} is taken (a built-in tool, or listed twice)")
        seen.add(tool.name)
        if not tool.description:
            raise ConfigError(f"{path}.description", "say what the tool does: the model reads it")
        parts = urlsplit(tool.url.split("{", 1)[0])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{path}.url", f"{_show(tool.url)} must be an http:// or https:// URL with its host")
        if not tool.allow_hosts:
            raise ConfigError(f"{path}.allow_hosts", "list the hosts the tool may reach (its URL's host at least)")
        if parts.hostname not in tool.allow_hosts:
            raise ConfigError(f"{path}.allow_hosts", f"the URL's host {parts.hostname!r} is not in the list")
        if tool.token_file is not None and tool.token_credential is not None:
            raise ConfigError(f"{path}.token_file", "set token_file or token_credential, not both")
        try:
            check_schema(tool.parameters)
        except Exception as exc:
            raise ConfigError(f"{path}.parameters", f"not a valid JSON schema: {str(exc).splitlines()[0]}") from None
        if tool.parameters.get("type") != "object":
            raise ConfigError(f"{path}.parameters", 'the arguments are an object: give "type": "object"')


def _validate_gpio(gpio: GpioConfig) -> None:
    """Pin counts per LED driver, and no BCM pin used twice (gpiozero would refuse at start-up with a
    less helpful message)."""
    leds = gpio.leds
    wanted = {"none": 0, "led": 1, "pwmled": 1, "rgbled": 3, "apa102": 0}[leds.driver]
    if len(leds.pins) != wanted:
        if leds.driver == "apa102":
            raise ConfigError("gpio.leds.pins", "driver apa102 uses SPI (spi_bus, spi_device): leave pins empty")
        raise ConfigError("gpio.leds.pins", f"driver {leds.driver} takes {wanted} pin(s), got {len(leds.pins)}")
    used: dict[int, str] = {}
    named = [("gpio.leds.pins", p) for p in leds.pins]
    if leds.driver != "none" and leds.power_pin is not None:
        named.append(("gpio.leds.power_pin", leds.power_pin))
    if gpio.button.pin is not None:
        named.append(("gpio.button.pin", gpio.button.pin))
    for name, out in gpio.outputs.items():
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"gpio.outputs.{name}", "a name of letters, digits, _ and - (at most 64)")
        if out.pin is None:
            raise ConfigError(f"gpio.outputs.{name}.pin", "give the BCM GPIO number")
        named.append((f"gpio.outputs.{name}.pin", out.pin))
    for path, pin in named:
        if not 0 <= pin <= 27:
            raise ConfigError(path, f"{pin} is not a BCM GPIO number: allowed 0 to 27")
        if pin in used:
            raise ConfigError(path, f"GPIO{pin} is already used by {used[pin]}")
        used[pin] = path


def config_from_dict(data: Any, base_dir: Path | None = None) -> Config:
    """Build and validate a Config from parsed YAML (a mapping, or None for all defaults)."""
    config: Config = _Loader(base_dir).dataclass(data, Config, "")
    if isinstance(data, dict) and isinstance(data.get("voicelive"), dict) and "session" in data["voicelive"]:
        config = dataclasses.replace(
            config,
            voicelive=dataclasses.replace(config.voicelive, session=_merge_session(config.voicelive.session)),
        )
    return _validate(config)


def load_config(path: Path | None) -> Config:
    """Read and validate a YAML file; no file means all defaults. Relative paths in the file are taken
    from the file's own folder, so a config works the same whatever the working directory."""
    if path is None:
        return _validate(Config())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping of sections (voicelive, audio, ...)")
    return config_from_dict(data, base_dir=path.resolve().parent)


def load_credentials(auth: AuthConfig, env: Mapping[str, str]) -> Credentials:
    """The credentials for the service, from the first source that has them.

    API key: `VOICELIVE_API_KEY`, then `voicelive.auth.api_key_file`, then the systemd credential
    `$CREDENTIALS_DIRECTORY/voicelive-api-key`. Bearer: a file re-read, or a command re-run, for each
    call, since Entra ID tokens expire within hours.
    """
    if auth.type == "bearer":
        if auth.bearer_token_command:
            return BearerTokenCommand(auth.bearer_token_command)
        assert auth.bearer_token_file is not None  # _validate guarantees one of the two
        return BearerTokenFile(auth.bearer_token_file)
    value = env.get(API_KEY_ENV, "").strip()
    if value:
        return ApiKey(Secret(value))
    candidates: list[tuple[str, Path]] = []
    if auth.api_key_file:
        candidates.append(("voicelive.auth.api_key_file", auth.api_key_file))
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append(("systemd credential", Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME))
    for origin, path in candidates:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                "voicelive.auth.api_key_file" if origin.startswith("voicelive") else "",
                f"cannot read the API key from {path} ({origin}): {exc.strerror or exc}",
            ) from None
        if not value:
            raise ConfigError("voicelive.auth.api_key_file", f"the API key file {path} is empty")
        return ApiKey(Secret(value))
    raise ConfigError(
        "voicelive.auth",
        f"no API key: set {API_KEY_ENV}, voicelive.auth.api_key_file, or the systemd credential "
        f"{CREDENTIAL_NAME} (LoadCredential=)",
    )


@dataclass(frozen=True)
class SystemdEnv:
    """What systemd tells a `Type=notify` service through its environment (all None outside systemd)."""

    notify_socket: str | None = None
    watchdog_usec: int | None = None
    watchdog_pid: int | None = None

    def watchdog_interval_s(self, pid: int) -> float | None:
        """How often to ping the watchdog: half of WatchdogSec (what sd_watchdog_enabled(3) advises),
        or None when no watchdog is asked for, or it is meant for another process (WATCHDOG_PID)."""
        if not self.watchdog_usec or (self.watchdog_pid is not None and self.watchdog_pid != pid):
            return None
        return self.watchdog_usec / 2e6


def systemd_env(env: Mapping[str, str]) -> SystemdEnv:
    """NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; values that are not numbers are ignored."""

    def number(name: str) -> int | None:
        value = env.get(name, "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else None

    return SystemdEnv(
        notify_socket=env.get("NOTIFY_SOCKET") or None,
        watchdog_usec=number("WATCHDOG_USEC"),
        watchdog_pid=number("WATCHDOG_PID"),
    )


def default_config_path(env: Mapping[str, str]) -> Path | None:
    """`--config` unset: `$VOICE_AGENT_CONFIG`, then /etc/voice-agent/config.yaml if it exists."""
    if env.get("VOICE_AGENT_CONFIG"):
        return Path(env["VOICE_AGENT_CONFIG"])
    etc = Path("/etc/voice-agent/config.yaml")
    return etc if etc.exists() else None
