"""Files a user may open while they are being written (a report, an export): each is
written under `<name>.part` and renamed once complete, so that an interrupted command
leaves no file that looks whole and is not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


@contextmanager
def written_whole(path: Path) -> Iterator[Path]:
    """The path to write `path` under; renamed to `path` only if the block completes."""
    part = path.with_name(f"{path.name}.part")
    try:
        yield part
    except BaseException:
        with suppress(OSError):  # the cause, not a failed clean-up, is what to report
            part.unlink(missing_ok=True)
        raise
    part.replace(path)


def write_text_whole(path: Path, text: str) -> None:
    """`path` with `text` (UTF-8), all of it or nothing."""
    with written_whole(path) as part:
        part.write_text(text, encoding="utf-8")


def write_json_whole(path: Path, data: dict[str, Any]) -> None:
    """`path` with `data` as indented UTF-8 JSON, all of it or nothing; NaN and infinity
    are refused (they are not JSON, and other tools would fail on them)."""
    write_text_whole(path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
                     + "\n")
