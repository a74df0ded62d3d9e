"""The speaker's volume: set (0 to 100), up, down; remembered across restarts.

Through the card's ALSA mixer (pyalsaaudio's `Mixer`) when it has a playback control, so the level is
the card's own (and `alsamixer` shows it); where it has none (many I2S HATs), the agent scales what it
plays itself (`AlsaPlayback.volume`), which is what an alsa-lib `softvol` plugin would do, without
asking the user to edit asound.conf. Mixer calls block on the card, so they run in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Protocol

from . import store
from .registry import Tool, ToolError

log = logging.getLogger(__name__)


class SoftVolume(Protocol):
    volume: float


class Volume:
    def __init__(self, directory: Path, playback: SoftVolume, mixer: str | None, card: int, step: int) -> None:
        self.path = directory / "volume.json"
        self.playback = playback
        self.step = step
        self._mixer: Any = None
        self.control: str | None = None
        try:
            import alsaaudio

            if card not in alsaaudio.card_indexes():  # no such card (alsa-lib would print its complaint)
                raise LookupError(f"no sound card {card}")
            names = alsaaudio.mixers(cardindex=card)
            name = mixer or next((n for n in names if n in ("Master", "PCM", "Speaker", "Playback")), None)
            if name is not None:
                self._mixer = alsaaudio.Mixer(name, cardindex=card)
                self.control = f"{name} (card {card})"
        except Exception as exc:  # no card, no such control: the agent scales the audio itself
            if mixer is not None:
                log.warning(
                    "no ALSA mixer control %r on card %d (%s): the agent sets the volume itself", mixer, card, exc
                )
        saved = store.load(self.path, {})
        self.level = int(saved.get("level", round(playback.volume * 100))) if isinstance(saved, dict) else 100
        self._apply_now(self.level)

    def _apply_now(self, level: int) -> None:
        if self._mixer is not None:
            self._mixer.setvolume(level)
        else:
            self.playback.volume = level / 100

    async def set(self, level: int) -> int:
        level = max(0, min(100, int(level)))
        try:
            await asyncio.to_thread(self._apply_now, level)
        except Exception as exc:
            raise ToolError(f"the sound card refused the volume: {exc}") from None
        self.level = level
        try:
            await asyncio.to_thread(store.save, self.path, {"level": level})
        except OSError as exc:
            log.warning("cannot keep the volume in %s (%s)", self.path, exc)
        log.info("volume %d%% (%s)", level, self.control or "the agent's own scaling")
        return level

    def tools(self) -> list[Tool]:
        async def set_volume(args: dict[str, Any]) -> dict[str, Any]:
            if "level" in args:
                target = int(args["level"])
            elif args.get("change") == "up":
                target = self.level + self.step
            elif args.get("change") == "down":
                target = self.level - self.step
            else:
                raise ToolError("give a level (0 to 100) or a change: up or down")
            before = self.level
            return {"volume": await self.set(target), "was": before}

        return [
            Tool(
                "set_volume",
                "Set the speaker's volume: a level from 0 to 100, or a change up or down (a bit louder, quieter).",
                {
                    "type": "object",
                    "properties": {
                        "level": {"type": "integer", "minimum": 0, "maximum": 100},
                        "change": {"type": "string", "enum": ["up", "down"]},
                    },
                    "additionalProperties": False,
                },
                set_volume,
            )
        ]
