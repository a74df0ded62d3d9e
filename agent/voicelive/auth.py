"""Credentials for Voice Live, kept out of logs, exception text, reprs and process arguments.

`Secret` holds a value that only `reveal()` returns; its repr and str are a fixed mask. Credential
objects produce the request headers for one call: an `api-key` header, or `Authorization: Bearer` with a
token read from a file or printed by a command (re-read for every call, since Entra ID tokens expire).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MASK = "***"


class Secret:
    """A string that does not show itself. Compare with `==` only against another Secret."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> object:  # never pickle a key into a file or a child process by accident
        raise TypeError("a Secret cannot be pickled")


class CredentialError(Exception):
    """The credential could not be produced (token file unreadable, token command failed)."""


class Credentials(Protocol):
    async def headers(self) -> dict[str, str]:
        """The authentication headers for one WebSocket upgrade."""
        ...

    def describe(self) -> str:
        """A log-safe description: the kind of credential, never its value."""
        ...


@dataclass(frozen=True)
class ApiKey:
    key: Secret

    async def headers(self) -> dict[str, str]:
        return {"api-key": self.key.reveal()}

    def describe(self) -> str:
        return "api-key"


@dataclass(frozen=True)
class BearerTokenFile:
    path: Path

    async def headers(self) -> dict[str, str]:
        try:
            token = (await asyncio.to_thread(self.path.read_text, encoding="utf-8")).strip()
        except OSError as exc:
            raise CredentialError(f"cannot read the bearer token file {self.path}: {exc.strerror}") from None
        if not token:
            raise CredentialError(f"the bearer token file {self.path} is empty")
        return {"Authorization": f"Bearer {token}"}

    def describe(self) -> str:
        return f"bearer token from {self.path}"


@dataclass(frozen=True)
class BearerTokenCommand:
    """A command that prints a token, for example
    `az account get-access-token --scope https://ai.azure.com/.default --query accessToken -o tsv`."""

    argv: tuple[str, ...]
    timeout_s: float = 30.0

    async def headers(self) -> dict[str, str]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as exc:
            raise CredentialError(f"cannot run the bearer token command {self.argv[0]}: {exc.strerror}") from None
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise CredentialError(f"the bearer token command {self.argv[0]} timed out") from None
        token = out.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not token:
            # The output may hold part of a token: never quote it.
            raise CredentialError(f"the bearer token command {self.argv[0]} exited {proc.returncode}")
        return {"Authorization": f"Bearer {token}"}

    def describe(self) -> str:
        return f"bearer token from command {self.argv[0]}"
