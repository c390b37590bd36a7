"""Field deployment: the systemd unit, the udev rules and deploy/install.sh.

The unit is checked by systemd's own `systemd-analyze verify`, its hardening by running
the daemon under the same constraints (no writable executable memory; every system call
traced and found in @system-service), the udev rules by `udevadm test`. The install
script runs for real twice: into a --root tree, and as root in deploy/sandbox.sh, a
throwaway copy of this machine, where a real mosquitto then runs the broker it set up.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import shutil
import subprocess
import sys
from itertools import takewhile
from pathlib import Path

import pytest

from acquisition.config.station import StationConfig, load_config
from acquisition.daemon.daemon import stop_budget_s
from simulators.station import SimStation
from tests.stations import store_rows

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "crf-daemon.service"
INSTALL = REPO / "deploy" / "install.sh"
SANDBOX = REPO / "deploy" / "sandbox.sh"
EXAMPLE = REPO / "config" / "station.example.toml"
EXAMPLE_STATION = "crf-field-01"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given, in order (systemd keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def run(command: list[str], env: dict[str, str] | None = None,
        timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})}, check=False)


def needs(tool: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"needs {tool}")


# --- the unit -------------------------------------------------------------------------


@needs("systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as installed, but for the path of `crf`, which must exist: here a stub."""
    crf = tmp_path / "opt" / "crf-daq" / "bin" / "crf"
    crf.parent.mkdir(parents=True)
    crf.write_text("#!/bin/sh\n")
    crf.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/crf-daq/", f"{tmp_path}/opt/crf-daq/"))
    verified = run(["systemd-analyze", "verify", str(unit)])
    assert verified.returncode == 0 and not verified.stdout + verified.stderr, verified


def test_unit_gives_the_stop_its_budget_and_restarts_within_its_start_limit() -> None:
    settings = unit_settings(UNIT)
    [stop_s] = settings["Service.TimeoutStopSec"]
    assert float(stop_s) >= stop_budget_s(load_config(EXAMPLE))
    assert settings["Service.Type"] == ["notify"]
    [venv] = re.findall(r"^readonly VENV=(\S+)$", INSTALL.read_text(), re.M)
    assert settings["Service.ExecStart"][0].startswith(f"{venv}/bin/crf daemon ")
    # Restarts by the watchdog come at most every WatchdogSec + RestartSec: fewer of them
    # than StartLimitBurst fit in StartLimitIntervalSec, so a dead bus never fails the unit.
    cycle_s = float(settings["Service.WatchdogSec"][0]) + float(settings["Service.RestartSec"][0])
    interval_s = float(settings["Unit.StartLimitIntervalSec"][0])
    assert interval_s // cycle_s + 1 < int(settings["Unit.StartLimitBurst"][0])


# --- the daemon under the unit's constraints ----------------------------------------------


