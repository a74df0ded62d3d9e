"""The configuration's `voicelive` and `network` sections, as the call client takes them."""

from __future__ import annotations

from .config import Config
from .voicelive.call import CallOptions
from .voicelive.control import Target


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


def call_options_for(config: Config) -> CallOptions:
    vl, net = config.voicelive, config.network
    return CallOptions(
        session=dict(vl.session),
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
    )
