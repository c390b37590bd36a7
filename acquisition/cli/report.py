"""`crf report`: a run's results.json, calibration record and certificate (placeholder:
being written)."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Registers nothing yet."""
