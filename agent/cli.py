"""`voice-agent`: the command line.

    voice-agent run [--config PATH] [--check-config]   the service (systemd runs this)
    voice-agent demo [--json] [--out DIR]               the whole loop on this machine, no hardware, no cloud
    voice-agent emulator [--port N] ...                 a local Voice Live emulator on 127.0.0.1
    voice-agent check [--json] [--button S]             what is wrong on this device: a pass/fail table
    voice-agent status [--json]                         what the running service is doing (exit 1: error)
    voice-agent devices [--json]                        ALSA devices and the rates and channels they take
    voice-agent detect [--json] [--sweep] FILE...       the wake word path on WAV files; threshold tuning
    voice-agent bench wake [--json]                     wake word CPU, latency and memory on this machine
    voice-agent bench audio [--json]                    audio path latency, pre-roll, barge-in, CPU in a call
    voice-agent bench peers [--json]                    listening vs wyoming-openwakeword, bare openWakeWord
    voice-agent bench metrics [--json]                  what publishing the metrics costs while idle
    voice-agent bench [all] [--json] [--soak N]         agent vs bare baselines, latencies, soak: one table

Configuration errors exit with 78 (EX_CONFIG) and name the key, so systemd does not restart in a loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EXIT_CONFIG, ConfigError

if TYPE_CHECKING:
    from .config import Config
    from .emulator.settings import Faults
    from .voicelive.auth import Credentials

log = logging.getLogger("agent")


def _setup_logging(level: str | int, stream: object = sys.stdout) -> None:
    """Logs go to stdout: plain lines, or under systemd journald's native protocol with fields to filter
    on (agent.journal)."""
    from .journal import make_handler

    handler = make_handler(stream, os.environ)  # type: ignore[arg-type]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiortc and aioice are chatty at DEBUG; their INFO is what matters for us.
    for name in ("aioice", "aiortc", "websockets"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import default_config_path, load_config, load_credentials, systemd_env
    from .service import run_service

    path = Path(args.config) if args.config else default_config_path(os.environ)
    config = load_config(path)
    if not config.voicelive.endpoint:
        raise ConfigError("voicelive.endpoint", "required: wss://<resource>.services.ai.azure.com")
    credentials = load_credentials(config.voicelive.auth, os.environ)
    if args.check_config:
        print(f"configuration OK: {path or 'built-in defaults'} (credentials: {credentials.describe()})")
        return 0
    _setup_logging(config.logging.level)

    def reloader() -> tuple[Config, Credentials]:
        new = load_config(path)
        if not new.voicelive.endpoint:
            raise ConfigError("voicelive.endpoint", "required: wss://<resource>.services.ai.azure.com")
        return new, load_credentials(new.voicelive.auth, os.environ)

    return asyncio.run(run_service(config, credentials, systemd_env(os.environ), reloader))


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    return asyncio.run(run_demo(out_dir=Path(args.out), as_json=args.json, clip=args.clip, network=args.network,
                                room_db=args.room, echo=args.echo, tool=args.tool))  # fmt: skip


def _cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator.server import serve_forever
    from .emulator.settings import EmulatorSettings
    from .voicelive.auth import Secret

    _setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    token = _read_secret_file(args.bearer_token_file, "--bearer-token-file") if args.bearer_token_file else None
    key: str | None = None
    if args.api_key_file:
        key = _read_secret_file(args.api_key_file, "--api-key-file")
    elif token is None:
        key = secrets.token_urlsafe(24)
        keyfile = Path(args.write_key_file)
        keyfile.touch(mode=0o600)
        keyfile.chmod(0o600)
        keyfile.write_text(key + "\n", encoding="utf-8")
        log.info("no --api-key-file: generated a key and wrote it to %s (mode 0600)", keyfile)
    faults = parse_faults(args.fault)
    loopback = args.host in ("127.0.0.1", "localhost", "::1")
    extra: dict[str, object] = {}
    if args.api_version:
        extra["api_versions"] = tuple(args.api_version)
    settings = EmulatorSettings(
        ice_loopback=loopback,
        host=args.host,
        port=args.port,
        api_key=Secret(key) if key else None,
        bearer_token=Secret(token) if token else None,
        reply_mode=args.reply,
        reply_wav=Path(args.reply_wav) if args.reply_wav else None,
        faults=faults,
        record_dir=Path(args.record_dir) if args.record_dir else None,
        output_order=args.output_order,
        generation_s=args.generation_s,
        require_headers=parse_headers(args.require_header),
        network=args.network,
        network_seed=args.network_seed,
        fec=not args.no_fec,
        echo_canceller=args.echo_canceller,
        tool_script=_tool_script(args.tool_script),
        tool_events_first=args.tool_events_first,
        tool_duplicate=args.tool_duplicate,
        **extra,  # type: ignore[arg-type]
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(settings))
    return 0


def _read_secret_file(path: str, option: str) -> str:
    """A key or token from a file (never from the command line, where `ps` would show it)."""
    value = Path(path).read_text(encoding="utf-8").strip()
    if not value:
        raise ConfigError(option, f"{path} is empty")
    return value


def _load_config_arg(path: str | None) -> Config:
    from .config import default_config_path, load_config

    return load_config(Path(path) if path else default_config_path(os.environ))


def _cmd_detect(args: argparse.Namespace) -> int:
    from .wake.detect import run_detect, wake_config_for

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    config = _load_config_arg(args.config)
    wake = wake_config_for(config, args.model, args.threshold, args.inference_framework)
    config = dataclasses.replace(config, wake=wake)
    return run_detect(
        config,
        [Path(f) for f in args.files],
        [Path(f) for f in args.negative],
        as_json=args.json,
        do_sweep=args.sweep,
        thresholds=args.thresholds,
        channel=args.channel,
    )


def _cmd_bench_wake(args: argparse.Namespace) -> int:
    from .bench.wake import run_wake_bench

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    config = _load_config_arg(args.config)
    return run_wake_bench(config.wake, as_json=args.json, repeats=args.repeats, audio_s=args.seconds, paced=args.paced)


def _cmd_bench_audio(args: argparse.Namespace) -> int:
    from .bench.audio import run_audio_bench, summarize

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    orders = ["webrtc", "audio-first"] if args.output_order == "both" else [args.output_order]
    runs = [
        asyncio.run(run_audio_bench(call_s=args.seconds, answer_delay_s=args.answer_delay, output_order=order))
        for order in orders
    ]
    ok = all(run["ok"] for run in runs)
    print(json.dumps({"ok": ok, "runs": runs}) if args.json else summarize(runs))
    return 0 if ok else 1


def _cmd_bench_network(args: argparse.Namespace) -> int:
    from .bench.network import run_network_bench, summarize

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    report = asyncio.run(
        run_network_bench(args.profile or None, concealment=args.concealment == "on", seed=args.seed)
    )
    print(json.dumps(report) if args.json else summarize(report))
    return 0 if report["ok"] else 1


def _tool_script(path: str | None) -> tuple[Any, ...]:
    if path is None:
        return ()
    import yaml

    from .emulator.toolscript import parse_tool_script

    try:
        return parse_tool_script(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        raise ConfigError("--tool-script", str(exc)) from None


def _cmd_bench_echo(args: argparse.Namespace) -> int:
    from .bench.echo import echo_table, run_echo_bench

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    report = asyncio.run(
        run_echo_bench(args.mode or None, args.level or None, replies=args.replies,
                       double_talk_trials=args.double_talk, seed=args.seed, strict=args.strict)
    )  # fmt: skip
    print(json.dumps(report) if args.json else echo_table(report))
    return 0 if report["ok"] else 1


def _cmd_bench_tools(args: argparse.Namespace) -> int:
    from .bench.tools import run_tools_bench, tools_table

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    report = asyncio.run(run_tools_bench(turns=max(1, args.turns)))
    print(json.dumps(report) if args.json else tools_table(report))
    return 0 if report["ok"] else 1


def _cmd_bench_peers(args: argparse.Namespace) -> int:
    from .bench.peers import run_peers_bench

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    return run_peers_bench(as_json=args.json, seconds=max(10.0, args.seconds), clips=max(1, args.clips),
                           window_s=max(1.0, args.window))  # fmt: skip


def _cmd_bench_metrics(args: argparse.Namespace) -> int:
    from .bench.metrics import run_metrics_bench

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    return run_metrics_bench(_load_config_arg(args.config), args.json, max(10, args.repeats), max(5.0, args.seconds))


def _cmd_bench_all(args: argparse.Namespace) -> int:
    from .bench.table import BenchOptions, run_bench_table

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    opts = BenchOptions(conversations=max(1, args.conversations), soak=max(0, args.soak), idle_s=args.idle_seconds,
                        call_s=args.call_seconds)  # fmt: skip
    return run_bench_table(opts, as_json=args.json)


def _bench_parser(
    benches: Any, name: str, func: Callable[[argparse.Namespace], int], help: str, description: str,
    seconds: tuple[float, str] | None = None,
) -> argparse.ArgumentParser:  # fmt: skip
    """A `bench` subcommand with the options every one has: --json, -v, and --seconds (default, help)."""
    parser = benches.add_parser(name, help=help, description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    if seconds is not None:
        parser.add_argument("--seconds", type=float, default=seconds[0], help=seconds[1])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    parser.set_defaults(func=func)
    return parser


def _bench_table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--conversations", type=int, default=20,
                        help="conversations for the latency percentiles (default 20; the soak's count too)")
    parser.add_argument("--soak", type=int, default=30,
                        help="conversations in a row for the soak, in one agent (default 30, the whole run then "
                        "takes under 5 minutes; 300 for a long soak; 0: none)")
    parser.add_argument("--idle-seconds", type=float, default=25.0, help="the idle stretch measured (default 25)")
    parser.add_argument("--call-seconds", type=float, default=15.0, help="the call stretch measured (default 15)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError("thresholds must lie in (0, 1]")
    return values


def _cmd_check(args: argparse.Namespace) -> int:
    from .check import CheckOptions, run_check
    from .config import default_config_path

    _setup_logging(logging.DEBUG if args.verbose else logging.ERROR, sys.stderr)
    path = Path(args.config) if args.config else default_config_path(os.environ)
    options = CheckOptions(capture_s=args.seconds, tone=not args.no_tone, leds=not args.no_leds,
                           button_s=args.button, timeout_s=args.timeout)  # fmt: skip
    report = asyncio.run(run_check(path, dict(os.environ), options))
    print(report.to_json() if args.json else report.table())
    return 0 if report.ok else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from .status import reader_path, run_status

    config = _load_config_arg(args.config)
    return run_status(reader_path(config.metrics.runtime_dir, os.environ), args.json)


def _cmd_devices(args: argparse.Namespace) -> int:
    from .devices import describe, list_devices

    _setup_logging(logging.DEBUG if args.verbose else logging.WARNING, sys.stderr)
    print(describe(list_devices(args.device), args.json))
    return 0


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """`--require-header NAME=VALUE` (repeatable) as a dict."""
    headers: dict[str, str] = {}
    for item in items:
        name, has_value, value = item.partition("=")
        if not has_value or not name.strip():
            raise ConfigError("--require-header", f"{item!r} is not NAME=VALUE")
        headers[name.strip()] = value.strip()
    return headers


def parse_faults(items: Sequence[str]) -> Faults:
    """`--fault NAME[=VALUE]` switches: a bare name turns a switch on; a value is read as the field's
    type (seconds, an HTTP status, an error code)."""
    from .emulator.settings import Faults

    faults = Faults()
    known = {f.name: f for f in dataclasses.fields(faults)}
    for item in items:
        name, has_value, value = item.partition("=")
        if name not in known:
            raise ConfigError("--fault", f"unknown fault {name!r}; known: {', '.join(known)}")
        current = getattr(faults, name)
        try:
            if isinstance(current, bool):
                parsed: object = value.lower() in ("1", "true", "yes", "on") if has_value else True
            elif isinstance(current, str):
                parsed = value
            elif name == "reject_status":
                parsed = int(value)
            else:
                parsed = float(value)
        except ValueError:
            raise ConfigError("--fault", f"{name} needs a value, e.g. {name}=2") from None
        setattr(faults, name, parsed)
    return faults


def build_parser() -> argparse.ArgumentParser:
    from .netsim.profiles import PROFILES as NETWORK_PROFILES

    parser = argparse.ArgumentParser(prog="voice-agent", description="Hands-free voice agent for Azure Voice Live")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", help="YAML file (default: $VOICE_AGENT_CONFIG or /etc/voice-agent/config.yaml)")
    run.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="wake word to reply on this machine, against the local emulator")
    demo.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    demo.add_argument("--out", default="demo-out", help="folder for the reply WAV (default: ./demo-out)")
    demo.add_argument("--clip", help="a WAV to use as the microphone instead of the built-in phrase")
    demo.add_argument("--tool", choices=("set_timer", "cancel_timer", "list_timers", "set_volume", "get_time",
                                         "end_conversation", "mute_microphone", "set_output"),
                      help="the emulated model calls this tool after the command (set_timer: a 2 s timer that rings"
                      " within the demo, silenced by a press)")
    demo.add_argument("--room", type=float, metavar="DB", default=None,
                      help="in a simulated room: the speaker comes back into the microphone at DB against what it"
                      " plays (0: as loud as the user; +6: a HAT's speaker beside its microphones)")
    demo.add_argument("--echo", choices=("local", "service", "client-reference", "off"), default="local",
                      help="audio.echo: who cancels the speaker's echo (with --room; default local)")
    demo.add_argument("--network", choices=list(NETWORK_PROFILES), default="clean",
                      help="the call over a simulated network (wifi, wifi-bad, drop, outage): listen to the reply "
                      "in --out on bad Wi-Fi")
    demo.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    demo.set_defaults(func=_cmd_demo)

    emu = sub.add_parser("emulator", help="a local Voice Live emulator (loopback only by default)")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8765)
    emu.add_argument("--api-key-file", help="the key clients must send (default: generate one)")
    emu.add_argument(
        "--bearer-token-file",
        help="also accept this token as `Authorization: Bearer` (header, or `authorization=Bearer ...` in the "
        "query), for Entra ID clients; with it alone, no key is generated and only the token is accepted",
    )
    emu.add_argument("--write-key-file", default="emulator-api-key", help="where a generated key is written")
    emu.add_argument("--reply", choices=["parrot", "file"], default="parrot")
    emu.add_argument("--reply-wav", help="the WAV for --reply file")
    emu.add_argument("--record-dir", help="write each call's received audio and event timeline here")
    emu.add_argument("--fault", action="append", default=[], metavar="NAME[=VALUE]", help="inject a fault")
    emu.add_argument(
        "--output-order",
        choices=["webrtc", "audio-first", "no-buffer-events"],  # emulator.settings.OUTPUT_ORDERS
        default="webrtc",
        help="webrtc: response.done when generated, output_audio_buffer.stopped when the audio ends (default); "
        "audio-first: stopped then done, both at the end of the audio; no-buffer-events: webrtc without any "
        "output_audio_buffer.* event",
    )
    emu.add_argument(
        "--generation-s", type=float, default=1.0, help="seconds to generate a whole reply (capped at its duration)"
    )
    emu.add_argument(
        "--require-header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="refuse upgrades without this header (HTTP 400); repeatable",
    )
    emu.add_argument(
        "--api-version",
        action="append",
        default=[],
        metavar="VERSION",
        help="accept this api-version (repeatable; default: the client's default)",
    )
    emu.add_argument(
        "--network",
        choices=list(NETWORK_PROFILES),
        default="clean",
        help="a simulated network between the clients and the emulator: "
        + "; ".join(f"{p.name}: {p.description}" for p in NETWORK_PROFILES.values()),
    )
    emu.add_argument("--network-seed", type=int, default=1, help="seed of the network's losses and delays")
    emu.add_argument(
        "--no-fec",
        action="store_true",
        help="negotiate no Opus in-band FEC (a service that neither sends nor decodes it)",
    )
    emu.add_argument(
        "--echo-canceller",
        choices=["none", "session"],
        default="none",
        help="none (default, strict): turn detection hears the caller's echo as it arrives; session: cancel"
        " it as the session's input_audio_echo_cancellation asks (the server's own reference, or the"
        " client's second channel)",
    )
    emu.add_argument("--tool-script", metavar="FILE",
                     help="JSON or YAML list of {after_turn, name, arguments}: after the user's Nth turn the model"
                     " calls the tool NAME with ARGUMENTS (several with one turn: one response with several calls)")
    emu.add_argument("--tool-events-first", action="store_true",
                     help="send a tool call's events before its response.done (default: after it, the strict order)")
    emu.add_argument("--tool-duplicate", action="store_true",
                     help="send each tool event on the data channel too (same event_id)")
    emu.add_argument("-v", "--verbose", action="store_true")
    emu.set_defaults(func=_cmd_emulator)

    det = sub.add_parser(
        "detect",
        help="run the wake word path on WAV files",
        description="Run the service's wake word path (capture-sized blocks, resampling, openWakeWord, "
        "threshold, trigger level, refractory period) on WAV files of any rate, mono or stereo. Times are "
        "seconds from the start of the file; t is the end of the 80 ms frame that fired.",
        epilog="Tuning a threshold: record the wake word a few times in your room (FILE...), and some "
        "ordinary talk, TV or music without it (--negative FILE..., last on the line: it takes every file "
        "after it), then run with --sweep. Files named "
        "as FILE count as containing the wake word (a hit if detected at least once, a miss if not); every "
        "detection in a --negative file counts as a false wake. Exit code 2 if a file could not be read.",
    )
    det.add_argument("files", nargs="*", metavar="FILE", help="WAV files that contain the wake word")
    det.add_argument("--negative", nargs="+", action="extend", default=[], metavar="FILE",
                     help="WAV files that must not wake the device (for --sweep)")
    det.add_argument("--json", action="store_true",
                     help='JSON Lines, one object per file: {"file", "detections": [{"model", "t", "score", '
                     '"t_phrase_end"}]}; with --sweep one JSON object')
    det.add_argument("--sweep", action="store_true", help="hits, misses and false wakes per threshold")
    det.add_argument("--thresholds", type=_thresholds, default=[round(0.1 * i, 1) for i in range(1, 10)],
                     metavar="T,T,...", help="thresholds for --sweep (default 0.1,0.2,...,0.9)")
    det.add_argument("--config", help="take wake.* and audio.capture.period_ms from this YAML file")
    det.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                     help="use this model instead of wake.models (repeatable)")
    det.add_argument("--threshold", type=float, help="override every model's threshold")
    det.add_argument("--inference-framework", choices=["onnx", "tflite"], help="override wake.inference_framework")
    det.add_argument("--channel", type=int, help="use this channel (0-based) of a multi-channel file; default: average")
    det.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    det.set_defaults(func=_cmd_detect)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: numbers for this machine",
        description="Without WHAT (or with `all`): the whole table (see `voice-agent bench all --help`).",
    )
    _bench_table_options(bench)
    bench.set_defaults(func=_cmd_bench_all)
    benches = bench.add_subparsers(dest="what", required=False, metavar="WHAT")
    ball = benches.add_parser(
        "all",
        help="the table: agent vs bare openWakeWord and aiortc (CPU, memory), latencies, and the soak",
        description="One run against the emulator (its own process, 127.0.0.1) with real alsa-lib: the agent "
        "listening to speech without the wake word vs openWakeWord alone on the same audio; the agent in a call "
        "vs a bare aiortc client streaming the same audio to the same emulator; wake to first RTP, wake to "
        "listening and end of speech to first reply audio (p50, p95) over the conversations; then the soak "
        "(RSS, threads, file descriptors after the warm-up and at the end). Needs espeak-ng. Exit code 1 if a "
        "goal is missed or the soak fails.",
    )
    _bench_table_options(ball)
    ball.set_defaults(func=_cmd_bench_all)
    bwake = _bench_parser(
        benches,
        "wake",
        _cmd_bench_wake,
        seconds=(60.0, "seconds of audio per run (default 60)"),
        help="CPU of the listening path vs openWakeWord alone, detection latency, memory",
        description="Feeds the same speech (espeak-ng wake phrases, other sentences, room noise) through "
        "(a) the whole listening path: a real ALSA capture device (alsa-lib's file plugin) at 48 kHz, "
        "resampling to 16 kHz and the wake word detector; and (b) openWakeWord's Model.predict alone on the "
        "same 16 kHz audio. Prints CPU seconds per audio second of both (medians of --repeats runs), their "
        "ratio, the detection latency after the end of the wake phrase, and the resident memory while "
        "listening. Needs espeak-ng.",
    )
    bwake.add_argument("--repeats", type=int, default=5, help="runs of each measurement (default 5)")
    bwake.add_argument("--paced", action="store_true",
                       help="read the capture at real time, counting the wake-ups a live device causes (each run "
                       "then takes --seconds)")
    bwake.add_argument("--config", help="take wake.* from this YAML file")
    bpeers = _bench_parser(
        benches,
        "peers",
        _cmd_bench_peers,
        seconds=(180.0, "seconds of speech without the wake word, at real time (default 180)"),
        help="the agent's listening vs wyoming-openwakeword and bare openWakeWord on the same audio",
        description="Sets up wyoming-openwakeword 1.8.2 in a virtual environment of its own (under "
        "~/.cache/voice-agent/peers, by package name from the package index; never in the agent's environment), "
        "runs its server and a small Wyoming client on 127.0.0.1, and in the same run openWakeWord's "
        "Model.predict (ONNX, TFLite), the agent's lean path (ONNX, TFLite) and the agent's listening path "
        "(real ALSA capture through the file plugin), each in its own process, all fed the same audio at the "
        "same moments: speech without the wake word, then \"hey jarvis\" clips. Prints CPU (median of windows, "
        "and each thread), CPU per audio second as fast as it goes, RSS, detections and latency. Needs espeak-ng.",
    )
    bpeers.add_argument("--clips", type=int, default=8, help="\"hey jarvis\" clips after it (default 8)")
    bpeers.add_argument("--window", type=float, default=10.0, help="CPU window in seconds (default 10)")
    baudio = _bench_parser(
        benches,
        "audio",
        _cmd_bench_audio,
        seconds=(60.0, "length of the call (default 60)"),
        help="uplink and downlink latency, pre-roll loss, catch-up, barge-in, underruns, CPU in a call",
        description="One call against the emulator (in its own process, on 127.0.0.1) with a real ALSA "
        "capture device fed in real time and a real ALSA playback device: the wake word, a command said right "
        "after it while the emulator answers 500 ms late, a long question, and a barge-in over its reply. "
        "Needs espeak-ng.",
    )
    bnet = _bench_parser(
        benches,
        "network",
        _cmd_bench_network,
        help="one call per simulated network (clean, wifi, wifi-bad, drop, outage): loss, concealment, holes, "
        "jitter delay, FEC both ways, link drops",
        description="Per profile, the emulator in its own process with --network PROFILE (a user-space UDP relay "
        "on 127.0.0.1 drops and delays the call's datagrams both ways; outage also stalls the WebSocket) and the "
        "agent with real ALSA devices: the wake word, a command, a spoken reply. Prints what the network took, "
        "what the jitter buffer recovered and concealed, holes heard, the reply as heard against as sent, "
        "the jitter buffer's delay, underruns, the uplink's FEC at the emulator, CPU; for drop whether the call "
        "and the reply went on, for outage how fast the call ended and whether the next wake word connects. "
        "Exit code 1 if a profile's call did not run. Needs espeak-ng.",
    )
    bnet.add_argument("--profile", action="append", default=[], choices=list(NETWORK_PROFILES),
                      help="only this profile (repeatable; default all)")
    bnet.add_argument("--concealment", choices=("on", "off"), default="on",
                      help="off: aiortc's jitter buffer and decoder, no FEC (the code before concealment)")
    bnet.add_argument("--seed", type=int, default=1, help="the network's seed")
    becho = _bench_parser(
        benches,
        "echo",
        _cmd_bench_echo,
        help="the assistant's voice back in the microphone, per audio.echo mode and echo level: "
        "self-interruptions, ERLE, convergence, double talk, false stop and wake words, CPU",
        description="Per mode (off, service, client-reference, local) the emulator in its own process (no echo "
        "canceller for off and local; for service and client-reference it cancels as the session asks) and the "
        "agent in a simulated room (agent.room: its speaker heard by its microphone through a room response, "
        "at each echo level against the signal played). Exit code 1 if a call did not run. Needs espeak-ng.",
    )
    becho.add_argument("--mode", action="append", default=[], choices=("off", "service", "client-reference", "local"),
                       help="only this mode (repeatable; default all)")
    becho.add_argument("--level", action="append", default=[], type=float,
                       help="echo level in dB against the played signal (repeatable; default -10, 0, +6)")
    becho.add_argument("--replies", type=int, default=3, help="user turns per call (default 3)")
    becho.add_argument("--double-talk", type=int, default=10,
                       help="replies the user says stop over, at 0 dB (default 10; 0 for none)")
    becho.add_argument("--seed", type=int, default=1, help="the room's seed")
    btools = _bench_parser(
        benches,
        "tools",
        _cmd_bench_tools,
        help="tool turns over a real call: end of speech to the tool running, the tool's answer to the spoken "
        "reply, and what the device adds (goal <= 20 ms)",
        description="The emulator in its own process calls get_time after each user turn; the agent on real ALSA "
        "devices answers it. p50 and p95 over the turns. Exit code 1 if the goal is missed. Needs espeak-ng.",
    )
    btools.add_argument("--turns", type=int, default=20, help="tool turns (default 20)")
    becho.add_argument("--strict", action="store_true",
                       help="the emulator cancels nothing in any mode (the service without a canceller)")
    baudio.add_argument("--answer-delay", type=float, default=0.5, help="the emulator's answer delay (s)")
    baudio.add_argument(
        "--output-order",
        choices=("both", "webrtc", "audio-first", "no-buffer-events"),
        default="both",
        help="the emulator's reply timing: webrtc (response.done before the audio has streamed), audio-first, "
        "no-buffer-events, or both (default: webrtc, then audio-first, side by side)",
    )
    bmetrics = _bench_parser(
        benches,
        "metrics",
        _cmd_bench_metrics,
        seconds=(30.0, "each event loop stretch (default 30)"),
        help="what the metrics and status files cost while idle (goal < 0.1 %% of a core)",
        description="Renders and writes the metrics and status files (fsync, rename) and samples the microphone "
        "level as the running service does, on a real Agent whose devices are not opened: each step's CPU, and "
        "the publisher task on an event loop against the same loop without it. Files go to a temporary folder "
        "in the current directory (run it on the device's disk).",
    )
    bmetrics.add_argument("--repeats", type=int, default=300, help="repetitions of each step (default 300)")
    bmetrics.add_argument("--config", help="take metrics.interval_s and the rest from this YAML file")
    check = sub.add_parser("check", help="check config, audio, LEDs, network, credentials and models: pass/fail")
    check.add_argument("--config", help="YAML file (default: $VOICE_AGENT_CONFIG or /etc/voice-agent/config.yaml)")
    check.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    check.add_argument("--seconds", type=float, default=3.0, help="seconds of microphone level to measure")
    check.add_argument("--button", type=float, default=0.0, metavar="S", help="wait up to S seconds for a press")
    check.add_argument("--no-tone", action="store_true", help="skip the speaker test tone")
    check.add_argument("--no-leds", action="store_true", help="skip the LED walk")
    check.add_argument("--timeout", type=float, default=10.0, help="seconds for each network step")
    check.add_argument("-v", "--verbose", action="store_true")
    check.set_defaults(func=_cmd_check)

    status = sub.add_parser(
        "status",
        help="what the running service is doing: state, last errors, counters since start",
        description="Reads the status file the service rewrites in its runtime folder ($RUNTIME_DIRECTORY, "
        "/run/voice-agent, or metrics.runtime_dir). Its first line is the STATUS line `systemctl status "
        "voice-agent` shows. Exit code 0: working; 1: it shows an error; 2: no service running (or it stopped "
        "rewriting the file).",
    )
    status.add_argument("--config", help="YAML file (default: $VOICE_AGENT_CONFIG or /etc/voice-agent/config.yaml)")
    status.add_argument("--json", action="store_true", help="the status file as one JSON object")
    status.set_defaults(func=_cmd_status)

    devices = sub.add_parser("devices", help="ALSA capture and playback devices and the rates and channels they take")
    devices.add_argument("--json", action="store_true")
    devices.add_argument("--device", action="append", default=[], help="also probe this device name")
    devices.add_argument("-v", "--verbose", action="store_true")
    devices.set_defaults(func=_cmd_devices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"voice-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
