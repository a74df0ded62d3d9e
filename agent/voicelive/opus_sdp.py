"""The Opus format parameters of an SDP: what each side tells the other about FEC.

`useinbandfec=1` in a side's fmtp says "I decode in-band FEC: put it in what you send me" (RFC 7587,
section 6.1). Chrome offers `minptime=10;useinbandfec=1`, and a non-browser client's offer is reported
refused by Voice Live until it carried that line (voicelive-webrtc.md section 1.7). aiortc writes no
fmtp for Opus, so the offer's text is edited before it is sent (aiortc's own state is not touched: the
parameters change nothing in how it packetises Opus).
"""

from __future__ import annotations

import re

#: What the client asks for, as Chrome does.
OFFER_PARAMS = {"minptime": "10", "useinbandfec": "1"}

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.IGNORECASE)


def _opus_payload_types(lines: list[str]) -> set[str]:
    return {m.group(1) for line in lines if (m := _RTPMAP.match(line))}


def opus_params(sdp: str) -> dict[str, str]:
    """The first Opus payload type's fmtp parameters ({} when it has none)."""
    lines = sdp.splitlines()
    types = _opus_payload_types(lines)
    for line in lines:
        if line.startswith("a=fmtp:"):
            pt, _, params = line[len("a=fmtp:") :].partition(" ")
            if pt in types:
                return dict(
                    (k.strip(), v.strip()) for k, _, v in (p.partition("=") for p in params.split(";")) if k.strip()
                )
    return {}


def decodes_fec(sdp: str) -> bool:
    """Whether the side that wrote `sdp` decodes Opus in-band FEC (and so wants it sent)."""
    return opus_params(sdp).get("useinbandfec") == "1"


def with_opus_params(sdp: str, params: dict[str, str] | None = None) -> str:
    """`sdp` with `params` merged into each Opus payload type's fmtp line (added after its rtpmap if
    it has none)."""
    params = OFFER_PARAMS if params is None else params
    lines = sdp.splitlines()
    types = _opus_payload_types(lines)
    out: list[str] = []
    have = {line[len("a=fmtp:") :].partition(" ")[0] for line in lines if line.startswith("a=fmtp:")}

    def render(existing: dict[str, str]) -> str:
        merged = {**existing, **params}
        return ";".join(f"{k}={v}" for k, v in merged.items())

    for line in lines:
        if line.startswith("a=fmtp:"):
            pt, _, text = line[len("a=fmtp:") :].partition(" ")
            if pt in types:
                existing = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
                line = f"a=fmtp:{pt} {render(existing)}"
        out.append(line)
        m = _RTPMAP.match(line)
        if m and m.group(1) not in have:
            out.append(f"a=fmtp:{m.group(1)} {render({})}")
    return "\r\n".join(out) + "\r\n"
