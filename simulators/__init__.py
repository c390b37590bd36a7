"""Hardware-free twins of a station's Modbus MFC lines, for tests, benchmarks and operators.

`SimStation` serves every MFC of a station config as a Modbus slave on a pty (linked at
the configured serial port path) or a TCP port, with first-order flow physics, real
bus timing and injectable faults. `crf sim --config FILE` runs one from the command line.
"""