async def run_daemon(prefix: list[str], config_path: Path, seconds: float) -> None:
    """`crf daemon` for `seconds`, started through `prefix`; it must end well."""
    daemon = await asyncio.create_subprocess_exec(
        *prefix, "daemon", "--config", str(config_path), "--duration", str(seconds),
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(daemon.communicate(), 60)
    assert daemon.returncode == 0, err.decode()


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# The daemon, once this process may no longer map memory writable and executable (what
# MemoryDenyWriteExecute=yes enforces with seccomp); numpy and pyarrow at work before it.
UNDER_MDWE = f"""
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit("prctl(PR_SET_MDWE) refused")
import numpy, pyarrow, pyarrow.parquet
table = pyarrow.table({{"flow": numpy.linspace(0.0, 1.0, 1000)}})
pyarrow.parquet.write_table(table, sys.argv[1])
from acquisition.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def mdwe_supported() -> bool:
    """Linux 6.3 or later: PR_GET_MDWE (66) answers."""
    return ctypes.CDLL(None, use_errno=True).prctl(66, 0, 0, 0, 0) >= 0


@pytest.mark.skipif(not mdwe_supported(), reason="the kernel has no PR_SET_MDWE (Linux < 6.3)")
async def test_daemon_needs_no_writable_executable_memory(
    config: StationConfig, sim: SimStation, tmp_path: Path
) -> None:
    parquet = tmp_path / "flow.parquet"
    await run_daemon([sys.executable, "-c", UNDER_MDWE, str(parquet)],
                     tmp_path / "station.toml", 2)
    assert parquet.stat().st_size > 0
    [(good,)] = store_rows(config, "SELECT count(*) FROM samples_v WHERE quality = 'ok'")
    assert good > 0


def system_calls_in(group: str) -> set[str]:
    """Every system call of a systemd-analyze group, nested groups included."""
    listed = run(["systemd-analyze", "syscall-filter", group]).stdout.splitlines()[1:]
    calls = set()
    for name in (line.strip() for line in listed):
        if name.startswith("@"):
            calls |= system_calls_in(name)
        elif name and not name.startswith("#"):  # not the group's description
            calls.add(name)
    return calls


@needs("strace")
@needs("systemd-analyze")
async def test_every_system_call_of_the_daemon_is_in_the_units_filter(
    config: StationConfig, sim: SimStation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "@crf-test-nobody-listens")  # sd_notify calls too
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    trace = tmp_path / "trace"
    await run_daemon(["strace", "-f", "-qq", "-o", str(trace), sys.executable, "-m",
                      "acquisition.cli"], tmp_path / "station.toml", 3)
    made = set(re.findall(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]", trace.read_text(), re.M))
    assert {"openat", "ioctl", "sendto", "fdatasync"} <= made  # files, ports, sockets, store
    [allowed] = unit_settings(UNIT)["Service.SystemCallFilter"]
    assert not made - system_calls_in(allowed)


# --- udev -------------------------------------------------------------------------------


@needs("udevadm")
@needs("unshare")
def test_udev_rules_parse(tmp_path: Path) -> None:
    """`udevadm test` reads every rules file and names each line it cannot parse; in the
    sandbox, with an empty /dev, what it would create goes nowhere. A broken file is
    installed beside ours, to show that a broken line would be seen."""
    broken = tmp_path / "98-broken.rules"
    broken.write_text('SUBSYSTEM=="tty", NO_SUCH_KEY=="1"\n')
    rules = [REPO / "systemd" / "99-crf-serial.rules", REPO / "systemd" / "99-crf-names.rules",
             broken]
    tested = run(["bash", str(SANDBOX), str(tmp_path / "sandbox"), "bash", "-c",
                  'mount -t tmpfs udev-test /dev && install -m 644 "$@" /etc/udev/rules.d/ '
                  "&& udevadm test --action=add /sys/class/tty/tty0 2>&1", "test",
                  *map(str, rules)])
    assert tested.returncode == 0, tested.stderr
    about = [line for line in tested.stdout.splitlines() if "rules.d/" in line]
    assert any("98-broken.rules:1 Invalid key" in line for line in about), tested.stdout
    ours = [line for line in about if "99-crf-" in line]
    assert len(ours) == 2 and all(line.startswith("Reading rules file") for line in ours), ours


# --- deploy/install.sh ---------------------------------------------------------------------


@needs("shellcheck")
def test_scripts_pass_shellcheck() -> None:
    checked = run(["shellcheck", str(INSTALL), str(SANDBOX)])
    assert checked.returncode == 0, checked.stdout


def test_bad_options_are_refused_in_one_line(tmp_path: Path) -> None:
    root = str(tmp_path)
    for options, complaint in [
        (["--root", root, "--site-address", "10.0.0.1; rm"], "is not an address"),
        (["--root", root, "--no-such-option"], "unknown option '--no-such-option'"),
        (["--root"], "--root needs a directory"),
    ]:
        refused = run(["bash", str(INSTALL), *options])
        assert refused.returncode == 2 and complaint in refused.stderr, refused
        assert len(refused.stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_dry_run_says_what_it_would_do_and_does_nothing(tmp_path: Path) -> None:
    first, second = (run(["bash", str(INSTALL), "--dry-run", "--root", str(tmp_path)])
                     for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert not any(tmp_path.iterdir())
    for step in ["would install /etc/crf/station.toml",
                 "would install /etc/systemd/system/crf-daemon.service",
                 "would enable crf-daemon.service",
                 "would install /etc/udev/rules.d/99-crf-serial.rules",
                 "would add MQTT account operator", "nothing was changed (dry run)"]:
        assert step in first.stdout, first.stdout
    assert "system user" not in first.stdout  # a --root tree has no users


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What install.sh reads of this checkout, copied: the script must not see a file
    change between its runs (as one being edited here meanwhile), and it must work from
    wherever a checkout lies."""
    copy = tmp_path_factory.mktemp("checkout")
    for part in ["pyproject.toml", "README.md"]:
        shutil.copy(REPO / part, copy / part)
    for part in ["acquisition", "drivers", "simulators", "config", "systemd", "deploy"]:
        shutil.copytree(REPO / part, copy / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return copy


@pytest.fixture(scope="module")
def pip_offline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """CRF_PIP_ARGS for an install from a local wheelhouse, as on a site without internet
    (and in the sandbox, whose network is its own): the package alone, built with the
    setuptools wheel kept there (its dependencies would take a minute more)."""
    wheels = tmp_path_factory.mktemp("wheels")
    fetched = run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary", ":all:", "--dest", str(wheels), "setuptools>=68"])
    assert fetched.returncode == 0, fetched.stderr
    return {"CRF_PIP_ARGS": f"--no-deps --no-index --find-links {wheels}"}


@pytest.mark.timeout(300)
def test_installs_into_a_root_then_has_nothing_to_change(
    tmp_path: Path, checkout: Path, pip_offline: dict[str, str]
) -> None:
    root = tmp_path / "root"
    install = str(checkout / "deploy" / "install.sh")
    installed = run(["bash", install, "--root", str(root)], env=pip_offline)
    assert installed.returncode == 0, installed.stderr
    etc = root / "etc"
    assert (etc / "crf" / "station.toml").read_text() == EXAMPLE.read_text()
    assert (etc / "systemd/system/crf-daemon.service").read_text() == UNIT.read_text()
    assert (etc / "systemd/system/multi-user.target.wants/crf-daemon.service").is_symlink()
    assert os.access(root / "opt/crf-daq/bin/crf", os.X_OK)
    acl = (etc / "mosquitto/crf.acl").read_text()
    assert f"crf/{EXAMPLE_STATION}/cmd" in acl and "@STATION@" not in acl
    accounts = [line.split(":")[0] for line in (etc / "mosquitto/crf.passwd").read_text()
                .splitlines()]
    assert accounts == ["station", "operator", "metrology"]
    assert re.search(r"^  operator: \S{20,}$", installed.stdout, re.M)
    assert "station:" not in installed.stdout  # its password is in its file, not shown
    assert len((etc / "crf/mqtt.password").read_text().strip()) >= 20
    for path, wanted in [("crf", 0o750), ("crf/station.toml", 0o640),
                         ("crf/mqtt.password", 0o640), ("mosquitto/crf.passwd", 0o640),
                         ("mosquitto/crf.acl", 0o640), ("mosquitto/conf.d/crf.conf", 0o644)]:
        assert mode(etc / path) == wanted, path
    conf = (etc / "mosquitto/conf.d/crf.conf").read_text()
    assert "listener 1883 127.0.0.1" in conf and "192.168.50.10" not in conf  # loopback only

    again = run(["bash", install, "--root", str(root)], env=pip_offline)
    assert again.returncode == 0 and again.stdout.splitlines()[1:] == [
        "nothing to change: crf-daq is installed as this checkout has it"], again.stdout

    station_file = etc / "crf/station.toml"
    station_file.write_text(station_file.read_text().replace(
        f'station = "{EXAMPLE_STATION}"', 'station = "crf-field-02"'))
    edited = station_file.read_text()
    updated = run(["bash", install, "--root", str(root)], env=pip_offline)
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.splitlines()[1:-1] == ["  update /etc/mosquitto/crf.acl"]
    assert station_file.read_text() == edited  # the site's file is never overwritten
    assert "crf/crf-field-02/cmd" in (etc / "mosquitto/crf.acl").read_text()


def steps(output: str) -> list[str]:
    """The steps an install.sh run lists (indented, before its summary), as done."""
    listed = takewhile(lambda line: line.startswith("  "), output.splitlines()[1:])
    return [line.replace("  would ", "  ", 1) for line in listed]


# Inside the sandbox, as a fresh station: install (with TLS certificates in place), again,
# then start mosquitto with what was installed, and use the accounts it made.
ON_A_FRESH_STATION = r"""
set -euo pipefail
out=$1 station=$2
certs=/etc/mosquitto/certs
mkdir -p $certs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=127.0.0.2 -addext subjectAltName=IP:127.0.0.2 \
    -keyout $certs/server.key -out $certs/server.crt 2>/dev/null
cp $certs/server.crt $certs/ca.crt
chown root:mosquitto $certs/server.key && chmod 640 $certs/server.key
deploy/install.sh --dry-run --site-address 127.0.0.2 > "$out/dry.txt"
deploy/install.sh --site-address 127.0.0.2 > "$out/first.txt"
deploy/install.sh > "$out/second.txt"
id -nG crf > "$out/groups.txt"
stat -c '%n %a %U:%G' /etc/crf /etc/crf/station.toml /etc/crf/mqtt.password \
    /etc/mosquitto/crf.passwd /etc/mosquitto/crf.acl > "$out/files.txt"

mkdir -p /run/mosquitto && chown mosquitto: /run/mosquitto
mosquitto -c /etc/mosquitto/mosquitto.conf -d
log=/var/log/mosquitto/mosquitto.log
timeout 10 grep -q -m1 ' running' <(timeout 10 tail -n +1 -F $log 2>/dev/null)
operator=$(sed -n 's/^  operator: //p' "$out/first.txt")
mosquitto_pub -h 127.0.0.1 -u station -P "$(cat /etc/crf/mqtt.password)" -q 1 -r \
    -t "crf/$station/status" -m online
mosquitto_pub -h 127.0.0.1 -u station -P "$(cat /etc/crf/mqtt.password)" -q 1 -r \
    -t "crf/$station/truth/P1" -m truth
mosquitto_sub -h 127.0.0.2 -p 8883 --cafile $certs/ca.crt -u operator -P "$operator" \
    -t "crf/$station/status" -C 1 -W 5 > "$out/operator.txt"
mosquitto_sub -h 127.0.0.2 -u metrology -P "$CRF_MQTT_PASSWORD_METROLOGY" \
    -t "crf/$station/truth/#" -C 1 -W 5 > "$out/metrology.txt"
mosquitto_sub -h 127.0.0.1 -t '#' -C 1 -W 5 > /dev/null 2> "$out/anonymous.txt" || true
kill "$(cat /run/mosquitto/mosquitto.pid)"
"""


@needs("unshare")
@needs("ip")
@needs("mosquitto")
@needs("openssl")
@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root")
@pytest.mark.timeout(300)
def test_installs_a_fresh_station_for_real_in_the_sandbox(
    tmp_path: Path, checkout: Path, pip_offline: dict[str, str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = {**pip_offline, "CRF_MQTT_PASSWORD_METROLOGY": "metrology-secret-from-env"}
    script = tmp_path / "station.sh"
    script.write_text(ON_A_FRESH_STATION)
    users = Path("/etc/passwd").read_text()
    done = subprocess.run(
        ["bash", str(SANDBOX), str(tmp_path / "sandbox"), "bash", str(script), str(out),
         EXAMPLE_STATION], cwd=checkout, capture_output=True, text=True, timeout=280,
        env={**os.environ, **env}, check=False)
    assert done.returncode == 0, done.stderr

    dry, first = (out / "dry.txt").read_text(), (out / "first.txt").read_text()
    assert "  would create system user crf (groups crf, dialout)" in dry
    assert steps(dry) == steps(first)  # the dry run foretold every step
    assert "  create system user crf (groups crf, dialout)" in first
    assert "metrology:" not in first  # its password came from the environment
    assert (out / "second.txt").read_text().splitlines()[1:] == [
        "nothing to change: crf-daq is installed as this checkout has it"]
    assert (out / "groups.txt").read_text().split() == ["crf", "dialout"]
    assert (out / "files.txt").read_text().splitlines() == [
        "/etc/crf 750 root:crf", "/etc/crf/station.toml 640 root:crf",
        "/etc/crf/mqtt.password 640 root:crf", "/etc/mosquitto/crf.passwd 640 root:mosquitto",
        "/etc/mosquitto/crf.acl 640 root:mosquitto"]
    assert (out / "operator.txt").read_text() == "online\n"  # over TLS, on the site address
    assert (out / "metrology.txt").read_text() == "truth\n"
    assert "not authorised" in (out / "anonymous.txt").read_text()
    # What it did stayed in the sandbox's layers.
    assert (tmp_path / "sandbox/changes/etc/crf/station.toml").exists()
    assert "crf:" in (tmp_path / "sandbox/changes/etc/passwd").read_text()
    assert Path("/etc/passwd").read_text() == users
