"""The configuration loader: defaults, the documented file, and a clear error for every bad value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.config import Config, config_from_dict, load_config, load_credentials
from agent.errors import ConfigError
from agent.voicelive.auth import ApiKey, BearerTokenCommand, BearerTokenFile, Secret

REPO = Path(__file__).resolve().parents[1]


def test_documented_file_equals_the_defaults() -> None:
    """config/voice-agent.yaml documents every key with its default: it must load to exactly Config()."""
    assert load_config(REPO / "config" / "voice-agent.yaml") == Config()


def test_documented_file_names_every_key() -> None:
    import dataclasses
    import typing

    text = (REPO / "config" / "voice-agent.yaml").read_text()

    def names(cls: type) -> list[str]:
        found = []
        for name, tp in typing.get_type_hints(cls).items():
            found.append(name)
            if dataclasses.is_dataclass(tp):
                found += names(tp)
        return found

    assert [n for n in names(Config) if f"{n}:" not in text] == []


@pytest.mark.parametrize(
    ("data", "path", "fragment"),
    [
        ({"voicelive": {"endpiont": "wss://x"}}, "voicelive.endpiont", "allowed keys here: endpoint"),
        ({"audio": {"capture": {"rate": 44100}}}, "audio.capture.rate", "not one of 16000, 48000"),
        ({"audio": {"capture": {"period_ms": 500}}}, "audio.capture.period_ms", "allowed 10 to 100"),
        ({"audio": {"capture": {"channels": 2, "channel": 2}}}, "audio.capture.channel", "allowed 0 to 1"),
        ({"audio": {"playback": {"volume": "loud"}}}, "audio.playback.volume", "not a number"),
        ({"audio": {"send_wake_word": "yes"}}, "audio.send_wake_word", "not true or false"),
        ({"wake": {"models": [{"name": "alexa", "threshold": 1.5}]}}, "wake.models[0].threshold", "0.0 to 1.0"),
        ({"wake": {"models": [{"nmae": "alexa"}]}}, "wake.models[0].nmae", "allowed keys here: name"),
        ({"wake": {"inference_framework": "torch"}}, "wake.inference_framework", "onnx, tflite"),
        ({"wake": {"models": []}}, "wake.models", "at least one"),
        ({"gpio": {"leds": {"driver": "rgbled", "pins": [1]}}}, "gpio.leds.pins", "takes 3 pin(s)"),
        ({"gpio": {"button": {"pin": "GPIO17"}}}, "gpio.button.pin", "not an integer"),
        ({"voicelive": {"session": {"model": "gpt-4o"}}}, "voicelive.session.model", "not allowed on /calls"),
        (
            {"voicelive": {"session": {"input_audio_sampling_rate": 16000}}},
            "voicelive.session.input_audio_sampling_rate",
            "not allowed",
        ),
        ({"voicelive": {"endpoint": "ftp://x"}}, "voicelive.endpoint", "wss://"),
        ({"voicelive": {"model": None}}, "voicelive.model", "agent_name"),
        ({"voicelive": {"auth": {"type": "bearer"}}}, "voicelive.auth", "bearer_token_file"),
        ({"voicelive": {"auth": {"type": "token"}}}, "voicelive.auth.type", "api_key, bearer"),
        ({"network": {"ice_servers": [{"urls": []}]}}, "network.ice_servers[0].urls", "at least one"),
        ({"conversation": {"max_call_s": 7200}}, "conversation.max_call_s", "allowed 10.0 to 3540.0"),
        ({"logging": "debug"}, "logging", "not a mapping"),
        ({"logging": {"level": True}}, "logging.level", "not one of"),
        ({"voicelive": {"extra_headers": {"api-key": "k"}}}, "voicelive.extra_headers.api-key", "voicelive.auth"),
        ({"voicelive": {"extra_headers": {"Authorization": "B"}}}, "voicelive.extra_headers.Authorization", "never"),
        ({"voicelive": {"extra_query": {"api-key": "k"}}}, "voicelive.extra_query.api-key", "voicelive.auth"),
        ({"voicelive": {"extra_query": {"api-version": "v1"}}}, "voicelive.extra_query.api-version", "api_version"),
        ({"voicelive": {"extra_headers": {"bad header": "x"}}}, "voicelive.extra_headers.bad header", "header name"),
        ({"voicelive": {"extra_headers": {"X-A": "1\r\nX-B: 2"}}}, "voicelive.extra_headers.X-A", "one line"),
        ({"voicelive": {"extra_headers": {"X-A": ["list"]}}}, "voicelive.extra_headers.X-A", "strings"),
        ({"voicelive": {"extra_headers": []}}, "voicelive.extra_headers", "not a mapping"),
        ({"voicelive": {"session": {"turn_detecton": {}}}}, "voicelive.session.turn_detecton", "mean turn_detection"),
        ({"voicelive": {"session": {"speed": 1.2}}}, "voicelive.session.speed", "extra fields not permitted"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(data: dict, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert info.value.path == path
    assert fragment in str(info.value)
    assert str(info.value).startswith(path)


def test_unknown_top_level_section() -> None:
    with pytest.raises(ConfigError, match=r"^voicelvie: unknown key; allowed keys here: voicelive, network"):
        config_from_dict({"voicelvie": {}})


def test_session_merges_over_defaults_and_null_removes() -> None:
    user = {"instructions": "Be terse.", "input_audio_echo_cancellation": None}
    cfg = config_from_dict({"voicelive": {"session": user}})
    session = cfg.voicelive.session
    assert session["instructions"] == "Be terse."
    assert "input_audio_echo_cancellation" not in session
    assert session["input_audio_noise_reduction"] == {"type": "azure_deep_noise_suppression"}


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("wake:\n  models_dir: models\nvoicelive:\n  ca_file: ca.pem\n")
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.wake.models_dir == tmp_path / "models"
    assert cfg.voicelive.ca_file == tmp_path / "ca.pem"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("voicelive:\n  endpoint: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(tmp_path / "c.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_default_models_dir_is_beside_the_venv() -> None:
    import sys

    assert Config().wake.resolved_models_dir() == Path(sys.prefix) / "share" / "voice-agent" / "models"


# ------------------------------------------------------------------------------------------------
# Credentials


CANARY = "canary-0123456789abcdef-KEY"


def test_api_key_sources_in_order(tmp_path: Path) -> None:
    keyfile = tmp_path / "key"
    keyfile.write_text(CANARY + "-file\n")
    creds_dir = tmp_path / "creds"
    creds_dir.mkdir()
    (creds_dir / "voicelive-api-key").write_text(CANARY + "-systemd")
    auth = config_from_dict({"voicelive": {"auth": {"api_key_file": str(keyfile)}}}).voicelive.auth
    env = {"VOICELIVE_API_KEY": CANARY, "CREDENTIALS_DIRECTORY": str(creds_dir)}
    assert load_credentials(auth, env) == ApiKey(Secret(CANARY))
    assert load_credentials(auth, {"CREDENTIALS_DIRECTORY": str(creds_dir)}) == ApiKey(Secret(CANARY + "-file"))
    no_file = Config().voicelive.auth
    assert load_credentials(no_file, {"CREDENTIALS_DIRECTORY": str(creds_dir)}) == ApiKey(Secret(CANARY + "-systemd"))


def test_no_api_key_says_where_to_put_one() -> None:
    with pytest.raises(ConfigError, match="VOICELIVE_API_KEY.*api_key_file.*LoadCredential"):
        load_credentials(Config().voicelive.auth, {})


def test_unreadable_key_file_names_it(tmp_path: Path) -> None:
    auth = config_from_dict({"voicelive": {"auth": {"api_key_file": str(tmp_path / "missing")}}}).voicelive.auth
    with pytest.raises(ConfigError, match="cannot read the API key from .*missing"):
        load_credentials(auth, {})


async def test_bearer_sources(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(CANARY + "\n")
    cfg = config_from_dict({"voicelive": {"auth": {"type": "bearer", "bearer_token_file": str(token)}}})
    creds = load_credentials(cfg.voicelive.auth, {})
    assert isinstance(creds, BearerTokenFile)
    assert await creds.headers() == {"Authorization": f"Bearer {CANARY}"}
    cfg = config_from_dict({"voicelive": {"auth": {"type": "bearer", "bearer_token_command": ["echo", CANARY]}}})
    creds = load_credentials(cfg.voicelive.auth, {})
    assert isinstance(creds, BearerTokenCommand)
    assert await creds.headers() == {"Authorization": f"Bearer {CANARY}"}


async def test_failing_token_command_does_not_quote_its_output() -> None:
    from agent.voicelive.auth import CredentialError

    creds = BearerTokenCommand(("sh", "-c", f"echo {CANARY}; exit 3"))
    with pytest.raises(CredentialError) as info:
        await creds.headers()
    assert CANARY not in str(info.value)
    assert "exited 3" in str(info.value)


def test_secret_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(CANARY)
    key = ApiKey(secret)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").info("key %s %r %s", secret, key, [key])
    for text in (repr(secret), str(secret), repr(key), f"{key}", caplog.text):
        assert CANARY not in text
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(secret)


def _leaves(cls: type, prefix: str = "") -> list[tuple[str, object, dict]]:
    """(key path, type, field metadata) of every leaf setting in the schema."""
    import dataclasses
    import typing

    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, path + ".")
        else:
            out.append((path, tp, dict(f.metadata)))
    return out


def _nest(path: str, value: object) -> dict:
    data: dict = {}
    node = data
    *parents, leaf = path.split(".")
    for key in parents:
        node[key] = {}
        node = node[key]
    node[leaf] = value
    return data


WRONG_TYPE = {str: 12345, int: "a string", float: "a string", bool: "yes", Path: 42}


@pytest.mark.parametrize(("path", "tp", "meta"), _leaves(Config), ids=[p for p, _, _ in _leaves(Config)])
def test_every_setting_rejects_a_wrong_type_by_name(path: str, tp: object, meta: dict) -> None:
    """Each leaf setting, given a value of the wrong type (or out of its range), is refused with a
    message that starts with its own key path."""
    import typing

    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = args[0] if typing.get_origin(tp) is not typing.Literal else tp
    if typing.get_origin(base) is tuple:
        bad: object = "not a list"
    elif typing.get_origin(base) is dict:
        bad = ["not", "a", "mapping"]
    elif typing.get_origin(tp) is typing.Literal:
        bad = "no-such-choice"
    else:
        bad = WRONG_TYPE.get(base, object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        config_from_dict(_nest(path, bad))
    assert str(info.value).startswith(path), (path, str(info.value))
    _lo, hi = meta.get("range", (None, None))
    if hi is not None:
        with pytest.raises(ConfigError, match=r"out of range: allowed") as info:
            config_from_dict(_nest(path, hi + 1000))
        assert str(info.value).startswith(path)


def test_api_version_and_extras_reach_the_url_and_the_upgrade() -> None:
    from agent.call_config import target_for

    cfg = config_from_dict({"voicelive": {
        "endpoint": "wss://r.services.ai.azure.com", "api_version": "v1",
        "extra_headers": {"VoiceLive-Features": "webrtc=V1Preview"}, "extra_query": {"region": "eu"},
    }})  # fmt: skip
    target = target_for(cfg)
    assert "api-version=v1" in target.url() and "region=eu" in target.url()
    assert target.extra_headers == (("VoiceLive-Features", "webrtc=V1Preview"),)
