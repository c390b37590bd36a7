"""Hardware-free twins of a station's devices, for tests, benchmarks and operators.

`SimStation` serves every MFC (and Modbus anemometer) of a station config as a Modbus
slave on a pty (linked at the configured serial port path) or a TCP port, with
first-order flow physics, real bus timing and injectable faults; and every GNSS
receiver and NMEA weather station as a device that talks NMEA 0183 on its own pty or
TCP port. `crf sim --config FILE` runs one from the command line.
"""
