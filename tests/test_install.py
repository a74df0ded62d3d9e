"""install.sh in fleet mode, run for real into a directory tree (`--root`): the tree file by file with
owners and modes, the unit as installed checked by systemd-analyze, a second run that changes nothing,
uninstall and purge, and bad options that are refused before anything changes."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from agent.config import load_config

from .test_systemd import SYSTEMD_ANALYZE, needs_analyze, verify_problems

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.sh"
KEY = "canary-install-5f0e9b2c71d4"
ENDPOINT = "wss://fleet-test.services.ai.azure.com"
BOOT_BEFORE = "# Raspberry Pi config\ndtparam=audio=on\n[pi5]\ndtoverlay=vc4-kms-v3d\n"

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh fleet mode is tested as root, as CI runs it"),
]


@dataclass
class Run:
    code: int
    out: str


def run_install(*args: str, stdin: str = "", timeout: float = 400) -> Run:
    proc = subprocess.run(
        ["bash", str(INSTALL), *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd="/"
    )
    return Run(proc.returncode, proc.stdout + proc.stderr)


def fleet_args(root: Path, wheel: Path) -> list[str]:
    return [
        "--root", str(root), "--from", str(wheel), "--endpoint", ENDPOINT, "--api-key-file", "-",
        "--hardware", "usb-breadboard", "--wake-word", "alexa", "--device-name", "kitchen", "--model", "gpt-realtime",
    ]  # fmt: skip


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path in the tree with what a re-run must not change: type, mode, owner, size, mtime, link."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            link = os.readlink(p) if p.is_symlink() else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                             st.st_gid, st.st_size, st.st_mtime_ns, link)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel, built once: a fixed source, so a second run has nothing to upgrade."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [str(REPO / ".venv" / "bin" / "python"), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out)]
    subprocess.run([*pip, str(REPO)], check=True, capture_output=True, timeout=300)
    return next(out.glob("voice_agent-*.whl"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[tuple[Path, Run]]:
    root = tmp_path_factory.mktemp("root")
    (root / "boot" / "firmware").mkdir(parents=True)
    (root / "boot" / "firmware" / "config.txt").write_text(BOOT_BEFORE)
    result = run_install(*fleet_args(root, wheel), stdin=KEY + "\n")
    assert result.code == 0, result.out
    yield root, result


def mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_the_tree_file_by_file(installed: tuple[Path, Run]) -> None:
    root, _ = installed
    uid, gid = os.getuid(), os.getgid()
    expected = {
        "etc/voice-agent": 0o755,
        "etc/voice-agent/config.yaml": 0o644,
        "etc/voice-agent/credentials": 0o700,
        "etc/voice-agent/credentials/voicelive-api-key": 0o600,
        "etc/systemd/system/voice-agent.service": 0o644,
        "usr/lib/sysusers.d/voice-agent.conf": 0o644,
        "opt/voice-agent": 0o755,
    }
    for rel, want in expected.items():
        p = root / rel
        assert p.exists(), rel
        assert mode(p) == want, f"{rel}: {oct(mode(p))}"
        assert (p.lstat().st_uid, p.lstat().st_gid) == (uid, gid), rel
    # outside /etc, /opt, /usr and the boot partition the installer writes nothing
    assert sorted(p.name for p in root.iterdir()) == ["boot", "etc", "opt", "usr"]
    assert sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*")) == sorted(
        [*(k for k in expected if k.startswith("etc/")), "etc/systemd", "etc/systemd/system"]
    )
    assert (root / "etc/voice-agent/credentials/voicelive-api-key").read_text() == KEY + "\n"
    unit = (root / "etc/systemd/system/voice-agent.service").read_bytes()
    assert unit == (REPO / "systemd/voice-agent.service").read_bytes()
    link = root / "usr/local/bin/voice-agent"
    assert link.is_symlink() and os.readlink(link) == "/opt/voice-agent/venv/bin/voice-agent"
    binary = root / "opt/voice-agent/venv/bin/voice-agent"
    assert binary.read_text().splitlines()[0] == "#!/opt/voice-agent/venv/bin/python"  # the path on the device
    models = root / "opt/voice-agent/venv/share/voice-agent/models"
    assert {"alexa_v0.1.onnx", "melspectrogram.onnx", "embedding_model.onnx"} <= {p.name for p in models.iterdir()}
    sysusers = (root / "usr/lib/sysusers.d/voice-agent.conf").read_text()
    assert "u voice-agent " in sysusers and all(f"m voice-agent {g}" in sysusers for g in ("audio", "gpio", "spi"))


def test_the_configuration_has_the_profile_and_the_flags(installed: tuple[Path, Run]) -> None:
    root, _ = installed
    config = load_config(root / "etc/voice-agent/config.yaml")
    profile = yaml.safe_load((REPO / "hardware/usb-breadboard.yaml").read_text())["config"]
    assert config.voicelive.endpoint == ENDPOINT and config.voicelive.model == "gpt-realtime"
    assert config.device.name == "kitchen"
    assert [m.name for m in config.wake.models] == ["alexa"]
    assert config.audio.capture.device == profile["audio"]["capture"]["device"]
    assert config.gpio.leds.driver == "rgbled" and config.gpio.leds.pins == (22, 23, 24)
    assert config.gpio.button.pin == 27


def test_the_key_is_nowhere_else(installed: tuple[Path, Run]) -> None:
    root, result = installed
    assert KEY not in result.out
    holders = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            if p.is_file() and not p.is_symlink() and p.stat().st_size < 2_000_000 and KEY.encode() in p.read_bytes():
                holders.append(str(p.relative_to(root)))
    assert holders == ["etc/voice-agent/credentials/voicelive-api-key"]


def test_boot_config_block_added_once_under_all(installed: tuple[Path, Run]) -> None:
    root, result = installed
    text = (root / "boot/firmware/config.txt").read_text()
    assert text.startswith(BOOT_BEFORE)  # the owner's lines kept, in place
    assert "reboot" not in result.out.lower()  # the usb-breadboard profile needs no overlay


@needs_analyze
def test_the_installed_unit_verifies(installed: tuple[Path, Run], tmp_path: Path) -> None:
    root, result = installed
    assert "unit verified (systemd-analyze verify)" in result.out
    unit = tmp_path / "voice-agent.service"
    text = (root / "etc/systemd/system/voice-agent.service").read_text()
    unit.write_text(text.replace("ExecStart=/opt/", f"ExecStart={root}/opt/"))
    proc = subprocess.run([str(SYSTEMD_ANALYZE), "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert verify_problems(proc) == []
    # and the check has teeth: without the binary, verify fails
    unit.write_text(text)
    assert verify_problems(subprocess.run([str(SYSTEMD_ANALYZE), "verify", "--man=no", str(unit)], capture_output=True,
                                          text=True, timeout=60))  # fmt: skip


def test_sysusers_creates_the_user_with_its_groups(installed: tuple[Path, Run], tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    root, _ = installed
    (tmp_path / "etc").mkdir()
    conf = root / "usr/lib/sysusers.d/voice-agent.conf"
    proc = subprocess.run([sysusers, f"--root={tmp_path}", str(conf)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    groups = {ln.split(":")[0]: ln.split(":")[3] for ln in (tmp_path / "etc/group").read_text().splitlines()}
    assert any(ln.startswith("voice-agent:") and ln.endswith(":/usr/sbin/nologin") for ln in passwd.splitlines())
    assert all("voice-agent" in groups[g].split(",") for g in ("audio", "gpio", "spi"))


def test_a_second_run_changes_nothing(installed: tuple[Path, Run], wheel: Path) -> None:
    root, _ = installed
    before = snapshot(root)
    again = run_install(*fleet_args(root, wheel), stdin=KEY + "\n")
    assert again.code == 0, again.out
    assert "nothing to change" in again.out
    assert snapshot(root) == before


def test_a_changed_default_is_written_beside_the_kept_config(installed: tuple[Path, Run], wheel: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    root = copy_tree(installed[0], tmp_path / "root")
    config = root / "etc/voice-agent/config.yaml"
    mine = config.read_text() + "# my own note\n"
    config.write_text(mine)
    args = [a if a != "kitchen" else "hallway" for a in fleet_args(root, wheel)]
    i = args.index("--api-key-file")
    del args[i : i + 2]  # no key this time: the installed one is kept
    result = run_install(*args)
    assert result.code == 0, result.out
    assert config.read_text() == mine
    assert "name: hallway" in (root / "etc/voice-agent/config.yaml.new").read_text()
    assert (root / "etc/voice-agent/credentials/voicelive-api-key").read_text() == KEY + "\n"
    forced = run_install(*args, "--force-config")
    assert forced.code == 0, forced.out
    assert "name: hallway" in config.read_text() and not (root / "etc/voice-agent/config.yaml.new").exists()
    assert (root / "etc/voice-agent/config.yaml.bak").read_text() == mine


def copy_tree(src: Path, dest: Path) -> Path:
    """A copy to uninstall: the big venv hard-linked (removal only unlinks), the rest copied."""
    subprocess.run(["cp", "-al", str(src), str(dest)], check=True, timeout=120)
    for small in ("etc", "boot"):
        shutil.rmtree(dest / small)
        shutil.copytree(src / small, dest / small, symlinks=True)
    return dest


def test_uninstall_keeps_config_and_key_and_purge_removes_them(installed: tuple[Path, Run], tmp_path: Path) -> None:
    root = copy_tree(installed[0], tmp_path / "root")
    begin = "# >>> voice-agent: install.sh rewrites this block on every run (add your own lines outside it)"
    hardware_block = "\n".join([begin, "[all]", "dtoverlay=x", "# <<< voice-agent", ""])
    (root / "boot/firmware/config.txt").write_text(BOOT_BEFORE)
    first = run_install("--root", str(root), "--uninstall")
    assert first.code == 0, first.out
    for gone in ("opt/voice-agent", "etc/systemd/system/voice-agent.service", "usr/local/bin/voice-agent",
                 "usr/lib/sysusers.d/voice-agent.conf"):  # fmt: skip
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert (root / "etc/voice-agent/credentials/voicelive-api-key").read_text() == KEY + "\n"
    assert (root / "etc/voice-agent/config.yaml").is_file()
    assert "kept /etc/voice-agent" in first.out
    # --purge: the configuration, the key and the boot block go; the owner's own boot lines stay
    (root / "boot/firmware/config.txt").write_text(BOOT_BEFORE + hardware_block)
    purge = run_install("--root", str(root), "--uninstall", "--purge")
    assert purge.code == 0, purge.out
    assert not (root / "etc/voice-agent").exists()
    assert (root / "boot/firmware/config.txt").read_text() == BOOT_BEFORE
    assert "system user voice-agent is kept" in purge.out
    again = run_install("--root", str(root), "--uninstall", "--purge")
    assert again.code == 0 and "nothing to change" in again.out


def test_metrics_lets_the_service_write_node_exporters_folder(installed: tuple[Path, Run], wheel: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    """--metrics: the config names the textfile, and tmpfiles.d gives the service's user (declared by
    sysusers.d) write access to node_exporter's folder, applied here as a first boot would apply it."""
    tmpfiles_cmd = shutil.which("systemd-tmpfiles")
    assert tmpfiles_cmd, "systemd-tmpfiles comes with systemd, one of install.sh --dev's packages"
    root = copy_tree(installed[0], tmp_path / "root")
    result = run_install(*fleet_args(root, wheel), "--metrics", "--force-config", stdin=KEY + "\n")
    assert result.code == 0, result.out
    textfile = Path("/var/lib/prometheus/node-exporter/voice_agent.prom")
    assert load_config(root / "etc/voice-agent/config.yaml").metrics.textfile == textfile
    conf = root / "usr/lib/tmpfiles.d/voice-agent-metrics.conf"
    assert mode(conf) == 0o644
    unit = (root / "etc/systemd/system/voice-agent.service").read_text()
    assert f"ReadWritePaths=-{textfile.parent}" in unit  # writable through ProtectSystem=strict
    lines = [ln for ln in conf.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == [f"d {textfile.parent} 0755 root root -", f"a+ {textfile.parent} - - - - u:voice-agent:rwx"]
    # Applied by the real systemd-tmpfiles into a scratch root. With --root it resolves user names on the
    # host, which has no voice-agent user (on a Pi systemd-sysusers runs before systemd-tmpfiles-setup at
    # boot): the host's nobody stands in for it here.
    boot = tmp_path / "first-boot"
    boot.mkdir()
    scratch = tmp_path / "tmpfiles.conf"
    scratch.write_text(conf.read_text().replace("u:voice-agent:", "u:nobody:"))
    proc = subprocess.run([tmpfiles_cmd, f"--root={boot}", "--create", str(scratch)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "Failed" not in proc.stderr, proc.stderr
    folder = boot / str(textfile.parent).lstrip("/")
    acl = os.getxattr(folder, "system.posix_acl_access")  # POSIX ACL: a 4-byte header, then (tag, perm, id)
    entries = list(struct.iter_unpack("<HHI", acl[4:]))
    assert (0x02, 0o7, pwd.getpwnam("nobody").pw_uid) in entries, entries  # ACL_USER, rwx
    gone = run_install("--root", str(root), "--uninstall")
    assert gone.code == 0 and not conf.exists(), gone.out


BAD = [
    (["--api-key", "sk-123"], "never put the key on the command line"),
    (["--endpoint", "http://example.com"], "must be wss://"),
    (["--endpoint"], "needs a value"),
    (["--hardware", "no-such-board"], "no such profile; known: adafruit-voice-bonnet"),
    (["--api-key-file", "/nonexistent/key"], "cannot read it"),
    (["--config", "/nonexistent/config.yaml"], "cannot read it"),
    (["--from", "/nonexistent/voice_agent.whl"], "no such file or folder"),
    (["--device-name", "semi;colon"], "--device-name"),
    (["--bogus"], "unknown option: --bogus"),
    (["--purge"], "--purge goes with --uninstall"),
    (["--uninstall", "--model", "x"], "takes no install options"),
    (["--dev", "--endpoint", ENDPOINT], "takes none of the fleet options"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_are_refused_and_change_nothing(installed: tuple[Path, Run], args: list[str], message: str) -> None:
    root, _ = installed
    before = snapshot(root)
    result = run_install(*(["--root", str(root)] if "--dev" not in args else []), *args, timeout=60)
    assert result.code == 2, result.out
    assert message in result.out
    assert KEY not in result.out
    assert snapshot(root) == before


def test_first_install_needs_endpoint_and_key(tmp_path: Path) -> None:
    no_endpoint = run_install("--root", str(tmp_path), "--api-key-file", "-", stdin=KEY)
    assert no_endpoint.code == 2 and "give --endpoint" in no_endpoint.out
    no_key = run_install("--root", str(tmp_path), "--endpoint", ENDPOINT)
    assert no_key.code == 2 and "give the API key with --api-key-file" in no_key.out
    empty = run_install("--root", str(tmp_path), "--endpoint", ENDPOINT, "--api-key-file", "-", stdin="\n")
    assert empty.code == 2 and "the key is empty" in empty.out
    missing_root = run_install("--root", str(tmp_path / "nope"), "--endpoint", ENDPOINT)
    assert missing_root.code == 2 and "not a directory" in missing_root.out
    assert list(tmp_path.iterdir()) == []


def test_unknown_wake_word_is_refused_without_changes(installed: tuple[Path, Run], wheel: Path) -> None:
    root, _ = installed
    before = snapshot(root)
    args = [a if a != "alexa" else "hey_nobody" for a in fleet_args(root, wheel)]
    result = run_install(*args, stdin=KEY)
    assert result.code == 2 and "--wake-word hey_nobody: no such model; available: alexa" in result.out
    assert snapshot(root) == before


def test_dry_run_and_help(installed: tuple[Path, Run], wheel: Path) -> None:
    root, _ = installed
    before = snapshot(root)
    dry = run_install(*fleet_args(root, wheel), "--dry-run", stdin=KEY)
    assert dry.code == 0 and "nothing was changed" in dry.out and KEY not in dry.out
    assert snapshot(root) == before
    usage = run_install("--help")
    assert usage.code == 0
    for fragment in ("Exit codes: 0 done; 2 bad usage", "3 missing prerequisites", "4 a download", "5 the service",
                     "--api-key-file FILE", "--root DIR", "--uninstall", "--purge", "--dev"):  # fmt: skip
        assert fragment in usage.out, fragment


PROFILES = sorted((REPO / "hardware").glob("*.yaml"))


@pytest.mark.parametrize("path", PROFILES, ids=[p.stem for p in PROFILES])
def test_hardware_profile_is_complete_and_valid(path: Path) -> None:
    """Each board: named after its file, citing public sources, overlay lines and wiring notes, and a
    config fragment the agent accepts (with LEDs off where this agent version lacks the LED driver)."""
    import typing

    from agent.config import LedConfig, config_from_dict

    profile = yaml.safe_load(path.read_text())
    assert profile["name"] == path.stem
    assert profile["sources"] and all(s.startswith("https://") for s in profile["sources"])
    assert isinstance(profile["boot_config"], list) and len(profile["wiring"]) > 100
    assert all(line.startswith(("dtparam=", "dtoverlay=")) for line in profile["boot_config"])
    fragment = profile["config"]
    drivers = typing.get_args(typing.get_type_hints(LedConfig)["driver"])
    if fragment["gpio"]["leds"]["driver"] not in drivers:  # the same fallback install.sh makes
        fragment = {**fragment, "gpio": {**fragment["gpio"], "leds": {"driver": "none", "pins": []}}}
    config = config_from_dict(fragment)
    assert config.audio.capture.device.startswith("plughw:CARD=")
    assert config.audio.playback.device.startswith("plughw:CARD=")


def test_the_five_boards_are_there() -> None:
    assert {p.stem for p in PROFILES} >= {"respeaker-2mic-v1", "respeaker-2mic-v2", "respeaker-4mic-array",
                                          "adafruit-voice-bonnet", "usb-breadboard"}  # fmt: skip
