#!/usr/bin/env bash
# The arm64 smoke test: on this x86 machine, in a Debian bookworm arm64 chroot run through qemu-user,
# install the package from aarch64 wheels (pyalsaaudio built from source, as on a Pi) and check that the
# wake word detector finds "hey jarvis" in a spoken clip. Correctness only: under emulation it runs
# about 5x slower than real time, so no timing is measured.
#
#   sudo tests/arm64_smoke.sh            (CI: .ci/run runs it after the test suite; tests/test_arm64.py too)
#
# Needs root (debootstrap, chroot, binfmt_misc), the Debian mirror from this machine's apt sources, and
# PyPI through pip. The chroot is kept in $VOICE_AGENT_ARM64_DIR (default /var/tmp/voice-agent-arm64)
# so a second run skips debootstrap; the binfmt_misc entry it registers is removed on exit.
# Exit codes: 0 pass; 1 the check failed; 3 prerequisites missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${VOICE_AGENT_ARM64_DIR:-/var/tmp/voice-agent-arm64}
ROOTFS=$WORK/rootfs
WHEELS=$WORK/wheels
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
BINFMT_NAME=voice-agent-aarch64
say() { printf 'arm64: %s\n' "$*"; }
die() { local code=$1; shift; printf 'arm64: FAIL: %s\n' "$*" >&2; exit "$code"; }

[ "$(id -u)" -eq 0 ] || die 3 "run as root (debootstrap, chroot and binfmt_misc need it)"
[ -x "$HOST_PY" ] || die 3 "$HOST_PY missing: run ./install.sh --dev first"
t_start=$(date +%s)

# --- tools -----------------------------------------------------------------------------------------
if ! command -v debootstrap >/dev/null || ! [ -x /usr/bin/qemu-aarch64-static ]; then
    say "installing qemu-user-static and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends qemu-user-static debootstrap >/dev/null \
        || die 3 "cannot install qemu-user-static and debootstrap"
fi

# --- binfmt_misc: register qemu-aarch64 (flag F: the interpreter is opened now, so it works in the chroot)
BINFMT=$WORK/binfmt_misc
mkdir -p "$BINFMT"
mounted_here=0
if ! mountpoint -q "$BINFMT"; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" || die 3 "cannot mount binfmt_misc"
    mounted_here=1
