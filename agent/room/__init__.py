"""The room a device lives in, for the test world: its speaker heard by its own microphone.

`Room` is a stand-in sound card over alsa-lib's file plugin (agent.audio.fileplugin): the agent plays
into a FIFO the room reads as a DAC would, and records from a FIFO the room writes in real time with the
user's speech, room noise and the echo of what the speaker played, through a seeded room response.
"""

from .acoustics import RoomSpec, impulse_response
from .room import Room

__all__ = ["Room", "RoomSpec", "impulse_response"]
