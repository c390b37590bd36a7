"""Calibration results computed from a run's stored steps, positions and matched reports."""
