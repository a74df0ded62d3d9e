"""The configuration's `voicelive` and `network` sections, as the call client takes them."""

from __future__ import annotations

import logging
from typing import Any

from .config import Config
from .voicelive.call import CallOptions
from .voicelive.control import Target

log = logging.getLogger(__name__)


def target_for(config: Config) -> Target:
    vl = config.voicelive
    return Target(
        endpoint=vl.endpoint,
        api_version=vl.api_version,
        model=vl.model,
        agent_name=vl.agent_name,
        agent_project_name=vl.agent_project_name,
        agent_version=vl.agent_version,
        ca_file=vl.ca_file,
        extra_query=tuple((k, str(v)) for k, v in vl.extra_query.items()),
        extra_headers=tuple((k, str(v)) for k, v in vl.extra_headers.items()),
    )


#: `audio.echo` -> the session's `input_audio_echo_cancellation` (voicelive-webrtc.md: the client
#: reference takes `reference_source: client` and `channels: 2`); absent: the service cancels nothing.
ECHO_SESSION: dict[str, dict[str, Any] | None] = {
    "service": {"type": "server_echo_cancellation"},
    "client-reference": {"type": "server_echo_cancellation", "reference_source": "client", "channels": 2},
    "local": None,
    "off": None,
}


def session_for(config: Config, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The session sent with the offer: the configured one, its echo cancellation set by `audio.echo`
    (a value the configured session gives for it is replaced, and said so once), and the device's
    `tools` declared (after any the configured session lists itself)."""
    session = dict(config.voicelive.session)
    if tools:
        own = [t for t in session.get("tools") or [] if isinstance(t, dict)]
        session["tools"] = own + [t for t in tools if t.get("name") not in {o.get("name") for o in own}]
        session.setdefault("tool_choice", "auto")
    given = session.pop("input_audio_echo_cancellation", None)
    wanted = ECHO_SESSION[config.audio.echo]
    if given is not None and given != wanted:
        log.warning(
            "voicelive.session.input_audio_echo_cancellation is set by audio.echo (%r): %s, not %s",
            config.audio.echo,
            wanted,
            given,
        )
    if wanted is not None:
        session["input_audio_echo_cancellation"] = dict(wanted)
    return session


def call_options_for(config: Config, tools: list[dict[str, Any]] | None = None) -> CallOptions:
    vl, net = config.voicelive, config.network
    return CallOptions(
        session=session_for(config, tools),
        ice_servers=[
            {"urls": list(s.urls), "username": s.username, "credential": s.credential} for s in net.ice_servers
        ],
        ice_pin=("127.0.0.1",) if net.ice_loopback else None,
        connect_timeout_s=vl.connect_timeout_s,
        answer_timeout_s=vl.answer_timeout_s,
        data_channel_timeout_s=vl.data_channel_timeout_s,
        media_timeout_s=vl.media_timeout_s,
        send_request_id=vl.send_client_request_id,
        concealment=net.concealment,
        jitter_max_ms=net.jitter_max_ms,
        uplink_reference=config.audio.echo == "client-reference",
    )
