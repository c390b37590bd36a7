"""The processes `crf demo` starts, and how they end.

Each child runs in its own session, so a Ctrl-C at the terminal reaches the demo alone,
which then stops the children in a safe order (the daemon first: it zeroes the MFCs while
the simulator still answers). Each child's output goes to `logs/<name>.log`, its pid to
the `pids` file ("name pid" lines, for whoever checks that nothing was left behind); its
working directory is the demo's directory, where the station's relative port paths lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

PID_FILE = "pids"
LOGS_DIR = "logs"
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL


class ChildFailedError(Exception):
    """A child exited or did not get ready; the message names it and ends with its log."""


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    log: IO[bytes]
    _copying: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def failure(self, what: str) -> ChildFailedError:
        return ChildFailedError(f"{self.name} {what} (log {self.log_path}):\n"
                                f"{log_tail(self.log_path)}")

    async def ready_line(self, text: str, timeout_s: float) -> None:
        """Return once the child prints a line containing `text` on stdout; every line
        goes on to its log, then and afterwards. Raises ChildFailedError if it exits or
        stays silent for `timeout_s`."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout_s):
                while line := await self.process.stdout.readline():
                    self._write(line)
                    if text.encode() in line:
                        break
                else:
                    raise self.failure(f"exited with {await self.process.wait()} before it "
                                       "was ready")
        except TimeoutError:
            raise self.failure(f"not ready after {timeout_s:g} s") from None
        self._copying = asyncio.create_task(self._copy_stdout(), name=f"{self.name} stdout")

    def _write(self, line: bytes) -> None:
        self.log.write(line)
        self.log.flush()

    async def _copy_stdout(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self._write(line)

    async def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, then SIGKILL if it is still there after `grace_s`; its exit code."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        code = await self.process.wait()
        if self._copying is not None:
            await self._copying
        self.log.close()
        return code


class Children:
    """Every process the demo started, in start order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.logs = workdir / LOGS_DIR
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pid_file = workdir / PID_FILE
        self.started: dict[str, Child] = {}

    async def start(self, name: str, argv: list[str], *, piped: bool = False) -> Child:
        """Start `argv` as `name`; stdout piped to the demo with `piped` (to await a line
        with `Child.ready_line`), else straight to its log."""
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if piped else log, stderr=log,
            start_new_session=True)
        with self.pid_file.open("a", encoding="utf-8") as pids:
            pids.write(f"{name} {process.pid}\n")
        child = self.started[name] = Child(name, process, log_path, log)
        return child

    async def run(self, name: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """Run `argv` to its end (killed after `timeout_s`): its exit code and stdout;
        both streams also go to its log."""
        child = await self.start(name, argv, piped=True)
        assert child.process.stdout is not None
        try:
            output = await asyncio.wait_for(child.process.stdout.read(), timeout_s)
        except TimeoutError:
            await child.stop()
            raise child.failure(f"did not finish within {timeout_s:g} s") from None
        except BaseException:
            await child.stop()
            raise
        child.log.write(output)
        code = await child.process.wait()
        await child.stop()
        return code, output.decode(errors="replace")

    def running(self, name: str) -> bool:
        child = self.started.get(name)
        return child is not None and child.running

    async def stop(self, name: str, grace_s: float = STOP_GRACE_S) -> int | None:
        """Stop one child (if it was started); its exit code."""
        child = self.started.get(name)
        return None if child is None else await child.stop(grace_s)

    async def stop_all(self) -> None:
        """Stop what is still running, the last started first."""
        for child in reversed(self.started.values()):
            await child.stop()
