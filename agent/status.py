"""What the running service is doing, in one sentence and one small file.

`status_line(snapshot)` is the sentence: systemd's STATUS= line (`systemctl status voice-agent`) and
`voice-agent status` both print it, from the same snapshot, so the two always tell the same story.

The service writes `status.json` into its runtime folder (systemd's RuntimeDirectory=, i.e.
$RUNTIME_DIRECTORY, /run/voice-agent; or `metrics.runtime_dir`) together with the metrics file
(agent.metrics): the snapshot, the last errors and the counters since start. `voice-agent status` reads
it: exit code 0 when the device works, 1 when it shows an error, 2 when no service is running (no file,
its process gone, or the file not rewritten for three intervals).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .state import Snapshot

STATUS_FILE = "status.json"
#: Where the unit's RuntimeDirectory=voice-agent lives, for `voice-agent status` run from a shell.
DEFAULT_RUNTIME_DIR = Path("/run/voice-agent")
SCHEMA = 1
EXIT_OK, EXIT_ERROR, EXIT_NOT_RUNNING = 0, 1, 2


def status_line(snap: Snapshot) -> str:
    """What the device is doing, and what is wrong: systemd's STATUS= and `voice-agent status`."""
    parts = [snap.state.value.replace("_", " ")]
    if snap.muted:
        parts.append("muted")
    if snap.blocked is not None:
        parts.append(f"{snap.blocked.value} error: reload or hold the button to retry")
    elif snap.shown_error is not None:
        parts.append(f"{snap.shown_error.value} error")
    return ", ".join(parts)


def status_text(device_name: str | None, snap: Snapshot) -> str:
    """The STATUS= line as the service sends it: the device's name, then `status_line`."""
    return f"{device_name}: {status_line(snap)}" if device_name else status_line(snap)


def writer_dir(configured: Path | None, env: Mapping[str, str]) -> Path | None:
    """Where the service writes status.json: `metrics.runtime_dir`, else $RUNTIME_DIRECTORY (set by
    systemd for RuntimeDirectory=); None outside systemd with nothing configured (nothing is written)."""
    if configured is not None:
        return configured
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime) if runtime else None


def reader_path(configured: Path | None, env: Mapping[str, str]) -> Path:
    """Where `voice-agent status` looks: as the service would write, else the unit's /run/voice-agent."""
    return (writer_dir(configured, env) or DEFAULT_RUNTIME_DIR) / STATUS_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process (the service's): it exists
        return True
    return True


def read_status(path: Path, now: float | None = None) -> tuple[dict[str, Any] | None, str]:
    """The status document, or None and why there is no running service to ask."""
    now = time.time() if now is None else now
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no service running: {path} does not exist (systemctl status voice-agent)"
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return None, f"{path} is not a voice-agent status file of this version"
    if not doc.get("running", False):
        return None, f"no service running: it stopped at {time.strftime('%F %T', time.localtime(doc['written']))}"
    if not _alive(int(doc.get("pid", 0))):
        return None, f"no service running: process {doc.get('pid')} is gone (it wrote {path})"
    age = now - float(doc.get("written", 0))
    limit = 3 * float(doc.get("interval_s", 15)) + 5
    if age > limit:
        return None, f"stale: {path} was last written {age:.0f} s ago (more than {limit:.0f} s): the service hangs?"
    return doc, ""


def describe(doc: dict[str, Any]) -> str:
    """The status document for a person: the STATUS line first, then the facts."""
    c = doc["counters"]
    lines = [
        doc["status"],
        f"  device {doc['device']}, pid {doc['pid']}, up {doc['uptime_s'] / 3600:.1f} h, "
        f"config {doc['config_sha256'][:12]}",
        f"  microphone {'ok' if doc['mic_ok'] else 'LOST'}, level {doc['mic_level_dbfs']} dBFS over the last minute"
        if doc["mic_level_dbfs"] is not None
        else f"  microphone {'ok' if doc['mic_ok'] else 'LOST'}",
        f"  since start: {c['wake_detections']} wake words, {c['conversations']} conversations, "
        f"{c['call_failures']} failed calls, {c['replies']} replies, {c['barge_ins']} barge-ins, "
        f"{c['call_seconds']:.0f} s in calls",
    ]
    last = doc.get("last_call")
    if last:
        lines.append(f"  last call: {last['end_reason']}, connected in {last['connect_ms']} ms"
                     if last.get("connect_ms") is not None else f"  last call: {last['end_reason']}")  # fmt: skip
    for err in doc.get("last_errors", []):
        when = time.strftime("%F %T", time.localtime(err["t"]))
        lines.append(f"  error {when} {err['kind']}: {err['reason']}")
    return "\n".join(lines)


def run_status(path: Path, as_json: bool) -> int:
    doc, why = read_status(path)
    if doc is None:
        print(json.dumps({"running": False, "message": why}) if as_json else f"voice-agent status: {why}")
        return EXIT_NOT_RUNNING
    print(json.dumps(doc) if as_json else describe(doc))
    return EXIT_ERROR if doc.get("shown_error") else EXIT_OK
