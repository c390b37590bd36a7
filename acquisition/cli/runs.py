"""`crf runs`: list the runs, show one, export one as CSV and Parquet (placeholder:
being written)."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Registers nothing yet."""
