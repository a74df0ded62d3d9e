"""The device's tools: each built-in, the tools from the config (GPIO outputs on gpiozero's mock pins, an
HTTP tool against a real HTTP server on 127.0.0.1), and one call's function calls in every form and
order the service may send them."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from agent.config import ConfigError, GpioOutputConfig, HttpToolConfig, config_from_dict
from agent.tools.calls import CallTools
from agent.tools.device import time_tool
from agent.tools.gpio_out import Outputs
from agent.tools.http import HttpTool
from agent.tools.registry import Tool, ToolBox, ToolError
from agent.tools.timers import Timers
from agent.tools.volume import Volume
from agent.voicelive.protocol import EventParser, ServerEvent

TOKEN = "canary-token-7d41c0e2b9"


# --------------------------------------------------------------------------------------------------
# The registry


async def _ok(args: dict[str, Any]) -> dict[str, Any]:
    return {"got": args}


async def _slow(args: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(5)
    return {}


async def _broken(args: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("a bug")


async def _refuses(args: dict[str, Any]) -> dict[str, Any]:
    raise ToolError("the oven is off")


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"],
          "additionalProperties": False}  # fmt: skip


@pytest.fixture
def box() -> ToolBox:
    return ToolBox([
        Tool("ok", "answers", SCHEMA, _ok), Tool("slow", "hangs", SCHEMA, _slow, timeout_s=0.2),
        Tool("broken", "fails", SCHEMA, _broken), Tool("refuses", "cannot", SCHEMA, _refuses),
    ])  # fmt: skip


@pytest.mark.parametrize(
    ("name", "args", "ok", "says"),
    [
        ("ok", '{"n": 3}', True, '"got": {"n": 3}'),
        ("nope", "{}", False, "unknown tool 'nope'"),
        ("ok", "{n: 3", False, "not JSON"),
        ("ok", '{"n": 0}', False, "n: 0 is less than the minimum of 1"),
        ("ok", '{"m": 1}', False, "'n' is a required property"),
        ("slow", '{"n": 1}', False, "did not finish within 0.2 s"),
        ("broken", '{"n": 1}', False, "broken failed: RuntimeError"),
        ("refuses", '{"n": 1}', False, "the oven is off"),
    ],
)
async def test_every_call_is_answered_and_none_raises(box: ToolBox, name: str, args: str, ok: bool, says: str) -> None:
    t0 = time.monotonic()
    outcome = await box.run(name, args)
    assert outcome.ok is ok
    assert says in outcome.output
    assert ("error" in json.loads(outcome.output)) is not ok
    assert time.monotonic() - t0 < 1.0  # a hanging tool is cut at its timeout


# --------------------------------------------------------------------------------------------------
# Timers


async def test_timers_set_list_cancel_and_ring(tmp_path: Path) -> None:
    rang: list[list[str]] = []
    timers = Timers(tmp_path, rang.append, lambda: None)
    timers.start()
    tools = ToolBox(timers.tools())
    timers.set(0.3, "tea")  # (the tool takes 1 s at least)
    out = json.loads((await tools.run("set_timer", {"minutes": 10, "name": "pasta"})).output)
    assert out == {"set": "pasta", "duration": "10 minutes", "timers_running": 2}
    await tools.run("set_timer", {"hours": 1})
    listed = json.loads((await tools.run("list_timers", {})).output)
    assert [t["name"] for t in listed["timers"]] == ["tea", "pasta", "timer 3"]
    assert listed["timers"][1]["left"].startswith("9 minutes") or listed["timers"][1]["left"] == "10 minutes"
    # only the next due timer has a wake-up scheduled: pending timers cost nothing until then
    assert timers._handle is not None and timers._handle.when() - asyncio.get_running_loop().time() < 0.35
    assert (await tools.run("cancel_timer", {"name": "cake"})).ok is False
    await asyncio.sleep(0.5)
    assert rang == [["tea"]] and timers.ringing == ["tea"]
    assert json.loads((await tools.run("cancel_timer", {"name": "pasta"})).output)["cancelled"] == ["pasta"]
    assert timers.ringing == ["tea"]
    assert timers.silence() and not timers.ringing
    bad = await tools.run("set_timer", {"seconds": 0})
    assert not bad.ok and "1 second to 24 hours" in bad.output
    timers.stop()


async def test_a_timer_outlives_a_restart_and_rings(tmp_path: Path) -> None:
    first = Timers(tmp_path, lambda names: None, lambda: None)
    first.start()
    first.set(0.6, "bread")
    first.set(0.05, "missed while down")
    first.stop()  # the agent stops (the process goes)
    assert (tmp_path / "timers.json").stat().st_mode & 0o777 == 0o600
    await asyncio.sleep(0.2)
    rang: list[list[str]] = []
    again = Timers(tmp_path, rang.append, lambda: None)
    again.start()  # a new process: the one that fell due while it was down rings at once
    await asyncio.sleep(0.05)
    assert rang == [["missed while down"]]
    await asyncio.sleep(0.6)
    assert rang[-1] == ["bread", "missed while down"]  # both ring until silenced
    assert again.silence()
    again.stop()
    assert json.loads((tmp_path / "timers.json").read_text()) == []


def test_pending_timers_never_wake_the_idle_device(tmp_path: Path) -> None:
    """Three timers pending for an hour: the event loop sleeps through three seconds with no wake-up of
    theirs (only the next due timer has a wake-up scheduled, an hour away): at most one a second."""
    import selectors

    wakeups = 0

    class Counting(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
        def select(self, timeout: float | None = None) -> list[Any]:
            nonlocal wakeups
            wakeups += 1
            return super().select(timeout)

    async def idle() -> None:
        nonlocal wakeups
        timers = Timers(tmp_path, lambda names: None, lambda: None)
        timers.start()
        for name, minutes in (("a", 60), ("b", 61), ("c", 62)):
            timers.set(minutes * 60, name)
        await asyncio.sleep(0)
        wakeups = 0
        await asyncio.sleep(3.0)
        timers.stop()

    loop = asyncio.SelectorEventLoop(Counting())
    try:
        loop.run_until_complete(idle())
    finally:
        loop.close()
    assert wakeups <= 3  # the test's own sleep makes these


async def test_a_ringing_timer_gives_up_after_ring_s(tmp_path: Path) -> None:
    silenced: list[bool] = []
    timers = Timers(tmp_path, lambda names: None, lambda: silenced.append(True), ring_s=0.2)
    timers.start()
    timers.set(0.05, "egg")
    await asyncio.sleep(0.4)
    assert silenced == [True] and not timers.ringing
    timers.stop()


# --------------------------------------------------------------------------------------------------
# Volume, time


class SoftSpeaker:
    volume = 1.0


async def test_volume_set_up_down_and_remembered(tmp_path: Path) -> None:
    speaker = SoftSpeaker()
    vol = Volume(tmp_path, speaker, mixer=None, card=31, step=10)  # no card here: the agent's own scaling
    box = ToolBox(vol.tools())
    assert json.loads((await box.run("set_volume", {"level": 60})).output) == {"volume": 60, "was": 100}
    assert speaker.volume == pytest.approx(0.6)
    await box.run("set_volume", {"change": "down"})
    assert json.loads((await box.run("set_volume", {"change": "up"})).output)["volume"] == 60
    await box.run("set_volume", {"change": "down"})
    assert not (await box.run("set_volume", {"level": 101})).ok
    again = SoftSpeaker()
    Volume(tmp_path, again, mixer=None, card=31, step=10)  # a restart
    assert again.volume == pytest.approx(0.5)


async def test_time_is_local() -> None:
    out = json.loads((await ToolBox([time_tool(lambda: 0.0)]).run("get_time", {})).output)
    assert out["date"].endswith("1970") and ":" in out["time"] and out["time_zone"]


# --------------------------------------------------------------------------------------------------
# GPIO outputs


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = previous


async def test_gpio_output_by_name_on_mock_pins(mock_pins: MockFactory) -> None:
    outputs = Outputs({"porch_light": GpioOutputConfig(pin=17, description="the porch light"),
                       "fan": GpioOutputConfig(pin=27, active_high=False)})  # fmt: skip
    box = ToolBox(outputs.tools())
    pin17, pin27 = mock_pins.pin(17), mock_pins.pin(27)
    assert not pin17.state
    assert json.loads((await box.run("set_output", {"name": "porch_light", "state": "on"})).output)["state"] == "on"
    assert pin17.state
    await box.run("set_output", {"name": "porch_light", "state": "toggle"})
    assert not pin17.state
    await box.run("set_output", {"name": "fan", "state": "on"})
    assert not pin27.state  # active low
    refused = await box.run("set_output", {"name": "oven", "state": "on"})
    assert not refused.ok and "oven" in refused.output
    assert "the porch light" in box.declarations()[0]["description"]
    outputs.close()


# --------------------------------------------------------------------------------------------------
# HTTP tools


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append(("POST", self.path, dict(self.headers), body))
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        if self.path.startswith("/away"):
            self.send_response(302)
            self.send_header("Location", "http://example.com/")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that gave up (the timeout)
            self.wfile.write(json.dumps([{"entity_id": "light.kitchen", "state": "on"}]).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def ha_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    _Handler.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def ha_tool(port: int, tmp_path: Path, **kw: Any) -> HttpTool:
    token = tmp_path / "ha-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    strings = {k: {"type": "string"} for k in ("domain", "service", "entity_id", "host")}
    params = {"type": "object", "properties": strings, "required": ["domain", "service"]}
    cfg = HttpToolConfig(**{
        "name": "home_assistant", "description": "Home Assistant", "parameters": params, "method": "POST",
        "url": f"http://127.0.0.1:{port}/api/services/{{domain}}/{{service}}", "body": {"entity_id": "{entity_id}"},
        "allow_hosts": ("127.0.0.1",), "timeout_s": 0.5, "token_file": token, **kw,
    })  # fmt: skip
    return HttpTool(cfg)


async def test_http_tool_calls_home_assistant_with_the_token_and_never_logs_it(
    ha_server: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    box = ToolBox([ha_tool(ha_server, tmp_path).tool()])
    out = await box.run("home_assistant", {"domain": "light", "service": "turn_on", "entity_id": "light.kitchen"})
    assert out.ok, out.output
    assert json.loads(out.output)["reply"][0]["state"] == "on"
    _, path, headers, body = _Handler.seen[-1]
    assert path == "/api/services/light/turn_on"
    assert json.loads(body) == {"entity_id": "light.kitchen"}
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in caplog.text and TOKEN not in out.output


async def test_http_tool_answers_a_timeout_and_refuses_other_hosts_and_redirects(
    ha_server: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    slow = ToolBox([ha_tool(ha_server, tmp_path, url=f"http://127.0.0.1:{ha_server}/slow/{{domain}}").tool()])
    t0 = time.monotonic()
    out = await slow.run("home_assistant", {"domain": "light", "service": "x", "entity_id": "light.a"})
    assert not out.ok and "did not answer" in out.output and time.monotonic() - t0 < 1.4
    # the host from an argument: only the allowed ones
    free = ToolBox([ha_tool(ha_server, tmp_path, url=f"http://{{host}}:{ha_server}/api/{{domain}}").tool()])
    args = {"domain": "light", "service": "x", "entity_id": "light.a", "host": "localhost"}
    out = await free.run("home_assistant", args)
    assert not out.ok and "'localhost' is not one this tool may reach" in out.output
    away = ToolBox([ha_tool(ha_server, tmp_path, url=f"http://127.0.0.1:{ha_server}/away/{{domain}}").tool()])
    out = await away.run("home_assistant", {"domain": "light", "service": "x", "entity_id": "light.a"})
    assert not out.ok and "HTTP 302" in out.output
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(
    ("tools", "key", "fragment"),
    [
        ({"http": [{"name": "x y", "description": "d", "url": "http://h/", "allow_hosts": ["h"]}]},
         "tools.http[0].name", "letters, digits"),
        ({"http": [{"name": "set_timer", "description": "d", "url": "http://h/", "allow_hosts": ["h"]}]},
         "tools.http[0].name", "taken"),
        ({"http": [{"name": "ha", "description": "d", "url": "ftp://h/", "allow_hosts": ["h"]}]},
         "tools.http[0].url", "http:// or https://"),
        ({"http": [{"name": "ha", "description": "d", "url": "http://h/"}]}, "tools.http[0].allow_hosts", "list"),
        ({"http": [{"name": "ha", "description": "d", "url": "http://h/", "allow_hosts": ["h"],
                    "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}]},
         "tools.http[0].parameters", "not a valid JSON schema"),
        ({"http": [{"name": "ha", "description": "d", "url": "http://h/", "allow_hosts": ["h"], "verb": "GET"}]},
         "tools.http[0].verb", "unknown key"),
    ],
)  # fmt: skip
def test_bad_tool_config_names_the_key(tools: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"tools": tools})
    assert str(info.value).startswith(key) and fragment in str(info.value)


def test_a_gpio_output_without_a_pin_or_on_a_taken_pin_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^gpio.outputs.lamp.pin: give the BCM"):
        config_from_dict({"gpio": {"outputs": {"lamp": {}}}})
    with pytest.raises(ConfigError, match=r"^gpio.outputs.lamp.pin: GPIO17 is already used by gpio.button.pin"):
        config_from_dict({"gpio": {"button": {"pin": 17}, "outputs": {"lamp": {"pin": 17}}}})


# --------------------------------------------------------------------------------------------------
# One call's function calls


def ev(data: dict[str, Any], channel: str = "control") -> ServerEvent:
    event = EventParser().parse(json.dumps({"event_id": f"evt_{id(data)}", **data}), channel)  # type: ignore[arg-type]
    assert event is not None
    return event


def call_events(call_id: str, name: str, args: dict[str, Any], rid: str = "resp_1") -> list[ServerEvent]:
    item = {"id": f"item_{call_id}", "type": "function_call", "call_id": call_id, "name": name,
            "arguments": json.dumps(args)}  # fmt: skip
    return [
        ev({"type": "response.output_item.added", "response_id": rid, "item": {**item, "arguments": ""}}),
        ev({"type": "response.function_call_arguments.done", "response_id": rid, "call_id": call_id,
            "arguments": json.dumps(args)}),  # fmt: skip  (no name: newer versions only carry it)
        ev({"type": "response.output_item.done", "response_id": rid, "item": item}),
    ]


def done(rid: str, *items: tuple[str, str, dict[str, Any]]) -> ServerEvent:
    output = [{"type": "function_call", "call_id": c, "name": n, "arguments": json.dumps(a)} for c, n, a in items]
    return ev({"type": "response.done", "response": {"id": rid, "status": "completed", "output": output}}, "data")


class Sent:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def outputs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e["item"]["call_id"], json.loads(e["item"]["output"])) for e in self.events
                if e["type"] == "conversation.item.create"]  # fmt: skip

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


@pytest.mark.parametrize("done_first", [True, False])
async def test_each_call_runs_once_in_every_form_and_order(box: ToolBox, done_first: bool) -> None:
    sent = Sent()
    tools = CallTools(box, sent)
    forms = call_events("call_a", "ok", {"n": 1})
    duplicates = [ev(e.data, "data") for e in forms]  # the same events on the data channel
    stream = [done("resp_1", ("call_a", "ok", {"n": 1})), *forms, *duplicates]
    if not done_first:
        stream = forms + duplicates + stream[:1]
    for e in stream:
        tools.on_event(e)
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert sent.outputs() == [("call_a", {"got": {"n": 1}})]
    assert sent.types() == ["conversation.item.create", "response.create"]  # the answer, then speak
    assert [r.as_dict()["ok"] for r in tools.records] == [True]
    assert not tools.busy


async def test_several_calls_in_one_response_get_one_answer_each_and_one_response_create(box: ToolBox) -> None:
    sent = Sent()
    tools = CallTools(box, sent)
    for e in call_events("c1", "ok", {"n": 1}) + call_events("c2", "broken", {"n": 2}) + call_events("c3", "ok", {}):
        tools.on_event(e)
    await asyncio.sleep(0.05)
    assert "response.create" not in sent.types()  # the response is not done yet
    tools.on_event(done("resp_1", ("c1", "ok", {"n": 1}), ("c2", "broken", {"n": 2}), ("c3", "ok", {})))
    await asyncio.sleep(0.05)
    answers = dict(sent.outputs())
    assert answers["c1"] == {"got": {"n": 1}}
    assert answers["c2"] == {"error": "broken failed: RuntimeError"}  # a failing tool is answered
    assert "required property" in answers["c3"]["error"]  # so is a bad argument
    assert sent.types().count("response.create") == 1 and sent.types()[-1] == "response.create"


async def test_a_service_that_never_says_done_still_gets_asked(box: ToolBox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.tools.calls.RESPONSE_DONE_WAIT_S", 0.1)
    sent = Sent()
    tools = CallTools(box, sent)
    for e in call_events("c1", "ok", {"n": 5}):
        tools.on_event(e)
    await asyncio.sleep(0.3)
    assert sent.types() == ["conversation.item.create", "response.create"]
