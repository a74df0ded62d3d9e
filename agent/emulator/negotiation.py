"""Answering the client's SDP offer the way Voice Live does: Opus only, no trickle ICE, one round.

The service answers an offer without an Opus audio m-line (or one it cannot use) with `rtc.call.error`
instead of an answer, so the emulator checks the offer first and reports `bad_sdp` with a reason. With
`ice_loopback` on, the emulator gathers only 127.0.0.1 and also drops the offer's candidates on any other
address, so it never sends a connectivity check anywhere but to loopback, whatever the client offered.
It also drops TCP candidates (aiortc's ICE is UDP only; a browser's TCP "active" candidates carry port 9,
which nothing can connect to), so an offer left with none is refused at once instead of failing at ICE.
"""

from __future__ import annotations

import ipaddress
import logging

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc import sdp as aiortc_sdp

from ..netsim.udp import UdpRelay
from ..voicelive.ice import LOOPBACK, host_addresses
from ..voicelive.opus_sdp import with_opus_params
from .tracks import ReplyTrack

log = logging.getLogger(__name__)


class OfferError(Exception):
    """The offer cannot be answered; `code` goes into `rtc.call.error`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False  # a hostname or an mDNS name


#: What a client needs to offer loopback candidates: the agent's setting, and Chromium's flag (without it
#: Chromium gathers no loopback candidate at all).
LOOPBACK_HINT = (
    "the agent: set network.ice_loopback: true; Chromium: start it with --allow-loopback-in-peer-connection"
)


def loopback_candidates_only(offer: str) -> str:
    """The offer without `a=candidate` lines that are not UDP on a loopback address."""
    kept: list[str] = []
    dropped = 0
    for line in offer.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or fields[2].lower() != "udp" or not _is_loopback(fields[4]):
                dropped += 1
                continue
        kept.append(line)
    if dropped:
        log.info("ice_loopback: ignored %d offered candidate(s) not UDP on loopback", dropped)
    return "\r\n".join(kept) + "\r\n"


def _has_tcp_on_loopback(offer: str) -> bool:
    fields = [line.split() for line in offer.splitlines() if line.startswith("a=candidate:")]
    return any(len(f) >= 5 and f[2].lower() == "tcp" and _is_loopback(f[4]) for f in fields)


def check_offer(offer: str, *, ice_loopback: bool) -> str:
    """Raise OfferError unless the offer has an audio m-line with Opus; returns the offer to apply."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception as exc:
        raise OfferError("bad_sdp", f"The SDP offer could not be parsed: {exc}") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio:
        raise OfferError("bad_sdp", "The SDP offer has no audio m-line.")
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise OfferError("bad_sdp", "The SDP offer's audio m-line does not offer Opus.")
    if not ice_loopback:
        return offer
    filtered = loopback_candidates_only(offer)
    if "a=candidate:" not in filtered:
        tcp = (
            " (its loopback candidates are TCP only, like a browser's 'active' ones on port 9, which nothing "
            "can connect to)"
            if _has_tcp_on_loopback(offer)
            else ""
        )
        raise OfferError(
            "bad_sdp",
            f"The emulator talks over loopback only and the offer has no UDP ICE candidate on 127.0.0.1{tcp}: "
            f"{LOOPBACK_HINT}.",
        )
    return filtered


def opus_codecs() -> list:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


async def answer_offer(
    pc: RTCPeerConnection,
    offer: str,
    track: ReplyTrack,
    *,
    ice_loopback: bool,
    relay: UdpRelay | None = None,
    fec: bool = True,
) -> str:
    """Apply the offer on `pc` (handlers already registered), send `track`, return the SDP answer.

    The transceiver is added before the offer is applied so that aiortc binds the offer's audio m-line to
    it, with the Opus-only preference already in place: aiortc picks the answer's codecs when it applies
    the remote offer, not when it creates the answer.

    With a `relay` (a simulated network), the two sides are told each other's candidate is the relay's.
    With `fec`, the answer says the emulator decodes in-band FEC (`useinbandfec=1`, as libwebrtc answers).
    """
    offer = check_offer(offer, ice_loopback=ice_loopback)
    if relay is not None:
        offer = relay.relay_offer(offer)
    transceiver = pc.addTransceiver(track, direction="sendrecv")
    transceiver.setCodecPreferences(opus_codecs())
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await pc.createAnswer()
        with host_addresses(LOOPBACK if ice_loopback else None):
            await pc.setLocalDescription(answer)
    except Exception as exc:
        raise OfferError("bad_sdp", f"The SDP offer could not be applied: {exc}") from None
    answer_sdp = pc.localDescription.sdp
    if fec:
        answer_sdp = with_opus_params(answer_sdp, {"minptime": "10", "useinbandfec": "1"})
    if relay is not None:
        answer_sdp = relay.relay_answer(answer_sdp)
    return answer_sdp