fi
registered_here=0
cleanup() {
    set +e
    mountpoint -q "$ROOTFS/proc" && umount "$ROOTFS/proc"
    if [ $registered_here -eq 1 ] && [ -e "$BINFMT/$BINFMT_NAME" ]; then
        echo -1 > "$BINFMT/$BINFMT_NAME" && say "binfmt_misc entry $BINFMT_NAME removed"
    fi
    [ $mounted_here -eq 1 ] && umount "$BINFMT"
}
trap cleanup EXIT
if ! grep -qs '^enabled' "$BINFMT"/*aarch64* 2>/dev/null; then
    printf '%s' ":$BINFMT_NAME:M::\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:/usr/bin/qemu-aarch64-static:F" \
        > "$BINFMT/register" || die 3 "cannot register qemu-aarch64 with binfmt_misc"
    registered_here=1
fi

# --- the chroot ---------------------------------------------------------------------------------------
mirror() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    fi
    [ -n "$uri" ] || uri=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}
if [ ! -f "$ROOTFS/.voice-agent-rootfs-ok" ]; then
    rm -rf "$ROOTFS"
    MIRROR=$(mirror)
    say "debootstrap bookworm arm64 from $MIRROR (first stage)"
    debootstrap --arch=arm64 --foreign --variant=minbase bookworm "$ROOTFS" "$MIRROR" > "$WORK/debootstrap1.log" 2>&1 \
        || die 1 "debootstrap first stage failed (see $WORK/debootstrap1.log)"
    say "debootstrap second stage (under qemu)"
    chroot "$ROOTFS" /debootstrap/debootstrap --second-stage > "$WORK/debootstrap2.log" 2>&1 \
        || die 1 "debootstrap second stage failed (see $WORK/debootstrap2.log)"
    printf 'deb %s bookworm main\n' "$MIRROR" > "$ROOTFS/etc/apt/sources.list"
    touch "$ROOTFS/.voice-agent-rootfs-ok"
fi
[ "$(chroot "$ROOTFS" uname -m)" = aarch64 ] || die 1 "the chroot does not run aarch64 code"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mountpoint -q "$ROOTFS/proc" || mount -t proc proc "$ROOTFS/proc"  # no /sys: onnxruntime crashes under qemu with it
in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }
if [ ! -f "$ROOTFS/.voice-agent-apt-ok" ]; then
    say "apt in the chroot: python3, venv, and what pyalsaaudio needs to build"
    in_root apt-get update -qq > "$WORK/apt.log" 2>&1 || die 1 "apt-get update in the chroot failed"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        python3 python3-venv python3-dev gcc libc6-dev libasound2-dev >> "$WORK/apt.log" 2>&1 \
        || die 1 "apt-get install in the chroot failed (see $WORK/apt.log)"
    touch "$ROOTFS/.voice-agent-apt-ok"
fi

# --- wheels, downloaded on the host for aarch64 (pip in the chroot fails certificate checks) -------
say "downloading aarch64 cp311 wheels"
rm -rf "$WHEELS" && mkdir -p "$WHEELS"
"$HOST_PY" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$WHEELS" "$REPO" \
    || die 1 "cannot build the voice-agent wheel"
platforms=()
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
platforms+=(--platform manylinux2014_aarch64 --platform linux_aarch64)
requirements=$("$HOST_PY" - "$WHEELS" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("voice_agent-*.whl"))
meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("METADATA")))
reqs = [l.split(":", 1)[1].strip() for l in meta.decode().splitlines() if l.startswith("Requires-Dist:")]
print("\n".join(r for r in reqs if "extra ==" not in r and not r.startswith("pyalsaaudio")))
EOF
)
mapfile -t reqs <<< "$requirements"
"$HOST_PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: "${platforms[@]}" \
    --implementation cp --python-version 3.11 --abi cp311 --abi abi3 --abi none \
    --dest "$WHEELS" "${reqs[@]}" setuptools wheel > "$WORK/pip-download.log" 2>&1 \
    || { tail -20 "$WORK/pip-download.log" >&2; die 1 "pip download of the aarch64 wheels failed"; }
"$HOST_PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary=:all: \
    --dest "$WHEELS" "pyalsaaudio>=0.10" >> "$WORK/pip-download.log" 2>&1 || die 1 "cannot download the pyalsaaudio sdist"
non_arm=$(find "$WHEELS" -name '*.whl' \( -name '*x86_64*' -o -name '*i686*' \) -printf '%f ')
[ -z "$non_arm" ] || die 1 "non-arm wheels were picked: $non_arm"
say "$(find "$WHEELS" -name '*aarch64*.whl' | wc -l) aarch64 wheels, $(find "$WHEELS" -name '*-none-any.whl' | wc -l) pure-Python ones"

# --- install offline in the chroot ---------------------------------------------------------------------
rm -rf "$ROOTFS/wheels" "$ROOTFS/opt/va" && cp -r "$WHEELS" "$ROOTFS/wheels"
say "installing into a venv in the chroot (offline, from those wheels)"
in_root python3 -m venv /opt/va || die 1 "venv in the chroot failed"
in_root /opt/va/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /wheels setuptools wheel \
    > "$WORK/pip-install.log" 2>&1 || die 1 "pip install setuptools in the chroot failed"
in_root /opt/va/bin/pip install --quiet --disable-pip-version-check --no-index --find-links /wheels \
    --no-build-isolation "$(cd "$WHEELS" && ls voice_agent-*.whl | sed 's|^|/wheels/|')" >> "$WORK/pip-install.log" 2>&1 \
    || { tail -20 "$WORK/pip-install.log" >&2; die 1 "pip install voice-agent in the chroot failed"; }
machine=$(in_root /opt/va/bin/python -c 'import platform, alsaaudio, aiortc, onnxruntime, ai_edge_litert.interpreter, jsonschema; from livekit import rtc; rtc.AudioProcessingModule(echo_cancellation=True); print(platform.machine())') \
    || die 1 "the installed stack does not import in the chroot"
[ "$machine" = aarch64 ] || die 1 "the chroot's python reports $machine"
mkdir -p "$ROOTFS/opt/va/share/voice-agent/models"
cp "$REPO/.venv/share/voice-agent/models/"*.onnx "$REPO/.venv/share/voice-agent/models/"*.tflite \
    "$ROOTFS/opt/va/share/voice-agent/models/"

# --- the clip, spoken on the host -------------------------------------------------------------------
(cd "$REPO" && "$HOST_PY" - "$ROOTFS/tmp/hey-jarvis.wav" "$ROOTFS/tmp/no-wake.wav" <<'EOF'
import sys, wave
import numpy as np
from tests.speech import brown_noise, espeak
def write(path, parts):
    with wave.open(path, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
        w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
# short clips: under qemu each 80 ms frame takes about a second of CPU
write(sys.argv[1], [brown_noise(1.0), espeak("hey jarvis"), brown_noise(0.5, seed=1)])
write(sys.argv[2], [brown_noise(1.0), espeak("good morning"), brown_noise(0.5, seed=1)])
EOF
) || die 1 "cannot make the test clips"

# --- detect ---------------------------------------------------------------------------------------------
# One process for both clips: loading the models under qemu takes minutes.
check_results() {  # check_results FILE: one JSON object per clip, {"file", "detections": [{"model", ...}]}
    "$HOST_PY" - "$1" <<'EOF'
import json, sys
results = {r["file"].rsplit("/", 1)[-1]: r for r in (json.loads(ln) for ln in open(sys.argv[1]) if ln.strip())}
hit = [d["model"] for d in results["hey-jarvis.wav"].get("detections", [])]
miss = [d["model"] for d in results["no-wake.wav"].get("detections", [])]
print(f"hey-jarvis.wav: {hit or 'nothing'}; no-wake.wav: {miss or 'nothing'}")
sys.exit(0 if hit == ["hey_jarvis"] and not miss else 1)
EOF
}
if in_root /opt/va/bin/voice-agent detect --help >/dev/null 2>&1; then
    say "running: voice-agent detect --json on two clips (under qemu: minutes)"
    in_root /opt/va/bin/voice-agent detect --json /tmp/hey-jarvis.wav /tmp/no-wake.wav > "$WORK/detect.json" \
        2> "$WORK/detect.log" || die 1 "voice-agent detect failed: $(grep -v cpuinfo "$WORK/detect.log" | tail -5)"
else
    say "voice-agent detect is not there: using agent.wake.wakeword.WakeWordDetector directly (under qemu: minutes)"
    in_root /opt/va/bin/python - > "$WORK/detect.json" 2> "$WORK/detect.log" <<'EOF' \
        || die 1 "the detector failed in the chroot: $(grep -v cpuinfo "$WORK/detect.log" | tail -5)"
import json, wave
import numpy as np
from agent.audio.frames import PcmBlock
from agent.config import WakeConfig
from agent.wake.wakeword import WakeWordDetector

detector = WakeWordDetector(WakeConfig())
for path in ("/tmp/hey-jarvis.wav", "/tmp/no-wake.wav"):
    detector.reset()
    with wave.open(path) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = np.concatenate([samples, np.zeros(16000, np.int16)])  # a wake word at the end still scores
    found = []
    for i in range(0, len(samples) - 1279, 1280):
        block = PcmBlock(samples=samples[i : i + 1280], rate=16000, t_end=(i + 1280) / 16000, seq=i // 1280)
        found += [{"model": d.model, "score": round(d.score, 3), "t": round(d.t_end, 2)} for d in detector.process(block)]
    print(json.dumps({"file": path, "detections": found}), flush=True)
detector.close()
EOF
fi
verdict=$(check_results "$WORK/detect.json") || die 1 "wrong detections: $verdict"
say "$verdict"
say "PASS: installed from aarch64 wheels and found the wake word under qemu ($(( $(date +%s) - t_start )) s)"
