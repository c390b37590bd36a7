"""Exit codes of the `crf` commands, one table for all of them (scripts and systemd read them).

The loudest one, EXIT_UNSAFE, means the command gave up on confirming that every device
it touched is safe: gas may still be flowing, and a person has to look.
"""

from __future__ import annotations

from typing import TextIO

EXIT_OK = 0
EXIT_FAILED = 1  # the run did not complete, a command was refused, the store failed
EXIT_CONFIG = 2  # the config or sequence is not usable; nothing was started
EXIT_NO_REPLY = 3  # `crf ctl`: the station did not answer
EXIT_UNSAFE = 4  # devices not confirmed safe when the command had to give up
EXIT_INTERRUPTED = 130  # Ctrl-C in a tool that reads (report, export): the shell's 128 + SIGINT


def report_unsafe(unconfirmed: dict[str, str], waited_s: float, out: TextIO) -> int:
    """Say, unmissably, which devices may still be releasing gas; EXIT_UNSAFE."""
    print("\n*** DANGER: not confirmed safe after retrying for "
          f"{waited_s:g} s; gas may still be flowing. Close the cylinder valve by hand ***",
          file=out)
    for name, why in unconfirmed.items():
        print(f"***   {name}: {why}", file=out)
    return EXIT_UNSAFE
