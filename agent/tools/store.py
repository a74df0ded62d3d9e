"""Small JSON files under the service's state directory (timers, the volume), written atomically, 0600."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def state_dir(configured: Path | None) -> Path:
    """`tools.state_dir`, else systemd's $STATE_DIRECTORY, else ~/.local/state/voice-agent."""
    if configured is not None:
        return configured
    env = os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0])
    return Path.home() / ".local" / "state" / "voice-agent"


def load(path: Path, default: Any) -> Any:
    """The file's JSON, or `default` if it is missing or unreadable (said in the log, never fatal)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s): starting from nothing", path, exc)
        return default


def save(path: Path, data: Any) -> None:
    """Write `data` as JSON: a temporary file beside it, then a rename (a crash leaves the old or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
