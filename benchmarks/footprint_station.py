"""The nominal station of `footprint.py`, as a config file for `crf sim` and `crf daemon`.

Four MFCs polled at 10 Hz (three on a paced RS-485 pty line at 115200 baud, one on Modbus
TCP), a GNSS receiver at 10 Hz and an NMEA weather station at 1 Hz on ptys, a gas
analyzer streaming 10 lines/s over TCP, two release points (one located by the receiver's
survey), and MQTT telemetry at the defaults when a broker is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATION = "footprint"
SAMPLE_RATE_HZ = 10.0  # acquisition.sample_rate_hz: every MFC


@dataclass(frozen=True)
class NominalDevice:
    """A device of the station, the rate it reads at, and the channel that comes once per
    reading (a poll, an epoch, a line), by which the readings in the store are counted."""

    name: str
    rate_hz: float
    marker: str


DEVICES = (
    NominalDevice("mfc_low", SAMPLE_RATE_HZ, "flow"),
    NominalDevice("mfc_high", SAMPLE_RATE_HZ, "flow"),
    NominalDevice("mfc_bh", SAMPLE_RATE_HZ, "flow"),
    NominalDevice("mfc_tcp", SAMPLE_RATE_HZ, "flow"),
    NominalDevice("rx1", 10.0, "fix_quality"),  # GGA, once per epoch
    NominalDevice("ws1", 1.0, "air_temperature"),  # MDA, once per burst
    NominalDevice("ch4_east", 10.0, "ch4"),
)
RATES = {device.name: device.rate_hz for device in DEVICES}


def write_station(folder: Path, mqtt_url: str | None, *, modbus_port: int,
                  analyzer_port: int) -> Path:
    """Write `footprint.toml` (store and ptys beside it) and return its path."""
    dev = folder / "dev"
    mqtt = f'[mqtt]\nurl = "{mqtt_url}"\n' if mqtt_url else ""
    path = folder / f"{STATION}.toml"
    path.write_text(f"""
station = "{STATION}"

[storage]
path = "{STATION}.sqlite"

[acquisition]
sample_rate_hz = {SAMPLE_RATE_HZ}

[lines.bus0]
port = "{dev / 'bus0'}"
baudrate = 115200
parity = "N"
stopbits = 2
timeout_s = 0.3
retries = 1

[lines.gw0]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {modbus_port}
timeout_s = 0.3

[mfcs.mfc_low]
line = "bus0"
unit_id = 1
profile = "alicat"
full_scale = 5.0

[mfcs.mfc_high]
line = "bus0"
unit_id = 2
profile = "alicat"
full_scale = 100.0

[mfcs.mfc_bh]
line = "bus0"
unit_id = 3
profile = "bronkhorst"
full_scale = 50.0

[mfcs.mfc_tcp]
line = "gw0"
unit_id = 1
profile = "generic"
full_scale = 200.0
word_order = "little"

[gnss.rx1]
port = "{dev / 'gnss'}"
baudrate = 115200

[met.ws1]
protocol = "nmea"
port = "{dev / 'met'}"
baudrate = 4800

[analyzers.ch4_east]
transport = "tcp"
host = "127.0.0.1"
tcp_port = {analyzer_port}
format = "delimited"
delimiter = ","
columns = ["t", "ch4", "temp"]
channels = {{ ch4 = "ppm", temp = "degC" }}
timestamp = {{ field = "t", format = "iso" }}

[release_points.P1]
mfcs = ["mfc_low", "mfc_high"]
survey = {{ receiver = "rx1", min_quality = "rtk_fixed", window_s = 60, min_fixes = 10 }}

[release_points.P2]
mfcs = ["mfc_bh", "mfc_tcp"]
latitude = 34.752310
longitude = 113.629120
altitude_m = 101.2

[gas]
species = "CH4"
purity = 0.9995
purity_u = 0.0002

[clock]
reference = "rx1"

{mqtt}
[sim]
pace = true

[sim.gnss.rx1]
latitude = 34.752057
longitude = 113.629433
altitude_m = 101.5
rate_hz = {RATES['rx1']}

[sim.met.ws1]
rate_hz = {RATES['ws1']}

[sim.analyzers.ch4_east]
latitude = 34.752057
longitude = 113.629870
height_m = 1.5
rate_hz = {RATES['ch4_east']}
""")
    return path
