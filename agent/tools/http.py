"""Tools that call an HTTP API the user names in the config: Home Assistant's REST API, a webhook.

The URL, the JSON body and the header values are templates: `{name}` takes the model's argument of that
name (URL-quoted in the URL). The filled-in URL's host must be one of the tool's `allow_hosts`: the
model cannot send the device anywhere else. A bearer token comes from a file or a systemd credential,
read at each call (so a rotated token needs no restart), and never reaches a log line, an exception
text or the model: error messages are built from the status and the host, never from the request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from string import Formatter
from typing import Any
from urllib.parse import quote, urlsplit

from ..config import HttpToolConfig
from .registry import Tool, ToolError

log = logging.getLogger(__name__)

#: What of the response the model gets, at most.
MAX_REPLY_CHARS = 2000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could leave the allowed hosts: refused."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fill(template: str, args: dict[str, Any], quote_values: bool) -> str:
    fields = {f for _, f, _, _ in Formatter().parse(template) if f}
    missing = fields - args.keys()
    if missing:
        raise ToolError(f"missing argument(s): {', '.join(sorted(missing))}")
    values = {k: quote(str(args[k]), safe="") if quote_values else str(args[k]) for k in fields}
    return template.format_map(values)


def _fill_json(value: Any, args: dict[str, Any]) -> Any:
    if isinstance(value, str):
        # a string that is just "{name}" takes the argument as it is (a number stays a number)
        if value.startswith("{") and value.endswith("}") and value[1:-1] in args and value.count("{") == 1:
            return args[value[1:-1]]
        return _fill(value, args, quote_values=False)
    if isinstance(value, dict):
        return {k: _fill_json(v, args) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, args) for v in value]
    return value


def read_token(cfg: HttpToolConfig) -> str | None:
    path: Path | None = cfg.token_file
    if cfg.token_credential is not None:
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        if not creds:
            raise ToolError("the tool's token credential is not available (no $CREDENTIALS_DIRECTORY)")
        path = Path(creds) / cfg.token_credential
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise ToolError("the tool's token cannot be read") from None


class HttpTool:
    def __init__(self, cfg: HttpToolConfig) -> None:
        self.cfg = cfg
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _request(self, args: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        url = _fill(cfg.url, args, quote_values=True)
        host = urlsplit(url).hostname
        if host not in cfg.allow_hosts:
            raise ToolError(f"the host {host!r} is not one this tool may reach")
        headers = {k: _fill(v, args, quote_values=False) for k, v in cfg.headers.items()}
        data = None
        if cfg.body is not None:
            data = json.dumps(_fill_json(cfg.body, args)).encode()
            headers.setdefault("Content-Type", "application/json")
        token = read_token(cfg)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=cfg.method)
        try:
            with self._opener.open(req, timeout=cfg.timeout_s) as resp:
                status, body = resp.status, resp.read(MAX_REPLY_CHARS * 4)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, b""
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolError(f"{host} did not answer ({type(reason).__name__})") from None
        text = body.decode("utf-8", "replace")[:MAX_REPLY_CHARS]
        try:
            reply: Any = json.loads(text) if text else None
        except ValueError:
            reply = text
        if not 200 <= status < 300:  # a redirect too: it could lead off the allowed hosts
            raise ToolError(f"{host} answered HTTP {status}")
        return {"status": status, "reply": reply}

    def tool(self) -> Tool:
        async def run(args: dict[str, Any]) -> dict[str, Any]:
            return await asyncio.to_thread(self._request, args)

        # the registry's timeout is the request's and a little more: the thread's socket gives up first
        return Tool(self.cfg.name, self.cfg.description, self.cfg.parameters, run, timeout_s=self.cfg.timeout_s + 1)
