"""A local emulator of Azure Voice Live's WebRTC `/calls` endpoint, for development, demos and tests.

It speaks the server side of the protocol in shared/voicelive-webrtc.md over 127.0.0.1 only: the upgrade
checks, `rtc.call.sdp.create` / `rtc.call.sdp.created`, the `voice-live-events` data channel, server VAD
events and spoken replies over RTP (parrot or a WAV file), and switchable faults.
"""

from .server import Emulator, serve_forever
from .session import EmulatorCall
from .settings import EmulatorSettings, Faults

__all__ = ["Emulator", "EmulatorCall", "EmulatorSettings", "Faults", "serve_forever"]
