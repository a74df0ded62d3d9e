"""Exceptions that cross module boundaries, and the exit codes the service uses for them.

Exit code 78 (EX_CONFIG from sysexits.h) marks a configuration error: the systemd unit's
`RestartPreventExitStatus=78` keeps systemd from restarting a service that cannot work until someone
edits its configuration.
"""

from __future__ import annotations

EXIT_CONFIG = 78


class ConfigError(Exception):
    """A configuration value is missing or wrong. The message names the key path and what is allowed;
    it never contains a secret."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
