"""Ctrl-C in a `crf` tool that only reads (a report, an export, a decode) ends it with one
line and the shell's exit code for SIGINT, never a traceback, and leaves no half-written
file that looks whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from acquisition.exit_codes import EXIT_INTERRUPTED
from acquisition.files import write_text_whole, written_whole


def test_ctrl_c_is_one_line_and_exit_130(tmp_path: Path) -> None:
    fifo = tmp_path / "capture.nmea"
    os.mkfifo(fifo)
    tool = subprocess.Popen([sys.executable, "-m", "acquisition.cli", "gnss", "decode",
                             str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # Opening the writer's end returns once the tool has opened the reader's: from then
    # on it waits for bytes that never come, as a long export waits on its store.
    with open(fifo, "w"):
        tool.send_signal(signal.SIGINT)
        _, stderr = tool.communicate(timeout=30)
    assert tool.returncode == EXIT_INTERRUPTED
    assert stderr == "crf gnss: interrupted\n"


def test_a_file_interrupted_while_written_is_not_left_behind(tmp_path: Path) -> None:
    target = tmp_path / "certificate.pdf"
    try:
        with written_whole(target) as part:
            part.write_bytes(b"%PDF-1.7 half of it")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert list(tmp_path.iterdir()) == []
    write_text_whole(target, "whole")
    assert [path.name for path in tmp_path.iterdir()] == ["certificate.pdf"]
    assert target.read_text() == "whole"
