"""Station config validation: good files load, bad ones name the file, the key and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acquisition.cli.main import main
from acquisition.config.station import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent

GOOD = """
station = "t-01"
[storage]
path = "store/t.sqlite"
[lines.bus0]
port = "/dev/ttyUSB0"
baudrate = 19200
parity = "E"
[lines.gw]
transport = "rtu-tcp"
host = "127.0.0.1"
tcp_port = 5020
[mfcs.a]
line = "bus0"
unit_id = 1
profile = "alicat"
full_scale = 10
[mfcs.b]
line = "gw"
unit_id = 1
profile = "generic"
full_scale = 50
registers = { flow = 100 }
word_order = "little"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "station.toml") in str(caught.value)
    return caught.value.problems


def test_good_config_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.storage.path == tmp_path / "store" / "t.sqlite"
    assert config.lines["bus0"].stopbits == 1
    assert config.acquisition.sample_rate_hz == 2.0
    profile = config.mfcs["b"].resolved_profile
    assert profile.registers["flow"].address == 100
    assert profile.word_order == "little"


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("unit_id = 1\nprofile = \"alicat\"", "unit_id = 300\nprofile = \"alicat\"",
         "mfcs.a.unit_id", "247"),
        ('profile = "alicat"', 'profile = "alicatt"', "mfcs.a.profile", "shipped profiles: alicat"),
        ("baudrate = 19200", "baudrate = 19000", "lines.bus0.baudrate", "standard baud"),
        ('parity = "E"', 'parity = "X"', "lines.bus0.parity", "'N', 'E' or 'O'"),
        ("full_scale = 10", "full_scale = -1", "mfcs.a.full_scale", "greater than 0"),
        ("full_scale = 10", "full_scale = 10\nfulscale = 3", "mfcs.a.fulscale", "unknown key"),
        ('line = "gw"', 'line = "bus9"', "mfcs.b.line", "no line named 'bus9'"),
        ("registers = { flow = 100 }", "registers = { flw = 100 }", "mfcs.b.profile",
         "register 'flw' is not in profile 'generic'"),
        ('host = "127.0.0.1"\n', "", "lines.gw", "needs `host` and `tcp_port`"),
        ('[mfcs.b]\nline = "gw"\nunit_id = 1', '[mfcs.b]\nline = "bus0"\nunit_id = 1',
         "mfcs.b.unit_id", "already used by mfcs.a"),
    ],
)
def test_bad_config_names_key_and_expectation(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    assert old in GOOD
    problems = problems_of(tmp_path, GOOD.replace(old, new, 1))
    assert any(k == key and words in message for k, message in problems), problems


@pytest.mark.parametrize(
    ("poll_every", "words"),
    [("{ totalizer = 10 }", "poll_every names registers that are not polled: ['totalizer']"),
     ("{ temperature = 0 }", "poll_every must be 1 or more (every n-th poll): ['temperature']")],
)
def test_bad_poll_every_in_an_own_profile_is_named(
    tmp_path: Path, poll_every: str, words: str
) -> None:
    shipped = (REPO / "drivers" / "profiles" / "bronkhorst.toml").read_text()
    own = tmp_path / "own.toml"
    own.write_text(shipped.replace("poll_every = { temperature = 10 }",
                                   f"poll_every = {poll_every}"))
    problems = problems_of(tmp_path, GOOD.replace('profile = "alicat"', f'profile = "{own}"'))
    assert any(key == "mfcs.a.profile" and words in message
               for key, message in problems), problems


def test_unit_ids_clash_across_mfcs_sensors_and_relays(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD + """
[met.anemo]
protocol = "modbus"
line = "bus0"
unit_id = 1
[valves.V1]
line = "bus0"
unit_id = 1
coil = 0
[valves.V2]
line = "bus0"
unit_id = 1
coil = 1
""")
    assert ("met.anemo.unit_id", "unit id 1 is already used by mfcs.a on line 'bus0'") in problems
    assert ("valves.V2.unit_id", "unit id 1 is already used by mfcs.a on line 'bus0'") in problems
    assert len(problems) == 2  # two valves on one relay module are fine


def test_gcf_mode_needs_a_factor(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD.replace('profile = "alicat"',
                                                  'profile = "alicat"\ngas_mode = "gcf"'))
    assert ("mfcs.a.gcf", "gas_mode = 'gcf' needs a `gcf` value") in problems


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid TOML" in problems_of(tmp_path, "station = ")[0][1]
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_check_config_cli_exit_codes_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, GOOD)
    assert main(["check-config", str(good), "--json"]) == 0
    dumped = json.loads(capsys.readouterr().out)
    assert dumped["mfcs"]["a"]["gas_mode"] == "actual"  # default filled in
    assert dumped["lines"]["bus0"]["timeout_s"] == 0.3

    bad = write(tmp_path, GOOD.replace("unit_id = 1", "unit_id = 0", 1))
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: mfcs.a.unit_id: Input should be greater than or equal to 1 (got 0)" in err


@pytest.mark.parametrize("name", ["sim.toml", "station.example.toml"])
def test_shipped_configs_are_valid(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "acquisition.cli", "check-config", str(REPO / "config" / name)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ok (station" in result.stdout


def test_version_and_help() -> None:
    for args in (["--version"], ["--help"]):
        result = subprocess.run([sys.executable, "-m", "acquisition.cli", *args],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0
        assert ("crf-daq" in result.stdout) if args == ["--version"] else (
            "check-config" in result.stdout and "daemon" in result.stdout)
